"""The code location: assembles assets, checks, jobs, schedules and resources. Nothing else."""

import dagster as dg

from erp_backup_pipeline.core.sources import enabled_sources
from erp_backup_pipeline.errors import BackupError
from erp_backup_pipeline.orchestration.assets import BACKUP_ASSETS, build_backup_asset, source_spec
from erp_backup_pipeline.orchestration.freshness import build_freshness
from erp_backup_pipeline.orchestration.resources import BackupSettingsResource
from erp_backup_pipeline.orchestration.schedules import build_job, build_schedule
from erp_backup_pipeline.settings import load_settings


def _configured(config_path: str | None) -> set[str]:
    """The sources the config file enables; all of them when it cannot be read at load time."""
    try:
        return set(enabled_sources(load_settings(config_path)))
    except BackupError:
        return set(BACKUP_ASSETS)


def build_definitions(config_path: str | None = None) -> dg.Definitions:
    assets = [build_backup_asset(info) for info in BACKUP_ASSETS.values()]
    sources = [source_spec(info) for info in BACKUP_ASSETS.values()]
    jobs = {name: build_job(name) for name in BACKUP_ASSETS}
    # an installation backs up PostgreSQL or SQLite, not both: no freshness alarm for a source it does not have
    configured = _configured(config_path)
    freshness_checks, freshness_sensor = build_freshness([a for a in assets if a.key.to_user_string() in configured])
    return dg.Definitions(
        assets=[*sources, *assets],
        asset_checks=freshness_checks,
        jobs=list(jobs.values()),
        schedules=[build_schedule(name, job) for name, job in jobs.items()],
        sensors=[freshness_sensor],
        resources={"backup_settings": BackupSettingsResource(config_path=config_path)},
        executor=dg.in_process_executor,
    )


defs = build_definitions()
