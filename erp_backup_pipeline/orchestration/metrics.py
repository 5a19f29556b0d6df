"""Prometheus metrics read from the Dagster instance at scrape time: the original strategy's names.

``backup_last_success_timestamp_seconds``, ``backup_duration_seconds``, ``backup_size_bytes`` and
``backup_failures_total``, plus ``backup_last_verified_timestamp_seconds`` (the newest passing
integrity check), ``backup_restore_seconds`` (the measured RTO: the ``restore_seconds`` of the
newest passing ``restore_drill`` check) and ``backup_last_restore_drill_timestamp_seconds`` (the
time of that drill), each with the label ``type`` (``sqlite``, ``postgresql``, ``redis``,
``config``, ``uploads``: the original's values where it had them; ``postgresql_full`` and
``postgresql_incremental`` for the pgBackRest assets, whose size is the repository's bytes) and ``asset``. Values come from
the instance's event log and run storage, so a restart of the exporter loses nothing and the
figures match the UI: the newest materialization (its time, its run's duration, the shipped
artifact's bytes), the number of failed runs that backed the asset up (its job's, and the UI's
materializations and backfills), and the newest passing
evaluation of each check (a newer failing one does not reset them; the alert rules watch their age).
"""

from collections.abc import Iterator
from datetime import datetime
from typing import Any

import dagster as dg
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from erp_backup_pipeline.core.sources import KINDS
from erp_backup_pipeline.orchestration.assets import BACKUP_ASSETS
from erp_backup_pipeline.orchestration.drills import CHECK as DRILL_CHECK
from erp_backup_pipeline.orchestration.pitr import PITR_ASSETS
from erp_backup_pipeline.orchestration.schedules import job_name

TYPE_LABEL = {**{name: kind.metric_label for name, kind in KINDS.items()},
              "postgres_full": "postgresql_full", "postgres_incremental": "postgresql_incremental"}


def _outside_times(md: Any, values: list[str], last: GaugeMetricFamily, duration: GaugeMetricFamily) -> None:
    """When a backup recorded from the catalog finished, and how long it took, from its metadata."""
    started, seconds = md.get("captured_at"), md.get("backup_seconds")
    if started is None or seconds is None:
        return
    took = float(seconds.value)
    last.add_metric(values, datetime.fromisoformat(str(started.value)).timestamp() + took)
    duration.add_metric(values, took)


class BackupCollector(Collector):
    """A prometheus_client collector that asks the Dagster instance on every scrape."""

    def __init__(self, instance: dg.DagsterInstance, assets: list[str] | None = None) -> None:
        self.instance = instance
        self.assets = assets or [*BACKUP_ASSETS, *PITR_ASSETS]
        self._jobs = {job_name(a): a for a in [*BACKUP_ASSETS, *PITR_ASSETS]}

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
        restore = GaugeMetricFamily("backup_restore_seconds",
                                    "Restore seconds (download, decrypt, decompress, load) of the newest passing "
                                    "restore drill: the measured RTO", labels=labels)
        drilled = GaugeMetricFamily("backup_last_restore_drill_timestamp_seconds",
                                    "Unix time of the newest passing restore drill", labels=labels)
        failed = self._failed_runs()
        for asset in self.assets:
            values = [TYPE_LABEL.get(asset, asset), asset]
            event = self.instance.get_latest_materialization_event(dg.AssetKey(asset))
            if event is not None and event.asset_materialization is not None:
                md = event.asset_materialization.metadata
                if event.run_id:
                    last.add_metric(values, event.timestamp)
                    stats = self.instance.get_run_stats(event.run_id)
                    if stats.start_time and stats.end_time:
                        duration.add_metric(values, stats.end_time - stats.start_time)
                else:  # a backup made outside Dagster (orchestration.history): its own times, not the recording's
                    _outside_times(md, values, last, duration)
                shipped = md.get("encrypted_bytes") or md.get("repository_bytes")  # pgBackRest: the repo's bytes
                if shipped is not None:
                    size.add_metric(values, float(shipped.value))  # type: ignore[arg-type]
            failures.add_metric(values, failed.get(asset, 0))
            passed = self._last_passed(asset, "integrity")
            if passed is not None:
                verified.add_metric(values, passed[0])
            passed = self._last_passed(asset, DRILL_CHECK)
            if passed is not None:
                at, evaluation = passed
                drilled.add_metric(values, at)
                seconds = evaluation.metadata.get("restore_seconds")
                if seconds is not None and isinstance(seconds.value, (int, float)):
                    restore.add_metric(values, float(seconds.value))
        whole = self._last_passed("recovery_drill", DRILL_CHECK)  # the whole ERP's RTO (monthly: no age gauge)
        total = getattr(whole[1].metadata.get("restore_seconds"), "value", None) if whole is not None else None
        if isinstance(total, (int, float)):
            restore.add_metric(["erp", "recovery_drill"], float(total))
        yield from (last, duration, size, failures, verified, restore, drilled)

    def _failed_runs(self) -> dict[str, int]:
        """Failed runs that were backing up each asset: its nightly job's, and the UI's materializations
        and backfills (Dagster's implicit asset job), found by the run's asset selection."""
        counts: dict[str, int] = {}
        for record in self.instance.get_run_records(dg.RunsFilter(statuses=[dg.DagsterRunStatus.FAILURE])):
            run = record.dagster_run
            assets = {k.to_user_string() for k in (run.asset_selection or [])}
            if not assets and run.job_name in self._jobs:
                assets = {self._jobs[run.job_name]}
            for asset in assets:
                counts[asset] = counts.get(asset, 0) + 1
        return counts

    def _last_passed(self, asset: str, check: str) -> tuple[float, dg.AssetCheckEvaluation] | None:
        """The newest evaluation of the check that passed (the newest one may have failed) and its time."""
        from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecordStatus

        # asked for passed evaluations only: however many failures came after, the newest pass is found
        records = self.instance.event_log_storage.get_asset_check_execution_history(
            dg.AssetCheckKey(dg.AssetKey(asset), check), limit=5, status={AssetCheckExecutionRecordStatus.SUCCEEDED})
        for record in records:  # newest first
            if isinstance(record.evaluation, dg.AssetCheckEvaluation) and record.evaluation.passed and record.event:
                return float(record.event.timestamp), record.evaluation
        return None


def serve(port: int, host: str = "127.0.0.1") -> None:
    """Serve /metrics for the instance of $DAGSTER_HOME until interrupted."""
    import time

    from prometheus_client import REGISTRY, start_http_server

    REGISTRY.register(BackupCollector(dg.DagsterInstance.get()))
    start_http_server(port, addr=host)
    while True:
        time.sleep(3600)
