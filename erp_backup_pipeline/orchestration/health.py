"""The destination health sensor: a wrong credential or a vanished bucket is reported before 02:00, not by it.

Every ``INTERVAL_SECONDS`` the daemon asks each configured destination whether it can be used
(``core.health``: credentials accepted, bucket there, Object Lock as configured). A destination that
cannot be used is named in ONE line the daemon writes to its log (``Sensor destination_health_sensor
skipped: DESTINATION UNUSABLE: destination offsite: access denied (SignatureDoesNotMatch: ...)``) and in
the tick's log in the UI, and alerts once on every channel when it starts failing, with a note when it
is usable again (the failing set is the sensor's cursor, so a restarted daemon does not alert twice).
A configuration the code location cannot read is named the same way. Secrets are redacted.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

import dagster as dg

from erp_backup_pipeline.core.alerts import Alert, build_channels, deliver
from erp_backup_pipeline.core.health import destination_problems
from erp_backup_pipeline.core.runner import redact
from erp_backup_pipeline.errors import BackupError
from erp_backup_pipeline.orchestration.resources import BackupSettingsResource

SENSOR = "destination_health_sensor"
INTERVAL_SECONDS = 300
UNUSABLE = "DESTINATION UNUSABLE"


def build_health_sensor() -> dg.SensorDefinition:
    @dg.sensor(name=SENSOR, minimum_interval_seconds=INTERVAL_SECONDS, default_status=dg.DefaultSensorStatus.RUNNING,
               description="Asks every destination whether it can be used (credentials, bucket, Object Lock) and "
                           "names each one that cannot in one line in the daemon's log; alerts when that starts.")
    def destination_health_sensor(context: dg.SensorEvaluationContext,
                                  backup_settings: BackupSettingsResource) -> dg.SkipReason:
        try:
            settings = backup_settings.load()
            problems = destination_problems(backup_settings.site())
        except BackupError as exc:
            line = f"configuration error: {redact(str(exc))}"
            context.log.error(line)
            return dg.SkipReason(line)
        failing = {name: line for name, line in problems.items() if line}
        before = set(json.loads(context.cursor)) if context.cursor else set()
        now = datetime.now(UTC).isoformat(timespec="seconds")
        alerts = [Alert(kind="destination_failed", source=name, error=line, at=now)
                  for name, line in failing.items() if name not in before]
        alerts += [Alert(kind="destination_recovered", source=name, error="checked: usable", at=now)
                   for name in sorted(before - set(failing)) if name in problems]
        if alerts:
            channels = build_channels(settings.alerts, log=context.log.warning)
            for alert in alerts:
                for problem in deliver(alert, channels):
                    context.log.error(f"alert not delivered: {problem}")
        context.update_cursor(json.dumps(sorted(failing)))
        if failing:
            line = f"{UNUSABLE}: " + "; ".join(failing.values())
            context.log.error(line)
            return dg.SkipReason(line)
        return dg.SkipReason(f"{len(problems)} destination(s) usable: {', '.join(problems)}")

    return destination_health_sensor
