"""The whole-repository check (``erp-backup check``), as ``restic check`` and ``pgbackrest verify`` check theirs.

Owns checking every capture on every destination without the private key: the catalog read authenticates every
manifest and audits each source's chain (rejected files, chain findings and gaps are problems); then each object of
each capture (the artifact and its attachments) must be on every destination that holds the capture, with the size
its manifest records; and for the captures ``Subset`` selects (``--read-data``, ``--read-data-subset N/M|P%``) each
copy is read back whole and its sha256 compared with the manifest's. Owns too the record of the last check of each
capture (``state_dir/check.json``) that ``erp-backup list`` shows.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from erp_backup_pipeline.core import catalog, statefile
from erp_backup_pipeline.core.catalog import Entry
from erp_backup_pipeline.core.destinations import Destination
from erp_backup_pipeline.core.site import Site, takes_site
from erp_backup_pipeline.core.streams import CHUNK
from erp_backup_pipeline.errors import BackupError, UsageError

STATE_FILE = "check.json"
_SUBSET = re.compile(r"^(?:(\d+)/(\d+)|(\d+(?:\.\d+)?)%)$")


@dataclass(frozen=True)
class Subset:
    """Which captures have their data read: all, group N of M (by capture ID: cycling N over 1..M reads everything
    once), or a random P percent (at least one)."""

    part: int = 1
    parts: int = 1
    percent: float | None = None

    @classmethod
    def parse(cls, text: str) -> Subset:
        found = _SUBSET.match(text.strip())
        if found and found.group(2):
            n, m = int(found.group(1)), int(found.group(2))
            if 1 <= n <= m:
                return cls(n, m)
        elif found and 0 < float(found.group(3)) <= 100:
            return cls(percent=float(found.group(3)))
        raise UsageError(f"--read-data-subset {text!r}: write N/M (1 <= N <= M, e.g. 1/5) or P% (e.g. 10%)")

    def pick(self, entries: list[Entry], rng: random.Random | None = None) -> list[Entry]:
        if self.percent is not None:
            if not entries:
                return []
            count = max(1, math.ceil(len(entries) * self.percent / 100))
            return sorted((rng or random.SystemRandom()).sample(entries, count), key=lambda e: e.sha256)
        return [e for e in entries if int(e.sha256[:8] or "0", 16) % self.parts == self.part - 1]


@dataclass
class Checked:
    """One capture's check."""

    entry: Entry
    read_data: bool
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def as_row(self) -> dict[str, Any]:
        m = self.entry.manifest
        return {"id": self.entry.id, "source": m.source, "partition": m.partition, "captured_at": m.captured_at,
                "destinations": sorted(self.entry.held_by), "read_data": self.read_data, "ok": self.ok,
                "problems": self.problems}


@dataclass
class CheckResult:
    captures: list[Checked]
    problems: list[str]  # of the repository as a whole: rejected files, chain findings, gaps
    errors: list[str]  # destinations that could not be listed

    @property
    def ok(self) -> bool:
        return not self.problems and not self.errors and all(c.ok for c in self.captures)


def _objects(entry: Entry) -> Iterator[tuple[str, int, str]]:
    """(key, bytes, sha256) of every stored object of the capture: its artifact, then its attachments."""
    m = entry.manifest
    yield m.artifact_key, m.artifact_bytes, m.artifact_sha256
    for att in m.attachments:
        yield att["key"], int(att["artifact_bytes"]), att["artifact_sha256"]


def _read_sha256(dest: Destination, key: str) -> str:
    digest = hashlib.sha256()
    reader = dest.open_reader(key)
    try:
        while chunk := reader.read(CHUNK):
            digest.update(chunk)
    finally:
        reader.close()
    return digest.hexdigest()


def _check_entry(entry: Entry, destinations: dict[str, Destination], read_data: bool) -> Checked:
    done = Checked(entry, read_data)
    for name in sorted(entry.held_by):
        dest = destinations[name]
        for key, size, sha256 in _objects(entry):
            try:
                stored = dest.size(key)
                if stored != size:
                    done.problems.append(f"{dest.uri(key)}: {stored} bytes, the manifest says {size}")
                elif read_data and (got := _read_sha256(dest, key)) != sha256:
                    done.problems.append(f"{dest.uri(key)}: sha256 {got[:12]}..., the manifest says {sha256[:12]}...")
            except BackupError as exc:
                done.problems.append(f"{name}: {exc}")
    return done


@takes_site
def check(site: Site, source: str | None = None, subset: Subset | None = None,
          progress: Callable[[str], None] | None = None, now: datetime | None = None) -> CheckResult:
    """Check every capture (of ``source``) on every destination; read back the data of those ``subset`` picks
    (None: none). Records each capture's result for ``erp-backup list``."""
    destinations = {d.name: d for d in site.destinations}
    found = catalog.of(site, source)
    read = {e.sha256 for e in (subset.pick(found.entries) if subset else [])}
    checked = []
    for entry in found.entries:
        checked.append(_check_entry(entry, destinations, entry.sha256 in read))
        if progress:
            progress(f"{entry.id} {entry.manifest.source} {entry.manifest.partition}: "
                     + ("ok" if checked[-1].ok else "; ".join(checked[-1].problems)))
    result = CheckResult(checked, [r.line() for r in found.rejected] + found.findings + found.gaps, found.errors)
    _record(site, checked, now or datetime.now(UTC))
    return result


def _record(site: Site, checked: list[Checked], now: datetime) -> None:
    records = last_checks(site)
    for c in checked:
        records[c.entry.sha256] = {"checked_at": now.isoformat(timespec="seconds"), "ok": c.ok,
                                   "read_data": c.read_data, **({"problem": c.problems[0]} if c.problems else {})}
    site.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    statefile.replace(site.state_dir / STATE_FILE, json.dumps(records, indent=1, sort_keys=True).encode())


@takes_site
def last_checks(site: Site) -> dict[str, dict[str, Any]]:
    """The last check of each capture, by its manifest's sha256; empty when there was none (or the record is
    unreadable: it is only a record, the check itself is what counts)."""
    try:
        data = json.loads((site.state_dir / STATE_FILE).read_bytes())
    except (OSError, ValueError):
        return {}
    return {k: v for k, v in data.items() if isinstance(v, dict)} if isinstance(data, dict) else {}
