"""Prometheus: the exporter reads the Dagster instance; the alert rules pass promtool; a real Prometheus scrapes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import dagster as dg

from erp_backup_pipeline.orchestration.definitions import build_definitions
from erp_backup_pipeline.orchestration.metrics import BackupCollector
from erp_backup_pipeline_devkit.servers import free_port, stop_process
from erp_backup_pipeline_tests.test_dagster import write_config

RULES = Path(__file__).resolve().parent.parent / "deploy" / "prometheus"


def samples(instance: dg.DagsterInstance) -> dict[tuple[str, str], float]:
    found = {}
    for family in BackupCollector(instance).collect():
        for s in family.samples:
            found[(s.name, s.labels["asset"])] = s.value
    return found


def run_job(config: Path, instance: dg.DagsterInstance, partition: str) -> bool:
    job = build_definitions(str(config)).resolve_job_def("sqlite_backup_job")
    return job.execute_in_process(partition_key=partition, instance=instance, raise_on_error=False).success


def test_promtool_checks_and_unit_tests_the_alert_rules() -> None:
    subprocess.run(["promtool", "check", "rules", str(RULES / "alert-rules.yml")], check=True, capture_output=True)
    subprocess.run(["promtool", "check", "config", str(RULES / "prometheus.yml")], check=True, capture_output=True)
    done = subprocess.run(["promtool", "test", "rules", "alert-rules.test.yml"], cwd=RULES, capture_output=True, text=True)
    assert done.returncode == 0 and "SUCCESS" in done.stdout, done.stdout + done.stderr


def test_exporter_reports_success_size_duration_and_failures(tmp_path: Path, demo_sqlite, age_identity) -> None:
    instance = dg.DagsterInstance.ephemeral()
    config = write_config(tmp_path, age_identity, sources={"sqlite": {"path": str(demo_sqlite)}})
    assert samples(instance).get(("backup_failures_total", "sqlite_backup")) == 0
    assert ("backup_last_success_timestamp_seconds", "sqlite_backup") not in samples(instance)
    before = time.time()
    assert run_job(config, instance, "2026-11-25")
    got = samples(instance)
    assert before <= got[("backup_last_success_timestamp_seconds", "sqlite_backup")] <= time.time()
    [event] = [instance.get_latest_materialization_event(dg.AssetKey("sqlite_backup"))]
    assert got[("backup_size_bytes", "sqlite_backup")] == event.asset_materialization.metadata["encrypted_bytes"].value
    assert 0 < got[("backup_duration_seconds", "sqlite_backup")] < 60
    assert before <= got[("backup_last_verified_timestamp_seconds", "sqlite_backup")] <= time.time()
    [drill] = instance.event_log_storage.get_asset_check_execution_history(
        dg.AssetCheckKey(dg.AssetKey("sqlite_backup"), "restore_drill"), limit=5)  # the nightly job drilled
    assert drill.evaluation.passed
    assert got[("backup_restore_seconds", "sqlite_backup")] == drill.evaluation.metadata["restore_seconds"].value > 0
    assert before <= got[("backup_last_restore_drill_timestamp_seconds", "sqlite_backup")] <= time.time()
    [artifact] = (tmp_path / "backups").rglob("*.sqlite3.zst.age")  # a failing drill does not reset the gauges
    artifact.write_bytes(artifact.read_bytes()[:-10] + b"0123456789")
    verify = build_definitions(str(config)).resolve_job_def("verify_backups")
    assert verify.execute_in_process(tags={"dagster/partition": "2026-11-25"}, instance=instance).success
    newest = instance.event_log_storage.get_asset_check_execution_history(
        dg.AssetCheckKey(dg.AssetKey("sqlite_backup"), "restore_drill"), limit=1)[0]
    assert newest.evaluation is not None and not newest.evaluation.passed
    for _ in range(60):  # however many failed drills came after, the newest pass is still found
        instance.report_runless_asset_event(dg.AssetCheckEvaluation(
            asset_key=dg.AssetKey("sqlite_backup"), check_name="restore_drill", passed=False))
    assert len(instance.event_log_storage.get_asset_check_execution_history(
        dg.AssetCheckKey(dg.AssetKey("sqlite_backup"), "restore_drill"), limit=100)) >= 61
    (tmp_path / "broken").mkdir()
    broken = write_config(tmp_path / "broken", age_identity, sources={"sqlite": {"path": str(tmp_path / "gone.db")}})
    assert not run_job(broken, instance, "2026-11-26")
    after_failure = samples(instance)
    assert after_failure[("backup_failures_total", "sqlite_backup")] == 1
    # a materialization launched from the UI (Dagster's implicit asset job, with an asset selection) counts too
    ui_job = build_definitions(str(broken)).resolve_implicit_global_asset_job_def()
    assert not ui_job.execute_in_process(partition_key="2026-11-26", instance=instance, raise_on_error=False,
                                         asset_selection=[dg.AssetKey("sqlite_backup")]).success
    assert samples(instance)[("backup_failures_total", "sqlite_backup")] == 2
    for name in ("backup_last_verified_timestamp_seconds", "backup_restore_seconds",
                 "backup_last_restore_drill_timestamp_seconds"):
        assert after_failure[(name, "sqlite_backup")] == got[(name, "sqlite_backup")], name


def _wait_json(url: str, ready: Any, timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                last = resp.read().decode()
            if ready(last):
                return last
        except OSError:
            pass
        time.sleep(0.3)
    raise AssertionError(f"{url} never became ready; last answer: {str(last)[:300]}")


def test_a_real_prometheus_scrapes_the_exporter(tmp_path: Path, demo_sqlite, age_identity) -> None:
    home = tmp_path / "dagster_home"
    home.mkdir()
    instance = dg.DagsterInstance.local_temp(str(home))
    config = write_config(tmp_path, age_identity, sources={"sqlite": {"path": str(demo_sqlite)}})
    assert run_job(config, instance, "2026-11-25")
    port, prom_port = free_port(), free_port()
    exporter = subprocess.Popen([sys.executable, "-m", "erp_backup_pipeline.cli", "metrics", "serve", "--port", str(port)],
                                env={**os.environ, "DAGSTER_HOME": str(home)}, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
    prom_cfg = tmp_path / "prometheus.yml"
    prom_cfg.write_text(f"global: {{scrape_interval: 1s, evaluation_interval: 1s}}\n"
                        f"rule_files: [{RULES / 'alert-rules.yml'}]\n"
                        f"scrape_configs:\n  - job_name: erp-backup\n    static_configs: [{{targets: ['127.0.0.1:{port}']}}]\n")
    prometheus = subprocess.Popen(["prometheus", f"--config.file={prom_cfg}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                                   f"--web.listen-address=127.0.0.1:{prom_port}"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        text = _wait_json(f"http://127.0.0.1:{port}/metrics", lambda t: "backup_size_bytes{" in t)
        assert 'backup_last_success_timestamp_seconds{asset="sqlite_backup",type="sqlite"}' in text
        assert 'backup_restore_seconds{asset="sqlite_backup",type="sqlite"}' in text
        assert 'backup_last_restore_drill_timestamp_seconds{asset="sqlite_backup",type="sqlite"}' in text
        query = f"http://127.0.0.1:{prom_port}/api/v1/query?query=backup_size_bytes"
        answer = json.loads(_wait_json(query, lambda t: '"result":[{' in t))
        [series] = answer["data"]["result"]
        assert series["metric"]["type"] == "sqlite" and float(series["value"][1]) > 0
        rules = json.loads(_wait_json(f"http://127.0.0.1:{prom_port}/api/v1/rules", lambda t: "BackupTooOld" in t))
        assert {r["name"] for g in rules["data"]["groups"] for r in g["rules"]} >= {
            "BackupTooOld", "BackupFailing", "BackupRestoreTooSlow", "BackupRestoreNotDrilled"}
    finally:
        stop_process(prometheus)
        stop_process(exporter)


def test_grafana_dashboard_has_the_original_panels_on_exported_metrics() -> None:
    dashboard = json.loads((RULES.parent / "grafana" / "erp-backups.json").read_text())
    panels = {p["title"]: p["targets"][0]["expr"] for p in dashboard["panels"]}
    assert panels["Last Successful Backup"] == "time() - backup_last_success_timestamp_seconds"  # the original three
    assert panels["Backup Size Trend"] == "backup_size_bytes"
    assert panels["Backup Failure Rate"] == "rate(backup_failures_total[24h])"
    assert panels["Restore time (last drill)"] == "backup_restore_seconds"
    assert panels["Last Restore Drill"] == "time() - backup_last_restore_drill_timestamp_seconds"
    [restore] = [p for p in dashboard["panels"] if p["title"] == "Restore time (last drill)"]
    defaults = restore["fieldConfig"]["defaults"]
    assert defaults["unit"] == "s" and defaults["custom"]["thresholdsStyle"]["mode"] == "line"
    assert 14400 in [step["value"] for step in defaults["thresholds"]["steps"]]  # the original strategy's 4 h RTO
    assert len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"])
    exported = {"backup_last_success_timestamp_seconds", "backup_size_bytes", "backup_failures_total",
                "backup_last_verified_timestamp_seconds", "backup_duration_seconds", "backup_restore_seconds",
                "backup_last_restore_drill_timestamp_seconds"}
    for expr in panels.values():
        assert any(name in expr for name in exported), expr
