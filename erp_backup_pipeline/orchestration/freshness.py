"""Freshness: each backup asset's newest daily partition must exist an hour after its schedule.

Dagster's time-partition freshness checks (one per asset, severity ERROR) and the sensor that
evaluates them. A stopped daemon, a paused schedule or a run stuck in the queue all show up here,
where a failed run alone would not.
"""

import warnings
from typing import Any

import dagster as dg

from erp_backup_pipeline.core.sources import KINDS
from erp_backup_pipeline.orchestration.assets import TIMEZONE

GRACE_HOURS = 1


# hourly incrementals: due half an hour into the next hour
PITR_DEADLINES = {"postgres_full": "0 3 * * *", "postgres_incremental": "30 * * * *"}


def deadline_cron(asset: str) -> str:
    """The schedule's minute and hour plus the grace: ``0 2 * * *`` becomes ``0 3 * * *``."""
    if asset in PITR_DEADLINES:
        return PITR_DEADLINES[asset]
    minute, hour, *rest = KINDS[asset].cron.split()
    return " ".join([minute, str((int(hour) + GRACE_HOURS) % 24), *rest])


def build_freshness(assets: list[dg.AssetsDefinition]) -> tuple[list[Any], dg.SensorDefinition]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the freshness-check builders are marked beta
        checks = [check for asset in assets for check in dg.build_time_partition_freshness_checks(
            assets=[asset], deadline_cron=deadline_cron(asset.key.to_user_string()), timezone=TIMEZONE,
            severity=dg.AssetCheckSeverity.ERROR)]
        sensor = dg.build_sensor_for_freshness_checks(freshness_checks=checks, name="backup_freshness_sensor",
                                                      default_status=dg.DefaultSensorStatus.RUNNING)
    return checks, sensor
