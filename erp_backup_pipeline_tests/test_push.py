"""The optional Pushgateway push: a real prometheus-pushgateway receives the run's figures after a backup."""

from __future__ import annotations

import subprocess
import time
import urllib.request
from pathlib import Path

import dagster as dg

from erp_backup_pipeline.orchestration.definitions import build_definitions
from erp_backup_pipeline.orchestration.resources import BackupSettingsResource
from erp_backup_pipeline_devkit.servers import free_port, stop_process
from erp_backup_pipeline_tests.test_alerting import instance_for_test, run_job
from erp_backup_pipeline_tests.test_dagster import write_config


def fetch(url: str, timeout: float = 20) -> str:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                return resp.read().decode()
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def test_finished_runs_are_pushed_once(tmp_path: Path, demo_sqlite: Path, age_identity) -> None:
    port = free_port()
    gateway = subprocess.Popen(["prometheus-pushgateway", f"--web.listen-address=127.0.0.1:{port}"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        base = f"http://127.0.0.1:{port}"
        fetch(f"{base}/-/ready")
        config = write_config(tmp_path, age_identity, sources={"sqlite": {"path": str(demo_sqlite)}},
                              metrics={"pushgateway_url": base})
        defs = build_definitions(str(config))
        sensor = defs.resolve_sensor_def("backup_metrics_push_sensor")
        resources = {"backup_settings": BackupSettingsResource.pinned(str(config))}
        with instance_for_test(tmp_path) as instance:
            assert run_job(defs, instance, "sqlite_backup_job", "2026-11-25").success
            first = sensor.evaluate_tick(dg.build_sensor_context(instance=instance, definitions=defs, resources=resources))
            assert first.skip_message == "pushed after 1 finished run(s)"
            text = fetch(f"{base}/metrics")
            line = next(ln for ln in text.splitlines() if ln.startswith("backup_size_bytes{"))
            assert 'asset="sqlite_backup"' in line and 'job="erp_backup"' in line and 'type="sqlite"' in line
            assert float(line.rsplit(" ", 1)[1]) > 0
            again = sensor.evaluate_tick(dg.build_sensor_context(instance=instance, definitions=defs, resources=resources,
                                                                 cursor=first.cursor))
            assert again.skip_message == "no run finished since the last push"
    finally:
        stop_process(gateway)


def test_no_push_without_a_url(tmp_path: Path, demo_sqlite: Path, age_identity) -> None:
    config = write_config(tmp_path, age_identity, sources={"sqlite": {"path": str(demo_sqlite)}})
    defs = build_definitions(str(config))
    with instance_for_test(tmp_path) as instance:
        data = defs.resolve_sensor_def("backup_metrics_push_sensor").evaluate_tick(dg.build_sensor_context(
            instance=instance, definitions=defs,
            resources={"backup_settings": BackupSettingsResource.pinned(str(config))}))
    assert data.skip_message == "metrics.pushgateway_url is not set"
