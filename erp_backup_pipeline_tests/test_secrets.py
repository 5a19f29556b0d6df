"""No secret reaches logs, Dagster events, metadata, manifests or error text."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from erp_backup_pipeline_tests.conftest import ERP_PASSWORD, S3_KEY_ID, S3_SECRET, signing_section, stored_manifests
from erp_backup_pipeline_tests.test_dagster import materialize


def _config(tmp_path: Path, pg_server, erp_db: str, age_identity, moto_server, bucket: str, password: str) -> Path:
    path = tmp_path / f"cfg-{len(password)}.yaml"
    path.write_text(yaml.safe_dump({
        "staging_dir": str(tmp_path / "staging"),
        "encryption": {"recipients": [age_identity[1]], "identity_file": str(age_identity[0])},
        "signing": signing_section(),
        "destinations": [{"type": "local", "path": str(tmp_path / "backups")},
                         {"type": "s3", "name": "offsite", "bucket": bucket, "endpoint_url": moto_server.endpoint,
                          "access_key_id": S3_KEY_ID, "secret_access_key": S3_SECRET}],
        "sources": {"postgres": {"host": "127.0.0.1", "port": pg_server.port, "user": "erp_user", "dbname": erp_db,
                                 "password": password, "sslmode": "disable"}},
    }))
    return path


def test_no_secret_anywhere(tmp_path: Path, pg_server, erp_db, age_identity, moto_server, bucket, s3_client,
                            capfd: pytest.CaptureFixture[str]) -> None:
    good = _config(tmp_path, pg_server, erp_db, age_identity, moto_server, bucket, ERP_PASSWORD)
    wrong_pw = "Wrong-Pw-5d1e0b-secret"
    bad = _config(tmp_path, pg_server, erp_db, age_identity, moto_server, bucket, wrong_pw)
    texts: list[str] = []
    for config in (good, bad):
        result = materialize("postgres_dump", config)
        for event in result.all_events:
            texts.append(repr(event))
    assert any("password authentication failed" in t for t in texts)
    for cmd in (["backup", "postgres"], ["list", "--json"], ["verify", "postgres", "--partition", "2026-11-25"]):
        for config in (good, bad):
            done = subprocess.run([sys.executable, "-m", "erp_backup_pipeline.cli", "--config", str(config), *cmd,
                                   *(["--partition", "2026-11-25"] if cmd[0] == "backup" else [])],
                                  capture_output=True, text=True)
            texts += [done.stdout, done.stderr]
    texts += stored_manifests(tmp_path / "backups", s3_client, bucket)
    captured = capfd.readouterr()
    texts += [captured.out, captured.err]
    blob = "\n".join(texts)
    assert len([t for t in texts if "manifest" in t or "sha256" in t]) > 3  # we did look at real output
    for secret in (ERP_PASSWORD, wrong_pw, S3_SECRET, Path(age_identity[0]).read_text().split()[-1]):
        assert secret not in blob


def test_no_redis_password_anywhere(tmp_path: Path, redis_server, age_identity,
                                    capfd: pytest.CaptureFixture[str]) -> None:
    from erp_backup_pipeline_tests.conftest import REDIS_PASSWORD, redis_source

    redis_server.client().set("session:1", "x")
    texts: list[str] = []
    for password in (REDIS_PASSWORD, "Wrong-Redis-77f0-secret"):
        path = tmp_path / f"cfg-{password[:5]}.yaml"
        path.write_text(yaml.safe_dump({
            "staging_dir": str(tmp_path / "staging"),
            "encryption": {"recipients": [age_identity[1]], "identity_file": str(age_identity[0])},
            "signing": signing_section(),
            "destinations": [{"type": "local", "path": str(tmp_path / "backups")}],
            "sources": redis_source(redis_server, password=password)}))
        texts += [repr(e) for e in materialize("redis_snapshot", path).all_events]
    texts += [p.read_text() for p in (tmp_path / "backups").rglob("*.json")]
    captured = capfd.readouterr()
    blob = "\n".join(texts + [captured.out, captured.err])
    assert "authentication failed" in blob and "manifest" in blob
    assert REDIS_PASSWORD not in blob and "Wrong-Redis-77f0-secret" not in blob
