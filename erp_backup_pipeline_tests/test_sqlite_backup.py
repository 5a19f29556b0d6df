"""SQLite: consistent online snapshot, real verification, round trip of every row."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from erp_backup_pipeline.core.pipeline import run_backup
from erp_backup_pipeline.core.restore import restore_backup, verify_backup
from erp_backup_pipeline.core.sources.sqlite import SqliteSource
from erp_backup_pipeline.errors import RestoreError, SourceError, VerifyError
from erp_backup_pipeline_tests.conftest import make_settings


def _dump_rows(path: Path) -> dict[str, list[tuple]]:
    conn = sqlite3.connect(path)
    try:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table' ORDER BY name")]
        return {t: conn.execute(f'SELECT * FROM "{t}" ORDER BY rowid').fetchall() for t in tables}
    finally:
        conn.close()


def test_round_trip_restores_every_row(tmp_path: Path, demo_sqlite: Path, age_identity) -> None:
    settings = make_settings(tmp_path, age_identity, sources={"sqlite": {"path": str(demo_sqlite)}})
    manifest = run_backup(settings, "sqlite_backup", "2026-11-25")
    assert manifest.verify["ok"] and manifest.verify["integrity"] == "ok"
    assert manifest.facts["row_counts"]["invoices"] == 200
    assert [e["stage"] for e in manifest.chain] == ["dump", "compress", "encrypt"]
    target = tmp_path / "restored.sqlite3"
    result = restore_backup(settings, "sqlite_backup", "2026-11-25", str(target))
    assert result["integrity"] == "ok"
    assert _dump_rows(target) == _dump_rows(demo_sqlite)
    assert list((tmp_path / "staging").rglob("*.*")) == []  # staging is released


def test_backup_while_the_erp_writes_is_consistent(tmp_path: Path, demo_sqlite: Path, age_identity) -> None:
    """A writer moves money between two accounts in transactions; every snapshot must balance."""
    conn = sqlite3.connect(demo_sqlite)
    conn.execute("CREATE TABLE ledger (account TEXT PRIMARY KEY, cents INTEGER)")
    conn.execute("INSERT INTO ledger VALUES ('a', 1000000), ('b', 0)")
    conn.commit()
    conn.close()
    stop = threading.Event()

    def writer() -> None:
        w = sqlite3.connect(demo_sqlite, timeout=30)
        n = 0
        while not stop.is_set():
            with w:
                w.execute("UPDATE ledger SET cents = cents - 1 WHERE account = 'a'")
                w.execute("INSERT INTO audit_log(at, actor, action, details) VALUES ('now', 't', 'move', ?)", (str(n),))
                w.execute("UPDATE ledger SET cents = cents + 1 WHERE account = 'b'")
            n += 1
        w.close()

    t = threading.Thread(target=writer)
    t.start()
    try:
        settings = make_settings(tmp_path, age_identity, sources={"sqlite": {"path": str(demo_sqlite)}})
        for day in ("2026-11-20", "2026-11-21", "2026-11-22"):
            run_backup(settings, "sqlite_backup", day)
    finally:
        stop.set()
        t.join()
    for day in ("2026-11-20", "2026-11-21", "2026-11-22"):
        target = tmp_path / f"r-{day}.sqlite3"
        restore_backup(settings, "sqlite_backup", day, str(target))
        rows = dict(_dump_rows(target)["ledger"])
        assert rows["a"] + rows["b"] == 1000000
        moved = rows["b"]
        audit = _dump_rows(target)["audit_log"]
        assert len([r for r in audit if r[3] == "move"]) == moved


def test_random_bytes_fail_verification(tmp_path: Path) -> None:
    """Defect 1 of the original strategy: its check printed 'ok' for random bytes."""
    import io
    import os

    with pytest.raises(VerifyError, match="not a sound database"):
        SqliteSource(tmp_path / "x").verify(io.BytesIO(os.urandom(65536)), tmp_path, {"row_counts": {}})


def test_flipped_byte_in_stored_artifact_fails_verify(tmp_path: Path, demo_sqlite: Path, age_identity) -> None:
    settings = make_settings(tmp_path, age_identity, sources={"sqlite": {"path": str(demo_sqlite)}})
    m = run_backup(settings, "sqlite_backup", "2026-11-25")
    assert verify_backup(settings, "sqlite_backup", "2026-11-25")["ok"]
    artifact = tmp_path / "backups" / m.artifact_key
    data = bytearray(artifact.read_bytes())
    data[len(data) // 2] ^= 0x01
    artifact.write_bytes(bytes(data))
    with pytest.raises(VerifyError, match="checksum mismatch"):
        verify_backup(settings, "sqlite_backup", "2026-11-25")


def test_missing_database_file_is_one_line_and_leaves_nothing(tmp_path: Path, age_identity) -> None:
    settings = make_settings(tmp_path, age_identity, sources={"sqlite": {"path": str(tmp_path / "gone.sqlite3")}})
    with pytest.raises(SourceError, match=r"sqlite: database file .*gone.sqlite3 not found"):
        run_backup(settings, "sqlite_backup", "2026-11-25")
    assert not (tmp_path / "gone.sqlite3").exists()
    assert [p for p in (tmp_path / "staging").rglob("*") if p.is_file()] == []


def test_restore_refuses_live_target_and_force_keeps_it_aside(tmp_path: Path, demo_sqlite: Path, age_identity) -> None:
    settings = make_settings(tmp_path, age_identity, sources={"sqlite": {"path": str(demo_sqlite)}})
    run_backup(settings, "sqlite_backup", "2026-11-25")
    live = tmp_path / "live.sqlite3"
    live.write_bytes(b"the live database")
    with pytest.raises(RestoreError, match="exists; use --force"):
        restore_backup(settings, "sqlite_backup", "2026-11-25", str(live))
    assert live.read_bytes() == b"the live database"
    result = restore_backup(settings, "sqlite_backup", "2026-11-25", str(live), force=True)
    assert Path(result["kept_aside"]).read_bytes() == b"the live database"
    assert _dump_rows(live) == _dump_rows(demo_sqlite)


def test_gpg_recipients_round_trip(tmp_path: Path, demo_sqlite: Path, age_identity, gpg_home: Path) -> None:
    """Teams with existing GPG keys: the same pipeline, encrypted to a GPG recipient."""
    from erp_backup_pipeline_tests.conftest import GPG_RECIPIENT

    settings = make_settings(tmp_path, age_identity, sources={"sqlite": {"path": str(demo_sqlite)}},
                             encryption={"codec": "gpg", "gpg": {"recipients": [GPG_RECIPIENT], "homedir": str(gpg_home)}})
    m = run_backup(settings, "sqlite_backup", "2026-11-25")
    assert m.artifact_key.endswith(".sqlite3.zst.gpg") and m.stage("encrypt")["recipients"] == [f"gpg:{GPG_RECIPIENT}"]
    target = tmp_path / "from-gpg.sqlite3"
    restore_backup(settings, "sqlite_backup", "2026-11-25", str(target))
    assert _dump_rows(target) == _dump_rows(demo_sqlite)
