"""Sources that hold nothing, or not what they seem: each is a failed backup in one line, never "complete".

An uploads root that is a symlink (a NAS layout), an unmounted share (an empty mount point), a root replaced
by a link between two backups, a configured config path that is a link, a 0-byte SQLite file, a database
without user tables; and the disks that fill up around a backup (staging, state). The earlier good backup is
never touched, and a failed capture ships nothing.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import uuid
from pathlib import Path
from typing import Any

import dagster as dg
import psycopg
import pytest

from erp_backup_pipeline.cli import main
from erp_backup_pipeline.core import catalog
from erp_backup_pipeline.core.pipeline import run_backup
from erp_backup_pipeline.errors import BackupError, VerifyError
from erp_backup_pipeline.settings import Settings, load_settings
from erp_backup_pipeline_tests.conftest import catalog_entries, make_settings, pg_source, signing_section
from erp_backup_pipeline_tests.faults.tools import tmpfs

EARLIER, DAY = "2026-11-24", "2026-11-25"


def _uploads(tmp: Path, age_identity: tuple[Path, str], path: Path, **extra: Any) -> Settings:
    return make_settings(tmp, age_identity, state_dir=str(tmp / "state"), sources={"uploads": {"path": str(path), **extra}})


def _tree(root: Path, n: int = 4) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        (root / f"RE-{i}.pdf").write_bytes(b"%PDF " + bytes([i]) * 100)
    return root


def _catalog(settings: Settings, source: str) -> list[tuple[str, bool]]:
    return [(e.manifest.partition, bool(e.manifest.verify.get("ok")))
            for e in catalog_entries(settings, source)]


def _fails(settings: Settings, source: str, partition: str = DAY) -> str:
    with pytest.raises(BackupError) as err:
        run_backup(settings, source, partition)
    text = str(err.value)
    assert "\n" not in text and "Traceback" not in text, text
    return text


def test_an_uploads_root_that_is_a_symlink_fails_unless_followed_explicitly(tmp_path: Path, age_identity) -> None:
    real = _tree(tmp_path / "nas" / "uploads")
    link = tmp_path / "uploads"
    link.symlink_to(real)
    text = _fails(_uploads(tmp_path, age_identity, link), "uploads_snapshot")
    assert text == (f"uploads: {link} is a symlink (to {real}); a backup would hold the link, not the documents: "
                    "configure the real path, or set sources.uploads.follow_symlinks: true")
    assert _catalog(_uploads(tmp_path, age_identity, link), "uploads_snapshot") == []
    m = run_backup(_uploads(tmp_path, age_identity, link, follow_symlinks=True), "uploads_snapshot", DAY)
    assert m.facts["files"] == 4 and m.facts["followed_symlink"] == str(real) and m.facts["path"] == str(link)


def test_an_uploads_root_replaced_by_a_symlink_between_two_backups_fails_the_second(tmp_path: Path, age_identity) -> None:
    root = _tree(tmp_path / "uploads")
    settings = _uploads(tmp_path, age_identity, root)
    good = run_backup(settings, "uploads_snapshot", EARLIER)
    root.rename(tmp_path / "moved")
    root.symlink_to(tmp_path / "moved")
    assert "is a symlink" in _fails(settings, "uploads_snapshot")
    assert _catalog(settings, "uploads_snapshot") == [(EARLIER, True)]
    assert json.loads((tmp_path / "state" / "uploads_snapshot.json").read_text())["blobs"]  # state not advanced
    assert good.facts["files"] == 4


def test_an_unmounted_share_fails_naming_the_path_and_both_counts(tmp_path: Path, age_identity) -> None:
    root = _tree(tmp_path / "mnt" / "uploads", 4)
    settings = _uploads(tmp_path, age_identity, root)
    run_backup(settings, "uploads_snapshot", EARLIER)
    for f in root.iterdir():
        f.unlink()  # the share is gone: its mount point is empty
    text = _fails(settings, "uploads_snapshot")
    assert text.startswith(f"uploads_snapshot: the uploads directory {root} holds 0 files and the previous verified "
                           f"capture ({EARLIER}, "), text
    assert "held 4: an unmounted share or an emptied directory is no backup" in text
    assert text.endswith("set sources.uploads.allow_empty: true")
    assert _catalog(settings, "uploads_snapshot") == [(EARLIER, True)]
    assert not [p for p in (tmp_path / "backups").rglob("*") if ".partial-" in p.name]
    m = run_backup(_uploads(tmp_path, age_identity, root, allow_empty=True), "uploads_snapshot", DAY)
    assert m.facts["files"] == 0


def test_a_first_backup_of_an_empty_directory_fails_too(tmp_path: Path, age_identity) -> None:
    (tmp_path / "empty").mkdir()
    text = _fails(_uploads(tmp_path, age_identity, tmp_path / "empty"), "uploads_snapshot")
    assert "holds 0 files and there is no earlier verified capture to compare with" in text


def test_a_shrink_past_max_shrink_fails(tmp_path: Path, age_identity) -> None:
    root = _tree(tmp_path / "uploads", 10)
    settings = _uploads(tmp_path, age_identity, root, max_shrink=0.5)
    run_backup(settings, "uploads_snapshot", EARLIER)
    for i in range(6):
        (root / f"RE-{i}.pdf").unlink()
    text = _fails(settings, "uploads_snapshot")
    assert "holds 4 files and the previous verified capture" in text and "held 10: 60 % fewer" in text, text
    assert text.endswith("sources.uploads.max_shrink is 0.5")
    (root / "RE-0.pdf").write_bytes(b"back")
    assert "held 10: 50 % fewer" in _fails(settings, "uploads_snapshot")  # max_shrink or more
    (root / "RE-1.pdf").write_bytes(b"back")
    assert run_backup(settings, "uploads_snapshot", DAY).facts["files"] == 6


def test_a_config_path_that_is_a_symlink_fails_unless_followed(tmp_path: Path, age_identity) -> None:
    real = tmp_path / "shared" / "prod.env"
    real.parent.mkdir()
    real.write_text("DB_PASSWORD=x\n")
    (tmp_path / "erp").mkdir()
    env = tmp_path / "erp" / ".env"
    env.symlink_to(real)
    config = {"paths": [str(env)], "root": str(tmp_path / "erp")}
    settings = make_settings(tmp_path, age_identity, sources={"config": config})
    text = _fails(settings, "config_archive")
    assert text == (f"files: the configured path {env} is a symlink (to {real}); a backup would hold the link, not "
                    "the file: configure the real path, or set sources.config.follow_symlinks: true")
    followed = make_settings(tmp_path, age_identity, sources={"config": {**config, "follow_symlinks": True}})
    m = run_backup(followed, "config_archive", DAY)
    assert m.facts["files"] == 1 and m.facts["followed_symlinks"] == {str(env): str(real)}
    assert [e["name"] for e in m.facts["index"]] == [".env"]
    (tmp_path / "conf").mkdir()
    empty = make_settings(tmp_path, age_identity, sources={"config": {"paths": [str(tmp_path / "conf")]}})
    assert "the configured paths (" in _fails(empty, "config_archive")


def test_a_zero_byte_sqlite_file_fails_the_blocking_check_of_the_run(tmp_path: Path, age_identity) -> None:
    from erp_backup_pipeline.orchestration.definitions import build_definitions

    db = tmp_path / "erp" / "production.sqlite3"
    db.parent.mkdir()
    db.write_bytes(b"")
    settings = make_settings(tmp_path, age_identity, sources={"sqlite": {"path": str(db)}})
    text = _fails(settings, "sqlite_backup")
    assert text == (f"sqlite_backup: the SQLite database {db} holds no tables: an empty database is no backup (a 0-byte "
                    "file, the wrong database?); if it is meant to be empty, set sources.sqlite.allow_empty: true")
    config = tmp_path / "erp-backup.yaml"
    config.write_text(json.dumps({"staging_dir": str(tmp_path / "staging"), "encryption": {
        "recipients": [age_identity[1]]}, "signing": signing_section(),
        "destinations": [{"type": "local", "path": str(tmp_path / "backups")}],
        "sources": {"sqlite": {"path": str(db)}}}))
    job = build_definitions(str(config)).resolve_job_def("sqlite_backup_job")
    with dg.instance_for_test() as instance:
        result = job.execute_in_process(partition_key=DAY, instance=instance, raise_on_error=False)
        assert not result.success
        checks = [e.event_specific_data.check_name for e in result.all_events  # type: ignore[union-attr]
                  if e.event_type_value == "ASSET_CHECK_EVALUATION" and not e.event_specific_data.passed]
        assert checks == ["integrity"]
    assert _catalog(settings, "sqlite_backup") == []
    allowed = make_settings(tmp_path, age_identity, sources={"sqlite": {"path": str(db), "allow_empty": True}})
    assert run_backup(allowed, "sqlite_backup", DAY).facts["row_counts"] == {}


def test_a_postgres_database_without_user_tables_fails_unless_allowed(tmp_path: Path, age_identity, pg_server) -> None:
    name = f"erp_empty_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg_server.dsn(), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}" OWNER erp_user')
    try:
        settings = make_settings(tmp_path, age_identity, sources=pg_source(pg_server, name))
        with pytest.raises(VerifyError) as err:
            run_backup(settings, "postgres_dump", DAY)
        assert str(err.value).startswith(f"postgres_dump: the PostgreSQL database {name} holds no tables")
        allowed = make_settings(tmp_path, age_identity, sources=pg_source(pg_server, name, allow_empty=True))
        assert run_backup(allowed, "postgres_dump", DAY).verify["ok"]
    finally:
        with psycopg.connect(pg_server.dsn(), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _cli(config: Path, *argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(["--config", str(config), *argv])
    return rc, out.getvalue(), err.getvalue()


def _write_config(tmp: Path, age_identity: tuple[Path, str], uploads: Path, staging: Path, state: Path) -> Path:
    config = tmp / "erp-backup.yaml"
    config.write_text(json.dumps({"staging_dir": str(staging), "state_dir": str(state),
                                  "encryption": {"recipients": [age_identity[1]], "identity_file": str(age_identity[0])},
                                  "signing": signing_section(),
                                  "destinations": [{"type": "local", "path": str(tmp / "backups")}],
                                  "sources": {"uploads": {"path": str(uploads)}}}))
    return config


def test_a_full_staging_disk_is_one_line_and_leaves_nothing(tmp_path: Path, age_identity) -> None:
    uploads = _tree(tmp_path / "uploads", 2)
    (uploads / "scan.tif").write_bytes(bytes(range(256)) * (12 * 4096))  # 12 MiB: spooled to the staging disk
    with tmpfs(tmp_path / "staging", "2m") as staging:
        config = _write_config(tmp_path, age_identity, uploads, staging, tmp_path / "state")
        rc, _, err = _cli(config, "backup", "uploads", "--partition", DAY)
        assert rc == 1 and "Traceback" not in err, err
        assert err.strip().endswith("no space left on device while reading " + str(uploads / "scan.tif") +
                                    "; free space there or set staging_dir to a larger disk"), err
        assert list(staging.rglob("*.json")) == [] and [p for p in staging.rglob("*") if p.is_file()] == []
    assert not [p for p in (tmp_path / "backups").rglob("*") if p.is_file()]


def _fill(disk: Path, leave: int = 0) -> None:
    """Fill the tmpfs at ``disk`` until exactly ``leave`` bytes (whole pages) are free."""
    spare = disk / "spare"
    spare.write_bytes(b"\0" * leave)
    subprocess.run(["dd", "if=/dev/zero", f"of={disk / 'rest'}", "bs=4k"], capture_output=True, check=False)
    spare.unlink()
    free = os.statvfs(disk)
    assert free.f_bavail * free.f_frsize == leave


def test_a_full_state_disk_before_the_commit_fails_in_one_line_and_commits_nothing(tmp_path: Path, age_identity) -> None:
    """No room on the state disk even for the chain's record of the capture, which is written before the manifest
    is signed: a capture signed without it would let the next one take its sequence (a fork). So the run fails in one
    line and nothing is committed: no manifest, no signature, no ledger, no chain state; the artifact it shipped is
    an orphan for prune's sweep. With space again, the next backup is the chain's first capture."""
    uploads = _tree(tmp_path / "uploads", 3)
    with tmpfs(tmp_path / "state", "64k") as state:
        config = _write_config(tmp_path, age_identity, uploads, tmp_path / "staging", state)
        _fill(state)
        rc, _, err = _cli(config, "backup", "uploads", "--partition", DAY)
        assert rc == 1 and "Traceback" not in err, err
        line = err.strip().splitlines()[-1]
        assert line.startswith(f"erp-backup: error: uploads_snapshot {DAY}: ") and line.endswith(
            f"uploads_snapshot {DAY}: nothing was committed: this host's chain state in {state} could not be written "
            "(No space left on device); a capture is signed only once it is recorded there: free space there (or make "
            "it writable) and run the backup again"), err
        assert "manifest written" not in err and "warning" not in err, err
        assert sorted(p.relative_to(state).as_posix() for p in state.rglob("*") if p.is_file()) == [
            "chain/uploads_snapshot.lock", "rest"]  # no state, no temp file left behind
        stored = [p.name for p in (tmp_path / "backups").rglob("*") if p.is_file()]
        assert len(stored) == 1 and stored[0].endswith(".tar.zst.age"), stored  # the orphan, nothing else
        settings = load_settings(config)
        assert catalog_entries(settings, "uploads_snapshot") == []

        (state / "rest").unlink()
        rc, _, err = _cli(config, "backup", "uploads", "--partition", DAY)
        assert rc == 0 and "warning" not in err, err
        found = catalog.of(settings, "uploads_snapshot")
        assert [(e.manifest.partition, e.manifest.sequence, e.manifest.previous) for e in found.entries] == [
            (DAY, 1, None)]
        assert (found.rejected, found.findings, found.gaps, found.errors) == ([], [], [], [])


def test_a_state_disk_that_fills_during_the_commit_keeps_the_backup_and_its_place_in_the_chain(
        tmp_path: Path, age_identity) -> None:
    """Room for the chain's record of the capture before the manifest is signed, none left to advance the head once
    it is written: the backup stands (a warning, not a failed run), the record on disk still names the capture as
    pending, and the next backup settles it and links to it: no fork, no gap."""
    uploads = _tree(tmp_path / "uploads", 3)
    with tmpfs(tmp_path / "state", "64k") as state:
        config = _write_config(tmp_path, age_identity, uploads, tmp_path / "staging", state)
        _fill(state, leave=4096)  # the pending record's page; its atomic replacement needs a second one
        rc, _, err = _cli(config, "backup", "uploads", "--partition", DAY)
        assert rc == 0 and "Traceback" not in err, err
        assert (f"warning: the chain state of uploads_snapshot in {state} could not be updated (No space left on "
                "device); it keeps sequence 1 as pending, the next backup or prune settles it") in err
        settings = load_settings(config)
        found = catalog.of(settings, "uploads_snapshot")
        assert [(e.manifest.partition, e.manifest.sequence) for e in found.entries] == [(DAY, 1)]
        assert (found.rejected, found.findings, found.gaps, found.errors) == ([], [], [], [])
        recorded = json.loads((state / "chain" / "uploads_snapshot.json").read_text())
        assert (recorded["sequence"], recorded["pending"]) == (0, {"sequence": 1, "sha256": found.entries[0].sha256,
                                                                   "key": found.entries[0].manifest.key})

        (state / "rest").unlink()
        rc, _, err = _cli(config, "backup", "uploads", "--partition", EARLIER)
        assert rc == 0 and "warning" not in err, err
        found = catalog.of(settings, "uploads_snapshot")
        first, second = sorted(found.entries, key=lambda e: e.manifest.sequence)
        assert (first.manifest.sequence, second.manifest.sequence, second.manifest.previous) == (1, 2, first.sha256)
        assert (found.rejected, found.findings, found.gaps, found.errors) == ([], [], [], [])
        recorded = json.loads((state / "chain" / "uploads_snapshot.json").read_text())
        assert (recorded["sequence"], recorded["sha256"], "pending" in recorded) == (2, second.sha256, False)


def test_a_full_state_disk_after_the_commit_is_a_complete_backup_with_a_warning(tmp_path: Path, age_identity) -> None:
    """The state disk has room for the chain's record of the capture (a few hundred bytes, written before the manifest
    is signed) but not for the uploads state, written after the commit: the backup is complete, in its chain, with a
    warning that says what the next backup does instead; that one, with space again, reads everything again and links
    to the committed capture."""
    uploads = _tree(tmp_path / "uploads", 200)
    with tmpfs(tmp_path / "state", "64k") as state:
        config = _write_config(tmp_path, age_identity, uploads, tmp_path / "staging", state)
        _fill(state, leave=8192)  # the chain state's file and its atomic replacement: two pages
        rc, out, err = _cli(config, "backup", "uploads", "--partition", DAY)
        assert rc == 0, err
        assert "backup is complete, but what it shipped could not be remembered in" in err and "Traceback" not in err
        assert "(No space left on device)" in err
        assert not list(state.glob(".*.tmp")) and not (state / "uploads_snapshot.json").exists()  # no temp file left
        settings = load_settings(config)
        found = catalog.of(settings, "uploads_snapshot")
        assert [(e.manifest.partition, e.manifest.verify["ok"], e.manifest.sequence) for e in found.entries] == [
            (DAY, True, 1)]
        assert (found.rejected, found.findings, found.gaps, found.errors) == ([], [], [], [])
        recorded = json.loads((state / "chain" / "uploads_snapshot.json").read_text())
        assert (recorded["sequence"], recorded["sha256"], "pending" in recorded) == (1, found.entries[0].sha256, False)
        assert sorted(p.name for p in (state / "chain").iterdir()) == ["uploads_snapshot.json", "uploads_snapshot.lock"]

        (state / "rest").unlink()
        rc, _, err = _cli(config, "backup", "uploads", "--partition", EARLIER)
        assert rc == 0 and "warning" not in err, err
        assert (state / "uploads_snapshot.json").stat().st_size > 8192  # the state that did not fit
        found = catalog.of(settings, "uploads_snapshot")
        first, second = sorted(found.entries, key=lambda e: e.manifest.sequence)
        assert (first.manifest.partition, second.manifest.partition, second.manifest.sequence) == (DAY, EARLIER, 2)
        assert second.manifest.previous == first.sha256 and second.manifest.verify["ok"]
        assert (found.rejected, found.findings, found.gaps, found.errors) == ([], [], [], [])
