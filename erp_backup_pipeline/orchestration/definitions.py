"""The code location: assembles assets, checks, jobs, schedules and resources. Nothing else."""

import dagster as dg

from erp_backup_pipeline.core.partitions import first_day
from erp_backup_pipeline.core.site import build_site
from erp_backup_pipeline.errors import BackupError
from erp_backup_pipeline.orchestration import partitions
from erp_backup_pipeline.orchestration.alerting import build_alert_sensor
from erp_backup_pipeline.orchestration.assets import (
    BACKUP_ASSETS,
    build_backup_asset,
    source_spec,
    unconfigured_spec,
)
from erp_backup_pipeline.orchestration.audit import audit_job, audit_schedule, audit_weekly_schedule, backup_catalog_audit
from erp_backup_pipeline.orchestration.drills import build_drill_check, build_verify_job, build_verify_schedule
from erp_backup_pipeline.orchestration.freshness import build_freshness
from erp_backup_pipeline.orchestration.health import build_health_sensor
from erp_backup_pipeline.orchestration.history import build_history_sensor
from erp_backup_pipeline.orchestration.maintenance import (
    backup_retention,
    history_job,
    history_schedule,
    retention_job,
    retention_schedule,
)
from erp_backup_pipeline.orchestration.pitr import (
    PITR_ASSETS,
    build_backfill_job,
    build_pitr_asset,
    build_pitr_drill_check,
    build_pitr_job,
    build_pitr_schedule,
)
from erp_backup_pipeline.orchestration.push import build_push_sensor
from erp_backup_pipeline.orchestration.recovery import recovery_drill, recovery_job, recovery_schedule
from erp_backup_pipeline.orchestration.resources import BackupSettingsResource
from erp_backup_pipeline.orchestration.schedules import build_job, build_schedule
from erp_backup_pipeline.settings import load_settings


def _installation(config_path: str | None) -> tuple[set[str], bool, str]:
    """From one reading of the config file: the sources it enables (``postgres_full`` for a pitr section), whether
    nightly runs drill, and the first day of the partitions (``core.partitions.first_day``); all of them, True and
    ``DEFAULT_START`` when the file cannot be read at load time."""
    try:
        settings = load_settings(config_path)
        site = build_site(settings)
        pitr = {"postgres_full"} if site.pitr is not None else set()
        return set(site.enabled()) | pitr, settings.checks.restore_drill, first_day(site).isoformat()
    except BackupError:
        return {*BACKUP_ASSETS, "postgres_full"}, True, partitions.DEFAULT_START


def build_definitions(config_path: str | None = None) -> dg.Definitions:
    # what the installation backs up, from its config file: a source it does not have gets no job, schedule, check
    # or freshness alarm, and its asset is shown marked and not executable (assets.unconfigured_spec)
    configured, nightly_drill, start = _installation(config_path)
    if "postgres_full" in configured:
        configured.add("postgres_incremental")
    # one daily partitions definition, from the installation's first day, for every daily asset, check and job
    days = partitions.daily(start)
    backups = [name for name in BACKUP_ASSETS if name in configured]
    pitr = [name for name in PITR_ASSETS if name in configured]
    assets = [build_backup_asset(BACKUP_ASSETS[name], days) for name in backups]
    pitr_assets = [build_pitr_asset(name, days) for name in pitr]
    absent = [*(unconfigured_spec(name, info.engine, info.upstream, f"sources.{info.key}")
                for name, info in BACKUP_ASSETS.items() if name not in configured),
              *(unconfigured_spec(name, "postgres", BACKUP_ASSETS["postgres_dump"].upstream, "pitr")
                for name in PITR_ASSETS if name not in pitr)]
    sources = [source_spec(info) for info in BACKUP_ASSETS.values()]
    retention, audit = partitions.rebind(backup_retention, days), partitions.rebind(backup_catalog_audit, days)
    jobs = {name: build_job(name, drill=nightly_drill, partitions=days) for name in backups}
    freshness_checks, freshness_sensor = build_freshness([*assets, *pitr_assets])
    verify_job = build_verify_job([name for name in [*BACKUP_ASSETS, "postgres_full"] if name in configured])
    checks = [*freshness_checks, *(build_drill_check(name, days) for name in backups),
              *([build_pitr_drill_check()] if pitr else [])]
    pitr_jobs = {name: build_pitr_job(name, days) for name in pitr}
    # recovering a missed postgres_dump date from the pgBackRest archive needs both
    backfill = [build_backfill_job(days)] if pitr and "postgres_dump" in configured else []
    check_keys = sorted({key for a in [*assets, *pitr_assets, retention, recovery_drill, audit, *checks]
                         for key in a.check_keys},
                        key=str)
    return dg.Definitions(
        assets=[*sources, *assets, *pitr_assets, *absent, retention, recovery_drill, audit],
        asset_checks=checks,
        jobs=[*jobs.values(), verify_job, *pitr_jobs.values(), *backfill, retention_job, history_job,
              recovery_job, audit_job],
        schedules=[*(build_schedule(name, job) for name, job in jobs.items()), build_verify_schedule(verify_job),
                   *(build_pitr_schedule(name, job) for name, job in pitr_jobs.items()), retention_schedule,
                   history_schedule, recovery_schedule, audit_schedule, audit_weekly_schedule],
        sensors=[freshness_sensor, build_alert_sensor(check_keys), build_push_sensor(),
                 build_health_sensor(), build_history_sensor()],
        # pinned here, at load, from the code location's environment: a run's launcher cannot change it
        resources={"backup_settings": BackupSettingsResource.pinned(config_path)},
        executor=dg.in_process_executor,
    )


defs = build_definitions()
