"""``backup_catalog_audit``: does what Dagster shows as backed up still stand, unchanged, on every destination?

Daily at 06:45 Europe/Berlin (before retention at 07:00; on Sundays at 06:00 with the weekly verification), the
asset reads the newest materialization of every partition of every configured backup asset (its manifest key,
sha256 and sequence, recorded by the manifest op) and compares them with the authenticated catalog (``core.audit``). Its
check ``catalog_agrees`` (severity ERROR) fails, and so alerts through the alert sensor, naming each source,
partition and destination where a backup vanished, was replaced, or a chain broke, or where an untrusted file
lies. Materializations from before manifests were signed carry no manifest key and are not compared.
"""

from datetime import datetime
from typing import Any

import dagster as dg

from erp_backup_pipeline.core import audit, catalog
from erp_backup_pipeline.core.partitions import today
from erp_backup_pipeline.core.runner import redact
from erp_backup_pipeline.errors import BackupError
from erp_backup_pipeline.orchestration.assets import BACKUP_ASSETS, GROUP, TIMEZONE, daily_partitions, pool_for
from erp_backup_pipeline.orchestration.drills import VERIFY_CRON
from erp_backup_pipeline.orchestration.resources import BackupSettingsResource

AUDIT = "backup_catalog_audit"
CHECK = "catalog_agrees"


def recorded(instance: dg.DagsterInstance, source: str) -> list[audit.Recorded]:
    """The newest materialization of each partition of a backup asset that names its manifest."""
    newest: dict[str, tuple[int, dict[str, Any]]] = {}
    cursor = None
    while True:
        page = instance.fetch_materializations(dg.AssetKey(source), limit=1000, cursor=cursor)
        for record in page.records:
            part = record.partition_key
            if part is None or (part in newest and newest[part][0] > record.storage_id):
                continue
            materialization = record.asset_materialization
            md = {k: v.value for k, v in (materialization.metadata if materialization else {}).items()}
            newest[part] = (record.storage_id, md)
        if not page.has_more:
            break
        cursor = page.cursor
    return [audit.Recorded(source, part, str(md["manifest_key"]), str(md["manifest_sha256"]), int(md["sequence"]))
            for part, (_, md) in sorted(newest.items()) if "manifest_key" in md and "manifest_sha256" in md]


@dg.asset(name=AUDIT, partitions_def=daily_partitions, deps=list(BACKUP_ASSETS), group_name=GROUP,
          owners=["team:erp-ops"], kinds={"python"}, pool=pool_for(AUDIT),
          check_specs=[dg.AssetCheckSpec(CHECK, asset=AUDIT, description="Every backup Dagster recorded is on every "
                                         "destination it was shipped to, unchanged and authenticated, its chain whole, "
                                         "and nothing untrusted lies beside it.")],
          description="Compares what Dagster recorded as backed up with the authenticated catalog on every destination.")
def backup_catalog_audit(context: dg.AssetExecutionContext, backup_settings: BackupSettingsResource) -> dg.MaterializeResult:
    try:
        site = backup_settings.site()
        found = catalog.of(site)
    except BackupError as exc:
        raise dg.Failure(description=redact(str(exc))) from None
    lines: list[str] = []
    compared = 0
    for source in site.enabled():
        records = recorded(context.instance, source)
        compared += len(records)
        lines += audit.compare(source, records, found, site.prefix)
    lines = list(dict.fromkeys(redact(line) for line in lines))  # unreadable destinations: once, not per source
    for line in lines:
        context.log.error(line)
    check = dg.AssetCheckResult(passed=not lines, severity=dg.AssetCheckSeverity.ERROR,
                                description=(f"{len(lines)} disagreement(s), first: {lines[0]}" if lines else None),
                                metadata={"disagreements": dg.MetadataValue.md(
                                    "\n".join(f"- {line}" for line in lines) or "none")})
    return dg.MaterializeResult(metadata={"compared": dg.MetadataValue.int(compared),
                                          "authenticated": dg.MetadataValue.int(len(found.entries)),
                                          "rejected": dg.MetadataValue.int(len(found.rejected)),
                                          "disagreements": dg.MetadataValue.int(len(lines))},
                                check_results=[check])


# its partitions are its asset's (the code location's, orchestration.partitions.rebind)
audit_job = dg.define_asset_job(f"{AUDIT}_job", selection=dg.AssetSelection.assets(AUDIT),
                                executor_def=dg.in_process_executor,
                                tags={"erp_backup/source": AUDIT})


def run_request(tick: datetime | None, why: str) -> dg.RunRequest:
    partition = today(tick).isoformat()
    return dg.RunRequest(run_key=f"{AUDIT}:{why}:{partition}", partition_key=partition, job_name=audit_job.name)


@dg.schedule(name=f"{AUDIT}_daily", cron_schedule="45 6 * * 1-6", execution_timezone=TIMEZONE, job=audit_job,
             default_status=dg.DefaultScheduleStatus.RUNNING,
             description="Monday to Saturday 06:45: compare what Dagster recorded with what the destinations hold, "
                         "before retention.")
def audit_schedule(context: dg.ScheduleEvaluationContext):  # type: ignore[no-untyped-def]
    return run_request(context.scheduled_execution_time, "daily")


@dg.schedule(name=f"{AUDIT}_weekly", cron_schedule=VERIFY_CRON, execution_timezone=TIMEZONE, job=audit_job,
             default_status=dg.DefaultScheduleStatus.RUNNING,
             description="Sunday 06:00, with the weekly verification (verify_backups): the same comparison.")
def audit_weekly_schedule(context: dg.ScheduleEvaluationContext):  # type: ignore[no-untyped-def]
    return run_request(context.scheduled_execution_time, "weekly")
