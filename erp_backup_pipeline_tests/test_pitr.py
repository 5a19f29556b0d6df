"""Point-in-time recovery on pgBackRest, end to end against a real archiving cluster."""

from __future__ import annotations

import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from erp_backup_pipeline.core.pitr import config, recover
from erp_backup_pipeline.errors import RestoreError, VerifyError
from erp_backup_pipeline_devkit.servers import free_port
from erp_backup_pipeline_tests import pitr_cluster as cluster
from erp_backup_pipeline_tests.pitr_cluster import CIPHER, PitrCluster

pitr_cluster = cluster.pitr_cluster


def scratch(c: PitrCluster) -> Path:
    path = Path(tempfile.mkdtemp(prefix="pitr-restore-", dir=c.base))
    path.chmod(0o755)
    return path


def test_restore_to_a_time_between_two_inserts(pitr_cluster: PitrCluster) -> None:
    c = pitr_cluster
    c.engine.check()
    c.sql("CREATE TABLE invoices (id serial PRIMARY KEY, note text, at timestamptz DEFAULT now())")
    full = c.engine.backup("full")
    assert full["type"] == "full" and full["archive"]["start"] <= full["archive"]["stop"]
    c.sql("INSERT INTO invoices(note) SELECT 't1-' || g FROM generate_series(1, 100) g")
    incr = c.engine.backup("incr")
    assert incr["type"] == "incr" and incr["prior"] == full["label"]
    time.sleep(1.2)
    target = datetime.now(UTC)
    time.sleep(1.2)
    c.sql("INSERT INTO invoices(note) SELECT 't2-' || g FROM generate_series(1, 50) g")
    c.sql("SELECT pg_switch_wal()")
    c.engine.check()  # waits until the switched segment is archived
    c.engine.verify()
    assert c.engine.continuity(full["archive"]["start"]).segments >= 2

    datadir = scratch(c) / "data"
    plan = recover.plan_restore(c.settings, datadir, target_time=target)
    assert plan.label == incr["label"] and plan.target["type"] == "time"
    port = free_port()
    result = recover.restore(c.settings, plan, port)
    try:
        assert result["timeline"] == 2  # promoted onto a new timeline
        notes = recover.psql(c.settings, datadir, port, "SELECT string_agg(DISTINCT left(note, 2), ',') FROM invoices")
        count = recover.psql(c.settings, datadir, port, "SELECT count(*) FROM invoices")
        assert (notes, count) == ("t1", "100")
        auto = (datadir / "postgresql.auto.conf").read_text()
        assert "recovery_target_time" in auto and "archive_mode = off" in auto
        assert (datadir / "recovery.signal").exists() is False  # removed by PostgreSQL at promotion
        assert not (datadir / "recovery.conf").exists()
    finally:
        recover.stop(c.settings, datadir)


def test_latest_has_every_committed_row_and_lsn_targets_work(pitr_cluster: PitrCluster) -> None:
    c = pitr_cluster
    c.sql("CREATE TABLE t (id int)")
    c.engine.backup("full")
    c.sql("INSERT INTO t SELECT generate_series(1, 10)")
    [(lsn,)] = c.sql("SELECT pg_current_wal_insert_lsn()::text")  # after the commit record (async commit here)
    c.sql("INSERT INTO t SELECT generate_series(11, 25)")
    c.sql("SELECT pg_switch_wal()")
    c.engine.check()
    for target, expected in (({}, "25"), ({"target_lsn": lsn}, "10")):
        datadir = scratch(c) / "data"
        port = free_port()
        recover.restore(c.settings, recover.plan_restore(c.settings, datadir, **target), port)
        try:
            assert recover.psql(c.settings, datadir, port, "SELECT count(*) FROM t") == expected
        finally:
            recover.stop(c.settings, datadir)


def test_a_deleted_wal_segment_breaks_continuity_and_a_damaged_backup_fails_verify(
        pitr_cluster: PitrCluster) -> None:
    c = pitr_cluster
    full = c.engine.backup("full")
    for _ in range(3):
        c.sql("CREATE TABLE IF NOT EXISTS x (i int); INSERT INTO x VALUES (1)")
        c.sql("SELECT pg_switch_wal()")
    c.engine.check()
    wal = c.engine.wal_segments()
    middle = wal[len(wal) // 2]
    [victim] = [p for p in (c.base / "repo" / "archive").rglob(f"{middle}-*")]
    victim.unlink()
    with pytest.raises(VerifyError, match=rf"WAL: segment {middle} is missing from the archive"):
        c.engine.continuity(full["archive"]["start"])
    some_file = next(p for p in (c.base / "repo" / "backup").rglob("*.zst") if p.stat().st_size > 64)
    data = bytearray(some_file.read_bytes())
    data[40] ^= 0xFF
    some_file.write_bytes(bytes(data))
    with pytest.raises(VerifyError, match=r"pgbackrest verify: .*(invalid|error)"):
        c.engine.verify()


def test_refusals_come_before_anything_changes(pitr_cluster: PitrCluster, tmp_path: Path, age_identity) -> None:
    c = pitr_cluster
    target_dir = c.base / "restore-here"
    with pytest.raises(RestoreError, match="has no backup yet"):
        recover.plan_restore(c.settings, target_dir)
    c.engine.backup("full")
    busy = c.base / "busy"
    busy.mkdir()
    (busy / "PG_VERSION").write_text("15")
    with pytest.raises(RestoreError, match=r"data directory .*busy is not empty; restore into a new directory"):
        recover.plan_restore(c.settings, busy)
    with pytest.raises(RestoreError, match=r"a PostgreSQL is running on it"):
        recover.plan_restore(c.settings, c.server.data)
    with pytest.raises(RestoreError, match="is before the end of the oldest backup"):
        recover.plan_restore(c.settings, target_dir, target_time=datetime(2020, 1, 1, tzinfo=UTC))
    with pytest.raises(RestoreError, match=r"is after the newest archived WAL \(segment [0-9A-F]{24}, archived "):
        recover.plan_restore(c.settings, target_dir, target_time=datetime.now(UTC))  # nothing archived since
    with pytest.raises(RestoreError, match="is in the future"):
        recover.plan_restore(c.settings, target_dir, target_time=datetime(2099, 1, 1, tzinfo=UTC))
    with pytest.raises(RestoreError, match="needs a time zone"):
        recover.plan_restore(c.settings, target_dir, target_time=datetime(2026, 1, 1))
    assert not target_dir.exists()
    from erp_backup_pipeline.errors import ToolError
    from erp_backup_pipeline_tests.pitr_cluster import pitr_settings

    elsewhere = pitr_settings(tmp_path, age_identity, c.base, pg_port=c.server.port, stanza="nosuchstanza")
    with pytest.raises(ToolError, match="stanza nosuchstanza: missing stanza path"):
        recover.plan_restore(elsewhere, target_dir)


def test_the_generated_config_holds_the_secret_only_in_a_0600_file(pitr_cluster: PitrCluster) -> None:
    c = pitr_cluster
    conf = config.layout(c.settings).config
    assert conf.stat().st_mode & 0o777 == 0o600 and conf.owner() == "postgres"
    text = conf.read_text()
    assert f"repo1-cipher-pass={CIPHER}" in text and "repo1-retention-full=7" in text and "compress-type=zst" in text
    lines = config.postgresql_lines(c.settings)
    assert any(ln.startswith("archive_command = 'pgbackrest --config=") and "archive-push %p" in ln for ln in lines)
    assert not any("recovery.conf" in ln for ln in lines)


def test_full_and_incremental_assets_materialize_with_their_checks(pitr_cluster: PitrCluster, tmp_path: Path,
                                                                   age_identity) -> None:
    import dagster as dg

    from erp_backup_pipeline.orchestration.definitions import build_definitions
    from erp_backup_pipeline_tests.pitr_cluster import pitr_section
    from erp_backup_pipeline_tests.test_dagster import write_config

    c = pitr_cluster
    config = write_config(tmp_path, age_identity, pitr=pitr_section(c.base, pg_port=c.server.port))
    defs = build_definitions(str(config))
    fresh = {k.asset_key.to_user_string() for k in defs.resolve_asset_graph().asset_check_keys if k.name == "freshness_check"}
    assert fresh == {"postgres_full", "postgres_incremental"}  # only what this config backs up
    instance = dg.DagsterInstance.ephemeral()
    full = defs.resolve_job_def("postgres_full_job").execute_in_process(partition_key="2026-11-25", instance=instance)
    c.sql("CREATE TABLE t AS SELECT generate_series(1, 1000) AS i")
    incr = defs.resolve_job_def("postgres_incremental_job").execute_in_process(partition_key="2026-11-25-13:00",
                                                                               instance=instance)
    for result, kind in ((full, "full"), (incr, "incr")):
        assert result.success
        [event] = result.get_asset_materialization_events()
        md = {k: v.value for k, v in event.materialization.metadata.items()}
        assert md["type"] == kind and md["label"].endswith("F" if kind == "full" else "I")
        assert md["database_bytes"] > 0 and md["repository_bytes"] > 0 and md["duration_seconds"] >= 0
        assert md["stop_lsn"] >= md["start_lsn"] and md["wal_start"] <= md["wal_stop"]
        checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
        assert checks["pgbackrest_verify"].passed and checks["wal_continuity"].passed
    assert {e.check_name: e.partition for e in incr.get_asset_check_evaluations()} == {
        "pgbackrest_verify": "2026-11-25-13:00", "wal_continuity": "2026-11-25-13:00"}
    from erp_backup_pipeline_tests.test_metrics import samples

    exported = samples(instance)
    assert exported[("backup_size_bytes", "postgres_full")] > 0
    assert exported[("backup_last_success_timestamp_seconds", "postgres_incremental")] > 0
    from datetime import datetime
    from zoneinfo import ZoneInfo

    from erp_backup_pipeline.orchestration.resources import BackupSettingsResource

    resources = {"backup_settings": BackupSettingsResource.pinned(str(config))}
    tick = datetime(2026, 11, 26, 14, 0, tzinfo=ZoneInfo("UTC"))
    with dg.build_schedule_context(scheduled_execution_time=tick, resources=resources,
                                   repository_def=defs.get_repository_def()) as ctx:
        [hourly] = defs.resolve_schedule_def("postgres_incremental_schedule").evaluate_tick(ctx).run_requests
    assert hourly.partition_key == "2026-11-26-14:00"
    # the weekly verification drills the repository: the latest state restored, started, promoted, removed
    sunday = datetime(2026, 11, 29, 6, 0, tzinfo=ZoneInfo("Europe/Berlin"))
    with dg.build_schedule_context(scheduled_execution_time=sunday, resources=resources,
                                   repository_def=defs.get_repository_def()) as ctx:
        [weekly] = defs.resolve_schedule_def("verify_backups_weekly").evaluate_tick(ctx).run_requests
    assert weekly.asset_check_keys == [dg.AssetCheckKey(dg.AssetKey("postgres_full"), "restore_drill")]
    verify = defs.resolve_job_def("verify_backups").execute_in_process(instance=instance)
    [drilled] = verify.get_asset_check_evaluations()
    assert drilled.passed and drilled.metadata["timeline"].value == 2 and drilled.metadata["restore_seconds"].value > 0
    assert not list((c.base / "pgbr").glob("drill-*"))


def test_the_command_line_sets_up_plans_and_restores_to_a_time(pitr_cluster: PitrCluster, tmp_path: Path,
                                                               age_identity) -> None:
    from erp_backup_pipeline_tests.pitr_cluster import pitr_section
    from erp_backup_pipeline_tests.test_cli import cli
    from erp_backup_pipeline_tests.test_dagster import write_config

    c = pitr_cluster
    config = write_config(tmp_path, age_identity, pitr=pitr_section(c.base, pg_port=c.server.port))
    setup = cli("pg", "setup", config=config)
    assert "archive_command = 'pgbackrest --config=" in setup.stdout and "check: the cluster archives" in setup.stdout
    assert "restore_command = 'pgbackrest --config=" in setup.stdout and 'archive-get %f "%p"' in setup.stdout
    assert CIPHER not in setup.stdout + setup.stderr
    c.sql("CREATE TABLE orders (id int)")
    full = c.engine.backup("full")
    target = c.target_between("INSERT INTO orders SELECT generate_series(1, 7)",
                              "INSERT INTO orders SELECT generate_series(8, 9)").isoformat(sep=" ", timespec="seconds")
    datadir = scratch(c) / "data"
    dry = cli("restore", "postgres", "--target-time", target, "--to", str(datadir), "--dry-run", config=config)
    assert f"backup set {full['label']} (full" in dry.stdout and "dry run: nothing changed" in dry.stdout
    assert not datadir.exists()
    port = free_port()
    done = cli("restore", "postgres", "--target-time", target, "--to", str(datadir), "--port", str(port), config=config)
    try:
        assert "promoted onto timeline 2" in done.stdout
        assert recover.psql(c.settings, datadir, port, "SELECT count(*) FROM orders") == "7"
    finally:
        recover.stop(c.settings, datadir)
    bad = cli("restore", "postgres", "--target-time", "yesterday", "--to", str(c.base / "x"), config=config, check=False)
    assert bad.returncode == 1 and bad.stderr.strip().count("\n") == 0 and "is not a time such as" in bad.stderr
    wrong = cli("restore", "sqlite", "--latest", "--to", str(c.base / "x"), config=config, check=False)
    assert wrong.returncode == 1 and "for postgres only" in wrong.stderr


def test_the_runbook_restores_with_pgbackrest_alone(pitr_cluster: PitrCluster) -> None:
    """docs/runbook.md's lines, verbatim, as the postgres user: no erp-backup involved."""
    import re
    import subprocess

    from erp_backup_pipeline_tests.docs import docs_text

    runbook = docs_text("runbook.md")
    block = re.search(r"PostgreSQL to a point in time, with pgBackRest alone.*?```sh\n(.*?)```", runbook, re.S)
    assert block is not None
    lines = block.group(1).strip().splitlines()
    assert len(lines) == 4
    c = pitr_cluster
    c.sql("CREATE TABLE ledger (id int)")
    c.engine.backup("full")
    target = c.target_between("INSERT INTO ledger SELECT generate_series(1, 3)",
                              "INSERT INTO ledger SELECT generate_series(4, 5)").isoformat(sep=" ", timespec="seconds")
    datadir = scratch(c) / "data"
    datadir.mkdir(mode=0o700)
    subprocess.run(["chown", "postgres:postgres", str(datadir)], check=True)
    port = free_port()
    values = {"CONF": str(config.layout(c.settings).config), "DATADIR": str(datadir), "TIME": target, "PORT": str(port)}
    try:
        for line in lines:
            for name, value in values.items():
                line = line.replace(name, value)
            subprocess.run(["runuser", "-u", "postgres", "--", "bash", "-o", "pipefail", "-c", line], check=True,
                           capture_output=True, text=True)
        # the restored cluster kept the original's socket directory (the runbook changes only the port)
        count = recover.psql(c.settings, c.server.sockdir, port, "SELECT count(*) FROM ledger")
        assert count == "3"
    finally:
        recover.stop(c.settings, datadir)


def test_end_of_day_is_midnight_berlin_across_dst() -> None:
    from erp_backup_pipeline.core.pitr.backfill import end_of_day

    assert end_of_day("2026-11-25").astimezone(UTC).isoformat() == "2026-11-25T23:00:00+00:00"
    assert end_of_day("2026-07-01").astimezone(UTC).isoformat() == "2026-07-01T22:00:00+00:00"
    assert end_of_day("2026-03-29").astimezone(UTC).isoformat() == "2026-03-29T22:00:00+00:00"  # 23-hour day
    assert end_of_day("2026-10-25").astimezone(UTC).isoformat() == "2026-10-25T23:00:00+00:00"  # 25-hour day


def test_backfill_dumps_the_data_as_it_was_not_as_it_is(pitr_cluster: PitrCluster, tmp_path: Path,
                                                        age_identity) -> None:
    import psycopg

    from erp_backup_pipeline.core.pitr.backfill import backfill_dump
    from erp_backup_pipeline.core.restore import restore_backup
    from erp_backup_pipeline_tests.conftest import ERP_PASSWORD
    c = pitr_cluster
    c.sql(f"CREATE ROLE erp_user LOGIN CREATEDB PASSWORD '{ERP_PASSWORD}'")
    c.sql("CREATE DATABASE erp OWNER erp_user")
    with psycopg.connect(c.server.dsn("erp", "erp_user", ERP_PASSWORD), autocommit=True) as conn:
        conn.execute("CREATE TABLE invoices (id int PRIMARY KEY)")
        c.engine.backup("full")
        conn.execute("INSERT INTO invoices SELECT generate_series(1, 40)")
        time.sleep(1.1)
        then = datetime.now(UTC)
        time.sleep(1.1)
        conn.execute("INSERT INTO invoices SELECT generate_series(41, 50)")
    c.sql("SELECT pg_switch_wal()")
    c.engine.check()
    from erp_backup_pipeline_tests.conftest import make_settings
    from erp_backup_pipeline_tests.pitr_cluster import pitr_section

    settings = make_settings(tmp_path, age_identity, pitr=pitr_section(c.base, pg_port=c.server.port), sources={
        "postgres": {"host": "127.0.0.1", "port": c.server.port, "user": "erp_user", "password": ERP_PASSWORD,
                     "dbname": "erp", "sslmode": "disable"}})
    m = backfill_dump(settings, "2026-11-25", target=then)
    assert m.mode.startswith(f"pitr: recovered to {then.isoformat()} from backup set ")
    assert m.facts["row_counts"]["public.invoices"] == 40
    restore_backup(settings, "postgres_dump", "2026-11-25", "erp_as_it_was")
    with psycopg.connect(c.server.dsn("erp_as_it_was", "erp_user", ERP_PASSWORD)) as conn:
        assert conn.execute("SELECT count(*) FROM invoices").fetchone()[0] == 40
    assert not [p for p in (c.base / "pgbr").glob("backfill-*")]  # the scratch cluster is gone
    with pytest.raises(RestoreError, match="is not over yet in Europe/Berlin"):
        backfill_dump(settings, datetime.now(ZoneInfo("Europe/Berlin")).date().isoformat())


def test_the_backfill_job_refuses_a_day_the_archive_does_not_cover(pitr_cluster: PitrCluster, tmp_path: Path,
                                                                   age_identity) -> None:
    import dagster as dg

    from erp_backup_pipeline.orchestration.definitions import build_definitions
    from erp_backup_pipeline_tests.pitr_cluster import pitr_section
    from erp_backup_pipeline_tests.test_dagster import write_config

    c = pitr_cluster
    c.engine.backup("full")  # taken today: the archive cannot reach back to the end of 2026-11-20
    config = write_config(tmp_path, age_identity, pitr=pitr_section(c.base, pg_port=c.server.port),
                          sources={"postgres": {"host": "127.0.0.1", "port": c.server.port, "user": "postgres",
                                                "dbname": "postgres", "password": c.server.password}})
    job = build_definitions(str(config)).resolve_job_def("postgres_dump_pitr_backfill")
    result = job.execute_in_process(partition_key="2026-11-20", instance=dg.DagsterInstance.ephemeral(),
                                    raise_on_error=False)
    assert not result.success
    [failure] = [e for e in result.all_events if e.is_step_failure]
    message = failure.step_failure_data.user_failure_data.description
    assert message.startswith("target time 2026-11-21T00:00:00+01:00 is before the end of the oldest backup")


def test_an_s3_repository_is_configured_for_pgbackrest(tmp_path: Path, age_identity) -> None:
    from erp_backup_pipeline.errors import ConfigError
    from erp_backup_pipeline_tests.conftest import make_settings

    repo = {"type": "s3", "bucket": "erp-pitr", "endpoint": "s3.eu-central-1.amazonaws.com", "path": "/site-a",
            "access_key_id": "AKIAEXAMPLE", "secret_access_key": "s3-Secret-for-pitr-9a1", "uri_style": "path"}
    settings = make_settings(tmp_path, age_identity, pitr={"pg_data": "/var/lib/postgresql/15/main", "repo": repo})
    text = config.render(settings)
    for line in ("repo1-type=s3", "repo1-s3-bucket=erp-pitr", "repo1-s3-endpoint=s3.eu-central-1.amazonaws.com",
                 "repo1-path=/site-a", "repo1-s3-key-secret=s3-Secret-for-pitr-9a1", "repo1-s3-uri-style=path",
                 "repo1-storage-verify-tls=y", "compress-type=zst", "[erp]", "pg1-path=/var/lib/postgresql/15/main"):
        assert line in text.splitlines(), line
    assert "s3-Secret-for-pitr-9a1" in settings.secrets()  # redacted from every log line and error
    with_port = make_settings(tmp_path, age_identity, pitr={"pg_data": "/d", "repo": {**repo, "endpoint": "minio:9000"}})
    assert "repo1-storage-port=9000" in config.render(with_port).splitlines()
    keyless = make_settings(tmp_path, age_identity, pitr={"pg_data": "/d", "repo": {**repo, "secret_access_key": None}})
    with pytest.raises(ConfigError, match="an s3 repository needs access_key_id and secret_access_key"):
        config.render(keyless)


def test_backup_from_archive_on_the_command_line_is_one_line_when_the_archive_is_too_young(
        pitr_cluster: PitrCluster, tmp_path: Path, age_identity) -> None:
    from erp_backup_pipeline_tests.pitr_cluster import pitr_section
    from erp_backup_pipeline_tests.test_cli import cli
    from erp_backup_pipeline_tests.test_dagster import write_config

    c = pitr_cluster
    c.engine.backup("full")
    config = write_config(tmp_path, age_identity, pitr=pitr_section(c.base, pg_port=c.server.port),
                          sources={"postgres": {"host": "127.0.0.1", "port": c.server.port, "user": "postgres",
                                                "dbname": "postgres", "password": c.server.password}})
    done = cli("backup", "postgres_dump", "--partition", "2026-11-20", "--from-archive", config=config, check=False)
    assert done.returncode == 1 and "target time 2026-11-21T00:00:00+01:00 is before the end of the oldest backup" in done.stderr
    misuse = cli("backup", "sqlite", "--from-archive", "--partition", "2026-11-20", config=config, check=False)
    assert misuse.returncode == 1 and "--from-archive backs up postgres_dump" in misuse.stderr
