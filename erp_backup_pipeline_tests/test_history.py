"""One history: backups made outside Dagster (``erp-backup backup``) reach Dagster's history through
``backup_history_sensor``, once each, with the metadata and the integrity check a run gives them, and reach the
Prometheus metrics with their own times; a run's own backup and a forged manifest are never recorded by it."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import dagster as dg
import pytest

from erp_backup_pipeline.core import chain
from erp_backup_pipeline.core.catalog import of as catalog_of
from erp_backup_pipeline.orchestration import history
from erp_backup_pipeline.orchestration.definitions import build_definitions
from erp_backup_pipeline.orchestration.resources import BackupSettingsResource
from erp_backup_pipeline.settings import load_settings
from erp_backup_pipeline_tests.test_alerting import instance_for_test, run_job
from erp_backup_pipeline_tests.test_dagster import write_config
from erp_backup_pipeline_tests.test_metrics import samples


def tick(config: Path, instance: dg.DagsterInstance) -> str | None:
    defs = build_definitions(str(config))
    ctx = dg.build_sensor_context(instance=instance, definitions=defs,
                                  resources={"backup_settings": BackupSettingsResource.pinned(str(config))})
    return defs.resolve_sensor_def(history.SENSOR).evaluate_tick(ctx).skip_message


def materializations(instance: dg.DagsterInstance, partition: str) -> list[Any]:
    records = instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=dg.AssetKey("sqlite_backup"),
                                                                    asset_partitions=[partition]), limit=100).records
    return [r for r in records if r.asset_materialization is not None]


def cli_backup(config: Path, partition: str) -> None:
    done = subprocess.run([str(Path(sys.executable).with_name("erp-backup")), "--config", str(config), "backup",
                           "sqlite", "--partition", partition], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr


def test_command_line_backups_are_recorded_once_with_their_check_and_reach_the_metrics(
        tmp_path: Path, demo_sqlite: Path, age_identity, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(history, "SETTLE", timedelta(0))  # the backups here are seconds old
    config = write_config(tmp_path, age_identity, sources={"sqlite": {"path": str(demo_sqlite)}},
                          state_dir=str(tmp_path / "state"))
    today = datetime.now(ZoneInfo("Europe/Berlin")).date()
    by_run, by_cli = (today - timedelta(days=2)).isoformat(), (today - timedelta(days=1)).isoformat()
    with instance_for_test(tmp_path) as instance:
        assert run_job(build_definitions(str(config)), instance, "sqlite_backup_job", by_run).success
        assert tick(config, instance) == "every backup of the last days is in Dagster's history"  # the run's own

        cli_backup(config, by_cli)
        cli_backup(config, by_run)  # a second capture of a date a run backed up
        settings = load_settings(str(config))
        made = {e.manifest.partition: e for e in catalog_of(settings, "sqlite_backup").entries
                if e.manifest.partition == by_cli}
        message = tick(config, instance)
        assert message is not None and message.startswith("2 backup(s) made outside Dagster recorded: sqlite_backup ")
        assert by_cli in message and by_run in message

        [recorded] = materializations(instance, by_cli)
        md = {k: v.value for k, v in recorded.asset_materialization.metadata.items()}
        m = made[by_cli].manifest
        assert md["manifest_sha256"] == chain.digest(m.to_json()) and md["sha256"] == m.artifact_sha256
        assert md["encrypted_bytes"] == m.artifact_bytes and md["sequence"] == m.sequence
        assert "recorded_by" in md and "erp-backup restore sqlite --partition" in str(md["restore"])
        assert len(materializations(instance, by_run)) == 2  # the run's, and the command line's second capture
        checks = instance.event_log_storage.get_asset_check_execution_history(
            dg.AssetCheckKey(dg.AssetKey("sqlite_backup"), "integrity"), limit=10)
        assert {(c.partition, c.status.value) for c in checks} >= {(by_cli, "SUCCEEDED"), (by_run, "SUCCEEDED")}
        # each targets its partition's latest materialization: what the UI's per-partition check view counts as Passed
        for partition in (by_cli, by_run):
            [latest] = [c for c in checks if c.partition == partition][:1]
            target = latest.event.dagster_event.event_specific_data.target_materialization_data
            assert target is not None and target.storage_id == materializations(instance, partition)[0].storage_id

        # nothing twice, also after a restart (new definitions, no cursor: the manifests' sha256 decide)
        assert tick(config, instance) == "every backup of the last days is in Dagster's history"

        # the metrics: the newest recorded backup (the command line's), at its own time and size
        found = samples(instance)
        newest = max((r.asset_materialization.metadata for p in (by_run, by_cli) for r in materializations(instance, p)),
                     key=lambda md: md["captured_at"].value)
        assert found[("backup_size_bytes", "sqlite_backup")] == newest["encrypted_bytes"].value
        started = datetime.fromisoformat(str(newest["captured_at"].value)).timestamp()
        stamp = found[("backup_last_success_timestamp_seconds", "sqlite_backup")]
        assert started <= stamp <= datetime.now(UTC).timestamp()
        assert found[("backup_duration_seconds", "sqlite_backup")] == newest["backup_seconds"].value

        # a planted manifest (a valid one copied under another date) is rejected by the catalog, never recorded
        planted = (today - timedelta(days=3)).isoformat()
        source_dir = next(p for p in (tmp_path / "backups").rglob(by_cli) if p.is_dir())
        target = source_dir.parent / planted
        shutil.copytree(source_dir, target)
        assert tick(config, instance) == "every backup of the last days is in Dagster's history"
        assert materializations(instance, planted) == []
        json.loads(next(target.glob("*.json")).read_text())  # it was there to be read
