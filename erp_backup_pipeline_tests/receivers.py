"""Real alert receivers on 127.0.0.1 for tests: an HTTP webhook endpoint and SMTP servers.

Import the fixtures into a test module (``from erp_backup_pipeline_tests.receivers import webhook_receiver``):

* ``webhook_receiver`` -> ``WebhookReceiver``: a ``ThreadingHTTPServer`` in a thread. ``url(path)`` is an
  endpoint on it; every request is recorded in ``requests`` (``RecordedRequest``: method, path, headers,
  body, ``json()``); ``wait(n)`` blocks until n have arrived. Set ``status`` (e.g. 500), ``body`` and
  ``content_type`` to change the answer, ``delay`` to answer late.
* ``smtp_receiver`` -> ``SmtpReceiver``: an aiosmtpd server, plain SMTP, no login. ``messages`` holds
  ``ReceivedMail`` (envelope sender and recipients, the parsed ``EmailMessage``); ``wait(n)`` as above.
* ``smtp_tls_receiver`` -> ``SmtpReceiver`` that requires STARTTLS and AUTH (``username``/``password``) with a
  certificate for 127.0.0.1 from a throwaway CA whose certificate is ``ca_file``; ``logins`` records attempts.
"""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import http.server
import ipaddress
import json
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from erp_backup_pipeline_devkit.servers import free_port

HOST = "127.0.0.1"


def _wait(cond: threading.Condition, items: list[Any], n: int, timeout: float, what: str) -> list[Any]:
    deadline = time.monotonic() + timeout
    with cond:
        while len(items) < n:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"expected {n} {what}, got {len(items)} within {timeout:g} s")
            cond.wait(left)
        return list(items)


# ---------------------------------------------------------------- webhook (HTTP)

@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class WebhookReceiver:
    """Records every request; answers ``status`` with ``body`` (after ``delay`` seconds)."""

    def __init__(self) -> None:
        self.requests: list[RecordedRequest] = []
        self.status = 200
        self.body = b"ok"
        self.content_type = "text/plain; charset=utf-8"
        self.delay = 0.0
        self._cond = threading.Condition()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                with receiver._cond:
                    receiver.requests.append(RecordedRequest(self.command, self.path, dict(self.headers.items()), body))
                    receiver._cond.notify_all()
                if receiver.delay:
                    time.sleep(receiver.delay)
                self.send_response(receiver.status)
                self.send_header("Content-Type", receiver.content_type)
                self.send_header("Content-Length", str(len(receiver.body)))
                self.end_headers()
                self.wfile.write(receiver.body)

            do_POST = do_GET = do_PUT = _handle

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer((HOST, 0), Handler)
        self.server.daemon_threads = True
        self.port = int(self.server.server_address[1])
        self._thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def url(self, path: str = "/hook") -> str:
        return f"http://{HOST}:{self.port}{path}"

    def wait(self, n: int = 1, timeout: float = 10) -> list[RecordedRequest]:
        return _wait(self._cond, self.requests, n, timeout, "webhook request(s)")

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(10)


@pytest.fixture
def webhook_receiver() -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver()
    receiver.start()
    try:
        yield receiver
    finally:
        receiver.stop()


# ---------------------------------------------------------------- SMTP

@dataclass(frozen=True)
class ReceivedMail:
    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage

    @property
    def body(self) -> str:
        """The text/plain body, with the wire's CRLF line ends turned back into newlines."""
        part = self.message.get_body(("plain",))
        text = part.get_content() if part is not None else ""  # type: ignore[attr-defined]
        return str(text).replace("\r\n", "\n")


@dataclass
class SmtpReceiver:
    host: str
    port: int
    messages: list[ReceivedMail] = field(default_factory=list)
    logins: list[tuple[str, bool]] = field(default_factory=list)  # (username, accepted)
    username: str | None = None
    password: str | None = None
    ca_file: Path | None = None
    _cond: threading.Condition = field(default_factory=threading.Condition)

    def wait(self, n: int = 1, timeout: float = 10) -> list[ReceivedMail]:
        return _wait(self._cond, self.messages, n, timeout, "mail(s)")

    # aiosmtpd handler hook
    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        with self._cond:
            self.messages.append(ReceivedMail(envelope.mail_from, list(envelope.rcpt_tos), message))  # type: ignore[arg-type]
            self._cond.notify_all()
        return "250 Message accepted for delivery"

    # aiosmtpd authenticator
    def authenticate(self, server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> AuthResult:
        if not isinstance(auth_data, LoginPassword):
            return AuthResult(success=False, handled=False)
        login, password = auth_data.login.decode(), auth_data.password.decode()
        ok = login == self.username and password == self.password
        self.logins.append((login, ok))
        return AuthResult(success=ok, handled=False)


@pytest.fixture
def smtp_receiver() -> Iterator[SmtpReceiver]:
    receiver = SmtpReceiver(HOST, free_port())
    controller = Controller(receiver, hostname=HOST, port=receiver.port)
    controller.start()
    try:
        yield receiver
    finally:
        controller.stop()


def make_tls_files(directory: Path, host: str = HOST) -> tuple[Path, Path, Path]:
    """A throwaway CA and a server certificate for ``host`` signed by it: (ca.pem, server.pem, server.key)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = dt.datetime.now(dt.UTC)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "erp-backup test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
          .not_valid_after(now + dt.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                       data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                                       encipher_only=False, decipher_only=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    leaf = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(host))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    directory.mkdir(parents=True, exist_ok=True)
    ca_file, cert_file, key_file = directory / "ca.pem", directory / "server.pem", directory / "server.key"
    ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_file.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    key_file.chmod(0o600)
    return ca_file, cert_file, key_file


@pytest.fixture
def smtp_tls_receiver(tmp_path: Path) -> Iterator[SmtpReceiver]:
    ca_file, cert_file, key_file = make_tls_files(tmp_path / "smtp-tls")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_file, key_file)
    receiver = SmtpReceiver(HOST, free_port(), username="alerts@example.org", password="smtp-pa55-word", ca_file=ca_file)
    controller = Controller(receiver, hostname=HOST, port=receiver.port, tls_context=context, require_starttls=True,
                            auth_required=True, authenticator=receiver.authenticate)
    controller.start()
    try:
        yield receiver
    finally:
        controller.stop()


__all__ = ["RecordedRequest", "ReceivedMail", "SmtpReceiver", "WebhookReceiver", "make_tls_files",
           "smtp_receiver", "smtp_tls_receiver", "webhook_receiver"]
