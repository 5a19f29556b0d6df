"""Forged catalogs: what a writer at ONE destination (or at both) can do to the files there, run against the
real product with a local destination and moto's S3 server ("offsite").

The attacker can add, replace and delete objects on the destination and knows the public age recipient; it has
neither the manifest signing key nor the age identity. After each attack:

- prune (dry run and for real, in the core and through the CLI) refuses in ONE line naming the file and the
  reason, or acts on genuine backups only: nothing the honest plan keeps is deleted, on any destination (full
  key listings with every object's sha256 compared before and after);
- ``erp-backup list --json`` lists every forged file under "rejected" with its reason, and only the genuine
  captures under "captures"; the table shows the forged files as rejected;
- verify, restore, drill and recover never use a forged file: they refuse in one line naming the file and the
  reason, or use the genuine capture (the restored database equals what the genuine backup captured, never the
  attacker's).

Only the variants marked "defense in depth" sign with the tests' signing key (as if it had leaked), to check the
checks that bind a signed manifest to its place.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import re
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import dagster as dg
import pyrage
import pytest
import yaml

from erp_backup_pipeline.cli import main
from erp_backup_pipeline.core import catalog
from erp_backup_pipeline.core.chain import LEDGER_NAME, digest
from erp_backup_pipeline.core.codecs import compressor
from erp_backup_pipeline.core.manifest import MANIFEST_SUFFIX, Manifest
from erp_backup_pipeline.core.pipeline import run_backup
from erp_backup_pipeline.core.prune import PruneRefused, prune
from erp_backup_pipeline.core.signing import SIGNATURE_SUFFIX, load_signer
from erp_backup_pipeline.errors import VERIFICATION
from erp_backup_pipeline.settings import Settings, load_settings
from erp_backup_pipeline_tests.conftest import s3_destination, signing_key, signing_section
from erp_backup_pipeline_tests.faults.tools import local_files, s3_objects

BERLIN = ZoneInfo("Europe/Berlin")
SOURCE = "sqlite_backup"
S3_ROOT = "site-a/"  # the offsite destination's own prefix inside the bucket (conftest.s3_destination)
BOTH = ("local", "offsite")
UNSIGNED = r"^unsigned: no signature beside it$"
EDITED = r"^signature does not match the manifest \(edited after signing\)$"
MISPLACED = r"^misplaced: "
REFUSAL = re.compile(r"^refusing to prune: (\d+) file\(s\) or chain finding\(s\) on the destinations are not "
                     r"authenticated, first (.+?); `erp-backup list` shows every one")
ERROR = "erp-backup: error: "

Listing = dict[str, dict[str, str]]  # destination -> key -> sha256 of its bytes


# --- the world: genuine monthly backups on two destinations -----------------------------------------------------


def monthly_partitions(months: int = 5) -> list[str]:
    """The first day of each of the ``months`` months before this one, and today (Europe/Berlin), oldest first."""
    today = datetime.now(BERLIN).date()
    firsts: list[date] = []
    month = today.replace(day=1)
    for _ in range(months):
        month = (month - timedelta(days=1)).replace(day=1)
        firsts.append(month)
    return [d.isoformat() for d in sorted(firsts)] + [today.isoformat()]


def fingerprint(path: Path) -> str:
    """The content of a SQLite database (its SQL dump), hashed: equal databases, equal fingerprints."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return hashlib.sha256("\n".join(conn.iterdump()).encode()).hexdigest()
    finally:
        conn.close()


@dataclass
class World:
    tmp: Path
    config: Path
    settings: Settings
    s3: Any
    bucket: str
    db: Path
    recipient: str  # the public age recipient: the attacker has it
    partitions: list[str]  # of the genuine captures, oldest first
    genuine: dict[str, Manifest]  # partition -> its genuine capture
    content: dict[str, str]  # partition -> fingerprint of the database that capture holds
    honest_delete: set[str]  # manifest keys the honest plan (no attack) deletes
    before: Listing = field(default_factory=dict)  # every object on every destination before the attack
    runs: int = 0

    @property
    def prefix(self) -> str:
        return self.settings.prefix

    @property
    def backups(self) -> Path:
        return self.tmp / "backups"

    def folder(self, partition: str) -> str:
        return f"{self.prefix}/{SOURCE}/{partition}"

    def newest(self) -> Manifest:
        return self.genuine[self.partitions[-1]]

    # what the attacker does on one destination
    def put(self, where: str, key: str, data: bytes) -> None:
        if where == "local":
            path = self.backups / key
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        else:
            self.s3.put_object(Bucket=self.bucket, Key=S3_ROOT + key, Body=data)

    def read(self, where: str, key: str) -> bytes:
        if where == "local":
            return (self.backups / key).read_bytes()
        return bytes(self.s3.get_object(Bucket=self.bucket, Key=S3_ROOT + key)["Body"].read())

    def remove(self, where: str, key: str) -> None:
        if where == "local":
            (self.backups / key).unlink()
        else:
            self.s3.delete_object(Bucket=self.bucket, Key=S3_ROOT + key)

    def listing(self) -> Listing:
        return {"local": local_files(self.backups),
                "offsite": {k.removeprefix(S3_ROOT): v for k, v in s3_objects(self.s3, self.bucket).items()}}

    def target(self, name: str) -> Path:
        self.runs += 1
        return self.tmp / "restored" / f"{self.runs}-{name}"


def places(where: str) -> tuple[str, ...]:
    return BOTH if where == "both" else (where,)


def capture_keys(m: Manifest) -> list[str]:
    """Every object of a capture: manifest, signature, artifact."""
    return [m.key, m.key + SIGNATURE_SUFFIX, m.artifact_key]


@pytest.fixture
def world(tmp_path: Path, demo_sqlite: Path, age_identity: tuple[Path, str], moto_server: Any, bucket: str,
          s3_client: Any) -> World:
    """Six genuine captures of the SQLite ERP (the first of each of the last five months, and today) on the local
    destination and on S3; retention keeps three monthly backups, so the honest plan deletes the three oldest."""
    data: dict[str, Any] = {
        "staging_dir": str(tmp_path / "staging"),
        "state_dir": str(tmp_path / "state"),
        "encryption": {"codec": "age", "recipients": [age_identity[1]], "identity_file": str(age_identity[0])},
        "signing": signing_section(),
        "destinations": [{"type": "local", "name": "local", "path": str(tmp_path / "backups")},
                         s3_destination(moto_server, bucket)],
        "sources": {"sqlite": {"path": str(demo_sqlite)}},
        "retention": {SOURCE: {"keep_monthly": 3, "keep_within": "0d"}},
    }
    config = tmp_path / "erp-backup.yaml"
    config.write_text(yaml.safe_dump(data))
    config.chmod(0o600)
    settings = load_settings(config)
    partitions = monthly_partitions()
    genuine: dict[str, Manifest] = {}
    content: dict[str, str] = {}
    for partition in partitions:
        with contextlib.closing(sqlite3.connect(demo_sqlite)) as conn, conn:
            conn.execute("INSERT INTO customers(name, email, city, created_at) VALUES (?, ?, 'Passau', ?)",
                         (f"genuine {partition}", f"genuine-{partition}@example.com", partition))
        content[partition] = fingerprint(demo_sqlite)
        genuine[partition] = run_backup(settings, SOURCE, partition)
    honest = prune(settings, now=datetime.now(UTC), dry_run=True, log=lambda _: None)
    w = World(tmp_path, config, settings, s3_client, bucket, demo_sqlite, age_identity[1], partitions, genuine,
              content, {e.manifest.key for e, _ in honest.plan.delete})
    assert w.honest_delete == {genuine[p].key for p in partitions[:3]}, "the honest plan deletes the three oldest"
    w.before = w.listing()
    assert all(len(w.before[d]) == 3 * len(partitions) + 1 for d in BOTH)  # 3 objects per capture + the ledger
    return w


# --- the CLI, in process ------------------------------------------------------------------------------------------


def cli(world: World, *argv: str) -> tuple[int, str, str]:
    """``erp-backup --config F ARGV``: exit status, stdout, stderr. An exception escaping main is a traceback the
    operator would see: the test fails on it."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = main(["--config", str(world.config), *argv])
        except SystemExit as exc:  # argparse's own usage errors
            rc = int(exc.code or 0)
        except Exception as exc:  # noqa: BLE001 - anything else reaches the user as a traceback
            pytest.fail(f"erp-backup {' '.join(argv)}: a traceback instead of one line: {type(exc).__name__}: "
                        f"{str(exc)[:300]}")
    return rc, out.getvalue(), err.getvalue()


def one_error_line(rc: int, err: str, what: str, expected: int = 1) -> str:
    """The single error line of a failed command (exit status ``expected``), without the prefix."""
    assert rc == expected, f"{what}: exit status {rc}, expected {expected}: {err[-500:]}"
    assert "Traceback" not in err and "RecursionError" not in err, err[-2000:]
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith(ERROR), f"{what}: not one error line: {err[-2000:]}"
    return lines[0][len(ERROR):]


# --- what must hold after an attack ------------------------------------------------------------------------------


def assert_genuine_intact(world: World, touched: Iterable[tuple[str, str]] = ()) -> None:
    """Every object on every destination before the attack is still there with the same bytes (except what the
    attacker itself overwrote or deleted: ``touched``, (destination, key))."""
    now = world.listing()
    skip = set(touched)
    for dest in BOTH:
        lost = sorted(k for k, sha in world.before[dest].items() if (dest, k) not in skip and now[dest].get(k) != sha)
        assert not lost, f"genuine objects deleted or changed on {dest}: {lost}"


def assert_listed(world: World, rejected: dict[tuple[str, str], str], captures: dict[str, set[str]] | None = None
                  ) -> dict[str, Any]:
    """``list --json``: exactly these rejected files (destination, key) with a reason matching each regex, and the
    genuine captures (partition -> where they are authenticated; default: every one, on both). The table shows
    the rejected files too."""
    rc, out, err = cli(world, "list", "--json")
    assert rc == 0 and "Traceback" not in err, err
    found = json.loads(out)
    got = {(r["destination"], r["key"]): r["reason"] for r in found["rejected"]}
    assert set(got) == set(rejected), f"rejected: {sorted(got)}, expected {sorted(rejected)}"
    for where, pattern in rejected.items():
        assert re.search(pattern, got[where]), f"{where}: {got[where]!r} does not match {pattern!r}"
    expected = captures if captures is not None else {p: set(BOTH) for p in world.partitions}
    listed = {r["partition"]: (r["key"], set(r["destinations"])) for r in found["captures"]}
    assert len(found["captures"]) == len(expected), found["captures"]
    assert listed == {p: (world.genuine[p].artifact_key, held) for p, held in expected.items()}
    rc, table, err = cli(world, "list")
    assert rc == 0 and "Traceback" not in err, err
    if rejected:
        assert f"rejected: {len(rejected)} file(s) that are not trusted and never used:" in table, table
        for dest, key in rejected:
            assert f"  {dest}: {key}: {got[(dest, key)]}" in table.splitlines(), (dest, key, table)
    else:
        assert "rejected:" not in table
    return dict(found)


def assert_prune_held(world: World, rejected: dict[tuple[str, str], str], findings: int = 0) -> None:
    """prune (dry run and real; core and CLI) refuses in one line naming a rejected file and its reason, with the
    count of rejected files and chain findings, and changes nothing on any destination."""
    after_attack = world.listing()
    lines = {f"{d}: {k}: ": pattern for (d, k), pattern in rejected.items()}
    for dry_run in (True, False):
        logged: list[str] = []
        with pytest.raises(PruneRefused) as refused:
            prune(world.settings, now=datetime.now(UTC), dry_run=dry_run, log=logged.append)
        text = str(refused.value)
        match = REFUSAL.match(text)
        assert match and "\n" not in text, text
        assert int(match[1]) == len(rejected) + findings, text
        first = match[2]
        named = [ln for ln in lines if first.startswith(ln)]
        assert named, f"the refusal does not name a rejected file first: {text}"
        reason, pattern = first[len(named[0]):], lines[named[0]]
        assert re.search(pattern, reason), f"the refusal's reason {reason!r} is not the rejection's ({pattern})"
        assert logged == []
    for argv in (("prune", "--dry-run"), ("prune",)):
        rc, out, err = cli(world, *argv)
        line = one_error_line(rc, err, " ".join(argv))
        assert REFUSAL.match(line), line
        assert out == ""
    assert world.listing() == after_attack, "prune changed a destination although it refused"


def assert_prune_honest(world: World, gone: Iterable[tuple[str, str]] = ()) -> None:
    """prune acts, and deletes nothing the honest plan keeps, on any destination: its dry run plans at most the
    honest deletions and the real run deletes nothing else (``gone``: what the attacker itself deleted)."""
    now = datetime.now(UTC)
    dry = prune(world.settings, now=now, dry_run=True, log=lambda _: None)
    assert {e.manifest.key for e, _ in dry.plan.delete} <= world.honest_delete, dry.plan.as_rows()
    done = prune(world.settings, now=now, dry_run=False, log=lambda _: None)
    assert not done.failed, done.failed
    assert {e.manifest.key for e, _ in done.deleted} <= world.honest_delete
    deleted = {m.key for m in world.genuine.values() if m.key in world.honest_delete}
    kept = [m for m in world.genuine.values() if m.key not in deleted]
    listing = world.listing()
    skip = set(gone)
    for m in kept:
        for dest in BOTH:
            for key in capture_keys(m):
                if (dest, key) not in skip:
                    assert listing[dest].get(key) == world.before[dest][key], f"{dest}: {key} (kept by the honest plan)"


def assert_honest_plan_after_cleanup(world: World, forged: Iterable[tuple[str, str]]) -> None:
    """Once the forged files are removed, prune runs and deletes exactly what the honest plan deletes, from both
    destinations: the same backups survive with and without the forged files having been there."""
    for where, key in forged:
        world.remove(where, key)
    done = prune(world.settings, now=datetime.now(UTC), dry_run=False, log=lambda _: None)
    assert {e.manifest.key for e, _ in done.deleted} == world.honest_delete and not done.failed
    listing = world.listing()
    for m in world.genuine.values():
        for dest in BOTH:
            for key in capture_keys(m):
                if m.key in world.honest_delete:
                    assert key not in listing[dest]
                else:
                    assert listing[dest].get(key) == world.before[dest][key]


def assert_uses_genuine(world: World, partition: str) -> None:
    """verify, restore, drill and recover of the partition use its genuine capture: the restored database is the
    one that capture holds."""
    m = world.genuine[partition]
    rc, out, err = cli(world, "verify", "sqlite", "--partition", partition, "--json")
    assert rc == 0, err
    assert json.loads(out)["captured_at"] == m.captured_at
    target = world.target("restore.sqlite3")
    rc, out, err = cli(world, "restore", "sqlite", "--partition", partition, "--to", str(target))
    assert rc == 0, err
    assert fingerprint(target) == world.content[partition]
    rc, out, err = cli(world, "drill", "sqlite", "--partition", partition)
    assert rc == 0, err
    assert out.startswith(f"OK {SOURCE} {partition} captured {m.captured_at}:"), out
    root = world.target("recover")
    rc, out, err = cli(world, "recover", "--date", partition, "--to", str(root))
    assert rc == 0, err
    assert fingerprint(root / "sqlite" / world.db.name) == world.content[partition]


def assert_refused(world: World, partition: str, rejected: dict[tuple[str, str], str]) -> None:
    """verify, restore, drill and recover of a partition that holds only forged files refuse, each in one line
    that names a rejected file and why; nothing is restored."""
    restore_target, recover_root = world.target("restore.sqlite3"), world.target("recover")
    for argv in (("verify", "sqlite", "--partition", partition),
                 ("restore", "sqlite", "--partition", partition, "--to", str(restore_target)),
                 ("drill", "sqlite", "--partition", partition),
                 ("recover", "--date", partition, "--to", str(recover_root))):
        rc, out, err = cli(world, *argv)
        line = one_error_line(rc, err, " ".join(argv))
        named = [(d, k) for d, k in rejected if f"{d}: {k}: " in line]
        assert named, f"{argv[0]}: the refusal does not name the rejected file: {line}"
        reason = line.split(f"{named[0][0]}: {named[0][1]}: ", 1)[1]
        assert re.search(rejected[named[0]].rstrip("$"), reason), f"{argv[0]}: no reason: {line}"
    assert not restore_target.exists() and not recover_root.exists()


# --- forging -----------------------------------------------------------------------------------------------------


def raw_manifest(world: World, m: Manifest, where: str = "local") -> dict[str, Any]:
    """A genuine manifest's JSON, as the attacker reads it on the destination."""
    return dict(json.loads(world.read(where, m.key)))


def dump(raw: dict[str, Any]) -> bytes:
    return (json.dumps(raw, indent=2, sort_keys=True) + "\n").encode()


def relocate(world: World, raw: dict[str, Any], partition: str, stamp: str, captured_at: str) -> str:
    """Point a manifest's JSON at ``partition`` and ``stamp``; the key its content puts it at."""
    ext = raw["artifact_key"].rsplit("/", 1)[1].split(".", 1)[1]
    raw.update(partition=partition, captured_at=captured_at, finished_at=captured_at,
               artifact_key=f"{world.folder(partition)}/{stamp}.{ext}")
    return f"{world.folder(partition)}/{stamp}{MANIFEST_SUFFIX}"


def stamp_of(day: str, n: int) -> str:
    return f"{day.replace('-', '')}T020000000Z-{n:08x}"


def sign_bytes(data: bytes) -> bytes:
    """Defense in depth only: a signature by the real key (as if it had leaked)."""
    return load_signer(signing_key()).sign(data)


def encrypted_database(world: World, edit: str) -> tuple[bytes, bytes, bytes, dict[str, int]]:
    """Another SQLite database (the ERP's schema, the attacker's rows), compressed with zstd and encrypted to the
    PUBLIC recipient: plaintext, compressed, ciphertext, row counts."""
    path = world.tmp / "attacker.sqlite3"
    path.unlink(missing_ok=True)
    with contextlib.closing(sqlite3.connect(world.db)) as src, contextlib.closing(sqlite3.connect(path)) as dst:
        src.backup(dst)
    with contextlib.closing(sqlite3.connect(path)) as conn, conn:
        conn.execute("PRAGMA journal_mode=DELETE")
        conn.execute(edit)
        counts = {t: conn.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0] for (t,) in conn.execute(
            "SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%' ORDER BY name")}
    plain = path.read_bytes()
    out = io.BytesIO()
    compressor("zstd").compress(io.BytesIO(plain), out)
    packed = out.getvalue()
    cipher = pyrage.encrypt(packed, [pyrage.x25519.Recipient.from_str(world.recipient)])
    return plain, packed, cipher, counts


ATTACKER_ROWS = "UPDATE customers SET name = 'ATTACKER ' || id, email = 'attacker@evil.invalid'"


def consistent_forgery(world: World, partition: str, stamp: str, captured_at: str, replacing: bool = False
                       ) -> tuple[str, bytes, bytes]:
    """A fully consistent unsigned manifest for the attacker's database, copied from the newest genuine manifest
    with sizes and sha256s fixed, even the chain continued (or, ``replacing`` the newest, its place in the chain
    kept): key, manifest, artifact."""
    plain, packed, cipher, counts = encrypted_database(world, ATTACKER_ROWS)
    newest = world.newest()
    raw = raw_manifest(world, newest)
    key = relocate(world, raw, partition, stamp, captured_at)
    sizes = {"dump": plain, "compress": packed, "encrypt": cipher}
    for stage in raw["chain"]:
        stage["bytes"], stage["sha256"] = len(sizes[stage["stage"]]), hashlib.sha256(sizes[stage["stage"]]).hexdigest()
    raw.update(artifact_bytes=len(cipher), artifact_sha256=hashlib.sha256(cipher).hexdigest())
    if not replacing:
        raw.update(sequence=newest.sequence + 1, previous=digest(world.read("local", newest.key)))
    raw["facts"]["row_counts"] = counts
    raw["verify"].update(rows=sum(counts.values()), tables=len(counts), ok=True)
    return key, dump(raw), cipher


def later(captured_at: str, seconds: int) -> str:
    return (datetime.fromisoformat(captured_at) + timedelta(seconds=seconds)).isoformat()


# --- 1. 42 future-dated (and far-past) manifests steer retention ---------------------------------------------------


@pytest.mark.parametrize("where", ["local", "offsite", "both"])
def test_42_forged_manifests_delete_no_monthly_backup(world: World, where: str) -> None:
    """Attack 1: 42 small JSON manifests with future dates (and far-past ones), written into one destination (or
    both), once made the ordinary prune delete the real monthly backups from the local AND the off-site copy."""
    template = raw_manifest(world, world.newest())
    month = datetime.now(BERLIN).date().replace(day=1)
    days = []
    for _ in range(32):  # the next 32 months: every monthly bucket of the policy, and more
        month = (month + timedelta(days=32)).replace(day=1)
        days.append(month.isoformat())
    days += [date(1990 + i, 1, 1).isoformat() for i in range(10)]  # and ten far in the past
    assert len(days) == 42
    rejected = {}
    for n, day in enumerate(days):
        raw = json.loads(json.dumps(template))
        key = relocate(world, raw, day, stamp_of(day, n), f"{day}T02:00:00+00:00")
        for dest in places(where):
            world.put(dest, key, dump(raw))
            rejected[(dest, key)] = UNSIGNED
    assert_genuine_intact(world)
    assert_listed(world, rejected)
    assert_prune_held(world, rejected)
    assert_genuine_intact(world)
    assert_uses_genuine(world, world.partitions[-1])
    assert_honest_plan_after_cleanup(world, rejected)


# --- 2. an "older capture" of the newest partition that names the newest artifact -------------------------------


@pytest.mark.parametrize("signature", ["unsigned", "copied-signature"])
@pytest.mark.parametrize("where", ["local", "offsite"])
def test_older_capture_naming_the_newest_artifact_deletes_nothing(world: World, where: str, signature: str) -> None:
    """Attack 2: a forged manifest claiming to be an older capture of the newest partition, its artifact_key the
    newest real artifact (once: prune deleted "the partition's other capture", i.e. the genuine newest artifact)."""
    newest = world.newest()
    raw = raw_manifest(world, newest)
    key = f"{world.folder(newest.partition)}/{stamp_of(newest.partition, 1)}{MANIFEST_SUFFIX}"
    raw.update(captured_at=later(newest.captured_at, -3600), finished_at=later(newest.captured_at, -3600))
    assert raw["artifact_key"] == newest.artifact_key
    world.put(where, key, dump(raw))
    forged = [(where, key)]
    if signature == "copied-signature":
        world.put(where, key + SIGNATURE_SUFFIX, world.read(where, newest.key + SIGNATURE_SUFFIX))
        forged.append((where, key + SIGNATURE_SUFFIX))
    rejected = {(where, key): UNSIGNED if signature == "unsigned" else EDITED}
    assert_listed(world, rejected)
    assert_prune_held(world, rejected)
    assert_genuine_intact(world)
    assert_uses_genuine(world, newest.partition)
    assert_honest_plan_after_cleanup(world, forged)
    for dest in BOTH:
        assert all(k in world.listing()[dest] for k in capture_keys(newest)), "the newest genuine capture is gone"


# --- 3. another database, encrypted to the public recipient, with a consistent manifest ----------------------------


@pytest.mark.parametrize("mode", ["beside-unsigned", "beside-copied-signature", "in-place"])
@pytest.mark.parametrize("where", ["local", "offsite"])
def test_foreign_database_is_never_restored(world: World, where: str, mode: str) -> None:
    """Attack 3: a different SQLite database, zstd-compressed and age-encrypted to the PUBLIC recipient, with a fully
    consistent unsigned manifest (a genuine manifest's JSON with sizes, sha256s and even the chain fixed) as the
    newest capture; also with a genuine .sig copied beside it, and written over the newest genuine capture in place
    (its signature left there). Once: listed as the newest verified capture, verified, drilled, restored, recovered."""
    newest = world.newest()
    if mode == "in-place":  # the same key, stamp, capture time and chain place as the genuine one: it replaces it
        key, manifest, cipher = consistent_forgery(world, newest.partition, newest.stamp, newest.captured_at,
                                                   replacing=True)
        assert key == newest.key
        touched = {(where, newest.key), (where, newest.artifact_key)}
    else:
        key, manifest, cipher = consistent_forgery(world, newest.partition, stamp_of(newest.partition, 3),
                                                   later(newest.captured_at, 61))
        touched = set()
    raw = json.loads(manifest)
    world.put(where, raw["artifact_key"], cipher)
    world.put(where, key, manifest)
    if mode == "beside-copied-signature":
        world.put(where, key + SIGNATURE_SUFFIX, world.read(where, newest.key + SIGNATURE_SUFFIX))
    rejected = {(where, key): UNSIGNED if mode == "beside-unsigned" else EDITED}
    other = "offsite" if where == "local" else "local"
    captures = {p: set(BOTH) for p in world.partitions}
    if mode == "in-place":
        captures[newest.partition] = {other}
    found = assert_listed(world, rejected, captures)
    if mode == "in-place":  # the genuine capture is missing there now: said so
        assert any(where in g and newest.key in g for g in found["gaps"]), found["gaps"]
    assert_prune_held(world, rejected)
    assert_genuine_intact(world, touched)
    assert_uses_genuine(world, newest.partition)
    assert_genuine_intact(world, touched)


# --- 4. replay: a genuine capture copied under a newer partition ---------------------------------------------------


@pytest.mark.parametrize("mode", ["unchanged", "dates-edited"])
@pytest.mark.parametrize("where", ["local", "offsite"])
def test_replayed_capture_under_a_newer_partition_is_rejected(world: World, where: str, mode: str) -> None:
    """Attack 4: a genuine manifest + signature + artifact copied under a newer partition folder, unchanged
    (rejected: misplaced) or with its dates edited to the new partition (rejected: the signature no longer
    matches). Once: it passed as that day's verified backup."""
    old = world.genuine[world.partitions[-3]]
    day = (date.fromisoformat(world.partitions[-2]) + timedelta(days=1)).isoformat()  # no genuine capture there
    assert day not in world.genuine
    folder = world.folder(day)
    names = {k: k.rsplit("/", 1)[1] for k in capture_keys(old)}
    copies = {k: f"{folder}/{name}" for k, name in names.items()}
    for genuine_key, copy in copies.items():
        world.put(where, copy, world.read(where, genuine_key))
    key = copies[old.key]
    if mode == "dates-edited":
        raw = raw_manifest(world, old, where)
        assert relocate(world, raw, day, old.stamp, f"{day}T02:00:00+00:00") == key
        world.put(where, key, dump(raw))
        reason = EDITED
    else:
        reason = MISPLACED + re.escape(f"its content puts it at {old.key}") + "$"
    rejected = {(where, key): reason}
    assert_listed(world, rejected)
    assert_prune_held(world, rejected)
    assert_genuine_intact(world)
    assert_uses_genuine(world, old.partition)
    assert_refused(world, day, rejected)


# --- 5. one forged "unverified" manifest dated 2099-12-31 ----------------------------------------------------------


@pytest.mark.parametrize("where", ["local", "offsite"])
def test_forged_unverified_2099_manifest_holds_prune_in_one_line(world: World, where: str) -> None:
    """Attack 5: one forged unverified manifest dated 2099-12-31 once froze retention forever, silently ("the newest
    capture is not verified"). Now it is rejected, listed, and prune is held with one line naming it; removing it
    lets the honest plan run."""
    raw = raw_manifest(world, world.newest())
    day = "2099-12-31"
    key = relocate(world, raw, day, stamp_of(day, 5), f"{day}T23:00:00+00:00")
    raw["verify"] = {"ok": False, "error": "integrity_check failed"}
    raw["complete"] = False
    world.put(where, key, dump(raw))
    rejected = {(where, key): UNSIGNED}
    assert_listed(world, rejected)
    assert_prune_held(world, rejected)
    assert_genuine_intact(world)
    assert_honest_plan_after_cleanup(world, rejected)


# --- 6. every capture deleted from every destination ---------------------------------------------------------------


def test_deleting_every_capture_is_evident_in_the_catalog_and_the_dagster_audit(world: World) -> None:
    """Attack 6: every manifest, signature and artifact of the source deleted from every destination (once: nothing
    noticed; Dagster still showed the partitions, freshness passed). The catalog reports a rollback (the ledgers
    and this host name a newer sequence than anything present), and Dagster's audit asset fails its check
    ``catalog_agrees`` naming source, partitions and destinations."""
    from erp_backup_pipeline.orchestration.assets import BACKUP_ASSETS, build_backup_asset, source_spec
    from erp_backup_pipeline.orchestration.audit import AUDIT, CHECK, backup_catalog_audit
    from erp_backup_pipeline.orchestration.resources import BackupSettingsResource

    instance = dg.DagsterInstance.ephemeral()
    resources = {"backup_settings": BackupSettingsResource.pinned(str(world.config))}
    info = BACKUP_ASSETS[SOURCE]
    days = world.partitions[-2:]
    for day in days:  # the newest two partitions once more, through Dagster: what Dagster records
        done = dg.materialize([build_backup_asset(info), source_spec(info)], partition_key=day, instance=instance,
                              resources=resources, raise_on_error=False)
        assert done.success

    def audit() -> dg.AssetCheckEvaluation:
        result = dg.materialize([backup_catalog_audit], partition_key=days[-1], instance=instance, resources=resources,
                                raise_on_error=False)
        assert result.success, "the audit asset itself failed"
        [evaluation] = [e for e in result.get_asset_check_evaluations()
                        if e.check_name == CHECK and e.asset_key == dg.AssetKey(AUDIT)]
        return evaluation

    assert audit().passed, "the audit fails before any attack"
    for dest in BOTH:
        for key in sorted(world.listing()[dest]):
            if not key.endswith("/" + LEDGER_NAME):
                world.remove(dest, key)
    found = catalog.of(world.settings)
    assert found.entries == [] and found.rejected == []
    rollbacks = [f for f in found.findings if f.startswith(f"{SOURCE}: rollback")]
    assert rollbacks, f"no rollback finding in the catalog of every source: {found.findings}"
    rc, out, err = cli(world, "list", "--json")
    assert rc == 0, err
    assert any("rollback" in f for f in json.loads(out)["findings"]), out
    rc, out, err = cli(world, "list", "--source", SOURCE, "--json")
    assert rc == 0 and any(f"{SOURCE}: rollback on local" in f for f in json.loads(out)["findings"]), out
    evaluation = audit()
    assert not evaluation.passed, "the audit does not see that every backup is gone"
    text = (evaluation.description or "") + "\n" + str(evaluation.metadata["disagreements"].value)
    assert SOURCE in text
    for day in days:
        assert f"{SOURCE} {day}" in text, f"{day} is not named: {text}"
    for dest in BOTH:
        assert dest in text, f"destination {dest} is not named: {text}"
    with pytest.raises(PruneRefused, match=r"^refusing to prune: \d+ file\(s\) or chain finding\(s\)"):
        prune(world.settings, now=datetime.now(UTC), dry_run=True, log=lambda _: None)


# --- 7. JSON bombs and oversized manifests -------------------------------------------------------------------------

BOMB = b'{"source": "sqlite_backup", "facts": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"  # 200 KB, 100 000 deep


def big_manifest(world: World) -> bytes:
    raw = raw_manifest(world, world.newest())
    raw["facts"]["padding"] = "x" * (10 << 20)  # 10 MB
    return dump(raw)


@pytest.mark.parametrize("kind", ["bomb", "bomb-copied-signature", "10mb", "ledger-bomb", "ledger-10mb"])
@pytest.mark.parametrize("where", ["local", "offsite"])
def test_json_bomb_and_huge_manifest_get_one_line(world: World, where: str, kind: str) -> None:
    """Attack 7: a 200 KB deeply nested JSON manifest (once: a RecursionError traceback from list and prune) and a
    10 MB manifest; also the source's chain ledger replaced by either. One line each, the rest of the catalog still
    lists, prune is held."""
    newest = world.newest()
    if kind.startswith("ledger"):
        key = f"{world.prefix}/{SOURCE}/{LEDGER_NAME}"
        world.put(where, key, BOMB if kind == "ledger-bomb" else json.dumps({"body": "x" * (10 << 20)}).encode())
        reason = r"^not a chain ledger \(" if kind == "ledger-bomb" else r"^chain ledger is oversized$"
        touched = {(where, key)}
    else:
        key = f"{world.folder(newest.partition)}/{stamp_of(newest.partition, 7)}{MANIFEST_SUFFIX}"
        world.put(where, key, big_manifest(world) if kind == "10mb" else BOMB)
        if kind == "bomb-copied-signature":
            world.put(where, key + SIGNATURE_SUFFIX, world.read(where, newest.key + SIGNATURE_SUFFIX))
        reason = {"bomb": UNSIGNED, "bomb-copied-signature": EDITED,
                  "10mb": r"^oversized \(more than 1048576 bytes\)$"}[kind]
        touched = set()
    rejected = {(where, key): reason}
    assert_listed(world, rejected)
    assert_prune_held(world, rejected)
    assert_genuine_intact(world, touched)
    assert_uses_genuine(world, newest.partition)


# --- 8. partitions that are no real, current dates -----------------------------------------------------------------


@pytest.mark.parametrize("partition", ["2099-01-01", "2026-02-30", "latest", "02.12.2026"])
def test_cli_refuses_partitions_that_are_no_real_date(world: World, partition: str) -> None:
    """Attack 8: `backup`, `verify`, `restore` (and `drill`, `recover`) with a partition in the far future, a day
    that does not exist, a selector word or another date format: exit status 2, one line, nothing written."""
    state = local_files(world.tmp / "state")
    target, root = world.target("restore.sqlite3"), world.target("recover")
    for argv in (("backup", "sqlite", "--partition", partition),
                 ("verify", "sqlite", "--partition", partition),
                 ("restore", "sqlite", "--partition", partition, "--to", str(target)),
                 ("drill", "sqlite", "--partition", partition),
                 ("recover", "--date", partition, "--to", str(root))):
        rc, out, err = cli(world, *argv)
        line = one_error_line(rc, err, " ".join(argv), expected=2)
        assert re.match(rf"^--(partition|date) '?{re.escape(partition)}'? is (not a date|in the future)", line), line
        assert out == ""
    assert world.listing() == world.before
    assert local_files(world.tmp / "state") == state
    assert [p for p in (world.tmp / "staging").rglob("*") if p.is_file()] == []
    assert not target.exists() and not root.exists()
    assert not any(p.partition == partition for p in (e.manifest for e in catalog.of(world.settings).entries))


# --- 9. variants -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["copied", "moved"])
@pytest.mark.parametrize("where", ["local", "offsite"])
def test_signed_manifest_at_another_key_is_misplaced(world: World, where: str, mode: str) -> None:
    """Attack 9a: a genuine, validly signed manifest (with its signature) copied or moved to another key of its
    partition: rejected as misplaced; a move also leaves the capture missing there, which the catalog says."""
    m = world.genuine[world.partitions[-2]]
    key = f"{world.folder(m.partition)}/{stamp_of(m.partition, 9)}{MANIFEST_SUFFIX}"
    world.put(where, key, world.read(where, m.key))
    world.put(where, key + SIGNATURE_SUFFIX, world.read(where, m.key + SIGNATURE_SUFFIX))
    captures = {p: set(BOTH) for p in world.partitions}
    touched: set[tuple[str, str]] = set()
    if mode == "moved":
        for k in (m.key, m.key + SIGNATURE_SUFFIX):
            world.remove(where, k)
            touched.add((where, k))
        captures[m.partition] = set(BOTH) - {where}
    rejected = {(where, key): MISPLACED + re.escape(f"its content puts it at {m.key}") + "$"}
    found = assert_listed(world, rejected, captures)
    if mode == "moved":
        assert any(where in g and f"sequence {m.sequence} " in g for g in found["gaps"]), found["gaps"]
    assert_prune_held(world, rejected)
    assert_genuine_intact(world, touched)
    assert_uses_genuine(world, m.partition)


@pytest.mark.parametrize("where", ["local", "offsite", "both"])
def test_truncated_chain_is_evident_and_prunes_nothing_kept(world: World, where: str) -> None:
    """Attack 9b: the chain truncated: the two newest captures deleted (manifest, signature, artifact) from one
    destination, or from both. From one: a gap naming the destination and each sequence; prune deletes nothing the
    honest plan keeps and restores come from the other destination. From both: a rollback finding holds prune."""
    lost = [world.genuine[p] for p in world.partitions[-2:]]
    gone = {(dest, k) for dest in places(where) for m in lost for k in capture_keys(m)}
    for dest, key in gone:
        world.remove(dest, key)
    found = catalog.of(world.settings)
    if where != "both":
        other = "offsite" if where == "local" else "local"
        for m in lost:
            assert any(f"sequence {m.sequence} " in g and f"not on {where}" in g for g in found.gaps), found.gaps
        assert found.findings == [] and found.rejected == []
        assert_listed(world, {}, {p: (set(BOTH) if p not in {m.partition for m in lost} else {other})
                                  for p in world.partitions})
        for m in lost:
            assert_uses_genuine(world, m.partition)
        assert_genuine_intact(world, gone)
        assert_prune_honest(world, gone)
    else:
        assert any(f"{SOURCE}: rollback" in f for f in found.findings), found.findings
        assert_listed(world, {}, {p: set(BOTH) for p in world.partitions[:-2]})
        before = world.listing()
        with pytest.raises(PruneRefused, match=r"^refusing to prune: \d+ file\(s\) or chain finding\(s\) on the "
                                               r"destinations are not authenticated, first sqlite_backup: rollback"):
            prune(world.settings, now=datetime.now(UTC), dry_run=False, log=lambda _: None)
        rc, _, err = cli(world, "prune")
        assert "rollback" in one_error_line(rc, err, "prune")
        assert world.listing() == before
        assert_genuine_intact(world, gone)


@pytest.mark.parametrize("mode", ["signed-pointing-elsewhere", "other-manifest-copied-over", "artifact-swapped"])
@pytest.mark.parametrize("where", ["local", "offsite", "both"])
def test_manifest_bound_to_its_own_artifact(world: World, where: str, mode: str) -> None:
    """Attack 9c: a manifest whose sha256 matches a different artifact. "signed-pointing-elsewhere" (defense in depth,
    signed with the real key as if leaked): capture B's manifest edited to name capture A's artifact and sha256,
    re-signed: misplaced. "other-manifest-copied-over": A's genuine signed manifest and signature written over B's:
    misplaced. "artifact-swapped": A's artifact written over B's artifact (B's manifest intact): restore takes B
    from a destination where it is intact, or refuses in one line when none is."""
    a, b = world.genuine[world.partitions[-3]], world.genuine[world.partitions[-2]]
    touched: set[tuple[str, str]] = set()
    rejected: dict[tuple[str, str], str] = {}
    for dest in places(where):
        if mode == "signed-pointing-elsewhere":
            raw = raw_manifest(world, b, dest)
            raw.update(artifact_key=a.artifact_key, artifact_sha256=a.artifact_sha256, artifact_bytes=a.artifact_bytes)
            data = dump(raw)
            world.put(dest, b.key, data)
            world.put(dest, b.key + SIGNATURE_SUFFIX, sign_bytes(data))
            rejected[(dest, b.key)] = MISPLACED + re.escape(f"it names {a.artifact_key}, which is not beside it")
        elif mode == "other-manifest-copied-over":
            for suffix in ("", SIGNATURE_SUFFIX):
                world.put(dest, b.key + suffix, world.read(dest, a.key + suffix))
            rejected[(dest, b.key)] = MISPLACED + re.escape(f"its content puts it at {a.key}") + "$"
        else:
            world.put(dest, b.artifact_key, world.read(dest, a.artifact_key))
        touched |= {(dest, b.key), (dest, b.key + SIGNATURE_SUFFIX), (dest, b.artifact_key)}
    intact = set(BOTH) - set(places(where))
    if mode == "artifact-swapped":
        assert_listed(world, {})  # B's manifest is authentic: the swap shows only when the artifact is read
        if intact:
            assert_uses_genuine(world, b.partition)
        else:
            target = world.target("restore.sqlite3")
            for argv in (("verify", "sqlite", "--partition", b.partition),
                         ("restore", "sqlite", "--partition", b.partition, "--to", str(target))):
                rc, _, err = cli(world, *argv)
                line = one_error_line(rc, err, argv[0], expected=VERIFICATION.code)  # corrupt everywhere: 3
                assert re.match(r"^no intact copy of the artifact: local: .*checksum mismatch.*; offsite: .*checksum "
                                r"mismatch", line), line
            assert not target.exists()
        assert_genuine_intact(world, touched)
        assert_prune_honest(world, touched)
    else:
        captures = {p: set(BOTH) for p in world.partitions}
        if intact:
            captures[b.partition] = intact
        else:
            del captures[b.partition]
        assert_listed(world, rejected, captures)
        findings = len(catalog.of(world.settings).findings)
        if intact:
            assert findings == 0
            assert_uses_genuine(world, b.partition)
        else:  # B is gone everywhere: the capture after it has lost its link
            assert findings >= 1
        assert_prune_held(world, rejected, findings)
        assert_genuine_intact(world, touched)
        if not intact:
            assert_refused(world, b.partition, rejected)


@pytest.mark.parametrize("where", ["local", "offsite"])
def test_signature_of_another_manifest_beside_a_forgery(world: World, where: str) -> None:
    """Attack 9d: a genuine .sig file of another manifest copied beside a forged manifest of a day without a backup:
    rejected (the signature does not match it); verify, restore, drill and recover of that day refuse naming it."""
    day = (date.fromisoformat(world.partitions[-2]) + timedelta(days=1)).isoformat()
    key, manifest, cipher = consistent_forgery(world, day, stamp_of(day, 0xD), f"{day}T02:00:00+00:00")
    world.put(where, json.loads(manifest)["artifact_key"], cipher)
    world.put(where, key, manifest)
    world.put(where, key + SIGNATURE_SUFFIX, world.read(where, world.newest().key + SIGNATURE_SUFFIX))
    rejected = {(where, key): EDITED}
    assert_listed(world, rejected)
    assert_prune_held(world, rejected)
    assert_genuine_intact(world)
    assert_refused(world, day, rejected)
