"""The code location's partitions: one daily definition (Europe/Berlin) for every daily asset, check and job, and the
hourly one of ``postgres_incremental``, both starting at the installation's first day.

The first day is read when the definitions load (``orchestration.definitions``, ``core.partitions.first_day``):
``partitions.start`` from the configuration, else the one this host keeps in its state_dir (the day of its first
backup, or ``DEFAULT_START`` when the code location first loaded before any). When the configuration cannot be read
at load, the dates begin at ``DEFAULT_START``.
"""

from __future__ import annotations

from datetime import date

import dagster as dg

from erp_backup_pipeline.core.manifest import PARTITION_TIMEZONE
from erp_backup_pipeline.core.partitions import DEFAULT_FIRST_DAY

DEFAULT_START = DEFAULT_FIRST_DAY.isoformat()


def daily(start: str | date = DEFAULT_START) -> dg.DailyPartitionsDefinition:
    """Daily partitions from ``start``, calendar days in Europe/Berlin, up to today's (end_offset 1)."""
    day = start if isinstance(start, str) else start.isoformat()
    return dg.DailyPartitionsDefinition(start_date=day, timezone=PARTITION_TIMEZONE, end_offset=1)


def hourly(daily_partitions: dg.DailyPartitionsDefinition) -> dg.HourlyPartitionsDefinition:
    """Hourly partitions in UTC from the first hour of the daily partitions' first day."""
    first = daily_partitions.start.date().isoformat()
    return dg.HourlyPartitionsDefinition(start_date=f"{first}-00:00", timezone="UTC", end_offset=1)


def rebind(asset: dg.AssetsDefinition, partitions: dg.PartitionsDefinition) -> dg.AssetsDefinition:
    """A module-level asset (its checks not partitioned) with the code location's partitions instead of the default
    ones; its job, defined without a partitions definition of its own, takes them from it."""
    if asset.partitions_def == partitions:
        return asset
    return asset.map_asset_specs(lambda spec: spec.replace_attributes(partitions_def=partitions))
