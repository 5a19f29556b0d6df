"""The disaster recovery drill in Dagster: the whole ERP recovered into a scratch directory, checked, removed.

``recovery_drill`` (an asset, materialized monthly by ``disaster_recovery_drill_monthly`` and on demand
by its job) takes the newest complete backup set, recovers every store with ``core.recovery`` into a
scratch directory under the staging dir (PostgreSQL into a scratch database ``..._drill``, or a
point-in-time cluster under pgBackRest's work dir), runs the consistency checks, records each store's
restore seconds and the total (the measured RTO) as metadata, and stops every server it started (Redis,
point-in-time PostgreSQL), drops the scratch database and removes the directory again, also on failure.
Its ``restore_drill`` check carries the result: passed, or the failed checks;
``backup_restore_seconds{asset="recovery_drill"}`` exports the total.
"""

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import dagster as dg
from psycopg import sql

from erp_backup_pipeline.core.recovery import backup_sets, plan_recovery, recover
from erp_backup_pipeline.core.recovery_servers import stop_servers
from erp_backup_pipeline.core.runner import redact
from erp_backup_pipeline.core.sources import build_source
from erp_backup_pipeline.errors import BackupError
from erp_backup_pipeline.orchestration.assets import BACKUP_ASSETS, GROUP, TIMEZONE
from erp_backup_pipeline.orchestration.resources import BackupSettingsResource

ASSET = "recovery_drill"
JOB = "disaster_recovery_drill"


def _drop_scratch_database(settings: Any, name: str) -> None:
    src = build_source(settings, "postgres_dump")
    with src.connect(dbname="postgres", autocommit=True) as conn:  # type: ignore[attr-defined]
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def _scratch(settings: Any, bset: Any) -> Path:
    """Under the staging dir; under pgBackRest's work dir when the set restores PostgreSQL to a point in time
    (pgBackRest runs as pitr.os_user, who must reach the data directory)."""
    parent = Path(settings.staging_dir)
    if bset.pg_target is not None:
        from erp_backup_pipeline.core.pitr import config as pitr_config

        parent = pitr_config.layout(settings).work_dir
    parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    scratch = Path(os.path.realpath(tempfile.mkdtemp(prefix="recovery-drill-", dir=parent)))  # ours: no link on the way
    if bset.pg_target is not None:
        scratch.chmod(0o711)
    return scratch


@dg.asset(name=ASSET, deps=list(BACKUP_ASSETS), group_name=GROUP, owners=["team:erp-ops"], kinds={"python"},
          check_specs=[dg.AssetCheckSpec("restore_drill", asset=ASSET,
                                         description="The newest complete backup set recovered as a whole and "
                                                     "consistent across stores; restore_seconds is the total RTO.")],
          description="Monthly disaster-recovery drill: the whole ERP recovered from the newest complete backup set "
                      "into a scratch directory, checked, measured, removed.")
def recovery_drill(context: dg.AssetExecutionContext, backup_settings: BackupSettingsResource) -> dg.MaterializeResult:
    settings = backup_settings.load()
    complete = [s for s in backup_sets(settings) if s.complete]
    if not complete:
        raise dg.Failure(description="no complete backup set yet: every configured store needs a verified backup "
                                     "of one date")
    date = complete[-1].date
    scratch = _scratch(settings, complete[-1])
    database = f"erp_recovered_{date.replace('-', '')}_drill"  # never the name an operator's recovery would use
    dump = "postgres_dump" in complete[-1].entries and complete[-1].pg_target is None
    plan = None
    try:
        if dump:
            _drop_scratch_database(settings, database)  # left by a drill that was killed
        plan = plan_recovery(settings, date, scratch / "erp", pg_database=database)
        try:
            report = recover(settings, plan, log=context.log.info)
            checks, failure = report["checks"], None
            seconds, total = report["seconds"], report["total_seconds"]
        except BackupError as exc:
            failure = redact(str(exc))
            checks, seconds, total = [{"check": "recovery", "ok": False, "detail": failure}], {}, 0.0
    finally:  # each clean-up step runs whatever the one before did
        try:
            if plan is not None:
                for problem in stop_servers(settings, plan.steps):  # recover stops them itself on failure
                    context.log.warning(f"could not stop a server the drill started: {problem}")
        finally:
            try:
                if dump:
                    _drop_scratch_database(settings, database)
            except BackupError as exc:
                context.log.warning(f"could not drop the scratch database: {redact(str(exc))}")
            finally:
                shutil.rmtree(scratch, ignore_errors=True)
    md: dict[str, Any] = {"date": date, "restore_seconds": dg.MetadataValue.float(float(total)),
                          **{f"seconds/{s}": dg.MetadataValue.float(float(t)) for s, t in seconds.items()},
                          "checks": dg.MetadataValue.md("\n".join(
                              f"- {'ok' if c['ok'] else 'FAILED'}: {c['check']}: {c['detail']}" for c in checks))}
    check = dg.AssetCheckResult(passed=failure is None, severity=dg.AssetCheckSeverity.ERROR, description=failure,
                                metadata={k: v for k, v in md.items() if k != "checks"})
    return dg.MaterializeResult(metadata=md, check_results=[check])


recovery_job = dg.define_asset_job(JOB, selection=dg.AssetSelection.assets(ASSET), executor_def=dg.in_process_executor,
                                   description="Recover the whole ERP into a scratch directory, check it, measure it, "
                                               "remove it (monthly, and on demand).")

recovery_schedule = dg.ScheduleDefinition(name=f"{JOB}_monthly", cron_schedule="0 8 1 * *", execution_timezone=TIMEZONE,
                                          job=recovery_job, default_status=dg.DefaultScheduleStatus.RUNNING)
