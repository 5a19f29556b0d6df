"""Whole-ERP recovery: every store of a date restored together and checked for belonging together."""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from erp_backup_pipeline.core.demo import create_demo
from erp_backup_pipeline.core.pipeline import run_backup
from erp_backup_pipeline.core.recovery import backup_sets, plan_recovery, recover
from erp_backup_pipeline.errors import RestoreError, VerifyError
from erp_backup_pipeline_tests.conftest import make_settings, redis_source

SOURCES = ("sqlite_backup", "redis_snapshot", "config_archive", "uploads_snapshot")


def tree(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and p.name != ".erp-backup-index.json"}


def counts(db: Path) -> dict[str, int]:
    with sqlite3.connect(db) as conn:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        return {t: conn.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0] for t in tables}


@pytest.fixture
def erp(tmp_path: Path, age_identity, redis_server) -> tuple[Any, dict[str, Path], Any]:
    demo = create_demo(tmp_path / "erp")
    settings = make_settings(tmp_path, age_identity, sources={
        "sqlite": {"path": str(demo["sqlite"])}, "config": {"paths": [str(demo["config"])]},
        "uploads": {"path": str(demo["uploads"])}, **redis_source(redis_server)},
        recovery={"document_references": [{"source": "sqlite_backup", "query":
                                           "SELECT document_path FROM invoices WHERE document_path IS NOT NULL"}]})
    return settings, demo, redis_server


def backup_all(settings: Any, day: str) -> None:
    for source in SOURCES:
        run_backup(settings, source, day)


def test_each_date_recovers_as_it_was_and_the_stores_belong_together(tmp_path: Path, erp) -> None:
    settings, demo, redis_server = erp
    states: dict[str, dict[str, Any]] = {}
    for n, day in enumerate(("2026-11-23", "2026-11-24", "2026-11-25")):
        with sqlite3.connect(demo["sqlite"]) as conn:  # the ERP works: a new invoice with its document each day
            conn.execute("INSERT INTO invoices(customer_id, number, issued_on, total_cents, document_path) "
                         "VALUES (1, ?, ?, 100, ?)", (f"RE-NEW-{n}", day, f"invoices/NEW-{n}.pdf"))
        (demo["uploads"] / "invoices" / f"NEW-{n}.pdf").write_bytes(f"%PDF new {n}".encode())
        (demo["config"] / "app.json").write_text(f'{{"currency": "EUR", "day": "{day}"}}')
        redis_server.client().set("session:today", day)
        backup_all(settings, day)
        states[day] = {"rows": counts(demo["sqlite"]), "uploads": tree(demo["uploads"]),
                       "config": tree(demo["config"])}
    sets = backup_sets(settings)
    assert [(s.date, s.complete) for s in sets] == [("2026-11-23", True), ("2026-11-24", True), ("2026-11-25", True)]
    for day, state in states.items():
        root = tmp_path / f"recovered-{day}"
        plan = plan_recovery(settings, day, root)
        assert {s.source for s in plan.steps} == set(SOURCES) and not root.exists()
        report = recover(settings, plan, log=lambda _: None)
        assert all(c["ok"] for c in report["checks"]) and report["total_seconds"] > 0
        assert set(report["seconds"]) == set(SOURCES)
        assert counts(root / "sqlite" / demo["sqlite"].name) == state["rows"]
        assert tree(root / "uploads") == state["uploads"]
        assert tree(root / "config") == {f"config/{k}": v for k, v in state["config"].items()}  # names below the root
        assert (root / "redis" / "dump.rdb").stat().st_size > 0
        documents = next(c for c in report["checks"] if c["check"].startswith("documents"))
        assert documents["detail"] == f"{21 + list(states).index(day)} referenced, all present"


def test_a_document_missing_from_the_snapshot_fails_the_consistency_check(tmp_path: Path, erp) -> None:
    settings, demo, _ = erp
    (demo["uploads"] / "invoices" / "RE-00003.pdf").unlink()  # the database still references it
    backup_all(settings, "2026-11-25")
    plan = plan_recovery(settings, "2026-11-25", tmp_path / "recovered")
    with pytest.raises(VerifyError, match=r"documents referenced by sqlite_backup: 1 of 20 missing from the restored "
                                          r"uploads, first invoices/RE-00003\.pdf"):
        recover(settings, plan, log=lambda _: None)


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
        "destinations": [{"type": "local", "path": str(tmp_path / "backups")}],
        "sources": {"sqlite": {"path": str(demo["sqlite"])}, "config": {"paths": [str(demo["config"])]},
                    "uploads": {"path": str(demo["uploads"])},
                    "redis": {"host": "127.0.0.1", "port": redis_server.port, "password": redis_server.password}}}))
    listing = cli("list", "--sets", config=config)
    assert "2026-11-25  yes" in listing.stdout
    dry = cli("recover", "--date", "2026-11-25", "--to", str(tmp_path / "out"), "--dry-run", config=config)
    assert "recovery plan for 2026-11-25" in dry.stdout and "dry run: nothing changed" in dry.stdout
    done = cli("recover", "--date", "2026-11-25", "--to", str(tmp_path / "out"), config=config)
    assert "the measured RTO" in done.stdout and "point the ERP at it:" in done.stdout


def test_the_monthly_drill_recovers_measures_checks_and_removes_everything(tmp_path: Path, erp, age_identity) -> None:
    import dagster as dg

    from erp_backup_pipeline.orchestration.definitions import build_definitions
    from erp_backup_pipeline_tests.test_dagster import write_config
    from erp_backup_pipeline_tests.test_metrics import samples

    settings, demo, redis_server = erp
    backup_all(settings, "2026-11-25")
    config = write_config(tmp_path, age_identity, destinations=[{"type": "local", "path": str(tmp_path / "backups")}],
                          sources={"sqlite": {"path": str(demo["sqlite"])}, "config": {"paths": [str(demo["config"])]},
                                   "uploads": {"path": str(demo["uploads"])},
                                   "redis": {"host": "127.0.0.1", "port": redis_server.port,
                                             "password": redis_server.password}},
                          recovery={"document_references": [{"source": "sqlite_backup", "query":
                                    "SELECT document_path FROM invoices WHERE document_path IS NOT NULL"}]})
    defs = build_definitions(str(config))
    assert defs.resolve_schedule_def("disaster_recovery_drill_monthly").cron_schedule == "0 8 1 * *"
    instance = dg.DagsterInstance.ephemeral()
    result = defs.resolve_job_def("disaster_recovery_drill").execute_in_process(instance=instance)
    [event] = result.get_asset_materialization_events()
    md = {k: v.value for k, v in event.materialization.metadata.items()}
    assert md["date"] == "2026-11-25" and md["restore_seconds"] > 0
    assert {k for k in md if k.startswith("seconds/")} == {f"seconds/{s}" for s in SOURCES}
    [check] = result.get_asset_check_evaluations()
    assert check.passed and "documents referenced by sqlite_backup" in md["checks"]
    assert not list(Path(tmp_path / "staging").glob("recovery-drill-*"))
    assert samples(instance)[("backup_restore_seconds", "recovery_drill")] == md["restore_seconds"]


def test_the_runbook_is_generated_from_the_configuration_without_secrets(tmp_path: Path, age_identity,
                                                                        moto_server, bucket) -> None:
    from erp_backup_pipeline.core.runbook import LINES, PITR_LINES, render
    from erp_backup_pipeline_tests.conftest import S3_SECRET, s3_destination
    from erp_backup_pipeline_tests.test_cli import README

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
    readme = README.read_text()  # the README's lines, which test_manual_restore and test_pitr run verbatim
    for line in [*(ln for lines in LINES.values() for ln in lines), *PITR_LINES]:
        assert line in readme, line
    assert text.index("`postgres_dump`)") < text.index("`uploads_snapshot`)") < text.index("`redis_snapshot`)")
