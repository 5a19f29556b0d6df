"""Housekeeping in Dagster: backup_retention applies the plan; Dagster's own run history is pruned safely."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import dagster as dg

from erp_backup_pipeline.core.pipeline import run_backup
from erp_backup_pipeline.orchestration.definitions import build_definitions
from erp_backup_pipeline.orchestration.maintenance import prune_history
from erp_backup_pipeline.settings import load_settings
from erp_backup_pipeline_tests.conftest import catalog_entries
from erp_backup_pipeline_tests.test_dagster import write_config


def test_backup_retention_deletes_what_the_plan_deletes_and_records_it(tmp_path: Path, demo_sqlite: Path,
                                                                       age_identity) -> None:
    config = write_config(tmp_path, age_identity, sources={"sqlite": {"path": str(demo_sqlite)}},
                          retention={"sqlite_backup": {"keep_daily": 2}})
    settings = load_settings(config)
    today = datetime.now(ZoneInfo("Europe/Berlin")).date()
    days = [(today - timedelta(days=n)).isoformat() for n in range(5, 0, -1)]
    for day in days:
        run_backup(settings, "sqlite_backup", day)
    defs = build_definitions(str(config))
    result = defs.resolve_job_def("backup_retention_job").execute_in_process(partition_key=today.isoformat(),
                                                                            instance=dg.DagsterInstance.ephemeral())
    assert result.success
    [event] = result.get_asset_materialization_events()
    md = {k: v.value for k, v in event.materialization.metadata.items()}
    assert (md["deleted"], md["failed"]) == (3, 0)
    assert all(day in md["deleted_items"] for day in days[:3])
    [check] = result.get_asset_check_evaluations()
    assert check.check_name == "prune_complete" and check.passed
    left = sorted(e.manifest.partition for e in catalog_entries(settings))
    assert left == days[3:]
    schedule = defs.resolve_schedule_def("backup_retention_daily")
    assert schedule.cron_schedule == "0 7 * * *" and schedule.execution_timezone == "Europe/Berlin"


def test_history_pruning_keeps_the_newest_run_of_every_backup_partition(tmp_path: Path, demo_sqlite: Path,
                                                                        age_identity) -> None:
    config = write_config(tmp_path, age_identity, sources={"sqlite": {"path": str(demo_sqlite)}})
    job = build_definitions(str(config)).resolve_job_def("sqlite_backup_job")
    instance = dg.DagsterInstance.ephemeral()
    first = job.execute_in_process(partition_key="2026-11-24", instance=instance)
    again = job.execute_in_process(partition_key="2026-11-24", instance=instance)
    other = job.execute_in_process(partition_key="2026-11-25", instance=instance)
    (tmp_path / "broken").mkdir()
    broken = write_config(tmp_path / "broken", age_identity, sources={"sqlite": {"path": str(tmp_path / "gone.db")}})
    failed = build_definitions(str(broken)).resolve_job_def("sqlite_backup_job").execute_in_process(
        partition_key="2026-11-25", instance=instance, raise_on_error=False)
    assert not failed.success
    lines: list[str] = []
    assert prune_history(instance, 400, log=lines.append) == {"deleted": 0, "kept": 0}  # nothing that old
    counts = prune_history(instance, 7, now=datetime.now(UTC) + timedelta(days=30), log=lines.append)
    assert counts == {"deleted": 2, "kept": 2}
    remaining = {r.run_id for r in instance.get_runs()}
    assert remaining == {again.run_id, other.run_id}
    assert first.run_id not in remaining and failed.run_id not in remaining
    assert len(lines) == 2 and all(line.startswith("deleted Dagster run ") for line in lines)
