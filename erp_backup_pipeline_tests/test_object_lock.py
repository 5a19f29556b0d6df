"""S3 Object Lock, against moto's real server: uploads carry the mode and a retain-until date computed from the
retention policy; a destination that asks for locks its bucket cannot hold fails and writes nothing; prune
skips what is locked and says so, deletes every version once the lock has expired, and never hides a locked
backup behind a delete marker; and the pipeline's own credentials cannot delete a locked artifact."""

from __future__ import annotations

import io
import os
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from botocore.exceptions import ClientError

from erp_backup_pipeline.core.destinations import S3Destination, build_destinations, get, put_bytes, read_bytes
from erp_backup_pipeline.core.manifest import Manifest
from erp_backup_pipeline.core.pipeline import run_backup
from erp_backup_pipeline.core.prune import prune
from erp_backup_pipeline.core.restore import verify_backup
from erp_backup_pipeline.core.signing import SIGNATURE_SUFFIX
from erp_backup_pipeline.errors import ConfigError, DestinationError
from erp_backup_pipeline.settings import parse_settings
from erp_backup_pipeline_tests.conftest import (
    S3_KEY_ID,
    S3_SECRET,
    catalog_entries,
    make_settings,
    s3_destination,
    signing_section,
)

BERLIN = ZoneInfo("Europe/Berlin")
MB = 1 << 20


def days_back(n: int) -> list[str]:
    """The n partitions that end today (Europe/Berlin), oldest first."""
    today = datetime.now(BERLIN).date()
    return [(today - timedelta(days=i)).isoformat() for i in range(n - 1, -1, -1)]


@pytest.fixture
def lock_bucket(s3_client: Any) -> str:
    name = f"erp-lock-{uuid.uuid4().hex[:12]}"
    s3_client.create_bucket(Bucket=name, CreateBucketConfiguration={"LocationConstraint": "eu-central-1"},
                            ObjectLockEnabledForBucket=True)
    return name


def locking(tmp_path: Path, age_identity: Any, moto: Any, bucket: str, lock: dict[str, Any], *, local: bool = False,
            **extra: Any) -> Any:
    dests = [{"type": "local", "name": "local", "path": str(tmp_path / "backups")}] if local else []
    return make_settings(tmp_path, age_identity, destinations=[*dests, s3_destination(moto, bucket, object_lock=lock)],
                         **extra)


def offsite(settings: Any) -> S3Destination:
    dest = next(d for d in build_destinations(settings) if d.name == "offsite")
    assert isinstance(dest, S3Destination)
    return dest


def versions(s3: Any, bucket: str) -> tuple[list[str], list[str]]:
    """Every object version's key, and every delete marker's key, in the bucket, but the chain ledger's (a small
    record rewritten by every backup and prune: ``ledger_versions``)."""
    resp = s3.list_object_versions(Bucket=bucket)
    return (sorted(v["Key"] for v in resp.get("Versions", []) if not v["Key"].endswith("/chain.json")),
            sorted(v["Key"] for v in resp.get("DeleteMarkers", [])))


def ledger_versions(s3: Any, bucket: str) -> int:
    resp = s3.list_object_versions(Bucket=bucket)
    return sum(v["Key"].endswith("/chain.json") for v in resp.get("Versions", []))


def capture_keys(dest: S3Destination, m: Manifest) -> set[str]:
    """The object keys of one capture: manifest, its signature, artifact."""
    return {dest.object_key(k) for k in (m.key, m.key + SIGNATURE_SUFFIX, m.artifact_key)}


def head(s3: Any, bucket: str, dest: S3Destination, key: str) -> dict[str, Any]:
    result: dict[str, Any] = s3.head_object(Bucket=bucket, Key=dest.object_key(key))
    return result


def expire(s3: Any, bucket: str, dest: S3Destination, m: Manifest) -> None:
    """Move the lock of every version of a capture's objects into the past (GOVERNANCE, bypassing it: as an
    administrator would; the pipeline never sends the bypass header)."""
    past = datetime.now(UTC) - timedelta(days=1)
    for key in (m.key, m.key + SIGNATURE_SUFFIX, m.artifact_key):
        obj = dest.object_key(key)
        for v in s3.list_object_versions(Bucket=bucket, Prefix=obj).get("Versions", []):
            if v["Key"] != obj:  # the prefix also matches the manifest's signature
                continue
            s3.put_object_retention(Bucket=bucket, Key=obj, VersionId=v["VersionId"], BypassGovernanceRetention=True,
                                    Retention={"Mode": "GOVERNANCE", "RetainUntilDate": past})


@pytest.fixture
def calls(moto_server: Any) -> Iterator[list[tuple[str, dict[str, Any]]]]:
    """The parameters of every PutObject and CreateMultipartUpload the pipeline's S3 client sends."""
    client = S3Destination("any", endpoint_url=moto_server.endpoint, region="eu-central-1", access_key_id=S3_KEY_ID,
                           secret_access_key=S3_SECRET).client  # the same cached client build_destinations uses
    seen: list[tuple[str, dict[str, Any]]] = []
    handlers = {op: (lambda params, _op=op, **_: seen.append((_op, dict(params))))
                for op in ("PutObject", "CreateMultipartUpload")}
    for op, handler in handlers.items():
        client.meta.events.register(f"before-parameter-build.s3.{op}", handler)
    yield seen
    for op, handler in handlers.items():
        client.meta.events.unregister(f"before-parameter-build.s3.{op}", handler)


@pytest.mark.parametrize(("lock", "retention", "days"), [
    ({"mode": "COMPLIANCE"}, {"keep_daily": 7, "keep_within": "10d"}, 10),  # captured_at + keep_within
    ({"mode": "GOVERNANCE", "min_days": 30}, {"keep_daily": 7, "keep_within": "7d"}, 30),  # at least min_days
])
def test_artifact_and_manifest_are_uploaded_locked_until_capture_plus_the_policy(
        tmp_path: Path, demo_sqlite: Path, age_identity: Any, moto_server: Any, lock_bucket: str, s3_client: Any,
        calls: list[tuple[str, dict[str, Any]]], lock: dict[str, Any], retention: dict[str, Any], days: int) -> None:
    settings = locking(tmp_path, age_identity, moto_server, lock_bucket, lock, local=True,
                       sources={"sqlite": {"path": str(demo_sqlite)}}, retention={"sqlite_backup": retention})
    m = run_backup(settings, "sqlite_backup", days_back(1)[0])
    until = datetime.fromisoformat(m.captured_at) + timedelta(days=days)
    dest = offsite(settings)
    for key in (m.artifact_key, m.key, m.key + SIGNATURE_SUFFIX):
        h = head(s3_client, lock_bucket, dest, key)
        assert (h["ObjectLockMode"], h["ObjectLockRetainUntilDate"]) == (lock["mode"], until)
    # set on upload: the artifact's multipart upload and the PutObject of the manifest, its signature and the chain
    # ledger's new version carry them (so no one deletes the ledger's history either)
    sent = {(op, p["Key"]): (p.get("ObjectLockMode"), p.get("ObjectLockRetainUntilDate")) for op, p in calls
            if p["Bucket"] == lock_bucket}
    assert sent == {("CreateMultipartUpload", dest.object_key(m.artifact_key)): (lock["mode"], until),
                    ("PutObject", dest.object_key(m.key)): (lock["mode"], until),
                    ("PutObject", dest.object_key(m.key + SIGNATURE_SUFFIX)): (lock["mode"], until),
                    ("PutObject", dest.object_key(f"{settings.prefix}/sqlite_backup/chain.json")): (lock["mode"], until)}
    # the manifest records it; the local destination knows no locks
    assert m.destinations["offsite"]["object_lock"] == {"mode": lock["mode"], "retain_until": until.isoformat()}
    assert "object_lock" not in m.destinations["local"]
    assert verify_backup(settings, "sqlite_backup", m.partition)["ok"]


def test_a_big_multipart_upload_is_locked_too(moto_server: Any, lock_bucket: str, s3_client: Any,
                                              calls: list[tuple[str, dict[str, Any]]]) -> None:
    until = (datetime.now(UTC) + timedelta(days=3)).replace(microsecond=0)
    dest = S3Destination(lock_bucket, prefix="site-a", endpoint_url=moto_server.endpoint, access_key_id=S3_KEY_ID,
                         secret_access_key=S3_SECRET, multipart_threshold=5 * MB, part_size=5 * MB,
                         object_lock_mode="GOVERNANCE").with_retain_until(until)
    data = os.urandom(11 * MB)
    put_bytes(dest, "big.bin", data)
    assert [op for op, p in calls if p["Bucket"] == lock_bucket] == ["CreateMultipartUpload"]
    h = head(s3_client, lock_bucket, dest, "big.bin")
    assert (h["ObjectLockMode"], h["ObjectLockRetainUntilDate"], h["ContentLength"]) == ("GOVERNANCE", until, 11 * MB)
    assert read_bytes(dest, "big.bin") == data
    assert dest.lock("big.bin") == f"locked until {until.isoformat()} (GOVERNANCE)"
    s3_client.put_object_legal_hold(Bucket=lock_bucket, Key="site-a/big.bin", LegalHold={"Status": "ON"})
    assert dest.lock("big.bin") == f"locked until {until.isoformat()} (GOVERNANCE), under legal hold"
    dest.delete("never-written")  # a missing key is no error, as for every destination
    assert versions(s3_client, lock_bucket) == (["site-a/big.bin"], [])


def test_a_bucket_without_object_lock_fails_in_one_line_and_nothing_is_written(
        tmp_path: Path, demo_sqlite: Path, age_identity: Any, moto_server: Any, bucket: str, s3_client: Any) -> None:
    settings = locking(tmp_path, age_identity, moto_server, bucket, {"mode": "GOVERNANCE", "min_days": 30},
                       local=True, sources={"sqlite": {"path": str(demo_sqlite)}})
    with pytest.raises(DestinationError) as err:
        run_backup(settings, "sqlite_backup", days_back(1)[0])
    assert str(err.value) == (f"destination offsite: S3 bucket '{bucket}' does not have Object Lock enabled, so it "
                              "cannot hold the GOVERNANCE locks object_lock asks for")
    assert "\n" not in str(err.value)
    assert s3_client.list_objects_v2(Bucket=bucket)["KeyCount"] == 0
    assert not s3_client.list_multipart_uploads(Bucket=bucket).get("Uploads")
    assert not (tmp_path / "backups").exists() or not any((tmp_path / "backups").rglob("*.json"))

    # an optional destination: the backup goes to the others, this one says why it has nothing
    optional = make_settings(tmp_path, age_identity, sources={"sqlite": {"path": str(demo_sqlite)}}, destinations=[
        {"type": "local", "name": "local", "path": str(tmp_path / "backups")},
        s3_destination(moto_server, bucket, object_lock={"mode": "GOVERNANCE", "min_days": 30}, required=False)])
    m = run_backup(optional, "sqlite_backup", days_back(1)[0])
    assert m.complete and m.destinations["offsite"] == {"ok": False, "error": str(err.value)}
    assert s3_client.list_objects_v2(Bucket=bucket)["KeyCount"] == 0
    assert not s3_client.list_multipart_uploads(Bucket=bucket).get("Uploads")


def test_object_lock_settings_are_checked_at_load(tmp_path: Path, age_identity: Any) -> None:
    base = {"encryption": {"recipients": [age_identity[1]]}, "signing": signing_section()}
    s3 = {"type": "s3", "bucket": "b"}
    cfg = parse_settings({**base, "destinations": [{**s3, "object_lock": {"mode": "GOVERNANCE", "min_days": 30}}]})
    assert cfg.destinations[0].object_lock is not None and cfg.destinations[0].object_lock.min_days == 30
    assert parse_settings({**base, "destinations": [s3]}).destinations[0].object_lock is None
    with pytest.raises(ConfigError, match=r"destinations\.0\.object_lock\.mode: Input should be 'GOVERNANCE' or "
                                          r"'COMPLIANCE'"):
        parse_settings({**base, "destinations": [{**s3, "object_lock": {"mode": "governance"}}]})
    with pytest.raises(ConfigError, match=r"object_lock\.min_day: unknown key \(did you mean 'min_days'\?\)"):
        parse_settings({**base, "destinations": [{**s3, "object_lock": {"mode": "COMPLIANCE", "min_day": 3}}]})
    with pytest.raises(ConfigError, match=r"destinations\.0\.object_lock: unknown key"):  # a local tree cannot lock
        parse_settings({**base, "destinations": [{"type": "local", "path": "x", "object_lock": {"mode": "COMPLIANCE"}}]})


def test_prune_skips_locked_backups_says_so_and_deletes_every_version_once_expired(
        tmp_path: Path, demo_sqlite: Path, age_identity: Any, moto_server: Any, lock_bucket: str,
        s3_client: Any) -> None:
    # keep_within 0, so the policy drops the older days at once; the lock holds them for 30 days
    settings = locking(tmp_path, age_identity, moto_server, lock_bucket, {"mode": "GOVERNANCE", "min_days": 30},
                       sources={"sqlite": {"path": str(demo_sqlite)}}, retention={"sqlite_backup": {"keep_daily": 1}})
    parts = days_back(3)
    made = {p: run_backup(settings, "sqlite_backup", p) for p in parts}
    dest = offsite(settings)
    before = versions(s3_client, lock_bucket)
    assert before == (sorted(k for m in made.values() for k in capture_keys(dest, m)), [])
    assert ledger_versions(s3_client, lock_bucket) == 3

    def locked_reason(m: Manifest) -> str:
        until = datetime.fromisoformat(m.captured_at) + timedelta(days=30)
        return f"locked until {until.isoformat()} (GOVERNANCE) on offsite"

    dry = prune(settings, dry_run=True, log=pytest.fail)
    assert dry.plan.delete == []
    kept = {e.manifest.partition: r for e, r in dry.plan.keep}
    for p in parts[:2]:
        assert kept[p] == f"{locked_reason(made[p])} (otherwise: in no bucket of the policy (1 daily))"
    assert "sqlite_backup: 2 capture(s) the policy would delete stay where Object Lock holds them" in dry.notes

    lines: list[str] = []
    result = prune(settings, dry_run=False, log=lines.append)
    assert result.deleted == [] and result.failed == [] and len(result.kept) == 3
    assert {r["reason"] for r in result.as_rows() if r["partition"] in parts[:2]} == {
        kept[p] for p in parts[:2]}
    assert versions(s3_client, lock_bucket) == before  # nothing deleted, no delete marker added

    # the lock of the oldest day expires: that one goes, every version of it, and no delete marker is left
    expire(s3_client, lock_bucket, dest, made[parts[0]])
    result = prune(settings, dry_run=False, log=lines.append)
    assert [e.manifest.partition for e, _ in result.deleted] == [parts[0]] and result.failed == []
    m0 = made[parts[0]]
    assert lines == [f"deleted sqlite_backup {parts[0]} captured {m0.captured_at} from offsite: in no bucket of the "
                     "policy (1 daily)"]
    left, markers = versions(s3_client, lock_bucket)
    assert markers == [] and left == sorted(set(before[0]) - capture_keys(dest, m0))
    assert ledger_versions(s3_client, lock_bucket) == 4  # the ledger recorded the deletion first
    assert [e.manifest.partition for e in catalog_entries(settings, destinations=[dest])] == parts[1:]


def test_a_capture_locked_offsite_goes_from_the_other_destinations_only(
        tmp_path: Path, demo_sqlite: Path, age_identity: Any, moto_server: Any, lock_bucket: str,
        s3_client: Any) -> None:
    settings = locking(tmp_path, age_identity, moto_server, lock_bucket, {"mode": "GOVERNANCE", "min_days": 30},
                       local=True, sources={"sqlite": {"path": str(demo_sqlite)}},
                       retention={"sqlite_backup": {"keep_daily": 1}})
    parts = days_back(2)
    made = {p: run_backup(settings, "sqlite_backup", p) for p in parts}
    m = made[parts[0]]
    until = (datetime.fromisoformat(m.captured_at) + timedelta(days=30)).isoformat()

    [(entry, reason)] = prune(settings, dry_run=True).plan.delete
    assert entry.manifest.partition == parts[0]
    assert reason == (f"in no bucket of the policy (1 daily); stays where locked: locked until {until} (GOVERNANCE) "
                      "on offsite")
    lines: list[str] = []
    result = prune(settings, dry_run=False, log=lines.append)
    assert result.deleted == [] and result.failed == []
    assert lines == [f"deleted sqlite_backup {parts[0]} captured {m.captured_at} from local: {reason}",
                     f"kept sqlite_backup {parts[0]} captured {m.captured_at} on offsite: locked until {until} "
                     "(GOVERNANCE)"]
    kept = {e.manifest.partition: r for e, r in result.kept}
    assert kept[parts[0]] == (f"locked until {until} (GOVERNANCE) on offsite; deleted from local (otherwise: in no "
                              "bucket of the policy (1 daily))")
    by_dest = {e.manifest.partition: e.held_by for e in catalog_entries(settings)}
    assert by_dest == {parts[0]: ["offsite"], parts[1]: ["local", "offsite"]}
    assert versions(s3_client, lock_bucket)[1] == []


def test_a_locked_uploads_capture_keeps_what_it_depends_on(tmp_path: Path, age_identity: Any, moto_server: Any,
                                                           lock_bucket: str, s3_client: Any) -> None:
    up = tmp_path / "uploads"
    up.mkdir()
    settings = locking(tmp_path, age_identity, moto_server, lock_bucket, {"mode": "GOVERNANCE", "min_days": 30},
                       local=True, sources={"uploads": {"path": str(up)}}, state_dir=str(tmp_path / "state"),
                       retention={"uploads_snapshot": {"keep_daily": 1}})
    parts = days_back(3)
    (up / "a.pdf").write_bytes(b"a" * 500)
    m0 = run_backup(settings, "uploads_snapshot", parts[0])  # holds a.pdf
    (up / "b.pdf").write_bytes(b"b" * 500)
    m1 = run_backup(settings, "uploads_snapshot", parts[1])  # holds b.pdf, needs d0 for a.pdf
    (up / "a.pdf").unlink()
    (up / "b.pdf").unlink()
    (up / "c.pdf").write_bytes(b"c" * 500)
    m2 = run_backup(settings, "uploads_snapshot", parts[2])  # holds c.pdf, needs nothing
    assert m1.facts["depends_on"] == [m0.artifact_key] and m2.facts["depends_on"] == []
    dest = offsite(settings)
    expire(s3_client, lock_bucket, dest, m0)  # d0's lock is over, d1's is not: d1 stays offsite and needs d0 there

    plan = prune(settings, dry_run=True).plan
    kept = {e.manifest.partition: r for e, r in plan.keep}
    assert kept[parts[0]].startswith(f"needed by uploads_snapshot {parts[1]}, which Object Lock keeps on offsite "
                                     "(otherwise: ")
    assert [e.manifest.partition for e, _ in plan.delete] == [parts[1]]

    result = prune(settings, dry_run=False, log=lambda line: None)
    assert result.deleted == [] and result.failed == []
    held = {e.manifest.partition: e.held_by for e in catalog_entries(settings)}
    assert held == {parts[0]: ["local", "offsite"], parts[1]: ["offsite"], parts[2]: ["local", "offsite"]}
    assert verify_backup(settings, "uploads_snapshot", parts[1], read_data=0)["ok"]  # d1 from offsite, with d0


@pytest.mark.parametrize("mode", ["GOVERNANCE", "COMPLIANCE"])
def test_the_pipelines_own_credentials_cannot_delete_a_locked_artifact(
        tmp_path: Path, demo_sqlite: Path, age_identity: Any, moto_server: Any, lock_bucket: str, s3_client: Any,
        mode: str) -> None:
    settings = locking(tmp_path, age_identity, moto_server, lock_bucket, {"mode": mode},
                       sources={"sqlite": {"path": str(demo_sqlite)}})
    m = run_backup(settings, "sqlite_backup", days_back(1)[0])
    dest = offsite(settings)  # the destination the pipeline builds, with its own credentials
    obj = dest.object_key(m.artifact_key)
    [version] = [v["VersionId"] for v in s3_client.list_object_versions(Bucket=lock_bucket, Prefix=obj)["Versions"]]

    # the destination's own delete removes versions, and the server refuses the locked one
    with pytest.raises(DestinationError, match=r"^destination offsite: access denied \(AccessDenied\) on delete "
                                               rf"version s3://{lock_bucket}/{obj}$"):
        dest.delete(m.artifact_key)
    # the same credentials, straight through boto3: deleting the version, in a batch, or bypassing GOVERNANCE
    with pytest.raises(ClientError) as err:
        dest.client.delete_object(Bucket=lock_bucket, Key=obj, VersionId=version)
    assert err.value.response["Error"]["Code"] == "AccessDenied"
    batch = dest.client.delete_objects(Bucket=lock_bucket, Delete={"Objects": [{"Key": obj, "VersionId": version}]})
    assert [e["Code"] for e in batch.get("Errors", [])] == ["AccessDenied"] and not batch.get("Deleted")
    if mode == "COMPLIANCE":  # no one can shorten or bypass a COMPLIANCE lock
        with pytest.raises(ClientError) as err:
            dest.client.delete_object(Bucket=lock_bucket, Key=obj, VersionId=version, BypassGovernanceRetention=True)
        assert err.value.response["Error"]["Code"] == "AccessDenied"

    # a plain delete through the pipeline never leaves a delete marker over the locked backup
    assert versions(s3_client, lock_bucket) == (sorted(capture_keys(dest, m)), [])
    assert dest.exists(m.artifact_key) and dest.exists(m.key)
    # still there and intact: readable, checksum as recorded, and verifiable end to end
    buf = io.BytesIO()
    assert get(dest, m.artifact_key, buf, expected_sha256=m.artifact_sha256) == m.artifact_sha256
    assert verify_backup(settings, "sqlite_backup", m.partition)["ok"]


def _month_start_plus(day: str, months: int) -> datetime:
    """Midnight (Europe/Berlin) of the first day of day's month plus ``months`` months, in UTC."""
    d = datetime.fromisoformat(day)
    index = d.year * 12 + d.month - 1 + months
    return datetime(index // 12, index % 12 + 1, 1, tzinfo=BERLIN).astimezone(UTC)


@pytest.mark.parametrize("mode", ["GOVERNANCE", "COMPLIANCE"])
def test_a_monthly_backup_is_locked_until_its_monthly_keep_ends_not_just_its_upload_lock(
        tmp_path: Path, demo_sqlite: Path, age_identity: Any, moto_server: Any, lock_bucket: str, s3_client: Any,
        mode: str) -> None:
    """The upload lock ends after min_days; a capture the plan keeps as monthly is kept for months: prune extends its
    lock (manifest, signature, artifact) to the end of that keep, so the pipeline's own credentials cannot delete kept
    history early. Locks only grow, keep their mode, and a second prune changes nothing."""
    settings = locking(tmp_path, age_identity, moto_server, lock_bucket, {"mode": mode, "min_days": 1}, local=True,
                       sources={"sqlite": {"path": str(demo_sqlite)}},
                       retention={"sqlite_backup": {"keep_daily": 1, "keep_monthly": 3}})
    today = days_back(1)[0]
    first = datetime.fromisoformat(today).replace(day=1)
    last_month = (first - timedelta(days=1)).replace(day=10).date().isoformat()
    before_that = (first - timedelta(days=40)).replace(day=15).date().isoformat()
    made = {p: run_backup(settings, "sqlite_backup", p) for p in (before_that, last_month, today)}
    dest = offsite(settings)
    upload_until = {p: head(s3_client, lock_bucket, dest, m.artifact_key)["ObjectLockRetainUntilDate"]
                    for p, m in made.items()}
    want = {before_that: _month_start_plus(before_that, 3), last_month: _month_start_plus(last_month, 3),
            today: _month_start_plus(today, 3)}
    assert all(upload_until[p] < want[p] for p in made)

    dry = prune(settings, dry_run=True, log=pytest.fail)
    assert dry.plan.delete == []
    assert sorted((e.manifest.partition, name, outcome) for e, name, outcome in dry.locks) == sorted(
        (p, "offsite", f"would lock until {want[p].isoformat()} (monthly {p[:7]})") for p in made)
    assert all(head(s3_client, lock_bucket, dest, m.artifact_key)["ObjectLockRetainUntilDate"] == upload_until[p]
               for p, m in made.items())  # a dry run changes nothing

    lines: list[str] = []
    result = prune(settings, dry_run=False, log=lines.append)
    assert result.deleted == [] and result.failed == [] and result.lock_failures == 0
    assert sorted(lines) == sorted(f"locked sqlite_backup {p} captured {made[p].captured_at} on offsite until "
                                   f"{want[p].isoformat()} (monthly {p[:7]}): 3 object(s)" for p in made)
    for p, m in made.items():
        for key in (m.key, m.key + SIGNATURE_SUFFIX, m.artifact_key):
            h = head(s3_client, lock_bucket, dest, key)
            assert (h["ObjectLockMode"], h["ObjectLockRetainUntilDate"]) == (mode, want[p]), key
    # the pipeline's own credentials cannot delete the monthly backup, though its upload lock has (in effect) ended
    with pytest.raises(DestinationError, match=r"access denied \(AccessDenied\) on delete version"):
        dest.delete(made[last_month].artifact_key)
    # nothing left to extend: a second prune neither logs nor changes a lock
    again = prune(settings, dry_run=False, log=pytest.fail)
    assert again.locks == [] and again.deleted == []
    # a lock that already reaches further is never shortened
    if mode == "GOVERNANCE":
        later = want[today] + timedelta(days=400)
        obj = dest.object_key(made[today].artifact_key)
        s3_client.put_object_retention(Bucket=lock_bucket, Key=obj, Retention={"Mode": mode, "RetainUntilDate": later})
        assert prune(settings, dry_run=False, log=pytest.fail).locks == []
        assert head(s3_client, lock_bucket, dest, made[today].artifact_key)["ObjectLockRetainUntilDate"] == later


def test_what_a_kept_weekly_uploads_capture_depends_on_is_locked_as_long(
        tmp_path: Path, age_identity: Any, moto_server: Any, lock_bucket: str, s3_client: Any) -> None:
    """An uploads snapshot kept as weekly needs the earlier artifacts holding its content: they are locked as long."""
    up = tmp_path / "uploads"
    up.mkdir()
    settings = locking(tmp_path, age_identity, moto_server, lock_bucket, {"mode": "GOVERNANCE", "min_days": 1},
                       sources={"uploads": {"path": str(up)}}, state_dir=str(tmp_path / "state"),
                       retention={"uploads_snapshot": {"keep_daily": 1, "keep_weekly": 4}})
    parts = days_back(2)
    (up / "a.pdf").write_bytes(b"a" * 500)
    m0 = run_backup(settings, "uploads_snapshot", parts[0])
    (up / "b.pdf").write_bytes(b"b" * 500)
    m1 = run_backup(settings, "uploads_snapshot", parts[1])
    assert m1.facts["depends_on"] == [m0.artifact_key]
    monday = datetime.fromisoformat(parts[1]).date() - timedelta(days=datetime.fromisoformat(parts[1]).weekday())
    end = datetime.combine(monday + timedelta(weeks=4), datetime.min.time(), BERLIN).astimezone(UTC)
    result = prune(settings, dry_run=False, log=lambda line: None)
    assert result.lock_failures == 0
    dest = offsite(settings)
    assert head(s3_client, lock_bucket, dest, m1.artifact_key)["ObjectLockRetainUntilDate"] == end
    assert head(s3_client, lock_bucket, dest, m0.artifact_key)["ObjectLockRetainUntilDate"] >= end
