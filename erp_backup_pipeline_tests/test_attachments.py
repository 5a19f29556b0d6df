"""A capture's attachments (PostgreSQL's globals and database record) go where its artifact goes: on every
destination, under its Object Lock, read back from the first intact copy, deleted and swept with it."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from erp_backup_pipeline.core import catalog, chain
from erp_backup_pipeline.core.destinations import S3Destination, build_destinations
from erp_backup_pipeline.core.pipeline import run_backup
from erp_backup_pipeline.core.prune import prune
from erp_backup_pipeline.core.restore import restore_backup, verify_backup
from erp_backup_pipeline.core.signing import SIGNATURE_SUFFIX
from erp_backup_pipeline.errors import VerifyError
from erp_backup_pipeline_tests.conftest import make_settings, pg_source, s3_destination, sign_file
from erp_backup_pipeline_tests.test_prune import days_back, keys, orphan, orphan_rows

NAMES = ["globals.sql", "database.json"]


def settings_for(tmp_path: Path, age_identity: Any, pg: Any, db: str, moto: Any, bucket: str, **extra: Any) -> Any:
    return make_settings(tmp_path, age_identity, sources=pg_source(pg, db), destinations=[
        {"type": "local", "name": "local", "path": str(tmp_path / "backups")},
        s3_destination(moto, bucket, **extra.pop("s3", {}))], **extra)


def attachment_keys(m: Any) -> dict[str, str]:
    return {a["name"]: a["key"] for a in m.attachments}


def test_attachments_are_on_every_destination_under_the_artifacts_lock(
        tmp_path: Path, pg_server: Any, erp_db: str, age_identity: Any, moto_server: Any, s3_client: Any) -> None:
    bucket = f"erp-lock-{uuid.uuid4().hex[:12]}"
    s3_client.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": "eu-central-1"},
                            ObjectLockEnabledForBucket=True)
    settings = settings_for(tmp_path, age_identity, pg_server, erp_db, moto_server, bucket,
                            s3={"object_lock": {"mode": "GOVERNANCE", "min_days": 3}})
    m = run_backup(settings, "postgres_dump", days_back(1)[0])
    wanted = {f"{m.stamp}.{n}.zst.age" for n in NAMES}
    assert {k.rsplit("/", 1)[1] for k in attachment_keys(m).values()} == wanted
    for listed in keys(settings).values():
        assert set(attachment_keys(m).values()) <= set(listed)
    dest = next(d for d in build_destinations(settings) if isinstance(d, S3Destination))
    locks = {(h["ObjectLockMode"], h["ObjectLockRetainUntilDate"])
             for h in (s3_client.head_object(Bucket=bucket, Key=dest.object_key(k)) for k in m.object_keys)}
    assert locks == {("GOVERNANCE", datetime.fromisoformat(m.destinations["offsite"]["object_lock"]["retain_until"]))}


def test_a_damaged_attachment_falls_through_and_none_intact_refuses_before_anything_changes(
        tmp_path: Path, pg_server: Any, erp_db: str, age_identity: Any, moto_server: Any, bucket: str,
        s3_client: Any) -> None:
    settings = settings_for(tmp_path, age_identity, pg_server, erp_db, moto_server, bucket)
    day = days_back(1)[0]
    m = run_backup(settings, "postgres_dump", day)
    local = tmp_path / "backups" / attachment_keys(m)["database"]
    local.write_bytes(local.read_bytes()[:-1] + b"x")  # one byte: the local copy no longer matches the manifest
    assert verify_backup(settings, "postgres_dump", day)["attachment_database"]["roles"] >= 1  # the S3 copy serves
    restore_backup(settings, "postgres_dump", day, erp_db + "_a")
    s3 = next(d for d in build_destinations(settings) if isinstance(d, S3Destination))
    s3.delete(attachment_keys(m)["database"])
    with pytest.raises(VerifyError, match="no intact copy of the capture's database attachment: local: .*checksum "
                                          "mismatch.*offsite: .*"):
        restore_backup(settings, "postgres_dump", day, erp_db + "_b")
    with psycopg.connect(pg_server.dsn(), autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM pg_database WHERE datname = %s", (erp_db + "_b",)).fetchone() == (0,)
    with pytest.raises(VerifyError, match="no intact copy of the capture's database attachment"):
        verify_backup(settings, "postgres_dump", day)


def test_prune_deletes_a_capture_with_its_attachments_and_sweeps_those_a_stopped_run_left(
        tmp_path: Path, pg_server: Any, erp_db: str, age_identity: Any, moto_server: Any, bucket: str) -> None:
    settings = settings_for(tmp_path, age_identity, pg_server, erp_db, moto_server, bucket,
                            retention={"postgres_dump": {"keep_daily": 1}})
    old, new = days_back(3)[:2]
    dropped = run_backup(settings, "postgres_dump", old)
    kept = run_backup(settings, "postgres_dump", new)
    left = orphan(settings, "postgres_dump", days_back(1)[0])  # stopped between ship and manifest
    stray = [left.artifact["key"], *(a["key"] for a in left.attachments)]
    assert len(stray) == 3 and all(set(stray) <= set(listed) for listed in keys(settings).values())
    result = prune(settings, dry_run=False, log=lambda line: None)
    assert [e.manifest.partition for e, _ in result.deleted] == [old]
    assert {a for _, a, _ in orphan_rows(result)} == {"keep"}  # young: its run may still write the manifest
    result = prune(settings, now=datetime.now(UTC) + timedelta(days=3), dry_run=False, log=lambda line: None)
    assert sorted((o.destination, o.key, a) for o, a, _ in result.orphans) == sorted(
        (d, k, "deleted") for d in ("local", "offsite") for k in stray)
    ledger = chain.ledger_key(settings.prefix, "postgres_dump")
    for listed in keys(settings).values():  # the kept capture (manifest, signature, objects) and the source's ledger
        assert sorted(listed) == sorted([kept.key, kept.key + SIGNATURE_SUFFIX, *kept.object_keys, ledger])
        assert not set(dropped.object_keys) & set(listed)


def test_a_forged_attachment_list_is_a_rejected_manifest_not_a_traceback(
        tmp_path: Path, pg_server: Any, erp_db: str, age_identity: Any, moto_server: Any, bucket: str) -> None:
    settings = settings_for(tmp_path, age_identity, pg_server, erp_db, moto_server, bucket)
    m = run_backup(settings, "postgres_dump", days_back(1)[0])
    path = tmp_path / "backups" / m.key
    data = json.loads(path.read_text())
    data["attachments"] = [{"name": "globals", "key": 7}]
    path.write_text(json.dumps(data))
    found = catalog.of(settings, destinations=build_destinations(settings)[:1])
    assert found.entries == [] and [r.reason for r in found.rejected] == [
        "signature does not match the manifest (edited after signing)"]  # unsigned, the forgery goes no further
    sign_file(path)  # signed, as only the backing-up host could: the content itself is still checked
    found = catalog.of(settings, destinations=build_destinations(settings)[:1])
    assert found.entries == [] and len(found.rejected) == 1
    assert found.rejected[0].reason.startswith("not a valid manifest (attachments is not a list of attachment records")
