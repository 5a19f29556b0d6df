"""Redis source: a fresh RDB snapshot fetched over the network, checked by redis-check-rdb.

The dump speaks the replication protocol as ``redis-cli --rdb`` does (``REPLCONF rdb-only``,
then ``SYNC``): the server takes a new snapshot and streams it, so the backup host needs no
access to the data directory and never copies a stale ``dump.rdb``. Verification feeds the
decompressed RDB to ``redis-check-rdb`` through a named pipe while it streams (no scratch copy).
Restore loads the snapshot into a given empty instance (a throwaway ``redis-server`` on the
RDB, then DUMP/RESTORE of every key with its TTL, in pipelined batches), or writes it into a
directory with the command that starts a server on it.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import ssl
import subprocess
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any
from urllib.parse import quote, urlparse

import redis
from pydantic import Field
from redis.backoff import NoBackoff
from redis.retry import Retry

from erp_backup_pipeline.core.retention import RetentionPolicy
from erp_backup_pipeline.core.runner import Process, find_program, free_port, redact
from erp_backup_pipeline.core.safe_target import check_target, create_file, private_dir, put_in_place
from erp_backup_pipeline.core.sources.base import WithPassword
from erp_backup_pipeline.core.sources.kind import SourceKind
from erp_backup_pipeline.core.streams import CHUNK, copy_stream
from erp_backup_pipeline.errors import (
    CREDENTIALS,
    ExitStatus,
    RestoreError,
    SourceError,
    SourceUnavailable,
    VerifyError,
)


class RedisSourceSettings(WithPassword):
    _section = "redis"
    enabled: bool = True
    host: str = "localhost"
    port: int = Field(6379, ge=1, le=65535)
    username: str | None = Field(None, description="ACL user (Redis 6+); default: the default user")
    tls: bool = False
    ca_file: Path | None = None
    bin_dir: Path | None = Field(None, description="directory holding redis-check-rdb/redis-server; default: PATH")
    timeout: float = Field(30.0, gt=0)

_KEYS_READ = re.compile(r"\[info\] (\d+) keys read")
_EOF_MARK_LEN = 40
_LOADED = re.compile(r"keys loaded: (\d+), keys expired: (\d+)")


def keys_loaded(log_text: str) -> tuple[int, int] | None:
    """(keys loaded, keys expired while loading) from a redis-server's log, or None when it did not say."""
    m = _LOADED.search(log_text)
    return (int(m.group(1)), int(m.group(2))) if m else None


def _reason(exc: BaseException) -> str:
    text = redact(str(exc)).strip()
    if "WRONGPASS" in text or "invalid username-password" in text or "invalid password" in text:
        return "authentication failed (wrong username or password)"
    if "NOAUTH" in text or "Authentication required" in text or "already authenticated" in text:
        return "authentication required (set sources.redis.password)"
    lines = text.splitlines()
    return lines[0] if lines else type(exc).__name__


class _SyncStream:
    """The RDB payload of a SYNC reply: ``$<len>\\r\\n<bytes>`` (disk) or ``$EOF:<mark>\\r\\n...<mark>``."""

    def __init__(self, sock: socket.socket, where: str) -> None:
        self._sock = sock
        self._file = sock.makefile("rb", buffering=CHUNK)
        self._where = where
        self._remaining: int | None = None
        self._eof_mark: bytes | None = None
        self._tail = b""
        self._done = False
        header = self._file.readline()
        while header in (b"\n", b"\r\n"):  # keep-alive newlines while the server writes its snapshot
            header = self._file.readline()
        if header.startswith(b"-"):
            raise SourceError(f"{where}: SYNC refused: {redact(header[1:].decode('utf-8', 'replace').strip())}")
        if header.startswith(b"$EOF:"):
            self._eof_mark = header[5:5 + _EOF_MARK_LEN]
        elif header.startswith(b"$"):
            self._remaining = int(header[1:].strip())
        else:
            raise SourceError(f"{where}: unexpected SYNC reply {header[:20]!r}")

    def read(self, n: int = -1) -> bytes:
        if self._done:
            return b""
        n = CHUNK if n is None or n < 0 else n
        if self._remaining is not None:
            data = self._file.read(min(n, self._remaining)) if self._remaining else b""
            if not data and self._remaining:
                raise SourceUnavailable(f"{self._where}: connection closed with {self._remaining} bytes of the snapshot missing")
            self._remaining -= len(data)
            self._done = self._remaining == 0
            return data
        # diskless form: the payload ends with the 40-byte mark announced in the header
        assert self._eof_mark is not None
        chunk = self._file.read1(n) if hasattr(self._file, "read1") else self._file.read(n)
        if not chunk:
            raise SourceUnavailable(f"{self._where}: connection closed before the end of the snapshot")
        buf = self._tail + chunk
        if buf.endswith(self._eof_mark):
            self._done = True
            return buf[: -_EOF_MARK_LEN]
        keep = min(len(buf), _EOF_MARK_LEN)
        self._tail = buf[-keep:]
        return buf[:-keep]

    def finish(self) -> dict[str, Any] | None:
        if not self._done:
            raise SourceError(f"{self._where}: the snapshot stream ended early")
        self.abort()
        return None

    def abort(self) -> None:
        try:
            self._file.close()
            self._sock.close()
        except OSError:
            pass


def _refused(exc: BaseException) -> ExitStatus | None:
    """The exit status of an error that is Redis refusing the user or password, else None (the class's own)."""
    return CREDENTIALS if isinstance(exc, redis.AuthenticationError) else None


class RedisSource:
    kind = "redis"
    extension = "rdb"

    def __init__(self, *, host: str, port: int, username: str | None = None, password: str | None = None,
                 tls: bool = False, ca_file: Path | None = None, bin_dir: Path | None = None,
                 timeout: float = 30.0) -> None:
        self.host, self.port = host, port
        self.username = username
        self._password = password
        self.tls = tls
        self.ca_file = ca_file
        self.bin_dir = bin_dir
        self.timeout = timeout

    @property
    def where(self) -> str:
        return f"redis {self.host}:{self.port}"

    def client(self, db: int = 0, host: str | None = None, port: int | None = None,
               password: str | None = None, username: str | None = None) -> redis.Redis:
        return redis.Redis(host=host or self.host, port=port or self.port, db=db,
                           username=username if host else self.username,
                           password=password if host else self._password, ssl=self.tls if not host else False,
                           ssl_ca_certs=str(self.ca_file) if self.ca_file and not host else None,
                           socket_timeout=self.timeout, socket_connect_timeout=10,
                           retry=Retry(NoBackoff(), 0))  # fail fast; retrying is the orchestrator's job

    def prepare(self, workdir: Path) -> dict[str, Any]:
        find_program("redis-check-rdb", self.bin_dir)
        try:
            r = self.client()
            info = r.info()
        except redis.RedisError as exc:
            # down, or still loading its data, is a pause away; a refused password (a ConnectionError too) is not
            away = isinstance(exc, (redis.ConnectionError, redis.TimeoutError)) and \
                not isinstance(exc, redis.AuthenticationError)
            raise (SourceUnavailable(f"{self.where}: cannot connect: {_reason(exc)}") if away else
                   SourceError(f"{self.where}: cannot connect: {_reason(exc)}", status=_refused(exc))) from None
        keyspace = {k: int(v["keys"]) for k, v in info.items() if re.fullmatch(r"db\d+", k) and isinstance(v, dict)}
        return {"engine": f"Redis {info.get('redis_version', '?')}", "keyspace": keyspace,
                "keys": sum(keyspace.values()), "aof_enabled": bool(info.get("aof_enabled"))}

    def _connect(self) -> socket.socket:
        try:
            sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
            if self.tls:
                ctx = ssl.create_default_context(cafile=str(self.ca_file) if self.ca_file else None)
                sock = ctx.wrap_socket(sock, server_hostname=self.host)
        except OSError as exc:
            raise SourceUnavailable(f"{self.where}: cannot connect: {exc.strerror or exc}") from None
        return sock

    def _command(self, sock: socket.socket, *args: str) -> bytes:
        payload = f"*{len(args)}\r\n".encode() + b"".join(
            f"${len(a.encode())}\r\n".encode() + a.encode() + b"\r\n" for a in args)
        sock.sendall(payload)
        line = b""
        while not line.endswith(b"\r\n"):
            chunk = sock.recv(1)
            if not chunk:
                raise SourceUnavailable(f"{self.where}: connection closed during the handshake")
            line += chunk
        return line.strip()

    def open_dump(self, workdir: Path, facts: dict[str, Any]) -> _SyncStream:
        sock = self._connect()
        try:
            if self._password:
                args = ["AUTH", self.username, self._password] if self.username else ["AUTH", self._password]
                reply = self._command(sock, *args)
                if not reply.startswith(b"+"):
                    raise SourceError(f"{self.where}: authentication failed: "
                                      f"{redact(reply[1:].decode('utf-8', 'replace'))}", status=CREDENTIALS)
            # diskless: the snapshot streams while the server's fork produces it, and the server's own
            # dump.rdb is neither written nor needed (it waits repl-diskless-sync-delay first, 5 s by default)
            self._command(sock, "REPLCONF", "capa", "eof")
            self._command(sock, "REPLCONF", "rdb-only", "1")  # Redis 7: no replication stream after the RDB
            sock.sendall(b"SYNC\r\n")
            sock.settimeout(None if self.timeout is None else max(self.timeout, 300))
            return _SyncStream(sock, self.where)
        except BaseException:
            sock.close()
            raise

    def verify(self, reader: IO[bytes] | Any, workdir: Path, facts: dict[str, Any]) -> dict[str, Any]:
        """redis-check-rdb reads the snapshot from a named pipe while it streams: no scratch copy."""
        check = find_program("redis-check-rdb", self.bin_dir)
        fifo = Path(tempfile.mkdtemp(prefix="verify-", dir=workdir)) / "snapshot.rdb"
        os.mkfifo(fifo, 0o600)
        try:
            with tempfile.TemporaryFile(dir=workdir) as report:
                proc = Process([check, str(fifo)], stdout=report)
                try:
                    with open(fifo, "wb") as fh:
                        copy_stream(reader, fh, CHUNK)
                except BrokenPipeError:
                    pass  # the checker stopped early: its report says why; the caller drains the rest
                rc = proc.wait(check=False)
                report.seek(0)
                out = report.read().decode("utf-8", "replace") + proc.stderr_text()
        finally:
            shutil.rmtree(fifo.parent, ignore_errors=True)
        if rc != 0 or "RDB looks OK" not in out:
            last = [ln for ln in out.splitlines() if ln.strip()][-1:] or ["no output"]
            raise VerifyError(f"redis: redis-check-rdb rejects the snapshot: {last[0].strip()[:200]}")
        keys = _KEYS_READ.search(out)
        return {"method": "redis-check-rdb", "keys": int(keys.group(1)) if keys else 0}

    def restore_plan(self, target: str, force: bool, facts: dict[str, Any]) -> list[str]:
        if target.startswith(("redis://", "rediss://")):
            shown = _safe_url(target)
            steps = [f"start a throwaway redis-server on 127.0.0.1 with the snapshot, then DUMP/RESTORE every key "
                     f"(with its TTL) into {shown}"]
            if force:
                steps.insert(0, f"if {shown} is not empty: save its current data aside first (SYNC to the staging dir)")
            else:
                steps.insert(0, f"REFUSE if {shown} holds any key (use --force)")
            return steps
        return [f"write the snapshot to {Path(target) / 'dump.rdb'} (refuse an existing one without --force)",
                f"start a server on it: redis-server --dir {target} --dbfilename dump.rdb --appendonly no "
                "--port <PORT> (then CONFIG SET appendonly yes if you use AOF)"]

    def restore(self, reader: IO[bytes] | Any, target: str, force: bool, workdir: Path,
                fetch: Any = None, facts: dict[str, Any] | None = None,
                attachments: dict[str, bytes] | None = None) -> dict[str, Any]:
        if target.startswith(("redis://", "rediss://")):
            return self._restore_into(reader, target, force, Path(workdir))
        directory = check_target(target, force, inside=True)
        dest = directory / "dump.rdb"
        if os.path.lexists(dest) and not force:
            raise RestoreError(f"{dest} exists; use --force to keep it aside and replace it")
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        kept = None
        with private_dir(directory, ".dump.rdb.restore-") as tmp:
            with create_file(tmp / "dump.rdb") as fh:
                copy_stream(reader, fh, CHUNK)
            if os.path.lexists(dest):
                kept = dest.with_name(f"dump.rdb.before-restore-{datetime.now(UTC):%Y%m%dT%H%M%SZ}")
                dest.rename(kept)
            put_in_place(tmp / "dump.rdb", dest)
        return {"target": str(dest), "kept_aside": str(kept) if kept else None,
                "start": f"redis-server --dir {directory} --dbfilename dump.rdb --appendonly no --port <PORT>"}

    def drill(self, restore: Callable[[str], dict[str, Any]], workdir: Path, facts: dict[str, Any],
              verify: dict[str, Any]) -> dict[str, Any]:
        """Restore into a directory, start a throwaway redis-server on it, count what it loaded.

        Keys whose TTL ran out since the backup are dropped by Redis while loading; its log line
        ``keys loaded: N, keys expired: M`` accounts for them, so loaded + expired must equal the keys
        redis-check-rdb counted in the artifact when it was written.
        """
        directory = Path(workdir) / "redis"
        restore(str(directory))
        log = directory / "redis.log"
        server = _TempServer(directory, find_program("redis-server", self.bin_dir), logfile=log)
        try:
            keyspace = {name: int(info["keys"]) for name, info in server.client.info("keyspace").items()
                        if isinstance(info, dict)}
        finally:
            server.stop()
        loaded = keys_loaded(log.read_text(errors="replace"))
        if loaded is None:
            raise VerifyError("redis: the throwaway redis-server did not report how many keys it loaded")
        n_loaded, n_expired = loaded
        if n_loaded != sum(keyspace.values()):
            raise VerifyError(f"redis: server reports {n_loaded} keys loaded but holds {sum(keyspace.values())}")
        expected = verify.get("keys")
        if expected is not None and n_loaded + n_expired != expected:
            raise VerifyError(f"redis: restored {n_loaded} keys (+{n_expired} expired since), the artifact held {expected}")
        return {"keys": n_loaded, "expired_since_backup": n_expired, "databases": len(keyspace),
                "compared": "keys loaded + expired = keys in the artifact"}

    def _restore_into(self, reader: IO[bytes] | Any, url: str, force: bool, workdir: Path) -> dict[str, Any]:
        target = redis.Redis.from_url(url, socket_timeout=self.timeout)
        shown = _safe_url(url)
        try:
            keyspace = {k: v for k, v in target.info("keyspace").items() if isinstance(v, dict)}
        except redis.RedisError as exc:
            raise RestoreError(f"restore target {shown}: cannot connect: {_reason(exc)}", status=_refused(exc)) from None
        kept = None
        if keyspace:
            if not force:
                raise RestoreError(f"restore target {shown} is not empty ({sum(v['keys'] for v in keyspace.values())} keys); "
                                   "use --force to save its data aside and load the snapshot")
            kept = self._save_aside(url, workdir)
        rdb_dir = Path(tempfile.mkdtemp(prefix="redis-restore-", dir=workdir))
        with create_file(rdb_dir / "dump.rdb") as fh:
            copy_stream(reader, fh, CHUNK)
        server = _TempServer(rdb_dir, find_program("redis-server", self.bin_dir))
        try:
            copied = _copy_all(server.client, target)
        finally:
            server.stop()
            shutil.rmtree(rdb_dir, ignore_errors=True)
        return {"target": shown, "kept_aside": kept, "keys": copied}

    def _save_aside(self, url: str, workdir: Path) -> str:
        """Fetch the target's current data as an RDB into the staging dir (workdir is a scratch dir in it),
        before it is overwritten."""
        parsed = urlparse(url)
        aside = RedisSource(host=parsed.hostname or "localhost", port=parsed.port or 6379,
                            username=parsed.username or None, password=parsed.password or None,
                            tls=parsed.scheme == "rediss", bin_dir=self.bin_dir)
        path = Path(workdir).parent / f"redis-before-restore-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.rdb"
        stream = aside.open_dump(workdir, {})
        with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as fh:
            copy_stream(stream, fh, CHUNK)
        stream.finish()
        return str(path)


def target_with_password(url: str, password: str | None) -> str:
    """The restore target's URL with the password the operator gave outside argv (environment or a 0600 file);
    RestoreError when the URL itself carries one: argv is readable by every local user (/proc/PID/cmdline) and
    lands in shell history."""
    parsed = urlparse(url)
    if parsed.password:
        user = f"{parsed.username}@" if parsed.username else ""
        raise RestoreError(f"restore target {parsed.scheme}://{user}***@{_safe_url(url).split('://', 1)[1]} carries its "
                           "password in the URL, which every local user can read in the process list; give it in "
                           "ERP_RESTORE_PASSWORD or in a 0600 file with --password-file, and the URL without it")
    if not password:
        return url
    netloc = f"{quote(parsed.username or '', safe='')}:{quote(password, safe='')}@{parsed.hostname or ''}"
    if parsed.port:
        netloc += f":{parsed.port}"
    return parsed._replace(netloc=netloc).geturl()


def _safe_url(url: str) -> str:
    parsed = urlparse(url)
    netloc = parsed.hostname or ""
    if parsed.port:
        netloc += f":{parsed.port}"
    return f"{parsed.scheme}://{netloc}{parsed.path}"


class _TempServer:
    """A throwaway redis-server on loopback that loads ``dump.rdb`` from ``directory``; stopped by PID."""

    def __init__(self, directory: Path, binary: str, logfile: Path | None = None) -> None:
        port = free_port()
        log = ["--logfile", str(logfile)] if logfile is not None else []
        self.proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(directory),
                                      "--dbfilename", "dump.rdb", "--save", "", "--appendonly", "no",
                                      "--protected-mode", "yes", *log], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=60)
        deadline = time.monotonic() + 60
        while True:
            try:
                if self.client.info("persistence").get("loading", 0) == 0:
                    return
            except redis.exceptions.BusyLoadingError:
                pass
            except redis.ConnectionError:
                if self.proc.poll() is not None:
                    raise RestoreError("redis-server could not load the snapshot") from None
            if time.monotonic() > deadline:
                self.stop()
                raise RestoreError("redis-server did not load the snapshot within 60 s")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _copy_all(source: redis.Redis, target: redis.Redis, batch: int = 1000) -> int:
    """DUMP every key of every database with its TTL from source and RESTORE it into target."""
    copied = 0
    for name, info in source.info("keyspace").items():
        if not isinstance(info, dict):
            continue
        db = int(name[2:])
        src = source.connection_pool.connection_kwargs
        s = redis.Redis(host=src["host"], port=src["port"], db=db, socket_timeout=60)
        t = redis.Redis(connection_pool=redis.ConnectionPool(**{**target.connection_pool.connection_kwargs, "db": db}))
        keys: list[bytes] = []
        for key in s.scan_iter(count=batch):
            keys.append(key)
            if len(keys) >= batch:
                copied += _copy_batch(s, t, keys)
                keys = []
        if keys:
            copied += _copy_batch(s, t, keys)
    return copied


def _copy_batch(source: redis.Redis, target: redis.Redis, keys: list[bytes]) -> int:
    pipe = source.pipeline(transaction=False)
    for key in keys:
        pipe.dump(key)
        pipe.pttl(key)
    values = pipe.execute()
    out = target.pipeline(transaction=False)
    count = 0
    for i, key in enumerate(keys):
        payload, ttl = values[2 * i], values[2 * i + 1]
        if payload is None:  # expired between SCAN and DUMP
            continue
        out.restore(key, max(int(ttl), 0) if ttl and ttl > 0 else 0, payload, replace=True)
        count += 1
    out.execute()
    return count


def _build(cfg: Any, state_dir: Path) -> RedisSource:
    return RedisSource(host=cfg.host, port=cfg.port, username=cfg.username, password=cfg.secret_password(),
                       tls=cfg.tls, ca_file=cfg.ca_file, bin_dir=cfg.bin_dir, timeout=cfg.timeout)


KIND = SourceKind(
    name="redis_snapshot", key="redis", rank=4, settings=RedisSourceSettings,
    extension=RedisSource.extension, cron="0 3 * * *", build=_build,
    # §2 "Retention: 7 Tage"; the script's find -mtime +7
    policy=RetentionPolicy(keep_daily=7, keep_within=timedelta(days=7)),
    engine="redis", upstream="erp_redis", upstream_description="The ERP's Redis (sessions and cache).",
    description="Nightly RDB snapshot fetched over the replication protocol (fresh, never a stale dump.rdb), "
                "zstd-compressed, checked by redis-check-rdb, age-encrypted.",
    metric_label="redis", what="Redis (sessions, cache)",
    restore_lines=("mkdir -m 700 DIR && age -d -i KEY ARTIFACT | zstd -d -o DIR/dump.rdb && redis-check-rdb DIR/dump.rdb",
                   "redis-server --dir DIR --dbfilename dump.rdb --port 6380"),
    emptiness=None, holds=lambda facts: "Redis holds",
    recovery_target=lambda cfg, root, date, database: (
        str(root / "redis"), f"{root / 'redis' / 'dump.rdb'}, a redis-server started on it"))
