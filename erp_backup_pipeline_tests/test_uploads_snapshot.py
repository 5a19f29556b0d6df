"""Uploaded documents: incremental daily snapshots, content stored once, every day restorable in full."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from erp_backup_pipeline.core.pipeline import run_backup
from erp_backup_pipeline.core.restore import restore_backup, restore_plan, verify_backup
from erp_backup_pipeline.errors import RestoreError, SourceError, VerifyError
from erp_backup_pipeline_tests.conftest import catalog_entries, make_settings, s3_destination

ODD = os.fsdecode(b"Rechnung \xfc\xe4 Nr.\n42.pdf")  # spaces, a newline and bytes that are not UTF-8


def tree(root: Path) -> dict[str, Any]:
    """Everything a restore must reproduce: type, content, mode, symlink target, mtime."""
    found: dict[str, Any] = {}
    for dirpath, dirs, files in os.walk(root):
        for name in dirs + files:
            p = Path(dirpath, name)
            rel = os.fsencode(p.relative_to(root))
            st = p.lstat()
            if p.is_symlink():
                found[rel] = ("link", os.readlink(p))
            elif p.is_dir():
                found[rel] = ("dir", oct(st.st_mode & 0o7777))
            else:
                found[rel] = ("file", p.read_bytes(), oct(st.st_mode & 0o7777), st.st_mtime_ns)
    return found


def day1(up: Path) -> None:
    (up / "invoices" / "2026").mkdir(parents=True)
    (up / "empty-dir").mkdir()
    for i in range(30):
        (up / "invoices" / "2026" / f"RE-{i:05d}.pdf").write_bytes(b"%PDF-1.4 invoice " + str(i).encode() * 300)
    (up / "big.bin").write_bytes(os.urandom(3 << 20))
    (up / "copy-of-RE-00001.pdf").write_bytes((up / "invoices" / "2026" / "RE-00001.pdf").read_bytes())
    (up / ODD).write_bytes(b"odd name")
    (up / "private.pdf").write_bytes(b"secret")
    (up / "private.pdf").chmod(0o600)
    os.symlink("invoices/2026/RE-00002.pdf", up / "latest.pdf")


def day2(up: Path) -> None:
    (up / "invoices" / "2026" / "RE-99999.pdf").write_bytes(b"a new invoice")  # add
    with open(up / "invoices" / "2026" / "RE-00003.pdf", "ab") as fh:  # edit
        fh.write(b" corrected")
    (up / "invoices" / "2026" / "RE-00004.pdf").rename(up / "renamed.pdf")  # rename
    (up / "invoices" / "2026" / "RE-00005.pdf").unlink()  # delete


def backup(settings: Any, day: str) -> Any:
    return run_backup(settings, "uploads_snapshot", day)


@pytest.fixture
def uploads(tmp_path: Path) -> Path:
    up = tmp_path / "uploads"
    up.mkdir()
    day1(up)
    return up


def settings_for(tmp_path: Path, age_identity: Any, up: Path, **extra: Any) -> Any:
    return make_settings(tmp_path, age_identity, sources={"uploads": {"path": str(up)}},
                         state_dir=str(tmp_path / "state"), **extra)


def test_every_day_restores_byte_identical_and_only_new_content_ships(tmp_path: Path, uploads: Path,
                                                                       age_identity) -> None:
    settings = settings_for(tmp_path, age_identity, uploads)
    seen = {}
    m1 = backup(settings, "2026-11-23")
    seen["2026-11-23"] = tree(uploads)
    assert m1.facts["files"] == 34 and m1.facts["new_blobs"] == 33  # the copy shares its content
    day2(uploads)
    m2 = backup(settings, "2026-11-24")
    seen["2026-11-24"] = tree(uploads)
    assert m2.facts["new_blobs"] == 2 and m2.facts["new_bytes"] < 5000  # the new and the edited invoice
    assert m2.facts["depends_on"] == [m1.artifact_key]
    m3 = backup(settings, "2026-11-25")
    seen["2026-11-25"] = tree(uploads)
    assert m3.facts["new_blobs"] == 0 and m3.facts["new_bytes"] == 0 and m3.facts["unchanged_files"] == 34
    assert m3.artifact_bytes < m1.artifact_bytes / 50
    assert "RE-0" not in m3.to_json().decode() and "private" not in m3.to_json().decode()  # no paths in manifests
    for day, expected in seen.items():
        target = tmp_path / f"restored-{day}"
        result = restore_backup(settings, "uploads_snapshot", day, str(target))
        assert tree(target) == expected, day
        assert result["files"] == sum(1 for v in expected.values() if v[0] == "file")


def test_restore_from_s3_when_local_copies_are_gone(tmp_path: Path, uploads: Path, age_identity, moto_server,
                                                   bucket) -> None:
    settings = settings_for(tmp_path, age_identity, uploads,
                            destinations=[{"type": "local", "path": str(tmp_path / "b")},
                                          s3_destination(moto_server, bucket)])
    backup(settings, "2026-11-23")
    day2(uploads)
    backup(settings, "2026-11-24")
    expected = tree(uploads)
    shutil.rmtree(tmp_path / "b")
    restore_backup(settings, "uploads_snapshot", "2026-11-24", str(tmp_path / "r"))
    assert tree(tmp_path / "r") == expected


def test_lost_state_means_a_full_backup_not_a_broken_one(tmp_path: Path, uploads: Path, age_identity) -> None:
    settings = settings_for(tmp_path, age_identity, uploads)
    backup(settings, "2026-11-23")
    shutil.rmtree(tmp_path / "state")
    m = backup(settings, "2026-11-24")
    assert m.facts["new_blobs"] == 33 and m.facts["depends_on"] == []
    restore_backup(settings, "uploads_snapshot", "2026-11-24", str(tmp_path / "r"))
    assert tree(tmp_path / "r") == tree(uploads)


def test_verify_checks_the_artifacts_a_snapshot_builds_on(tmp_path: Path, uploads: Path, age_identity) -> None:
    settings = settings_for(tmp_path, age_identity, uploads)
    m1 = backup(settings, "2026-11-23")
    backup(settings, "2026-11-24")
    result = verify_backup(settings, "uploads_snapshot", "2026-11-24")
    assert result["ok"] and result["depends_on"] == 1 and "depends_on_read" not in result
    assert verify_backup(settings, "uploads_snapshot", "2026-11-24", read_data=0)["depends_on_read"] == 1
    older = tmp_path / "backups" / m1.artifact_key
    data = bytearray(older.read_bytes())
    data[len(data) // 2] ^= 0x01
    older.write_bytes(bytes(data))
    assert verify_backup(settings, "uploads_snapshot", "2026-11-24")["ok"]  # existence alone: still fine
    with pytest.raises(VerifyError, match="checksum mismatch"):
        verify_backup(settings, "uploads_snapshot", "2026-11-24", read_data=1)  # reading it back is not
    (tmp_path / "backups" / m1.artifact_key).unlink()
    (tmp_path / "backups" / m1.key).unlink()
    [entry] = catalog_entries(settings)
    assert entry.manifest.partition == "2026-11-24"
    with pytest.raises(VerifyError, match="depends on 1 artifact\\(s\\) that no destination holds"):
        verify_backup(settings, "uploads_snapshot", "2026-11-24")


def test_restore_refuses_a_live_tree_and_force_keeps_it(tmp_path: Path, uploads: Path, age_identity) -> None:
    settings = settings_for(tmp_path, age_identity, uploads)
    backup(settings, "2026-11-23")
    plan = restore_plan(settings, "uploads_snapshot", "2026-11-23", str(uploads), False)
    assert any(step.startswith("REFUSE") for step in plan)
    with pytest.raises(RestoreError, match="is not empty; use --force"):
        restore_backup(settings, "uploads_snapshot", "2026-11-23", str(uploads))
    expected = tree(uploads)
    (uploads / "written-after-the-backup.txt").write_text("keep me")
    result = restore_backup(settings, "uploads_snapshot", "2026-11-23", str(uploads), force=True)
    assert tree(uploads) == expected
    assert (Path(result["kept_aside"]) / "written-after-the-backup.txt").read_text() == "keep me"


def test_vanished_uploads_directory_is_one_line(tmp_path: Path, age_identity) -> None:
    settings = settings_for(tmp_path, age_identity, tmp_path / "gone")
    with pytest.raises(SourceError, match=r"uploads: directory .*gone does not exist"):
        backup(settings, "2026-11-25")
