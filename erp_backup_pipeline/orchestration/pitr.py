"""PostgreSQL point-in-time recovery in Dagster: ``postgres_full`` (daily) and ``postgres_incremental`` (hourly).

Both run pgBackRest (``core.pitr``) against the stanza the config's ``pitr`` section describes:
``postgres_full`` takes a full backup at 02:00 Europe/Berlin, ``postgres_incremental`` an incremental
one at every hour (partitions in UTC) against the newest full. Each materialization records the
backup label, start/stop LSN and time, the WAL range, the database and repository sizes and the
duration. Checks: ``pgbackrest_verify`` (blocking: every file of every backup and WAL segment
against its checksum) and ``wal_continuity`` (the archive has every segment from the newest full
backup's start up to now, and a WAL switch gets archived right now: ``pgbackrest check``).
Without a ``pitr`` section the schedules skip with the reason.
"""


from datetime import UTC, datetime
from typing import Any

import dagster as dg

from erp_backup_pipeline.core.partitions import today
from erp_backup_pipeline.core.pitr.engine import PgBackRest
from erp_backup_pipeline.core.runner import redact
from erp_backup_pipeline.errors import BackupError
from erp_backup_pipeline.orchestration.assets import GROUP, TIMEZONE, daily_partitions, partitioned_check, pool_for
from erp_backup_pipeline.orchestration.late_captures import as_of_metadata
from erp_backup_pipeline.orchestration.partitions import hourly
from erp_backup_pipeline.orchestration.resources import BackupSettingsResource

UPSTREAM = "erp_postgres_database"
hourly_partitions = hourly(daily_partitions)
# one pool for the whole pgBackRest stanza: a full, an incremental and a drill of the repository never overlap
PITR_POOL = pool_for("postgres_pitr")
PITR_ASSETS = {"postgres_full": ("full", daily_partitions, "0 2 * * *", TIMEZONE),
               "postgres_incremental": ("incr", hourly_partitions, "0 * * * *", "UTC")}


def _iso(ts: int) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat()


def backup_metadata(record: dict[str, Any]) -> dict[str, Any]:
    start, stop = record["timestamp"]["start"], record["timestamp"]["stop"]
    info = record.get("info", {})
    return {"label": record["label"], "type": record["type"], "prior": record.get("prior") or "",
            "start_lsn": record["lsn"]["start"], "stop_lsn": record["lsn"]["stop"],
            "started_at": _iso(start), "stopped_at": _iso(stop),
            "wal_start": record["archive"]["start"], "wal_stop": record["archive"]["stop"],
            "database_bytes": dg.MetadataValue.int(int(info.get("size", 0))),
            "delta_bytes": dg.MetadataValue.int(int(info.get("delta", 0))),
            "repository_bytes": dg.MetadataValue.int(int(info.get("repository", {}).get("size", 0))),
            "duration_seconds": dg.MetadataValue.float(float(stop - start))}


def _checks(engine: PgBackRest, asset: str) -> list[dg.AssetCheckResult]:
    results = []
    try:
        verified = engine.verify()
        results.append(dg.AssetCheckResult(asset_key=asset, check_name="pgbackrest_verify", passed=True,
                                           metadata={k: v for k, v in verified.items() if k != "ok"}))
    except BackupError as exc:
        results.append(dg.AssetCheckResult(asset_key=asset, check_name="pgbackrest_verify", passed=False,
                                           severity=dg.AssetCheckSeverity.ERROR, description=redact(str(exc))))
    try:
        fulls = [b for b in engine.backups() if b["type"] == "full"]
        if not fulls:
            raise BackupError("no full backup in the repository")
        engine.check()
        wal = engine.continuity(fulls[-1]["archive"]["start"])
        results.append(dg.AssetCheckResult(asset_key=asset, check_name="wal_continuity", passed=True, metadata={
            "from_full": fulls[-1]["label"], "first_segment": wal.first, "last_segment": wal.last,
            "segments": dg.MetadataValue.int(wal.segments)}))
    except BackupError as exc:
        results.append(dg.AssetCheckResult(asset_key=asset, check_name="wal_continuity", passed=False,
                                           severity=dg.AssetCheckSeverity.ERROR, description=redact(str(exc))))
    return results


def _partitions(name: str, daily: dg.DailyPartitionsDefinition | None) -> dg.PartitionsDefinition:
    """The asset's partitions: the code location's daily ones (``postgres_incremental``: hourly from their start)."""
    default = PITR_ASSETS[name][1]
    if daily is None:
        return default
    return daily if default is daily_partitions else hourly(daily)


def build_pitr_asset(name: str, daily: dg.DailyPartitionsDefinition | None = None) -> dg.AssetsDefinition:
    kind = PITR_ASSETS[name][0]
    partitions = _partitions(name, daily)
    specs = [partitioned_check(name, "pgbackrest_verify", partitions, blocking=True,
                               description="pgbackrest verify: every backup file and WAL segment against its checksum."),
             partitioned_check(name, "wal_continuity", partitions,
                               description="Every WAL segment from the newest full backup's start is archived, and "
                                           "archiving works now (pgbackrest check).")]

    @dg.asset(name=name, partitions_def=partitions, check_specs=specs, deps=[UPSTREAM], group_name=GROUP,
              kinds={"postgres"}, owners=["team:erp-ops"], tags={"erp_backup/source": "postgres"},
              pool=PITR_POOL,
              description=f"pgBackRest {kind} backup of the PostgreSQL cluster (WAL archived continuously), for "
                          "point-in-time recovery: erp-backup restore postgres --target-time ...")
    def pitr_backup(context: dg.AssetExecutionContext, backup_settings: BackupSettingsResource) -> dg.MaterializeResult:
        try:
            site = backup_settings.site()
            if site.pitr is None:
                raise BackupError("pitr is not configured (the pitr section of the config file)")
            engine = PgBackRest(site)
            record = engine.backup(kind)
        except BackupError as exc:
            raise dg.Failure(description=redact(str(exc))) from None
        context.log.info(f"pgBackRest {kind} backup {record['label']}: WAL {record['archive']['start']}.."
                         f"{record['archive']['stop']}")
        return dg.MaterializeResult(metadata=backup_metadata(record), check_results=_checks(engine, name))

    return pitr_backup


def build_pitr_drill_check() -> dg.AssetChecksDefinition:
    """``restore_drill`` on ``postgres_full``: the whole cluster restored from the repository and started."""

    @dg.asset_check(asset="postgres_full", name="restore_drill", blocking=False, pool=PITR_POOL,
                    description="Restores the latest state from the pgBackRest repository into a scratch cluster, "
                                "starts it until promoted, then removes it; records restore_seconds (the RTO).")
    def pitr_restore_drill(backup_settings: BackupSettingsResource) -> dg.AssetCheckResult:
        from erp_backup_pipeline.core.pitr.backfill import drill

        try:
            result = drill(backup_settings.site())
        except BackupError as exc:
            return dg.AssetCheckResult(passed=False, severity=dg.AssetCheckSeverity.ERROR, description=redact(str(exc)))
        return dg.AssetCheckResult(passed=True, metadata=result,
                                   description=f"restored {result['label']} and promoted in {result['restore_seconds']} s")

    return pitr_restore_drill


def build_pitr_job(name: str, daily: dg.DailyPartitionsDefinition | None = None) -> Any:
    partitions = _partitions(name, daily)
    own = [dg.AssetCheckKey(dg.AssetKey(name), check) for check in ("pgbackrest_verify", "wal_continuity")]
    selection = dg.AssetSelection.assets(name).without_checks() | dg.AssetSelection.checks(*own)
    return dg.define_asset_job(f"{name}_job", selection=selection, partitions_def=partitions,
                               executor_def=dg.in_process_executor, tags={"erp_backup/source": "postgres_pitr"})


def build_pitr_schedule(name: str, job: Any) -> dg.ScheduleDefinition:
    _, partitions, cron, tz = PITR_ASSETS[name]

    @dg.schedule(name=f"{name}_schedule", cron_schedule=cron, execution_timezone=tz, job=job,
                 default_status=dg.DefaultScheduleStatus.RUNNING,
                 description=f"pgBackRest backup for {name} at {cron} {tz}.")
    def schedule(context: dg.ScheduleEvaluationContext, backup_settings: BackupSettingsResource):  # type: ignore[no-untyped-def]
        try:
            site = backup_settings.site()
        except BackupError as exc:
            return dg.SkipReason(f"configuration error: {redact(str(exc))}")
        if site.pitr is None:
            return dg.SkipReason(f"{name}: pitr is not configured (the pitr section of the config file)")
        tick = context.scheduled_execution_time
        if name == "postgres_full":
            partition = today(tick).isoformat()
        else:
            partition = tick.astimezone(UTC).strftime("%Y-%m-%d-%H:00")
        return dg.RunRequest(run_key=f"{name}:{partition}", partition_key=partition)

    return schedule


def build_backfill_job(partitions: dg.PartitionsDefinition = daily_partitions) -> Any:
    """``postgres_dump_pitr_backfill``: fill missed ``postgres_dump`` dates with the data as it was that day.

    Launch it for the missing dates (a backfill from the UI, or ``dagster job backfill ... -j
    postgres_dump_pitr_backfill``); each run recovers a scratch cluster to the end of its date from the
    pgBackRest archive, dumps it through the normal pipeline and records the ``postgres_dump`` partition,
    its manifest's ``mode`` saying so."""

    @dg.op(name="postgres_dump_from_pitr", tags={"kind": "postgres"}, pool=pool_for("postgres_dump"))
    def dump_from_pitr(context: dg.OpExecutionContext, backup_settings: BackupSettingsResource):  # type: ignore[no-untyped-def]
        from erp_backup_pipeline.core.pitr.backfill import backfill_dump

        day = context.partition_key
        try:
            m = backfill_dump(backup_settings.site(), day)
        except BackupError as exc:
            raise dg.Failure(description=redact(str(exc))) from None
        yield dg.AssetMaterialization(asset_key="postgres_dump", partition=day, metadata={
            "mode": m.mode, "sha256": m.artifact_sha256, "captured_at": m.captured_at, **as_of_metadata(m),
            "raw_bytes": dg.MetadataValue.int(m.stage("dump")["bytes"]),
            "encrypted_bytes": dg.MetadataValue.int(m.artifact_bytes),
            **{f"rows/{t}": dg.MetadataValue.int(int(n)) for t, n in m.facts.get("row_counts", {}).items()}})
        yield dg.Output(None)

    @dg.job(name="postgres_dump_pitr_backfill", partitions_def=partitions, executor_def=dg.in_process_executor,
            tags={"erp_backup/source": "postgres_dump"},
            description="Back up missed postgres_dump dates as they were at the end of each day (pgBackRest).")
    def backfill_job() -> None:
        dump_from_pitr()

    return backfill_job
