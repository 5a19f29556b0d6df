"""The restore drill: restore one backup into a scratch target and compare it with its manifest.

A backup is only worth its last successful restore. The drill fetches the artifact (checksum
first), restores it the way an operator would (``restore_backup``) into a target that no one
uses: a temp SQLite file, a new PostgreSQL database (dropped afterwards), a throwaway
redis-server, a temp directory; then the source compares what the target holds with what the
manifest recorded (rows per table, keys, every file's checksum). The restore's own seconds are
the measured RTO of that store.
"""

from __future__ import annotations

import os
import random
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from erp_backup_pipeline.core.catalog import Entry
from erp_backup_pipeline.core.restore import find_entry, restore_backup
from erp_backup_pipeline.core.site import Site, takes_site
from erp_backup_pipeline.core.streams import Progress


@takes_site
def restore_drill(site: Site, source: str, partition: str | None, progress: Progress | None = None,
                  capture: str | None = None) -> dict[str, Any]:
    """Drill a capture (``find_entry``: by ID, the newest of the partition, or ``latest``); VerifyError (or another
    BackupError) when it does not restore as recorded."""
    entry = find_entry(site, source, partition, capture)
    m = entry.manifest
    src = site.source(source)
    site.staging_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    workdir = Path(os.path.realpath(tempfile.mkdtemp(prefix="drill-", dir=site.staging_dir)))  # ours, no link
    timing: dict[str, float] = {}

    def restore(target: str, **options: Any) -> dict[str, Any]:
        t = time.monotonic()
        result = restore_backup(site, source, m.partition, target, progress=progress, options=options or None,
                                capture=entry.sha256)  # this very capture
        timing["restore"] = time.monotonic() - t
        return result

    t0 = time.monotonic()
    try:
        details = src.drill(restore, workdir, m.facts, m.verify)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return {"source": source, "partition": m.partition, "id": entry.id, "captured_at": m.captured_at, "ok": True,
            "restore_seconds": round(timing.get("restore", 0.0), 3), "seconds": round(time.monotonic() - t0, 3),
            **details}


def drill_sample(entries: list[Entry], k: int, rng: random.Random | None = None) -> list[str]:
    """Which older partitions the weekly drill restores: the oldest kept one (the likeliest to have
    rotted: an old key, a lost dependency) plus a random sample of the others; never the newest,
    which the nightly run drills right after writing it."""
    partitions = sorted({e.manifest.partition for e in entries})[:-1]
    if k <= 0 or not partitions:
        return []
    chosen = [partitions[0]]
    rest = partitions[1:]
    chosen += (rng or random.Random()).sample(rest, min(k - 1, len(rest)))
    return sorted(chosen)
