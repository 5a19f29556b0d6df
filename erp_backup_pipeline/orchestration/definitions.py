"""The code location: assembles assets, checks, jobs, schedules and resources. Nothing else."""

import dagster as dg

from erp_backup_pipeline.orchestration.assets import BACKUP_ASSETS, build_backup_asset, source_spec
from erp_backup_pipeline.orchestration.freshness import build_freshness
from erp_backup_pipeline.orchestration.resources import BackupSettingsResource
from erp_backup_pipeline.orchestration.schedules import build_job, build_schedule


def build_definitions(config_path: str | None = None) -> dg.Definitions:
    assets = [build_backup_asset(info) for info in BACKUP_ASSETS.values()]
    sources = [source_spec(info) for info in BACKUP_ASSETS.values()]
    jobs = {name: build_job(name) for name in BACKUP_ASSETS}
    freshness_checks, freshness_sensor = build_freshness(assets)
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
