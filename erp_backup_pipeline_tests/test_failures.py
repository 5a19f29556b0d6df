"""Bad input and broken destinations: one clear line, a failed run, and no earlier backup touched."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from erp_backup_pipeline.core.destinations import build_destinations
from erp_backup_pipeline.core.pipeline import run_backup
from erp_backup_pipeline.errors import ConfigError, DestinationError
from erp_backup_pipeline_tests.conftest import catalog_entries, make_settings, s3_destination
from erp_backup_pipeline_tests.faults.tools import tmpfs


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs: a destination disk that really fills up (CI runs as root)."""
    with tmpfs(tmp_path / "tiny", "2m", mode=None) as mount:
        yield mount


def _big_sqlite(path: Path) -> Path:
    import os
    import sqlite3

    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE blobs (id INTEGER PRIMARY KEY, data BLOB)")
        conn.executemany("INSERT INTO blobs(data) VALUES (?)", [(os.urandom(100_000),) for _ in range(40)])
    return path


def test_full_destination_disk_fails_cleanly_and_keeps_earlier_backups(tmp_path: Path, tiny_disk: Path,
                                                                        demo_sqlite: Path, age_identity) -> None:
    settings = make_settings(tmp_path, age_identity, sources={"sqlite": {"path": str(demo_sqlite)}},
                             destinations=[{"type": "local", "path": str(tiny_disk)}])
    good = run_backup(settings, "sqlite_backup", "2026-11-24")
    big = make_settings(tmp_path, age_identity, sources={"sqlite": {"path": str(_big_sqlite(tmp_path / "big.db"))}},
                        destinations=[{"type": "local", "path": str(tiny_disk)}])
    with pytest.raises(DestinationError) as err:
        run_backup(big, "sqlite_backup", "2026-11-25")
    assert "no space left on device" in str(err.value) and "\n" not in str(err.value)
    entries = catalog_entries(settings)
    assert [e.manifest.artifact_sha256 for e in entries] == [good.artifact_sha256]
    assert [p.name for p in tiny_disk.rglob("*") if p.is_file() and ".partial-" in p.name] == []
    assert [p for p in (tmp_path / "staging").rglob("*") if p.is_file()] == []


def test_missing_bucket_fails_before_any_work(tmp_path: Path, demo_sqlite: Path, age_identity, moto_server) -> None:
    settings = make_settings(tmp_path, age_identity, sources={"sqlite": {"path": str(demo_sqlite)}},
                             destinations=[{"type": "local", "path": str(tmp_path / "b")},
                                           s3_destination(moto_server, f"missing-{uuid.uuid4().hex[:8]}")])
    with pytest.raises(DestinationError, match=r"S3 bucket 'missing-[0-9a-f]+' does not exist"):
        run_backup(settings, "sqlite_backup", "2026-11-25")
    assert not (tmp_path / "b").exists() or not any((tmp_path / "b").rglob("*.age"))


def test_optional_destination_failure_is_recorded_and_the_backup_counts(tmp_path: Path, demo_sqlite: Path,
                                                                        age_identity, moto_server) -> None:
    settings = make_settings(tmp_path, age_identity, sources={"sqlite": {"path": str(demo_sqlite)}},
                             destinations=[{"type": "local", "path": str(tmp_path / "b")},
                                           s3_destination(moto_server, "not-there-bucket", required=False)])
    m = run_backup(settings, "sqlite_backup", "2026-11-25")
    assert m.complete and m.destinations["local"]["ok"]
    assert m.destinations["offsite"] == {"ok": False, "error": "destination offsite: S3 bucket 'not-there-bucket' does not exist"}


def test_required_destination_failing_mid_run_marks_the_capture_incomplete(tmp_path: Path, demo_sqlite: Path,
                                                                           age_identity, moto_server, bucket,
                                                                           s3_client) -> None:
    """The bucket disappears after the preflight: local keeps a usable copy, the run still fails."""
    from erp_backup_pipeline.core import pipeline

    settings = make_settings(tmp_path, age_identity, sources={"sqlite": {"path": str(demo_sqlite)}},
                             destinations=[{"type": "local", "path": str(tmp_path / "b")},
                                           s3_destination(moto_server, bucket)])
    capture = pipeline.new_capture(settings, "sqlite_backup", "2026-11-25")
    for stage in pipeline.STAGES[:4]:
        capture = stage(settings, capture)
    s3_client.delete_bucket(Bucket=bucket)
    capture = pipeline.stage_ship(settings, capture)
    with pytest.raises(DestinationError, match="not backed up on every required destination"):
        pipeline.stage_manifest(settings, capture)
    [entry] = catalog_entries(settings, destinations=build_destinations(settings)[:1])
    assert not entry.manifest.complete and entry.held_by == ["local"]


def test_unparseable_recipient_fails_before_any_work(tmp_path: Path, demo_sqlite: Path, age_identity) -> None:
    settings = make_settings(tmp_path, age_identity, sources={"sqlite": {"path": str(demo_sqlite)}},
                             encryption={"recipients": ["age1-this-is-not-a-key"]})
    with pytest.raises(ConfigError, match="does not parse"):
        run_backup(settings, "sqlite_backup", "2026-11-25")
    assert not (tmp_path / "backups").exists()


def test_next_backup_sweeps_what_a_killed_run_left(tmp_path: Path, demo_sqlite: Path, age_identity) -> None:
    """A partial file two days old (a killed run) is removed; a young one (a run in progress) stays."""
    import os
    import time

    settings = make_settings(tmp_path, age_identity, sources={"sqlite": {"path": str(demo_sqlite)}})
    folder = tmp_path / "backups" / "erp-steinmetz" / "sqlite_backup" / "2026-11-20"
    folder.mkdir(parents=True)
    stale = folder / ".20261120T010000000Z.sqlite3.zst.age.partial-dead"
    young = folder / ".20261126T010000000Z.sqlite3.zst.age.partial-live"
    for p in (stale, young):
        p.write_bytes(b"half an artifact")
    two_days_ago = time.time() - 2 * 86400
    os.utime(stale, (two_days_ago, two_days_ago))
    scratch = tmp_path / "staging" / "sqlite_backup" / "2026-11-20-20261120T010000000Z"
    scratch.mkdir(parents=True)
    (scratch / "snapshot.sqlite3").write_bytes(b"a killed run's snapshot")
    os.utime(scratch, (two_days_ago, two_days_ago))
    lines: list[str] = []
    run_backup(settings, "sqlite_backup", "2026-11-25", lambda text, *_: lines.append(text))
    assert not stale.exists() and young.exists() and not scratch.exists()
    assert any("left by an interrupted backup" in ln for ln in lines)


def test_missing_dump_tool_leaves_no_partial_upload(tmp_path: Path, demo_sqlite: Path, age_identity, pg_server) -> None:
    """The dump engine fails to start after the uploads were opened: every upload is aborted."""
    from erp_backup_pipeline_tests.conftest import pg_source

    settings = make_settings(tmp_path, age_identity, sources=pg_source(pg_server, "postgres"))
    from erp_backup_pipeline.core import pipeline

    capture = pipeline.stage_dump(settings, pipeline.new_capture(settings, "postgres_dump", "2026-11-25"))
    broken = make_settings(tmp_path, age_identity, sources=pg_source(pg_server, "postgres", bin_dir=str(tmp_path)))
    with pytest.raises(Exception, match="pg_dump not found"):
        pipeline.stage_compress(broken, capture)
    assert [p for p in (tmp_path / "backups").rglob("*") if p.is_file()] == []
