"""Point-in-time restore into a fresh data directory: plan, refuse what would go wrong, restore, start.

The plan names the backup set (the newest one that ended before the target) and the WAL range it
replays. Refused before anything changes: a target before the oldest backup's end, after the newest
archived WAL segment reached the repository (recovery could not get there), or in the future,
an LSN before the oldest backup, a data directory that is not empty (a running PostgreSQL's always
is), no backup at all. pgBackRest writes ``recovery.signal`` and the ``recovery_target_*`` site
into ``postgresql.auto.conf`` (current PostgreSQL; ``recovery.conf`` is refused since 12); we add the
port and socket directory the restored cluster listens on, and ``archive_mode = off`` so that a
restored copy beside production never pushes its new timeline into production's archive. Started
(``--start``), recovery runs to the target and the server is promoted; we report its timeline.
"""

from __future__ import annotations

import os
import pwd
import subprocess
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from erp_backup_pipeline.core.pitr.engine import PgBackRest, position
from erp_backup_pipeline.core.runner import redact
from erp_backup_pipeline.core.site import Site, takes_site
from erp_backup_pipeline.errors import OutsideArchive, RestoreError


@dataclass
class Plan:
    label: str
    backup_type: str
    backup_stop: datetime
    wal_from: str
    wal_to: str
    target: dict[str, str]  # {"type": "time"|"lsn"|"default", "value": ...}
    datadir: Path
    steps: list[str] = field(default_factory=list)


def lsn_value(lsn: str) -> int:
    hi, _, lo = lsn.partition("/")
    return (int(hi, 16) << 32) + int(lo, 16)


def _when(ts: int) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


def _empty(path: Path) -> bool:
    return not path.exists() or (path.is_dir() and not any(path.iterdir()))


@takes_site
def plan_restore(site: Site, datadir: Path, target_time: datetime | None = None, target_lsn: str | None = None,
                 now: datetime | None = None) -> Plan:
    engine = PgBackRest(site)
    datadir = Path(datadir).absolute()
    if not _empty(datadir):
        running = (datadir / "postmaster.pid").exists()
        raise RestoreError(f"data directory {datadir} is not empty" + (" (a PostgreSQL is running on it)" if running else "")
                           + "; restore into a new directory")
    info = engine.info()
    backups = sorted(info.get("backup", []), key=lambda b: b["timestamp"]["stop"])
    if not backups:
        raise RestoreError(f"stanza {site.pgbackrest.stanza} has no backup yet")
    archive = (info.get("archive") or [{}])[-1]
    if target_time is not None:
        if target_time.tzinfo is None:
            raise RestoreError("--target-time needs a time zone, e.g. '2026-11-25 10:30:00+01'")
        now = now or datetime.now(UTC)
        if target_time > now:
            raise RestoreError(f"target time {target_time.isoformat()} is in the future")
        fitting = [b for b in backups if _when(b["timestamp"]["stop"]) <= target_time]
        if not fitting:
            raise OutsideArchive(f"target time {target_time.isoformat()} is before the end of the oldest backup "
                               f"({_when(backups[0]['timestamp']['stop']).isoformat()}, {backups[0]['label']})")
        archived = engine.wal_archived_at()
        if archived:
            newest = max(archived, key=lambda name: (position(name), name))
            if target_time.timestamp() > archived[newest]:
                raise OutsideArchive(f"target time {target_time.isoformat()} is after the newest archived WAL (segment "
                                   f"{newest}, archived {_when(archived[newest]).isoformat()}): recovery cannot reach "
                                   "it; use an earlier time or --latest")
        chosen, target = fitting[-1], {"type": "time", "value": target_time.isoformat(sep=" ")}
    elif target_lsn is not None:
        try:
            want = lsn_value(target_lsn)
        except ValueError:
            raise RestoreError(f"--target-lsn {target_lsn!r} is not an LSN such as 0/3000060") from None
        fitting = [b for b in backups if lsn_value(b["lsn"]["stop"]) <= want]
        if not fitting:
            raise RestoreError(f"target LSN {target_lsn} is before the end of the oldest backup ({backups[0]['lsn']['stop']})")
        newest_wal = archive.get("max")
        if newest_wal and want > (int(newest_wal[8:16], 16) << 32) + (int(newest_wal[16:24], 16) + 1) * (16 << 20):
            raise RestoreError(f"target LSN {target_lsn} is after the newest archived WAL ({newest_wal})")
        chosen, target = fitting[-1], {"type": "lsn", "value": target_lsn}
    else:
        chosen, target = backups[-1], {"type": "default", "value": "latest: the end of the archived WAL"}
    plan = Plan(label=chosen["label"], backup_type=chosen["type"], backup_stop=_when(chosen["timestamp"]["stop"]),
                wal_from=chosen["archive"]["start"], wal_to=archive.get("max") or chosen["archive"]["stop"],
                target=target, datadir=datadir)
    plan.steps = [
        f"backup set {plan.label} ({plan.backup_type}, ended {plan.backup_stop.isoformat()})",
        f"replay WAL {plan.wal_from} .. up to {plan.wal_to} (as far as the target needs)",
        f"target: {target['type']} {target['value']}",
        f"pgbackrest restore into {datadir} (empty, 0700, owner {site.pgbackrest.os_user}); recovery.signal and "
        "recovery_target_* in postgresql.auto.conf, target action promote",
        "set port/unix_socket_directories for the restored cluster and archive_mode = off (never archive into "
        "production's repository)",
    ]
    return plan


@takes_site
def restore(site: Site, plan: Plan, port: int, start: bool = True, pg_bin_dir: Path | None = None,
            listen: str = "") -> dict[str, Any]:
    """Restore ``plan`` and (``start``) bring the cluster up on ``port``: sockets in its data directory, TCP
    only on ``listen`` (default none)."""
    pitr = site.pgbackrest
    engine = PgBackRest(site)
    datadir = plan.datadir
    datadir.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(datadir, 0o700)
    if os.geteuid() == 0:
        entry = pwd.getpwnam(pitr.os_user)
        os.chown(datadir, entry.pw_uid, entry.pw_gid)
    try:
        as_user(pitr.os_user, ["test", "-w", str(datadir)], "test")
    except RestoreError:
        raise RestoreError(f"user {pitr.os_user} cannot write {datadir}: every parent directory must be searchable "
                           "by it") from None
    args = [f"--pg1-path={datadir}", f"--set={plan.label}"]
    if plan.target["type"] in ("time", "lsn"):  # latest: recovery ends with the archive and promotes by itself
        args += [f"--type={plan.target['type']}", f"--target={plan.target['value']}", "--target-action=promote"]
    t0 = time.monotonic()
    engine.run(*args, "restore", timeout=None)
    with open(datadir / "postgresql.auto.conf", "a") as fh:
        fh.write(f"\n# erp-backup restore {datetime.now(UTC).isoformat(timespec='seconds')}: a copy beside production\n"
                 f"port = {port}\nunix_socket_directories = '{datadir}'\nlisten_addresses = '{listen}'\n"
                 "archive_mode = off\n")
    result: dict[str, Any] = {"datadir": str(datadir), "label": plan.label, "target": plan.target,
                              "restore_seconds": round(time.monotonic() - t0, 2), "port": port}
    bindir = Path(pg_bin_dir or pitr.pg_bin_dir or pg_bindir())
    start_cmd = [str(bindir / "pg_ctl"), "-D", str(datadir), "-l", str(datadir / "restore.log"), "-w", "-t", "3600", "start"]
    result["start"] = " ".join(start_cmd)
    if not start:
        return result
    as_user(pitr.os_user, start_cmd, f"pg_ctl start ({datadir / 'restore.log'})")
    result["timeline"] = _wait_promoted(pitr.os_user, bindir, datadir, port, pitr.pg_user)
    result["seconds"] = round(time.monotonic() - t0, 2)
    return result


@takes_site
def stop(site: Site, datadir: Path) -> None:
    bindir = Path(site.pgbackrest.pg_bin_dir or pg_bindir())
    as_user(site.pgbackrest.os_user, [str(bindir / "pg_ctl"), "-D", str(datadir), "-m", "fast", "-w", "stop"], "pg_ctl stop")


@takes_site
def psql(site: Site, socket_dir: Path, port: int, sql: str, dbname: str = "postgres") -> str:
    """One query on a restored cluster, through its socket directory (a restore puts it in the data directory)."""
    bindir = Path(site.pgbackrest.pg_bin_dir or pg_bindir())
    return as_user(site.pgbackrest.os_user, [str(bindir / "psql"), "-h", str(socket_dir), "-p", str(port),
                                            "-U", site.pgbackrest.pg_user, "-d", dbname, "-Atc", sql], "psql").strip()


def _wait_promoted(user: str, bindir: Path, datadir: Path, port: int, pg_user: str, timeout: float = 3600) -> int:
    deadline = time.monotonic() + timeout
    query = [str(bindir / "psql"), "-h", str(datadir), "-p", str(port), "-U", pg_user, "-d", "postgres", "-Atc",
             "SELECT pg_is_in_recovery(), (SELECT timeline_id FROM pg_control_checkpoint())"]
    while True:
        try:
            out = as_user(user, query, "psql").strip()
            in_recovery, timeline = out.split("|")
            if in_recovery == "f":
                return int(timeline)
        except RestoreError:
            pass
        if time.monotonic() > deadline:
            raise RestoreError(f"the restored cluster did not finish recovery within {timeout:.0f} s; see "
                               f"{datadir / 'restore.log'} and the server log in {datadir / 'log'}")
        time.sleep(0.2)


def as_user(user: str, argv: list[str], what: str) -> str:
    if os.geteuid() == 0 and user != "root":
        argv = ["runuser", "-u", user, "--", *argv]
    done = subprocess.run(argv, capture_output=True, text=True)
    if done.returncode != 0:
        lines = [ln for ln in (done.stderr + done.stdout).splitlines() if ln.strip()]
        raise RestoreError(f"{what} failed: {redact(lines[-1].strip()) if lines else f'exit {done.returncode}'}")
    return done.stdout


def pg_bindir() -> str:
    try:
        return subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        raise RestoreError("pg_config not found: set pitr.pg_bin_dir to the directory holding pg_ctl") from None
