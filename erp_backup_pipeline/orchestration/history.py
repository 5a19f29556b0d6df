"""``backup_history_sensor``: one history. Backups Dagster did not run are recorded in it too.

A backup made with ``erp-backup backup`` (a cron line, a deploy script, an operator at 3 a.m.) is in the catalog
on the destinations, the authority on what can be restored. Every ``INTERVAL_SECONDS`` the sensor reads the
authenticated catalog of the last ``DAYS`` partitions of every configured source and records each complete,
verified capture whose manifest Dagster has not recorded: a runless materialization of that partition with the
same metadata a run gives (``recorded_by`` says where it came from) and the result of its ``integrity`` check, so
that the UI, the catalog audit and the Prometheus metrics show it. Nothing is recorded twice: a capture is
known by its manifest's sha256, which every materialization carries. Forged or unverified files are never
recorded (the catalog rejects them, and the catalog audit names them).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import dagster as dg

from erp_backup_pipeline.core import catalog, chain
from erp_backup_pipeline.core.catalog import Entry
from erp_backup_pipeline.core.partitions import today
from erp_backup_pipeline.core.runner import redact
from erp_backup_pipeline.core.site import Site
from erp_backup_pipeline.core.sources import KINDS
from erp_backup_pipeline.errors import BackupError
from erp_backup_pipeline.orchestration.assets import integrity_passed, materialization_metadata
from erp_backup_pipeline.orchestration.late_captures import as_of_tags
from erp_backup_pipeline.orchestration.resources import BackupSettingsResource

SENSOR = "backup_history_sensor"
INTERVAL_SECONDS = 120
DAYS = 8  # today and the week before: what a command-line backfill of missed days reaches
SETTLE = timedelta(minutes=5)  # a run records its own backup right after writing the manifest: leave it that time
RECORDED_BY = "erp-backup (not a Dagster run), recorded from the catalog by backup_history_sensor"


def recorded_manifests(instance: dg.DagsterInstance, source: str, partitions: list[str]) -> set[str]:
    """The sha256 of every manifest Dagster recorded for these partitions of a backup asset."""
    found: set[str] = set()
    cursor = None
    while True:
        page = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey(source), asset_partitions=partitions), limit=1000, cursor=cursor)
        for record in page.records:
            m = record.asset_materialization
            value = m.metadata.get("manifest_sha256") if m is not None else None
            if value is not None:
                found.add(str(value.value))
        if not page.has_more:
            return found
        cursor = page.cursor


def finished(entry: Entry) -> datetime:
    """When a capture was complete: its start and the seconds of its stages."""
    m = entry.manifest
    return datetime.fromisoformat(m.captured_at) + timedelta(seconds=sum(float(s.get("seconds", 0)) for s in m.chain))


def unrecorded(instance: dg.DagsterInstance, site: Site, now: datetime, days: int = DAYS) -> list[Entry]:
    """The complete, verified, authenticated captures of the last ``days`` partitions, finished at least ``SETTLE``
    ago, that Dagster has not recorded; oldest first."""
    newest = today(now)
    partitions = [(newest - timedelta(days=n)).isoformat() for n in range(days)]
    todo: list[Entry] = []
    for source in site.enabled():
        found = [e for p in partitions for e in catalog.of(site, source, p).entries
                 if e.manifest.complete and e.manifest.verify.get("ok") and finished(e) <= now - SETTLE]
        if not found:
            continue
        known = recorded_manifests(instance, source, partitions)  # after the catalog: a run's own record is in
        todo += [e for e in found if chain.digest(e.manifest.to_json()) not in known]
    return sorted(todo, key=lambda e: e.manifest.captured_at)


def record(instance: dg.DagsterInstance, site: Site, entry: Entry) -> None:
    """One capture into Dagster's history: its materialization, then its integrity check."""
    m = entry.manifest
    holder = next(d for d in site.destinations if d.name in entry.held_by)
    md = materialization_metadata(KINDS[m.source], m, holder.uri(m.artifact_key), finished(entry))
    md["recorded_by"] = dg.MetadataValue.text(RECORDED_BY)
    instance.report_runless_asset_event(dg.AssetMaterialization(asset_key=m.source, partition=m.partition, metadata=md,
                                                                tags=as_of_tags(m)))
    instance.report_runless_asset_event(integrity_passed(
        instance, m.source, m.partition, "", m.verify, "verified when it was backed up (recorded from the catalog)"))


def build_history_sensor() -> dg.SensorDefinition:
    @dg.sensor(name=SENSOR, minimum_interval_seconds=INTERVAL_SECONDS, default_status=dg.DefaultSensorStatus.RUNNING,
               description="Records in Dagster the backups it did not run (erp-backup backup): each verified capture "
                           "of the last days that the catalog holds and Dagster does not, with its integrity check.")
    def backup_history_sensor(context: dg.SensorEvaluationContext,
                              backup_settings: BackupSettingsResource) -> dg.SkipReason:
        try:
            site = backup_settings.site()
            todo = unrecorded(context.instance, site, datetime.now(UTC))
            for entry in todo:
                record(context.instance, site, entry)
        except BackupError as exc:  # nothing recorded is lost: the next tick reads the catalog again
            line = f"cannot read the catalog: {redact(str(exc))}"
            context.log.error(line)
            return dg.SkipReason(line)
        if not todo:
            return dg.SkipReason("every backup of the last days is in Dagster's history")
        named = "; ".join(f"{e.manifest.source} {e.manifest.partition} ({e.manifest.captured_at})" for e in todo[:5])
        return dg.SkipReason(f"{len(todo)} backup(s) made outside Dagster recorded: {named}"
                             + (f"; {len(todo) - 5} more" if len(todo) > 5 else ""))

    return backup_history_sensor
