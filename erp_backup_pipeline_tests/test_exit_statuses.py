"""erp-backup as a script sees it: every exit status of the table, caused for real, each with its one error line and,
with --json, its error object on stdout; capture IDs, `latest` and --capture; --version; the table in --help and
in docs/reference/exit-codes.md."""

from __future__ import annotations

import fcntl
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from erp_backup_pipeline.errors import (
    CREDENTIALS,
    DESTINATION,
    EXIT_STATUSES,
    INTERRUPTED,
    LOCKED,
    NOT_FOUND,
    USAGE,
    VERIFICATION,
    ExitStatus,
)
from erp_backup_pipeline_tests.conftest import redis_source
from erp_backup_pipeline_tests.docs import docs_text
from erp_backup_pipeline_tests.test_cli import cli, write_config
from erp_backup_pipeline_tests.test_cli import config as config  # noqa: PLC0414  (the fixture)

DAY, OTHER = "2026-11-25", "2026-11-26"


def failed(done: subprocess.CompletedProcess[str], status: ExitStatus, what: str = "") -> str:
    """The one error line of a command that exited with ``status`` (no traceback), without its prefix."""
    assert done.returncode == status.code, (status, done.returncode, done.stderr[-800:])
    assert "Traceback" not in done.stderr
    lines = [ln for ln in done.stderr.splitlines() if ln.startswith("erp-backup: error: ")]
    assert len(lines) == 1, done.stderr
    assert what in lines[0], (what, lines[0])
    return lines[0].removeprefix("erp-backup: error: ")


def error_object(done: subprocess.CompletedProcess[str], status: ExitStatus) -> dict[str, Any]:
    found = json.loads(done.stdout)["error"]
    assert found["status"] == status.code and found["name"] == status.name, found
    return dict(found)


def captures(config: Path) -> list[dict[str, Any]]:
    return list(json.loads(cli("list", "--json", config=config).stdout)["captures"])


def edited(config: Path, name: str, **changes: Any) -> Path:
    data = yaml.safe_load(config.read_text())
    data.update(changes)
    path = config.with_name(name)
    path.write_text(yaml.safe_dump(data))
    return path


# ------------------------------------------------------------------- addressing captures


def test_captures_are_named_by_id_latest_or_date_and_capture(tmp_path: Path, config: Path, demo_sqlite: Path) -> None:
    import sqlite3

    cli("backup", "sqlite", "--partition", DAY, config=config)
    with sqlite3.connect(demo_sqlite) as db:
        db.execute("CREATE TABLE marker (x INTEGER)")
    cli("backup", "sqlite", "--partition", DAY, config=config)  # a second capture of the same date
    cli("backup", "sqlite", "--partition", OTHER, config=config)
    rows = captures(config)
    ids = [r["id"] for r in rows]
    assert all(re.fullmatch(r"[0-9a-f]{8}", i) for i in ids) and len(set(ids)) == 3, rows
    first, second, newest = rows  # oldest first
    assert [r["partition"] for r in rows] == [DAY, DAY, OTHER]
    table = cli("list", config=config).stdout.splitlines()
    assert table[0].split()[6] == "id"  # after the artifact's sha256
    shown = {m.group(1) for line in table[1:4] if (m := re.search(r" [0-9a-f]{12} +([0-9a-f]{8}) ", line))}
    assert shown == set(ids), table
    # the same IDs on the next listing: stable
    assert [r["id"] for r in captures(config)] == ids

    def tables(path: Path) -> set[str]:
        with sqlite3.connect(path) as db:
            return {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}

    # latest: the newest date; --partition: that date's newest; --capture: another capture of the date
    out = tmp_path / "latest.sqlite3"
    done = json.loads(cli("restore", "sqlite", "latest", "--to", str(out), "--json", config=config).stdout)
    assert (done["id"], done["partition"], done["dry_run"]) == (newest["id"], OTHER, False)
    assert done["plan"][0].endswith(f"(capture {newest['id']})")
    out = tmp_path / "by-date.sqlite3"
    cli("restore", "sqlite", "--partition", DAY, "--to", str(out), config=config)
    assert "marker" in tables(out)
    out = tmp_path / "older.sqlite3"
    done = cli("restore", "sqlite", "--partition", DAY, "--capture", first["id"], "--to", str(out), config=config).stdout
    assert f"restored sqlite_backup {DAY}" in done and f"(capture {first['id']})" in done and "marker" not in tables(out)
    # an ID alone, a longer prefix of it, or with its source
    out = tmp_path / "by-id.sqlite3"
    cli("restore", first["id"], "--to", str(out), config=config)
    assert "marker" not in tables(out)
    assert json.loads(cli("verify", second["id"][:6], "--json", config=config).stdout)["id"] == second["id"]
    assert json.loads(cli("verify", "sqlite", "latest", "--json", config=config).stdout)["id"] == newest["id"]
    drilled = json.loads(cli("drill", "sqlite", first["id"], "--json", config=config).stdout)
    assert (drilled["id"], drilled["partition"], drilled["ok"]) == (first["id"], DAY, True)
    # backup --json names the capture it made, as list will
    made = json.loads(cli("backup", "sqlite", "--partition", OTHER, "--json", config=config).stdout)["backups"]
    assert [b["id"] for b in made] == [r["id"] for r in captures(config) if r["captured_at"] == made[0]["captured_at"]]
    # what it refuses, each in one line with its status
    nothing = tmp_path / "nothing.sqlite3"
    assert "no capture 0badc0de" in failed(cli("restore", "0badc0de", "--to", str(nothing), config=config,
                                               check=False), NOT_FOUND)
    assert "no capture" in failed(cli("restore", "sqlite", "--partition", OTHER, "--capture", first["id"], "--to",
                                      str(nothing), config=config, check=False), NOT_FOUND)
    for argv, says in [(["restore", "sqlite", "--to", str(nothing)], "name the capture: sqlite latest"),
                       (["restore", "sqlite", "latest", "--partition", DAY, "--to", str(nothing)], "not both"),
                       (["restore", "sqlite", "--capture", first["id"], "--to", str(nothing)], "--capture picks"),
                       (["restore", "mysql", "--to", str(nothing)], "unknown source 'mysql' (known: sqlite,"),
                       (["restore", "sqlite", "newest", "--to", str(nothing)], "is not a capture"),
                       (["restore", "sqlite", "--partition", "25.11.2026", "--to", str(nothing)], "write it YYYY-MM-DD"),
                       (["verify", "sqlite", "--partition", "2026-11-31"], "is not a date")]:
        failed(cli(*argv, config=config, check=False), USAGE, says)
    assert not nothing.exists()


# ------------------------------------------------------------------- one status per kind of failure


def test_each_kind_of_failure_has_its_own_exit_status(tmp_path: Path, config: Path, age_identity: Any) -> None:
    cli("backup", "sqlite", "--partition", DAY, config=config)
    [row] = captures(config)

    # not found, with and without --json
    done = cli("verify", "sqlite", "--partition", "2020-01-01", "--json", config=config, check=False)
    line = failed(done, NOT_FOUND, "no backup of sqlite_backup for partition 2020-01-01")
    assert error_object(done, NOT_FOUND)["message"] == line

    # wrong key: an identity that is not a recipient of the artifact
    other = tmp_path / "other.key"
    cli("keygen", "--output", str(other))
    wrong = edited(config, "wrong-key.yaml", encryption={"recipients": [age_identity[1]], "identity_file": str(other)})
    done = cli("restore", "sqlite", "latest", "--to", str(tmp_path / "w.sqlite3"), "--json", config=wrong, check=False)
    assert "wrong identity or damaged artifact (No matching keys found" in failed(done, CREDENTIALS)
    assert error_object(done, CREDENTIALS)["name"] == "wrong_key_or_credential"
    assert not (tmp_path / "w.sqlite3").exists()

    # destination unreachable: a local destination that cannot be made (its parent is a file)
    (tmp_path / "a-file").write_text("x")
    gone = edited(config, "gone.yaml", destinations=[{"type": "local", "path": str(tmp_path / "a-file" / "backups")}])
    failed(cli("backup", "sqlite", "--partition", OTHER, config=gone, check=False), DESTINATION, "local destination")

    # locked: another prune holds this host's prune lock
    lock_path = _prune_lock(config)
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        done = cli("prune", "--json", config=config, check=False)
        assert "another prune is running" in failed(done, LOCKED)
        assert error_object(done, LOCKED)["name"] == "locked"
        assert cli("prune", "--dry-run", config=config).returncode == 0  # deletes nothing, takes no lock
    finally:
        os.close(fd)
    assert cli("prune", config=config).returncode == 0  # the lock released: it runs

    # verification failed: one byte of the artifact flipped
    artifact = next((tmp_path / "backups").rglob("*.sqlite3.zst.age"))
    data = bytearray(artifact.read_bytes())
    data[len(data) // 2] ^= 0x01
    artifact.write_bytes(bytes(data))
    failed(cli("verify", row["id"], config=config, check=False), VERIFICATION, "checksum mismatch")


def _prune_lock(config: Path) -> Path:
    from erp_backup_pipeline.core.prune import LOCK_FILE
    from erp_backup_pipeline.core.site import build_site
    from erp_backup_pipeline.settings import load_settings

    return build_site(load_settings(config)).state_dir / LOCK_FILE


def test_a_source_that_refuses_the_password_is_a_credential_failure(tmp_path: Path, redis_server: Any,
                                                                    age_identity: Any) -> None:
    source = redis_source(redis_server)
    source["redis"]["password"] = "not-" + redis_server.password
    path = write_config(tmp_path, age_identity, source)
    done = cli("backup", "redis", "--partition", DAY, config=path, check=False)
    line = failed(done, CREDENTIALS, "authentication failed")
    assert redis_server.password not in done.stderr + line
    assert not list((tmp_path / "backups").rglob("*.age"))


def test_an_interrupted_command_exits_130(tmp_path: Path) -> None:
    """Ctrl-C (SIGINT) ends a command with 130 and one line, whatever it was doing (here: serving metrics)."""
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path), "DAGSTER_DISABLE_TELEMETRY": "1"}
    (tmp_path / "dagster.yaml").write_text("")
    from erp_backup_pipeline_devkit.servers import free_port

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "erp_backup_pipeline.cli", "metrics", "serve", "--port",
                             str(port)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().startswith("serving Prometheus metrics")
        deadline = time.monotonic() + 60
        while True:  # serving: the steady state a Ctrl-C meets
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read()
                break
            except OSError:
                assert time.monotonic() < deadline and proc.poll() is None, "metrics serve did not come up"
                time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == INTERRUPTED.code and err.strip().endswith("erp-backup: interrupted"), err
    assert "Traceback" not in err


# ------------------------------------------------------------------- the table, --help, --version


def test_the_exit_status_table_is_one_table_in_help_and_docs() -> None:
    assert [s.code for s in EXIT_STATUSES] == [0, 1, 2, 3, 10, 11, 12, 13, 130]
    assert len({s.name for s in EXIT_STATUSES}) == len(EXIT_STATUSES)
    shown = cli("--help").stdout
    docs = docs_text("reference", "exit-codes.md")
    for s in EXIT_STATUSES:
        assert re.search(rf"^\s+{s.code}\s+{s.name}\s+{re.escape(s.meaning[:40])}", shown, re.M), (s, shown)
        assert f"| {s.code} | `{s.name}` | {s.meaning} |" in docs, s
    version = cli("--version").stdout.strip()
    assert re.fullmatch(r"erp-backup \d+\.\d+\.\d+\S*", version), version


# ------------------------------------------------------------------- --json on the other verbs


def test_sets_recover_and_runbook_answer_in_json(tmp_path: Path, config: Path) -> None:
    cli("backup", "sqlite", "--partition", DAY, config=config)
    [row] = captures(config)
    sets = json.loads(cli("list", "--sets", "--json", config=config).stdout)
    assert sets["errors"] == [] and [(s["date"], s["complete"], s["captures"]) for s in sets["sets"]] == \
        [(DAY, True, {"sqlite_backup": row["id"]})]
    done = cli("recover", "--date", DAY, "--to", str(tmp_path / "rec"), "--json", config=config)
    report = json.loads(done.stdout)  # the lines went to stderr
    assert report["captures"] == {"sqlite_backup": row["id"]} and not report["dry_run"]
    assert report["checks"] and all(c["ok"] for c in report["checks"])
    assert "recovery plan for" in done.stderr
    runbook = json.loads(cli("runbook", "--output", str(tmp_path / "rb.md"), "--json", config=config).stdout)
    assert runbook["output"] == str(tmp_path / "rb.md") and "text" not in runbook
    assert runbook["lines"] == (tmp_path / "rb.md").read_text().count("\n")
    # a failure under --json: the error object, on every verb
    for argv in (["recover", "--date", "2020-01-01", "--to", str(tmp_path / "none")],
                 ["ls", "sqlite", "latest"], ["restore", "0badc0de", "--to", str(tmp_path / "x")]):
        done = cli(*argv, "--json", config=config, check=False)
        assert done.returncode != 0 and json.loads(done.stdout)["error"]["message"], (argv, done.stdout)


def test_progress_as_json_lines_on_request(config: Path) -> None:
    done = cli("--progress", "json", "backup", "sqlite", "--partition", DAY, "--json", config=config)
    records = [json.loads(line) for line in done.stderr.splitlines()]  # every line one object
    assert {r["type"] for r in records} <= {"message", "progress"} and records
    assert any("shipped to local" in r.get("message", "") for r in records)
    [made] = json.loads(done.stdout)["backups"]
    quiet = cli("--progress", "none", "verify", made["id"], config=config)
    assert quiet.stderr == "" and quiet.stdout.startswith("OK ")


def test_init_keygen_and_adopt_answer_in_json(tmp_path: Path, config: Path) -> None:
    made = json.loads(cli("init", "--var", str(tmp_path / "var"), "--json").stdout)
    assert Path(made["config"]).is_file() and made["var"] == str(tmp_path / "var")
    key = json.loads(cli("keygen", "--output", str(tmp_path / "k.key"), "--json").stdout)
    assert key["kind"] == "age" and key["public_key"].startswith("age1") and (tmp_path / "k.key").is_file()
    signing = json.loads(cli("keygen", "--signing", "--output", str(tmp_path / "s.key"), "--json").stdout)
    assert signing["kind"] == "signing" and signing["public_key"].startswith("ssh-ed25519 ")
    adopted = json.loads(cli("catalog", "adopt", "--dry-run", "--json", config=config).stdout)
    assert adopted == {"dry_run": True, "captures": []}
