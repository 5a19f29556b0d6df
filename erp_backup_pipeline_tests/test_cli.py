"""The erp-backup command: every verb end to end, as an operator types it."""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from erp_backup_pipeline.cli import build_parser
from erp_backup_pipeline.errors import NOT_FOUND, VERIFICATION
from erp_backup_pipeline_tests.conftest import signing_key, signing_section
from erp_backup_pipeline_tests.docs import docs_text


def cli(*args: str, config: Path | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "erp_backup_pipeline.cli"] + (["--config", str(config)] if config else []) + list(args)
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    if check:
        assert done.returncode == 0, done.stderr
    return done


def write_config(tmp_path: Path, age_identity: Any, sources: dict[str, Any]) -> Path:
    """erp-backup.yaml of one local destination (tmp_path/backups) and these sources."""
    path = tmp_path / "erp-backup.yaml"
    path.write_text(yaml.safe_dump({
        "staging_dir": str(tmp_path / "staging"),
        "encryption": {"recipients": [age_identity[1]], "identity_file": str(age_identity[0])},
        "signing": signing_section(),
        "destinations": [{"type": "local", "path": str(tmp_path / "backups")}],
        "sources": sources,
    }))
    return path


@pytest.fixture
def config(tmp_path: Path, demo_sqlite: Path, age_identity) -> Path:
    return write_config(tmp_path, age_identity, {"sqlite": {"path": str(demo_sqlite)}})


def test_keygen_writes_a_private_identity_and_refuses_to_overwrite(tmp_path: Path) -> None:
    key = tmp_path / "keys" / "backup.key"
    out = cli("keygen", "--output", str(key)).stdout
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    public = re.search(r"age1[0-9a-z]+", out)
    assert public and public.group(0) in key.read_text()
    again = cli("keygen", "--output", str(key), check=False)
    assert again.returncode == 1 and again.stderr.strip().endswith("refusing to overwrite a key")


def test_backup_list_verify_restore(tmp_path: Path, config: Path) -> None:
    cli("backup", "sqlite", "--partition", "2026-11-25", config=config)
    listing = json.loads(cli("list", "--json", config=config).stdout)
    assert listing["rejected"] == listing["findings"] == listing["errors"] == []
    rows = listing["captures"]
    assert len(rows) == 1 and rows[0]["sequence"] == 1
    row = rows[0]
    assert row["source"] == "sqlite_backup" and row["partition"] == "2026-11-25" and row["verified"]
    assert set(row) >= {"captured_at", "raw_bytes", "artifact_bytes", "sha256", "destinations"}
    table = cli("list", config=config).stdout
    assert "sqlite_backup" in table and row["sha256"][:12] in table
    assert cli("verify", "sqlite_backup", "--partition", "2026-11-25", config=config).stdout.startswith("OK ")
    target = tmp_path / "restored.sqlite3"
    dry = cli("restore", "sqlite", "--partition", "2026-11-25", "--to", str(target), "--dry-run", config=config)
    assert "dry run: nothing changed" in dry.stdout and not target.exists()
    cli("restore", "sqlite", "--partition", "2026-11-25", "--to", str(target), config=config)
    assert target.exists()
    refused = cli("restore", "sqlite", "--partition", "2026-11-25", "--to", str(target), config=config, check=False)
    assert refused.returncode == 1
    assert refused.stderr.strip().splitlines()[-1].startswith("erp-backup: error: restore target")
    assert "Traceback" not in refused.stderr


def test_a_restore_target_of_the_wrong_kind_is_refused_even_with_force(tmp_path: Path, config: Path) -> None:
    """SQLite restores into a file: a directory (or a path ending in /) is refused, and --force never moves a
    directory aside to put a database file in its place."""
    cli("backup", "sqlite", "--partition", "2026-11-25", config=config)
    folder = tmp_path / "restore-here"
    (folder / "keep").mkdir(parents=True)
    for target, force in ((str(folder), ["--force"]), (str(tmp_path / "new") + "/", []), (str(folder), ["--dry-run"])):
        done = cli("restore", "sqlite", "latest", "--to", target, *force, config=config, check=False)
        assert done.returncode == 1 and "Traceback" not in done.stderr
        assert done.stderr.strip().splitlines()[-1].startswith(f"erp-backup: error: restore target {target.rstrip('/')}")
        assert "this restore writes one file; give its path, e.g." in done.stderr
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("restore-here")) == ["restore-here"]
    assert (folder / "keep").is_dir() and not (tmp_path / "new").exists()


def test_backup_dry_run_says_what_it_would_read_and_where_and_touches_nothing(tmp_path: Path, config: Path,
                                                                               demo_sqlite: Path) -> None:
    before = sorted(p for p in tmp_path.rglob("*") if p.name != "erp-backup.yaml")
    out = cli("backup", "sqlite", "--dry-run", config=config).stdout.splitlines()
    assert re.fullmatch(rf"sqlite_backup \d{{4}}-\d\d-\d\d: would read SQLite database {re.escape(str(demo_sqlite))}; "
                        rf"zstd compress, age encrypt, ship to local \(file://{re.escape(str(tmp_path))}/backups/\S+, required\)",
                        out[0]), out
    assert out[-1] == "dry run: nothing read or written"
    plan = json.loads(cli("backup", "sqlite", "--partition", "2026-11-25", "--dry-run", "--json", config=config).stdout)
    [only] = plan["backups"]
    assert plan["dry_run"] and only["late"] and "is over" in only["note"]
    assert sorted(p for p in tmp_path.rglob("*") if p.name != "erp-backup.yaml") == before  # nothing written


def test_drill_restores_the_newest_backup_into_a_scratch_target(tmp_path: Path, config: Path, demo_sqlite: Path) -> None:
    import sqlite3

    empty = cli("drill", "sqlite", config=config, check=False)
    assert empty.returncode == NOT_FOUND.code
    assert empty.stderr.strip() == "erp-backup: error: no backup of sqlite_backup in the catalog"
    cli("backup", "sqlite", "--partition", "2026-11-24", config=config)
    cli("backup", "sqlite", "--partition", "2026-11-25", config=config)
    with sqlite3.connect(demo_sqlite) as db:
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table' "
                                           "AND name NOT LIKE 'sqlite_%'")]
        rows = sum(db.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0] for t in tables)
    out = cli("drill", "sqlite", config=config).stdout  # no --partition: the newest one
    assert re.fullmatch(rf"OK sqlite_backup 2026-11-25 captured \S+: restored in [0-9.]+ s \(drill [0-9.]+ s\); "
                        rf"compared rows per table: tables={len(tables)} rows={rows}\n", out), out
    assert float(re.search(r"restored in ([0-9.]+) s", out).group(1)) > 0  # type: ignore[union-attr]
    assert re.match(r"OK sqlite_backup 2026-11-24 ",
                    cli("drill", "sqlite_backup", "--partition", "2026-11-24", config=config).stdout)
    staging = tmp_path / "staging"
    assert not [p for p in staging.iterdir() if p.name.startswith(("drill-", "restore-"))]


def test_drill_of_a_damaged_artifact_fails_in_one_line(tmp_path: Path, config: Path) -> None:
    cli("backup", "sqlite", "--partition", "2026-11-25", config=config)
    [artifact] = (tmp_path / "backups").rglob("*.sqlite3.zst.age")
    artifact.write_bytes(artifact.read_bytes()[:-10] + b"0123456789")
    failed = cli("drill", "sqlite", config=config, check=False)
    assert failed.returncode == VERIFICATION.code and failed.stdout == "" and "Traceback" not in failed.stderr
    line = failed.stderr.strip().splitlines()[-1]  # after any progress lines
    assert failed.stderr.count("erp-backup: error") == 1
    assert line.startswith("erp-backup: error: drill sqlite_backup 2026-11-25: no intact copy of the artifact: ")
    assert "checksum mismatch" in line


def test_errors_are_one_line_without_traceback(tmp_path: Path, config: Path) -> None:
    missing = cli("verify", "sqlite", "--partition", "2020-01-01", config=config, check=False)
    assert missing.returncode == NOT_FOUND.code
    assert missing.stderr.strip() == "erp-backup: error: no backup of sqlite_backup for partition 2020-01-01"
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"encryption: {{recipients: [age1x]}}\nsigning: {{key_file: {signing_key()}}}\n"
                   "destinations: [{type: local, path: b, requird: true}]\n")
    out = cli("list", config=bad, check=False)
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert out.stderr.strip() == (f"erp-backup: error: config {bad}: destinations.0.requird: unknown key "
                                  "(did you mean 'required'?)")


def test_every_option_and_argument_has_help_text() -> None:
    import argparse

    def missing(parser: argparse.ArgumentParser, path: str) -> list[str]:
        found = []
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sp in action.choices.items():
                    found += missing(sp, f"{path} {name}")
            elif not action.help and not isinstance(action, argparse._HelpAction):
                found.append(f"{path} {'/'.join(action.option_strings) or action.dest}")
        return found

    assert missing(build_parser(), "erp-backup") == []


def test_the_cli_reference_documents_every_command_and_option() -> None:
    text = docs_text("reference", "cli.md")
    parser = build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    for name, sp in sub.choices.items():  # type: ignore[union-attr]
        assert f"erp-backup {name}" in text, f"docs/reference/cli.md lacks `erp-backup {name}`"
        for action in sp._actions:
            for opt in action.option_strings:
                if opt.startswith("--") and opt != "--help":
                    assert opt in text, f"docs/reference/cli.md lacks option {opt} of `erp-backup {name}`"


def test_init_creates_private_demo(tmp_path: Path) -> None:
    var = tmp_path / "var"
    cli("init", "--var", str(var))
    assert stat.S_IMODE(var.stat().st_mode) == 0o700
    assert stat.S_IMODE((var / "keys" / "backup.key").stat().st_mode) == 0o600
    assert (var / "demo-erp" / "data" / "production.sqlite3").exists()
    cli("backup", "all", "--partition", "2026-11-25", config=var / "erp-backup.yaml")
    artifacts = sorted(p.name.split(".", 1)[1] for p in (var / "backups").rglob("*.age"))
    assert artifacts == ["sqlite3.zst.age", "tar.zst.age", "tar.zst.age"]  # database, config, uploads
    for p in (var / "backups").rglob("*.age"):
        assert stat.S_IMODE(p.stat().st_mode) == 0o600


def test_the_demo_configs_alert_links_follow_make_runs_port(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from erp_backup_pipeline.settings import load_settings

    var = tmp_path / "var"
    cli("init", "--var", str(var))
    monkeypatch.delenv("PORT", raising=False)
    assert load_settings(var / "erp-backup.yaml").alerts.ui_url == "http://127.0.0.1:3000"
    monkeypatch.setenv("PORT", "3111")
    assert load_settings(var / "erp-backup.yaml").alerts.ui_url == "http://127.0.0.1:3111"


def test_init_postgres_config_from_pg_variables(tmp_path: Path, pg_server, erp_db) -> None:
    """`make run` with PG* exported: the generated config backs up PostgreSQL too."""
    from erp_backup_pipeline_tests.conftest import ERP_PASSWORD

    var = tmp_path / "var"
    cli("init", "--var", str(var), "--postgres")
    env = {**os.environ, "PGHOST": "127.0.0.1", "PGPORT": str(pg_server.port), "PGUSER": "erp_user",
           "PGPASSWORD": ERP_PASSWORD, "PGDATABASE": erp_db}
    done = subprocess.run([sys.executable, "-m", "erp_backup_pipeline.cli", "--config", str(var / "erp-backup.yaml"),
                           "backup", "all", "--partition", "2026-11-25"], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    assert "postgres_dump 2026-11-25" in done.stdout and "sqlite_backup 2026-11-25" in done.stdout
