"""Prometheus metrics read from the Dagster instance at scrape time: the original strategy's names.

``backup_last_success_timestamp_seconds``, ``backup_duration_seconds``, ``backup_size_bytes`` and
``backup_failures_total``, plus ``backup_last_verified_timestamp_seconds`` (the newest passing
integrity check), each with the label ``type`` (``sqlite``, ``postgresql``, ``redis``,
``config``, ``uploads``: the original's values where it had them) and ``asset``. Values come from
the instance's event log and run storage, so a restart of the exporter loses nothing and the
figures match the UI: the newest materialization (its time, its run's duration, the shipped
artifact's bytes) and the number of failed runs of the asset's job.
"""

from collections.abc import Iterator
from typing import Any

import dagster as dg
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from erp_backup_pipeline.orchestration.assets import BACKUP_ASSETS
from erp_backup_pipeline.orchestration.schedules import job_name

TYPE_LABEL = {"sqlite_backup": "sqlite", "postgres_dump": "postgresql", "redis_snapshot": "redis",
              "config_archive": "config", "uploads_snapshot": "uploads"}


class BackupCollector(Collector):
    """A prometheus_client collector that asks the Dagster instance on every scrape."""

    def __init__(self, instance: dg.DagsterInstance, assets: list[str] | None = None) -> None:
        self.instance = instance
        self.assets = assets or list(BACKUP_ASSETS)

    def collect(self) -> Iterator[Any]:
        labels = ["type", "asset"]
        last = GaugeMetricFamily("backup_last_success_timestamp_seconds",
                                 "Unix time of the newest successful backup", labels=labels)
        duration = GaugeMetricFamily("backup_duration_seconds", "Duration of the newest successful backup run",
                                     labels=labels)
        size = GaugeMetricFamily("backup_size_bytes", "Bytes of the newest shipped (encrypted) artifact", labels=labels)
        failures = CounterMetricFamily("backup_failures_total", "Failed backup runs", labels=labels)
        verified = GaugeMetricFamily("backup_last_verified_timestamp_seconds",
                                     "Unix time of the newest passing integrity check", labels=labels)
        for asset in self.assets:
            values = [TYPE_LABEL.get(asset, asset), asset]
            event = self.instance.get_latest_materialization_event(dg.AssetKey(asset))
            if event is not None and event.asset_materialization is not None:
                last.add_metric(values, event.timestamp)
                stats = self.instance.get_run_stats(event.run_id)
                if stats.start_time and stats.end_time:
                    duration.add_metric(values, stats.end_time - stats.start_time)
                shipped = event.asset_materialization.metadata.get("encrypted_bytes")
                if shipped is not None:
                    size.add_metric(values, float(shipped.value))  # type: ignore[arg-type]
            failed = self.instance.get_runs_count(dg.RunsFilter(job_name=job_name(asset),
                                                                statuses=[dg.DagsterRunStatus.FAILURE]))
            failures.add_metric(values, failed)
            passed_at = self._last_passed(asset, "integrity")
            if passed_at is not None:
                verified.add_metric(values, passed_at)
        yield from (last, duration, size, failures, verified)

    def _last_passed(self, asset: str, check: str) -> float | None:
        """Time of the newest evaluation of the check that passed (the newest one may have failed)."""
        records = self.instance.event_log_storage.get_asset_check_execution_history(
            dg.AssetCheckKey(dg.AssetKey(asset), check), limit=50)
        for record in records:  # newest first; planned (not yet evaluated) records carry no result
            if isinstance(record.evaluation, dg.AssetCheckEvaluation) and record.evaluation.passed and record.event:
                return float(record.event.timestamp)
        return None


def serve(port: int, host: str = "127.0.0.1") -> None:
    """Serve /metrics for the instance of $DAGSTER_HOME until interrupted."""
    import time

    from prometheus_client import REGISTRY, start_http_server

    REGISTRY.register(BackupCollector(dg.DagsterInstance.get()))
    start_http_server(port, addr=host)
    while True:
        time.sleep(3600)
