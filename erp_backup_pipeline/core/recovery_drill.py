"""The disaster recovery drill: the whole ERP recovered into a scratch directory, checked, measured, removed.

``run_drill`` takes the newest complete backup set, recovers every store with ``core.recovery`` into a scratch
directory under the staging dir (PostgreSQL into a scratch database ``..._drill``, never the name an operator's
recovery would use, or a point-in-time cluster under pgBackRest's work dir), runs the consistency checks and
records each store's restore seconds and the total (the measured RTO). Whatever happens, it stops every server
it started (Redis, point-in-time PostgreSQL), drops the scratch database and removes the directory again. A
failed recovery is a result (``DrillResult.failure``), not an exception: the drill reports it.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from psycopg import sql

from erp_backup_pipeline.core.recovery import BackupSet, backup_sets, plan_recovery, recover
from erp_backup_pipeline.core.recovery_servers import stop_servers
from erp_backup_pipeline.core.runner import redact
from erp_backup_pipeline.core.site import Site, takes_site
from erp_backup_pipeline.core.sources import postgres
from erp_backup_pipeline.errors import BackupError, RestoreError

Log = Callable[[str], None]


@dataclass
class DrillResult:
    date: str
    checks: list[dict[str, Any]]
    seconds: dict[str, float] = field(default_factory=dict)  # per store
    total_seconds: float = 0.0
    failure: str | None = None  # the one line when the recovery itself failed


def _drop_scratch_database(site: Site, name: str) -> None:
    src = site.source(postgres.KIND.name)
    with src.connect(dbname="postgres", autocommit=True) as conn:  # type: ignore[attr-defined]
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def _scratch(site: Site, bset: BackupSet) -> Path:
    """Under the staging dir; under pgBackRest's work dir when the set restores PostgreSQL to a point in time
    (pgBackRest runs as pitr.os_user, who must reach the data directory)."""
    parent = site.staging_dir
    if bset.pg_target is not None:
        from erp_backup_pipeline.core.pitr import config as pitr_config

        parent = pitr_config.layout(site).work_dir
    parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    scratch = Path(os.path.realpath(tempfile.mkdtemp(prefix="recovery-drill-", dir=parent)))  # ours: no link on the way
    if bset.pg_target is not None:
        scratch.chmod(0o711)
    return scratch


@takes_site
def run_drill(site: Site, log: Log = lambda _: None, warn: Log = lambda _: None) -> DrillResult:
    """Recover the newest complete set into scratch, check it, clean up; RestoreError when there is no set."""
    complete = [s for s in backup_sets(site) if s.complete]
    if not complete:
        raise RestoreError("no complete backup set yet: every configured store needs a verified backup of one date")
    bset = complete[-1]
    scratch = _scratch(site, bset)
    database = f"erp_recovered_{bset.date.replace('-', '')}_drill"
    dump = postgres.KIND.name in bset.entries and bset.pg_target is None
    plan = None
    try:
        if dump:
            _drop_scratch_database(site, database)  # left by a drill that was killed
        plan = plan_recovery(site, bset.date, scratch / "erp", pg_database=database)
        try:
            report = recover(site, plan, log=log)
            return DrillResult(bset.date, report["checks"], report["seconds"], report["total_seconds"])
        except BackupError as exc:
            failure = redact(str(exc))
            return DrillResult(bset.date, [{"check": "recovery", "ok": False, "detail": failure}], failure=failure)
    finally:  # each clean-up step runs whatever the one before did
        try:
            if plan is not None:
                for problem in stop_servers(site, plan.steps):  # recover stops them itself on failure
                    warn(f"could not stop a server the drill started: {problem}")
        finally:
            try:
                if dump:
                    _drop_scratch_database(site, database)
            except BackupError as exc:
                warn(f"could not drop the scratch database: {redact(str(exc))}")
            finally:
                shutil.rmtree(scratch, ignore_errors=True)
