"""The alert sensor, end to end: real backup runs in a real (temporary) Dagster instance, a real HTTP
receiver and a real SMTP server. Each failure kind alerts once on every channel, a broken channel does
not stop the others, and a restarted sensor (new definitions, stored cursor) sends nothing twice."""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import dagster as dg
import pytest

from erp_backup_pipeline.orchestration.definitions import build_definitions
from erp_backup_pipeline.orchestration.resources import BackupSettingsResource
from erp_backup_pipeline_tests import receivers
from erp_backup_pipeline_tests.test_dagster import write_config

webhook_receiver = receivers.webhook_receiver
smtp_receiver = receivers.smtp_receiver
TOKEN = "T0KEN-in-the-webhook-path-5d1e"


@pytest.fixture
def broken_webhook() -> Iterator[receivers.WebhookReceiver]:
    receiver = receivers.WebhookReceiver()
    receiver.status = 500
    receiver.start()
    try:
        yield receiver
    finally:
        receiver.stop()


def instance_for_test(tmp_path: Path) -> Any:
    """A persistent instance with the event log storage of the top-level dagster.yaml (what `make run` uses)."""
    import yaml

    home = tmp_path / "dagster_home"
    home.mkdir(exist_ok=True)
    shipped = yaml.safe_load((Path(__file__).resolve().parent.parent / "dagster.yaml").read_text())
    storage = {**shipped["event_log_storage"], "config": {"base_dir": str(home)}}
    return dg.instance_for_test(temp_dir=str(home), overrides={"event_log_storage": storage})


class Sensor:
    """The alert sensor as the daemon runs it: a tick, its cursor stored, the next tick from the stored cursor."""

    def __init__(self, config: Path, instance: dg.DagsterInstance) -> None:
        self.config, self.instance, self.cursor = config, instance, None

    def tick(self, defs: dg.Definitions | None = None) -> str | None:
        defs = defs or build_definitions(str(self.config))
        sensor = defs.resolve_sensor_def("backup_alert_sensor")
        ctx = dg.build_sensor_context(instance=self.instance, cursor=self.cursor, definitions=defs,
                                      resources={"backup_settings": BackupSettingsResource.pinned(str(self.config))})
        data = sensor.evaluate_tick(ctx)
        self.cursor = data.cursor
        return data.skip_message


def run_job(defs: dg.Definitions, instance: dg.DagsterInstance, job: str, partition: str | None = None,
            **kwargs: Any) -> dg.ExecuteInProcessResult:
    job_def = defs.resolve_job_def(job)
    if partition and job_def.partitions_def is not None:
        return job_def.execute_in_process(partition_key=partition, instance=instance, raise_on_error=False, **kwargs)
    tags = {"dagster/partition": partition} if partition else {}
    return job_def.execute_in_process(tags=tags, instance=instance, raise_on_error=False, **kwargs)


def test_each_failure_alerts_once_on_every_channel_and_never_twice_after_a_restart(
        tmp_path: Path, demo_sqlite: Path, age_identity, webhook_receiver, broken_webhook, smtp_receiver) -> None:
    config = write_config(tmp_path, age_identity, sources={"sqlite": {"path": str(demo_sqlite)}}, alerts={
        "ui_url": "http://127.0.0.1:3000",
        "webhooks": [{"url": broken_webhook.url("/broken"), "name": "broken"},
                     {"url": webhook_receiver.url(f"/hooks/{TOKEN}"), "name": "ops"},
                     {"url": webhook_receiver.url(f"/slack/{TOKEN}"), "name": "chat", "format": "slack"}],
        "email": {"host": smtp_receiver.host, "port": smtp_receiver.port, "sender": "backup@erp.example",
                  "recipients": ["ops@erp.example"]}})
    defs = build_definitions(str(config))
    with instance_for_test(tmp_path) as instance:
        sensor = Sensor(config, instance)
        for day in ("2026-11-20", "2026-11-21", "2026-11-22"):
            assert run_job(defs, instance, "sqlite_backup_job", day).success
        assert sensor.tick() == "0 alert(s) sent"

        # 1. an (almost) empty dump: the non-blocking size check fails, the run itself succeeds
        with sqlite3.connect(demo_sqlite) as conn:
            for table in ("invoice_lines", "audit_log", "invoices", "customers", "articles"):
                conn.execute(f"DELETE FROM {table}")
        with sqlite3.connect(demo_sqlite) as conn:
            conn.execute("VACUUM")
        shrunk = run_job(defs, instance, "sqlite_backup_job", "2026-11-23")
        assert shrunk.success
        # 2. a corrupted artifact: the weekly drill of 2026-11-21 fails
        [artifact] = list((tmp_path / "backups").rglob("2026-11-21/*.sqlite3.zst.age"))
        artifact.write_bytes(b"\0" * 64 + artifact.read_bytes()[64:])
        drill = run_job(defs, instance, "verify_backups", "2026-11-21")
        # 3. a stale asset: today's backup is missing (evaluated twice: alerts once)
        fresh_key = dg.AssetCheckKey(dg.AssetKey("sqlite_backup"), "freshness_check")
        with_fresh = dg.Definitions.merge(defs, dg.Definitions(jobs=[dg.define_asset_job(
            "freshness", selection=dg.AssetSelection.checks(fresh_key))]))
        for _ in range(2):
            run_job(with_fresh, instance, "freshness")
        # 4. a failed run: the database file is gone
        demo_sqlite.rename(demo_sqlite.with_suffix(".moved"))
        failed = run_job(defs, instance, "sqlite_backup_job", "2026-11-24")
        assert not failed.success

        assert re.fullmatch(  # the tick says what went where; the broken webhook failed once per alert
            r"4 alert\(s\) sent to log, webhook broken, webhook ops, webhook chat, email 127\.0\.0\.1:\d+: "
            r"sqlite_backup 2026-11-23: check size_anomaly failed; sqlite_backup 2026-11-21: check restore_drill "
            r"failed; sqlite_backup: check freshness_check failed; sqlite_backup 2026-11-24: run failed; "
            r"4 delivery failure\(s\)", sensor.tick())
        hooks = webhook_receiver.wait(8)
        mails = smtp_receiver.wait(4)
        assert len(broken_webhook.requests) == 4
        by_check = {h.json()["check"]: h.json() for h in hooks if h.path.startswith("/hooks/")}
        assert set(by_check) == {"size_anomaly", "restore_drill", "freshness_check", None}
        size = by_check["size_anomaly"]
        assert (size["kind"], size["source"], size["partition"]) == ("check_failed", "sqlite_backup", "2026-11-23")
        assert "less than 0.5 x the median" in size["error"]
        assert size["run_url"] == f"http://127.0.0.1:3000/runs/{shrunk.run_id}"
        corrupt = by_check["restore_drill"]
        assert corrupt["partition"] == "2026-11-21" and "checksum mismatch" in corrupt["error"]
        assert corrupt["run_id"] == drill.run_id
        assert by_check["freshness_check"]["kind"] == "check_failed"
        run = by_check[None]
        assert (run["kind"], run["partition"], run["run_id"]) == ("run_failed", "2026-11-24", failed.run_id)
        assert "does not exist" in run["error"] or "not found" in run["error"]
        slack = [h.json() for h in hooks if h.path.startswith("/slack/")]
        assert len(slack) == 4 and all(set(s) == {"text"} for s in slack)
        subjects = sorted(m.message["Subject"] for m in mails)
        assert subjects == sorted([
            "[erp-backup] sqlite_backup 2026-11-21: check restore_drill failed",
            "[erp-backup] sqlite_backup 2026-11-23: check size_anomaly failed",
            "[erp-backup] sqlite_backup 2026-11-24: run failed",
            "[erp-backup] sqlite_backup: check freshness_check failed",  # about the asset, not one partition
        ])
        assert all(m.rcpt_tos == ["ops@erp.example"] for m in mails)
        everything = "".join(m.body for m in mails) + "".join(h.body.decode() for h in hooks)
        assert TOKEN not in everything

        # the daemon restarts: new definitions, the stored cursor -> nothing again
        assert sensor.tick(build_definitions(str(config))) == "0 alert(s) sent"
        assert len(webhook_receiver.requests) == 8 and len(smtp_receiver.messages) == 4

        # the corrupted partition is backed up again and drills clean: a recovery note (and, as the database
        # is still nearly empty, the size warning for this partition too)
        demo_sqlite.with_suffix(".moved").rename(demo_sqlite)
        artifact.unlink()
        assert run_job(defs, instance, "sqlite_backup_job", "2026-11-21").success
        assert re.fullmatch(
            r"2 alert\(s\) sent to log, webhook broken, webhook ops, webhook chat, email 127\.0\.0\.1:\d+: "
            r"sqlite_backup 2026-11-21: check size_anomaly failed; sqlite_backup 2026-11-21: check restore_drill "
            r"recovered; 2 delivery failure\(s\)", sensor.tick())
        news = [h.json() for h in webhook_receiver.wait(12)[8:] if h.path.startswith("/hooks/")]
        assert sorted((n["kind"], n["check"], n["partition"]) for n in news) == [
            ("check_failed", "size_anomaly", "2026-11-21"), ("check_recovered", "restore_drill", "2026-11-21")]


def test_first_tick_reports_only_the_lookback_window(tmp_path: Path, demo_sqlite: Path, age_identity,
                                                   webhook_receiver) -> None:
    from erp_backup_pipeline.orchestration.alerting import collect

    config = write_config(tmp_path, age_identity, sources={"sqlite": {"path": str(demo_sqlite)}},
                          alerts={"webhooks": [{"url": webhook_receiver.url()}], "lookback_hours": 1})
    defs = build_definitions(str(config))
    demo_sqlite.unlink()
    with instance_for_test(tmp_path) as instance:
        assert not run_job(defs, instance, "sqlite_backup_job", "2026-11-24").success
        keys = sorted(defs.resolve_asset_graph().asset_check_keys, key=str)
        now = datetime.now(ZoneInfo("UTC")).timestamp()
        recent, _ = collect(instance, keys, None, "http://ui", lookback_hours=1, now=now)
        later, _ = collect(instance, keys, None, "http://ui", lookback_hours=1, now=now + 7200)
        assert [a.kind for a in recent] == ["run_failed"] and later == []


def test_broken_alert_config_skips_and_keeps_the_cursor(tmp_path: Path, demo_sqlite: Path, age_identity) -> None:
    config = write_config(tmp_path, age_identity, sources={"sqlite": {"path": str(demo_sqlite)}},
                          alerts={"webhooks": [{"url": "ftp://nope"}]})
    with instance_for_test(tmp_path) as instance:
        sensor = Sensor(config, instance)
        sensor.cursor = '{"check_id": 7, "runs": null, "started": 0, "failing": []}'
        message = sensor.tick(build_definitions(None))
        assert message is not None and message.startswith("cannot alert, configuration error: config ")
        assert message.endswith("alerts.webhooks.0.url: must be an http:// or https:// URL") and "nope" not in message
        assert sensor.cursor == '{"check_id": 7, "runs": null, "started": 0, "failing": []}'


def test_a_run_failed_by_its_blocking_check_alerts_once(tmp_path: Path, demo_sqlite: Path, age_identity,
                                                        webhook_receiver, monkeypatch: pytest.MonkeyPatch) -> None:
    """A compressor that emits one wrong byte (a fault no real server shows): integrity fails, the run fails;
    the operator gets the check's alert (it says why), not a second one for the run."""
    from erp_backup_pipeline.core.codecs.zstd import ZstdCodec

    real = ZstdCodec.compress

    def flipping(self: Any, src: Any, dst: Any) -> Any:
        class Flip:
            def write(self, data: bytes) -> int:
                return dst.write(data[:50] + bytes([data[50] ^ 1]) + data[51:] if len(data) > 100 else data)

        return real(self, src, Flip())

    monkeypatch.setattr(ZstdCodec, "compress", flipping)
    config = write_config(tmp_path, age_identity, sources={"sqlite": {"path": str(demo_sqlite)}},
                          alerts={"webhooks": [{"url": webhook_receiver.url()}]})
    defs = build_definitions(str(config))
    with instance_for_test(tmp_path) as instance:
        result = run_job(defs, instance, "sqlite_backup_job", "2026-11-25")
        assert not result.success
        assert Sensor(config, instance).tick().startswith("1 alert(s) sent to log, webhook 127.0.0.1: sqlite_backup 2026-11-25: ")
        [hook] = webhook_receiver.wait(1)
        assert (hook.json()["kind"], hook.json()["check"]) == ("check_failed", "integrity")


def test_a_backup_that_vanished_from_the_destinations_alerts_through_the_catalog_audit(
        tmp_path: Path, demo_sqlite: Path, age_identity, webhook_receiver) -> None:
    """Dagster shows a partition backed up; someone deletes its manifest, signature and artifact on the destination.
    The audit's catalog_agrees fails (the daily or weekly audit job, as its schedules launch it) and the alert sensor
    sends one alert naming the partition; a second tick sends nothing more."""
    from erp_backup_pipeline.core.destinations import build_destinations
    from erp_backup_pipeline.core.signing import SIGNATURE_SUFFIX
    from erp_backup_pipeline.orchestration.audit import CHECK, audit_job
    from erp_backup_pipeline.settings import load_settings

    config = write_config(tmp_path, age_identity, sources={"sqlite": {"path": str(demo_sqlite)}},
                          alerts={"webhooks": [{"url": webhook_receiver.url()}]})
    defs = build_definitions(str(config))
    with instance_for_test(tmp_path) as instance:
        for day in ("2026-11-24", "2026-11-25"):
            assert run_job(defs, instance, "sqlite_backup_job", day).success
        assert run_job(defs, instance, audit_job.name, "2026-11-26").success
        sensor = Sensor(config, instance)
        assert sensor.tick() == "0 alert(s) sent"
        settings = load_settings(str(config))
        [dest] = build_destinations(settings)
        gone = next(k for k in dest.list(f"{settings.prefix}/sqlite_backup/2026-11-24/") if k.endswith(".json"))
        for key in (gone, gone + SIGNATURE_SUFFIX):
            dest.delete(key)
        result = run_job(defs, instance, audit_job.name, "2026-11-27")
        [evaluation] = result.get_asset_check_evaluations()
        assert evaluation.check_name == CHECK and not evaluation.passed
        assert "sqlite_backup 2026-11-24" in (evaluation.description or "")
        assert sensor.tick() == f"1 alert(s) sent to log, webhook 127.0.0.1: backup_catalog_audit: check {CHECK} failed"
        [hook] = webhook_receiver.wait(1)
        assert (hook.json()["kind"], hook.json()["check"]) == ("check_failed", CHECK)
        assert "sqlite_backup 2026-11-24" in str(hook.json())
        assert sensor.tick() == "0 alert(s) sent"
