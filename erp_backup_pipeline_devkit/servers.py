"""Throwaway servers for the tests and the benchmark: a PostgreSQL cluster, moto's S3 server and a redis-server.

Each runs from the installed binaries on loopback, on its own free port, and is stopped by
PID. PostgreSQL refuses to run as root, so as root the cluster runs as the ``postgres`` user
(``runuser``), with its data, socket and log directories owned by that user.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PG_SUPERUSER = "postgres"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM by PID, SIGKILL after 10 s."""
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()


def pg_bindir() -> Path:
    out = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True, check=True).stdout.strip()
    return Path(out)


def _as_pg_user(argv: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else argv


@dataclass
class PostgresServer:
    base: Path
    port: int
    password: str
    pid: int = 0
    extra_conf: str = ""  # appended to postgresql.conf (archiving settings, say)

    @property
    def data(self) -> Path:
        return self.base / "data"

    @property
    def sockdir(self) -> Path:
        return self.base / "sock"

    def dsn(self, dbname: str = "postgres", user: str = PG_SUPERUSER, password: str | None = None) -> str:
        return (f"host=127.0.0.1 port={self.port} user={user} dbname={dbname} "
                f"password={password if password is not None else self.password}")

    def start(self) -> None:
        bindir = pg_bindir()
        self.base.mkdir(parents=True, exist_ok=True)
        os.chmod(self.base, 0o755)
        for d in (self.data, self.sockdir):
            d.mkdir(mode=0o700, exist_ok=True)
        pwfile = self.base / "pwfile"
        pwfile.write_text(self.password + "\n")
        if os.geteuid() == 0:
            pg = pwd.getpwnam("postgres")
            for p in (self.base, self.data, self.sockdir, pwfile):
                os.chown(p, pg.pw_uid, pg.pw_gid)
        subprocess.run(_as_pg_user([str(bindir / "initdb"), "-D", str(self.data), "-U", PG_SUPERUSER,
                                    "--auth-local=trust", "--auth-host=scram-sha-256", f"--pwfile={pwfile}",
                                    "-E", "UTF8", "--locale=C.UTF-8"]),
                       check=True, capture_output=True)
        pwfile.unlink()
        with open(self.data / "postgresql.conf", "a") as conf:
            conf.write(f"\nport = {self.port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{self.sockdir}'\n"
                       "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\nshared_buffers = 128MB\n"
                       "max_wal_size = 2GB\n" + self.extra_conf)
        subprocess.run(_as_pg_user([str(bindir / "pg_ctl"), "-D", str(self.data), "-l", str(self.base / "server.log"),
                                    "-w", "-t", "60", "start"]), check=True, capture_output=True)
        self.pid = int((self.data / "postmaster.pid").read_text().split()[0])

    def stop(self) -> None:
        if self.pid:
            try:
                os.kill(self.pid, signal.SIGINT)  # fast shutdown
                for _ in range(300):
                    os.kill(self.pid, 0)
                    time.sleep(0.1)
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.pid = 0

    def restart(self) -> None:
        self.stop()
        subprocess.run(_as_pg_user([str(pg_bindir() / "pg_ctl"), "-D", str(self.data), "-l",
                                    str(self.base / "server.log"), "-w", "-t", "60", "start"]),
                       check=True, capture_output=True)
        self.pid = int((self.data / "postmaster.pid").read_text().split()[0])


def start_postgres(password: str = "pg-super-secret-1", extra_conf: str = "", base: Path | None = None) -> PostgresServer:
    base = base or Path(tempfile.mkdtemp(prefix="erp-backup-pg-"))
    server = PostgresServer(base=base, port=free_port(), password=password, extra_conf=extra_conf)
    try:
        server.start()
    except BaseException:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)
        raise
    return server


@dataclass
class MotoServer:
    port: int
    proc: subprocess.Popen[bytes]

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        stop_process(self.proc)


def start_moto(unauthenticated_requests: int | None = None) -> MotoServer:
    """moto's S3 server in its own process on loopback. By default it accepts any credential; with
    ``unauthenticated_requests`` = N it accepts the first N requests unsigned, then checks every signature
    against the access keys made through its IAM API (and their policies), as S3 does."""
    port = free_port()
    exe = Path(sys.executable).parent / "moto_server"
    env = dict(os.environ)
    if unauthenticated_requests is not None:
        env["INITIAL_NO_AUTH_ACTION_COUNT"] = str(unauthenticated_requests)
    proc = subprocess.Popen([str(exe), "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True, env=env)
    server = MotoServer(port, proc)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"{server.endpoint}/moto-api/", timeout=1)
            return server
        except Exception:
            if proc.poll() is not None:
                raise RuntimeError("moto_server exited at start") from None
            time.sleep(0.1)
    server.stop()
    raise RuntimeError("moto_server did not answer within 30 s")


@dataclass
class RedisServer:
    base: Path
    port: int
    password: str | None
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def client(self, db: int = 0) -> Any:
        import redis

        return redis.Redis(host="127.0.0.1", port=self.port, db=db, password=self.password)

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)


def start_redis(password: str | None = None, base: Path | None = None, *, appendonly: bool = False) -> RedisServer:
    """A redis-server on a free loopback port, data dir in a temp dir (SYNC writes its snapshot there)."""
    import redis

    base = base or Path(tempfile.mkdtemp(prefix="erp-backup-redis-"))
    base.mkdir(parents=True, exist_ok=True)
    server = RedisServer(base=base, port=free_port(), password=password)
    argv = ["redis-server", "--port", str(server.port), "--bind", "127.0.0.1", "--dir", str(base),
            "--save", "", "--appendonly", "yes" if appendonly else "no", "--logfile", str(base / "redis.log"),
            "--repl-diskless-sync-delay", "0"]  # production keeps its 5 s; tests need not wait
    if password:
        argv += ["--requirepass", password]
    server.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            if server.client().ping():
                return server
        except redis.RedisError:
            if server.proc.poll() is not None:
                raise RuntimeError("redis-server exited at start") from None
            time.sleep(0.05)
    server.stop()
    raise RuntimeError("redis-server did not answer within 20 s")
