"""Optional push of the backup metrics to a Prometheus Pushgateway after every finished run.

For installations whose Prometheus cannot scrape the Dagster host. A sensor notices runs that
finished (succeeded or failed) since its cursor and pushes the same series ``erp-backup metrics
serve`` exports (read from the instance, so the values match the UI) under the group
``job=<metrics.push_job>``, replacing the previous push. Nothing is pushed unless
``metrics.pushgateway_url`` is set.
"""

from __future__ import annotations

import json

import dagster as dg
from prometheus_client import CollectorRegistry, push_to_gateway

from erp_backup_pipeline.core.runner import redact
from erp_backup_pipeline.errors import BackupError
from erp_backup_pipeline.orchestration.metrics import BackupCollector
from erp_backup_pipeline.orchestration.resources import BackupSettingsResource

SENSOR = "backup_metrics_push_sensor"
_STATUSES = {"success": dg.DagsterEventType.RUN_SUCCESS, "failure": dg.DagsterEventType.RUN_FAILURE}


def push(instance: dg.DagsterInstance, url: str, job: str, timeout: float = 10.0) -> None:
    registry = CollectorRegistry()
    registry.register(BackupCollector(instance))
    push_to_gateway(url, job=job, registry=registry, timeout=timeout)


def _finished_since(instance: dg.DagsterInstance, cursors: dict[str, str | None]) -> int:
    """How many runs finished since the cursors; moves them on."""
    count = 0
    for name, event_type in _STATUSES.items():
        while True:
            result = instance.fetch_run_status_changes(event_type, limit=100, cursor=cursors.get(name), ascending=True)
            count += len(result.records)
            if result.records:
                cursors[name] = result.cursor
            if not result.has_more:
                break
    return count


def build_push_sensor() -> dg.SensorDefinition:
    @dg.sensor(name=SENSOR, minimum_interval_seconds=30, default_status=dg.DefaultSensorStatus.RUNNING,
               description="Pushes the backup metrics to metrics.pushgateway_url after runs finish (when set).")
    def backup_metrics_push_sensor(context: dg.SensorEvaluationContext,
                                   backup_settings: BackupSettingsResource) -> dg.SkipReason:
        try:
            settings = backup_settings.load()
        except BackupError as exc:
            return dg.SkipReason(f"configuration error: {redact(str(exc))}")
        url = settings.metrics.pushgateway_url
        if url is None:
            return dg.SkipReason("metrics.pushgateway_url is not set")
        cursors: dict[str, str | None] = json.loads(context.cursor) if context.cursor else {}
        finished = _finished_since(context.instance, cursors)
        if not finished and context.cursor:
            return dg.SkipReason("no run finished since the last push")
        try:
            push(context.instance, url, settings.metrics.push_job)
        except OSError as exc:  # the cursor stays: the next tick pushes again
            raise dg.Failure(description=f"push to the Pushgateway failed: {redact(str(exc))}") from None
        context.update_cursor(json.dumps(cursors))
        return dg.SkipReason(f"pushed after {finished} finished run(s)")

    return backup_metrics_push_sensor
