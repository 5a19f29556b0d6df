"""Destination health: an S3 endpoint that checks signatures refuses a wrong credential, and the operator hears
of it in one line (and once per channel) before a backup does; a good credential passes; backups with the
wrong one fail in one line without touching what is there."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from erp_backup_pipeline.core.health import destination_problems
from erp_backup_pipeline.core.pipeline import run_backup
from erp_backup_pipeline.errors import DestinationError
from erp_backup_pipeline.orchestration.definitions import build_definitions
from erp_backup_pipeline.orchestration.health import SENSOR
from erp_backup_pipeline.orchestration.resources import BackupSettingsResource
from erp_backup_pipeline_devkit.servers import free_port
from erp_backup_pipeline_tests import receivers
from erp_backup_pipeline_tests.conftest import StrictS3, catalog_entries, make_settings
from erp_backup_pipeline_tests.test_alerting import instance_for_test
from erp_backup_pipeline_tests.test_dagster import write_config

webhook_receiver = receivers.webhook_receiver
TOKEN = "hook-Token-5c2e91"
WRONG_SECRET = "wrong-Secret-0b77d4-value"


def test_wrong_key_id_wrong_secret_missing_bucket_and_dead_endpoint_each_get_one_line(
        tmp_path: Path, age_identity: Any, strict_s3: StrictS3) -> None:
    settings = make_settings(tmp_path, age_identity, destinations=[
        {"type": "local", "name": "local", "path": str(tmp_path / "backups")},
        strict_s3.destination(name="good"),
        strict_s3.destination(name="bad-key", access_key_id="AKIAUNKNOWN000000000"),
        strict_s3.destination(name="bad-secret", secret_access_key=WRONG_SECRET),
        strict_s3.destination(name="no-bucket", bucket="erp-strict-gone"),
        strict_s3.destination(name="dead", endpoint_url=f"http://127.0.0.1:{free_port()}", max_attempts=1)])
    problems = destination_problems(settings)
    assert list(problems) == ["local", "good", "bad-key", "bad-secret", "no-bucket", "dead"]
    assert problems["local"] is None and problems["good"] is None
    assert problems["bad-key"] == ("destination bad-key: access denied (InvalidAccessKeyId: the endpoint does not know "
                                   "the access key id) on list s3://erp-strict/site-a/")
    assert problems["bad-secret"] == ("destination bad-secret: access denied (SignatureDoesNotMatch: the secret access "
                                      "key does not belong to the access key id) on list s3://erp-strict/site-a/")
    assert problems["no-bucket"] == "destination no-bucket: S3 bucket 'erp-strict-gone' does not exist"
    assert problems["dead"] is not None and problems["dead"].startswith("destination dead: cannot reach S3 endpoint")
    for line in problems.values():
        assert line is None or ("\n" not in line and WRONG_SECRET not in line and strict_s3.secret not in line)


def test_a_backup_with_a_wrong_secret_fails_in_one_line_and_leaves_the_bucket_as_it_was(
        tmp_path: Path, age_identity: Any, strict_s3: StrictS3, demo_sqlite: Path) -> None:
    good = make_settings(tmp_path, age_identity, destinations=[strict_s3.destination(prefix="one-line")],
                         sources={"sqlite": {"path": str(demo_sqlite)}})
    run_backup(good, "sqlite_backup", "2026-11-24")
    bad = make_settings(tmp_path, age_identity, sources={"sqlite": {"path": str(demo_sqlite)}},
                        destinations=[strict_s3.destination(prefix="one-line", secret_access_key=WRONG_SECRET)])
    with pytest.raises(DestinationError) as failed:
        run_backup(bad, "sqlite_backup", "2026-11-25")
    assert str(failed.value) == ("destination offsite: access denied (SignatureDoesNotMatch: the secret access key does "
                                 "not belong to the access key id) on list s3://erp-strict/one-line/")

    entries = catalog_entries(good)
    assert [(e.manifest.partition, e.manifest.verify.get("ok")) for e in entries] == [("2026-11-24", True)]


def test_the_sensor_names_an_unusable_destination_in_one_line_and_alerts_once_then_when_it_is_usable_again(
        tmp_path: Path, age_identity: Any, strict_s3: StrictS3, demo_sqlite: Path,
        webhook_receiver: receivers.WebhookReceiver) -> None:
    alerts = {"webhooks": [{"url": webhook_receiver.url(f"/hooks/{TOKEN}"), "name": "ops"}]}
    wrong = write_config(tmp_path, age_identity, sources={"sqlite": {"path": str(demo_sqlite)}}, alerts=alerts,
                         destinations=[strict_s3.destination(secret_access_key=WRONG_SECRET)])
    defs = build_definitions(str(wrong))
    sensor = defs.resolve_sensor_def(SENSOR)
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING

    def tick(config: Path, cursor: str | None) -> dg.SensorExecutionData:
        return sensor.evaluate_tick(dg.build_sensor_context(
            instance=instance, definitions=defs, cursor=cursor,
            resources={"backup_settings": BackupSettingsResource.pinned(str(config))}))

    with instance_for_test(tmp_path) as instance:
        first = tick(wrong, None)
        assert first.skip_message == ("DESTINATION UNUSABLE: destination offsite: access denied (SignatureDoesNotMatch: "
                                      "the secret access key does not belong to the access key id) on list "
                                      "s3://erp-strict/site-a/")
        [sent] = webhook_receiver.wait(1)
        assert sent.json()["kind"] == "destination_failed" and sent.json()["source"] == "offsite"
        assert sent.json()["subject"] == "[erp-backup] destination offsite cannot be used"
        # the next tick (same failure, the cursor kept by the daemon) says it again but alerts no more
        again = tick(wrong, first.cursor)
        assert again.skip_message == first.skip_message
        # the credential is fixed: one note that it is usable again
        fixed = tmp_path / "fixed"
        fixed.mkdir()
        right = write_config(fixed, age_identity, sources={"sqlite": {"path": str(demo_sqlite)}}, alerts=alerts,
                             destinations=[strict_s3.destination()])
        recovered = tick(right, again.cursor)
        assert recovered.skip_message == "1 destination(s) usable: offsite"
        sent = webhook_receiver.wait(2)
        assert [r.json()["kind"] for r in sent] == ["destination_failed", "destination_recovered"]
        assert tick(right, recovered.cursor).skip_message == "1 destination(s) usable: offsite"
        # a configuration the code location cannot read: one line too, no alert, the cursor kept
        broken = tmp_path / "broken.yaml"
        broken.write_text("destinations: [{type: s3}]\n")
        assert tick(broken, recovered.cursor).skip_message.startswith("configuration error: ")
    assert len(webhook_receiver.requests) == 2
    for request in webhook_receiver.requests:
        assert WRONG_SECRET.encode() not in request.body and strict_s3.secret.encode() not in request.body
