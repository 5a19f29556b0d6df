"""Existing installations: manifests written before signing are trusted by nothing until ``erp-backup catalog adopt``
has verified each capture end to end and signed it into its source's chain; one that does not verify, or that not
every destination holds (a writer at one destination can plant an unsigned manifest), stays rejected."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pyrage
import yaml

from erp_backup_pipeline.core.chain import LEDGER_NAME
from erp_backup_pipeline.core.codecs import compressor
from erp_backup_pipeline.core.destinations import build_destinations, put_bytes, read_bytes
from erp_backup_pipeline.core.manifest import MANIFEST_SUFFIX, Manifest
from erp_backup_pipeline.core.pipeline import run_backup
from erp_backup_pipeline.core.signing import SIGNATURE_SUFFIX
from erp_backup_pipeline.settings import load_settings
from erp_backup_pipeline_tests.conftest import catalog_entries, s3_destination, signing_section

PARTS = ["2026-11-20", "2026-11-21", "2026-11-22", "2026-11-23"]


def cli(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "erp_backup_pipeline.cli", "--config", str(config), *args],
                          capture_output=True, text=True, timeout=180)


def make_legacy(settings: Any) -> None:
    """Turn every capture into what the pipeline wrote before manifests were signed: format 1, no sequence and no
    previous, no signature, no chain ledger, no chain state on this host."""
    for dest in build_destinations(settings):
        for key in list(dest.list(settings.prefix + "/")):
            if key.endswith(SIGNATURE_SUFFIX) or key.endswith("/" + LEDGER_NAME):
                dest.delete(key)
            elif key.endswith(MANIFEST_SUFFIX):
                raw = json.loads(read_bytes(dest, key))
                raw["format"] = 1
                raw.pop("sequence")
                raw.pop("previous")
                dest.delete(key)
                put_bytes(dest, key, (json.dumps(raw, indent=2, sort_keys=True) + "\n").encode())
    shutil.rmtree(Path(settings.state_dir) / "chain")


def plant(settings: Any, tmp_path: Path, recipient: str, partition: str) -> Manifest:
    """What a writer at the local destination alone can do: another database, encrypted to the public recipient,
    with a consistent unsigned manifest of the old format."""
    other = tmp_path / "other.sqlite3"
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE invoices (id INTEGER PRIMARY KEY, total TEXT)")
        conn.execute("INSERT INTO invoices VALUES (1, 'the attacker''s')")
    plain = other.read_bytes()
    packed = io.BytesIO()
    compressor("zstd").compress(io.BytesIO(plain), packed)
    cipher = pyrage.encrypt(packed.getvalue(), [pyrage.x25519.Recipient.from_str(recipient)])
    local = next(d for d in build_destinations(settings) if d.name == "local")
    template = json.loads(read_bytes(local, next(k for k in local.list(settings.prefix + "/")
                                                  if k.endswith(MANIFEST_SUFFIX))))
    stamp = "20261124T010000000Z-0badc0de"
    key = f"{settings.prefix}/sqlite_backup/{partition}/{stamp}.sqlite3.zst.age"
    put_bytes(local, key, cipher)
    for entry in template["chain"]:
        if entry["stage"] == "dump":
            entry["bytes"], entry["sha256"] = len(plain), hashlib.sha256(plain).hexdigest()
    template.update(partition=partition, captured_at="2026-11-24T01:00:00+00:00", artifact_key=key,
                    artifact_bytes=len(cipher), artifact_sha256=hashlib.sha256(cipher).hexdigest(), attachments=[])
    template["facts"]["row_counts"] = {"invoices": 1}
    m = Manifest.from_json(json.dumps(template).encode())
    put_bytes(local, m.key, (json.dumps(template, indent=2, sort_keys=True) + "\n").encode())
    return m


def test_legacy_manifests_are_trusted_by_nothing_until_adopted_and_a_planted_one_never_is(
        tmp_path: Path, demo_sqlite: Path, age_identity: Any, moto_server: Any, bucket: str) -> None:
    config = tmp_path / "erp-backup.yaml"
    config.write_text(yaml.safe_dump({
        "staging_dir": str(tmp_path / "staging"), "state_dir": str(tmp_path / "state"),
        "encryption": {"recipients": [age_identity[1]], "identity_file": str(age_identity[0])},
        "signing": signing_section(),
        "destinations": [{"type": "local", "name": "local", "path": str(tmp_path / "backups")},
                         s3_destination(moto_server, bucket)],
        "sources": {"sqlite": {"path": str(demo_sqlite)}}}))
    config.chmod(0o600)
    settings = load_settings(str(config))
    made = {p: run_backup(settings, "sqlite_backup", p) for p in PARTS}
    make_legacy(settings)
    # one old capture is damaged on every destination: it must not be signed
    for dest in build_destinations(settings):
        data = bytearray(read_bytes(dest, made[PARTS[1]].artifact_key))
        data[-20] ^= 0xFF
        dest.delete(made[PARTS[1]].artifact_key)
        put_bytes(dest, made[PARTS[1]].artifact_key, bytes(data))
    forged = plant(settings, tmp_path, age_identity[1], "2026-11-24")

    listed = json.loads(cli(config, "list", "--json").stdout)
    assert listed["captures"] == []
    assert len(listed["rejected"]) == 2 * len(PARTS) + 1
    assert all(r["reason"].startswith("unsigned (legacy: written before manifests were signed")
               for r in listed["rejected"])
    refused = cli(config, "restore", "sqlite", "--partition", PARTS[0], "--to", str(tmp_path / "r0.sqlite3"))
    assert refused.returncode == 1 and "no authenticated backup of sqlite_backup" in refused.stderr
    before = {d.name: sorted(d.list(settings.prefix + "/")) for d in build_destinations(settings)}

    dry = cli(config, "catalog", "adopt", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.strip().splitlines()[-1] == ("dry run: 4 unsigned capture(s) would be verified and signed, 1 "
                                                   "not; nothing changed")
    assert f"not adopted: sqlite_backup 2026-11-24 captured {forged.captured_at}: held by local only, not offsite" \
        in dry.stdout
    assert {d.name: sorted(d.list(settings.prefix + "/")) for d in build_destinations(settings)} == before

    done = cli(config, "catalog", "adopt")
    assert done.returncode == 1  # one capture did not verify: said, and it stays rejected
    assert done.stdout.strip().splitlines()[-1] == "adopted 3, not adopted 2 (they stay rejected)"
    assert "Traceback" not in done.stdout + done.stderr
    entries = catalog_entries(settings)
    assert [(e.manifest.partition, e.manifest.sequence, sorted(e.held_by)) for e in entries] == [
        (PARTS[0], 1, ["local", "offsite"]), (PARTS[2], 2, ["local", "offsite"]), (PARTS[3], 3, ["local", "offsite"])]
    assert entries[1].manifest.previous == entries[0].sha256 and entries[2].manifest.previous == entries[1].sha256
    listed = json.loads(cli(config, "list", "--json").stdout)
    assert sorted((r["destination"], r["key"]) for r in listed["rejected"]) == sorted(
        [("local", made[PARTS[1]].key), ("offsite", made[PARTS[1]].key), ("local", forged.key)])
    assert listed["findings"] == [] and listed["gaps"] == []
    # the adopted captures restore; the planted date has nothing to restore
    out = tmp_path / "restored.sqlite3"
    assert cli(config, "restore", "sqlite", "--partition", PARTS[3], "--to", str(out)).returncode == 0
    with sqlite3.connect(out) as conn:
        assert conn.execute("SELECT count(*) FROM invoices").fetchone()[0] == 200
    planted = cli(config, "restore", "sqlite", "--partition", "2026-11-24", "--to", str(tmp_path / "x.sqlite3"))
    assert planted.returncode == 1 and "rejected" in planted.stderr and not (tmp_path / "x.sqlite3").exists()
    # the next backup continues the chain
    assert run_backup(settings, "sqlite_backup", "2026-11-25").sequence == 4
