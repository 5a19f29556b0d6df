"""An operator's script drives erp-backup from its JSON output alone, as one scripts restic: list, pick `latest`,
ls, restore one document by its path, check a subset of the data; and at each failure on the way it branches on the
exit status. Then `check` on a repository with a damaged copy, a missing object and a planted file."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from erp_backup_pipeline.errors import NOT_FOUND, USAGE, VERIFICATION
from erp_backup_pipeline_tests.test_cli import cli, write_config
from erp_backup_pipeline_tests.test_exit_statuses import error_object, failed

DAYS = ("2026-11-24", "2026-11-25")


@pytest.fixture
def repo(tmp_path: Path, demo_sqlite: Path, age_identity: Any) -> tuple[Path, Path]:
    """Two dates of the uploads tree and the SQLite database; an invoice deleted from the ERP after the first."""
    uploads = tmp_path / "erp" / "uploads"
    (uploads / "invoices").mkdir(parents=True)
    for i in range(12):
        (uploads / "invoices" / f"RE-{i:05}.pdf").write_bytes(f"%PDF invoice {i}\n".encode() * 50)
    (uploads / "avatars").mkdir()
    (uploads / "avatars" / "a.png").write_bytes(b"\x89PNG" * 10)
    config = write_config(tmp_path, age_identity, {"sqlite": {"path": str(demo_sqlite)},
                                                   "uploads": {"path": str(uploads)}})
    cli("backup", "all", "--partition", DAYS[0], config=config)
    (uploads / "invoices" / "RE-00007.pdf").unlink()  # "a user deleted invoice RE-00007.pdf"
    (uploads / "invoices" / "RE-00012.pdf").write_bytes(b"%PDF invoice 12\n")
    cli("backup", "all", "--partition", DAYS[1], config=config)
    return config, uploads


def run_json(config: Path, *argv: str) -> tuple[int, dict[str, Any]]:
    done = cli(*argv, "--json", config=config, check=False)
    return done.returncode, json.loads(done.stdout)


def test_a_script_restores_one_deleted_document_from_json_alone(tmp_path: Path, repo: tuple[Path, Path]) -> None:
    config, uploads = repo
    # list: the captures of uploads, newest last; "latest" is the newest date's
    rc, listed = run_json(config, "list", "--source", "uploads")
    assert rc == 0
    ids = [c["id"] for c in listed["captures"]]
    assert [c["partition"] for c in listed["captures"]] == list(DAYS)
    rc, latest = run_json(config, "ls", "uploads", "latest", "invoices")
    assert rc == 0 and latest["id"] == ids[-1]
    # the invoice is not in the newest capture: the script asks for it, sees "not found", and goes back in time
    rc, missing = run_json(config, "ls", latest["id"], "invoices/RE-00007.pdf")
    assert rc == NOT_FOUND.code and missing["error"]["name"] == "not_found"
    for capture in reversed(ids):
        rc, found = run_json(config, "ls", capture, "invoices/RE-00007.pdf")
        if rc == 0:
            break
        assert rc == NOT_FOUND.code
    [doc] = found["files"]
    assert found["id"] == ids[0] and doc["path"] == "invoices/RE-00007.pdf"
    # restore that one document by its path, from the capture that has it
    target = tmp_path / "restored"
    rc, plan = run_json(config, "restore", found["id"], "--include", doc["path"], "--to", str(target), "--dry-run")
    assert rc == 0 and plan["dry_run"] and not target.exists()
    rc, restored = run_json(config, "restore", found["id"], "--include", doc["path"], "--to", str(target))
    assert rc == 0 and restored["id"] == found["id"] and restored["files"] == 1
    got = target / "invoices" / "RE-00007.pdf"
    assert hashlib.sha256(got.read_bytes()).hexdigest() == doc["sha256"]
    assert sorted(p.relative_to(target).as_posix() for p in target.rglob("*")) == ["invoices", "invoices/RE-00007.pdf"]
    # the same target again: refused (it exists), nothing changed; a path no capture has: not found
    rc, again = run_json(config, "restore", found["id"], "--include", doc["path"], "--to", str(target))
    assert rc == 1 and "not empty" in again["error"]["message"] and got.exists()
    rc, nothing = run_json(config, "restore", found["id"], "--include", "invoices/RE-99999.pdf", "--to",
                           str(tmp_path / "nothing"))
    assert rc == NOT_FOUND.code and not (tmp_path / "nothing").exists()
    rc, wrong = run_json(config, "restore", "sqlite", "latest", "--include", "x", "--to", str(tmp_path / "x.db"))
    assert rc == USAGE.code and wrong["error"]["name"] == "usage"
    # check half of the data end to end; the other half next time; list shows when each was checked
    rc, first_half = run_json(config, "check", "--read-data-subset", "1/2")
    rc2, second_half = run_json(config, "check", "--read-data-subset", "2/2")
    assert rc == rc2 == 0 and first_half["ok"] and second_half["ok"]
    read = {c["id"] for c in first_half["captures"] if c["read_data"]} | \
        {c["id"] for c in second_half["captures"] if c["read_data"]}
    rc, everything = run_json(config, "list")
    assert read == {c["id"] for c in everything["captures"]}  # 1/2 and 2/2 together read every capture
    assert all(c["check_ok"] and c["checked_at"] for c in everything["captures"])
    for bad in ("0/2", "3/2", "0%", "150%", "half"):
        failed(cli("check", "--read-data-subset", bad, config=config, check=False), USAGE, "--read-data-subset")


def test_check_finds_every_kind_of_damage_and_says_where(tmp_path: Path, repo: tuple[Path, Path]) -> None:
    config, _ = repo
    backups = tmp_path / "backups"
    captures = json.loads(cli("list", "--json", config=config).stdout)["captures"]
    by_id = {c["id"]: c for c in captures}
    # one artifact with a byte flipped (same size: only reading the data finds it), one truncated, one planted file
    flipped, truncated = captures[0], captures[-1]
    path = backups / flipped["key"]
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x40
    path.write_bytes(bytes(data))
    (backups / truncated["key"]).write_bytes((backups / truncated["key"]).read_bytes()[:-1])
    planted = backups / Path(flipped["key"]).parent / "19700101T000000000000Z-deadbeef.manifest.json"
    planted.write_text("{}")
    # without reading the data: the truncated one and the planted file
    done = cli("check", "--json", config=config, check=False)
    result = error_object_and_body(done)
    assert not result["ok"]
    bad = {c["id"] for c in result["captures"] if not c["ok"]}
    assert bad == {truncated["id"]}
    [problem] = next(c for c in result["captures"] if c["id"] == truncated["id"])["problems"]
    assert f"{truncated['artifact_bytes'] - 1} bytes, the manifest says {truncated['artifact_bytes']}" in problem
    assert any("deadbeef.manifest.json" in p for p in result["problems"])
    # reading all the data: the flipped byte too
    done = cli("check", "--read-data", "--json", config=config, check=False)
    result = error_object_and_body(done)
    assert {c["id"] for c in result["captures"] if not c["ok"]} == {truncated["id"], flipped["id"]}
    flipped_problem = next(c for c in result["captures"] if c["id"] == flipped["id"])["problems"][0]
    assert "sha256" in flipped_problem and "the manifest says" in flipped_problem
    # list shows the last check of each capture
    listed = {c["id"]: c for c in json.loads(cli("list", "--json", config=config).stdout)["captures"]}
    assert not listed[flipped["id"]]["check_ok"] and "sha256" in listed[flipped["id"]]["check_problem"]
    assert all(listed[i]["check_ok"] for i in by_id if i not in (flipped["id"], truncated["id"]))
    table = cli("list", config=config).stdout
    assert "FAILED" in table and "checked" in table


def error_object_and_body(done: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    """check --json on a damaged repository: exit 3, one object on stdout, the error object in it."""
    line = failed(done, VERIFICATION, "check:")
    assert error_object(done, VERIFICATION)["message"] == line
    return dict(json.loads(done.stdout))
