"""Prune: real backups on the local destination and moto's S3 server, pruned by the retention plan; the
refusals (an unreadable destination, a stopped pipeline), the uploads state and the CLI table."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import yaml

from erp_backup_pipeline.core import commit
from erp_backup_pipeline.core.chain import LEDGER_NAME
from erp_backup_pipeline.core.destinations import LocalDestination, S3Destination, build_destinations, put_bytes, read_bytes
from erp_backup_pipeline.core.manifest import MANIFEST_SUFFIX, Manifest
from erp_backup_pipeline.core.pipeline import STAGES, Capture, new_capture, run_backup, stage_manifest
from erp_backup_pipeline.core.prune import PruneRefused, prune
from erp_backup_pipeline.core.restore import restore_backup, verify_backup
from erp_backup_pipeline.core.signing import SIGNATURE_SUFFIX
from erp_backup_pipeline.core.sources.uploads import load_state, save_state
from erp_backup_pipeline.errors import DestinationError
from erp_backup_pipeline.settings import load_settings
from erp_backup_pipeline_tests.conftest import (
    S3_SECRET,
    catalog_entries,
    make_settings,
    s3_destination,
    signing_section,
    spy_on,
)

BERLIN = ZoneInfo("Europe/Berlin")


def days_back(n: int) -> list[str]:
    """The n partitions that end today (Europe/Berlin), oldest first."""
    today = datetime.now(BERLIN).date()
    return [(today - timedelta(days=i)).isoformat() for i in range(n - 1, -1, -1)]


def both(tmp_path: Path, age_identity: Any, moto: Any, bucket: str, **extra: Any) -> Any:
    return make_settings(tmp_path, age_identity, destinations=[
        {"type": "local", "name": "local", "path": str(tmp_path / "backups")}, s3_destination(moto, bucket)], **extra)


def keys(settings: Any) -> dict[str, list[str]]:
    """Every object on every destination (manifests and artifacts), by destination name."""
    return {d.name: list(d.list(settings.prefix + "/")) for d in build_destinations(settings)}


def partitions_on(settings: Any) -> dict[str, set[str]]:
    """Per destination, the partitions that still have an artifact, a manifest, a manifest signature; and the
    sources whose chain ledger is there ("ledger")."""
    found: dict[str, set[str]] = {}
    for name, listed in keys(settings).items():
        for key in listed:
            if key.endswith("/" + LEDGER_NAME):
                found.setdefault(f"{name} ledger", set()).add(key.split("/")[1])
                continue
            kind = ("manifest" if key.endswith(MANIFEST_SUFFIX) else
                    "signature" if key.endswith(MANIFEST_SUFFIX + SIGNATURE_SUFFIX) else "artifact")
            found.setdefault(f"{name} {kind}", set()).add(key.split("/")[2])
    return found


def on_every(settings: Any, partitions: set[str], source: str = "sqlite_backup") -> dict[str, set[str]]:
    """What partitions_on shows when each destination holds exactly these partitions, whole."""
    return {f"{n} {k}": (set(partitions) if k != "ledger" else {source}) for n in ("local", "offsite")
            for k in ("manifest", "signature", "artifact", "ledger")}


@pytest.fixture
def spy_deletes(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """Records (destination, key) of every delete, in order; the deletes themselves are real."""
    return spy_on(monkeypatch, "delete")


def test_prune_deletes_what_the_policy_drops_on_every_destination_manifest_first(
        tmp_path: Path, demo_sqlite: Path, age_identity: Any, moto_server: Any, bucket: str,
        spy_deletes: list[tuple[str, str]]) -> None:
    settings = both(tmp_path, age_identity, moto_server, bucket, sources={"sqlite": {"path": str(demo_sqlite)}},
                    retention={"sqlite_backup": {"keep_daily": 3}})
    parts = days_back(10)
    made = {p: run_backup(settings, "sqlite_backup", p) for p in parts}
    before = keys(settings)
    assert {n: len(k) for n, k in before.items()} == {"local": 31, "offsite": 31}  # 3 per capture + the ledger

    lines: list[str] = []
    dry = prune(settings, dry_run=True, log=lines.append)  # the default, and it deletes nothing
    assert dry.dry_run and lines == [] and spy_deletes == [] and keys(settings) == before
    assert {e.manifest.partition for e, _ in dry.plan.delete} == set(parts[:7])
    assert {r["action"] for r in dry.as_rows()} == {"keep", "delete"}

    result = prune(settings, dry_run=False, log=lines.append)
    assert not result.failed
    assert sorted(e.manifest.partition for e, _ in result.deleted) == parts[:7]
    assert sorted(e.manifest.partition for e, _ in result.kept) == parts[7:]
    assert partitions_on(settings) == on_every(settings, set(parts[7:]))
    assert [e.manifest.partition for e in catalog_entries(settings)] == parts[7:]
    # on every destination, each capture's manifest goes before its signature and its artifact
    assert len(spy_deletes) == 7 * 2 * 3
    for p in parts[:7]:
        m = made[p]
        for dest in ("local", "offsite"):
            assert spy_deletes.index((dest, m.key)) < spy_deletes.index((dest, m.key + SIGNATURE_SUFFIX)) < \
                spy_deletes.index((dest, m.artifact_key))
    # one line per deletion, naming what, where and why; never a secret
    assert len(lines) == 14 and not any(S3_SECRET in line for line in lines)
    m = made[parts[0]]
    assert f"deleted sqlite_backup {parts[0]} captured {m.captured_at} from offsite: in no bucket of the policy " \
           "(3 daily)" in lines
    rows = result.as_rows()
    assert [r["action"] for r in rows] == ["deleted"] * 7 + ["keep"] * 3
    assert rows[-1]["reason"].startswith("newest verified backup; daily ")

    # nothing left to do: a second prune deletes nothing
    again = prune(settings, dry_run=False, log=lines.append)
    assert again.deleted == [] and again.failed == [] and len(lines) == 14


def test_an_unreadable_destination_refuses_and_deletes_nothing(tmp_path: Path, demo_sqlite: Path, age_identity: Any,
                                                                moto_server: Any, bucket: str) -> None:
    sources = {"sqlite": {"path": str(demo_sqlite)}}
    retention = {"sqlite_backup": {"keep_daily": 1}}
    settings = both(tmp_path, age_identity, moto_server, bucket, sources=sources, retention=retention)
    for p in days_back(3):
        run_backup(settings, "sqlite_backup", p)
    before = keys(settings)

    # the off-site bucket is gone (or its credentials): its copies cannot be seen, so nothing may go anywhere
    gone = make_settings(tmp_path, age_identity, sources=sources, retention=retention, destinations=[
        {"type": "local", "name": "local", "path": str(tmp_path / "backups")},
        s3_destination(moto_server, "no-such-bucket-here")])
    for dry_run in (True, False):
        with pytest.raises(PruneRefused) as err:
            prune(gone, dry_run=dry_run, log=pytest.fail)
        assert str(err.value) == ("refusing to prune: 1 destination(s) could not be read, so the plan would miss "
                                  "their backups (offsite: destination offsite: S3 bucket 'no-such-bucket-here' "
                                  "does not exist)")
    # a manifest that is not what was signed is evidence: it holds prune everywhere until someone has looked
    local = LocalDestination(tmp_path / "backups")
    broken = next(k for k in before["local"] if k.endswith(MANIFEST_SUFFIX))
    original = read_bytes(local, broken)
    local.path_for(broken).write_bytes(b"{not json")
    with pytest.raises(PruneRefused) as err:
        prune(settings, dry_run=False, log=pytest.fail)
    assert str(err.value) == (
        f"refusing to prune: 1 file(s) or chain finding(s) on the destinations are not authenticated, first local: "
        f"{broken}: signature does not match the manifest (edited after signing); `erp-backup list` shows every one: "
        "look at them, remove what this pipeline did not write, then prune again")
    local.path_for(broken).write_bytes(original)
    assert keys(settings) == before
    assert len(prune(settings, dry_run=False, log=lambda line: None).deleted) == 2


def test_ninety_days_without_backups_keeps_every_copy(tmp_path: Path, demo_sqlite: Path, age_identity: Any,
                                                      moto_server: Any, bucket: str) -> None:
    """The original's `find -maxdepth 1 -type d -mtime +90 -exec rm -rf` deleted every copy after 90 quiet days."""
    settings = both(tmp_path, age_identity, moto_server, bucket, sources={"sqlite": {"path": str(demo_sqlite)}},
                    retention={"sqlite_backup": {"keep_daily": 2}})
    for p in days_back(5):
        run_backup(settings, "sqlite_backup", p)
    later = datetime.now(UTC) + timedelta(days=95)  # the pipeline stopped; prune runs on, 95 days later
    entries = catalog_entries(settings)
    assert len(entries) == 5 and all(e.held_by == ["local", "offsite"] for e in entries)
    before = keys(settings)

    lines: list[str] = []
    result = prune(settings, now=later, dry_run=False, log=lines.append)
    assert result.deleted == [] and result.failed == [] and lines == [] and len(result.kept) == 5
    assert keys(settings) == before
    [note] = result.notes
    assert note.startswith("sqlite_backup: retention held, nothing deleted: the newest verified backup (")
    assert "95 days old" in note and "a stopped pipeline must not age its last copies away" in note
    held = sorted(e.manifest.partition for e, r in result.kept if r.startswith("retention held: "))
    assert len(held) == 3 and all("(otherwise: in no bucket of the policy (2 daily))" in r for _, r in result.kept
                                  if r.startswith("retention held"))
    # the same backups, pruned while they are fresh, go down to 2
    fresh = prune(settings, dry_run=True)
    assert len(fresh.plan.delete) == 3


def uploads_history(settings: Any, up: Path, days: list[dict[str, bytes | None]]) -> list[Manifest]:
    """One backup a day, ending today; each day's changes are applied first (None: the file is removed)."""
    up.mkdir(exist_ok=True)
    made = []
    for partition, changes in zip(days_back(len(days)), days, strict=True):
        for name, content in changes.items():
            if content is None:
                (up / name).unlink()
            else:
                (up / name).write_bytes(content)
        made.append(run_backup(settings, "uploads_snapshot", partition))
    return made


def tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_uploads_artifacts_that_later_snapshots_build_on_survive(tmp_path: Path, age_identity: Any, moto_server: Any,
                                                                 bucket: str) -> None:
    up = tmp_path / "uploads"
    settings = both(tmp_path, age_identity, moto_server, bucket, sources={"uploads": {"path": str(up)}},
                    state_dir=str(tmp_path / "state"), retention={"uploads_snapshot": {"keep_daily": 1}})
    m = uploads_history(settings, up, [
        {"base.pdf": b"kept all along " * 100, "old.pdf": b"removed on day 2"},  # d0: holds base.pdf
        {"old.pdf": None, "draft.pdf": b"a draft"},  # d1: holds draft.pdf, needs d0
        {"draft.pdf": None},  # d2: holds nothing new, needs d0
        {"e.pdf": b"arrived on day 3"},  # d3: holds e.pdf, needs d0
        {"f.pdf": b"arrived on day 4"},  # d4: holds f.pdf, needs d0 and d3
    ])
    assert m[4].facts["depends_on"] == sorted([m[0].artifact_key, m[3].artifact_key])
    expected = tree(up)

    lines: list[str] = []
    result = prune(settings, dry_run=False, log=lines.append)
    assert sorted(e.manifest.partition for e, _ in result.deleted) == [m[1].partition, m[2].partition]
    kept = {e.manifest.partition: r for e, r in result.kept}
    assert kept[m[0].partition].startswith(f"needed by uploads_snapshot {m[4].partition}")
    assert kept[m[3].partition].startswith(f"needed by uploads_snapshot {m[4].partition}")
    assert len(lines) == 4
    survivors = {m[0].partition, m[3].partition, m[4].partition}
    assert partitions_on(settings) == on_every(settings, survivors, "uploads_snapshot")
    # the newest day still restores in full, from either destination, and the next backup builds on what is left
    assert verify_backup(settings, "uploads_snapshot", m[4].partition, read_data=0)["ok"]
    restore_backup(settings, "uploads_snapshot", m[4].partition, str(tmp_path / "r4"))
    assert tree(tmp_path / "r4") == expected
    assert set(load_state(tmp_path / "state" / "uploads_snapshot.json")["blobs"].values()) == {
        m[0].artifact_key, m[3].artifact_key, m[4].artifact_key}


def test_the_uploads_state_guards_the_artifacts_it_names(tmp_path: Path, age_identity: Any,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    up = tmp_path / "uploads"
    settings = make_settings(tmp_path, age_identity, sources={"uploads": {"path": str(up)}},
                             state_dir=str(tmp_path / "state"), retention={"uploads_snapshot": {"keep_daily": 1}})
    m = uploads_history(settings, up, [
        {"a.pdf": b"a" * 500, "b.pdf": b"b" * 500},  # d0
        {"c.pdf": b"c" * 500},  # d1: holds c.pdf, needs d0
        {"a.pdf": None, "b.pdf": None, "c.pdf": None, "d.pdf": b"d" * 500},  # d2: holds d.pdf only
        {"e.pdf": b"e" * 500},  # d3: needs d2
    ])
    assert m[1].facts["depends_on"] == [m[0].artifact_key] and m[3].facts["depends_on"] == [m[2].artifact_key]
    state_file = tmp_path / "state" / "uploads_snapshot.json"
    state = load_state(state_file)
    plain = prune(settings)
    assert sorted(e.manifest.partition for e, _ in plain.plan.delete) == [m[0].partition, m[1].partition]

    # a state that still names d1 as a content holder (restored from an older copy, or a backup started
    # before the last one committed): d1 stays, and d0, which it needs
    save_state(state_file, {"files": state["files"], "blobs": {**state["blobs"], "c" * 64: m[1].artifact_key}})
    guarded = prune(settings)
    assert guarded.plan.delete == []
    reasons = {e.manifest.partition: r for e, r in guarded.plan.keep}
    assert reasons[m[1].partition].startswith(f"referenced by the uploads state {state_file}: the next uploads "
                                              "backup builds on it (otherwise: in no bucket")
    assert reasons[m[0].partition].startswith(f"needed by uploads_snapshot {m[1].partition}, which the uploads "
                                              "state references")
    assert guarded.notes[-1] == f"uploads_snapshot: 2 artifact(s) kept for the uploads state {state_file}"

    # a state that cannot be read: which artifacts the next backup builds on is unknown, so none goes
    state_file.write_text("{torn")
    unreadable = prune(settings, dry_run=False, log=pytest.fail)
    assert unreadable.deleted == [] and len(unreadable.kept) == 4
    assert "cannot be read (not an uploads state)" in {e.manifest.partition: r for e, r in unreadable.kept}[
        m[0].partition]

    # a capture whose manifest could not be deleted keeps what it depends on
    save_state(state_file, state)
    original = LocalDestination.delete

    def failing(self: Any, key: str) -> None:
        if key == m[1].key:
            raise DestinationError(f"{self.uri(key)}: permission denied")
        original(self, key)

    with monkeypatch.context() as patch:
        patch.setattr(LocalDestination, "delete", failing)
        lines: list[str] = []
        result = prune(settings, dry_run=False, log=lines.append)
    assert result.deleted == []
    [(failed, why)] = result.failed
    assert failed.manifest.partition == m[1].partition and why.endswith(": permission denied")
    assert "a capture that depends on it could not be deleted" in {
        e.manifest.partition: r for e, r in result.kept}[m[0].partition]
    assert lines == [f"failed to delete uploads_snapshot {m[1].partition} captured {m[1].captured_at} from local "
                     f"(manifest): {LocalDestination(tmp_path / 'backups').uri(m[1].key)}: permission denied"]
    # once deletable, both go, dependent first
    assert [e.manifest.partition for e, _ in prune(settings, dry_run=False, log=lines.append).deleted] == [
        m[1].partition, m[0].partition]


def test_a_failed_deletion_on_one_destination_is_reported_and_the_rest_goes_on(
        tmp_path: Path, demo_sqlite: Path, age_identity: Any, moto_server: Any, bucket: str) -> None:
    settings = both(tmp_path, age_identity, moto_server, bucket, sources={"sqlite": {"path": str(demo_sqlite)}},
                    retention={"sqlite_backup": {"keep_daily": 1}})
    made = [run_backup(settings, "sqlite_backup", p) for p in days_back(3)]
    # the local artifact of the oldest capture cannot be removed (a directory in its place: even root fails)
    path = LocalDestination(tmp_path / "backups").path_for(made[0].artifact_key)
    path.unlink()
    path.mkdir()
    lines: list[str] = []
    result = prune(settings, dry_run=False, log=lines.append)
    assert [e.manifest.partition for e, _ in result.deleted] == [made[1].partition]
    [(entry, why)] = result.failed
    assert entry.manifest.partition == made[0].partition
    assert "failed on local: artifact left without its manifest:" in why
    assert sum(line.startswith("deleted ") for line in lines) == 3  # made[1] twice, made[0] from offsite
    assert [line for line in lines if line.startswith("failed ")] == [
        f"failed to delete sqlite_backup {made[0].partition} captured {made[0].captured_at} from local (artifact): "
        f"{path.as_uri()}: Is a directory"]
    assert partitions_on(settings) == on_every(settings, {made[2].partition})  # the directory is not listed


def cli(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "erp_backup_pipeline.cli", "--config", str(config), *args],
                          capture_output=True, text=True, timeout=120)


def test_cli_prints_the_plan_as_a_table_and_applies_it(tmp_path: Path, demo_sqlite: Path, age_identity: Any,
                                                       moto_server: Any, bucket: str) -> None:
    config = tmp_path / "erp-backup.yaml"
    data = {
        "staging_dir": str(tmp_path / "staging"),
        "encryption": {"recipients": [age_identity[1]], "identity_file": str(age_identity[0])},
        "signing": signing_section(),
        "destinations": [{"type": "local", "path": str(tmp_path / "backups")}, s3_destination(moto_server, bucket)],
        "sources": {"sqlite": {"path": str(demo_sqlite)}},
        "retention": {"sqlite_backup": {"keep_daily": 2}},
    }
    config.write_text(yaml.safe_dump(data))
    settings = load_settings(config)
    parts = days_back(4)
    for p in parts:
        run_backup(settings, "sqlite_backup", p)

    dry = cli(config, "prune", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    out = dry.stdout.splitlines()
    assert out[0].split() == ["source", "partition", "captured_at", "action", "reason"]
    assert [line.split()[:2] + [line.split()[3]] for line in out[1:5]] == [
        ["sqlite_backup", parts[0], "delete"], ["sqlite_backup", parts[1], "delete"],
        ["sqlite_backup", parts[2], "keep"], ["sqlite_backup", parts[3], "keep"]]
    assert out[4].endswith("newest verified backup; daily " + parts[3])
    assert out[-1] == "dry run: 2 to delete, 2 to keep; nothing deleted"
    as_json = json.loads(cli(config, "prune", "--dry-run", "--json").stdout)
    assert as_json["dry_run"] and as_json["to_delete"] == 2 and len(as_json["rows"]) == 4
    assert len(catalog_entries(settings)) == 4

    done = cli(config, "prune")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert sum(line.startswith(f"deleted sqlite_backup {parts[0]} captured ") for line in lines) == 2  # both dests
    assert any(line.split()[:2] == ["sqlite_backup", parts[1]] and line.split()[3] == "deleted" for line in lines)
    assert lines[-1] == "deleted 2, kept 2, failed 0"
    assert S3_SECRET not in done.stdout + done.stderr
    assert [r["partition"] for r in json.loads(cli(config, "list", "--json").stdout)["captures"]] == parts[2:]

    data["destinations"][1]["bucket"] = "no-such-bucket-here"
    config.write_text(yaml.safe_dump(data))
    refused = cli(config, "prune")
    assert refused.returncode == 1 and refused.stdout == ""
    assert refused.stderr.strip().splitlines() == [
        "erp-backup: error: refusing to prune: 1 destination(s) could not be read, so the plan would miss their "
        "backups (offsite: destination offsite: S3 bucket 'no-such-bucket-here' does not exist)"]
    data["retention"] = {"sqlite_backup": {"keep_dayly": 2}}
    config.write_text(yaml.safe_dump(data))
    assert cli(config, "prune").stderr.strip() == (f"erp-backup: error: config {config}: retention.sqlite_backup."
                                                   "keep_dayly: unknown key (did you mean 'keep_daily'?)")


def test_retention_settings_default_to_the_original_strategy_and_refuse_unknown_keys(tmp_path: Path,
                                                                                    age_identity: Any) -> None:
    from datetime import timedelta as td

    from erp_backup_pipeline.core.retention import DEFAULT_POLICIES
    from erp_backup_pipeline.errors import ConfigError

    settings = make_settings(tmp_path, age_identity)
    assert settings.retention.policies() == DEFAULT_POLICIES
    custom = make_settings(tmp_path, age_identity, retention={
        "sqlite_backup": {"keep_daily": 14, "keep_within": "2w", "long_term": {"books": 10}}})
    policy = custom.retention.policies()["sqlite_backup"]
    assert (policy.keep_daily, policy.keep_monthly, policy.keep_within) == (14, 0, td(days=14))  # replaces the default
    assert custom.retention.postgres_dump == DEFAULT_POLICIES["postgres_dump"]
    for bad, message in [({"sqlite": {}}, "retention.sqlite: unknown key (did you mean 'sqlite_backup'?)"),
                         ({"uploads_snapshot": {"keep_dayly": 3}},
                          "retention.uploads_snapshot.keep_dayly: unknown key (did you mean 'keep_daily'?)"),
                         ({"redis_snapshot": {"keep_daily": -1}},
                          "retention.redis_snapshot.keep_daily: Input should be greater than or equal to 0"),
                         ({"config_archive": {"cadence": "0d"}}, "retention.config_archive: cadence must be positive")]:
        with pytest.raises(ConfigError) as err:
            make_settings(tmp_path, age_identity, retention=bad)
        assert str(err.value) == f"config test: {message}"
    assert settings.retention.orphan_grace_hours == 48
    for bad_hours, message in [(12, "Input should be greater than or equal to 24"),
                               ("two days", "Input should be a valid integer, unable to parse string as an integer"),
                               (1.5, "Input should be a valid integer, got a number with a fractional part")]:
        with pytest.raises(ConfigError) as err:
            make_settings(tmp_path, age_identity, retention={"orphan_grace_hours": bad_hours})
        assert str(err.value) == f"config test: retention.orphan_grace_hours: {message}"
    assert make_settings(tmp_path, age_identity, retention={"orphan_grace_hours": 72}).retention.policies() == \
        DEFAULT_POLICIES


# --- artifacts without a manifest (a run stopped between upload and manifest) -----------------------------------

def orphan(settings: Any, source: str, partition: str, now: datetime | None = None) -> Capture:
    """What a run stopped between the upload's commit and the manifest leaves: the artifact, committed on every
    destination, and no manifest."""
    capture = new_capture(settings, source, partition, now=now)
    for stage in STAGES:
        capture = stage(settings, capture)
    shutil.rmtree(capture.workdir)
    return capture


def pruned_by_hand(settings: Any, m: Manifest, names: tuple[str, ...]) -> None:
    """What a prune stopped between a capture's manifest and its artifact leaves on ``names``: the capture recorded
    as pruned in its chain ledger first, its manifest and signature deleted, its artifact still there. (Deleting a
    signed manifest without the ledger saying so is someone else's deletion: a chain finding that holds prune.)"""
    [entry] = [e for e in catalog_entries(settings, m.source) if e.manifest.key == m.key]
    assert commit.record_pruned(settings, m.source, {entry.manifest.sequence: entry.sha256}) == {}
    for dest in build_destinations(settings):
        if dest.name in names:
            dest.delete(m.key)
            dest.delete(m.key + SIGNATURE_SUFFIX)


def orphan_rows(result: Any) -> list[tuple[str, str, str]]:
    """(destination, action, reason) of each artifact without a manifest, by destination."""
    return sorted((o.destination, action, reason) for o, action, reason in result.orphans)


def test_an_artifact_without_a_manifest_is_swept_once_past_the_grace_period_never_before(
        tmp_path: Path, demo_sqlite: Path, age_identity: Any, moto_server: Any, bucket: str,
        spy_deletes: list[tuple[str, str]]) -> None:
    settings = both(tmp_path, age_identity, moto_server, bucket, sources={"sqlite": {"path": str(demo_sqlite)}})
    parts = days_back(3)
    good = [run_backup(settings, "sqlite_backup", p) for p in parts[:2]]
    left = orphan(settings, "sqlite_backup", parts[2])
    key = left.artifact["key"]
    assert key == f"{settings.prefix}/sqlite_backup/{parts[2]}/{left.stamp}.sqlite3.zst.age"
    before = keys(settings)
    assert all(key in listed for listed in before.values())
    assert [e.manifest.partition for e in catalog_entries(settings)] == parts[:2]
    now = datetime.now(UTC)

    # young: a run may still be writing its manifest; kept on both destinations, in the dry run and for real
    for dry_run, later in ((True, timedelta(0)), (False, timedelta(hours=1)), (False, timedelta(hours=47))):
        result = prune(settings, now=now + later, dry_run=dry_run, log=pytest.fail)
        rows = orphan_rows(result)
        assert [(d, a) for d, a, _ in rows] == [("local", "keep"), ("offsite", "keep")]
        assert all(r.startswith(f"artifact without a manifest on {d}, captured ") and r.endswith(
            "kept for retention.orphan_grace_hours (48 h), a run may still write its manifest") for d, _, r in rows)
    assert keys(settings) == before and spy_deletes == []
    row = next(r for r in result.as_rows() if r["partition"] == parts[2])
    assert (row["source"], row["action"], row["captured_at"]) == ("sqlite_backup", "keep", left.captured_at)

    # past the grace period: the dry run says it would go, and deletes nothing
    dry = prune(settings, now=now + timedelta(days=3), dry_run=True, log=pytest.fail)
    assert [(d, a) for d, a, _ in orphan_rows(dry)] == [("local", "delete"), ("offsite", "delete")]
    reason = orphan_rows(dry)[0][2]
    assert reason.startswith("artifact without a manifest on local (a run stopped between upload and manifest): no "
                             "backup, captured 3.0 days ago, older than retention.orphan_grace_hours (48 h)"), reason
    assert dry.count("delete") == 2 + len(dry.plan.delete) and keys(settings) == before

    # for real: the artifact goes from both destinations, one line each, nothing else is touched
    lines: list[str] = []
    result = prune(settings, now=now + timedelta(days=3), dry_run=False, log=lines.append)
    assert [(d, a) for d, a, _ in orphan_rows(result)] == [("local", "deleted"), ("offsite", "deleted")]
    assert sorted(spy_deletes) == [("local", key), ("offsite", key)]
    assert sorted(lines) == sorted(f"deleted sqlite_backup {parts[2]} artifact {key} (no manifest) from {d}: "
                                   f"{r}" for d, _, r in orphan_rows(result))
    assert not any(S3_SECRET in line for line in lines)
    assert {n: [k for k in listed if k != key] for n, listed in before.items()} == keys(settings)
    assert [r["action"] for r in result.as_rows() if r["partition"] == parts[2]] == ["deleted", "deleted"]
    assert result.count("deleted") == 2 and result.count("failed") == 0
    for m in good:
        assert verify_backup(settings, "sqlite_backup", m.partition)["ok"]
    assert prune(settings, now=now + timedelta(days=3), dry_run=False, log=pytest.fail).orphans == []


def test_the_sweep_deletes_only_exact_artifact_names_of_configured_sources_that_nothing_names(
        tmp_path: Path, age_identity: Any, moto_server: Any, bucket: str, spy_deletes: list[tuple[str, str]]) -> None:
    up = tmp_path / "uploads"
    settings = both(tmp_path, age_identity, moto_server, bucket, sources={"uploads": {"path": str(up)}},
                    state_dir=str(tmp_path / "state"), retention={"uploads_snapshot": {"keep_daily": 30}})
    m = uploads_history(settings, up, [{"base.pdf": b"base " * 200}, {"more.pdf": b"more " * 200}, {}])
    assert m[1].facts["depends_on"] == [m[0].artifact_key]
    dests = {d.name: d for d in build_destinations(settings)}
    # d0's manifest is gone everywhere, d2's from local only: their artifacts have no manifest beside them there
    pruned_by_hand(settings, m[0], ("local", "offsite"))
    pruned_by_hand(settings, m[2], ("local",))
    # look-alikes that are not our artifacts, and an artifact of a source this configuration does not back up
    stamp = m[2].stamp.split("-")[0]
    folder = f"{settings.prefix}/uploads_snapshot/{m[2].partition}"
    strangers = [f"{folder}/{stamp}.tar.zst.age.bak", f"{folder}/{stamp}.tar.zst", f"{folder}/{stamp[:15]}Z.tar.zst.age",
                 f"{folder}/notes.txt", f"{folder}/sub/{stamp}.tar.zst.age", f"other/uploads_snapshot/x/{stamp}.tar.zst.age",
                 f"{settings.prefix}/redis_snapshot/{m[2].partition}/{stamp}.rdb.zst.age",
                 f"{settings.prefix}/uploads_snapshot/{stamp}.tar.zst.age"]
    for name in strangers:
        for dest in dests.values():
            put_bytes(dest, name, b"not ours")
    before = keys(settings)
    now = datetime.now(UTC) + timedelta(days=30)
    spy_deletes.clear()  # the setup's own deletions

    result = prune(settings, now=now, dry_run=False, log=pytest.fail)
    rows = {(o.destination, o.key): (action, reason) for o, action, reason in result.orphans}
    assert sorted(rows) == sorted([("local", m[0].artifact_key), ("offsite", m[0].artifact_key),
                                   ("local", m[2].artifact_key)])
    assert m[2].facts["depends_on"] == sorted([m[0].artifact_key, m[1].artifact_key])
    for name in ("local", "offsite"):  # kept snapshots depend on d0 (the newest is named): their content is there
        assert rows[name, m[0].artifact_key] == (
            "keep", f"artifact without a manifest on {name}, but uploads_snapshot {m[2].partition} (captured "
                    f"{m[2].captured_at}) depends on it")
    assert rows["local", m[2].artifact_key] == (
        "keep", f"artifact without a manifest on local, but the manifest on offsite names it (uploads_snapshot "
                f"{m[2].partition} captured {m[2].captured_at})")
    assert keys(settings) == before and spy_deletes == []

    # once no manifest names d0 (d1 and d2 gone too), the uploads state still does: kept; an unreadable state keeps
    # it too
    for later in m[1:]:
        pruned_by_hand(settings, later, ("local", "offsite"))
        for name in ("local", "offsite"):
            dests[name].delete(later.artifact_key)
    state_file = tmp_path / "state" / "uploads_snapshot.json"
    state = load_state(state_file)
    assert m[0].artifact_key in state["blobs"].values()
    rows = {(o.destination, o.key): (a, r) for o, a, r in prune(settings, now=now, log=pytest.fail).orphans}
    assert rows["offsite", m[0].artifact_key] == (
        "keep", f"artifact without a manifest on offsite, but the uploads state {state_file} names it")
    state_file.write_text("{torn")
    rows = {(o.destination, o.key): (a, r) for o, a, r in prune(settings, now=now, log=pytest.fail).orphans}
    assert rows["offsite", m[0].artifact_key] == (
        "keep", f"artifact without a manifest on offsite, but the uploads state {state_file} cannot be read (not an "
                "uploads state)")
    # a state that no longer names it: it goes, from both destinations; the strangers and every manifest stay
    save_state(state_file, {"files": {}, "blobs": {}})
    spy_deletes.clear()
    result = prune(settings, now=now, dry_run=False, log=lambda line: None)
    assert sorted((o.destination, o.key, a) for o, a, _ in result.orphans) == [
        ("local", m[0].artifact_key, "deleted"), ("offsite", m[0].artifact_key, "deleted")]
    assert sorted(spy_deletes) == [("local", m[0].artifact_key), ("offsite", m[0].artifact_key)]
    ours = sorted([*(k for k in strangers if k.startswith(settings.prefix + "/")),
                   f"{settings.prefix}/uploads_snapshot/{LEDGER_NAME}"])
    assert keys(settings) == {name: ours for name in ("local", "offsite")}
    assert all(dest.exists(k) for dest in dests.values() for k in strangers)


def test_an_artifact_without_a_manifest_under_object_lock_is_kept_until_the_lock_ends(
        tmp_path: Path, demo_sqlite: Path, age_identity: Any, moto_server: Any, s3_client: Any) -> None:
    lock_bucket = f"erp-lock-{uuid.uuid4().hex[:12]}"
    s3_client.create_bucket(Bucket=lock_bucket, CreateBucketConfiguration={"LocationConstraint": "eu-central-1"},
                            ObjectLockEnabledForBucket=True)
    settings = make_settings(tmp_path, age_identity, sources={"sqlite": {"path": str(demo_sqlite)}},
                             destinations=[s3_destination(moto_server, lock_bucket,
                                                          object_lock={"mode": "GOVERNANCE", "min_days": 1})])
    left = orphan(settings, "sqlite_backup", days_back(1)[0])
    key = left.artifact["key"]
    [dest] = build_destinations(settings)
    assert isinstance(dest, S3Destination)
    until = dest.lock(key)
    assert until is not None and until.startswith("locked until ")  # sqlite_backup keeps 30 days: locked 30 days

    later = datetime.now(UTC) + timedelta(days=3)
    dry = prune(settings, now=later, dry_run=True, log=pytest.fail)
    assert orphan_rows(dry) == [("offsite", "keep", f"artifact without a manifest on offsite: {until}")]
    lines: list[str] = []
    result = prune(settings, now=later, dry_run=False, log=lines.append)
    assert orphan_rows(result) == [("offsite", "keep", f"artifact without a manifest on offsite: {until}")]
    assert lines == [] and dest.exists(key)

    # the lock ends (an administrator, bypassing GOVERNANCE): every version goes, no delete marker hides anything
    obj = dest.object_key(key)
    for v in s3_client.list_object_versions(Bucket=lock_bucket, Prefix=obj).get("Versions", []):
        s3_client.put_object_retention(Bucket=lock_bucket, Key=obj, VersionId=v["VersionId"],
                                       BypassGovernanceRetention=True,
                                       Retention={"Mode": "GOVERNANCE",
                                                  "RetainUntilDate": datetime.now(UTC) - timedelta(days=1)})
    result = prune(settings, now=later, dry_run=False, log=lines.append)
    assert [(d, a) for d, a, _ in orphan_rows(result)] == [("offsite", "deleted")]
    listed = s3_client.list_object_versions(Bucket=lock_bucket, Prefix=obj)
    assert listed.get("Versions", []) == [] and listed.get("DeleteMarkers", []) == []


def test_a_manifest_is_never_written_for_an_artifact_that_is_gone(
        tmp_path: Path, demo_sqlite: Path, age_identity: Any, moto_server: Any, bucket: str) -> None:
    """A run whose manifest step is re-executed days later, after prune swept its artifact as one without a
    manifest: the manifest is written only where the artifact still is; a required destination without it fails
    the run with one line."""
    settings = both(tmp_path, age_identity, moto_server, bucket, sources={"sqlite": {"path": str(demo_sqlite)}})
    capture = new_capture(settings, "sqlite_backup", days_back(1)[0])
    for stage in STAGES:
        capture = stage(settings, capture)
    local = LocalDestination(tmp_path / "backups")
    local.delete(capture.artifact["key"])
    with pytest.raises(DestinationError) as err:
        stage_manifest(settings, capture)
    assert str(err.value) == (
        f"sqlite_backup {capture.partition}: not backed up on every required destination (local: manifest: "
        f"{local.uri(capture.artifact['key'])} is gone (an artifact without a manifest is swept by prune after "
        "retention.orphan_grace_hours))")
    held = {e.manifest.artifact_key: e.held_by for e in catalog_entries(settings)}
    assert held == {capture.artifact["key"]: ["offsite"]}
