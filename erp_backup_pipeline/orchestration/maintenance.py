"""Housekeeping in Dagster: ``backup_retention`` (apply the retention plan daily) and Dagster's own history.

``backup_retention`` (daily, 07:00 Europe/Berlin, after every backup and the nightly drills) runs
``core.prune`` for real (retention, and the sweep of artifacts a stopped run left without a manifest once they are
older than ``retention.orphan_grace_hours``) and records what it deleted, kept and could not delete; its check
``prune_complete`` fails (and alerts) when a deletion or an Object Lock extension failed, and a refusal (an
unreadable destination, a file or chain finding that is not authenticated) fails the run with its one line.
``dagster_history_maintenance`` (daily, 07:30) deletes
Dagster runs older than ``maintenance.run_history_days``, never one still going and never the run
that produced the newest materialization of any backup partition: the instance's own retention
setting covers schedule and sensor ticks only, so run and event history would otherwise grow forever.
"""

from datetime import UTC, datetime, timedelta
from typing import Any

import dagster as dg

from erp_backup_pipeline.core.partitions import today
from erp_backup_pipeline.core.prune import prune
from erp_backup_pipeline.core.runner import redact
from erp_backup_pipeline.errors import BackupError
from erp_backup_pipeline.orchestration.assets import BACKUP_ASSETS, GROUP, TIMEZONE, daily_partitions, pool_for
from erp_backup_pipeline.orchestration.pitr import PITR_ASSETS
from erp_backup_pipeline.orchestration.resources import BackupSettingsResource

RETENTION = "backup_retention"
MAINTENANCE_JOB = "dagster_history_maintenance"
_ACTIVE = [dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.QUEUED,
           dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.CANCELING]


def _table(rows: list[dict[str, str]]) -> str:
    lines = ["| source | partition | captured_at | reason |", "| --- | --- | --- | --- |"]
    lines += [f"| {r['source']} | {r['partition']} | {r['captured_at']} | {r['reason']} |" for r in rows]
    return "\n".join(lines)


@dg.asset(name=RETENTION, partitions_def=daily_partitions, deps=list(BACKUP_ASSETS), group_name=GROUP,
          owners=["team:erp-ops"], kinds={"python"}, pool=pool_for(RETENTION),
          check_specs=[dg.AssetCheckSpec("prune_complete", asset=RETENTION,
                                         description="Every deletion the retention plan asked for succeeded, and every "
                                                     "Object Lock it asked to extend was extended.")],
          description="Applies the retention policies (erp-backup prune): deletes what the plan deletes, never the "
                      "newest verified backup, anything a kept backup depends on, or anything while backups fail; "
                      "sweeps artifacts a stopped run left without a manifest once past retention.orphan_grace_hours.")
def backup_retention(context: dg.AssetExecutionContext, backup_settings: BackupSettingsResource) -> dg.MaterializeResult:
    try:
        result = prune(backup_settings.site(), dry_run=False, log=context.log.info)
    except BackupError as exc:
        raise dg.Failure(description=redact(str(exc))) from None
    rows = [r for r in result.as_rows() if r["action"] != "keep"]
    deleted = [r for r in rows if r["action"] == "deleted"]
    failed = [r for r in rows if r["action"] == "failed"]
    unlocked = [f"{e.manifest.source} {e.manifest.partition} on {name}: {outcome}" for e, name, outcome in result.locks
                if outcome.startswith("failed")]
    problems = [f"{len(failed)} deletion(s) failed, first: {failed[0]['reason']}"] if failed else []
    problems += [f"{len(unlocked)} lock extension(s) failed, first: {unlocked[0]}"] if unlocked else []
    check = dg.AssetCheckResult(passed=not problems, severity=dg.AssetCheckSeverity.ERROR,
                                description=redact("; ".join(problems)) if problems else None)
    return dg.MaterializeResult(metadata={
        "deleted": dg.MetadataValue.int(len(deleted)), "kept": dg.MetadataValue.int(result.count("keep")),
        "failed": dg.MetadataValue.int(len(failed)),
        "locks_extended": dg.MetadataValue.int(len(result.locks) - len(unlocked)),
        "deleted_items": dg.MetadataValue.md(_table(deleted) if deleted else "nothing deleted"),
        "notes": dg.MetadataValue.md("\n".join(f"- {n}" for n in result.notes) or "none")},
        check_results=[check])


def protected_runs(instance: dg.DagsterInstance) -> set[str]:
    """The runs that produced the newest materialization of every backup partition."""
    keep: set[str] = set()
    for asset in [*BACKUP_ASSETS, *PITR_ASSETS, RETENTION]:
        key = dg.AssetKey(asset)
        newest: dict[str | None, tuple[int, str]] = {}
        cursor = None
        while True:
            page = instance.fetch_materializations(key, limit=1000, cursor=cursor)
            for record in page.records:
                part = record.partition_key
                if part not in newest or record.storage_id > newest[part][0]:
                    newest[part] = (record.storage_id, record.run_id)
            if not page.has_more:
                break
            cursor = page.cursor
        keep |= {run_id for _, run_id in newest.values()}
    return keep


def prune_history(instance: dg.DagsterInstance, older_than_days: int, now: datetime | None = None,
                  log: Any = print) -> dict[str, int]:
    cutoff = (now or datetime.now(UTC)) - timedelta(days=older_than_days)
    keep = protected_runs(instance)
    deleted = kept = 0
    for record in instance.get_run_records(dg.RunsFilter(created_before=cutoff)):
        run = record.dagster_run
        if run.run_id in keep or run.status in _ACTIVE:
            kept += 1
            continue
        instance.delete_run(run.run_id)
        deleted += 1
        log(f"deleted Dagster run {run.run_id} ({run.job_name}, {record.create_timestamp.isoformat()})")
    return {"deleted": deleted, "kept": kept}


@dg.op(name="prune_dagster_history")
def prune_dagster_history(context: dg.OpExecutionContext, backup_settings: BackupSettingsResource) -> None:
    days = backup_settings.load().maintenance.run_history_days
    counts = prune_history(context.instance, days, log=context.log.info)
    context.log.info(f"Dagster history older than {days} days: {counts['deleted']} run(s) deleted, "
                     f"{counts['kept']} kept (the newest run of a backup partition, or still going)")


@dg.job(name=MAINTENANCE_JOB, executor_def=dg.in_process_executor,
        description="Delete Dagster runs older than maintenance.run_history_days, never the newest run of a backup "
                    "partition.")
def history_job() -> None:
    prune_dagster_history()


# its partitions are its asset's (the code location's, orchestration.partitions.rebind)
retention_job = dg.define_asset_job(f"{RETENTION}_job", selection=dg.AssetSelection.assets(RETENTION),
                                    executor_def=dg.in_process_executor,
                                    tags={"erp_backup/source": RETENTION})


@dg.schedule(name=f"{RETENTION}_daily", cron_schedule="0 7 * * *", execution_timezone=TIMEZONE, job=retention_job,
             default_status=dg.DefaultScheduleStatus.RUNNING,
             description="07:00: apply the retention policies, after every backup and nightly drill.")
def retention_schedule(context: dg.ScheduleEvaluationContext):  # type: ignore[no-untyped-def]
    partition = today(context.scheduled_execution_time).isoformat()
    return dg.RunRequest(run_key=f"{RETENTION}:{partition}", partition_key=partition)


history_schedule = dg.ScheduleDefinition(name=f"{MAINTENANCE_JOB}_daily", cron_schedule="30 7 * * *",
                                         execution_timezone=TIMEZONE, job=history_job,
                                         default_status=dg.DefaultScheduleStatus.RUNNING)
