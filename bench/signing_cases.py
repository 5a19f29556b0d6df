"""Signing: what authenticity costs a ``postgres_dump`` backup (the target "< 1 %").

- ``seed_history``: the big database's (c) bucket first holds ``HISTORY`` (30) earlier signed captures, so the
  run authenticates a month's catalog.
- ``signing_import_seconds``: what importing the signature code costs a fresh interpreter (``python -X importtime``).
- ``signing_summary``: both, with each (c) big run's own ``signing_seconds``, for the report's signing target.
"""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.common import PARTITION, REPO

HISTORY = 30  # earlier postgres_dump captures in the bucket of each (c) run on the big database: a month's


def seed_history(cfg_path: Path, n: int) -> None:
    """n earlier postgres_dump captures, one per day before PARTITION, committed and signed into the chain the way
    the pipeline commits a capture (``core.commit``), with small artifacts: a backup reads, authenticates and audits
    the manifests, signatures and ledger of its catalog, never the artifacts. So (c) pays for a month's history."""
    import hashlib
    from datetime import date, timedelta
    from datetime import time as clock

    from erp_backup_pipeline.core import commit
    from erp_backup_pipeline.core.destinations import build_destinations, put_bytes
    from erp_backup_pipeline.core.manifest import Manifest, artifact_dir
    from erp_backup_pipeline.core.pipeline import new_stamp
    from erp_backup_pipeline.settings import load_settings

    settings = load_settings(str(cfg_path))
    [dest] = build_destinations(settings)
    first = date.fromisoformat(PARTITION)
    for k in range(n, 0, -1):
        day = first - timedelta(days=k)
        when = datetime.combine(day + timedelta(days=1), clock(1, 0), tzinfo=UTC)
        key = f"{artifact_dir(settings.prefix, 'postgres_dump', day.isoformat())}/{new_stamp(when)}.pgdump.zst.age"
        body = os.urandom(4096)
        put_bytes(dest, key, body)
        sha = hashlib.sha256(body).hexdigest()
        m = Manifest(source="postgres_dump", kind="postgres", partition=day.isoformat(),
                     captured_at=when.isoformat(timespec="seconds"), finished_at=when.isoformat(timespec="seconds"),
                     artifact_key=key, artifact_bytes=len(body), artifact_sha256=sha,
                     chain=[{"stage": "dump", "bytes": 1, "sha256": sha}], verify={"ok": True}, facts={}, tools={},
                     destinations={dest.name: {"ok": True}}, complete=True)
        commit.commit(settings, m, [dest], [dest.name])


def signing_import_seconds(repeat: int = 5) -> list[float]:
    """Seconds a fresh interpreter spends importing the signature code (``core.signing`` and the cryptography it
    loads; dagster, boto3 and the codecs do not load it), after what a run loads anyway: read with
    ``python -X importtime`` in a new process each time (its cumulative line counts only what it adds)."""
    out = []
    script = "import dagster, boto3, psycopg, zstandard, pyrage; import erp_backup_pipeline.core.signing"
    for _ in range(repeat):
        done = subprocess.run([sys.executable, "-X", "importtime", "-c", script],
                              capture_output=True, text=True, cwd=str(REPO), check=True)
        line = next(ln for ln in done.stderr.splitlines() if ln.rstrip().endswith("erp_backup_pipeline.core.signing"))
        out.append(int(line.split("|")[1]) / 1e6)  # cumulative microseconds
    return out


def signing_summary(c_big_runs: list[dict[str, Any]]) -> dict[str, Any]:
    """``results["signing"]``: the import times and each (c) big run's signing seconds, wall time and history."""
    return {"import_s_all_runs": signing_import_seconds(),
            "runs": [{"signing_s": r["signing_s"], "wall_s": r["wall_s"], "history": r["history"]}
                     for r in c_big_runs]}
