"""The disaster recovery drill in Dagster: ``recovery_drill``, an asset materialized monthly by
``disaster_recovery_drill_monthly`` and on demand by its job, runs ``core.recovery_drill`` and records each
store's restore seconds and the total (the measured RTO) as metadata. Its ``restore_drill`` check carries the
result: passed, or the failed checks; ``backup_restore_seconds{asset="recovery_drill"}`` exports the total.
"""

from typing import Any

import dagster as dg

from erp_backup_pipeline.core.recovery_drill import run_drill
from erp_backup_pipeline.core.runner import redact
from erp_backup_pipeline.errors import RestoreError
from erp_backup_pipeline.orchestration.assets import BACKUP_ASSETS, GROUP, TIMEZONE
from erp_backup_pipeline.orchestration.resources import BackupSettingsResource

ASSET = "recovery_drill"
JOB = "disaster_recovery_drill"


@dg.asset(name=ASSET, deps=list(BACKUP_ASSETS), group_name=GROUP, owners=["team:erp-ops"], kinds={"python"},
          check_specs=[dg.AssetCheckSpec("restore_drill", asset=ASSET,
                                         description="The newest complete backup set recovered as a whole and "
                                                     "consistent across stores; restore_seconds is the total RTO.")],
          description="Monthly disaster-recovery drill: the whole ERP recovered from the newest complete backup set "
                      "into a scratch directory, checked, measured, removed.")
def recovery_drill(context: dg.AssetExecutionContext, backup_settings: BackupSettingsResource) -> dg.MaterializeResult:
    try:
        result = run_drill(backup_settings.site(), log=context.log.info, warn=context.log.warning)
    except RestoreError as exc:
        raise dg.Failure(description=redact(str(exc))) from None
    date, checks, seconds, total, failure = (result.date, result.checks, result.seconds, result.total_seconds,
                                             result.failure)
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
