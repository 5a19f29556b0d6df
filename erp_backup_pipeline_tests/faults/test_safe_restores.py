"""Restores against a local attacker and a careless operator: planted links, racing links, other users'
directories, read-only and unwritable targets, a password on the command line.

Every case ends in success with the live data untouched, or in one line naming the cause; never a write
through a link, never a traceback, nothing left beside the target.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import pwd
import sqlite3
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from erp_backup_pipeline.cli import main
from erp_backup_pipeline.core.pipeline import run_backup
from erp_backup_pipeline.core.restore import restore_backup
from erp_backup_pipeline.errors import RestoreError
from erp_backup_pipeline.settings import Settings
from erp_backup_pipeline_tests.conftest import REDIS_PASSWORD, make_settings, redis_source, signing_section
from erp_backup_pipeline_tests.faults.tools import tmpfs

DAY = "2026-11-25"


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _cli(settings_data: dict[str, Any], tmp: Path, *argv: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    config = tmp / "erp-backup.yaml"
    config.write_text(yaml.safe_dump(settings_data))
    config.chmod(0o600)
    out, err = io.StringIO(), io.StringIO()
    with contextlib.ExitStack() as stack:
        for k, v in (env or {}).items():
            stack.enter_context(_env(k, v))
        stack.enter_context(contextlib.redirect_stdout(out))
        stack.enter_context(contextlib.redirect_stderr(err))
        rc = main(["--config", str(config), *argv])
    return rc, out.getvalue(), err.getvalue().strip()


@contextlib.contextmanager
def _env(name: str, value: str) -> Iterator[None]:
    old = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = old


def _data(tmp: Path, age_identity: tuple[Path, str], sources: dict[str, Any]) -> dict[str, Any]:
    return {"staging_dir": str(tmp / "staging"), "state_dir": str(tmp / "state"),
            "encryption": {"codec": "age", "recipients": [age_identity[1]], "identity_file": str(age_identity[0])},
            "signing": signing_section(),
            "destinations": [{"type": "local", "name": "local", "path": str(tmp / "backups")}], "sources": sources}


@pytest.fixture
def sqlite_backed_up(tmp_path: Path, demo_sqlite: Path, age_identity: tuple[Path, str]) -> tuple[Settings, Path]:
    settings = make_settings(tmp_path, age_identity, sources={"sqlite": {"path": str(demo_sqlite)}})
    run_backup(settings, "sqlite_backup", DAY)
    return settings, demo_sqlite


def _one_line(exc: BaseException) -> str:
    text = str(exc)
    assert "\n" not in text and "Traceback" not in text, text
    return text


def test_a_planted_partial_link_to_the_live_database_is_never_written_through(
        sqlite_backed_up: tuple[Settings, Path], tmp_path: Path) -> None:
    """The reported attack: `restore sqlite --to <shared>/check.sqlite3` with `check.sqlite3.partial -> live db`."""
    settings, live = sqlite_backed_up
    with sqlite3.connect(live) as conn:  # rows written after the backup: they must survive
        conn.execute("INSERT INTO customers(name, city, created_at) VALUES ('after the backup', 'Passau', '2026-11-26')")
    before = _sha(live)
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o1777)
    shared.chmod(0o1777)
    for name in ("check.sqlite3.partial", ".check.sqlite3.partial", "check.sqlite3-wal.partial"):
        (shared / name).symlink_to(live)
    result = restore_backup(settings, "sqlite_backup", DAY, str(shared / "check.sqlite3"))
    assert _sha(live) == before
    assert result["integrity"] == "ok" and not (shared / "check.sqlite3").is_symlink()
    assert sorted(p.name for p in shared.iterdir()) == sorted(
        ["check.sqlite3", "check.sqlite3.partial", ".check.sqlite3.partial", "check.sqlite3-wal.partial"])


def test_a_planted_wal_beside_the_target_is_refused_not_replayed(sqlite_backed_up: tuple[Settings, Path],
                                                                  tmp_path: Path) -> None:
    settings, _ = sqlite_backed_up
    (tmp_path / "new.sqlite3-wal").write_bytes(b"planted")
    with pytest.raises(RestoreError) as err:
        restore_backup(settings, "sqlite_backup", DAY, str(tmp_path / "new.sqlite3"))
    assert _one_line(err.value).endswith("new.sqlite3-wal exists; use --force to keep it aside and replace it")
    assert not (tmp_path / "new.sqlite3").exists()


class _Planter(threading.Thread):
    """A local attacker: replaces every new entry in ``directory`` by a link to ``victim``, as fast as it can."""

    def __init__(self, directory: Path, victim: Path) -> None:
        super().__init__(daemon=True)
        self.directory, self.victim = directory, victim
        self.stop = threading.Event()
        self.planted = 0

    def run(self) -> None:
        deadline = time.monotonic() + 60
        while not self.stop.is_set() and time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                for entry in os.scandir(self.directory):
                    if entry.name.startswith("victim") or entry.is_symlink():
                        continue
                    target = Path(entry.path)
                    for name in (target / "check.sqlite3", target / "dump.rdb", target.with_name("check.sqlite3")):
                        with contextlib.suppress(OSError):
                            name.symlink_to(self.victim)
                            self.planted += 1


def test_a_racing_attacker_planting_links_never_gets_a_write_through(sqlite_backed_up: tuple[Settings, Path],
                                                                      tmp_path: Path) -> None:
    settings, live = sqlite_backed_up
    before = _sha(live)
    shared = tmp_path / "race"
    shared.mkdir()
    shared.chmod(0o1777)
    planter = _Planter(shared, live)
    planter.start()
    outcomes = []
    try:
        for i in range(15):
            target = shared / ("check.sqlite3" if i % 2 else f"check-{i}.sqlite3")
            try:
                restore_backup(settings, "sqlite_backup", DAY, str(target), force=True)
                outcomes.append("ok")
            except RestoreError as exc:
                outcomes.append(_one_line(exc))
    finally:
        planter.stop.set()
        planter.join()
    assert _sha(live) == before, "a restore wrote through a planted link"
    assert planter.planted > 0 and "ok" in outcomes, (planter.planted, outcomes)
    assert all(o == "ok" or "appeared while the restore ran" in o for o in outcomes), outcomes


@pytest.fixture
def redis_backed_up(tmp_path: Path, redis_server: Any, age_identity: tuple[Path, str]) -> Settings:
    redis_server.client().set("session:1", "alive")
    settings = make_settings(tmp_path, age_identity, sources=redis_source(redis_server))
    run_backup(settings, "redis_snapshot", DAY)
    return settings


def test_a_planted_dump_partial_link_in_a_redis_target_dir_is_never_written_through(
        redis_backed_up: Settings, tmp_path: Path) -> None:
    victim = tmp_path / "victim.conf"
    victim.write_text("important\n")
    target = tmp_path / "redis-restore"
    target.mkdir()
    (target / ".dump.rdb.partial").symlink_to(victim)
    restore_backup(redis_backed_up, "redis_snapshot", DAY, str(target))
    assert victim.read_text() == "important\n"
    assert (target / "dump.rdb").is_file() and not (target / "dump.rdb").is_symlink()


@pytest.mark.parametrize("source", ["sqlite_backup", "config_archive", "uploads_snapshot", "redis_snapshot"])
def test_a_target_or_parent_that_is_a_symlink_is_refused_unless_forced(source: str, tmp_path: Path, demo_sqlite: Path,
                                                                      age_identity: tuple[Path, str],
                                                                      redis_server: Any) -> None:
    conf, up = tmp_path / "conf", tmp_path / "up"
    conf.mkdir()
    (conf / "app.yml").write_text("a: 1\n")
    up.mkdir()
    (up / "RE-1.pdf").write_bytes(b"%PDF")
    settings = make_settings(tmp_path, age_identity, state_dir=str(tmp_path / "state"), sources={
        "sqlite": {"path": str(demo_sqlite)}, "config": {"paths": [str(conf)]}, "uploads": {"path": str(up)},
        **redis_source(redis_server)})
    run_backup(settings, source, DAY)
    real = tmp_path / "real"
    real.mkdir()
    link = tmp_path / "link"
    link.symlink_to(real)
    with pytest.raises(RestoreError) as err:  # a parent that is a link
        restore_backup(settings, source, DAY, str(link / "restored"))
    assert f"{link} is a symlink (to {real}); a restore never writes through a link" in _one_line(err.value)
    (real / "restored").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(RestoreError) as err:  # the target itself a (dangling) link
        restore_backup(settings, source, DAY, str(real / "restored"))
    assert "restored is a symlink" in _one_line(err.value)
    assert not (tmp_path / "elsewhere").exists() and list(real.iterdir()) == [real / "restored"]
    (real / "restored").unlink()
    restore_backup(settings, source, DAY, str(link / "restored"), force=True)  # the operator means it
    assert (real / "restored").exists()


def test_a_target_directory_another_user_owns_is_refused(sqlite_backed_up: tuple[Settings, Path], tmp_path: Path) -> None:
    settings, _ = sqlite_backed_up
    nobody = pwd.getpwnam("nobody")
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    os.chown(theirs, nobody.pw_uid, nobody.pw_gid)
    with pytest.raises(RestoreError) as err:
        restore_backup(settings, "sqlite_backup", DAY, str(theirs / "check.sqlite3"))
    assert _one_line(err.value).endswith(f"directory {theirs} belongs to nobody, who could swap what the restore "
                                         "writes there; restore into a directory you own, or --force")
    assert list(theirs.iterdir()) == []
    group_writable = tmp_path / "shared-no-sticky"
    group_writable.mkdir()
    group_writable.chmod(0o777)
    with pytest.raises(RestoreError) as err:
        restore_backup(settings, "sqlite_backup", DAY, str(group_writable / "check.sqlite3"))
    assert "is writable by other users (mode 0777, no sticky bit)" in _one_line(err.value)


def test_restores_onto_a_read_only_or_unwritable_target_fail_in_one_line(sqlite_backed_up: tuple[Settings, Path],
                                                                       tmp_path: Path, age_identity: tuple[Path, str]
                                                                       ) -> None:
    settings, _ = sqlite_backed_up
    with tmpfs(tmp_path / "ro", "4m") as ro:
        subprocess.run(["mount", "-o", "remount,ro", str(ro)], check=True)
        data = _data(tmp_path, age_identity, {"sqlite": {"path": str(settings.sources.sqlite.path)}})  # type: ignore[union-attr]
        rc, _, err = _cli(data, tmp_path, "restore", "sqlite", "--partition", DAY, "--to", str(ro / "check.sqlite3"))
        assert rc == 1 and err.startswith("erp-backup: error: restore into ") and err.endswith("read-only file system"), err
        assert "\n" not in err
    locked = tmp_path / "locked"
    locked.mkdir()
    subprocess.run(["chattr", "+i", str(locked)], check=True)  # root passes mode bits; an immutable dir refuses root
    try:
        rc, _, err = _cli(data, tmp_path, "restore", "sqlite", "--partition", DAY, "--to", str(locked / "check.sqlite3"))
        assert rc == 1 and err.endswith("operation not permitted"), err
        rc, _, err = _cli(data, tmp_path, "recover", "--date", DAY, "--to", str(locked / "erp"))
        assert rc == 1 and "operation not permitted" in err and "\n" not in err, err
    finally:
        subprocess.run(["chattr", "-i", str(locked)], check=True)
    assert list(locked.iterdir()) == []


def test_recover_into_a_file_or_a_link_is_one_line(sqlite_backed_up: tuple[Settings, Path], tmp_path: Path,
                                                   age_identity: tuple[Path, str]) -> None:
    settings, live = sqlite_backed_up
    data = _data(tmp_path, age_identity, {"sqlite": {"path": str(live)}})
    a_file = tmp_path / "notes.txt"
    a_file.write_text("keep")
    rc, _, err = _cli(data, tmp_path, "recover", "--date", DAY, "--to", str(a_file))
    assert (rc, err) == (1, f"erp-backup: error: recovery directory {a_file} is a file, not a directory; recover "
                            "into a new directory")
    (tmp_path / "to-live").symlink_to(live.parent)
    rc, _, err = _cli(data, tmp_path, "recover", "--date", DAY, "--to", str(tmp_path / "to-live"))
    assert rc == 1 and "to-live is a symlink" in err and "\n" not in err, err
    assert a_file.read_text() == "keep"


def test_the_redis_target_password_comes_from_the_environment_or_a_file_never_the_url(
        redis_backed_up: Settings, tmp_path: Path, age_identity: tuple[Path, str], redis_server: Any) -> None:
    from erp_backup_pipeline_devkit.servers import start_redis

    target = start_redis("target-Pw-5b1e0c", tmp_path / "redis-target")
    try:
        data = _data(tmp_path, age_identity, redis_source(redis_server))
        url = f"redis://:target-Pw-5b1e0c@127.0.0.1:{target.port}/0"
        rc, _, err = _cli(data, tmp_path, "restore", "redis", "--partition", DAY, "--to", url)
        assert rc == 1 and "carries its password in the URL" in err and "ERP_RESTORE_PASSWORD" in err, err
        assert "target-Pw-5b1e0c" not in err and "\n" not in err
        assert target.client().dbsize() == 0
        plain = f"redis://127.0.0.1:{target.port}/0"
        rc, out, err = _cli(data, tmp_path, "restore", "redis", "--partition", DAY, "--to", plain,
                            env={"ERP_RESTORE_PASSWORD": "target-Pw-5b1e0c"})
        assert rc == 0, err
        assert target.client().get("session:1") == b"alive" and "target-Pw-5b1e0c" not in out + err
        secret = tmp_path / "target.pass"
        secret.write_text("target-Pw-5b1e0c\n")
        secret.chmod(0o644)
        rc, _, err = _cli(data, tmp_path, "restore", "redis", "--partition", DAY, "--to", plain, "--force",
                          "--password-file", str(secret))
        assert rc == 1 and err.endswith("has mode 0644; it must be 0600"), err
        secret.chmod(0o600)
        rc, _, err = _cli(data, tmp_path, "restore", "redis", "--partition", DAY, "--to", plain, "--force",
                          "--password-file", str(secret))
        assert rc == 0, err
    finally:
        target.stop()
    assert REDIS_PASSWORD not in err
