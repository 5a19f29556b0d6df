"""Restore with standard tools alone (age, zstd, pg_restore, sqlite3), exactly as docs/runbook.md shows; each line
writes into a directory it has just made, so a link planted where the result goes is never written through."""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
from pathlib import Path

import psycopg

from erp_backup_pipeline.core.pipeline import run_backup
from erp_backup_pipeline_tests.conftest import ERP_PASSWORD, make_settings, pg_source
from erp_backup_pipeline_tests.docs import docs_text


def run_line(line: str, env: dict[str, str] | None = None, **values: str) -> subprocess.CompletedProcess[str]:
    """Run a runbook line as written, its placeholders (KEY, ARTIFACT, ...) filled in, under pipefail."""
    for name, value in values.items():
        line = line.replace(name, value)
    return subprocess.run(["bash", "-o", "pipefail", "-c", line], check=True, capture_output=True, text=True, env=env)


def test_standard_tools_are_installed() -> None:
    for tool in ("age", "zstd", "pg_restore", "sqlite3", "redis-check-rdb"):
        assert shutil.which(tool), f"{tool} is missing: `make test` installs it"


def test_postgres_pipeline_from_the_runbook(tmp_path: Path, pg_server, erp_db, age_identity) -> None:
    """Beside the original, as its owner: createdb with the recorded owner, pg_restore keeping owners."""
    from erp_backup_pipeline.core.runbook import BESIDE_LINES

    settings = make_settings(tmp_path, age_identity, sources=pg_source(pg_server, erp_db))
    m = run_backup(settings, "postgres_dump", "2026-11-25")
    artifact = tmp_path / "backups" / m.artifact_key
    target = erp_db + "_manual"
    env = {"PGPASSWORD": ERP_PASSWORD, "PATH": "/usr/bin:/bin", "PGHOST": "127.0.0.1", "PGPORT": str(pg_server.port),
           "PGUSER": "erp_user", "PGDATABASE": "postgres"}
    for line in BESIDE_LINES:
        assert line in docs_text("runbook.md")
        run_line(line, env=env, KEY=str(age_identity[0]), ARTIFACT=str(artifact), TARGET=target,
                 OWNER=m.facts["database"]["owner"])
    with psycopg.connect(pg_server.dsn(target, "erp_user", ERP_PASSWORD)) as conn:
        assert conn.execute("SELECT count(*) FROM invoice_lines").fetchone()[0] == 6000
        assert conn.execute("SELECT DISTINCT tableowner FROM pg_tables WHERE schemaname = 'public'").fetchall() == [
            ("erp_user",)]


def test_sqlite_pipeline_from_the_runbook(tmp_path: Path, demo_sqlite: Path, age_identity) -> None:
    settings = make_settings(tmp_path, age_identity, sources={"sqlite": {"path": str(demo_sqlite)}})
    m = run_backup(settings, "sqlite_backup", "2026-11-25")
    line = ("mkdir -m 700 DIR && age -d -i KEY ARTIFACT | zstd -d -o DIR/restored.sqlite3 && "
            "sqlite3 DIR/restored.sqlite3 'PRAGMA integrity_check'")
    assert line in docs_text("runbook.md")
    restored = tmp_path / "manual" / "restored.sqlite3"
    out = run_line(line, KEY=str(age_identity[0]), ARTIFACT=str(tmp_path / "backups" / m.artifact_key),
                   DIR=str(restored.parent))
    assert out.stdout.strip() == "ok"
    with sqlite3.connect(restored) as conn:
        assert conn.execute("SELECT count(*) FROM invoices").fetchone()[0] == 200


def test_redis_pipeline_from_the_runbook(tmp_path: Path, redis_server, age_identity) -> None:
    from erp_backup_pipeline_tests.conftest import redis_source

    redis_server.client().set("session:manual", "restored by hand")
    settings = make_settings(tmp_path, age_identity, sources=redis_source(redis_server))
    m = run_backup(settings, "redis_snapshot", "2026-11-25")
    line = "mkdir -m 700 DIR && age -d -i KEY ARTIFACT | zstd -d -o DIR/dump.rdb && redis-check-rdb DIR/dump.rdb"
    assert line in docs_text("runbook.md")
    out = tmp_path / "manual-redis"
    done = run_line(line, KEY=str(age_identity[0]), ARTIFACT=str(tmp_path / "backups" / m.artifact_key), DIR=str(out))
    assert "RDB looks OK" in done.stdout
    assert b"restored by hand" in (out / "dump.rdb").read_bytes()


def test_config_pipeline_from_the_runbook(tmp_path: Path, age_identity) -> None:
    erp = tmp_path / "erp"
    (erp / "config").mkdir(parents=True)
    (erp / "config" / "app.json").write_text('{"locale": "de-DE"}')
    (erp / ".env").write_text("A=1\n")
    settings = make_settings(tmp_path, age_identity, sources={"config": {"paths": [str(erp / ".env"), str(erp / "config")]}})
    m = run_backup(settings, "config_archive", "2026-11-25")
    line = "mkdir -m 700 DIR && age -d -i KEY ARTIFACT | zstd -d | tar -xpf - -C DIR"
    assert line in docs_text("runbook.md")
    out = tmp_path / "manual-config"
    run_line(line, KEY=str(age_identity[0]), ARTIFACT=str(tmp_path / "backups" / m.artifact_key), DIR=str(out))
    assert (out / ".env").read_text() == "A=1\n" and (out / "config" / "app.json").exists()


def test_uploads_pipeline_from_the_runbook(tmp_path: Path, age_identity) -> None:
    """The runbook's line unpacks a day and the artifacts it depends on: every file's content is there."""
    import json

    up = tmp_path / "uploads"
    up.mkdir()
    (up / "a.pdf").write_bytes(b"first day")
    settings = make_settings(tmp_path, age_identity, sources={"uploads": {"path": str(up)}}, state_dir=str(tmp_path / "st"))
    first = run_backup(settings, "uploads_snapshot", "2026-11-24")
    (up / "b.pdf").write_bytes(b"second day")
    m = run_backup(settings, "uploads_snapshot", "2026-11-25")
    assert m.facts["depends_on"] == [first.artifact_key]
    line = "age -d -i KEY ARTIFACT | zstd -d | tar -xf - -C BLOBS"
    assert "mkdir -m 700 BLOBS\n" + line in docs_text("runbook.md")
    blobs = tmp_path / "blobs"
    run_line("mkdir -m 700 BLOBS", BLOBS=str(blobs))
    for key in [first.artifact_key, m.artifact_key]:  # older first: the day's snapshot file lands last
        run_line(line, KEY=str(age_identity[0]), ARTIFACT=str(tmp_path / "backups" / key), BLOBS=str(blobs))
    snapshot = json.loads((blobs / ".erp-backup-snapshot.json").read_text())
    contents = {e["name"]: (blobs / "blobs" / e["sha256"]).read_bytes() for e in snapshot if e["type"] == "file"}
    assert contents == {"a.pdf": b"first day", "b.pdf": b"second day"}


def test_the_runbook_lines_never_write_through_a_planted_link(tmp_path: Path, demo_sqlite: Path, age_identity) -> None:
    """Another user planted DIR as a link to the live database's directory: the runbook's SQLite line stops at
    mkdir, the live database is untouched."""
    settings = make_settings(tmp_path, age_identity, sources={"sqlite": {"path": str(demo_sqlite)}})
    m = run_backup(settings, "sqlite_backup", "2026-11-25")
    live = demo_sqlite.read_bytes()
    planted = tmp_path / "shared" / "restore"
    planted.parent.mkdir()
    planted.symlink_to(demo_sqlite.parent)
    line = ("mkdir -m 700 DIR && age -d -i KEY ARTIFACT | zstd -d -o DIR/restored.sqlite3 && "
            "sqlite3 DIR/restored.sqlite3 'PRAGMA integrity_check'")
    try:
        run_line(line, KEY=str(age_identity[0]), ARTIFACT=str(tmp_path / "backups" / m.artifact_key), DIR=str(planted))
    except subprocess.CalledProcessError as exc:
        assert "File exists" in exc.stderr
    else:
        raise AssertionError("the line wrote through the planted link")
    assert demo_sqlite.read_bytes() == live and not (demo_sqlite.parent / "restored.sqlite3").exists()


def test_the_runbook_checks_signature_and_checksum_before_decrypting(tmp_path: Path, demo_sqlite: Path,
                                                                      age_identity) -> None:
    """docs/runbook.md's and the generated runbook's check lines, verbatim: a genuine manifest and artifact pass; an edited
    manifest, a manifest signed by another key, and a swapped artifact each fail before anything is decrypted."""
    from erp_backup_pipeline.core.runbook import CHECK_LINES, render
    from erp_backup_pipeline.core.signing import generate, load_signer

    settings = make_settings(tmp_path, age_identity, sources={"sqlite": {"path": str(demo_sqlite)}})
    m = run_backup(settings, "sqlite_backup", "2026-11-25")
    other = run_backup(settings, "sqlite_backup", "2026-11-26")
    runbook = render(settings)
    allowed = [ln for ln in runbook.splitlines() if ln.startswith('erp-backup namespaces="erp-backup-manifest" ')]
    assert len(allowed) == 1
    signers = tmp_path / "allowed_signers"
    signers.write_text("\n".join(allowed) + "\n")
    for line in CHECK_LINES:
        assert line in docs_text("runbook.md") and line in runbook
    manifest, artifact = tmp_path / "backups" / m.key, tmp_path / "backups" / m.artifact_key

    def check(manifest_path: Path, artifact_path: Path) -> list[int]:
        codes = []
        for line in CHECK_LINES:
            for name, value in (("ALLOWED_SIGNERS", str(signers)), ("MANIFEST", str(manifest_path)),
                                ("ARTIFACT", str(artifact_path))):
                line = line.replace(name, value)
            codes.append(subprocess.run(["bash", "-o", "pipefail", "-c", line], capture_output=True).returncode)
        return codes

    assert check(manifest, artifact) == [0, 0]
    # the artifact of another day under this manifest: the checksum line fails
    assert check(manifest, tmp_path / "backups" / other.artifact_key)[1] != 0
    # a manifest edited to name the other artifact's checksum: the signature line fails
    edited = tmp_path / "edited.manifest.json"
    edited.write_text(manifest.read_text().replace(m.artifact_sha256, other.artifact_sha256))
    (tmp_path / "edited.manifest.json.sig").write_bytes((tmp_path / "backups" / (m.key + ".sig")).read_bytes())
    assert check(edited, tmp_path / "backups" / other.artifact_key)[0] != 0
    # signed, but by a key the configuration does not trust
    stranger = tmp_path / "stranger.key"
    generate(stranger)
    (tmp_path / "edited.manifest.json.sig").write_bytes(load_signer(stranger).sign(edited.read_bytes()))
    assert check(edited, tmp_path / "backups" / other.artifact_key)[0] != 0
