"""Reading the authenticated catalog: manifests the signed ledger (or this host's chain state) lists are vouched for
by it, so the catalog fetches one ledger per source instead of one signature per manifest; without a ledger every
manifest's own signature is fetched and checked; a vouched manifest is still bound to its place."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from erp_backup_pipeline.core import catalog
from erp_backup_pipeline.core.chain import LEDGER_NAME
from erp_backup_pipeline.core.destinations import LocalDestination, build_destinations, read_bytes
from erp_backup_pipeline.core.pipeline import run_backup
from erp_backup_pipeline.core.signing import SIGNATURE_SUFFIX
from erp_backup_pipeline_tests.conftest import make_settings, s3_destination, spy_on

PARTS = ["2026-11-21", "2026-11-22", "2026-11-23", "2026-11-24", "2026-11-25"]


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """(destination, key) of every object opened for reading; the reads themselves are real."""
    return spy_on(monkeypatch, "open_reader")


def test_the_ledger_vouches_for_the_manifests_it_lists_and_nothing_else(
        tmp_path: Path, demo_sqlite: Path, age_identity: Any, moto_server: Any, bucket: str,
        reads: list[tuple[str, str]]) -> None:
    destinations = [{"type": "local", "name": "local", "path": str(tmp_path / "backups")},
                    s3_destination(moto_server, bucket)]
    settings = make_settings(tmp_path, age_identity, sources={"sqlite": {"path": str(demo_sqlite)}},
                             destinations=destinations, state_dir=str(tmp_path / "state"))
    made = [run_backup(settings, "sqlite_backup", p) for p in PARTS]
    sigs = {(n, m.key + SIGNATURE_SUFFIX) for n in ("local", "offsite") for m in made}

    # the backing-up host: its chain state and the ledgers vouch for all five; no signature is fetched
    reads.clear()
    found = catalog.of(settings, "sqlite_backup")
    assert [e.manifest.sequence for e in found.entries] == [1, 2, 3, 4, 5] and not found.evidence
    assert not sigs & set(reads)
    assert {k for _, k in reads if k.endswith(LEDGER_NAME)} == {f"{settings.prefix}/sqlite_backup/{LEDGER_NAME}"}

    # a host that only restores (no chain state of its own): the signed ledgers alone vouch
    restorer = make_settings(tmp_path / "restorer", age_identity, sources={"sqlite": {"path": str(demo_sqlite)}},
                             destinations=destinations, state_dir=str(tmp_path / "restorer-state"))
    reads.clear()
    assert [e.manifest.sequence for e in catalog.of(restorer, "sqlite_backup").entries] == [1, 2, 3, 4, 5]
    assert not sigs & set(reads)

    # without ledgers and state, every manifest's own signature is fetched and checked, on each destination
    for dest in build_destinations(settings):
        dest.delete(f"{settings.prefix}/sqlite_backup/{LEDGER_NAME}")
    reads.clear()
    found = catalog.of(restorer, "sqlite_backup")
    assert [e.manifest.sequence for e in found.entries] == [1, 2, 3, 4, 5]
    assert sigs <= set(reads)

    # a vouched manifest copied under another date is still misplaced: the ledger vouches for bytes, not places
    local = LocalDestination(tmp_path / "backups")
    data = read_bytes(local, made[0].key)
    copy = made[0].key.replace(f"/{PARTS[0]}/", f"/{PARTS[-1]}/").replace(made[0].stamp, "20261126T010000000Z-0c0ffee0")
    local.path_for(copy).write_bytes(data)
    found = catalog.of(settings, "sqlite_backup")
    [rejected] = found.rejected
    assert (rejected.destination, rejected.key) == ("local", copy) and rejected.reason.startswith("misplaced: ")
    shutil.rmtree(tmp_path / "state" / "chain")  # with no state either: the same verdict from the signature
    local.path_for(copy).with_name(Path(copy).name + SIGNATURE_SUFFIX).write_bytes(
        read_bytes(local, made[0].key + SIGNATURE_SUFFIX))
    [rejected] = catalog.of(settings, "sqlite_backup").rejected
    assert rejected.reason.startswith("misplaced: ")


@pytest.mark.parametrize("source", ["config_archive", "uploads_snapshot"])
def test_a_newer_forged_capture_of_a_file_tree_is_never_restored(source: str, tmp_path: Path, age_identity: Any,
                                                                 moto_server: Any, bucket: str) -> None:
    """The other sources too: beside a genuine capture of the config tree or the uploads, a writer at the off-site
    bucket puts a newer capture of the same date (a tar with a planted file, encrypted to the public recipient,
    with a consistent unsigned manifest). The restore brings back the genuine tree, list names the forgery, prune
    holds."""
    import hashlib
    import io
    import json
    import tarfile

    import pyrage

    from erp_backup_pipeline.core.codecs import compressor
    from erp_backup_pipeline.core.destinations import put_bytes
    from erp_backup_pipeline.core.prune import PruneRefused, prune
    from erp_backup_pipeline.core.restore import restore_backup

    tree = tmp_path / "tree"
    (tree / "docs").mkdir(parents=True)
    (tree / "docs" / "RE-1.pdf").write_bytes(b"%PDF genuine invoice")
    sources = ({"config": {"paths": [str(tree / "docs")], "root": str(tree)}} if source == "config_archive"
               else {"uploads": {"path": str(tree)}})
    settings = make_settings(tmp_path, age_identity, sources=sources, state_dir=str(tmp_path / "state"),
                             destinations=[{"type": "local", "name": "local", "path": str(tmp_path / "backups")},
                                           s3_destination(moto_server, bucket)])
    genuine = run_backup(settings, source, PARTS[-1])
    offsite = next(d for d in build_destinations(settings) if d.name == "offsite")

    planted = io.BytesIO()
    with tarfile.open(fileobj=planted, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("docs/RE-1.pdf")
        body = b"%PDF the attacker's invoice"
        info.size = len(body)
        tar.addfile(info, io.BytesIO(body))
    packed = io.BytesIO()
    compressor("zstd").compress(io.BytesIO(planted.getvalue()), packed)
    cipher = pyrage.encrypt(packed.getvalue(), [pyrage.x25519.Recipient.from_str(age_identity[1])])
    raw = json.loads(read_bytes(offsite, genuine.key))
    stamp = "29991231T235959999Z-0badf00d"
    raw.update(artifact_key=genuine.artifact_key.replace(genuine.stamp, stamp), artifact_bytes=len(cipher),
               artifact_sha256=hashlib.sha256(cipher).hexdigest(), captured_at="2026-11-25T23:59:00+00:00",
               sequence=genuine.sequence + 1, previous=None, attachments=[])
    put_bytes(offsite, raw["artifact_key"], cipher)
    forged_key = genuine.key.replace(genuine.stamp, stamp)
    put_bytes(offsite, forged_key, json.dumps(raw).encode())

    found = catalog.of(settings, source)
    assert [e.manifest.key for e in found.entries] == [genuine.key]
    assert [(r.destination, r.key, r.reason) for r in found.rejected] == [
        ("offsite", forged_key, "unsigned: no signature beside it")]
    target = tmp_path / "restored"
    restore_backup(settings, source, PARTS[-1], str(target))
    assert (target / "docs" / "RE-1.pdf").read_bytes() == b"%PDF genuine invoice"
    with pytest.raises(PruneRefused, match=r"first offsite: .*: unsigned: no signature beside it"):
        prune(settings, dry_run=False, log=pytest.fail)
