"""Whole-ERP recovery: every store of a date restored together and checked for belonging together."""

from __future__ import annotations

import hashlib
import re
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis

from erp_backup_pipeline.core.demo import create_demo
from erp_backup_pipeline.core.pipeline import run_backup
from erp_backup_pipeline.core.recovery import (
    RecoveryPlan,
    backup_sets,
    consistency_checks,
    plan_recovery,
    recover,
)
from erp_backup_pipeline.core.recovery_servers import stop_pid, stop_servers
from erp_backup_pipeline.core.sources.postgres import count_rows
from erp_backup_pipeline.errors import RestoreError, VerifyError
from erp_backup_pipeline_tests import pitr_cluster as cluster
from erp_backup_pipeline_tests.conftest import ERP_PASSWORD, make_settings, pg_source, redis_source, signing_section
from erp_backup_pipeline_tests.pitr_cluster import PitrCluster

pitr_cluster = cluster.pitr_cluster

SOURCES = ("sqlite_backup", "redis_snapshot", "config_archive", "uploads_snapshot")
SQLITE_DOCS = {"source": "sqlite_backup", "query": "SELECT document_path FROM invoices WHERE document_path IS NOT NULL"}
PG_DOCS = {"source": "postgres_dump", "query": "SELECT document_path FROM invoices WHERE document_path IS NOT NULL"}


def tree(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and p.name != ".erp-backup-index.json"}


def counts(db: Path) -> dict[str, int]:
    with sqlite3.connect(db) as conn:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        return {t: conn.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0] for t in tables}


def redis_state(client: Any) -> dict[bytes, bytes]:
    return {k: client.get(k) for k in client.scan_iter()}


def alive(pid: int) -> bool:
    try:
        return "State:\tZ" not in Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False


@contextmanager
def recovered(settings: Any, plan: RecoveryPlan) -> Iterator[dict[str, Any]]:
    """recover, and stop the servers it started afterwards (by PID), whatever the test found."""
    try:
        yield recover(settings, plan, log=lambda _: None)
    finally:
        assert stop_servers(settings, plan.steps) == []


def servers_in(directory_part: str) -> list[int]:
    """Living processes whose working directory contains ``directory_part`` (a daemonized redis-server
    chdirs into its --dir; its process title does not name it)."""
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if directory_part in str(proc.joinpath("cwd").readlink()) and alive(int(proc.name)):
                found.append(int(proc.name))
        except OSError:
            continue
    return found


def redis_pid(root: Path) -> int:
    return int((root / "redis" / "redis.pid").read_text().split()[0])


@pytest.fixture
def erp(tmp_path: Path, age_identity, redis_server) -> tuple[Any, dict[str, Path], Any]:
    demo = create_demo(tmp_path / "erp")
    settings = make_settings(tmp_path, age_identity, sources={
        "sqlite": {"path": str(demo["sqlite"])}, "config": {"paths": [str(demo["config"])]},
        "uploads": {"path": str(demo["uploads"])}, **redis_source(redis_server)},
        recovery={"document_references": [SQLITE_DOCS]})
    return settings, demo, redis_server


def backup_all(settings: Any, day: str, sources: tuple[str, ...] = SOURCES) -> None:
    for source in sources:
        run_backup(settings, source, day)


def test_each_date_recovers_as_it_was_and_the_stores_belong_together(tmp_path: Path, erp, age_identity, pg_server,
                                                                     erp_db: str) -> None:
    """SQLite, PostgreSQL (logical dump), Redis, config and uploads, three dates with changes in between."""
    _, demo, redis_server = erp
    settings = make_settings(tmp_path, age_identity, sources={
        "sqlite": {"path": str(demo["sqlite"])}, "config": {"paths": [str(demo["config"])]},
        "uploads": {"path": str(demo["uploads"])}, **redis_source(redis_server), **pg_source(pg_server, erp_db)},
        recovery={"document_references": [SQLITE_DOCS, PG_DOCS]})
    pg_dsn = pg_server.dsn(erp_db, "erp_user", ERP_PASSWORD)
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute("ALTER TABLE invoices ADD COLUMN document_path text")
    (demo["uploads"] / "pg").mkdir()
    sources = ("postgres_dump", *SOURCES)
    rc = redis_server.client()
    rc.set("cache:0", "kept until day 3")
    states: dict[str, dict[str, Any]] = {}
    days = ("2026-11-23", "2026-11-24", "2026-11-25")
    for n, day in enumerate(days):
        # the ERP works: documents first, then the rows that reference them
        (demo["uploads"] / "invoices" / f"NEW-{n}.pdf").write_bytes(f"%PDF new {n}".encode())
        (demo["uploads"] / "pg" / f"PG-{n}.pdf").write_bytes(f"%PDF pg {n}".encode())
        with sqlite3.connect(demo["sqlite"]) as sconn:
            sconn.execute("INSERT INTO invoices(customer_id, number, issued_on, total_cents, document_path) "
                          "VALUES (1, ?, ?, 100, ?)", (f"RE-NEW-{n}", day, f"invoices/NEW-{n}.pdf"))
        with psycopg.connect(pg_dsn, autocommit=True) as conn:
            conn.execute("INSERT INTO invoices(customer_id, number, total, issued_on, document_path) "
                         "VALUES (1, %s, 10, %s, %s)", (f"PG-NEW-{n}", day, f"pg/PG-{n}.pdf"))
            conn.execute("DELETE FROM audit_log WHERE id IN (SELECT id FROM audit_log ORDER BY id LIMIT %s)", (100 * n,))
            pg_rows = count_rows(conn)
        (demo["config"] / "app.json").write_text(f'{{"currency": "EUR", "day": "{day}"}}')
        rc.set("session:today", day)
        rc.set(f"cache:{n + 1}", f"value {n}")
        if n == 2:
            rc.delete("cache:0")
        backup_all(settings, day, sources)
        states[day] = {"rows": counts(demo["sqlite"]), "pg_rows": pg_rows, "uploads": tree(demo["uploads"]),
                       "config": tree(demo["config"]), "redis": redis_state(rc)}
    sets = backup_sets(settings)
    assert [(s.date, s.complete) for s in sets] == [(d, True) for d in days]
    databases = [f"erp_recovered_{d.replace('-', '')}" for d in days]
    try:
        for day, state in states.items():
            root = tmp_path / f"recovered-{day}"
            plan = plan_recovery(settings, day, root)
            assert [s.source for s in plan.steps] == ["postgres_dump", "sqlite_backup", "config_archive",
                                                      "uploads_snapshot", "redis_snapshot"] and not root.exists()
            with recovered(settings, plan) as report:
                assert all(c["ok"] for c in report["checks"]), report["checks"]
                assert set(report["seconds"]) == set(sources) and report["total_seconds"] > 0
                assert counts(root / "sqlite" / demo["sqlite"].name) == state["rows"]
                with psycopg.connect(pg_server.dsn(f"erp_recovered_{day.replace('-', '')}", "erp_user",
                                                   ERP_PASSWORD)) as conn:
                    assert count_rows(conn) == state["pg_rows"]
                assert tree(root / "uploads") == state["uploads"]
                assert tree(root / "config") == {f"config/{k}": v for k, v in state["config"].items()}
                redis_step = next(s for s in plan.steps if s.source == "redis_snapshot")
                # the recovered server asks for the original's password, kept in a 0600 file, never in argv
                with pytest.raises(redis.AuthenticationError):
                    redis.Redis(host="127.0.0.1", port=redis_step.port).ping()
                assert redis_state(redis.Redis(host="127.0.0.1", port=redis_step.port,
                                               password=redis_server.password)) == state["redis"]
                assert (root / "redis" / "redis-recovered.conf").stat().st_mode & 0o777 == 0o600
                pid = redis_pid(root)
                assert alive(pid)
                assert redis_server.password.encode() not in Path(f"/proc/{pid}/cmdline").read_bytes()
                checks = {c["check"]: c["detail"] for c in report["checks"]}
                i = days.index(day)
                assert checks["documents referenced by sqlite_backup"] == \
                    f"{21 + i} referenced, all present with the recorded sha256"
                assert checks["documents referenced by postgres_dump"] == \
                    f"{1 + i} referenced, all present with the recorded sha256"
                assert checks["redis keys loaded by the started server"].startswith(f"{len(state['redis'])} keys")
                assert f"Redis: redis://127.0.0.1:{redis_step.port}/0" in "\n".join(report["use"])
                assert any(f"kill $(cat {root / 'redis' / 'redis.pid'})" in ln for ln in report["stop"])
                assert not any(secret in "\n".join(report["use"] + report["stop"])
                               for secret in (ERP_PASSWORD, redis_server.password))
            assert not alive(pid)
        # a recovered database is never overwritten: refused at plan time, with one line, before anything
        again = tmp_path / "again"
        with pytest.raises(RestoreError, match=r"^database erp_recovered_20261124 already exists on 127\.0\.0\.1:\d+: "
                                               r"a recovery never overwrites one"):
            plan_recovery(settings, "2026-11-24", again)
        assert not again.exists()
    finally:
        with psycopg.connect(pg_server.dsn(), autocommit=True) as conn:
            for db in databases:
                conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
            left = conn.execute("SELECT count(*) FROM pg_database WHERE datname LIKE 'erp_recovered_%'").fetchone()
    assert left == (0,)


def test_a_document_missing_from_the_snapshot_fails_the_consistency_check(tmp_path: Path, erp) -> None:
    settings, demo, _ = erp
    (demo["uploads"] / "invoices" / "RE-00003.pdf").unlink()  # the database still references it
    backup_all(settings, "2026-11-25")
    plan = plan_recovery(settings, "2026-11-25", tmp_path / "recovered")
    with pytest.raises(VerifyError, match=r"documents referenced by sqlite_backup: 1 of 20 missing from the restored "
                                          r"uploads, first invoices/RE-00003\.pdf"):
        recover(settings, plan, log=lambda _: None)
    assert not (tmp_path / "recovered" / "redis" / "redis.pid").exists()  # a failed recovery stops its servers


def test_a_document_that_differs_from_its_recorded_checksum_fails_the_check(tmp_path: Path, erp) -> None:
    settings, _, _ = erp
    backup_all(settings, "2026-11-25")
    plan = plan_recovery(settings, "2026-11-25", tmp_path / "recovered")
    with recovered(settings, plan) as report:
        assert all(c["ok"] for c in report["checks"])
        doc = tmp_path / "recovered" / "uploads" / "invoices" / "RE-00005.pdf"
        doc.write_bytes(doc.read_bytes().replace(b"demo", b"DEMO"))  # same size, other bytes
        checks = {c["check"]: c for c in consistency_checks(settings, plan)}
    documents = checks["documents referenced by sqlite_backup"]
    assert not documents["ok"]
    assert documents["detail"] == ("1 of 20 differ from the sha256 the uploads snapshot recorded, "
                                   "first invoices/RE-00005.pdf")
    assert all(c["ok"] for name, c in checks.items() if name != "documents referenced by sqlite_backup")


def test_refusals_and_incomplete_sets(tmp_path: Path, erp) -> None:
    settings, _, _ = erp
    with pytest.raises(RestoreError, match="no backup set for 2026-11-25"):
        plan_recovery(settings, "2026-11-25", tmp_path / "r")
    run_backup(settings, "sqlite_backup", "2026-11-25")
    [bset] = backup_sets(settings)
    assert not bset.complete and bset.missing == ["redis_snapshot", "config_archive", "uploads_snapshot"]
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "x").write_text("x")
    with pytest.raises(RestoreError, match="is not empty; recover into a new directory"):
        plan_recovery(settings, "2026-11-25", busy)
    with pytest.raises(VerifyError, match="no backup of redis_snapshot, config_archive, uploads_snapshot on 2026-11-25"):
        recover(settings, plan_recovery(settings, "2026-11-25", tmp_path / "r"), log=lambda _: None)


def test_the_command_line_plans_recovers_and_lists_sets(tmp_path: Path, erp) -> None:
    import yaml

    from erp_backup_pipeline_tests.test_cli import cli

    settings, demo, redis_server = erp
    backup_all(settings, "2026-11-25")
    config = tmp_path / "erp-backup.yaml"
    config.write_text(yaml.safe_dump({
        "staging_dir": str(settings.staging_dir),
        "encryption": {"recipients": settings.encryption.recipients, "identity_file": str(settings.encryption.identity_file)},
        "signing": signing_section(),
        "destinations": [{"type": "local", "path": str(tmp_path / "backups")}],
        "sources": {"sqlite": {"path": str(demo["sqlite"])}, "config": {"paths": [str(demo["config"])]},
                    "uploads": {"path": str(demo["uploads"])},
                    "redis": {"host": "127.0.0.1", "port": redis_server.port, "password": redis_server.password}}}))
    listing = cli("list", "--sets", config=config)
    assert "2026-11-25  yes" in listing.stdout
    dry = cli("recover", "--date", "2026-11-25", "--to", str(tmp_path / "out"), "--dry-run", config=config)
    assert "recovery plan for 2026-11-25" in dry.stdout and "dry run: nothing changed" in dry.stdout
    done = cli("recover", "--date", "2026-11-25", "--to", str(tmp_path / "out"), config=config)
    pid = redis_pid(tmp_path / "out")  # the command leaves the server running for the ERP
    try:
        assert "the measured RTO" in done.stdout and "point the ERP at it:" in done.stdout
        port = re.search(r"Redis: redis://127\.0\.0\.1:(\d+)/0", done.stdout)
        assert port and redis_state(redis.Redis(host="127.0.0.1", port=int(port.group(1)),
                                                password=redis_server.password)) == \
            redis_state(redis_server.client())
        assert f"SQLite database file: {tmp_path / 'out' / 'sqlite' / demo['sqlite'].name}" in done.stdout
        assert f"Redis: kill $(cat {tmp_path / 'out' / 'redis' / 'redis.pid'})" in done.stdout
        assert redis_server.password not in done.stdout + done.stderr
    finally:
        stop_pid(pid)
    assert not alive(pid)


def test_the_monthly_drill_recovers_measures_checks_and_removes_everything(tmp_path: Path, erp, age_identity,
                                                                            pg_server, erp_db: str) -> None:
    import dagster as dg

    from erp_backup_pipeline.orchestration.definitions import build_definitions
    from erp_backup_pipeline_tests.test_dagster import write_config
    from erp_backup_pipeline_tests.test_metrics import samples

    _, demo, redis_server = erp
    sources = {"sqlite": {"path": str(demo["sqlite"])}, "config": {"paths": [str(demo["config"])]},
               "uploads": {"path": str(demo["uploads"])}, **redis_source(redis_server), **pg_source(pg_server, erp_db)}
    settings = make_settings(tmp_path, age_identity, sources=sources)
    backup_all(settings, "2026-11-25", ("postgres_dump", *SOURCES))
    config = write_config(tmp_path, age_identity, destinations=[{"type": "local", "path": str(tmp_path / "backups")}],
                          sources=sources, recovery={"document_references": [SQLITE_DOCS]})
    defs = build_definitions(str(config))
    assert defs.resolve_schedule_def("disaster_recovery_drill_monthly").cron_schedule == "0 8 1 * *"
    instance = dg.DagsterInstance.ephemeral()

    def drill() -> tuple[dict[str, Any], Any]:
        result = defs.resolve_job_def("disaster_recovery_drill").execute_in_process(instance=instance)
        [event] = result.get_asset_materialization_events()
        [check] = result.get_asset_check_evaluations()
        # whatever the verdict: every server it started stopped, the scratch database dropped, the directory gone
        assert not list(Path(tmp_path / "staging").glob("recovery-drill-*"))
        assert not servers_in(str(tmp_path / "staging" / "recovery-drill-"))
        with psycopg.connect(pg_server.dsn(), autocommit=True) as conn:
            assert conn.execute("SELECT count(*) FROM pg_database WHERE datname LIKE '%_drill'").fetchone() == (0,)
        return {k: v.value for k, v in event.materialization.metadata.items()}, check

    md, check = drill()
    assert md["date"] == "2026-11-25" and md["restore_seconds"] > 0
    assert {k for k in md if k.startswith("seconds/")} == {f"seconds/{s}" for s in ("postgres_dump", *SOURCES)}
    assert check.passed and "documents referenced by sqlite_backup" in md["checks"]
    assert "ok: redis keys loaded by the started server" in md["checks"]
    assert samples(instance)[("backup_restore_seconds", "recovery_drill")] == md["restore_seconds"]
    (demo["uploads"] / "invoices" / "RE-00003.pdf").unlink()  # a newer set that does not belong together
    backup_all(settings, "2026-11-26", ("postgres_dump", *SOURCES))
    md, check = drill()
    assert md["date"] == "2026-11-26" and not check.passed
    assert "documents referenced by sqlite_backup: 1 of 20 missing" in (check.description or "")


def test_the_runbook_is_generated_from_the_configuration_without_secrets(tmp_path: Path, age_identity,
                                                                        moto_server, bucket) -> None:
    from erp_backup_pipeline.core.runbook import BESIDE_LINES, LINES, PITR_LINES, render
    from erp_backup_pipeline_tests.conftest import S3_SECRET, s3_destination
    from erp_backup_pipeline_tests.docs import docs_text

    settings = make_settings(
        tmp_path, age_identity, destinations=[{"type": "local", "path": str(tmp_path / "b")},
                                              s3_destination(moto_server, bucket)],
        sources={"sqlite": {"path": "/srv/erp/production.sqlite3"},
                 "postgres": {"host": "db", "password": "pg-Secret-in-config-77", "dbname": "erp"},
                 "redis": {"host": "cache", "password": "redis-Secret-in-config-88"},
                 "config": {"paths": ["/srv/erp/config"]}, "uploads": {"path": "/srv/erp/uploads"}},
        pitr={"pg_data": "/var/lib/postgresql/15/main", "stanza": "steinmetz", "work_dir": "/var/lib/erp-backup/pgbr",
              "repo": {"type": "posix", "path": "/var/lib/pgbackrest"}, "cipher_pass": "cipher-Secret-99"})
    text = render(settings, "/etc/erp-backup/erp-backup.yaml")
    for store in ("postgres_dump", "sqlite_backup", "uploads_snapshot", "config_archive", "redis_snapshot"):
        assert f"`{store}`" in text
    assert f"S3 bucket `{bucket}`, keys under `site-a/erp-steinmetz/`" in text and str(tmp_path / "b") in text
    assert str(age_identity[0]) in text and "30 daily, 12 monthly" in text
    assert "--config=/var/lib/erp-backup/pgbr/pgbackrest.conf" not in text  # placeholders, the path is named once
    assert "`/var/lib/erp-backup/pgbr/pgbackrest.conf`" in text and "--stanza=steinmetz" in text
    for secret in ("pg-Secret-in-config-77", "redis-Secret-in-config-88", "cipher-Secret-99", S3_SECRET):
        assert secret not in text
    runbook = docs_text("runbook.md")  # the runbook's lines, which test_manual_restore and test_pitr run verbatim
    for line in [*(ln for lines in LINES.values() for ln in lines), *BESIDE_LINES, *PITR_LINES]:
        assert line in runbook, line
    assert text.index("`postgres_dump`)") < text.index("`uploads_snapshot`)") < text.index("`redis_snapshot`)")


def test_point_in_time_postgres_matches_the_uploads_capture(tmp_path: Path, age_identity, redis_server,
                                                            pitr_cluster: PitrCluster, capsys) -> None:
    """pgBackRest archiving: the set's PostgreSQL is recovered to the uploads capture time, into DIR/postgres."""
    from erp_backup_pipeline.cli_recover import print_sets
    from erp_backup_pipeline.core.recovery_servers import parse_captured_at, pitr_query
    from erp_backup_pipeline_tests.pitr_cluster import pitr_section

    c = pitr_cluster
    demo = create_demo(tmp_path / "erp")
    c.sql("CREATE DATABASE erp")
    erp_dsn = c.server.dsn("erp")
    with psycopg.connect(erp_dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE invoices (id serial PRIMARY KEY, number text, document_path text)")
    settings = make_settings(tmp_path, age_identity, pitr=pitr_section(c.base, pg_port=c.server.port),
                             sources={"config": {"paths": [str(demo["config"])]},
                                      "uploads": {"path": str(demo["uploads"])}, **redis_source(redis_server),
                                      "postgres": {"host": "127.0.0.1", "port": c.server.port, "user": "postgres",
                                                   "password": c.server.password, "dbname": "erp",
                                                   "sslmode": "disable"}},
                             recovery={"document_references": [PG_DOCS]})
    stores = ("redis_snapshot", "config_archive", "uploads_snapshot")
    backup_all(settings, "2026-11-24", ("postgres_dump", *stores))  # before any pgBackRest backup
    c.engine.backup("full")

    def invoice(n: int) -> None:  # the document first, then the row that references it
        (demo["uploads"] / "invoices" / f"PITR-{n}.pdf").write_bytes(f"%PDF {n}".encode())
        with psycopg.connect(erp_dsn, autocommit=True) as conn:
            conn.execute("INSERT INTO invoices(number, document_path) VALUES (%s, %s)",
                         (f"P-{n}", f"invoices/PITR-{n}.pdf"))

    for n in range(3):
        invoice(n)
    time.sleep(1.1)  # captured_at has whole seconds: the rows before are a second older than the capture
    redis_server.client().set("session:pitr", "before")
    backup_all(settings, "2026-11-25", stores)  # no postgres_dump that day: the archive has PostgreSQL
    for n in range(3, 5):
        invoice(n)  # after the uploads capture: neither the rows nor their documents belong to the set
    c.sql("SELECT pg_switch_wal()")
    c.engine.check()  # the segment holding the later rows is archived: the target lies inside the range

    before, day = backup_sets(settings)
    assert before.complete and before.pg_target is None and "postgres_dump" in before.entries
    assert re.search(r"target \S+ is before the end of the oldest pgBackRest backup", before.pitr_note or "")
    capture = parse_captured_at(day.entries["uploads_snapshot"].manifest.captured_at)
    assert day.complete and day.pg_target == capture and "postgres_dump" not in day.entries
    print_sets(settings)
    listing = capsys.readouterr().out
    assert f"PostgreSQL point-in-time target {capture.isoformat()}" in listing
    assert "no PostgreSQL point in time: target" in listing
    fallback = plan_recovery(settings, "2026-11-24", c.base / "unused")
    assert fallback.steps[0].source == "postgres_dump" and "the day's postgres_dump instead" in fallback.notes[0]

    root = c.base / "recovered"  # pgBackRest restores as postgres: a directory it can reach
    plan = plan_recovery(settings, "2026-11-25", root)
    pg_step = plan.steps[0]
    assert re.fullmatch(rf"PostgreSQL point-in-time to {re.escape(capture.isoformat())} \(backup set \S+\) -> "
                        rf"new data directory {re.escape(str(root / 'postgres'))} \(port {pg_step.port}\)",
                        pg_step.what)
    with recovered(settings, plan) as report:
        assert all(ch["ok"] for ch in report["checks"]), report["checks"]
        assert set(report["seconds"]) == {"postgres_pitr", *stores}
        rows = pitr_query(settings, root / "postgres", pg_step.port, "SELECT number FROM invoices ORDER BY 1", "erp")
        assert [r[0] for r in rows] == ["P-0", "P-1", "P-2"]  # exactly the rows before the target
        checks = {ch["check"]: ch["detail"] for ch in report["checks"]}
        assert checks["documents referenced by postgres_dump"] == "3 referenced, all present with the recorded sha256"
        assert checks["postgres point-in-time tables"] == f"1 table(s), 3 rows at {capture.isoformat()}"
        assert f"PostgreSQL: postgresql://postgres@127.0.0.1:{pg_step.port}/erp" in "\n".join(report["use"])
        assert c.server.password not in "\n".join(report["use"] + report["stop"])
        pg_pid = int((root / "postgres" / "postmaster.pid").read_text().split()[0])
        assert alive(pg_pid) and alive(redis_pid(root))
    assert not alive(pg_pid) and not (root / "postgres" / "postmaster.pid").exists()
    assert not servers_in(str(root))

    # the monthly drill in Dagster recovers the same set, point in time included, and leaves nothing behind
    import dagster as dg

    from erp_backup_pipeline.core.pitr.config import layout
    from erp_backup_pipeline.orchestration.definitions import build_definitions
    from erp_backup_pipeline_tests.test_dagster import write_config

    config = write_config(tmp_path, age_identity, destinations=[{"type": "local", "path": str(tmp_path / "backups")}],
                          sources={"config": {"paths": [str(demo["config"])]}, "uploads": {"path": str(demo["uploads"])},
                                   **redis_source(redis_server),
                                   "postgres": {"host": "127.0.0.1", "port": c.server.port, "user": "postgres",
                                                "password": c.server.password, "dbname": "erp", "sslmode": "disable"}},
                          pitr=pitr_section(c.base, pg_port=c.server.port), recovery={"document_references": [PG_DOCS]})
    result = build_definitions(str(config)).resolve_job_def("disaster_recovery_drill").execute_in_process(
        instance=dg.DagsterInstance.ephemeral())
    [event] = result.get_asset_materialization_events()
    [check] = result.get_asset_check_evaluations()
    md = {k: v.value for k, v in event.materialization.metadata.items()}
    assert check.passed, check.description
    assert md["date"] == "2026-11-25" and md["seconds/postgres_pitr"] > 0
    assert f"ok: postgres point-in-time tables: 1 table(s), 3 rows at {capture.isoformat()}" in md["checks"]
    work_dir = layout(settings).work_dir
    assert not list(Path(work_dir).glob("recovery-drill-*")) and not servers_in(str(work_dir))
