"""Which failures are retried: the code that raises says whether a pause can cure it (``BackupError.transient``),
against real servers that are away, refusing a password, or missing a bucket; the Dagster ops retry exactly those.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from erp_backup_pipeline.core.destinations import S3Destination
from erp_backup_pipeline.core.runner import free_port
from erp_backup_pipeline.core.sources import build_source
from erp_backup_pipeline.errors import (
    BackupError,
    ConfigError,
    DestinationError,
    DestinationUnavailable,
    SourceError,
    SourceUnavailable,
    ToolTimeout,
    VerifyError,
)
from erp_backup_pipeline.orchestration.assets import retryable
from erp_backup_pipeline_tests.conftest import ERP_PASSWORD, S3_KEY_ID, S3_SECRET, make_settings, pg_source, redis_source


def failure(settings: Any, name: str, tmp_path: Path) -> BackupError:
    with pytest.raises(BackupError) as caught:
        source = build_source(settings, name)
        source.prepare(tmp_path)
        source.open_dump(tmp_path, {}).read(1)
    return caught.value


def test_the_error_types_decide(tmp_path: Path) -> None:
    for exc in (SourceUnavailable("x"), DestinationUnavailable("x"), ToolTimeout("x")):
        assert exc.transient and retryable(exc)
    for exc in (SourceError("x"), DestinationError("x"), ConfigError("x"), VerifyError("x")):
        assert not exc.transient and not retryable(exc)
    # the message does not matter: a permanent error that says 'connection refused' stays permanent
    assert not retryable(SourceError("connection refused"))
    assert not retryable(DestinationError("ServiceUnavailable"))


def test_postgres_away_is_transient_a_wrong_password_is_not(tmp_path: Path, age_identity: Any, pg_server: Any,
                                                            erp_db: str) -> None:
    away = make_settings(tmp_path, age_identity, sources={"postgres": {
        "host": "127.0.0.1", "port": free_port(), "user": "erp_user", "dbname": erp_db, "password": ERP_PASSWORD,
        "sslmode": "disable", "connect_timeout": 2}})
    assert isinstance(failure(away, "postgres_dump", tmp_path), SourceUnavailable)
    wrong = make_settings(tmp_path, age_identity, sources=pg_source(pg_server, erp_db, password="not-the-password"))
    exc = failure(wrong, "postgres_dump", tmp_path)
    assert type(exc) is SourceError and "password" in str(exc) and not exc.transient
    missing = make_settings(tmp_path, age_identity, sources=pg_source(pg_server, "no_such_database"))
    assert type(failure(missing, "postgres_dump", tmp_path)) is SourceError


def test_redis_away_is_transient_a_wrong_password_is_not(tmp_path: Path, age_identity: Any,
                                                         redis_server: Any) -> None:
    away = make_settings(tmp_path, age_identity, sources={"redis": {"host": "127.0.0.1", "port": free_port(),
                                                                    "timeout": 2}})
    assert isinstance(failure(away, "redis_snapshot", tmp_path), SourceUnavailable)
    wrong = make_settings(tmp_path, age_identity, sources=redis_source(redis_server, password="not-the-password"))
    exc = failure(wrong, "redis_snapshot", tmp_path)
    assert type(exc) is SourceError and not exc.transient


def test_s3_away_is_transient_a_missing_bucket_or_a_wrong_key_is_not(moto_server: Any, bucket: str) -> None:
    def dest(**kw: Any) -> S3Destination:
        args: dict[str, Any] = {"endpoint_url": moto_server.endpoint, "region": "eu-central-1",
                                "access_key_id": S3_KEY_ID, "secret_access_key": S3_SECRET, "max_attempts": 1}
        args.update(kw)
        return S3Destination(args.pop("bucket", bucket), **args)

    with pytest.raises(DestinationError) as caught:
        dest(endpoint_url=f"http://127.0.0.1:{free_port()}").check()
    assert isinstance(caught.value, DestinationUnavailable)
    with pytest.raises(DestinationError) as caught:
        dest(bucket="no-such-bucket").check()
    assert not caught.value.transient and "does not exist" in str(caught.value)
    dest().check()
