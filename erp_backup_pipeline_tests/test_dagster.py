"""The Dagster shell: definitions load, materialize with real servers, blocking check, schedules."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import dagster as dg
import pytest
import yaml

from erp_backup_pipeline.orchestration.assets import BACKUP_ASSETS, build_backup_asset, daily_partitions, source_spec
from erp_backup_pipeline.orchestration.definitions import build_definitions, defs
from erp_backup_pipeline.orchestration.resources import BackupSettingsResource
from erp_backup_pipeline.settings import load_settings
from erp_backup_pipeline_tests.conftest import ERP_PASSWORD, S3_KEY_ID, S3_SECRET, catalog_entries, signing_section


def write_config(tmp_path: Path, age_identity, **sections: Any) -> Path:
    data = {
        "staging_dir": str(tmp_path / "staging"),
        "encryption": {"recipients": [age_identity[1]], "identity_file": str(age_identity[0])},
        "signing": signing_section(),
        "destinations": [{"type": "local", "path": str(tmp_path / "backups")}],
        **sections,
    }
    path = tmp_path / "erp-backup.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def materialize(name: str, config: Path, partition: str = "2026-11-25") -> dg.ExecuteInProcessResult:
    info = BACKUP_ASSETS[name]
    return dg.materialize([build_backup_asset(info), source_spec(info)], partition_key=partition,
                          resources={"backup_settings": BackupSettingsResource.pinned(str(config))},
                          raise_on_error=False)


def check(result: dg.ExecuteInProcessResult, name: str = "integrity") -> Any:
    [found] = [e for e in result.get_asset_check_evaluations() if e.check_name == name]
    return found


def metadata(result: dg.ExecuteInProcessResult) -> dict[str, Any]:
    [event] = result.get_asset_materialization_events()
    return {k: v.value for k, v in event.materialization.metadata.items()}


ROOT = Path(__file__).resolve().parent.parent  # the project: pyproject.toml


def test_definitions_load_with_every_asset_check_job_and_schedule() -> None:
    dg.Definitions.validate_loadable(defs)
    graph = defs.resolve_asset_graph()
    keys = {k.to_user_string() for k in graph.get_all_asset_keys()}
    expected = {"sqlite_backup": ("erp_sqlite_database", "0 2 * * *"),
                "postgres_dump": ("erp_postgres_database", "0 2 * * *"),
                "redis_snapshot": ("erp_redis", "0 3 * * *"),
                "config_archive": ("erp_config_files", "0 4 * * *"),
                "uploads_snapshot": ("erp_uploads", "0 5 * * *")}
    assert set(BACKUP_ASSETS) == set(expected)
    for name, (upstream, cron) in expected.items():
        assert {name, upstream} <= keys
        node = graph.get(dg.AssetKey(name))
        assert node.partitions_def == daily_partitions
        assert node.group_name == "erp_backups" and node.owners == ["team:erp-ops"]
        assert dg.AssetKey(upstream) in node.parent_keys
        assert dg.AssetCheckKey(dg.AssetKey(name), "integrity") in graph.asset_check_keys
        assert defs.resolve_job_def(f"{name}_job").executor_def.name == "in_process"
        sched = defs.resolve_schedule_def(f"{name}_nightly")
        assert sched.cron_schedule == cron and sched.execution_timezone == "Europe/Berlin"
    # no backfill policy: a backfill launches one run per date carrying dagster/partition, so the checks those runs
    # evaluate are recorded under their date (with a policy, even multi_run(1), a run carries only a partition
    # range and Dagster records its check results under no partition)
    assert graph.get(dg.AssetKey("sqlite_backup")).backfill_policy is None


def test_dg_checks_and_lists_the_definitions_of_this_project(tmp_path: Path) -> None:
    """Dagster's dg CLI finds the project from pyproject.toml's [tool.dg] section: ``dg check defs`` loads the
    definitions, ``dg list defs`` names every backup asset and its job."""
    dg_cli = Path(sys.executable).with_name("dg")
    (tmp_path / "dagster.yaml").write_text("")
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path), "DAGSTER_DISABLE_TELEMETRY": "1"}
    checked = subprocess.run([str(dg_cli), "check", "defs"], cwd=ROOT, env=env, capture_output=True, text=True,
                             timeout=300)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "All definitions loaded successfully" in checked.stdout + checked.stderr
    listed = subprocess.run([str(dg_cli), "list", "defs", "--json"], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=300)
    assert listed.returncode == 0, listed.stderr
    found = json.loads(listed.stdout)
    assert set(BACKUP_ASSETS) <= {a["asset_key"] for a in found["assets"]}
    assert {f"{name}_job" for name in BACKUP_ASSETS} <= {j["name"] for j in found["jobs"]}


def test_dst_days_have_exactly_one_partition() -> None:
    keys = daily_partitions.get_partition_keys_in_range(dg.PartitionKeyRange("2026-03-28", "2026-10-26"))
    assert keys.count("2026-03-29") == 1 and keys.count("2026-10-25") == 1
    assert len(keys) == len(set(keys)) == 213


def test_materialize_sqlite_to_local_and_s3(tmp_path: Path, demo_sqlite, age_identity, moto_server, bucket) -> None:
    config = write_config(tmp_path, age_identity, sources={"sqlite": {"path": str(demo_sqlite)}}, destinations=[
        {"type": "local", "path": str(tmp_path / "backups")},
        {"type": "s3", "name": "offsite", "bucket": bucket, "endpoint_url": moto_server.endpoint,
         "access_key_id": S3_KEY_ID, "secret_access_key": S3_SECRET}])
    result = materialize("sqlite_backup", config)
    assert result.success
    assert check(result).passed and check(result, "size_anomaly").passed
    md = metadata(result)
    for key in ("raw_bytes", "compressed_bytes", "encrypted_bytes", "rows/invoices"):
        assert isinstance(md[key], int) and md[key] > 0
    for key in ("compression_ratio", "dump_seconds", "compress_seconds", "verify_seconds", "encrypt_seconds"):
        assert isinstance(md[key], float)
    assert md["rows/invoices"] == 200 and md["compression_ratio"] > 1.5
    # the operator's page: one name per figure, sizes a person reads, the time it took, how to restore this capture
    assert not {"dump_bytes", "compress_bytes", "encrypt_bytes"} & set(md)
    assert re.fullmatch(r"[\d.]+ (B|KiB|MiB) stored \([\d.]+ (B|KiB|MiB) raw, [\d.]+ (B|KiB|MiB) compressed\)", md["size"])
    assert 0 < md["backup_seconds"] < 120
    assert "erp-backup restore sqlite --partition 2026-11-25 --to TARGET --dry-run" in md["restore"]
    assert "docs/runbook.md" in md["restore"] and (Path(__file__).parent.parent / "docs" / "runbook.md").exists()
    uri = md["dagster/uri"]
    local = Path(uri.removeprefix("file://"))
    assert hashlib.sha256(local.read_bytes()).hexdigest() == md["sha256"]
    [entry] = catalog_entries(load_settings(config))
    assert sorted(entry.held_by) == ["local", "offsite"] and entry.manifest.complete


def test_materialize_redis_snapshot(tmp_path: Path, redis_server, age_identity) -> None:
    from erp_backup_pipeline_tests.conftest import redis_source

    redis_server.client().set("session:x", "y")
    config = write_config(tmp_path, age_identity, sources=redis_source(redis_server))
    result = materialize("redis_snapshot", config)
    assert result.success
    assert check(result).passed and check(result).metadata["keys"].value == 1
    md = metadata(result)
    assert md["dagster/uri"].endswith(".rdb.zst.age") and md["keys/db0"] == 1 and md["keys"] == 1


def test_materialize_config_archive_and_restore_with_the_cli(tmp_path: Path, age_identity) -> None:
    import subprocess
    import sys

    erp = tmp_path / "erp"
    (erp / "apps" / "backend" / "config").mkdir(parents=True)
    (erp / "apps" / "backend" / "config" / "app.json").write_text('{"currency": "EUR"}')
    (erp / ".env").write_text("SESSION_SECRET=never-print-me\n")
    (erp / ".env").chmod(0o600)
    (erp / "node_modules").mkdir()
    (erp / "node_modules" / "junk.js").write_text("x")
    config = write_config(tmp_path, age_identity, sources={"config": {"paths": [str(erp / ".env"), str(erp / "apps")]}})
    result = materialize("config_archive", config)
    assert result.success
    md = metadata(result)
    assert md["dagster/uri"].endswith(".tar.zst.age") and md["files"] == 2
    assert "never-print-me" not in repr(result.all_events)
    target = tmp_path / "restored-config"
    done = subprocess.run([sys.executable, "-m", "erp_backup_pipeline.cli", "--config", str(config), "restore", "config",
                           "--partition", "2026-11-25", "--to", str(target)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert (target / ".env").read_text() == "SESSION_SECRET=never-print-me\n"
    assert (target / ".env").stat().st_mode & 0o777 == 0o600
    assert (target / "apps" / "backend" / "config" / "app.json").exists()
    assert not (target / "node_modules").exists()


def test_materialize_postgres_dump(tmp_path: Path, pg_server, erp_db, age_identity) -> None:
    config = write_config(tmp_path, age_identity, sources={"postgres": {
        "host": "127.0.0.1", "port": pg_server.port, "user": "erp_user", "dbname": erp_db,
        "password": "${TEST_ERP_PW}", "sslmode": "disable"}})
    import os

    os.environ["TEST_ERP_PW"] = ERP_PASSWORD
    try:
        result = materialize("postgres_dump", config)
    finally:
        del os.environ["TEST_ERP_PW"]
    assert result.success
    md = metadata(result)
    assert md["rows/public.invoice_lines"] == 6000 and md["dagster/uri"].endswith(".pgdump.zst.age")


def test_corrupt_compressed_stream_fails_the_blocking_check_and_ships_nothing(
        tmp_path: Path, demo_sqlite, age_identity, moto_server, bucket, s3_client,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A compressor that emits one wrong byte (a fault no real server shows): the in-flight verifier
    catches it, the blocking check fails the run, every waiting upload is aborted, and the earlier
    backup is untouched."""
    from erp_backup_pipeline.core.codecs.zstd import ZstdCodec

    config = write_config(tmp_path, age_identity, sources={"sqlite": {"path": str(demo_sqlite)}}, destinations=[
        {"type": "local", "path": str(tmp_path / "backups")},
        {"type": "s3", "name": "offsite", "bucket": bucket, "endpoint_url": moto_server.endpoint,
         "access_key_id": S3_KEY_ID, "secret_access_key": S3_SECRET}])
    assert materialize("sqlite_backup", config, "2026-11-24").success
    real = ZstdCodec.compress

    def flipping_compress(self, src, dst):  # type: ignore[no-untyped-def]
        class Flip:
            done = False

            def write(self, data: bytes) -> int:
                if not Flip.done and len(data) > 100:
                    data = data[:50] + bytes([data[50] ^ 0x01]) + data[51:]
                    Flip.done = True
                return dst.write(data)

        return real(self, src, Flip())

    monkeypatch.setattr(ZstdCodec, "compress", flipping_compress)
    result = materialize("sqlite_backup", config, "2026-11-25")
    assert not result.success
    integrity = check(result)
    assert not integrity.passed and integrity.severity == dg.AssetCheckSeverity.ERROR
    assert result.get_asset_materialization_events() == []
    entries = catalog_entries(load_settings(config))
    assert [e.manifest.partition for e in entries] == ["2026-11-24"]
    assert sorted(entries[0].held_by) == ["local", "offsite"]
    assert [p for p in (tmp_path / "backups").rglob("*") if "2026-11-25" in str(p) and p.is_file()] == []
    assert s3_client.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    assert not [o for o in s3_client.list_objects_v2(Bucket=bucket).get("Contents", []) if "2026-11-25" in o["Key"]]
    assert [p for p in (tmp_path / "staging").rglob("*") if p.is_file()] == []


def test_bad_config_fails_the_run_with_one_line(tmp_path: Path, demo_sqlite, age_identity) -> None:
    config = write_config(tmp_path, age_identity, sources={"sqlite": {"path": str(demo_sqlite), "pth": "x"}})
    result = materialize("sqlite_backup", config)
    assert not result.success
    [failure] = [e for e in result.all_events if e.is_step_failure]
    text = failure.step_failure_data.error.message
    assert "sources.sqlite.pth: unknown key" in text


def test_rematerializing_a_partition_keeps_the_earlier_copy(tmp_path: Path, demo_sqlite, age_identity) -> None:
    config = write_config(tmp_path, age_identity, sources={"sqlite": {"path": str(demo_sqlite)}})
    first = metadata(materialize("sqlite_backup", config))
    second = metadata(materialize("sqlite_backup", config))
    assert first["dagster/uri"] != second["dagster/uri"]
    assert Path(first["dagster/uri"].removeprefix("file://")).exists()
    entries = catalog_entries(load_settings(config))
    assert len(entries) == 2 and entries[0].manifest.captured_at <= entries[1].manifest.captured_at


def test_schedule_requests_its_own_date_and_unconfigured_sources_are_marked_not_run(tmp_path: Path, demo_sqlite,
                                                                        age_identity) -> None:
    config = write_config(tmp_path, age_identity, sources={"sqlite": {"path": str(demo_sqlite)}})
    local_defs = build_definitions(str(config))
    tick = datetime(2026, 11, 26, 2, 0, tzinfo=ZoneInfo("Europe/Berlin"))
    resources = {"backup_settings": BackupSettingsResource.pinned(str(config))}
    with dg.build_schedule_context(scheduled_execution_time=tick, resources=resources,
                                   repository_def=local_defs.get_repository_def()) as ctx:
        [request] = local_defs.resolve_schedule_def("sqlite_backup_nightly").evaluate_tick(ctx).run_requests
    assert request.partition_key == "2026-11-26"
    # a source the config file does not have: no schedule, no job, its asset marked and not executable
    assert "postgres_dump_nightly" not in {s.name for s in local_defs.schedules or []}
    graph = local_defs.resolve_asset_graph()
    absent = graph.get(dg.AssetKey("postgres_dump"))
    assert not absent.is_executable and not absent.is_partitioned and absent.group_name == "erp_backups"
    assert absent.tags["erp_backup/configured"] == "no"
    assert (absent.description or "").startswith("NOT CONFIGURED") and "sources.postgres" in absent.description
    assert graph.get(dg.AssetKey("sqlite_backup")).is_executable
    assert [k.to_user_string() for k in graph.materializable_asset_keys if k.to_user_string() in BACKUP_ASSETS] \
        == ["sqlite_backup"]
    # a schedule loaded while the source was configured skips it once the file no longer has it
    everything = build_definitions("/nonexistent/erp-backup.yaml")
    with dg.build_schedule_context(scheduled_execution_time=tick, resources=resources,
                                   repository_def=everything.get_repository_def()) as ctx:
        data = everything.resolve_schedule_def("postgres_dump_nightly").evaluate_tick(ctx)
    assert not data.run_requests and "postgres_dump is not configured" in (data.skip_message or "")


def test_freshness_check_fails_without_the_newest_partition_and_passes_with_it(tmp_path: Path, demo_sqlite,
                                                                              age_identity) -> None:
    from erp_backup_pipeline.orchestration.freshness import deadline_cron

    assert deadline_cron("sqlite_backup") == "0 3 * * *" and deadline_cron("uploads_snapshot") == "0 6 * * *"
    config = write_config(tmp_path, age_identity, sources={"sqlite": {"path": str(demo_sqlite)}})
    local = build_definitions(str(config))
    key = dg.AssetCheckKey(dg.AssetKey("sqlite_backup"), "freshness_check")
    assert key in local.resolve_asset_graph().asset_check_keys
    assert local.resolve_sensor_def("backup_freshness_sensor").default_status == dg.DefaultSensorStatus.RUNNING
    fresh_job = dg.Definitions.merge(local, dg.Definitions(jobs=[dg.define_asset_job(
        "freshness", selection=dg.AssetSelection.checks(key))])).resolve_job_def("freshness")
    instance = dg.DagsterInstance.ephemeral()
    [stale] = fresh_job.execute_in_process(instance=instance, raise_on_error=False).get_asset_check_evaluations()
    assert not stale.passed
    today = datetime.now(ZoneInfo("Europe/Berlin")).date()
    for day in (today - timedelta(days=1), today):  # whichever the deadline makes the newest, both exist
        run = local.resolve_job_def("sqlite_backup_job").execute_in_process(partition_key=day.isoformat(),
                                                                            instance=instance)
        # the backup run evaluates its own checks; freshness is the sensor's business
        assert run.success and {e.check_name for e in run.get_asset_check_evaluations()} == {
            "integrity", "size_anomaly", "restore_drill"}
    [fresh] = fresh_job.execute_in_process(instance=instance, raise_on_error=False).get_asset_check_evaluations()
    assert fresh.passed
    # postgres is not configured here: no freshness check that could only ever fail
    checks = {k for k in local.resolve_asset_graph().asset_check_keys if k.name == "freshness_check"}
    assert checks == {key}


# ------------------------------------------------------------------------------------- concurrency pools

def _pools_by_node(job: Any) -> dict[str, str | None]:
    return {op.name: op.pool for op in job.graph.iterate_op_defs()}


def test_every_op_that_backs_up_or_drills_a_source_is_in_its_source_pool() -> None:
    """The run queue keeps two runs of one source apart by these pools (granularity run), so that an asset
    backfill's runs (Dagster's implicit job: none of our run tags) are kept apart too."""
    full = build_definitions("/nonexistent/erp-backup.yaml")  # every source and check, as when the file is absent
    everything = _pools_by_node(full.resolve_implicit_global_asset_job_def())
    expected: dict[str, str] = {}
    for name in BACKUP_ASSETS:
        for stage in ("dump", "compress", "verify", "encrypt", "ship", "manifest", "restore_drill"):
            expected[f"{name}_{stage}"] = f"erp_backup/{name}"
    for name in ("postgres_full", "postgres_incremental", "postgres_full_restore_drill"):
        expected[name] = "erp_backup/postgres_pitr"
    expected["backup_retention"] = "erp_backup/backup_retention"
    assert {n: everything.get(n) for n in expected} == expected
    # the jobs run the same op definitions; the pitr backfill writes postgres_dump's partitions
    for job in full.resolve_all_job_defs():
        for node, pool in _pools_by_node(job).items():
            if node in expected:
                assert pool == expected[node], (job.name, node)
    backfill = _pools_by_node(full.resolve_job_def("postgres_dump_pitr_backfill"))
    assert backfill == {"postgres_dump_from_pitr": "erp_backup/postgres_dump"}
    # a source's backup and its drill share one pool; sources do not share pools
    assert len({expected[f"{name}_dump"] for name in BACKUP_ASSETS}) == len(BACKUP_ASSETS)


def _instance_config(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text())
    assert data["concurrency"] == {
        "pools": {"granularity": "run", "default_limit": 1},
        "runs": {"max_concurrent_runs": 4, "tag_concurrency_limits": [
            {"key": "erp_backup/source", "value": {"applyLimitPerUniqueValue": True}, "limit": 1}]}}
    assert "run_queue" not in data
    assert not (data.get("run_coordinator") or {}).get("config"), "run limits belong under concurrency > runs"
    return dict(data)


@pytest.mark.parametrize("which", ["local", "production"])
def test_both_instance_files_load_with_run_granularity_pools_and_the_run_queue_limits(
        which: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from dagster._core.instance.config import PoolGranularity

    root = Path(__file__).resolve().parent.parent
    source = root / "dagster.yaml" if which == "local" else root / "deploy" / which / "dagster.yaml"
    config = _instance_config(source)
    if which == "production":
        # the same file, storage swapped for local files: what is checked here is everything else
        config.pop("storage")
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(yaml.safe_dump(config))
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    with dg.DagsterInstance.get() as instance:
        assert instance.global_op_concurrency_default_limit == 1
        concurrency = instance.get_concurrency_config()
        assert concurrency.pool_config.pool_granularity == PoolGranularity.RUN
        queue = concurrency.run_queue_config
        assert queue is not None and queue.max_concurrent_runs == 4
        assert queue.should_block_op_concurrency_limited_runs
        assert [dict(x) for x in queue.tag_concurrency_limits] == [
            {"key": "erp_backup/source", "value": {"applyLimitPerUniqueValue": True}, "limit": 1}]
        assert type(instance.run_coordinator).__name__ == "QueuedRunCoordinator"
        if which == "production":  # a run that crashed or never started is run once more; a failed op is not
            assert instance.run_retries_enabled and instance.run_retries_max_retries == 1
            assert instance.run_retries_retry_on_asset_or_op_failure is False


def test_a_run_keeps_the_configuration_it_started_with(tmp_path: Path, demo_sqlite, age_identity,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """The config file is edited between compress and ship (another destination): the run ships where it began,
    builds its destinations once, and the next run takes the new file."""
    from erp_backup_pipeline.core import destinations, pipeline

    config = write_config(tmp_path, age_identity, sources={"sqlite": {"path": str(demo_sqlite)}})
    compress, built = pipeline.stage_compress, []
    real_build = destinations.build_destinations

    def compress_then_edit(*args: Any, **kwargs: Any) -> Any:
        result = compress(*args, **kwargs)
        data = yaml.safe_load(config.read_text())
        data["destinations"] = [{"type": "local", "path": str(tmp_path / "elsewhere")}]
        config.write_text(yaml.safe_dump(data))
        return result

    monkeypatch.setattr(pipeline, "stage_compress", compress_then_edit)
    monkeypatch.setattr(destinations, "build_destinations", lambda s: built.append(1) or real_build(s))
    monkeypatch.setattr("erp_backup_pipeline.core.site.build_destinations", destinations.build_destinations)
    result = materialize("sqlite_backup", config)
    assert result.success
    assert metadata(result)["dagster/uri"].startswith(f"file://{tmp_path / 'backups'}/")
    assert not (tmp_path / "elsewhere").exists()
    assert len(built) == 1  # one run, one configuration, destinations built once
    monkeypatch.setattr(pipeline, "stage_compress", compress)
    result = materialize("sqlite_backup", config, partition="2026-11-26")
    assert result.success and metadata(result)["dagster/uri"].startswith(f"file://{tmp_path / 'elsewhere'}/")
