"""Alerting: one sensor that turns failed runs and failed checks into alerts (log, webhooks, e-mail).

Every tick reads what the instance recorded since its cursor, which the daemon stores with the
sensor: failed runs (``RUN_FAILURE`` status changes) and every check evaluation of the backup
assets (integrity, size_anomaly, restore_drill, freshness; blocking or not). A check alerts when
it starts failing for a partition and says when it recovers, so a freshness check evaluated every
few minutes alerts once, not every time. A failed run alerts unless one of its own checks failed
(that check's alert says more). Delivery goes to every channel; one that fails is logged and does
not stop the others; the cursor moves on, so a restarted daemon never sends an alert twice. With
no cursor (the first tick ever), failures of the last ``alerts.lookback_hours`` are reported.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import dagster as dg

from erp_backup_pipeline.core.alerts import Alert, build_channels, deliver, run_url
from erp_backup_pipeline.core.runner import redact
from erp_backup_pipeline.errors import BackupError
from erp_backup_pipeline.orchestration.resources import BackupSettingsResource

SENSOR = "backup_alert_sensor"
EVENTS_PER_PAGE = 500
RUNS_PER_TICK = 100


@dataclass
class Cursor:
    check_id: int = -1  # storage id of the newest check evaluation event read
    runs: str | None = None  # fetch_run_status_changes' own cursor
    started: float = 0.0  # when the first tick ran (lookback applies to what is older than the cursor)
    failing: list[str] = field(default_factory=list)  # "asset|check|partition" currently failing

    @classmethod
    def load(cls, text: str | None) -> Cursor | None:
        if not text:
            return None
        data = json.loads(text)
        return cls(**{k: data[k] for k in ("check_id", "runs", "started", "failing") if k in data})

    def dump(self) -> str:
        return json.dumps({"check_id": self.check_id, "runs": self.runs, "started": self.started,
                           "failing": sorted(set(self.failing))})


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds")


def _check_alerts(instance: dg.DagsterInstance, keys: list[dg.AssetCheckKey], cursor: Cursor, since: float,
                  ui_url: str) -> list[Alert]:
    """Alerts for checks that started failing or recovered.

    Reads ASSET_CHECK_EVALUATION events in storage order (the order they were written), so a check
    that completes late in a long run is never skipped by a cursor that moved past it."""
    wanted = set(keys)
    alerts: list[Alert] = []
    failing = set(cursor.failing)
    while True:
        records = instance.event_log_storage.get_event_records(
            dg.EventRecordsFilter(event_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION, after_cursor=cursor.check_id),
            limit=EVENTS_PER_PAGE, ascending=True)
        for record in records:
            cursor.check_id = max(cursor.check_id, record.storage_id)
            event = record.event_log_entry.dagster_event
            evaluation = event.event_specific_data if event else None
            if not isinstance(evaluation, dg.AssetCheckEvaluation):
                continue
            key = dg.AssetCheckKey(evaluation.asset_key, evaluation.check_name)
            if key not in wanted:
                continue
            ident = f"{key.asset_key.to_user_string()}|{key.name}|{evaluation.partition or ''}"
            if evaluation.passed:
                if ident in failing:
                    failing.discard(ident)
                    alerts.append(_alert("check_recovered", key, evaluation, record, "passes again", ui_url))
                continue
            if ident in failing or record.timestamp < since:
                continue  # still failing (said already), or older than the lookback of a first tick
            failing.add(ident)
            alerts.append(_alert("check_failed", key, evaluation, record, evaluation.description or "failed", ui_url))
        if len(records) < EVENTS_PER_PAGE:
            break
    cursor.failing = sorted(failing)
    return alerts


def _alert(kind: Any, key: dg.AssetCheckKey, evaluation: dg.AssetCheckEvaluation, record: Any, error: str,
           ui_url: str) -> Alert:
    return Alert(kind=kind, source=key.asset_key.to_user_string(), partition=evaluation.partition, check=key.name,
                 error=error, run_id=record.run_id, run_url=run_url(ui_url, record.run_id), at=_iso(record.timestamp))


def _run_error(instance: dg.DagsterInstance, run_id: str, fallback: str) -> str:
    """The first failed step's own message (a Failure's description), else the run failure's."""
    for record in instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.STEP_FAILURE).records:
        event = record.event_log_entry.dagster_event
        data = getattr(event, "step_failure_data", None) if event else None
        if data is not None:
            if data.user_failure_data is not None and data.user_failure_data.description:
                return str(data.user_failure_data.description)
            if data.error is not None:
                return data.error.message.strip().splitlines()[0] if data.error.message.strip() else fallback
    return fallback


def _failed_own_check(instance: dg.DagsterInstance, run_id: str) -> bool:
    for record in instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION).records:
        event = record.event_log_entry.dagster_event
        evaluation = event.event_specific_data if event else None
        if isinstance(evaluation, dg.AssetCheckEvaluation) and not evaluation.passed:
            return True
    return False


def _source_of(run: dg.DagsterRun) -> str:
    if run.tags.get("erp_backup/source"):
        return run.tags["erp_backup/source"]
    keys = sorted(k.to_user_string() for k in (run.asset_selection or []))
    return ", ".join(keys) if keys else run.job_name


def _run_alerts(instance: dg.DagsterInstance, cursor: Cursor, since: float, ui_url: str) -> list[Alert]:
    alerts: list[Alert] = []
    while True:
        result = instance.fetch_run_status_changes(dg.DagsterEventType.RUN_FAILURE, limit=RUNS_PER_TICK,
                                                   cursor=cursor.runs, ascending=True)
        for record in result.records:
            run = instance.get_run_by_id(record.run_id)
            if run is None or record.timestamp < since or _failed_own_check(instance, record.run_id):
                continue  # gone, too old for a first tick, or its failed check has alerted already
            fallback = record.event_log_entry.message or "run failed"
            alerts.append(Alert(kind="run_failed", source=_source_of(run), partition=run.tags.get("dagster/partition"),
                                error=_run_error(instance, record.run_id, fallback), run_id=record.run_id,
                                run_url=run_url(ui_url, record.run_id), at=_iso(record.timestamp)))
        if result.records:
            cursor.runs = result.cursor
        if not result.has_more:
            return alerts


def collect(instance: dg.DagsterInstance, keys: list[dg.AssetCheckKey], cursor_text: str | None,
            ui_url: str, lookback_hours: float, now: float | None = None) -> tuple[list[Alert], str]:
    """The alerts since the cursor, oldest first, and the cursor to store."""
    now = time.time() if now is None else now
    cursor = Cursor.load(cursor_text) or Cursor(started=now)
    since = cursor.started - lookback_hours * 3600
    check_alerts = _check_alerts(instance, keys, cursor, since, ui_url)
    run_alerts = _run_alerts(instance, cursor, since, ui_url)
    return sorted(check_alerts + run_alerts, key=lambda a: a.at), cursor.dump()


SHOWN = 5  # alerts named in one tick's text


def tick_text(alerts: list[Alert], channels: list[str], failed: int) -> str:
    """What a tick sent, and to where: ``2 alert(s) sent to log, webhook ops: sqlite_backup 2026-11-25: run failed;
    ...`` (the first few named; then how many deliveries failed), or ``0 alert(s) sent``."""
    if not alerts:
        return "0 alert(s) sent"
    named = "; ".join(a.what() for a in alerts[:SHOWN]) + (f"; {len(alerts) - SHOWN} more" if len(alerts) > SHOWN else "")
    return (f"{len(alerts)} alert(s) sent to {', '.join(channels) or 'no channel'}: {named}"
            + (f"; {failed} delivery failure(s)" if failed else ""))


def build_alert_sensor(keys: list[dg.AssetCheckKey]) -> dg.SensorDefinition:
    @dg.sensor(name=SENSOR, minimum_interval_seconds=30, default_status=dg.DefaultSensorStatus.RUNNING,
               description="Sends one alert per failed run and per check that starts failing (and a note when it "
                           "recovers) to the channels of the config file's alerts section.")
    def backup_alert_sensor(context: dg.SensorEvaluationContext,
                            backup_settings: BackupSettingsResource) -> dg.SkipReason:
        try:
            settings = backup_settings.load()
        except BackupError as exc:  # the cursor stays: nothing is lost while the config is broken
            return dg.SkipReason(f"cannot alert, configuration error: {redact(str(exc))}")
        alerts, cursor = collect(context.instance, keys, context.cursor, settings.alerts.ui_url,
                                 settings.alerts.lookback_hours)
        channels = build_channels(settings.alerts, log=context.log.warning)
        failed = 0
        for alert in alerts:
            for problem in deliver(alert, channels):
                failed += 1
                context.log.error(f"alert not delivered: {problem}")
        context.update_cursor(cursor)
        return dg.SkipReason(tick_text(alerts, [c.name for c in channels], failed))

    return backup_alert_sensor
