"""The configuration a run uses is fixed by its deployment, not by its launcher (THREATS.md).

A run config that names another config file for the backup resource is refused by Dagster before anything
runs (the resource has no field); a config file that others may write is refused at load. The launch through
the real webserver's GraphQL is in test_production.py.
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import dagster as dg
import pytest

from erp_backup_pipeline.cli import main
from erp_backup_pipeline.orchestration.definitions import build_definitions
from erp_backup_pipeline.orchestration.resources import BackupSettingsResource
from erp_backup_pipeline_tests.conftest import signing_section

DAY = "2026-11-25"


def _config(tmp: Path, age_identity: tuple[Path, str], sqlite: Path, backups: Path, name: str) -> Path:
    path = tmp / name
    path.write_text(json.dumps({"staging_dir": str(tmp / f"staging-{name}"), "encryption": {
        "recipients": [age_identity[1]], "identity_file": str(age_identity[0])}, "signing": signing_section(),
        "destinations": [{"type": "local", "path": str(backups)}], "sources": {"sqlite": {"path": str(sqlite)}}}))
    path.chmod(0o600)
    return path


def test_a_run_config_naming_another_config_file_is_refused_before_anything_runs(
        tmp_path: Path, demo_sqlite: Path, age_identity: tuple[Path, str]) -> None:
    deployed = _config(tmp_path, age_identity, demo_sqlite, tmp_path / "backups", "erp-backup.yaml")
    planted = _config(tmp_path, age_identity, demo_sqlite, tmp_path / "attacker", "planted.yaml")
    job = build_definitions(str(deployed)).resolve_job_def("sqlite_backup_job")
    with dg.instance_for_test() as instance, pytest.raises(dg.DagsterInvalidConfigError) as err:
        job.execute_in_process(partition_key=DAY, instance=instance, run_config={
            "resources": {"backup_settings": {"config": {"config_path": str(planted)}}}})
    assert 'Received unexpected config entry "config_path" at path root:resources:backup_settings:config' in str(err.value)
    assert not (tmp_path / "attacker").exists() and not (tmp_path / "backups").exists()
    with dg.instance_for_test() as instance:  # the deployed one works
        assert job.execute_in_process(partition_key=DAY, instance=instance).success
    assert (tmp_path / "backups").exists() and not (tmp_path / "attacker").exists()


def test_the_code_location_pins_the_config_its_environment_named_at_load(
        tmp_path: Path, demo_sqlite: Path, age_identity: tuple[Path, str], monkeypatch: pytest.MonkeyPatch) -> None:
    deployed = _config(tmp_path, age_identity, demo_sqlite, tmp_path / "backups", "erp-backup.yaml")
    monkeypatch.setenv("ERP_BACKUP_CONFIG", str(deployed))
    resource = BackupSettingsResource.pinned()
    monkeypatch.setenv("ERP_BACKUP_CONFIG", str(tmp_path / "planted.yaml"))  # later changes do not move it
    monkeypatch.chdir("/")
    assert resource.load().staging_dir == tmp_path / "staging-erp-backup.yaml"
    assert type(resource).pinned_path == str(deployed)


def test_a_config_file_others_may_write_is_refused(tmp_path: Path, demo_sqlite: Path, age_identity: tuple[Path, str]
                                                   ) -> None:
    config = _config(tmp_path, age_identity, demo_sqlite, tmp_path / "backups", "erp-backup.yaml")
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        assert main(["--config", str(config), "backup", "sqlite", "--partition", DAY]) == 0
    resource = BackupSettingsResource.pinned(config)
    assert resource.load().sources.sqlite is not None
    config.chmod(0o666)  # it became world-writable: whoever writes it picks keys and destinations
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        assert main(["--config", str(config), "list"]) == 1
    assert err.getvalue().strip() == (f"erp-backup: error: config file {config} has mode 0666: other users could write "
                                      "it and choose the sources, keys and destinations of every backup; chmod go-w it "
                                      "(0600 or 0640)")
    # a running code location notices too, at its next run (Dagster makes a new resource object for every run;
    # a run keeps the configuration it started with)
    assert resource.load().sources.sqlite is not None
    with pytest.raises(Exception, match="has mode 0666"):
        BackupSettingsResource.pinned(config).load()
    config.chmod(0o620)
    with pytest.raises(Exception, match="has mode 0620"):
        BackupSettingsResource.pinned(config).load()
