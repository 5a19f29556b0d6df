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
