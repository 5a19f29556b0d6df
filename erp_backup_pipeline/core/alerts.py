"""Alert delivery: what an alert says, and the channels that carry it (webhook, e-mail, log).

Owns the ``Alert`` record (a failed run or check of one asset partition, with a link to the run
in the Dagster UI) and its renderings (subject line, text, JSON), the ``AlertChannel``s built from
``alerts`` settings, and ``deliver``, which sends one alert to every channel. Deciding *when* to
alert (which runs and checks failed) is the orchestration layer's job; this module is plain Python.

Delivery never raises: a failing channel does not stop the others, and each failure comes back as
one redacted line naming the channel (``webhook ops-hook: HTTP 500``), never a webhook's URL, whose
path is a secret.
"""

from __future__ import annotations

import dataclasses
import http.client
import json
import logging
import smtplib
import socket
import ssl
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from pathlib import Path
from typing import Any, Literal, Protocol

from pydantic import Field, SecretStr, field_validator, model_validator

from erp_backup_pipeline.core.config import Model, http_url, present, secret
from erp_backup_pipeline.core.runner import redact
from erp_backup_pipeline.errors import AlertError, BackupError


class WebhookSettings(Model):
    """An HTTP endpoint that receives each alert as a JSON POST."""

    url: SecretStr = Field(description="the endpoint; a secret, since webhook URLs (Slack's, ...) carry a token")
    format: Literal["json", "slack"] = Field("json", description="json: every alert field plus 'text'; "
                                                                 "slack: an incoming-webhook payload {'text': ...}")
    timeout: float = Field(10.0, gt=0, description="seconds to connect and to wait for the answer")
    name: str | None = Field(None, description="shown in errors ('webhook <name>') instead of the URL; default: its host")

    def display_name(self) -> str:
        """'webhook <name>', or 'webhook <host>': what errors show, since the URL itself is a secret."""
        return f"webhook {self.name or urllib.parse.urlsplit(self.url.get_secret_value()).hostname or '?'}"

    def secret_parts(self) -> list[str]:
        """The URL, and the parts of it that carry the token (path and query, a password), for redaction."""
        url = self.url.get_secret_value()
        parts = urllib.parse.urlsplit(url)
        tail = parts.path + (f"?{parts.query}" if parts.query else "")
        found = [url]
        if len(tail.strip("/")) >= 8:  # a token-bearing path (Slack: /services/T.../B.../...), not '/' or '/hook'
            found.append(tail)
        if parts.password:
            found.append(parts.password)
        return found

    def secret_values(self) -> list[str]:
        return self.secret_parts()

    @field_validator("url")
    @classmethod
    def _http_url(cls, v: SecretStr) -> SecretStr:
        http_url(v.get_secret_value())
        return v


class EmailSettings(Model):
    """An SMTP server that mails each alert to the recipients."""

    host: str
    port: int = Field(25, ge=1, le=65535)
    security: Literal["none", "starttls", "ssl"] = Field("none", description="ssl: TLS from the start (usually port 465)")
    username: str | None = Field(None, description="log in when set")
    password: SecretStr | None = None
    password_file: Path | None = None
    ca_file: Path | None = Field(None, description="CA certificates to trust for starttls/ssl; default: the system's")
    sender: str
    recipients: list[str] = Field(min_length=1)
    timeout: float = Field(10.0, gt=0, description="seconds for each SMTP exchange")

    def secret_password(self) -> str | None:
        return secret(self.password, self.password_file, "alerts.email.password_file")

    def secret_values(self) -> list[str]:
        return present(self.secret_password)

    @model_validator(mode="after")
    def _login(self) -> EmailSettings:
        if self.password is not None and self.password_file is not None:
            raise ValueError("give password or password_file, not both")
        if (self.password is not None or self.password_file is not None) and not self.username:
            raise ValueError("a password needs username")
        return self


class AlertsSettings(Model):
    """Where failed backups and failed checks are reported (besides the Dagster UI)."""

    ui_url: str = Field("http://127.0.0.1:3000", description="Dagster UI base; run links are {ui_url}/runs/{run_id}")
    log: bool = Field(True, description="write a log line per alert")
    lookback_hours: float = Field(24.0, ge=0, description="on first start, how far back to look for failures")
    webhooks: list[WebhookSettings] = Field(default_factory=list)
    email: EmailSettings | None = None

    _ui_url = field_validator("ui_url")(lambda v: http_url(v))

LOGGER_NAME = "erp_backup_pipeline.alerts"
SUBJECT_PREFIX = "[erp-backup]"
USER_AGENT = "erp-backup-pipeline alerts"

AlertKind = Literal["check_failed", "run_failed", "check_recovered", "destination_failed", "destination_recovered"]
_KIND_WORDS: dict[str, str] = {"check_failed": "failed", "run_failed": "failed", "check_recovered": "recovered",
                               "destination_failed": "cannot be used", "destination_recovered": "usable again"}
RECOVERY_KINDS = ("check_recovered", "destination_recovered")


def run_url(ui_url: str, run_id: str) -> str:
    """The run's page in the Dagster UI."""
    return f"{ui_url.rstrip('/')}/runs/{run_id}"


@dataclass(frozen=True, kw_only=True)
class Alert:
    """One thing an operator must hear about: a failed run or check of one asset (partition), or a destination
    that cannot be used (wrong credential, bucket gone, endpoint down) before the next backup finds out.

    ``source`` is the asset (``postgres_dump``; for a destination alert the destination's name), ``check`` the
    asset check's name when a check failed,
    ``error`` one line saying why, ``run_url`` the run's page (see ``run_url()``), ``at`` an ISO 8601 time.
    """

    kind: AlertKind
    source: str
    partition: str | None = None
    check: str | None = None
    error: str
    run_id: str | None = None
    run_url: str | None = None
    at: str

    def what(self) -> str:
        """``postgres_dump 2026-11-25: check integrity failed`` (no prefix, no error)."""
        if self.kind.startswith("destination_"):
            return f"destination {self.source} {_KIND_WORDS[self.kind]}"
        where = f"{self.source} {self.partition}" if self.partition else self.source
        event = f"check {self.check}" if self.check else ("run" if self.kind == "run_failed" else "check")
        return f"{where}: {event} {_KIND_WORDS.get(self.kind, self.kind)}"

    def subject(self) -> str:
        """One line, e.g. ``[erp-backup] postgres_dump 2026-11-25: check integrity failed``."""
        return _one_line(f"{SUBJECT_PREFIX} {self.what()}")

    def text(self) -> str:
        """Several lines for a human: what happened, the error, every field and the link to the run."""
        subject = "destination" if self.kind.startswith("destination_") else "asset"
        rows = [("error", self.error or "-"), (subject, self.source), ("partition", self.partition or "-"),
                ("check", self.check or "-"), ("kind", self.kind), ("run", self.run_id or "-"),
                ("link", self.run_url or "-"), ("at", self.at)]
        return "\n".join([self.what(), "", *(f"{k + ':':<11}{_one_line(v)}" for k, v in rows)]) + "\n"

    def as_json(self) -> dict[str, Any]:
        """Every field, by name (the webhook's ``json`` format adds ``text`` and ``subject``)."""
        return dataclasses.asdict(self)

    def redacted(self) -> Alert:
        """A copy with every registered secret masked in every field."""
        masked: dict[str, Any] = {f.name: redact(v) for f in dataclasses.fields(self)
                                  if isinstance(v := getattr(self, f.name), str)}
        return dataclasses.replace(self, **masked)


class AlertChannel(Protocol):
    """Somewhere an alert goes. ``send`` raises AlertError (naming ``name``) when it cannot deliver."""

    name: str

    def send(self, alert: Alert) -> None: ...


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A webhook that redirects is misconfigured: report the 3xx instead of re-posting elsewhere."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


class WebhookChannel:
    """POSTs each alert as JSON: ``json`` = every alert field plus ``subject`` and ``text``;
    ``slack`` = ``{"text": ...}``, the payload Slack (and Mattermost, Rocket.Chat, ...) incoming webhooks take."""

    def __init__(self, url: str, *, name: str | None = None, format: Literal["json", "slack"] = "json",
                 timeout: float = 10.0) -> None:
        self._url = url
        self.name = f"webhook {name or urllib.parse.urlsplit(url).hostname or '?'}"
        self.format = format
        self.timeout = timeout
        self._opener = urllib.request.build_opener(_NoRedirect)

    @classmethod
    def from_settings(cls, settings: WebhookSettings) -> WebhookChannel:
        return cls(settings.url.get_secret_value(), name=settings.name, format=settings.format, timeout=settings.timeout)

    def payload(self, alert: Alert) -> dict[str, Any]:
        if self.format == "slack":
            return {"text": f"*{alert.subject()}*\n{alert.text()}"}
        return {**alert.as_json(), "subject": alert.subject(), "text": alert.text()}

    def send(self, alert: Alert) -> None:
        body = json.dumps(self.payload(alert)).encode()
        request = urllib.request.Request(self._url, data=body, method="POST", headers={
            "Content-Type": "application/json; charset=utf-8", "User-Agent": USER_AGENT})
        try:
            with self._opener.open(request, timeout=self.timeout) as response:
                status = response.status
                response.read(65536)
        except urllib.error.HTTPError as exc:
            raise AlertError(f"{self.name}: HTTP {exc.code}{self._detail(exc)}") from None
        except urllib.error.URLError as exc:
            raise AlertError(f"{self.name}: {self._network(exc.reason)}") from None
        except (OSError, http.client.HTTPException) as exc:
            raise AlertError(f"{self.name}: {self._network(exc)}") from None
        if not 200 <= status < 300:
            raise AlertError(f"{self.name}: HTTP {status}")

    def _detail(self, exc: urllib.error.HTTPError) -> str:
        """The first line of the answer's body (Slack says 'invalid_token', 'no_service', ...), scrubbed."""
        if not (exc.headers.get("Content-Type") or "").startswith(("text/plain", "application/json")):
            return ""  # an HTML error page says nothing a line can hold
        try:
            first = exc.read(300).decode("utf-8", "replace").strip().splitlines()
        except (OSError, http.client.HTTPException):
            return ""
        finally:
            exc.close()
        return f" ({self._scrub(first[0][:120])})" if first and first[0].strip() else ""

    def _network(self, reason: object) -> str:
        if isinstance(reason, TimeoutError):
            return f"no answer within {self.timeout:g} s"
        if isinstance(reason, ssl.SSLError):
            return f"TLS failed: {_tls_reason(reason)}"
        if isinstance(reason, socket.gaierror):
            return f"cannot resolve the host: {reason.strerror}"
        if isinstance(reason, OSError) and reason.strerror:
            return f"cannot connect: {reason.strerror}"
        return self._scrub(f"{type(reason).__name__}: {reason}" if isinstance(reason, BaseException) else str(reason))

    def _scrub(self, text: str) -> str:
        """Mask the URL and its path here too, even when no one registered them as secrets."""
        parts = urllib.parse.urlsplit(self._url)
        for part in (self._url, parts.path + (f"?{parts.query}" if parts.query else ""), parts.query, parts.path):
            if len(part.strip("/")) >= 3:
                text = text.replace(part, "***")
        return text


class EmailChannel:
    """Mails each alert (subject line and text) over SMTP: plain, STARTTLS or TLS from the start."""

    def __init__(self, host: str, *, sender: str, recipients: Sequence[str], port: int = 25,
                 security: Literal["none", "starttls", "ssl"] = "none", username: str | None = None,
                 password: str | Callable[[], str | None] | None = None, ca_file: Path | None = None,
                 timeout: float = 10.0) -> None:
        if not recipients:
            raise AlertError(f"email {host}:{port}: no recipients")
        self.name = f"email {host}:{port}"
        self.host, self.port, self.security = host, port, security
        self.sender, self.recipients = sender, list(recipients)
        self.username, self._password = username, password
        self.ca_file, self.timeout = ca_file, timeout

    @classmethod
    def from_settings(cls, settings: EmailSettings) -> EmailChannel:
        return cls(settings.host, sender=settings.sender, recipients=settings.recipients, port=settings.port,
                   security=settings.security, username=settings.username, password=settings.secret_password,
                   ca_file=settings.ca_file, timeout=settings.timeout)

    def message(self, alert: Alert) -> EmailMessage:
        msg = EmailMessage()
        msg["Subject"] = alert.subject()
        msg["From"] = self.sender
        msg["To"] = ", ".join(self.recipients)
        msg["Date"] = formatdate(localtime=True)
        msg["Message-ID"] = make_msgid(domain=self.sender.rpartition("@")[2] or None)
        msg.set_content(alert.text())
        return msg

    def send(self, alert: Alert) -> None:
        msg = self.message(alert)
        try:
            password = self._password() if callable(self._password) else self._password
        except BackupError as exc:  # an unreadable password_file: report it, other channels still go out
            raise AlertError(f"{self.name}: {exc}") from None
        try:
            context = ssl.create_default_context(cafile=str(self.ca_file) if self.ca_file else None)
        except OSError as exc:
            raise AlertError(f"{self.name}: cannot read ca_file {self.ca_file}: {exc.strerror}") from None
        try:
            smtp: smtplib.SMTP
            if self.security == "ssl":
                smtp = smtplib.SMTP_SSL(self.host, self.port, timeout=self.timeout, context=context)
            else:
                smtp = smtplib.SMTP(self.host, self.port, timeout=self.timeout)
            with smtp:
                if self.security == "starttls":
                    smtp.starttls(context=context)
                if self.username:
                    smtp.login(self.username, password or "")
                refused = smtp.send_message(msg, from_addr=self.sender, to_addrs=self.recipients)
        except smtplib.SMTPAuthenticationError as exc:
            raise AlertError(f"{self.name}: login as {self.username} refused ({_smtp_reply(exc)})") from None
        except smtplib.SMTPRecipientsRefused as exc:
            raise AlertError(f"{self.name}: every recipient refused: {_refused(exc.recipients)}") from None
        except smtplib.SMTPSenderRefused as exc:
            raise AlertError(f"{self.name}: sender {self.sender} refused ({_smtp_reply(exc)})") from None
        except smtplib.SMTPNotSupportedError as exc:
            raise AlertError(f"{self.name}: the server does not support it: {exc}") from None
        except smtplib.SMTPResponseException as exc:
            raise AlertError(f"{self.name}: SMTP {_smtp_reply(exc)}") from None
        except smtplib.SMTPServerDisconnected:
            raise AlertError(f"{self.name}: the server closed the connection") from None
        except smtplib.SMTPException as exc:
            raise AlertError(f"{self.name}: {exc}") from None
        except ssl.SSLError as exc:
            raise AlertError(f"{self.name}: TLS failed: {_tls_reason(exc)}") from None
        except TimeoutError:
            raise AlertError(f"{self.name}: no answer within {self.timeout:g} s") from None
        except OSError as exc:
            raise AlertError(f"{self.name}: cannot connect: {exc.strerror or exc}") from None
        if refused:
            raise AlertError(f"{self.name}: delivered, but recipients refused: {_refused(refused)}")


def _tls_reason(exc: ssl.SSLError) -> str:
    return str(getattr(exc, "verify_message", None) or exc.reason or exc)


def _smtp_reply(exc: smtplib.SMTPResponseException) -> str:
    text = exc.smtp_error.decode("utf-8", "replace") if isinstance(exc.smtp_error, bytes) else str(exc.smtp_error)
    return f"{exc.smtp_code} {_one_line(text)}".strip()


def _refused(recipients: dict[str, tuple[int, bytes]]) -> str:
    return ", ".join(f"{addr} ({code} {_one_line(msg.decode('utf-8', 'replace'))})"
                     for addr, (code, msg) in sorted(recipients.items()))


class LogChannel:
    """One line per alert: to the ``erp_backup_pipeline.alerts`` logger (WARNING; INFO for a recovery),
    or to a given callable (a Dagster sensor's ``context.log.warning``, ``print``, a list's ``append``)."""

    name = "log"

    def __init__(self, write: Callable[[str], None] | None = None) -> None:
        self._write = write

    @staticmethod
    def line(alert: Alert) -> str:
        link = f" ({alert.run_url})" if alert.run_url else (f" (run {alert.run_id})" if alert.run_id else "")
        error = f": {alert.error}" if alert.error else ""
        return _one_line(f"{alert.subject()}{error}{link}")

    def send(self, alert: Alert) -> None:
        line = self.line(alert)
        if self._write is not None:
            self._write(line)
        else:
            level = logging.INFO if alert.kind in RECOVERY_KINDS else logging.WARNING
            logging.getLogger(LOGGER_NAME).log(level, "%s", line)


def build_channels(settings: AlertsSettings, log: Callable[[str], None] | None = None) -> list[AlertChannel]:
    """The configured channels: the log line (``alerts.log``), every webhook, then e-mail."""
    channels: list[AlertChannel] = [LogChannel(log)] if settings.log else []
    channels += [WebhookChannel.from_settings(hook) for hook in settings.webhooks]
    if settings.email is not None:
        channels.append(EmailChannel.from_settings(settings.email))
    return channels


def deliver(alert: Alert, channels: Iterable[AlertChannel]) -> list[str]:
    """Send ``alert`` (secrets masked) to every channel; return one redacted line per channel that failed."""
    alert = alert.redacted()
    failures: list[str] = []
    for channel in channels:
        try:
            channel.send(alert)
        except AlertError as exc:
            failures.append(redact(str(exc)))
        except Exception as exc:  # a channel's bug must not silence the others
            failures.append(redact(_one_line(f"{channel.name}: {type(exc).__name__}: {exc}")))
    return failures


def _one_line(text: str) -> str:
    return " ".join(str(text).split())
