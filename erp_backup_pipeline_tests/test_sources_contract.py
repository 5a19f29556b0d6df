"""The source contract, once, for every kind in the registry (``core.sources.KINDS``): names as each store allows
them back up, verify, restore into a new target equal to the source, drill, and a live target is refused without
--force; garbage and an empty stream fail the kind's verification; a backup reports progress; a source that cannot
be reached fails with one line that holds none of its secrets. A kind added to the registry without a case here
fails the suite.

Each kind brings a store filled with what its users name things: PostgreSQL reserved words, mixed case, spaces,
quotes, line breaks, non-ASCII and 63-byte identifiers (``pg_installation.NAMES``); SQLite the same in table and
column names; Redis keys with spaces, binary bytes, UTF-8 and 10 kB, of every type, some with a TTL; the config and
uploads trees file names with spaces, quotes, a line break, UTF-8, 200 bytes and a leading dash.
"""

from __future__ import annotations

import hashlib
import io
import os
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest

from erp_backup_pipeline.core.drill import restore_drill
from erp_backup_pipeline.core.pipeline import run_backup
from erp_backup_pipeline.core.restore import restore_backup, verify_backup
from erp_backup_pipeline.core.runner import free_port
from erp_backup_pipeline.core.sources import KINDS, build_source
from erp_backup_pipeline.errors import BackupError, RestoreError, VerifyError
from erp_backup_pipeline_tests.conftest import ERP_PASSWORD, make_settings, pg_source, redis_source
from erp_backup_pipeline_tests.pg_installation import NAMES, shape
from erp_backup_pipeline_tests.test_redis_snapshot import snapshot

DAY = "2026-11-25"
FILE_NAMES = ["plain.txt", "mit Leerzeichen.pdf", 'quote"s and \'apostrophes\'.yaml', "Zeilen\numbruch.txt",
              "Größe ÄÖÜ ß.json", "x" * 200, "-leading-dash", "Archiv 2025/Kunden Alt/Rechnung €.pdf", ".env"]


@dataclass
class Case:
    """One source kind: its settings, how to fill it, where a restore goes, and what 'equal' means."""

    asset: str
    sources: Callable[[], dict[str, Any]]
    target: Callable[[Path], str]
    content: Callable[[str | None], Any]  # the source's content (None) or a restored target's


def tree(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and not p.name.startswith(".erp-backup")}


def fill_tree(root: Path) -> None:
    for i, name in enumerate(FILE_NAMES):
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(f"{i}: {name}\n".encode() * (i + 1))


SQLITE_SCHEMA = """
CREATE TABLE "order" (id INTEGER PRIMARY KEY, "customerId" TEXT, "select" TEXT);
CREATE TABLE "Archiv 2025" ("Name mit Leerzeichen" TEXT, "Betrag €" REAL);
CREATE TABLE "a""quote" ("it""s" INTEGER);
CREATE TABLE "Größe ÄÖÜ" (x);
CREATE TABLE "Zeilen
umbruch" (x);
CREATE VIEW "Offene Posten" AS SELECT * FROM "order" WHERE id > 1;
INSERT INTO "order" VALUES (1, 'Kunde-1', 'a'), (2, 'Kunde-2', NULL), (3, 'ä', 'ß');
INSERT INTO "Archiv 2025" VALUES ('Alt Kunde', 12.5);
INSERT INTO "a""quote" VALUES (1), (2);
INSERT INTO "Größe ÄÖÜ" VALUES (x'00ff');
INSERT INTO "Zeilen
umbruch" VALUES ('line');
"""


def sqlite_dump(path: str) -> list[str]:
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
        return list(conn.iterdump())


def fill_redis(server: Any) -> None:
    r = server.client(0)
    r.set("session:mit Leerzeichen", "token")
    r.set(b"binary:\x00\xff\x10", bytes(range(256)))
    r.set("schlüssel:äöü:€", "Größe", ex=3600)
    r.set("long:" + "k" * 10_000, "v")
    r.hset("user:1", mapping={"Name mit Leerzeichen": "Anna Müller", "\"quote\"": "'"})
    r.rpush("queue:Zeilen\numbruch", "a", "b")
    r.sadd("set", "", " ", "\n")
    r.zadd("ranking", {"ä": 1.5, "b c": -2})
    r.xadd("events", {"type": "invoice.created"})
    server.client(3).set("db3 key", "in database three")


@pytest.fixture
def case(request: pytest.FixtureRequest, tmp_path: Path) -> Case:
    kind = request.param
    if kind not in ("postgres_dump", "sqlite_backup", "redis_snapshot", "config_archive", "uploads_snapshot"):
        pytest.fail(f"source kind {kind} has no contract case: add one to this module's case fixture")
    if kind == "postgres_dump":
        pg, db = request.getfixturevalue("pg_server"), request.getfixturevalue("erp_db")
        with psycopg.connect(pg.dsn(db, "erp_user", ERP_PASSWORD), autocommit=True) as conn:
            conn.execute("CREATE SCHEMA \"Archiv 2025\"")
            conn.execute(NAMES.replace('CREATE SCHEMA "Archiv 2025";', ""))
        return Case(kind, lambda: pg_source(pg, db), lambda _: db + "_restored",
                    lambda target: shape(pg.dsn(target or db, "erp_user", ERP_PASSWORD)))
    if kind == "sqlite_backup":
        path = tmp_path / "erp" / "Produktion mit Leerzeichen.sqlite3"
        path.parent.mkdir()
        with sqlite3.connect(path) as conn:
            conn.executescript(SQLITE_SCHEMA)
        conn.close()
        return Case(kind, lambda: {"sqlite": {"path": str(path)}}, lambda base: str(base / "restored.sqlite3"),
                    lambda target: sqlite_dump(target or str(path)))
    if kind == "redis_snapshot":
        server, empty = request.getfixturevalue("redis_server"), request.getfixturevalue("empty_redis")
        fill_redis(server)
        return Case(kind, lambda: redis_source(server), lambda _: f"redis://127.0.0.1:{empty.port}/0",
                    lambda target: snapshot(empty if target else server))
    root = tmp_path / "erp" / ("config" if kind == "config_archive" else "uploads")
    fill_tree(root)
    settings = {"config": {"paths": [str(root)], "root": str(root.parent)}} if kind == "config_archive" \
        else {"uploads": {"path": str(root)}}
    restored_root: Callable[[str], Path] = (lambda t: Path(t) / "config") if kind == "config_archive" else Path
    return Case(kind, lambda: settings, lambda base: str(base / "restored"),
                lambda target: tree(restored_root(target) if target else root))


@pytest.mark.parametrize("case", list(KINDS), indirect=True)
def test_names_as_the_store_allows_them_round_trip(case: Case, tmp_path: Path, age_identity: Any) -> None:
    settings = make_settings(tmp_path, age_identity, sources=case.sources(), state_dir=str(tmp_path / "state"))
    m = run_backup(settings, case.asset, DAY)
    assert m.verify["ok"] and m.complete
    assert verify_backup(settings, case.asset, DAY)["ok"]
    target = case.target(tmp_path)
    restore_backup(settings, case.asset, DAY, target)
    assert case.content(target) == case.content(None)
    assert restore_drill(settings, case.asset, DAY)["ok"]
    with pytest.raises(RestoreError, match="exists|not empty"):
        restore_backup(settings, case.asset, DAY, target)



@pytest.mark.parametrize("case", list(KINDS), indirect=True)
@pytest.mark.parametrize("garbage", [b"", os.urandom(1) + b"\x00" * 70_000, os.urandom(70_000)], ids=["empty", "zeros", "random"])
def test_garbage_fails_the_kinds_verification(case: Case, garbage: bytes, tmp_path: Path, age_identity: Any) -> None:
    """What the kind's verify reads is not a backup of it: VerifyError (one line), never a pass."""
    settings = make_settings(tmp_path, age_identity, sources=case.sources(), state_dir=str(tmp_path / "state"))
    source = build_source(settings, case.asset)
    workdir = tmp_path / "work"
    workdir.mkdir()
    facts = source.prepare(workdir)
    with pytest.raises(VerifyError) as caught:
        source.verify(io.BytesIO(garbage), workdir, facts)
    assert "\n" not in str(caught.value) and str(caught.value)


@pytest.mark.parametrize("case", list(KINDS), indirect=True)
def test_a_backup_reports_progress(case: Case, tmp_path: Path, age_identity: Any) -> None:
    settings = make_settings(tmp_path, age_identity, sources=case.sources(), state_dir=str(tmp_path / "state"))
    lines: list[str] = []
    run_backup(settings, case.asset, DAY, lambda text, done, total, seconds: lines.append(text))
    assert any("dump" in line for line in lines), lines
    assert any("manifest" in line or "committed" in line or "shipped" in line for line in lines), lines


SECRET = "Geheim-Passwort-4711"


def unreachable(kind: str, tmp_path: Path) -> dict[str, Any]:
    """The kind's settings pointing at nothing there, with a password where the kind takes one."""
    port = free_port()
    return {"postgres_dump": {"postgres": {"host": "127.0.0.1", "port": port, "password": SECRET, "connect_timeout": 2}},
            "redis_snapshot": {"redis": {"host": "127.0.0.1", "port": port, "password": SECRET, "timeout": 2}},
            "sqlite_backup": {"sqlite": {"path": str(tmp_path / "nicht da.sqlite3")}},
            "config_archive": {"config": {"paths": [str(tmp_path / "nicht da")]}},
            "uploads_snapshot": {"uploads": {"path": str(tmp_path / "nicht da")}}}[kind]


@pytest.mark.parametrize("kind", list(KINDS))
def test_an_unreachable_source_fails_in_one_line_without_its_secrets(kind: str, tmp_path: Path,
                                                                      age_identity: Any) -> None:
    if kind not in ("postgres_dump", "sqlite_backup", "redis_snapshot", "config_archive", "uploads_snapshot"):
        pytest.fail(f"source kind {kind} has no unreachable case: add one to unreachable()")
    settings = make_settings(tmp_path, age_identity, sources=unreachable(kind, tmp_path),
                             state_dir=str(tmp_path / "state"))
    with pytest.raises(BackupError) as caught:
        run_backup(settings, kind, DAY)
    message = str(caught.value)
    assert message and "\n" not in message and SECRET not in message and "Traceback" not in message
    assert not (tmp_path / "backups").exists() or not any(p.is_file() for p in (tmp_path / "backups").rglob("*"))


def test_the_configuration_has_one_section_and_one_retention_per_registered_kind() -> None:
    from erp_backup_pipeline.settings import RetentionSettings, SourcesSettings

    assert {name: field.annotation for name, field in SourcesSettings.model_fields.items()} == \
        {kind.key: kind.settings | None for kind in KINDS.values()}
    assert {name for name in RetentionSettings.model_fields if name != "orphan_grace_hours"} == set(KINDS)
    assert RetentionSettings().policies() == {name: kind.policy for name, kind in KINDS.items()}
