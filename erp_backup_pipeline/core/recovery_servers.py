"""The live parts of a whole-ERP recovery: the servers it starts, and where the ERP finds each store.

Owns: the PostgreSQL point-in-time target of a backup set (the archived range pgBackRest holds, and
why a capture time falls outside it); the point-in-time cluster restored into ``DIR/postgres`` and
queried through its socket as ``pitr.os_user`` (no password needed or shown); the redis-server started
on the restored ``DIR/redis/dump.rdb`` (loopback, a free port, daemonized with its pid and log files
beside the snapshot) and what it loaded; stopping every server by the PID in its pid file; and the
lines that tell an operator how to point the ERP at the result and how to stop those servers; and the
checks of what those servers hold (Redis's keys against the snapshot's, the cluster's tables at the target).
"""

from __future__ import annotations

import io
import os
import re
import signal
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import redis

from erp_backup_pipeline.core.runner import find_program, redact
from erp_backup_pipeline.core.safe_target import create_file
from erp_backup_pipeline.core.site import Site, takes_site
from erp_backup_pipeline.core.sources import files, postgres, sqlite, uploads
from erp_backup_pipeline.core.sources import redis as redis_kind
from erp_backup_pipeline.core.sources.redis import keys_loaded
from erp_backup_pipeline.errors import BackupError, RestoreError

PITR = "postgres_pitr"  # a recovery step whose PostgreSQL comes from the WAL archive
SQLITE, PG, REDIS = sqlite.KIND.name, postgres.KIND.name, redis_kind.KIND.name
CONFIG, UPLOADS = files.KIND.name, uploads.KIND.name

_TABLE_COUNTS = (
    "SELECT quote_ident(n.nspname) || '.' || quote_ident(c.relname), (xpath('/row/c/text()', query_to_xml("
    "format('SELECT count(*) AS c FROM %I.%I', n.nspname, c.relname), false, true, '')))[1]::text"
    " FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
    " WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema')"
    " AND n.nspname NOT LIKE 'pg_toast%' ORDER BY 1")


def parse_captured_at(value: str) -> datetime:
    """A manifest's ``captured_at`` (ISO seconds, UTC offset) as an aware datetime."""
    when = datetime.fromisoformat(value)
    return when if when.tzinfo else when.replace(tzinfo=UTC)


# --- PostgreSQL point in time


def pitr_enabled(site: Site) -> bool:
    return site.pitr is not None


def archived_range(site: Site) -> tuple[datetime, datetime]:
    """(end of the oldest backup, arrival of the newest archived WAL segment): the times a restore can reach."""
    from erp_backup_pipeline.core.pitr.engine import PgBackRest, position

    engine = PgBackRest(site)
    backups = engine.backups()
    if not backups:
        raise RestoreError(f"stanza {site.pgbackrest.stanza} has no backup yet")
    archived = engine.wal_archived_at()
    if not archived:
        raise RestoreError(f"stanza {site.pgbackrest.stanza} has no archived WAL")
    newest = max(archived, key=lambda name: (position(name), name))
    return (datetime.fromtimestamp(backups[0]["timestamp"]["stop"], UTC),
            datetime.fromtimestamp(archived[newest], UTC))


def pitr_target(entries: dict[str, Any], window: tuple[datetime, datetime] | None,
                problem: str | None) -> tuple[datetime | None, str | None]:
    """The set's recovery target and, when there is none, why. Documents are written before the rows that
    reference them, so the uploads capture time is the latest moment whose rows all find their document;
    without an uploads capture, the earliest capture of the other stores."""
    if UPLOADS in entries:
        target = parse_captured_at(entries[UPLOADS].manifest.captured_at)
    else:
        others = [parse_captured_at(e.manifest.captured_at) for s, e in entries.items() if s != PG]
        if not others:
            return None, "no other store was captured that day to match a point in time to"
        target = min(others)
    if problem is not None or window is None:
        return None, problem or "the archived range is unknown"
    oldest_stop, newest_wal = window
    if target < oldest_stop:
        return None, (f"target {target.isoformat()} is before the end of the oldest pgBackRest backup "
                      f"({oldest_stop.isoformat()})")
    if target > newest_wal:
        return None, (f"target {target.isoformat()} is after the newest archived WAL (archived "
                      f"{newest_wal.isoformat()})")
    return target, None


def pitr_dbname(site: Site) -> str:
    pg = site.section(PG)
    return pg.dbname if pg is not None else "postgres"


@takes_site
def pitr_query(site: Site, datadir: Path, port: int, query: str, dbname: str) -> list[list[str]]:
    """Rows of one query on the restored cluster, through its socket directory as ``pitr.os_user``."""
    from erp_backup_pipeline.core.pitr.recover import as_user, pg_bindir

    pitr = site.pgbackrest
    psql = str(Path(pitr.pg_bin_dir or pg_bindir()) / "psql")
    out = as_user(pitr.os_user, [psql, "-X", "-A", "-t", "-0", "-F", "\x1f", "-v", "ON_ERROR_STOP=1",
                                  "-h", str(datadir), "-p", str(port), "-U", pitr.pg_user, "-d", dbname,
                                  "-c", query], "psql")
    return [rec.split("\x1f") for rec in out.split("\0") if rec.strip("\n")]


def pitr_counts(site: Site, datadir: Path, port: int) -> dict[str, int]:
    rows = pitr_query(site, datadir, port, _TABLE_COUNTS, pitr_dbname(site))
    return {r[0].strip("\n"): int(r[1]) for r in rows}


def start_pitr(site: Site, pitr_plan: Any, port: int) -> dict[str, Any]:
    """Restore the point-in-time plan into its data directory and start it on loopback ``port``."""
    from erp_backup_pipeline.core.pitr import recover as pitr_recover

    return pitr_recover.restore(site, pitr_plan, port, start=True, listen="127.0.0.1")


def stop_pitr(site: Site, datadir: Path) -> None:
    from erp_backup_pipeline.core.pitr import recover as pitr_recover

    if (datadir / "postmaster.pid").exists():
        pitr_recover.stop(site, datadir)


# --- Redis


def redis_files(directory: Path) -> tuple[Path, Path]:
    return directory / "redis.pid", directory / "redis.log"


def start_redis(site: Site, directory: Path, port: int, timeout: float = 600) -> int:
    """redis-server on ``directory/dump.rdb``, daemonized on 127.0.0.1:``port``; returns its PID once loaded."""
    rd = site.section(REDIS)
    binary = find_program("redis-server", rd.bin_dir if rd is not None else None)
    pidfile, logfile = redis_files(directory)
    # the original's password (and ACL user), in a 0600 file, never on the command line: the ERP's sessions
    # are in there, and the ERP's own credential works against the recovered server
    conf = directory / "redis-recovered.conf"
    with io.TextIOWrapper(create_file(conf)) as out:
        password = rd.secret_password() if rd is not None else None
        if password:
            out.write(f"requirepass {_redis_quote(password)}\n")
            if rd is not None and rd.username:
                out.write(f"user {_redis_quote(rd.username)} on {_redis_quote('>' + password)} ~* &* +@all\n")
    argv = [binary, str(conf), "--port", str(port), "--bind", "127.0.0.1", "--protected-mode", "yes",
            "--dir", str(directory), "--dbfilename", "dump.rdb", "--appendonly", "no", "--daemonize", "yes",
            "--pidfile", str(pidfile), "--logfile", str(logfile)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        raise RestoreError(f"redis-server did not start: {redact((done.stderr or done.stdout).strip()[-200:])}")
    client = redis_client(site, port)
    deadline = time.monotonic() + timeout
    pid: int | None = None
    try:
        while True:
            if pid is None:
                pid = read_pid(pidfile)
            try:
                if client.info("persistence").get("loading", 0) == 0 and pid is not None:
                    return pid
            except redis.exceptions.BusyLoadingError:
                pass
            except redis.ConnectionError:
                if pid is not None and not _alive(pid):
                    raise RestoreError(f"redis-server could not load the snapshot: {_last_line(logfile)}") from None
            if time.monotonic() > deadline:
                raise RestoreError(f"redis-server did not load the snapshot within {timeout:.0f} s ({logfile})")
            time.sleep(0.05)
    except BaseException:
        if pid is not None:
            stop_pid(pid)
        raise
    finally:
        client.close()


def read_pid(pidfile: Path) -> int | None:
    """The PID in a pid file; None while it is missing or not written yet."""
    try:
        text = pidfile.read_text().split()
    except OSError:
        return None
    return int(text[0]) if text and text[0].isdigit() else None


def redis_loaded(directory: Path) -> tuple[int, int] | None:
    """(keys loaded, keys expired while loading) from the started server's log."""
    return keys_loaded(redis_files(directory)[1].read_text(errors="replace"))


def _redis_quote(value: str) -> str:
    """A redis.conf argument in double quotes (backslash and quote escaped)."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def redis_client(site: Site, port: int) -> redis.Redis:
    """A client of the recovered server, with the original's credential."""
    rd = site.section(REDIS)
    password = rd.secret_password() if rd is not None else None
    return redis.Redis(host="127.0.0.1", port=port, socket_timeout=60, password=password or None,
                       username=(rd.username if rd is not None and password else None))


def redis_keyspace(site: Site, port: int) -> dict[str, int]:
    client = redis_client(site, port)
    try:
        return {name: int(info["keys"]) for name, info in client.info("keyspace").items() if isinstance(info, dict)}
    finally:
        client.close()


def _last_line(path: Path) -> str:
    try:
        lines = [ln for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return "no log"
    return redact(lines[-1].strip()) if lines else "no log"


def redis_check(site: Site, step: Any, expected: int | None) -> dict[str, Any]:
    """The started server's keys (loaded + expired while loading) against the keys the snapshot held."""
    name = "redis keys loaded by the started server"
    loaded = redis_loaded(Path(step.target))
    if step.port is None or loaded is None:
        return {"check": name, "ok": False, "detail": "the started redis-server did not report what it loaded"}
    held = sum(redis_keyspace(site, step.port).values())
    n_loaded, n_expired = loaded
    if n_loaded != held or (expected is not None and n_loaded + n_expired != expected):
        return {"check": name, "ok": False, "detail": f"{n_loaded} loaded (+{n_expired} expired since), the server "
                                                      f"holds {held}, the snapshot held {expected}"}
    return {"check": name, "ok": True, "detail": f"{n_loaded} keys (+{n_expired} expired since the backup) = the "
                                                 "snapshot's"}


def pitr_check(site: Site, step: Any, target: datetime, dump: Any) -> dict[str, Any]:
    """The point-in-time cluster answers at the target; every table of the day's dump (if any) is there."""
    counts = pitr_counts(site, Path(step.target), step.port)
    detail = f"{len(counts)} table(s), {sum(counts.values())} rows at {target.isoformat()}"
    facts = dump.manifest.facts if dump is not None else {}
    lacking = sorted(set(facts.get("row_counts") or facts.get("row_estimates") or {}) - set(counts))
    if lacking:
        return {"check": "postgres point-in-time tables", "ok": False,
                "detail": f"{detail}; {len(lacking)} table(s) of the day's dump missing, first {lacking[0]}"}
    return {"check": "postgres point-in-time tables", "ok": True,
            "detail": detail + (", every table of the day's dump there" if facts else "")}


# --- stopping


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return not re.search(r"^State:\s+Z", state, re.M)  # a zombie runs nothing; its parent reaps it


def stop_pid(pid: int, timeout: float = 30) -> None:
    """SIGTERM, then SIGKILL after ``timeout``; returns when the process is gone."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while _alive(pid):
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + timeout
        time.sleep(0.05)


@takes_site
def stop_servers(site: Site, steps: list[Any]) -> list[str]:
    """Stop every server a recovery started (by the PID in its pid file); the problems, if any, as lines."""
    problems = []
    for step in steps:
        if not step.started:
            continue
        try:
            if step.source == REDIS:
                pid = read_pid(redis_files(Path(step.target))[0])
                if pid is not None:
                    stop_pid(pid)
            elif step.source == PITR:
                stop_pitr(site, Path(step.target))
            step.started = False
        except Exception as exc:  # keep stopping the others
            problems.append(f"{step.source}: {redact(str(exc)) if isinstance(exc, BackupError) else type(exc).__name__}")
    return problems


# --- where the ERP finds each store


def pointers(site: Site, steps: list[Any]) -> tuple[list[str], list[str]]:
    """(how to point the ERP at each store, how to stop the servers the recovery started). No secrets."""
    use, stop = [], []
    for step in steps:
        if step.source == SQLITE:
            use.append(f"SQLite database file: {step.target}")
        elif step.source == PG:
            pg = site.section(PG)
            use.append(f"PostgreSQL: postgresql://{pg.user}@{pg.host}:{pg.port}/{step.target} (the password is "
                       "unchanged)")
        elif step.source == PITR:
            pg = site.section(PG)
            user = pg.user if pg is not None else site.pgbackrest.pg_user
            use.append(f"PostgreSQL: postgresql://{user}@127.0.0.1:{step.port}/{pitr_dbname(site)} (roles and "
                       f"passwords as at the target; data directory {step.target})")
            bindir = site.pgbackrest.pg_bin_dir or "$(pg_config --bindir)"
            stop.append(f"PostgreSQL: runuser -u {site.pgbackrest.os_user} -- {bindir}/pg_ctl -D {step.target} -m fast "
                        f"stop   (or: kill $(head -1 {step.target}/postmaster.pid))")
        elif step.source == REDIS:
            use.append(f"Redis: redis://127.0.0.1:{step.port}/0 (loopback only, the original's password; data in {step.target})")
            stop.append(f"Redis: kill $(cat {redis_files(Path(step.target))[0]})")
        elif step.source == CONFIG:
            use.append(f"configuration files: {step.target} (the archived names below it)")
        elif step.source == UPLOADS:
            use.append(f"uploads directory: {step.target}")
    return use, stop
