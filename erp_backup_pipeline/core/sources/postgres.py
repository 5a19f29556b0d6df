"""PostgreSQL logical dump: ``pg_dump -Fc -Z0`` streamed, verified by ``pg_restore --list``, with its globals.

pg_dump's own compression is off (our compressor is faster and better); its stdout streams
into the compressor, so the raw dump never touches disk. The password travels in
PGPASSWORD, never on a command line; database names reach libpq as quoted conninfo values,
never as a string it could expand. Verification feeds the decompressed artifact to
``pg_restore --list`` and checks that every table seen before the dump has its data entry,
matched by table OID (the listing prints names unquoted). Each capture also records what the
database needs from its cluster (``postgres_globals``: its roles, their memberships and settings,
its own properties) as two attachments. Restore creates a NEW database the source's way, with
the missing roles, and runs ``pg_restore --exit-on-error`` into it keeping owners and grants
(``postgres_restore``; ``--no-owner`` to own everything as the restoring role).
"""

from __future__ import annotations

import contextlib
import json
import re
import secrets
import tempfile
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any, Literal

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from pydantic import Field

from erp_backup_pipeline.core.attachments import Attachment
from erp_backup_pipeline.core.retention import RetentionPolicy
from erp_backup_pipeline.core.runner import Process, find_program, redact, run
from erp_backup_pipeline.core.sources import postgres_globals as cluster
from erp_backup_pipeline.core.sources import postgres_restore as onto
from erp_backup_pipeline.core.sources.base import ALLOW_EMPTY, WithPassword, compare_counts
from erp_backup_pipeline.core.sources.kind import SourceKind
from erp_backup_pipeline.core.streams import CHUNK
from erp_backup_pipeline.errors import (
    CREDENTIALS,
    ConfigError,
    RestoreError,
    SourceError,
    SourceUnavailable,
    ToolError,
    VerifyError,
)


class PostgresSourceSettings(WithPassword):
    _section = "postgres"
    enabled: bool = True
    host: str = "localhost"
    port: int = Field(5432, ge=1, le=65535)
    user: str = "erp_user"
    dbname: str = "erp_steinmetz"
    sslmode: Literal["disable", "allow", "prefer", "require", "verify-ca", "verify-full"] = "prefer"
    bin_dir: Path | None = Field(None, description="directory holding pg_dump/pg_restore; default: PATH")
    connect_timeout: int = Field(10, ge=1)
    exact_row_counts: bool = Field(True, description="count every table's rows in the dump's own snapshot (restore drills "
                                                     "compare against them); off: planner estimates only")
    role_passwords: bool = Field(False, description="record the roles' password hashes with the globals (needs a "
                                                    "superuser: they are in pg_authid); off: roles without passwords")
    owner: str = "team:erp-ops"
    allow_empty: bool = Field(False, description=ALLOW_EMPTY)


# What libpq, pg_dump and the server say when the server is down, restarting or not ready yet: a pause can
# cure these (SourceUnavailable, retried); anything else (a password, a database that does not exist) cannot.
_NOT_READY = ("the database system is starting up", "the database system is shutting down",
              "the database system is in recovery mode", "the database system is not yet accepting connections",
              "terminating connection due to administrator command", "server closed the connection unexpectedly",
              "connection refused", "could not connect to server", "no connection to the server", "timeout expired",
              "connection timed out", "could not receive data from server")


_REFUSED = re.compile(r"password authentication failed|no password supplied|authentication failed|"
                      r"pg_hba\.conf rejects connection|^role \".*\" does not exist")


def _failure(where: str, what: str, text: str) -> SourceError:
    """``where: what: text`` as SourceUnavailable when the server was away for a moment, else SourceError (with the
    exit status of a wrong credential when it refused the user or password)."""
    low = text.lower()
    if any(p in low for p in _NOT_READY):
        return SourceUnavailable(f"{where}: {what}: {text}")
    return SourceError(f"{where}: {what}: {text}", status=CREDENTIALS if _REFUSED.search(low) else None)


_TABLE_DATA = re.compile(r"^\d+; \d+ (?P<oid>\d+) TABLE DATA ")
_LEGACY_TABLE_DATA = re.compile(r"^\d+; \d+ \d+ TABLE DATA (\S+) (\S+) ")
ATTACHMENT_FORMATS = {"globals": "sql", "database": "json"}
_SERVER_KEYS = frozenset({"host", "hostaddr", "port", "user", "sslmode"})


def count_rows(conn: psycopg.Connection[Any]) -> dict[str, int]:
    """Exact rows per table (``schema.table``, quoted as the manifest names them), in the connection's snapshot."""
    return dict(cluster.snapshot_facts(conn)["row_counts"])


class _PgDumpStream:
    """pg_dump's stdout. With a snapshot connection, the rows are counted in the very snapshot pg_dump
    dumps (``pg_export_snapshot`` + ``pg_dump --snapshot``), in a thread while it runs; the exporting
    transaction stays open until ``finish``."""

    def __init__(self, proc: Process, where: str, snapshot_conn: psycopg.Connection[Any] | None = None) -> None:
        self._proc = proc
        self._where = where
        self._conn = snapshot_conn
        self._counts: dict[str, Any] = {}
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None
        if snapshot_conn is not None:
            self._thread = threading.Thread(target=self._count, name="pg-row-counts", daemon=True)
            self._thread.start()

    def _count(self) -> None:
        try:
            assert self._conn is not None
            self._counts = cluster.snapshot_facts(self._conn)
        except BaseException as exc:  # reported by finish()
            self._error = exc

    def read(self, n: int = -1) -> bytes:
        return self._proc.stdout.read(n if n and n > 0 else CHUNK)

    def finish(self) -> dict[str, Any] | None:
        self._proc.stdout.close()
        try:
            self._proc.wait()
        except ToolError as exc:
            raise _failure(self._where, "pg_dump failed", str(exc)) from None
        finally:
            self._close()
        if self._error is not None:
            raise _failure(self._where, "counting rows in the dump's snapshot failed", _pg_reason(self._error))
        return self._counts if self._thread is not None else None

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
    attachment_formats = ATTACHMENT_FORMATS

    def __init__(self, *, host: str, port: int, user: str, dbname: str, password: str | None = None,
                 sslmode: str = "prefer", bin_dir: Path | None = None, connect_timeout: int = 10,
                 exact_row_counts: bool = True, role_passwords: bool = False) -> None:
        self.host, self.port, self.user, self.dbname = host, port, user, dbname
        self._password = password
        self.sslmode = sslmode
        self.bin_dir = bin_dir
        self.connect_timeout = connect_timeout
        self.exact_row_counts = exact_row_counts
        self.role_passwords = role_passwords

    @property
    def where(self) -> str:
        return f"postgres {self.user}@{self.host}:{self.port}/{self.dbname}"

    @property
    def server(self) -> str:
        return f"{self.host}:{self.port}"

    def env(self) -> dict[str, str]:
        env = {"PGSSLMODE": self.sslmode, "PGCONNECT_TIMEOUT": str(self.connect_timeout), "PGAPPNAME": "erp-backup"}
        if self._password:
            env["PGPASSWORD"] = self._password
        return env

    def _server_args(self) -> list[str]:
        return ["--host", self.host, "--port", str(self.port), "--username", self.user, "--no-password"]

    def _conn_args(self, dbname: str | None = None) -> list[str]:
        """Connection options for the client programs; the database as a conninfo value, so a name is a name."""
        return self._server_args() + ["--dbname", make_conninfo(dbname=dbname or self.dbname)]

    def on_server(self, conninfo: str | None) -> PostgresSource:
        """This source pointed at another server (``restore --server``): host, port, user, TLS from a conninfo
        string that names neither a database nor a password; the password is that server's, from PGPASSWORD or
        ~/.pgpass, never the configured one."""
        if not conninfo:
            return self
        try:
            given = conninfo_to_dict(conninfo)
        except psycopg.ProgrammingError as exc:
            raise ConfigError(f"--server is not a connection string ({str(exc).splitlines()[0]})") from None
        if "password" in given:
            raise ConfigError("--server must not carry a password (it would be visible in the process list): put it in "
                              "PGPASSWORD or ~/.pgpass")
        unknown = sorted(set(given) - _SERVER_KEYS)
        if unknown:
            raise ConfigError(f"--server names {', '.join(unknown)}: only {', '.join(sorted(_SERVER_KEYS))} may be given "
                              "(the database is --to)")
        user = str(given.get("user", self.user))
        return replace_source(self, host=str(given.get("host") or given.get("hostaddr") or self.host),
                              port=int(str(given.get("port") or self.port)), user=user,
                              sslmode=str(given.get("sslmode", self.sslmode)),
                              password=None)

    def connect(self, dbname: str | None = None, autocommit: bool = False) -> psycopg.Connection[Any]:
        try:
            return psycopg.connect(host=self.host, port=self.port, user=self.user, dbname=dbname or self.dbname,
                                   password=self._password, sslmode=self.sslmode,
                                   connect_timeout=self.connect_timeout, autocommit=autocommit,
                                   application_name="erp-backup")
        except psycopg.Error as exc:
            raise _failure(self.where, "cannot connect", _pg_reason(exc)) from None

    def prepare(self, workdir: Path) -> dict[str, Any]:
        pg_dump = find_program("pg_dump", self.bin_dir)
        find_program("pg_restore", self.bin_dir)
        find_program("pg_dumpall", self.bin_dir)
        with self.connect() as conn:
            version = conn.execute("SHOW server_version").fetchone()[0]  # type: ignore[index]
            tables = conn.execute(cluster.TABLES).fetchall()
            estimates = dict(conn.execute(
                "SELECT quote_ident(n.nspname) || '.' || quote_ident(c.relname),"
                " greatest(c.reltuples::bigint, coalesce(s.n_live_tup, 0))"
                " FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
                " LEFT JOIN pg_stat_user_tables s ON s.relid = c.oid"
                " WHERE c.oid = ANY(%s)", ([t[0] for t in tables],)).fetchall())
            facts = cluster.cluster_facts(conn, self.user, self.role_passwords)
            if not self.exact_row_counts:  # no exported snapshot to measure in: measure now, rows aside
                facts.update(cluster.snapshot_facts(conn, rows=False))
        tool_version = run([pg_dump, "--version"], timeout=30).stdout.decode().strip()
        return {"engine": f"PostgreSQL {version}", "pg_dump": tool_version, "database": self.dbname, **facts,
                "row_estimates": {name: int(estimates.get(name, 0)) for _oid, _n, _r, name, _k in tables},
                # the tables whose data the dump must hold (a partitioned table's rows are in its partitions)
                "table_oids": {name: int(oid) for oid, _n, _r, name, kind in tables if kind == "r"}}

    def open_dump(self, workdir: Path, facts: dict[str, Any]) -> _PgDumpStream:
        argv = [find_program("pg_dump", self.bin_dir), "--format=custom", "--compress=0"] + self._conn_args()
        if not self.exact_row_counts:
            return _PgDumpStream(Process(argv, env=self.env(), stdout=-1), self.where)
        conn = self.connect(autocommit=True)
        try:
            conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            snapshot = conn.execute("SELECT pg_export_snapshot()").fetchone()[0]  # type: ignore[index]
            proc = Process(argv + [f"--snapshot={snapshot}"], env=self.env(), stdout=-1)
        except BaseException:
            conn.close()
            raise
        return _PgDumpStream(proc, self.where, conn)

    def attachments(self, workdir: Path, facts: dict[str, Any]) -> list[Attachment]:
        """Right after the dump: ``globals`` (pg_dumpall --globals-only, verbatim) and ``database`` (the structured
        record the restore creates roles and the database from)."""
        argv = cluster.globals_argv(find_program("pg_dumpall", self.bin_dir), self._server_args() + [
            "-l", make_conninfo(dbname=self.dbname)], self.role_passwords)
        try:
            sql_text = run(argv, env=self.env(), timeout=600).stdout
        except ToolError as exc:
            if "permission denied" in str(exc):
                raise SourceError(f"postgres: the backup role {self.user} cannot read role definitions for pg_dumpall "
                                  f"--globals-only ({str(exc).rsplit('ERROR:', 1)[-1].strip()}); grant it SELECT on "
                                  "that catalog"
                                  + ("" if not self.role_passwords else ", or set sources.postgres.role_passwords: "
                                     "false to record the roles without password hashes")) from None
            raise
        with self.connect() as conn:
            try:
                doc = cluster.database_document(conn, facts)
            except psycopg.errors.InsufficientPrivilege as exc:
                raise SourceError(f"postgres: the backup role {self.user} cannot read role definitions "
                                  f"({_pg_reason(exc)})") from None
        return [Attachment("globals", ATTACHMENT_FORMATS["globals"], sql_text),
                Attachment("database", ATTACHMENT_FORMATS["database"],
                           (json.dumps(doc, indent=1, sort_keys=True) + "\n").encode())]

    def verify_attachment(self, name: str, data: bytes, facts: dict[str, Any]) -> dict[str, Any]:
        if name == "globals":
            return cluster.check_globals(data, facts)
        if name == "database":
            return cluster.check_document(data, facts)
        raise VerifyError(f"postgres: unknown attachment {name!r}")

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
        entries = [ln for ln in lines if ln and not ln.startswith(";")]
        if "table_oids" in facts:  # by OID: the listing prints names unquoted, spaces and all
            oids = {int(m["oid"]) for ln in lines if (m := _TABLE_DATA.match(ln))}
            missing = sorted(name for name, oid in facts["table_oids"].items() if oid not in oids)
            with_data = len(oids)
        else:  # a capture from before OIDs were recorded: names, as they were compared then
            names = {f"{m.group(1)}.{m.group(2)}" for ln in lines if (m := _LEGACY_TABLE_DATA.match(ln))}
            missing = sorted(set(facts.get("row_estimates", {})) - names)
            with_data = len(names)
        if missing:
            raise VerifyError(f"postgres: dump has no data for {len(missing)} table(s): {', '.join(missing[:5])}")
        return {"method": "pg_restore --list", "toc_entries": len(entries), "tables_with_data": with_data}

    def _db_exists(self, conn: psycopg.Connection[Any], name: str) -> bool:
        return conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is not None

    def _tool_major(self) -> int | None:
        found = re.search(r"\) (\d+)", run([find_program("pg_restore", self.bin_dir), "--version"],
                                            timeout=30).stdout.decode())
        return int(found.group(1)) if found else None

    def preflight(self, conn: psycopg.Connection[Any], facts: dict[str, Any], keep_owner: bool) -> onto.Preflight:
        return onto.preflight(conn, f"the server at {self.server}", facts, keep_owner, self._tool_major())

    def restored_rows(self, target: str) -> dict[str, int]:
        """Rows per table of a restored copy (the database ``target`` on this server)."""
        with self.connect(dbname=target) as conn:
            return count_rows(conn)

    def restored_query(self, target: str, query: str) -> list[str]:
        """The first column of ``query``'s rows in a restored copy (the database ``target`` on this server)."""
        with self.connect(dbname=target) as conn:
            return [r[0] for r in conn.execute(query).fetchall() if r[0]]

    def check_recovery_target(self, name: str, facts: dict[str, Any]) -> None:
        """A whole-ERP recovery's new database ``name`` is free and this server can take the dump (version,
        extensions, roles); RestoreError before anything changes otherwise."""
        with self.connect(dbname="postgres") as conn:
            taken = self._db_exists(conn, name)
            pre = self.preflight(conn, facts, "roles" in facts)
        if taken:
            raise RestoreError(f"database {name} already exists on {self.server}: a recovery never overwrites one; "
                               "drop or rename it first, or recover with another database name")
        if pre.problems:
            raise RestoreError(f"{KIND.name}: " + "; ".join(pre.problems[:3]) + "; nothing was changed")

    def restore_plan(self, target: str, force: bool, facts: dict[str, Any], no_owner: bool = False,
                     server: str | None = None) -> list[str]:
        src, name = self.on_server(server), onto.database_name(target)
        keep_owner = not no_owner and "roles" in facts
        with src.connect(dbname="postgres") as conn:
            exists = src._db_exists(conn, name)
            pre = src.preflight(conn, facts, keep_owner)
        steps = [f"REFUSE: {p}" for p in pre.problems]
        if exists:
            steps.append(f"rename existing database {name} to {name}_before_restore_<timestamp>" if force
                         else f"REFUSE: database {name} exists (use --force to keep it aside and replace it)")
        db = _recorded_database(facts)
        steps.append(f"CREATE DATABASE {name} on {src.server}" + (
            f" (encoding {db.get('encoding')}, locale {db.get('collate')})" if db else ""))
        if pre.missing_roles:
            steps.append(f"create {len(pre.missing_roles)} missing role(s) from the recorded globals: "
                         f"{', '.join(pre.missing_roles[:8])}")
        if "roles" in facts:
            steps.append("apply the database's recorded settings and privileges"
                         + (f", owner {db.get('owner')}" if keep_owner and db.get("owner") else ""))
        steps.append(f"pg_restore --exit-on-error{'' if keep_owner else ' --no-owner'} into {name} "
                     "(stream: decrypt | decompress)" + (", keeping owners and grants" if keep_owner else ""))
        return steps

    def restore(self, reader: IO[bytes] | Any, target: str, force: bool, workdir: Path,
                fetch: Any = None, facts: dict[str, Any] | None = None, attachments: dict[str, bytes] | None = None,
                no_owner: bool = False, server: str | None = None, no_privileges: bool = False) -> dict[str, Any]:
        """``no_privileges`` (the drill of a role that may not assign the recorded owners): no GRANT/REVOKE either,
        since pg_restore's default privileges name their owner (``ALTER DEFAULT PRIVILEGES FOR ROLE …``)."""
        src, name, facts = self.on_server(server), onto.database_name(target), facts or {}
        doc = _document(attachments)
        keep_owner = not no_owner and doc is not None  # a capture without the roles: owned by the restoring role
        kept = None
        with src.connect(dbname="postgres", autocommit=True) as conn:
            pre = src.preflight(conn, facts, keep_owner)
            if pre.problems:
                raise RestoreError("; ".join(pre.problems[:3]) + "; nothing was changed")
            if src._db_exists(conn, name):
                if not force:
                    raise RestoreError(f"database {name} exists; use --force to keep it aside and replace it")
                kept = f"{name}_before_restore_{datetime.now(UTC):%Y%m%d%H%M%S}"
                conn.execute(sql.SQL("ALTER DATABASE {} RENAME TO {}").format(sql.Identifier(name), sql.Identifier(kept)))
            made = onto.Target(conn, name, f"the server at {src.server}")
            try:
                made.create_database(_recorded_database(facts))
                if doc is not None:
                    made.create_roles(doc, pre.missing_roles, pre.superuser)
                    made.compare_roles(doc)
                made.configure(doc, (doc or {}).get("database", {}).get("owner") if keep_owner else None,
                               privileges=not no_privileges)
                src._pg_restore(reader, name, keep_owner, not no_privileges)
            except BaseException as exc:
                made.undo()
                if kept:
                    conn.execute(sql.SQL("ALTER DATABASE {} RENAME TO {}").format(sql.Identifier(kept),
                                                                                  sql.Identifier(name)))
                if isinstance(exc, psycopg.Error):
                    raise RestoreError(f"restoring into {name} on {src.server} failed: {_pg_reason(exc)}; what this "
                                       "restore created was removed again") from None
                raise
        if doc is None:
            made.notes.append("this capture records no roles: the restored objects belong to the restoring role "
                              f"{src.user} (as with --no-owner)")
        owners = "as recorded" if keep_owner else f"{src.user} (--no-owner{', --no-privileges' if no_privileges else ''})"
        return {"target": name, "kept_aside": kept, "server": src.server, "roles_created": made.created_roles,
                "owners": owners, "notes": made.notes}

    def _pg_restore(self, reader: IO[bytes] | Any, name: str, keep_owner: bool, privileges: bool = True) -> None:
        argv = ([find_program("pg_restore", self.bin_dir), "--exit-on-error"] + ([] if keep_owner else ["--no-owner"])
                + ([] if privileges else ["--no-privileges"]) + self._conn_args(name))
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
            raise

    def drill(self, restore: Callable[[str], dict[str, Any]], workdir: Path, facts: dict[str, Any],
              verify: dict[str, Any]) -> dict[str, Any]:
        """Restore into a new database on the configured server, compare it with the manifest, drop it: rows per
        table, large objects, every owner and privilege, and the database's owner reading every table it read.
        A backup role that may not assign the recorded owners (a dedicated role, no superuser, no membership)
        drills with --no-owner and says that owners were not compared."""
        target = f"erp_backup_drill_{secrets.token_hex(4)}"
        with self.connect(dbname="postgres") as conn:
            foreign = self.preflight(conn, facts, "roles" in facts).foreign_owners
        restored: dict[str, Any] = {}
        try:
            restored = restore(target, **({"no_owner": True, "no_privileges": True} if foreign else {}))
            with self.connect(dbname=target) as conn:
                found = cluster.snapshot_facts(conn, owner=_recorded_database(facts).get("owner"))
        finally:
            with self.connect(dbname="postgres", autocommit=True) as conn:
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(target)))
                for role in restored.get("roles_created", []):  # the drill leaves the server as it found it
                    with contextlib.suppress(psycopg.Error):
                        conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))
        counts = found["row_counts"]
        expected = facts.get("row_counts")
        if expected is None:  # exact_row_counts off: the tables at least must all be there
            missing = sorted(set(facts.get("row_estimates", {})) - set(counts))
            if missing:
                raise VerifyError(f"postgres: restored database lacks {len(missing)} table(s): {', '.join(missing[:3])}")
        result = compare_counts("postgres", expected, counts)
        return {**result, **_compare_cluster_facts(facts, found, restored), "database": target, "dropped": True}


def _compare_cluster_facts(facts: dict[str, Any], found: dict[str, Any], restored: dict[str, Any]) -> dict[str, Any]:
    """Large objects, owners and privileges of a restored copy against the manifest (what it recorded)."""
    checked: dict[str, Any] = {}
    if isinstance(facts.get("large_objects"), int):
        if found["large_objects"] != facts["large_objects"]:
            raise VerifyError(f"postgres: restored database has {found['large_objects']} large object(s), the manifest "
                              f"{facts['large_objects']}")
        checked["large_objects"] = found["large_objects"]
    if restored.get("owners") != "as recorded":
        return {**checked, "owners": f"not compared: restored as {restored.get('owners')}"}
    unreadable = sorted(set(found["owner_cannot_read"]) - set(facts.get("owner_cannot_read") or []))
    if unreadable and "owner_cannot_read" in facts:
        raise VerifyError(f"postgres: the database's owner cannot read {len(unreadable)} restored table(s) it could "
                          f"read in the source, first {unreadable[0]}")
    recorded = facts.get("privileges")
    if isinstance(recorded, dict):
        if found["privileges"]["sha256"] != recorded.get("sha256"):
            raise VerifyError(f"postgres: owners or privileges of the restored database differ from the source's "
                              f"({found['privileges']['objects']} objects restored, {recorded.get('objects')} recorded)")
        checked["privileged_objects"] = found["privileges"]["objects"]
    return checked


def _recorded_database(facts: dict[str, Any]) -> dict[str, Any]:
    """The database's owner, encoding and locale as the manifest records them ({} for older captures)."""
    found = facts.get("database")
    return found if isinstance(found, dict) else {}


def _document(attachments: dict[str, bytes] | None) -> dict[str, Any] | None:
    data = (attachments or {}).get("database")
    if data is None:
        return None
    try:
        return cluster.load_document(data)
    except ValueError as exc:
        raise RestoreError(f"postgres: the capture's database record is not valid ({exc})") from None


def replace_source(src: PostgresSource, **changes: Any) -> PostgresSource:
    """A copy of src with other connection settings."""
    password = changes.pop("password", src._password)
    copy = PostgresSource(host=src.host, port=src.port, user=src.user, dbname=src.dbname, password=password,
                          sslmode=src.sslmode, bin_dir=src.bin_dir, connect_timeout=src.connect_timeout,
                          exact_row_counts=src.exact_row_counts, role_passwords=src.role_passwords)
    for key, value in changes.items():
        setattr(copy, key, value)
    return copy


def _pg_reason(exc: BaseException) -> str:
    text = redact(str(exc)).strip()
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    for ln in lines:
        if "FATAL" in ln or "failed" in ln:
            return ln.split("FATAL:", 1)[-1].strip()
    return lines[0] if lines else type(exc).__name__


def _holds(facts: Any) -> str:
    database = facts.get("database")  # the database's record (its name among it), or its name in older captures
    return f"the PostgreSQL database {database.get('name') if isinstance(database, dict) else database} holds"


def _build(cfg: Any, state_dir: Path) -> PostgresSource:
    return PostgresSource(host=cfg.host, port=cfg.port, user=cfg.user, dbname=cfg.dbname,
                          password=cfg.secret_password(), sslmode=cfg.sslmode, bin_dir=cfg.bin_dir,
                          connect_timeout=cfg.connect_timeout, exact_row_counts=cfg.exact_row_counts,
                          role_passwords=cfg.role_passwords)


def _recovery_target(cfg: Any, root: Path, date: str, database: str | None) -> tuple[str, str]:
    name = database or f"erp_recovered_{date.replace('-', '')}"
    return name, f"new PostgreSQL database {name} on {cfg.host}:{cfg.port}"


BESIDE_LINES = ["createdb -T template0 -O OWNER TARGET", "age -d -i KEY ARTIFACT | zstd -d | pg_restore -d TARGET"]

KIND = SourceKind(
    name="postgres_dump", key="postgres", rank=0, settings=PostgresSourceSettings,
    extension=PostgresSource.extension, cron="0 2 * * *", build=_build,
    # §1 "Retention: 7 Tage full"; the script's find -mtime +7 (its 30 days incremental / 90 days WAL are
    # pgBackRest's: the pitr section)
    policy=RetentionPolicy(keep_daily=7, keep_within=timedelta(days=7)),
    engine="postgres", upstream="erp_postgres_database",
    upstream_description="The ERP's PostgreSQL database (production).",
    description="Nightly logical dump (pg_dump custom format), zstd-compressed, checked by pg_restore --list, "
                "age-encrypted.",
    metric_label="postgresql", what="the PostgreSQL database (logical dump)",
    restore_lines=("age -d -i KEY GLOBALS | zstd -d | psql -X -q -d postgres",
                   "age -d -i KEY ARTIFACT | zstd -d | pg_restore --create -d postgres"),
    emptiness="tables", holds=_holds, answers_sql=True, attachment_formats=ATTACHMENT_FORMATS,
    recovery_target=_recovery_target,
    restore_notes=("Onto a new server, as its superuser (PGHOST, PGPORT, PGUSER set): GLOBALS is the "
                   "`<stamp>.globals.sql.zst.age` beside the artifact (the roles the database needs, their memberships "
                   "and settings); then the database under its own name, with its owner, encoding, locale, settings "
                   "and grants. Run the first line only on a server without the ERP's roles (it resets existing "
                   "roles' attributes, and with recorded hashes their passwords, `postgres` included); a role "
                   "recorded without a password needs `ALTER ROLE … PASSWORD` before it logs in. Beside the "
                   "original, under another name TARGET owned by OWNER (the manifest's `facts.database.owner`):",
                   "", "```sh", *BESIDE_LINES, "```", ""))
