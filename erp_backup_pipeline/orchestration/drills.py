"""Restore drills in Dagster: the ``restore_drill`` check of every backup asset, and ``verify_backups``.

The check restores one partition's artifact into a scratch target and compares it with the
manifest (``core.drill``), recording the restore's seconds (the measured RTO) as metadata.
The nightly backup job runs it right after the new partition is written (``checks.restore_drill``);
the ``verify_backups`` job runs it alone, and its weekly schedule (Sunday 06:00 Europe/Berlin, the
original strategy's verification time) asks for a sample of older partitions of every configured
source: the oldest kept one and ``checks.drill_sample - 1`` others at random; with a ``pitr`` section
also the pgBackRest repository's latest state (``postgres_full``'s unpartitioned ``restore_drill``).
"""

import warnings
from datetime import date
from typing import Any

import dagster as dg

from erp_backup_pipeline.core import catalog, drill
from erp_backup_pipeline.core.runner import redact
from erp_backup_pipeline.errors import BackupError
from erp_backup_pipeline.orchestration.assets import TIMEZONE, daily_partitions, pool_for
from erp_backup_pipeline.orchestration.resources import BackupSettingsResource

CHECK = "restore_drill"
# A job that selects only checks has no partitions definition of its own in Dagster 1.13 (it is derived
# from selected assets), so runs name their partition with the tag, which the partitioned check reads.
PARTITION_TAG = "dagster/partition"
VERIFY_JOB = "verify_backups"
VERIFY_CRON = "0 6 * * 0"


def drill_key(asset: str) -> dg.AssetCheckKey:
    return dg.AssetCheckKey(dg.AssetKey(asset), CHECK)


def build_drill_check(asset: str, partitions: dg.PartitionsDefinition = daily_partitions) -> dg.AssetChecksDefinition:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # partitioned asset checks are marked preview
        return _drill_check(asset, partitions)


def _drill_check(asset: str, partitions: dg.PartitionsDefinition) -> dg.AssetChecksDefinition:
    @dg.asset_check(asset=asset, name=CHECK, partitions_def=partitions, blocking=False, pool=pool_for(asset),
                    description="Restores the partition's artifact into a scratch target (temp file, new database, "
                                "throwaway redis-server, temp directory) and compares it with the manifest; records "
                                "restore_seconds, the measured RTO.")
    def restore_drill(context: dg.AssetCheckExecutionContext,
                      backup_settings: BackupSettingsResource) -> dg.AssetCheckResult:
        partition = context.op_execution_context.partition_key
        try:
            result = drill.restore_drill(backup_settings.site(), asset, partition)
        except BackupError as exc:
            return dg.AssetCheckResult(passed=False, severity=dg.AssetCheckSeverity.ERROR,
                                       description=redact(str(exc)), metadata={"partition": partition})
        md: dict[str, Any] = {k: v for k, v in result.items() if isinstance(v, (int, float, str, bool)) and k != "ok"}
        return dg.AssetCheckResult(passed=True, metadata=md,
                                   description=f"restored in {result['restore_seconds']} s; {result.get('compared', '')}")

    return restore_drill


def build_verify_job(assets: list[str]) -> Any:
    return dg.define_asset_job(VERIFY_JOB, selection=dg.AssetSelection.checks(*[drill_key(a) for a in assets]),
                               executor_def=dg.in_process_executor,
                               description="Restore drills; launch it with the tag dagster/partition=<date> to drill that date.")


def build_verify_schedule(job: Any) -> dg.ScheduleDefinition:
    @dg.schedule(name=f"{VERIFY_JOB}_weekly", cron_schedule=VERIFY_CRON, execution_timezone=TIMEZONE, job=job,
                 default_status=dg.DefaultScheduleStatus.RUNNING,
                 description="Sunday 06:00: restore drills of a sample of older partitions of every configured source.")
    def weekly(context: dg.ScheduleEvaluationContext, backup_settings: BackupSettingsResource):  # type: ignore[no-untyped-def]
        try:
            settings = backup_settings.load()
            site = backup_settings.site()
            destinations = site.destinations
        except BackupError as exc:
            return dg.SkipReason(f"configuration error: {redact(str(exc))}")
        tick = context.scheduled_execution_time
        week = tick.date().isoformat() if tick else date.today().isoformat()
        requests = []
        found = 0
        for asset in site.enabled():
            entries = catalog.read(destinations, site.prefix, site.trust(), asset).entries
            found += len(entries)
            chosen = drill.drill_sample(entries, settings.checks.drill_sample)
            newest = max((e.manifest.partition for e in entries), default=None)
            if not settings.checks.restore_drill and newest is not None:
                chosen.append(newest)  # the nightly run does not drill it: the weekly one does
            requests += [dg.RunRequest(run_key=f"{VERIFY_JOB}:{asset}:{p}:{week}", asset_check_keys=[drill_key(asset)],
                                       tags={PARTITION_TAG: p, "erp_backup/source": asset, "erp_backup/drill": "weekly"})
                         for p in chosen]
        if site.pitr is not None:  # the whole pgBackRest repository, latest state
            requests.append(dg.RunRequest(run_key=f"{VERIFY_JOB}:postgres_full:{week}",
                                          asset_check_keys=[drill_key("postgres_full")],
                                          tags={"erp_backup/source": "postgres_pitr", "erp_backup/drill": "weekly"}))
        if not requests and not found:
            return dg.SkipReason("nothing to drill: no configured source has an authenticated backup on any destination; "
                                 "where Dagster shows backups, they are gone or untrusted (the check catalog_agrees of "
                                 "backup_catalog_audit names them)")
        return requests or dg.SkipReason("no older backups to drill yet")

    return weekly
