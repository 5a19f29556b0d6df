"""Helpers for the process-level fault tests: a CLI config, a big database, a fault-injecting S3 proxy,
snapshots of what a destination holds, and a verification of every catalog entry."""

from __future__ import annotations

import hashlib
import http.client
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psycopg
import yaml

from erp_backup_pipeline.core.catalog import Entry
from erp_backup_pipeline.core.restore import _check_plain, fetched, plaintext_reader
from erp_backup_pipeline.core.sources import build_source
from erp_backup_pipeline.core.streams import CHUNK
from erp_backup_pipeline.settings import Settings, load_settings
from erp_backup_pipeline_devkit.servers import PostgresServer
from erp_backup_pipeline_tests.conftest import ERP_PASSWORD, catalog_entries, signing_section


def wait_for(what: str, predicate: Callable[[], Any], timeout: float = 120.0, interval: float = 0.02) -> Any:
    """Poll until predicate() is truthy; its value, or AssertionError naming what did not happen."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"{what} did not happen within {timeout:.0f} s")


@contextmanager
def tmpfs(path: Path, size: str, mode: str | None = "0700") -> Iterator[Path]:
    """A tmpfs of ``size`` mounted at the new directory ``path`` (CI runs as root): a disk that really fills up, or
    that can be remounted read-only; unmounted afterwards."""
    path.mkdir()
    options = f"size={size}" + (f",mode={mode}" if mode else "")
    subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def write_config(tmp_path: Path, age_identity: tuple[Path, str], *, sources: dict[str, Any],
                 destinations: list[dict[str, Any]]) -> Path:
    data = {"staging_dir": str(tmp_path / "staging"),
            "encryption": {"codec": "age", "recipients": [age_identity[1]], "identity_file": str(age_identity[0])},
            "signing": signing_section(),
            "destinations": destinations, "sources": sources}
    path = tmp_path / "erp-backup.yaml"
    path.write_text(yaml.safe_dump(data))
    path.chmod(0o600)
    return path


def settings_of(config: Path) -> Settings:
    return load_settings(config)


def start_cli(config: Path, *args: str, script: str | None = None) -> subprocess.Popen[str]:
    """``erp-backup --config F ARGS`` as its own process (its own session, so nothing signals the tests).
    ``script``: run this wrapper file instead of the module (a timing double that patches one function)."""
    head = [sys.executable, script] if script else [sys.executable, "-m", "erp_backup_pipeline.cli"]
    return subprocess.Popen([*head, "--config", str(config), *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


def error_lines(stderr: str) -> list[str]:
    return [ln for ln in stderr.splitlines() if ln.startswith("erp-backup: error")]


def create_big_database(pg: PostgresServer, rows: int) -> str:
    """A database of ``rows`` rows of 192 hex characters (about half compressible): pg_dump takes seconds."""
    name = f"erp_big_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg.dsn(), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}" OWNER erp_user')
    body = " || ".join(["md5(random()::text)"] * 6)
    with psycopg.connect(pg.dsn(name, "erp_user", ERP_PASSWORD), autocommit=True) as conn:
        conn.execute("CREATE TABLE documents (id bigserial PRIMARY KEY, body text NOT NULL)")
        conn.execute(f"INSERT INTO documents(body) SELECT {body} FROM generate_series(1, %s)", (rows,))
        conn.execute("ANALYZE")
    return name


def drop_database(pg: PostgresServer, name: str) -> None:
    with psycopg.connect(pg.dsn(), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def local_files(root: Path) -> dict[str, str]:
    """Every file under root (relative name -> sha256), partial files and all."""
    if not root.exists():
        return {}
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def s3_objects(client: Any, bucket: str) -> dict[str, str]:
    """Every complete object in the bucket (key -> sha256 of its bytes)."""
    found = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for obj in page.get("Contents", []):
            body = client.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()
            found[obj["Key"]] = hashlib.sha256(body).hexdigest()
    return found


def multipart_uploads(client: Any, bucket: str) -> list[dict[str, Any]]:
    return list(client.list_multipart_uploads(Bucket=bucket).get("Uploads", []))


def verify_entry(settings: Settings, entry: Entry) -> str:
    """What ``erp-backup verify`` does, for this one catalog entry (not just the newest of its partition):
    checksum, decrypt, decompress, the source's own check, and the dump's sha256. Returns the artifact key."""
    m = entry.manifest
    source = build_source(settings, m.source)
    with fetched(settings, entry) as path, open(path, "rb") as fh:
        reader = plaintext_reader(settings, m, fh)
        source.verify(reader, path.parent, m.facts)
        while reader.read(CHUNK):
            pass
        _check_plain(reader, m)
    return m.artifact_key


def catalog(settings: Settings) -> list[Entry]:
    return catalog_entries(settings)


@dataclass
class Fault:
    """What the proxy does to the next ``count`` requests ``matches`` accepts: answer ``status`` with an S3
    error body, or (status 0) read the request, hang ``hang`` seconds and close the connection unanswered."""

    matches: Callable[[str, str], bool]
    count: int
    status: int = 503
    hang: float = 0.0
    injected: int = 0


@dataclass
class S3Proxy:
    """A threaded HTTP proxy on loopback in front of moto that injects faults; counts what it saw."""

    upstream: str
    port: int = 0
    faults: list[Fault] = field(default_factory=list)
    seen: list[tuple[str, str, str]] = field(default_factory=list)  # (method, path?query, outcome)
    down: bool = False  # every request answered 503 (an outage)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def outcome(self, method: str, target: str) -> tuple[str, Fault | None]:
        with self.lock:
            if self.down:
                self.seen.append((method, target, "503"))
                return "503", Fault(lambda *_: True, 0, 503)
            for fault in self.faults:
                if fault.injected < fault.count and fault.matches(method, target):
                    fault.injected += 1
                    outcome = str(fault.status) if fault.status else "hang"
                    self.seen.append((method, target, outcome))
                    return outcome, fault
            self.seen.append((method, target, "forwarded"))
            return "forwarded", None

    def count(self, outcome: str | None = None, matches: Callable[[str, str], bool] | None = None) -> int:
        with self.lock:
            return sum(1 for m, t, o in self.seen if (outcome is None or o == outcome)
                       and (matches is None or matches(m, t)))


def is_upload_part(method: str, target: str) -> bool:
    return method == "PUT" and "partNumber=" in target and "uploadId=" in target


def is_complete(method: str, target: str) -> bool:
    return method == "POST" and "uploadId=" in target


def is_manifest_put(method: str, target: str) -> bool:
    return method == "PUT" and urlsplit(target).path.endswith(".manifest.json")


_ERRORS = {500: ("InternalError", "We encountered an internal error. Please try again."),
           503: ("SlowDown", "Please reduce your request rate.")}


def _handler(proxy: S3Proxy) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
            pass

        def _relay(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            outcome, fault = proxy.outcome(self.command, self.path)
            if outcome == "hang":
                assert fault is not None
                time.sleep(fault.hang)
                self.close_connection = True
                return
            if outcome != "forwarded":
                code, message = _ERRORS[int(outcome)]
                payload = (f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code>'
                           f"<Message>{message}</Message><RequestId>fault</RequestId></Error>").encode()
                self.send_response(int(outcome))
                self.send_header("Content-Type", "application/xml")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(payload)
                return
            up = urlsplit(proxy.upstream)
            conn = http.client.HTTPConnection(up.hostname or "127.0.0.1", up.port, timeout=300)
            try:
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("expect", "connection")}
                conn.request(self.command, self.path, body=body or None, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                self.send_response(resp.status, resp.reason)
                for k, v in resp.getheaders():
                    if k.lower() not in ("transfer-encoding", "connection", "content-length", "date", "server"):
                        self.send_header(k, v)
                self.send_header("Content-Length", resp.getheader("Content-Length", "0") if self.command == "HEAD"
                                 else str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)
            finally:
                conn.close()

        do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _relay

    return Handler


@contextmanager
def s3_proxy(upstream: str) -> Iterator[S3Proxy]:
    proxy = S3Proxy(upstream)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(proxy))
    server.daemon_threads = True
    proxy.port = int(server.server_address[1])
    thread = threading.Thread(target=server.serve_forever, name="s3-fault-proxy", daemon=True)
    thread.start()
    try:
        yield proxy
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=30)


def pids_alive(pids: list[int]) -> list[int]:
    alive = []
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as fh:
                if fh.read().split(")")[-1].split()[0] != "Z":
                    alive.append(pid)
        except FileNotFoundError:
            pass
    return alive


def kill_leftovers(pids: list[int]) -> None:
    import signal

    for pid in pids_alive(pids):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
