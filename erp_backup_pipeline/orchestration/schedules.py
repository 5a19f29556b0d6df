"""Jobs and schedules: one partitioned job per configured backup asset, scheduled at the original cron time.

The databases are backed up at 02:00, Redis at 03:00, the configuration at 04:00 and the
uploads at 05:00 Europe/Berlin (the original strategy's cron lines). A tick
backs up the partition of its own date (the capture date, as the original scripts named their
files). The code location builds them for the sources configured when it loads (``definitions``); a source
removed from the config file since then is skipped with a reason shown on the tick.
"""

from typing import Any

import dagster as dg

from erp_backup_pipeline.core.partitions import today
from erp_backup_pipeline.core.sources import KINDS
from erp_backup_pipeline.errors import BackupError
from erp_backup_pipeline.orchestration.assets import TIMEZONE, daily_partitions
from erp_backup_pipeline.orchestration.resources import BackupSettingsResource


def job_name(asset: str) -> str:
    return f"{asset}_job"


def build_job(asset: str, drill: bool = True, partitions: dg.PartitionsDefinition = daily_partitions) -> Any:
    names = ("integrity", "size_anomaly", "restore_drill") if drill else ("integrity", "size_anomaly")
    own_checks = [dg.AssetCheckKey(dg.AssetKey(asset), name) for name in names]
    # the asset and the checks it runs itself; its freshness check belongs to the freshness sensor
    return dg.define_asset_job(job_name(asset), selection=dg.AssetSelection.assets(asset).without_checks()
                               | dg.AssetSelection.checks(*own_checks),
                               partitions_def=partitions, executor_def=dg.in_process_executor,
                               tags={"erp_backup/source": asset})


def build_schedule(asset: str, job: Any) -> dg.ScheduleDefinition:
    cron = KINDS[asset].cron

    @dg.schedule(name=f"{asset}_nightly", cron_schedule=cron, execution_timezone=TIMEZONE, job=job,
                 default_status=dg.DefaultScheduleStatus.RUNNING,
                 description=f"Back up {asset} at {cron} {TIMEZONE} (original strategy's cron time).")
    def nightly(context: dg.ScheduleEvaluationContext, backup_settings: BackupSettingsResource):  # type: ignore[no-untyped-def]
        try:
            enabled = backup_settings.site().enabled()
        except BackupError as exc:
            return dg.SkipReason(f"configuration error: {exc}")
        if asset not in enabled:
            return dg.SkipReason(f"{asset} is not configured (sources.{KINDS[asset].key} in the config file)")
        partition = today(context.scheduled_execution_time).isoformat()
        return dg.RunRequest(run_key=f"{asset}:{partition}", partition_key=partition)

    return nightly
