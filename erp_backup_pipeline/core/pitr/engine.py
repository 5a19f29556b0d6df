"""Running pgBackRest: stanza set-up and check, backups, ``info``, ``verify`` and WAL continuity.

Every call runs ``pgbackrest --config=<generated> --stanza=<stanza> ...`` as ``pitr.os_user`` (through
``runuser`` when we are root). A failure raises ToolError with pgBackRest's own ``ERROR: [code]`` line.
``verify`` exits 0 even when it finds damage, so its report is parsed; it does not notice a missing
WAL segment between two present ones either, which is what ``continuity`` checks, from the repository
listing.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from dataclasses import dataclass
from typing import Any

from erp_backup_pipeline.core.pitr.config import layout
from erp_backup_pipeline.core.runner import find_program, redact
from erp_backup_pipeline.core.site import Configuration, Site, build_site
from erp_backup_pipeline.errors import LOCKED, ToolError, ToolTimeout, VerifyError

_SEGMENT = re.compile(r"^([0-9A-F]{8})([0-9A-F]{8})([0-9A-F]{8})(?:-[0-9a-f]{40})?(?:\.[a-z0-9]+)?$")
SEGMENTS_PER_LOG = 0x100  # 16 MiB WAL segments (PostgreSQL's default wal_segment_size)


def _error_line(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    for ln in lines:
        if "ERROR:" in ln:
            return ln.split("ERROR:", 1)[1].strip()
    return lines[-1] if lines else "no output"


LOCK_ACQUIRE_ERROR = 50  # pgBackRest's exit status when another process holds its lock


class PgBackRest:
    def __init__(self, site: Site | Configuration) -> None:
        site = build_site(site)
        self.pitr = site.pgbackrest
        self.layout = layout(site)
        self.program = str(self.pitr.bin) if self.pitr.bin else find_program("pgbackrest")

    def argv(self, *args: str, stanza: bool = True) -> list[str]:
        base = [self.program, f"--config={self.layout.config}"]
        if stanza:
            base.append(f"--stanza={self.pitr.stanza}")
        base += list(args)
        if os.geteuid() == 0 and self.pitr.os_user != "root":
            return ["runuser", "-u", self.pitr.os_user, "--", *base]
        return base

    def run(self, *args: str, timeout: float | None = 3600) -> str:
        command = next((a for a in reversed(args) if not a.startswith("-")), "pgbackrest")
        try:
            done = subprocess.run(self.argv(*args), capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise ToolTimeout(f"pgbackrest {command} timed out after {timeout:.0f} s") from None
        if done.returncode != 0:
            # 50: pgBackRest's LockAcquireError, another pgbackrest holds the stanza's lock (a backup is running)
            raise ToolError(f"pgbackrest {command} failed (exit {done.returncode}): "
                            f"{redact(_error_line(done.stderr + done.stdout))}",
                            status=LOCKED if done.returncode == LOCK_ACQUIRE_ERROR else None)
        return done.stdout

    # --- the stanza

    def stanza_create(self) -> None:
        self.run("stanza-create")

    def check(self) -> None:
        """pgBackRest's own check: the configuration, the cluster, and that a WAL switch gets archived now."""
        self.run("check")

    def info(self) -> dict[str, Any]:
        data = json.loads(self.run("--output=json", "info") or "[]")
        if not data:
            raise ToolError(f"pgbackrest info: stanza {self.pitr.stanza} not found")
        stanza: dict[str, Any] = data[0]
        status = stanza.get("status", {})
        if status.get("code") not in (0, 2, None):  # 2: no valid backups yet
            raise ToolError(f"pgbackrest info: stanza {self.pitr.stanza}: {status.get('message', 'error')}")
        return stanza

    def backups(self) -> list[dict[str, Any]]:
        """Every backup set in the repository, oldest first."""
        return sorted(self.info().get("backup", []), key=lambda b: b["timestamp"]["stop"])

    # --- backups

    def backup(self, kind: str) -> dict[str, Any]:
        """Take a ``full`` or ``incr`` backup; return pgBackRest's record of it (label, LSNs, WAL range, sizes).
        pgBackRest expires what the retention site no longer need right after."""
        if kind not in ("full", "incr", "diff"):
            raise ValueError(kind)
        before = {b["label"] for b in self.backups()}
        self.run(f"--type={kind}", "backup", timeout=None)
        new = [b for b in self.backups() if b["label"] not in before]
        if not new:
            raise ToolError("pgbackrest backup reported success but no new backup set is in the repository")
        return new[-1]

    # --- checks

    def verify(self) -> dict[str, Any]:
        """``pgbackrest verify``: every file of every backup and WAL segment against its checksum."""
        out = self.run("--output=text", "--verbose", "verify", timeout=None)
        status = re.search(r"^status: (\S+)", out, re.M)
        if status is None or status.group(1) != "ok":
            bad = [ln.strip() for ln in out.splitlines()
                   if re.search(r"status: (?!valid)|(missing|checksum invalid|size invalid|other): [1-9]", ln)
                   and not ln.startswith("status:")]
            raise VerifyError(f"pgbackrest verify: status {status.group(1) if status else 'unknown'}: "
                              + ("; ".join(bad[:4]) or out.strip()[-200:]))
        wal = sum(int(n) for n in re.findall(r"total WAL checked: (\d+)", out))
        files = sum(int(n) for n in re.findall(r"total files checked: (\d+)", out))
        return {"method": "pgbackrest verify", "ok": True, "wal_checked": wal, "backup_files_checked": files,
                "backups_checked": len(re.findall(r"^\s+backup: ", out, re.M))}

    def wal_segments(self) -> list[str]:
        """WAL segment names (24 hex digits) in the repository's archive, sorted."""
        return sorted(self.wal_archived_at())

    def wal_archived_at(self) -> dict[str, int]:
        """Each archived WAL segment with the time (Unix seconds) it reached the repository."""
        listing = json.loads(self.run("--output=json", "--recurse", "repo-ls", f"archive/{self.pitr.stanza}") or "{}")
        found: dict[str, int] = {}
        for path, meta in listing.items():
            m = _SEGMENT.match(path.rsplit("/", 1)[-1])
            if meta.get("type") == "file" and m and not path.endswith(".backup") and ".history" not in path:
                name = m.group(1) + m.group(2) + m.group(3)
                found[name] = max(found.get(name, 0), int(meta.get("time", 0)))
        return found

    def continuity(self, since: str) -> WalRange:
        """The archived WAL from segment ``since`` (a full backup's archive start) must have no gap."""
        segments = [s for s in self.wal_segments() if position(s) >= position(since)]
        return check_continuity(since, segments)


@dataclass(frozen=True)
class WalRange:
    first: str
    last: str
    segments: int


def position(segment: str) -> int:
    """A segment's place in the WAL, across timelines: log * SEGMENTS_PER_LOG + seg."""
    return int(segment[8:16], 16) * SEGMENTS_PER_LOG + int(segment[16:24], 16)


def check_continuity(since: str, segments: list[str]) -> WalRange:
    """VerifyError naming the first missing segment between ``since`` and the newest one."""
    present = {position(s) for s in segments}
    if position(since) not in present:
        raise VerifyError(f"WAL: the first segment the backup needs, {since}, is not in the archive")
    top = max(present)
    for pos in range(position(since), top + 1):
        if pos not in present:
            missing = f"{since[:8]}{pos // SEGMENTS_PER_LOG:08X}{pos % SEGMENTS_PER_LOG:08X}"
            raise VerifyError(f"WAL: segment {missing} is missing from the archive: point-in-time recovery "
                              f"past it is impossible ({top - pos + 1} later segment(s) unreachable)")
    newest = max(segments, key=position)
    return WalRange(first=since, last=newest, segments=len(present))
