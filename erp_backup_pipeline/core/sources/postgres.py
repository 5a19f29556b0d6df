"""PostgreSQL logical dump: ``pg_dump -Fc -Z0`` streamed, verified by ``pg_restore --list``.

pg_dump's own compression is off (our compressor is faster and better); its stdout streams
into the compressor, so the raw dump never touches disk. The password travels in
PGPASSWORD, never on a command line. Verification feeds the decompressed artifact to
``pg_restore --list`` and checks that every table seen before the dump has its data entry.
Restore creates a NEW database and runs ``pg_restore --exit-on-error`` into it.
"""

from __future__ import annotations

import contextlib
import re
import secrets
import tempfile
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import psycopg
from psycopg import sql

from erp_backup_pipeline.core.runner import Process, find_program, redact, run
from erp_backup_pipeline.core.sources.base import compare_counts
from erp_backup_pipeline.core.streams import CHUNK
from erp_backup_pipeline.errors import RestoreError, SourceError, VerifyError

_TABLE_DATA = re.compile(r"^\d+; \d+ \d+ TABLE DATA (\S+) (\S+) ")


_TABLES = ("SELECT n.nspname, c.relname, quote_ident(n.nspname) || '.' || quote_ident(c.relname)"
           " FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
           " WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema')"
           " AND n.nspname NOT LIKE 'pg_toast%' ORDER BY 1, 2")


def count_rows(conn: psycopg.Connection[Any]) -> dict[str, int]:
    """Exact rows per table (``schema.table``, quoted as the manifest names them), in the connection's snapshot."""
    counts = {}
    for nsp, rel, name in conn.execute(_TABLES).fetchall():
        query = sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(nsp, rel))
        counts[name] = int(conn.execute(query).fetchone()[0])  # type: ignore[index]
    return counts


class _PgDumpStream:
    """pg_dump's stdout. With a snapshot connection, the rows are counted in the very snapshot pg_dump
    dumps (``pg_export_snapshot`` + ``pg_dump --snapshot``), in a thread while it runs; the exporting
    transaction stays open until ``finish``."""

    def __init__(self, proc: Process, snapshot_conn: psycopg.Connection[Any] | None = None) -> None:
        self._proc = proc
        self._conn = snapshot_conn
        self._counts: dict[str, int] = {}
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None
        if snapshot_conn is not None:
            self._thread = threading.Thread(target=self._count, name="pg-row-counts", daemon=True)
            self._thread.start()

    def _count(self) -> None:
        try:
            assert self._conn is not None
            self._counts = count_rows(self._conn)
        except BaseException as exc:  # reported by finish()
            self._error = exc

    def read(self, n: int = -1) -> bytes:
        return self._proc.stdout.read(n if n and n > 0 else CHUNK)

    def finish(self) -> dict[str, Any] | None:
        self._proc.stdout.close()
        try:
            self._proc.wait()
        finally:
            self._close()
        if self._error is not None:
            raise SourceError(f"postgres: counting rows in the dump's snapshot failed: {_pg_reason(self._error)}")
        return {"row_counts": self._counts} if self._thread is not None else None

    def _close(self) -> None:
        if self._thread is not None:
            self._thread.join()
        if self._conn is not None:
            with contextlib.suppress(psycopg.Error):
                self._conn.close()
            self._conn = None

    def abort(self) -> None:
        self._proc.kill()
        if self._conn is not None:
            with contextlib.suppress(psycopg.Error):
                self._conn.cancel()
        self._close()


class PostgresSource:
    kind = "postgres"
    extension = "pgdump"

    def __init__(self, *, host: str, port: int, user: str, dbname: str, password: str | None = None,
                 sslmode: str = "prefer", bin_dir: Path | None = None, connect_timeout: int = 10,
                 exact_row_counts: bool = True) -> None:
        self.host, self.port, self.user, self.dbname = host, port, user, dbname
        self._password = password
        self.sslmode = sslmode
        self.bin_dir = bin_dir
        self.connect_timeout = connect_timeout
        self.exact_row_counts = exact_row_counts

    @property
    def where(self) -> str:
        return f"postgres {self.user}@{self.host}:{self.port}/{self.dbname}"

    def env(self) -> dict[str, str]:
        env = {"PGSSLMODE": self.sslmode, "PGCONNECT_TIMEOUT": str(self.connect_timeout), "PGAPPNAME": "erp-backup"}
        if self._password:
            env["PGPASSWORD"] = self._password
        return env

    def _conn_args(self, dbname: str | None = None) -> list[str]:
        return ["--host", self.host, "--port", str(self.port), "--username", self.user,
                "--dbname", dbname or self.dbname, "--no-password"]

    def connect(self, dbname: str | None = None, autocommit: bool = False) -> psycopg.Connection[Any]:
        try:
            return psycopg.connect(host=self.host, port=self.port, user=self.user, dbname=dbname or self.dbname,
                                   password=self._password, sslmode=self.sslmode,
                                   connect_timeout=self.connect_timeout, autocommit=autocommit,
                                   application_name="erp-backup")
        except psycopg.Error as exc:
            raise SourceError(f"{self.where}: cannot connect: {_pg_reason(exc)}") from None

    def prepare(self, workdir: Path) -> dict[str, Any]:
        pg_dump = find_program("pg_dump", self.bin_dir)
        find_program("pg_restore", self.bin_dir)
        with self.connect() as conn:
            version = conn.execute("SHOW server_version").fetchone()[0]  # type: ignore[index]
            rows = conn.execute(
                "SELECT quote_ident(n.nspname) || '.' || quote_ident(c.relname),"
                " greatest(c.reltuples::bigint, coalesce(s.n_live_tup, 0))"
                " FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
                " LEFT JOIN pg_stat_user_tables s ON s.relid = c.oid"
                " WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema')"
                " AND n.nspname NOT LIKE 'pg_toast%' ORDER BY 1").fetchall()
        tool_version = run([pg_dump, "--version"], timeout=30).stdout.decode().strip()
        return {"engine": f"PostgreSQL {version}", "pg_dump": tool_version,
                "row_estimates": {name: int(est) for name, est in rows}, "database": self.dbname}

    def open_dump(self, workdir: Path, facts: dict[str, Any]) -> _PgDumpStream:
        argv = [find_program("pg_dump", self.bin_dir), "--format=custom", "--compress=0"] + self._conn_args()
        if not self.exact_row_counts:
            return _PgDumpStream(Process(argv, env=self.env(), stdout=-1))
        conn = self.connect(autocommit=True)
        try:
            conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            snapshot = conn.execute("SELECT pg_export_snapshot()").fetchone()[0]  # type: ignore[index]
            proc = Process(argv + [f"--snapshot={snapshot}"], env=self.env(), stdout=-1)
        except BaseException:
            conn.close()
            raise
        return _PgDumpStream(proc, conn)

    def verify(self, reader: IO[bytes] | Any, workdir: Path, facts: dict[str, Any]) -> dict[str, Any]:
        argv = [find_program("pg_restore", self.bin_dir), "--list"]
        with tempfile.TemporaryFile(dir=workdir) as listing:
            proc = Process(argv, stdin=-1, stdout=listing)
            try:
                while chunk := reader.read(CHUNK):
                    proc.stdin.write(chunk)
            except BrokenPipeError:
                pass  # pg_restore --list stops after the table of contents; the caller drains the rest
            finally:
                try:
                    proc.stdin.close()
                except BrokenPipeError:
                    pass
            if proc.wait(check=False) != 0:
                raise VerifyError(f"postgres: pg_restore --list rejects the artifact: {proc.stderr_text().strip()[:200]}")
            listing.seek(0)
            lines = listing.read().decode("utf-8", "replace").splitlines()
        data = {f"{m.group(1)}.{m.group(2)}" for ln in lines if (m := _TABLE_DATA.match(ln))}
        entries = [ln for ln in lines if ln and not ln.startswith(";")]
        expected = set(facts.get("row_estimates", {}))
        missing = sorted(expected - data)
        if missing:
            raise VerifyError(f"postgres: dump has no data for {len(missing)} table(s): {', '.join(missing[:5])}")
        return {"method": "pg_restore --list", "toc_entries": len(entries), "tables_with_data": len(data)}

    def _db_exists(self, conn: psycopg.Connection[Any], name: str) -> bool:
        return conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is not None

    def restore_plan(self, target: str, force: bool, facts: dict[str, Any]) -> list[str]:
        with self.connect(dbname="postgres") as conn:
            exists = self._db_exists(conn, target)
        steps = []
        if exists:
            steps.append(f"rename existing database {target} to {target}_before_restore_<timestamp>" if force
                         else f"REFUSE: database {target} exists (use --force to keep it aside and replace it)")
        steps += [f"CREATE DATABASE {target} on {self.host}:{self.port}",
                  f"pg_restore --exit-on-error --no-owner --dbname={target} (stream: decrypt | decompress)"]
        return steps

    def restore(self, reader: IO[bytes] | Any, target: str, force: bool, workdir: Path,
                fetch: Any = None) -> dict[str, Any]:
        kept = None
        with self.connect(dbname="postgres", autocommit=True) as conn:
            if self._db_exists(conn, target):
                if not force:
                    raise RestoreError(f"database {target} exists; use --force to keep it aside and replace it")
                kept = f"{target}_before_restore_{datetime.now(UTC):%Y%m%d%H%M%S}"
                conn.execute(sql.SQL("ALTER DATABASE {} RENAME TO {}").format(sql.Identifier(target), sql.Identifier(kept)))
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(target)))
        argv = [find_program("pg_restore", self.bin_dir), "--exit-on-error", "--no-owner"] + self._conn_args(target)
        proc = Process(argv, env=self.env(), stdin=-1, stdout=-3)
        try:
            try:
                while chunk := reader.read(CHUNK):
                    proc.stdin.write(chunk)
            except BrokenPipeError:
                pass
            proc.stdin.close()
            proc.wait()
        except BaseException:
            proc.kill()
            with self.connect(dbname="postgres", autocommit=True) as conn:
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(target)))
                if kept:
                    conn.execute(sql.SQL("ALTER DATABASE {} RENAME TO {}").format(sql.Identifier(kept), sql.Identifier(target)))
            raise
        return {"target": target, "kept_aside": kept}

    def drill(self, restore: Callable[[str], dict[str, Any]], workdir: Path, facts: dict[str, Any],
              verify: dict[str, Any]) -> dict[str, Any]:
        """Restore into a new database on the configured server, count its rows, drop it."""
        target = f"erp_backup_drill_{secrets.token_hex(4)}"
        try:
            restore(target)
            with self.connect(dbname=target) as conn:
                counts = count_rows(conn)
        finally:
            with self.connect(dbname="postgres", autocommit=True) as conn:
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(target)))
        expected = facts.get("row_counts")
        if expected is None:  # exact_row_counts off: the tables at least must all be there
            missing = sorted(set(facts.get("row_estimates", {})) - set(counts))
            if missing:
                raise VerifyError(f"postgres: restored database lacks {len(missing)} table(s): {', '.join(missing[:3])}")
        result = compare_counts("postgres", expected, counts)
        return {**result, "database": target, "dropped": True}


def _pg_reason(exc: BaseException) -> str:
    text = redact(str(exc)).strip()
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    for ln in lines:
        if "FATAL" in ln or "failed" in ln:
            return ln.split("FATAL:", 1)[-1].strip()
    return lines[0] if lines else type(exc).__name__


