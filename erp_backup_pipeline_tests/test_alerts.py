"""Alert delivery against real receivers on 127.0.0.1: a webhook endpoint and SMTP servers.

Every channel gets every alert even when another fails; each failure is one line naming the
channel, never a webhook's URL (its path is the token).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from erp_backup_pipeline.core import runner
from erp_backup_pipeline.core.alerts import (
    Alert,
    EmailChannel,
    LogChannel,
    WebhookChannel,
    build_channels,
    deliver,
    run_url,
)
from erp_backup_pipeline.errors import AlertError, ConfigError
from erp_backup_pipeline.settings import parse_settings
from erp_backup_pipeline_devkit.servers import free_port
from erp_backup_pipeline_tests import receivers
from erp_backup_pipeline_tests.conftest import make_settings, signing_section
from erp_backup_pipeline_tests.receivers import SmtpReceiver, WebhookReceiver

# the receivers' fixtures, requested by name below
webhook_receiver = receivers.webhook_receiver
smtp_receiver = receivers.smtp_receiver
smtp_tls_receiver = receivers.smtp_tls_receiver

TOKEN_PATH = "/services/T0ERPBACK/B0ALERTS/xoxb-s3cr3t-t0ken"
UI = "http://dagster.example:3000"

BASE = {
    "encryption": {"recipients": ["age1qqqq"]},
    "signing": signing_section(),
    "destinations": [{"type": "local", "path": "backups"}],
}


@pytest.fixture(autouse=True)
def _own_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test registers its own secrets; none leak into other tests."""
    monkeypatch.setattr(runner, "_SECRETS", set())


def check_alert(**extra: Any) -> Alert:
    fields: dict[str, Any] = {
        "kind": "check_failed", "source": "postgres_dump", "partition": "2026-11-25", "check": "integrity",
        "error": "pg_restore --list failed (exit 1): input file does not appear to be a valid archive",
        "run_id": "8f2c1d9e-run", "run_url": run_url(UI, "8f2c1d9e-run"), "at": "2026-11-25T02:17:03+00:00",
    }
    return Alert(**{**fields, **extra})


# ---------------------------------------------------------------- the alert itself

def test_subject_and_text_say_what_failed_where_and_link_the_run() -> None:
    alert = check_alert()
    assert alert.subject() == "[erp-backup] postgres_dump 2026-11-25: check integrity failed"
    run = check_alert(kind="run_failed", check=None)
    assert run.subject() == "[erp-backup] postgres_dump 2026-11-25: run failed"
    assert check_alert(kind="check_recovered", error="").subject().endswith("check integrity recovered")
    assert check_alert(partition=None).subject() == "[erp-backup] postgres_dump: check integrity failed"
    text = alert.text()
    for value in ("postgres_dump", "2026-11-25", "integrity", "check_failed", alert.error, "8f2c1d9e-run",
                  f"{UI}/runs/8f2c1d9e-run", "2026-11-25T02:17:03+00:00"):
        assert value in text
    assert text.splitlines()[0] == "postgres_dump 2026-11-25: check integrity failed"
    assert alert.as_json() == {"kind": "check_failed", "source": "postgres_dump", "partition": "2026-11-25",
                               "check": "integrity", "error": alert.error, "run_id": "8f2c1d9e-run",
                               "run_url": f"{UI}/runs/8f2c1d9e-run", "at": "2026-11-25T02:17:03+00:00"}
    assert run_url(UI + "/", "r1") == f"{UI}/runs/r1"


# ---------------------------------------------------------------- webhooks

def test_json_webhook_posts_every_field_the_text_and_the_link(webhook_receiver: WebhookReceiver) -> None:
    alert = check_alert()
    channel = WebhookChannel(webhook_receiver.url(TOKEN_PATH), name="ops-hook")
    assert deliver(alert, [channel]) == []
    [request] = webhook_receiver.wait(1)
    assert request.method == "POST" and request.path == TOKEN_PATH
    assert request.headers["Content-Type"].startswith("application/json")
    body = request.json()
    assert {k: body[k] for k in alert.as_json()} == alert.as_json()
    assert body["run_url"] == f"{UI}/runs/8f2c1d9e-run"
    assert body["subject"] == alert.subject()
    assert body["text"] == alert.text() and f"{UI}/runs/8f2c1d9e-run" in body["text"]


def test_slack_webhook_posts_text_only(webhook_receiver: WebhookReceiver) -> None:
    alert = check_alert(kind="run_failed", check=None)
    assert deliver(alert, [WebhookChannel(webhook_receiver.url(TOKEN_PATH), format="slack")]) == []
    body = webhook_receiver.wait(1)[0].json()
    assert list(body) == ["text"]
    assert alert.subject() in body["text"] and alert.error in body["text"]
    assert f"{UI}/runs/8f2c1d9e-run" in body["text"]


def test_webhook_errors_name_the_channel_never_the_url(webhook_receiver: WebhookReceiver) -> None:
    url = webhook_receiver.url(TOKEN_PATH)
    named, unnamed = WebhookChannel(url, name="ops-hook"), WebhookChannel(url)
    assert unnamed.name == "webhook 127.0.0.1"
    webhook_receiver.status = 500
    webhook_receiver.body = f"no handler for {TOKEN_PATH}\n".encode()  # a server that echoes the token
    assert deliver(check_alert(), [named, unnamed]) == ["webhook ops-hook: HTTP 500 (no handler for ***)",
                                                        "webhook 127.0.0.1: HTTP 500 (no handler for ***)"]
    webhook_receiver.status, webhook_receiver.content_type = 404, "text/html"
    webhook_receiver.body = b"<html><body>Not Found</body></html>"
    assert deliver(check_alert(), [named]) == ["webhook ops-hook: HTTP 404"]
    webhook_receiver.status = 302
    assert deliver(check_alert(), [named]) == ["webhook ops-hook: HTTP 302"]  # no silent re-post elsewhere

    closed = WebhookChannel(f"http://127.0.0.1:{free_port()}{TOKEN_PATH}", name="ops-hook")
    [line] = deliver(check_alert(), [closed])
    assert line == "webhook ops-hook: cannot connect: Connection refused"
    with pytest.raises(AlertError) as err:
        closed.send(check_alert())
    assert "xoxb" not in str(err.value) and "T0ERPBACK" not in str(err.value)


def test_a_webhook_that_does_not_answer_in_time_fails_after_its_timeout(webhook_receiver: WebhookReceiver) -> None:
    webhook_receiver.delay = 3
    channel = WebhookChannel(webhook_receiver.url(), name="slow", timeout=0.3)
    assert deliver(check_alert(), [channel]) == ["webhook slow: no answer within 0.3 s"]


# ---------------------------------------------------------------- e-mail

def test_email_has_subject_body_and_every_recipient(smtp_receiver: SmtpReceiver) -> None:
    alert = check_alert()
    channel = EmailChannel(smtp_receiver.host, port=smtp_receiver.port, sender="backup@erp.example",
                           recipients=["ops@erp.example", "oncall@erp.example"])
    assert channel.name == f"email 127.0.0.1:{smtp_receiver.port}"
    assert deliver(alert, [channel]) == []
    [mail] = smtp_receiver.wait(1)
    assert mail.mail_from == "backup@erp.example"
    assert mail.rcpt_tos == ["ops@erp.example", "oncall@erp.example"]
    assert mail.message["Subject"] == "[erp-backup] postgres_dump 2026-11-25: check integrity failed"
    assert mail.message["To"] == "ops@erp.example, oncall@erp.example"
    assert mail.message["From"] == "backup@erp.example"
    assert mail.body == alert.text()
    assert f"{UI}/runs/8f2c1d9e-run" in mail.body


def test_email_over_starttls_with_login(smtp_tls_receiver: SmtpReceiver, tmp_path: Path) -> None:
    """Real TLS (a throwaway CA trusted through ca_file) and AUTH; the server refuses both without TLS."""
    rx = smtp_tls_receiver
    assert rx.username and rx.password
    settings = make_email_settings(rx, tmp_path, security="starttls", username=rx.username, password=rx.password,
                                   ca_file=str(rx.ca_file))
    [channel] = build_channels(settings.alerts)
    assert deliver(check_alert(), [channel]) == []
    assert rx.wait(1)[0].rcpt_tos == ["ops@erp.example"] and rx.logins == [(rx.username, True)]

    runner.register_secrets(["wrong-pa55"])
    wrong = make_email_settings(rx, tmp_path, security="starttls", username=rx.username, password="wrong-pa55",
                                ca_file=str(rx.ca_file))
    [line] = deliver(check_alert(), build_channels(wrong.alerts))
    assert line.startswith(f"email 127.0.0.1:{rx.port}: login as {rx.username} refused (535")
    assert "wrong-pa55" not in line

    untrusted = make_email_settings(rx, tmp_path, security="starttls", username=rx.username, password=rx.password)
    [line] = deliver(check_alert(), build_channels(untrusted.alerts))
    assert line.startswith(f"email 127.0.0.1:{rx.port}: TLS failed: ") and "certificate" in line

    plain = make_email_settings(rx, tmp_path, security="none")
    [line] = deliver(check_alert(), build_channels(plain.alerts))
    assert line.startswith(f"email 127.0.0.1:{rx.port}: ") and "STARTTLS" in line
    assert len(rx.messages) == 1


def make_email_settings(rx: SmtpReceiver, tmp_path: Path, **email: Any) -> Any:
    return parse_settings({**BASE, "alerts": {"log": False, "email": {
        "host": rx.host, "port": rx.port, "sender": "backup@erp.example", "recipients": ["ops@erp.example"],
        "timeout": 5, **email}}}, "test", tmp_path)


# ---------------------------------------------------------------- delivery to several channels

def test_failing_channels_do_not_stop_the_others(webhook_receiver: WebhookReceiver, smtp_receiver: SmtpReceiver,
                                                 tmp_path: Path, age_identity: tuple[Path, str]) -> None:
    """A webhook answering 500 and an SMTP server that is down: the log, the working webhook and the
    working SMTP server still get the alert, and deliver() returns one clear line per failure."""
    broken = WebhookReceiver()
    broken.start()
    try:
        broken.status, broken.body = 500, b""
        down_port = free_port()
        settings = make_settings(tmp_path, age_identity, alerts={
            "ui_url": UI,
            "webhooks": [
                {"url": broken.url(TOKEN_PATH), "name": "ops-hook"},
                {"url": webhook_receiver.url(TOKEN_PATH), "format": "slack", "name": "chat"},
            ],
            "email": {"host": "127.0.0.1", "port": down_port, "sender": "backup@erp.example",
                      "recipients": ["ops@erp.example"], "timeout": 5},
        })
        runner.register_secrets(settings.secrets())
        lines: list[str] = []
        channels = build_channels(settings.alerts, log=lines.append)
        assert [c.name for c in channels] == ["log", "webhook ops-hook", "webhook chat", f"email 127.0.0.1:{down_port}"]
        working_mail = EmailChannel(smtp_receiver.host, port=smtp_receiver.port, sender="backup@erp.example",
                                    recipients=["ops@erp.example"])

        alert = check_alert(run_url=run_url(settings.alerts.ui_url, "8f2c1d9e-run"))
        failures = deliver(alert, [*channels, working_mail])

        assert failures == ["webhook ops-hook: HTTP 500",
                            f"email 127.0.0.1:{down_port}: cannot connect: Connection refused"]
        assert len(broken.wait(1)) == 1  # it was tried
        assert alert.subject() in webhook_receiver.wait(1)[0].json()["text"]
        assert smtp_receiver.wait(1)[0].message["Subject"] == alert.subject()
        assert lines == [f"{alert.subject()}: {alert.error} ({UI}/runs/8f2c1d9e-run)"]
        for line in failures:
            assert "xoxb" not in line and "T0ERPBACK" not in line and "\n" not in line
    finally:
        broken.stop()


class _Broken:
    name = "broken"

    def send(self, alert: Alert) -> None:
        raise RuntimeError("unexpected\nbug")


def test_a_channel_bug_is_one_line_and_the_rest_still_deliver(webhook_receiver: WebhookReceiver) -> None:
    failures = deliver(check_alert(), [_Broken(), WebhookChannel(webhook_receiver.url(), name="ops")])
    assert failures == ["broken: RuntimeError: unexpected bug"]
    assert len(webhook_receiver.wait(1)) == 1


def test_secrets_in_the_alert_are_masked_before_it_leaves(webhook_receiver: WebhookReceiver) -> None:
    runner.register_secrets(["hunter2-db-pass"])
    alert = check_alert(error="psql: password authentication failed, password=hunter2-db-pass")
    assert deliver(alert, [WebhookChannel(webhook_receiver.url())]) == []
    body = webhook_receiver.wait(1)[0].body.decode()
    assert "hunter2-db-pass" not in body and "password=***" in body


def test_log_channel_writes_one_line_to_the_alerts_logger(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="erp_backup_pipeline.alerts"):
        assert deliver(check_alert(), [LogChannel()]) == []
        assert deliver(check_alert(kind="check_recovered", error=""), [LogChannel()]) == []
    [failed, recovered] = caplog.records
    assert failed.name == "erp_backup_pipeline.alerts" and failed.levelno == logging.WARNING
    assert failed.getMessage() == (f"{check_alert().subject()}: {check_alert().error} ({UI}/runs/8f2c1d9e-run)")
    assert recovered.levelno == logging.INFO and recovered.getMessage().endswith("check integrity recovered "
                                                                                 f"({UI}/runs/8f2c1d9e-run)")


def test_an_unreadable_password_file_fails_only_the_email(webhook_receiver: WebhookReceiver, tmp_path: Path) -> None:
    secret = tmp_path / "smtp-pass"
    secret.write_text("from-a-file\n")
    secret.chmod(0o644)
    settings = parse_settings({**BASE, "alerts": {"log": False, "webhooks": [{"url": webhook_receiver.url()}], "email": {
        "host": "127.0.0.1", "port": free_port(), "username": "u", "password_file": "smtp-pass",
        "sender": "b@x", "recipients": ["o@x"]}}}, "test", tmp_path)
    [line] = deliver(check_alert(), build_channels(settings.alerts))
    assert line.startswith("email 127.0.0.1:") and "has mode 0644; it must be 0600" in line
    assert len(webhook_receiver.wait(1)) == 1


# ---------------------------------------------------------------- settings

def test_alert_settings_defaults_and_secrets(tmp_path: Path) -> None:
    s = parse_settings(BASE)
    assert s.alerts.ui_url == "http://127.0.0.1:3000" and s.alerts.log and s.alerts.lookback_hours == 24
    assert s.alerts.webhooks == [] and s.alerts.email is None
    assert [c.name for c in build_channels(s.alerts)] == ["log"]

    url = f"https://hooks.slack.example{TOKEN_PATH}"
    s = parse_settings({**BASE, "alerts": {"ui_url": "https://dagster.erp.example/", "webhooks": [{"url": url}],
                                           "email": {"host": "smtp.erp.example", "username": "u", "password": "smtp-s3cret",
                                                     "sender": "b@x", "recipients": ["o@x"]}}})
    assert s.alerts.ui_url == "https://dagster.erp.example"
    assert url in s.secrets() and TOKEN_PATH in s.secrets() and "smtp-s3cret" in s.secrets()
    assert "xoxb" not in repr(s) and "xoxb" not in str(s.model_dump()) and "smtp-s3cret" not in repr(s)
    assert [c.name for c in build_channels(s.alerts)] == ["log", "webhook hooks.slack.example", "email smtp.erp.example:25"]


@pytest.mark.parametrize("alerts, expected", [
    ({"webhook": []}, "alerts.webhook: unknown key (did you mean 'webhooks'?)"),
    ({"webhooks": [{"url": "http://x/h", "fromat": "slack"}]}, "alerts.webhooks.0.fromat: unknown key (did you mean 'format'?)"),
    ({"webhooks": [{"url": "http://x/h", "format": "teams"}]}, "alerts.webhooks.0.format: Input should be 'json' or 'slack'"),
    ({"webhooks": [{"url": "hooks.slack.com/services/x"}]}, "alerts.webhooks.0.url: must be an http:// or https:// URL"),
    ({"webhooks": [{"name": "x"}]}, "alerts.webhooks.0.url: required key is missing"),
    ({"email": {"host": "h", "sender": "b@x", "recipients": []}}, "alerts.email.recipients: List should have at least 1 item"),
    ({"email": {"host": "h", "sender": "b@x"}}, "alerts.email.recipients: required key is missing"),
    ({"email": {"host": "h", "sender": "b@x", "recipients": ["o@x"], "security": "tls"}},
     "alerts.email.security: Input should be 'none', 'starttls' or 'ssl'"),
    ({"email": {"host": "h", "sender": "b@x", "recipients": ["o@x"], "pasword": "p"}},
     "alerts.email.pasword: unknown key (did you mean 'password'?)"),
    ({"email": {"host": "h", "sender": "b@x", "recipients": ["o@x"], "password": "p"}},
     "alerts.email: a password needs username"),
    ({"ui_url": "dagster:3000"}, "alerts.ui_url: must be an http:// or https:// URL"),
])
def test_bad_alert_settings_are_one_line_naming_the_key(alerts: dict[str, Any], expected: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_settings({**BASE, "alerts": alerts}, "erp-backup.yaml")
    message = str(err.value)
    assert message.startswith(f"config erp-backup.yaml: {expected}") and "\n" not in message
