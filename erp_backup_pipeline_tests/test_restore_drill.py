"""The restore drill: every kind of backup restored into a scratch target and compared with its manifest."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest

from erp_backup_pipeline.core.drill import drill_sample, restore_drill
from erp_backup_pipeline.core.pipeline import run_backup
from erp_backup_pipeline.errors import VerifyError
from erp_backup_pipeline_tests.conftest import (
    ERP_PASSWORD,
    catalog_entries,
    make_settings,
    pg_source,
    redis_source,
    sign_file,
)
from erp_backup_pipeline_tests.test_uploads_snapshot import day1, day2


def tamper_manifest(tmp_path: Path, settings: Any, source: str, partition: str, edit: Any) -> None:
    """Change what the manifest recorded (the drill must notice that the restore no longer matches). Re-signed: the
    test is about the drill comparing content, not about an unsigned edit (that is a rejected manifest)."""
    entry = catalog_entries(settings, source, partition)[0]
    path = tmp_path / "backups" / entry.manifest.key
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))
    sign_file(path)


def staging_is_clean(settings: Any) -> bool:
    return not [p for p in Path(settings.staging_dir).iterdir() if p.name.startswith(("drill-", "restore-"))]


def test_sqlite_drill_compares_rows_per_table(tmp_path: Path, demo_sqlite: Path, age_identity) -> None:
    settings = make_settings(tmp_path, age_identity, sources={"sqlite": {"path": str(demo_sqlite)}})
    m = run_backup(settings, "sqlite_backup", "2026-11-25")
    result = restore_drill(settings, "sqlite_backup", "2026-11-25")
    assert result["ok"] and result["compared"] == "rows per table"
    assert result["rows"] == sum(m.facts["row_counts"].values()) > 0
    assert 0 < result["restore_seconds"] <= result["seconds"]
    assert staging_is_clean(settings)
    table = sorted(m.facts["row_counts"])[0]
    tamper_manifest(tmp_path, settings, "sqlite_backup", "2026-11-25",
                    lambda d: d["facts"]["row_counts"].__setitem__(table, d["facts"]["row_counts"][table] + 1))
    with pytest.raises(VerifyError, match=rf"sqlite: restored database differs from the manifest in 1 table\(s\): {table}"):
        restore_drill(settings, "sqlite_backup", "2026-11-25")
    assert staging_is_clean(settings)


def test_postgres_rows_are_counted_in_the_dumps_own_snapshot(tmp_path: Path, pg_server, erp_db, age_identity) -> None:
    """While the ERP writes, the manifest's counts are those of the snapshot pg_dump dumped: the drill matches."""
    settings = make_settings(tmp_path, age_identity, sources=pg_source(pg_server, erp_db))
    stop = threading.Event()

    def writer() -> None:
        with psycopg.connect(pg_server.dsn(erp_db, "erp_user", ERP_PASSWORD), autocommit=True) as w:
            while not stop.is_set():
                w.execute("INSERT INTO audit_log(at, actor, details) VALUES (now(), 'drill', 'x')")

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        time.sleep(0.2)
        m = run_backup(settings, "postgres_dump", "2026-11-25")
        time.sleep(0.2)
    finally:
        stop.set()
        thread.join()
    with psycopg.connect(pg_server.dsn(erp_db, "erp_user", ERP_PASSWORD)) as conn:
        now = conn.execute("SELECT count(*) FROM audit_log").fetchone()[0]
    assert 0 < m.facts["row_counts"]["public.audit_log"] < now  # rows written after the snapshot are not counted
    assert m.facts["row_counts"]["public.invoices"] == 2000
    result = restore_drill(settings, "postgres_dump", "2026-11-25")
    assert result["compared"] == "rows per table" and result["tables"] == 5 and result["dropped"]
    with psycopg.connect(pg_server.dsn(), autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM pg_database WHERE datname LIKE 'erp_backup_drill_%'").fetchone()[0] == 0
    tamper_manifest(tmp_path, settings, "postgres_dump", "2026-11-25",
                    lambda d: d["facts"]["row_counts"].__setitem__("public.invoices", 1999))
    with pytest.raises(VerifyError, match=r"public\.invoices: 2000 rows, manifest 1999"):
        restore_drill(settings, "postgres_dump", "2026-11-25")
    with psycopg.connect(pg_server.dsn(), autocommit=True) as conn:  # dropped on failure too
        assert conn.execute("SELECT count(*) FROM pg_database WHERE datname LIKE 'erp_backup_drill_%'").fetchone()[0] == 0


def test_redis_drill_accounts_for_keys_that_expired_since(tmp_path: Path, redis_server, age_identity) -> None:
    r = redis_server.client()
    for i in range(20):
        r.set(f"session:{i}", "x")
    r.set("short-lived", "x", px=1500)
    redis_server.client(3).hset("h", mapping={"a": "1"})
    settings = make_settings(tmp_path, age_identity, sources=redis_source(redis_server))
    m = run_backup(settings, "redis_snapshot", "2026-11-25")
    assert m.verify["keys"] == 22
    time.sleep(1.6)
    result = restore_drill(settings, "redis_snapshot", "2026-11-25")
    assert (result["keys"], result["expired_since_backup"], result["databases"]) == (21, 1, 2)
    tamper_manifest(tmp_path, settings, "redis_snapshot", "2026-11-25", lambda d: d["verify"].__setitem__("keys", 23))
    with pytest.raises(VerifyError, match=r"restored 21 keys \(\+1 expired since\), the artifact held 23"):
        restore_drill(settings, "redis_snapshot", "2026-11-25")
    assert staging_is_clean(settings)


def test_config_drill_compares_every_file_checksum(tmp_path: Path, age_identity) -> None:
    conf = tmp_path / "erp" / "config"
    conf.mkdir(parents=True)
    (conf / "app.yaml").write_text("db: postgres\n")
    (conf.parent / ".env").write_text("SECRET=1\n")
    settings = make_settings(tmp_path, age_identity, sources={"config": {"paths": [str(conf), str(conf.parent / ".env")]}})
    run_backup(settings, "config_archive", "2026-11-25")
    result = restore_drill(settings, "config_archive", "2026-11-25")
    assert result["files"] == 2 and "sha256" in result["compared"]

    def wrong_sum(d: dict[str, Any]) -> None:
        for e in d["facts"]["index"]:
            if e["name"].endswith("app.yaml"):
                e["sha256"] = "0" * 64

    tamper_manifest(tmp_path, settings, "config_archive", "2026-11-25", wrong_sum)
    with pytest.raises(VerifyError, match=r"restored tree differs from the manifest: 1 changed \(first config/app\.yaml\)"):
        restore_drill(settings, "config_archive", "2026-11-25")


def test_uploads_drill_builds_the_full_tree_from_earlier_artifacts(tmp_path: Path, age_identity) -> None:
    up = tmp_path / "uploads"
    up.mkdir()
    day1(up)
    settings = make_settings(tmp_path, age_identity, sources={"uploads": {"path": str(up)}})
    run_backup(settings, "uploads_snapshot", "2026-11-24")
    day2(up)
    m = run_backup(settings, "uploads_snapshot", "2026-11-25")
    result = restore_drill(settings, "uploads_snapshot", "2026-11-25")
    assert (result["files"], result["bytes"], result["depends_on"]) == (m.facts["files"], m.facts["bytes"], 1)
    tamper_manifest(tmp_path, settings, "uploads_snapshot", "2026-11-25", lambda d: d["facts"].__setitem__("files", 1))
    with pytest.raises(VerifyError, match=r"restored tree holds \d+ files / \d+ bytes, the manifest 1 /"):
        restore_drill(settings, "uploads_snapshot", "2026-11-25")


def test_weekly_sample_takes_the_oldest_and_never_the_newest(tmp_path: Path, demo_sqlite: Path, age_identity) -> None:
    settings = make_settings(tmp_path, age_identity, sources={"sqlite": {"path": str(demo_sqlite)}})
    days = [f"2026-11-{d:02d}" for d in range(10, 16)]
    for day in days:
        run_backup(settings, "sqlite_backup", day)
    entries = catalog_entries(settings, "sqlite_backup")
    for k in (1, 3, 10):
        chosen = drill_sample(entries, k)
        assert chosen[0] == days[0] and days[-1] not in chosen and len(chosen) == min(k, 5)
    assert drill_sample(entries, 0) == [] and drill_sample(entries[:1], 3) == []


# --- in Dagster: the restore_drill check per partition, the verify_backups job and its weekly schedule


def _drills(result: Any) -> list[Any]:
    return [e for e in result.get_asset_check_evaluations() if e.check_name == "restore_drill"]


def test_nightly_run_drills_its_partition_and_verify_backups_catches_a_damaged_artifact(
        tmp_path: Path, demo_sqlite: Path, age_identity) -> None:
    import dagster as dg

    from erp_backup_pipeline.orchestration.definitions import build_definitions
    from erp_backup_pipeline_tests.test_dagster import write_config

    config = write_config(tmp_path, age_identity, sources={"sqlite": {"path": str(demo_sqlite)}})
    local = build_definitions(str(config))
    instance = dg.DagsterInstance.ephemeral()
    run = local.resolve_job_def("sqlite_backup_job").execute_in_process(partition_key="2026-11-25", instance=instance)
    [drilled] = _drills(run)
    assert drilled.passed and drilled.partition == "2026-11-25"
    assert drilled.metadata["restore_seconds"].value > 0 and drilled.metadata["compared"].value == "rows per table"

    [artifact] = [p for p in (tmp_path / "backups").rglob("*.sqlite3.zst.age")]
    artifact.write_bytes(artifact.read_bytes()[:-10] + b"0123456789")
    verify = local.resolve_job_def("verify_backups")
    weekly = verify.execute_in_process(tags={"dagster/partition": "2026-11-25"}, instance=instance, raise_on_error=False)
    [failed] = _drills(weekly)
    assert not failed.passed and failed.partition == "2026-11-25" and failed.severity == dg.AssetCheckSeverity.ERROR
    assert "no intact copy of the artifact" in failed.description and "checksum mismatch" in failed.description


def test_weekly_schedule_asks_for_a_sample_of_older_partitions_per_configured_source(
        tmp_path: Path, demo_sqlite: Path, age_identity) -> None:
    from datetime import datetime
    from zoneinfo import ZoneInfo

    import dagster as dg

    from erp_backup_pipeline.orchestration.definitions import build_definitions
    from erp_backup_pipeline.orchestration.resources import BackupSettingsResource
    from erp_backup_pipeline.settings import load_settings
    from erp_backup_pipeline_tests.test_dagster import write_config

    config = write_config(tmp_path, age_identity, sources={"sqlite": {"path": str(demo_sqlite)}},
                          checks={"drill_sample": 2})
    days = ["2026-11-18", "2026-11-19", "2026-11-20", "2026-11-21", "2026-11-22"]
    for day in days:
        run_backup(load_settings(config), "sqlite_backup", day)
    local = build_definitions(str(config))
    schedule = local.resolve_schedule_def("verify_backups_weekly")
    assert schedule.cron_schedule == "0 6 * * 0" and schedule.execution_timezone == "Europe/Berlin"
    tick = datetime(2026, 11, 22, 6, 0, tzinfo=ZoneInfo("Europe/Berlin"))
    with dg.build_schedule_context(scheduled_execution_time=tick, repository_def=local.get_repository_def(),
                                   resources={"backup_settings": BackupSettingsResource.pinned(str(config))}) as ctx:
        requests = schedule.evaluate_tick(ctx).run_requests
    assert len(requests) == 2 and requests[0].tags["dagster/partition"] == days[0]
    assert all(r.tags["dagster/partition"] in days[1:-1] for r in requests[1:])
    assert all(r.asset_check_keys == [dg.AssetCheckKey(dg.AssetKey("sqlite_backup"), "restore_drill")] for r in requests)
    assert all(r.run_key and r.run_key.endswith(":2026-11-22") for r in requests)
