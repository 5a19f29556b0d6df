"""One contract, run against every destination: local directory and S3 (moto's real server)."""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import pytest

from erp_backup_pipeline.core.destinations import LocalDestination, S3Destination, get, put_bytes, read_bytes
from erp_backup_pipeline.errors import ArtifactNotFound, DestinationError, VerifyError
from erp_backup_pipeline_tests.conftest import S3_KEY_ID, S3_SECRET

MB = 1 << 20


@pytest.fixture(params=["local", "s3"])
def dest(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    if request.param == "local":
        return LocalDestination(tmp_path / "backups")
    moto = request.getfixturevalue("moto_server")
    bucket = request.getfixturevalue("bucket")
    return S3Destination(bucket, prefix="site-a", endpoint_url=moto.endpoint, access_key_id=S3_KEY_ID,
                         secret_access_key=S3_SECRET, multipart_threshold=5 * MB, part_size=5 * MB)


def _tamper(dest: Any, key: str) -> None:
    """Flip one byte of a stored object behind the destination's back."""
    if isinstance(dest, LocalDestination):
        p = dest.path_for(key)
        data = bytearray(p.read_bytes())
        data[len(data) // 2] ^= 0xFF
        p.write_bytes(bytes(data))
    else:
        obj = dest.object_key(key)
        data = bytearray(dest.client.get_object(Bucket=dest.bucket, Key=obj)["Body"].read())
        data[len(data) // 2] ^= 0xFF
        dest.client.put_object(Bucket=dest.bucket, Key=obj, Body=bytes(data))


def test_put_get_round_trip_small_and_multipart(dest: Any) -> None:
    import hashlib

    for key, size in [("p/src/2026-11-25/a.bin", 1000), ("p/src/2026-11-25/big.bin", 12 * MB + 123)]:
        data = os.urandom(size)
        w = dest.open_writer(key)
        for i in range(0, size, 700_001):
            w.write(data[i:i + 700_001])
        uri = w.commit()
        assert key.split("/")[-1] in uri
        out = io.BytesIO()
        assert get(dest, key, out, expected_sha256=hashlib.sha256(data).hexdigest()) == hashlib.sha256(data).hexdigest()
        assert out.getvalue() == data
    assert list(dest.list("p/src/")) == ["p/src/2026-11-25/a.bin", "p/src/2026-11-25/big.bin"]


def test_aborted_write_leaves_nothing(dest: Any) -> None:
    w = dest.open_writer("p/x/partial.bin")
    w.write(os.urandom(11 * MB))  # past the multipart threshold: parts were uploaded
    w.abort()
    assert not dest.exists("p/x/partial.bin")
    assert list(dest.list("p/")) == []
    if isinstance(dest, S3Destination):
        uploads = dest.client.list_multipart_uploads(Bucket=dest.bucket).get("Uploads", [])
        assert uploads == []


def test_unfinished_write_is_invisible_until_commit(dest: Any) -> None:
    w = dest.open_writer("p/x/pending.bin")
    w.write(os.urandom(6 * MB))
    assert list(dest.list("p/")) == [] and not dest.exists("p/x/pending.bin")
    w.write(b"tail")
    w.commit()
    assert list(dest.list("p/")) == ["p/x/pending.bin"]


def test_existing_artifact_is_never_overwritten(dest: Any) -> None:
    put_bytes(dest, "p/x/a.bin", b"first")
    with pytest.raises(DestinationError, match="already exists"):
        put_bytes(dest, "p/x/a.bin", b"second")
    assert read_bytes(dest, "p/x/a.bin") == b"first"


def test_checksum_is_rechecked_on_read(dest: Any) -> None:
    import hashlib

    data = os.urandom(100_000)
    put_bytes(dest, "p/x/c.bin", data)
    _tamper(dest, "p/x/c.bin")
    with pytest.raises(VerifyError, match="checksum mismatch"):
        get(dest, "p/x/c.bin", io.BytesIO(), expected_sha256=hashlib.sha256(data).hexdigest())


def test_missing_object_and_delete(dest: Any) -> None:
    with pytest.raises(ArtifactNotFound):
        dest.open_reader("p/none.bin")
    assert not dest.exists("p/none.bin")
    with pytest.raises(ArtifactNotFound):
        dest.size("p/none.bin")
    put_bytes(dest, "p/d.bin", b"x")
    assert dest.size("p/d.bin") == 1
    dest.delete("p/d.bin")
    dest.delete("p/d.bin")  # deleting a missing key is not an error
    assert not dest.exists("p/d.bin")


def test_check_passes_on_a_usable_destination(dest: Any) -> None:
    dest.check()


def test_missing_bucket_is_one_line(moto_server: Any) -> None:
    d = S3Destination("no-such-bucket-here", endpoint_url=moto_server.endpoint, access_key_id=S3_KEY_ID,
                      secret_access_key=S3_SECRET)
    with pytest.raises(DestinationError) as err:
        put_bytes(d, "k", b"x")
    assert str(err.value) == "destination offsite: S3 bucket 'no-such-bucket-here' does not exist"


def test_unreachable_endpoint_is_one_line() -> None:
    from erp_backup_pipeline_devkit.servers import free_port

    d = S3Destination("b", endpoint_url=f"http://127.0.0.1:{free_port()}", access_key_id="a", secret_access_key="b")
    d.client.meta.config.retries = {"max_attempts": 1}
    with pytest.raises(DestinationError, match="cannot reach S3 endpoint"):
        d.check()


def test_partials_of_a_killed_writer_are_invisible_and_swept_when_old(dest: Any) -> None:
    from datetime import UTC, datetime, timedelta

    key = f"p/{datetime.now(UTC):%Y%m%dT%H%M%S}123Z.pgdump.zst.age"
    w = dest.open_writer(key)
    w.write(os.urandom(6 * MB))  # the process "dies" here: no commit, no abort
    w.suspend()
    assert list(dest.list()) == []
    assert dest.sweep_partials() == []  # young: it may belong to a backup still running
    assert len(dest.sweep_partials(older_than=timedelta(0))) == 1
    if isinstance(dest, S3Destination):
        assert dest.client.list_multipart_uploads(Bucket=dest.bucket).get("Uploads", []) == []
    else:
        assert [p for p in dest.root.rglob("*") if p.is_file()] == []


def test_local_files_are_private(tmp_path: Path) -> None:
    d = LocalDestination(tmp_path / "b")
    put_bytes(d, "p/s/a.bin", b"x")
    assert (d.path_for("p/s/a.bin").stat().st_mode & 0o777) == 0o600
    assert ((tmp_path / "b" / "p" / "s").stat().st_mode & 0o777) == 0o700


@pytest.mark.parametrize("size", [1000, 7 * MB])
def test_suspended_writer_commits_or_aborts_from_its_state(dest: Any, size: int) -> None:
    """Another stage (or process) finishes an upload from the JSON-able state alone."""
    import json

    data = os.urandom(size)
    w = dest.open_writer("p/s/a.bin")
    w.write(data)
    state = json.loads(json.dumps(w.suspend()))
    assert list(dest.list("p/")) == [] and not dest.exists("p/s/a.bin")
    dest.resume_writer("p/s/a.bin", state).commit()
    assert read_bytes(dest, "p/s/a.bin") == data
    w = dest.open_writer("p/s/b.bin")
    w.write(data)
    dest.resume_writer("p/s/b.bin", json.loads(json.dumps(w.suspend()))).abort()
    assert list(dest.list("p/")) == ["p/s/a.bin"]
    if isinstance(dest, S3Destination):
        assert dest.client.list_multipart_uploads(Bucket=dest.bucket).get("Uploads", []) == []
    else:
        assert [p for p in dest.root.rglob("*") if p.is_file()] == [dest.path_for("p/s/a.bin")]


def test_replace_writes_a_small_record_in_place_and_leaves_nothing_beside_it(dest: Any) -> None:
    key = "p/src/chain.json"
    dest.replace(key, b"first")
    dest.replace(key, b"second, longer")
    assert read_bytes(dest, key) == b"second, longer" and list(dest.list("p/")) == [key]


def test_a_bounded_read_never_holds_more_than_the_limit_plus_one(dest: Any) -> None:
    put_bytes(dest, "p/src/big.json", b"x" * (3 * MB))
    assert read_bytes(dest, "p/src/big.json", limit=1000) == b"x" * 1001
    assert read_bytes(dest, "p/src/big.json", limit=10 * MB) == b"x" * (3 * MB)
