"""Point-in-time recovery with pgBackRest: (p0) baseline, (p1) RTO to a time, (p2) RPO. Run once, whatever
``--repeat`` says (the writer alone takes ``--pitr-writer-s``, 75 s).

Set up with the project's own code (``core.pitr.config`` writes pgbackrest.conf and gives the postgresql.conf
lines, ``archive_timeout = 60``; ``PgBackRest`` runs stanza-create, check and backups; ``recover.plan_restore`` +
``recover.restore`` restore), as the ``postgres`` user, in a 0755 /tmp dir: a third cluster, archiving from the
start, filled with the same ERP-like generator to ``--size-mb``; a full backup (repository cipher on); a
``pg_dump -Fc`` of that state.

  (p0) baseline  ``pg_restore`` of that local dump into a new database on the bench's first (non-archiving)
                 cluster; only pg_restore is timed.
  (p1) RTO       writes after the full backup, a target time T, writes after T, a WAL switch;
                 ``plan_restore(target_time=T)`` + ``restore(start=True)`` into a new data directory, timed until
                 the server has promoted; checked: the rows before T, none after.
  (p2) RPO       a writer commits one row holding its ``clock_timestamp()`` every 0.1 s, no forced switch; the
                 host is lost at C (the cluster's process group SIGKILLed); ``restore`` ``--latest``;
                 RPO = C - newest recovered commit time, rows lost = committed - recovered.

The state to clean up on failure (the archiving cluster, the writer, the restored clusters) lives on the
``Bench``; ``pitr_teardown`` stops it.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.common import MB
from bench.data import TABLES, db_size, drop_db, generate_db
from bench.measure import server_cpu, timed, tree_size

if TYPE_CHECKING:
    from bench.context import Bench

PITR_DB = "erp_pitr"
PITR_CIPHER = "bench-pitr-cipher-3f9a7c21"  # repo1-cipher-pass: the restores decrypt every file
PITR_WRITER_INTERVAL_S = 0.1


def pg_sql(server: Any, dbname: str, statement: str, params: Any = None) -> list[tuple[Any, ...]]:
    import psycopg

    with psycopg.connect(server.dsn(dbname), autocommit=True) as conn:
        cur = conn.execute(statement, params)
        return cur.fetchall() if cur.description else []


def wait_archived(server: Any, timeout: float = 600) -> float:
    """Wait until no completed WAL segment waits for archive_command (no ``.ready`` file); seconds waited."""
    t0 = time.perf_counter()
    while True:
        [(ready,)] = pg_sql(server, "postgres",
                            "SELECT count(*) FROM pg_ls_archive_statusdir() WHERE name LIKE '%.ready'")
        if ready == 0:
            return time.perf_counter() - t0
        if time.perf_counter() - t0 > timeout:
            raise RuntimeError(f"{ready} WAL segment(s) still not archived after {timeout:.0f} s")
        time.sleep(0.2)


def kill_cluster(server: Any) -> int:
    """Lose the host: SIGKILL the postmaster and every process of the cluster (backends, checkpointer,
    archiver and a running archive-push) at once: no shutdown checkpoint, no last segment archived.
    pg_ctl starts the postmaster in its own session, so its process group is the cluster; the group is
    killed by its id (the postmaster's PID), then any straggler by its own PID. Returns how many died."""
    import psutil

    pm = psutil.Process(server.pid)
    procs = [pm, *pm.children(recursive=True)]
    if os.getpgid(server.pid) == server.pid:
        os.killpg(server.pid, signal.SIGKILL)
    for p in procs:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    _gone, alive = psutil.wait_procs(procs, timeout=10)

    def living(p: Any) -> bool:  # a zombie (not reaped yet by its parent) runs nothing
        try:
            return bool(p.is_running() and p.status() != psutil.STATUS_ZOMBIE)
        except psutil.NoSuchProcess:
            return False

    if [p for p in alive if living(p)]:
        raise RuntimeError(f"processes of the lost cluster survived SIGKILL: {[p.pid for p in alive if living(p)]}")
    server.pid = 0  # nothing left to stop
    return len(procs)


def archived_segments(repo: Path) -> list[str]:
    """WAL segment files in a posix pgBackRest repository (names only), sorted."""
    return sorted(p.name.split("-")[0] for p in (repo / "archive").rglob("*") if p.is_file()
                  and re.match(r"^[0-9A-F]{24}-", p.name))


def recovery_log(datadir: Path) -> dict[str, Any]:
    """What the restored server logged about its recovery (PostgreSQL 15 wording): redo time, where it
    stopped, the last replayed transaction's commit time."""
    try:
        text = (datadir / "restore.log").read_text(errors="replace")
    except OSError:
        return {}
    out: dict[str, Any] = {}
    if m := re.search(r"redo done at (\S+) system usage: .*elapsed: ([\d.]+) s", text):
        out["redo_done_at"], out["redo_elapsed_s"] = m.group(1), float(m.group(2))
    if m := re.search(r"redo starts at (\S+)", text):
        out["redo_starts_at"] = m.group(1)
    if m := re.search(r"recovery stopping (before|after) commit of transaction \d+, time (.+)", text):
        out["recovery_stopping"] = m.group(0).strip()
    if m := re.search(r"last completed transaction was at log time (.+)", text):
        out["last_completed_transaction"] = m.group(1).strip()
    if m := re.search(r"selected new timeline ID: (\d+)", text):
        out["new_timeline"] = int(m.group(1))
    return out


class RpoWriter(threading.Thread):
    """(p2)'s application: one INSERT of its own commit time (clock_timestamp()) every ``interval`` s, each
    its own transaction, synchronous_commit on (an ERP's commits are; the bench cluster's default is off).
    No WAL switch is forced: archive_timeout alone decides when a segment is closed and archived."""

    def __init__(self, dsn: str, interval: float = PITR_WRITER_INTERVAL_S) -> None:
        super().__init__(daemon=True)
        self.dsn = dsn
        self.interval = interval
        self.committed = 0
        self.last_id = 0
        self.first_at: datetime | None = None
        self.last_at: datetime | None = None
        self.error: str | None = None
        self._halt = threading.Event()

    def run(self) -> None:
        import psycopg

        try:
            with psycopg.connect(self.dsn, autocommit=True) as conn:
                conn.execute("SET synchronous_commit = on")
                due = time.monotonic()
                while not self._halt.is_set():
                    row = conn.execute("INSERT INTO rpo_probe (at) VALUES (clock_timestamp()) RETURNING id, at").fetchone()
                    assert row is not None
                    self.committed += 1
                    self.last_id, self.last_at = int(row[0]), row[1]
                    self.first_at = self.first_at or row[1]
                    due += self.interval
                    self._halt.wait(max(0.0, due - time.monotonic()))
        except Exception as exc:  # reported by the section; the thread must not die silently
            self.error = f"{type(exc).__name__}: {exc}"

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=30)


def pitr_settings(bench: Bench, base: Path, public_key: str, port: int | None = None) -> Any:
    """The project's settings with a ``pitr`` section for a cluster under ``base`` (posix repository,
    cipher on, everything else the product's defaults: archive_timeout 60, zstd 3, process-max 2)."""
    from erp_backup_pipeline.settings import parse_settings

    pitr: dict[str, Any] = {"stanza": "erp", "pg_data": str(base / "pg" / "data"),
                            "pg_socket_path": str(base / "pg" / "sock"), "work_dir": str(base / "pgbr"),
                            "repo": {"type": "posix", "path": str(base / "repo")}, "cipher_pass": PITR_CIPHER,
                            "pg_bin_dir": bench.bindir}
    if port is not None:
        pitr["pg_port"] = port
    data = {"staging_dir": str(base / "staging"), "state_dir": str(base / "state"),
            "encryption": {"codec": "age", "recipients": [public_key]},
            "signing": bench.signing(),
            "destinations": [{"type": "local", "name": "local", "path": str(base / "dest")}], "pitr": pitr}
    return parse_settings(data, "bench-pitr", base)


def pitr_restore(bench: Bench, settings: Any, datadir: Path, **target: Any) -> dict[str, Any]:
    """``recover.plan_restore`` + ``recover.restore(start=True)`` into ``datadir``, timed as one: until the
    restored server has promoted (download, decompress, decrypt, WAL replay, promotion)."""
    from erp_backup_pipeline.core.pitr import recover
    from erp_backup_pipeline_devkit.servers import free_port

    port = free_port()
    t0 = time.perf_counter()
    plan = recover.plan_restore(settings, datadir, **target)
    t_plan = time.perf_counter() - t0
    bench.pitr_started.append((settings, datadir))  # stopped by the section, or by teardown on failure
    res = recover.restore(settings, plan, port, start=True)
    wall = time.perf_counter() - t0
    return {"wall_s": wall, "plan_s": t_plan, "pgbackrest_restore_s": res["restore_seconds"],
            "start_to_promoted_s": wall - t_plan - res["restore_seconds"], "timeline": res["timeline"],
            "backup_set": plan.label, "wal_from": plan.wal_from, "wal_to": plan.wal_to, "target": plan.target,
            "port": port, "datadir_bytes": tree_size(datadir), **recovery_log(datadir)}


def pitr_stop(bench: Bench, datadir: Path) -> None:
    from erp_backup_pipeline.core.pitr import recover

    for entry in list(bench.pitr_started):
        if entry[1] == datadir:
            if (datadir / "postmaster.pid").exists():
                recover.stop(entry[0], datadir)
            bench.pitr_started.remove(entry)
    shutil.rmtree(datadir.parent, ignore_errors=True)


def pitr_teardown(bench: Bench) -> None:
    """Stop the writer, every restored cluster and the archiving cluster; remove the section's dir."""
    if bench.pitr_writer is not None:
        bench.pitr_writer.stop()
    for _settings, datadir in list(bench.pitr_started):
        try:
            pitr_stop(bench, datadir)
        except Exception as exc:  # keep tearing down
            print(f"pitr: could not stop the restored cluster in {datadir}: {exc}", file=sys.stderr)
    if bench.pitr_pg is not None:
        bench.pitr_pg.stop()  # by PID; a no-op after (p2) killed it
    if bench.pitr_base is not None and not bench.args.keep:
        shutil.rmtree(bench.pitr_base, ignore_errors=True)


def pitr_scratch(bench: Bench, name: str) -> Path:
    """A fresh parent (0755, searchable by postgres) for one restored data directory."""
    assert bench.pitr_base is not None
    d = bench.pitr_base / name
    d.mkdir(mode=0o755)
    d.chmod(0o755)
    return d / "data"


def archiving_cluster(bench: Bench, public_key: str, info: dict[str, Any]) -> tuple[Any, Any, Any]:
    """An archiving cluster set up the product's way (as the postgres user; a 0755 /tmp dir), its stanza created
    and checked: (server, settings, engine)."""
    from erp_backup_pipeline.core.pitr import config as pitr_config
    from erp_backup_pipeline.core.pitr.engine import PgBackRest
    from erp_backup_pipeline_devkit.servers import start_postgres

    base = bench.pitr_base = Path(tempfile.mkdtemp(prefix="erp-bench-pitr-", dir="/tmp"))
    base.chmod(0o755)
    settings = pitr_settings(bench, base, public_key)
    pitr_config.write(settings)
    lines = pitr_config.postgresql_lines(settings)
    info["postgresql_lines"] = lines
    bench.pitr_pg = server = start_postgres(extra_conf="\n".join(lines) + "\n", base=base / "pg")
    settings = pitr_settings(bench, base, public_key, port=server.port)
    pitr_config.write(settings)
    engine = PgBackRest(settings)
    engine.stanza_create()
    engine.check()
    [(archive_timeout,)] = pg_sql(server, "postgres", "SHOW archive_timeout")
    info["archive_timeout"] = archive_timeout
    info["pgbackrest"] = subprocess.run([engine.program, "version"], capture_output=True,
                                        text=True).stdout.strip()
    info["pitr_settings"] = {"compress_level": settings.pitr.compress_level,
                             "process_max": settings.pitr.process_max, "cipher": "aes-256-cbc"}
    print(f"pitr: archiving cluster pid {server.pid} port {server.port}, {info['pgbackrest']}, stanza "
          f"'{settings.pitr.stanza}' created and checked; archive_timeout {archive_timeout}; generating "
          f"{bench.invoices_for['big']} invoices ...", flush=True)
    return server, settings, engine


def fill_and_back_up(bench: Bench, server: Any, engine: Any, info: dict[str, Any]) -> dict[str, Any]:
    """Fill the archiving cluster with the ERP-like data (archived while it is written), then a full backup."""
    info["database"] = generate_db(server, PITR_DB, bench.invoices_for["big"])
    info["database"]["archive_catch_up_s"] = round(wait_archived(server), 1)
    t0 = time.perf_counter()
    full = engine.backup("full")
    info["full_backup"] = {"label": full["label"], "wall_s": round(time.perf_counter() - t0, 2),
                           "database_bytes": full["info"]["size"],
                           "repository_bytes": full["info"]["repository"]["size"],
                           "lsn_stop": full["lsn"]["stop"], "wal_start": full["archive"]["start"],
                           "wal_stop": full["archive"]["stop"]}
    fb = info["full_backup"]
    print(f"pitr: database {info['database']['db_bytes'] / MB:.1f} MiB generated in "
          f"{info['database']['generate_s']} s (archive caught up {info['database']['archive_catch_up_s']} s "
          f"later); full backup {fb['label']} in {fb['wall_s']} s, {fb['repository_bytes']:,} bytes in the "
          "repository", flush=True)
    return full


def case_p0(bench: Bench, server: Any, info: dict[str, Any]) -> dict[str, Any]:
    """(p0) baseline: pg_restore of a local pg_dump -Fc of the same database into a new database."""
    assert bench.pitr_base is not None
    base = bench.pitr_base
    dump = base / "p0.dump"
    env = {**os.environ, "PGPASSWORD": server.password, "PGSSLMODE": "disable"}
    pg_conn = ["--host", "127.0.0.1", "--port", str(server.port), "--username", "postgres", "--no-password"]
    d = timed([f"{bench.bindir}/pg_dump", "-Fc", "-f", str(dump), *pg_conn, "--dbname", PITR_DB], env)
    # restored into the bench's other cluster (same build and settings, not archiving: the baseline pays
    # for no WAL archive, and its WAL does not load the archiving cluster's archiver)
    drop_db(bench.pg, "erp_p0")
    pg_sql(bench.pg, "postgres", 'CREATE DATABASE "erp_p0"')
    cpu0 = server_cpu(bench.pg)
    r = timed([f"{bench.bindir}/pg_restore", *bench.conn_args("erp_p0"), str(dump)], bench.pg_env())
    p0 = {"wall_s": r["wall_s"], "peak_rss_bytes": r["peak_rss_bytes"], "client_cpu_s": r["cpu_s"],
          "server_cpu_s": server_cpu(bench.pg) - cpu0, "dump_bytes": dump.stat().st_size,
          "pg_dump_s": d["wall_s"], "restored_db_bytes": db_size(bench.pg.dsn(), "erp_p0"),
          "restored_rows": {t: int(pg_sql(bench.pg, "erp_p0", f"SELECT count(*) FROM {t}")[0][0]) for t in TABLES}}
    drop_db(bench.pg, "erp_p0")
    dump.unlink()
    if p0["restored_rows"] != info["database"]["rows"]:
        raise RuntimeError(f"(p0) restored rows {p0['restored_rows']} != generated {info['database']['rows']}")
    print(f"pitr: (p0) pg_restore {p0['wall_s']:.2f} s (dump {p0['dump_bytes']:,} bytes, pg_dump {d['wall_s']:.2f} "
          "s, not counted)", flush=True)
    return p0


def writes_to_target(server: Any, engine: Any, full: dict[str, Any], info: dict[str, Any]) -> tuple[datetime, int]:
    """Writes after the full backup, the target T, writes after T; all archived. (T, audit rows at T)."""
    pg_sql(server, PITR_DB, "CREATE TABLE pitr_marks (phase text NOT NULL, at timestamptz DEFAULT clock_timestamp())")
    t0 = time.perf_counter()
    lsn0 = full["lsn"]["stop"]
    pg_sql(server, PITR_DB, "UPDATE invoices SET status = 'paid', meta = meta || jsonb_build_object('paid_on', "
           "current_date) WHERE id % 20 = 0")
    pg_sql(server, PITR_DB, "INSERT INTO audit_log SELECT m.top + g, clock_timestamp(), 'bench', 'update', 'invoice', "
           "g, 'pitr bench: before the target, row ' || g, jsonb_build_object('g', g, 'phase', 'before') "
           "FROM (SELECT max(id) AS top FROM audit_log) m, generate_series(1, 100000) g")
    pg_sql(server, PITR_DB, "INSERT INTO pitr_marks (phase) VALUES ('before')")
    [(audit_at_t,)] = pg_sql(server, PITR_DB, "SELECT count(*) FROM audit_log")
    time.sleep(1.1)
    target = datetime.now(UTC)
    [(lsn_t, wal_bytes)] = pg_sql(server, "postgres", "SELECT pg_current_wal_lsn()::text, "
                                  "pg_wal_lsn_diff(pg_current_wal_lsn(), %s::pg_lsn)::bigint", (lsn0,))
    time.sleep(1.1)
    pg_sql(server, PITR_DB, "INSERT INTO pitr_marks (phase) VALUES ('after')")
    pg_sql(server, PITR_DB, "UPDATE invoices SET status = 'cancelled' WHERE id % 20 = 1")
    engine.check()  # a WAL switch, archived now: the WAL after T is in the repository
    info["writes"] = {"wal_bytes_full_stop_to_target": int(wal_bytes), "lsn_at_target": lsn_t,
                      "target": target.isoformat(), "seconds": round(time.perf_counter() - t0, 1),
                      "before_target": "UPDATE 5 % of invoices (jsonb), INSERT 100,000 audit_log rows, 1 mark",
                      "after_target": "1 mark, UPDATE another 5 % of invoices"}
    print(f"pitr: writes after the full backup: {wal_bytes / MB:.1f} MiB of WAL up to T = {target.isoformat()}",
          flush=True)
    return target, int(audit_at_t)


def case_p1(bench: Bench, server: Any, settings: Any, target: datetime, audit_at_t: int) -> dict[str, Any]:
    """(p1) point-in-time restore to T into a new data directory, until the server is promoted."""
    from erp_backup_pipeline.core.pitr import recover

    dd1 = pitr_scratch(bench, "p1")
    p1 = pitr_restore(bench, settings, dd1, target_time=target)
    p1["marks"] = recover.psql(settings, dd1, p1["port"], "SELECT string_agg(phase, ',' ORDER BY at) FROM pitr_marks",
                               dbname=PITR_DB)
    [(audit_now,)] = pg_sql(server, PITR_DB, "SELECT count(*) FROM audit_log")
    p1["audit_rows"] = int(recover.psql(settings, dd1, p1["port"], "SELECT count(*) FROM audit_log", dbname=PITR_DB))
    p1["paid_on_rows"] = int(recover.psql(settings, dd1, p1["port"], "SELECT count(*) FROM invoices WHERE "
                                          "meta ? 'paid_on'", dbname=PITR_DB))
    [(paid_on_rows,)] = pg_sql(server, PITR_DB, "SELECT count(*) FROM invoices WHERE meta ? 'paid_on'")
    # at T: the 'before' writes are there, the 'after' ones are not
    p1["state_at_target_ok"] = (p1["marks"] == "before" and p1["audit_rows"] == int(audit_at_t) == int(audit_now)
                                and p1["paid_on_rows"] == int(paid_on_rows) > 0)
    pitr_stop(bench, dd1)
    print(f"pitr: (p1) restore to T {p1['wall_s']:.2f} s (pgbackrest restore {p1['pgbackrest_restore_s']:.2f} s, "
          f"start + replay + promotion {p1['start_to_promoted_s']:.2f} s), timeline {p1['timeline']}, marks "
          f"{p1['marks']!r}", flush=True)
    return p1


def case_p2(bench: Bench, server: Any, settings: Any, engine: Any) -> dict[str, Any]:
    """(p2) RPO: a writer, no forced WAL switch, then the host is lost; restore the latest state."""
    from erp_backup_pipeline.core.pitr import recover

    pg_sql(server, PITR_DB, "CREATE TABLE rpo_probe (id bigserial PRIMARY KEY, at timestamptz NOT NULL)")
    engine.check()  # a WAL switch now: archive_timeout's 60 s count from here, as after any quiet switch
    switched_at = datetime.now(UTC)
    segments_before = archived_segments(Path(settings.pitr.repo.path))
    bench.pitr_writer = writer = RpoWriter(server.dsn(PITR_DB))
    writer.start()
    writer_s = float(bench.args.pitr_writer_s)
    print(f"pitr: (p2) writer running for {writer_s:.0f} s (a row every {PITR_WRITER_INTERVAL_S} s, "
          "no forced WAL switch) ...", flush=True)
    time.sleep(writer_s)
    writer.stop()
    bench.pitr_writer = None
    lost_at = datetime.now(UTC)  # C: the writer has stopped; the host goes now
    killed = kill_cluster(server)
    if writer.error:
        raise RuntimeError(f"(p2) writer failed: {writer.error}")
    segments_at_loss = archived_segments(Path(settings.pitr.repo.path))
    dd2 = pitr_scratch(bench, "p2")
    p2 = pitr_restore(bench, settings, dd2)  # --latest: no target, replay to the end of the archive
    out = recover.psql(settings, dd2, p2["port"], "SELECT count(*), coalesce(max(id), 0), "
                       "to_char(max(at) AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US') FROM rpo_probe",
                       dbname=PITR_DB)
    pitr_stop(bench, dd2)
    count, max_id, max_at = out.split("|")
    recovered_at = datetime.fromisoformat(max_at).replace(tzinfo=UTC) if max_at else None
    segments_after = archived_segments(Path(settings.pitr.repo.path))
    new_segments = [s for s in segments_at_loss if s not in segments_before]
    p2.update({
        "lost_at": lost_at.isoformat(), "writer_started": writer.first_at.isoformat() if writer.first_at else None,
        "writer_last_commit": writer.last_at.isoformat() if writer.last_at else None,
        "rows_committed": writer.committed, "rows_recovered": int(count), "rows_lost": writer.committed - int(count),
        "recovered_ids_contiguous": int(count) == int(max_id),
        "newest_recovered_commit": recovered_at.isoformat() if recovered_at else None,
        "rpo_s": (lost_at - recovered_at).total_seconds() if recovered_at else None,
        "writer_last_commit_to_loss_s": (lost_at - writer.last_at).total_seconds() if writer.last_at else None,
        "switch_before_writer": switched_at.isoformat(),
        "newest_recovered_since_switch_s": (recovered_at - switched_at).total_seconds() if recovered_at else None,
        "segments_archived_during_writer": new_segments,
        "segments_archived_after_loss": [s for s in segments_after if s not in segments_at_loss],
        "processes_killed": killed, "writer_s": writer_s, "writer_interval_s": PITR_WRITER_INTERVAL_S})
    print(f"pitr: (p2) restore --latest {p2['wall_s']:.2f} s; rows committed {p2['rows_committed']}, recovered "
          f"{p2['rows_recovered']}, lost {p2['rows_lost']}; RPO {p2['rpo_s']} s", flush=True)
    return p2


def pitr_section(bench: Bench, public_key: str) -> dict[str, Any]:
    """Set-up, (p0), (p1), (p2); once per bench run (not repeated: the writer alone takes 75 s)."""
    t_section = time.perf_counter()
    info: dict[str, Any] = {"loadavg_1m_at_start": os.getloadavg()[0]}
    server, settings, engine = archiving_cluster(bench, public_key, info)
    full = fill_and_back_up(bench, server, engine, info)
    p0 = case_p0(bench, server, info)
    target, audit_at_t = writes_to_target(server, engine, full, info)
    p1 = case_p1(bench, server, settings, target, audit_at_t)
    p2 = case_p2(bench, server, settings, engine)
    info["section_s"] = round(time.perf_counter() - t_section, 1)
    info["loadavg_1m_at_end"] = os.getloadavg()[0]
    info["p0"], info["p1"], info["p2"] = p0, p1, p2
    return info
