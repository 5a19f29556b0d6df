"""Configuration files (config_archive): a streamed tar of real files, verified per member, restored safely.

The pipeline tests configure the source through ``sources.config`` and run the real stages: zstd, age,
the local destination, manifests, verify and restore.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pwd
import stat
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import pytest

import erp_backup_pipeline.core.sources.files_capture as files_capture
from erp_backup_pipeline.core.pipeline import run_backup
from erp_backup_pipeline.core.restore import restore_backup, restore_plan, verify_backup
from erp_backup_pipeline.core.sources.files import INDEX_NAME, FilesSource
from erp_backup_pipeline.core.sources.files_restore import diff_summary
from erp_backup_pipeline.errors import RestoreError, SourceError, VerifyError
from erp_backup_pipeline_tests.conftest import make_settings

ENV_SECRET = "Erp-Env-Secret-9c2d71"
OUTSIDE_SECRET = "outside-the-tree-3e8f"
T0 = 1_750_000_000
ODD_NAMES = ["with space\nand newline.conf", os.fsdecode(b"caf\xe9-latin1.conf")]  # a newline; not UTF-8
DAY = "2026-11-25"


def _write(path: Path, text: str, mode: int = 0o644) -> None:
    path.write_text(text)
    path.chmod(mode)


@pytest.fixture
def host(tmp_path: Path) -> Path:
    """An ERP host's config: .env (0600), nested dirs, links in and out, excluded dirs, odd names."""
    host = tmp_path / "host"
    erp, config = host / "erp", host / "erp" / "config"
    (config / "nested" / "deep").mkdir(parents=True)
    _write(erp / ".env", f"DB_PASSWORD={ENV_SECRET}\n", 0o600)
    _write(config / "app.yml", "listen: 8080\n")
    _write(config / "nested" / "deep" / "db.yml", "pool: 5\n", 0o640)
    _write(config / "run.sh", "#!/bin/sh\nexec erp\n", 0o755)
    (config / "nested").chmod(0o750)
    (config / "current.yml").symlink_to("app.yml")
    (tmp_path / "outside").mkdir()
    _write(tmp_path / "outside" / "ca.pem", OUTSIDE_SECRET)
    (config / "ca.pem").symlink_to(tmp_path / "outside" / "ca.pem")
    (erp / "node_modules" / "pkg").mkdir(parents=True)
    _write(erp / "node_modules" / "pkg" / "index.js", "module.exports = 1\n")
    (config / ".git").mkdir()
    _write(config / ".git" / "HEAD", "ref: refs/heads/main\n")
    for name in ODD_NAMES:
        _write(erp / name, f"odd: {name!r}\n")
    (host / "monitoring").mkdir()
    for name in ("prometheus.yml", "alerts.yml", "README.md"):
        _write(host / "monitoring" / name, f"# {name}\n")
    for i, (path, _) in enumerate(sorted(_walk(host).items())):
        os.utime(path, (T0, T0 + i), follow_symlinks=False)
    return host


def _walk(top: Path) -> dict[str, str]:
    """Every path below top (symlinks not followed): absolute path -> name relative to top."""
    found = {}
    for dirpath, dirnames, filenames in os.walk(top):
        for n in dirnames + filenames:
            found[os.path.join(dirpath, n)] = os.path.relpath(os.path.join(dirpath, n), top)
    return found


def _snapshot(top: Path, keep: Callable[[str], bool] = lambda name: True) -> dict[str, tuple[Any, ...]]:
    """name -> (kind, content or link target, mode, mtime_ns, uid, gid)."""
    snap = {}
    for path, name in _walk(top).items():
        if not keep(name):
            continue
        st = os.lstat(path)
        if stat.S_ISLNK(st.st_mode):
            snap[name] = ("link", os.readlink(path), None, st.st_mtime_ns, st.st_uid, st.st_gid)
        elif stat.S_ISDIR(st.st_mode):
            snap[name] = ("dir", None, stat.S_IMODE(st.st_mode), st.st_mtime_ns, st.st_uid, st.st_gid)
        else:
            snap[name] = ("file", Path(path).read_bytes(), stat.S_IMODE(st.st_mode), st.st_mtime_ns, st.st_uid, st.st_gid)
    return snap


def _not_excluded(name: str) -> bool:
    return not {"node_modules", ".git"} & set(name.split(os.sep))


def _source(host: Path) -> FilesSource:
    return FilesSource([host / "erp", host / "monitoring" / "*.yml"])


def _dump(source: FilesSource, workdir: Path) -> tuple[bytes, dict[str, Any]]:
    workdir.mkdir(exist_ok=True)
    facts = source.prepare(workdir)
    stream = source.open_dump(workdir, facts)
    chunks = []
    try:
        while chunk := stream.read(65536):
            chunks.append(chunk)
        learnt = stream.finish()
    except BaseException:
        stream.abort()
        raise
    return b"".join(chunks), {**facts, **learnt}


def _members(raw: bytes) -> list[tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(raw), mode="r:") as tar:
        return tar.getmembers()


def _rebuild(raw: bytes, edit: Callable[[list[tuple[tarfile.TarInfo, bytes | None]]], Any]) -> bytes:
    """The archive again after ``edit`` changed its (member, data) list in place."""
    with tarfile.open(fileobj=io.BytesIO(raw), mode="r:") as tar:
        members = [(m, tar.extractfile(m).read() if m.isreg() else None) for m in tar.getmembers()]  # type: ignore[union-attr]
    edit(members)
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for m, data in members:
            if data is not None:
                m.size = len(data)
            tar.addfile(m, io.BytesIO(data) if data is not None else None)
    return out.getvalue()


def _settings_for(tmp_path: Path, age_identity: tuple[Path, str], source: FilesSource) -> Any:
    """Settings whose ``sources.config`` builds exactly this FilesSource through the real registry."""
    return make_settings(tmp_path, age_identity, sources={"config": {
        "paths": [str(p) for p in source.paths], "excludes": source.excludes, "root": str(source.root)}})


def _artifacts(tmp_path: Path) -> list[Path]:
    return [p for p in (tmp_path / "backups").rglob("*") if p.is_file()]


def test_pipeline_round_trip_restores_the_tree_exactly(tmp_path: Path, host: Path, age_identity,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    if os.geteuid() == 0:
        os.lchown(host / "erp" / ".env", 1234, 2345)  # owners are restored when running as root
    under_test = _source(host)
    settings = _settings_for(tmp_path, age_identity, under_test)
    manifest = run_backup(settings, "config_archive", DAY)
    assert manifest.kind == "files" and manifest.artifact_key.endswith(".tar.zst.age")
    assert manifest.verify["ok"] and manifest.verify["method"] == "tar list + sha256 per member"
    assert manifest.facts["files"] == 8 and manifest.facts["paths"][1].endswith("monitoring/*.yml")
    names = {e["name"] for e in manifest.facts["index"]}
    assert {"erp/.env", "erp/config/ca.pem", "monitoring/alerts.yml", *(f"erp/{n}" for n in ODD_NAMES)} <= names
    manifest_text = next((tmp_path / "backups").rglob("*.manifest.json")).read_text()
    assert ENV_SECRET not in manifest_text and OUTSIDE_SECRET not in manifest_text
    assert verify_backup(settings, "config_archive", DAY)["members"] == len(names)

    target = tmp_path / "restored"
    result = restore_backup(settings, "config_archive", DAY, str(target))
    assert result["files"] == 8 and result["kept_aside"] is None
    assert _snapshot(target / "erp") == _snapshot(host / "erp", _not_excluded)  # bytes, modes, mtimes, owners
    assert _snapshot(target / "monitoring") == _snapshot(host / "monitoring", lambda n: n.endswith(".yml"))
    assert stat.S_IMODE(os.stat(target / "erp" / ".env").st_mode) == 0o600
    assert os.readlink(target / "erp" / "config" / "ca.pem") == str(tmp_path / "outside" / "ca.pem")
    assert not (target / "erp" / "node_modules").exists() and not (target / "erp" / "config" / ".git").exists()
    assert [p for p in (tmp_path / "staging").rglob("*") if p.is_file()] == []


def test_archive_members_are_relative_safe_and_indexed(tmp_path: Path, host: Path) -> None:
    raw, facts = _dump(_source(host), tmp_path / "work")
    members = _members(raw)
    names = [m.name for m in members]
    assert names[-1] == INDEX_NAME and names.count(INDEX_NAME) == 1
    for name in names:
        assert not name.startswith("/") and ".." not in PurePosixPath(name).parts
        assert "node_modules" not in name and ".git/" not in name and not name.endswith(".git")
    assert "monitoring/README.md" not in names and "monitoring/prometheus.yml" in names
    link = next(m for m in members if m.name == "erp/config/ca.pem")
    assert link.issym() and link.linkname == str(tmp_path / "outside" / "ca.pem")  # the link, not its target
    assert OUTSIDE_SECRET.encode() not in raw
    env = next(m for m in members if m.name == "erp/.env")
    owner = os.lstat(host / "erp" / ".env")
    assert (env.mode, env.mtime, env.uid, env.uname) == (0o600, owner.st_mtime, owner.st_uid, pwd.getpwuid(owner.st_uid).pw_name)
    assert all(f"erp/{n}" in names for n in ODD_NAMES)
    assert json.dumps(facts["index"]).find(ENV_SECRET) == -1
    assert set(facts) == {"engine", "paths", "root", "files", "bytes", "index"}
    assert facts["bytes"] == sum(m.size for m in members if m.isreg() and m.name != INDEX_NAME)


def test_odd_file_names_round_trip(tmp_path: Path) -> None:
    top = tmp_path / "etc erp"
    top.mkdir()
    for name in ODD_NAMES:
        (top / name).write_bytes(os.fsencode(name))
    source = FilesSource([top / "*.conf"])
    raw, facts = _dump(source, tmp_path / "work")
    assert sorted(e["name"] for e in facts["index"]) == sorted(ODD_NAMES)
    source.restore(io.BytesIO(raw), str(tmp_path / "back"), False, tmp_path / "work")
    assert {n: (tmp_path / "back" / n).read_bytes() for n in ODD_NAMES} == {n: os.fsencode(n) for n in ODD_NAMES}


def test_glob_path_takes_matches_and_an_empty_glob_is_refused(tmp_path: Path, host: Path) -> None:
    raw, facts = _dump(FilesSource([host / "monitoring" / "*.yml"]), tmp_path / "work")
    assert [m.name for m in _members(raw)] == ["alerts.yml", "prometheus.yml", INDEX_NAME]
    with pytest.raises(SourceError, match=r"^files: .*monitoring/\*\.json matches nothing$"):
        FilesSource([host / "monitoring" / "*.json"]).prepare(tmp_path)


def test_missing_path_is_one_line_and_leaves_nothing(tmp_path: Path, host: Path, age_identity,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    gone = host / "erp" / "missing.env"
    with pytest.raises(SourceError) as err:
        FilesSource([host / "erp", gone]).prepare(tmp_path)
    assert str(err.value) == f"files: {gone} does not exist"
    under_test = FilesSource([host / "erp", gone])
    with pytest.raises(SourceError, match="missing.env does not exist"):
        run_backup(_settings_for(tmp_path, age_identity, under_test), "config_archive", DAY)
    assert [p for p in (tmp_path / "staging").rglob("*") if p.is_file()] == [] and _artifacts(tmp_path) == []


def test_a_fifo_fails_the_backup_by_name(tmp_path: Path, host: Path, age_identity,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """A FIFO cannot be backed up as a file (reading it would block): a real unreadable path, even for root."""
    os.mkfifo(host / "erp" / "config" / "agent.pipe")
    under_test = _source(host)
    with pytest.raises(SourceError) as err:
        run_backup(_settings_for(tmp_path, age_identity, under_test), "config_archive", DAY)
    assert "config/agent.pipe: is not a regular file, directory or symlink (exclude it); 1 unreadable" in str(err.value)
    assert _artifacts(tmp_path) == []  # nothing visible: no artifact, no manifest


def test_unreadable_files_fail_the_backup_naming_the_first_and_the_count(tmp_path: Path, host: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """CI runs as root, where chmod 000 does not stop a read: permission denied is raised by a patched
    open, and the vanished file is really removed between listing and reading."""
    real_open = files_capture._open_regular

    def failing_open(path: str) -> int:
        if path.endswith("app.yml"):
            raise PermissionError(13, "Permission denied", path)
        if path.endswith("run.sh"):
            os.unlink(path)
        return real_open(path)

    monkeypatch.setattr(files_capture, "_open_regular", failing_open)
    with pytest.raises(SourceError) as err:
        _dump(_source(host), tmp_path / "work")
    message = str(err.value)
    assert message.startswith(f"files: cannot back up {host}/erp/config/app.yml: permission denied; 2 unreadable path(s)")
    assert "\n" not in message and ENV_SECRET not in message


def _growing(always: bool) -> Callable[[int], Iterator[bytes]]:
    """_read_chunks that appends to app.yml after its first chunk: once, or on every read of it."""
    real = files_capture._read_chunks
    grown = []

    def read_chunks(fd: int) -> Iterator[bytes]:
        path = os.readlink(f"/proc/self/fd/{fd}")
        for i, chunk in enumerate(real(fd)):
            yield chunk
            if i == 0 and path.endswith("app.yml") and (always or not grown):
                with open(path, "a") as fh:
                    fh.write("more: 1\n")
                grown.append(path)
    return read_chunks


def test_a_file_growing_while_read_is_read_again_never_stored_torn(tmp_path: Path, host: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(files_capture, "_read_chunks", _growing(always=False))
    source = _source(host)
    raw, facts = _dump(source, tmp_path / "work")
    source.verify(io.BytesIO(raw), tmp_path, facts)
    source.restore(io.BytesIO(raw), str(tmp_path / "back"), False, tmp_path / "work")
    assert (tmp_path / "back" / "erp" / "config" / "app.yml").read_text() == "listen: 8080\nmore: 1\n"

    monkeypatch.setattr(files_capture, "_read_chunks", _growing(always=True))
    with pytest.raises(SourceError, match=r"app\.yml: kept changing while being read \(4 reads\); 1 unreadable"):
        _dump(source, tmp_path / "work")


def test_verify_consumes_the_stream_and_catches_damage(tmp_path: Path, host: Path) -> None:
    source = _source(host)
    raw, facts = _dump(source, tmp_path / "work")
    stream = io.BytesIO(raw + b"\0" * 70000)
    details = source.verify(stream, tmp_path, {})
    assert stream.tell() == len(raw) + 70000
    assert details == {"method": "tar list + sha256 per member", "members": len(facts["index"]), "bytes": facts["bytes"]}
    assert source.verify(io.BytesIO(raw), tmp_path, facts)["members"] == len(facts["index"])

    flipped = bytearray(raw)
    flipped[raw.index(b"listen: 8080")] ^= 0x01
    with pytest.raises(VerifyError, match=r"^files: member erp/config/app\.yml: content differs from the index"):
        source.verify(io.BytesIO(bytes(flipped)), tmp_path, {})

    def wrong_index(members: list[tuple[tarfile.TarInfo, bytes | None]]) -> None:
        info, data = members[-1]
        index = json.loads(data or b"")
        next(e for e in index if e["name"] == "erp/.env")["sha256"] = "0" * 64
        members[-1] = (info, json.dumps(index).encode())

    with pytest.raises(VerifyError, match=r"member erp/\.env: content differs from the index"):
        source.verify(io.BytesIO(_rebuild(raw, wrong_index)), tmp_path, {})
    without_db = _rebuild(raw, lambda ms: ms.remove(next(m for m in ms if m[0].name.endswith("db.yml"))))
    with pytest.raises(VerifyError, match=r"member erp/config/nested/deep/db\.yml is in the index but not in the archive"):
        source.verify(io.BytesIO(without_db), tmp_path, {})
    with pytest.raises(VerifyError, match="no .erp-backup-index.json|not a sound tar"):
        source.verify(io.BytesIO(raw[: len(raw) // 2]), tmp_path, {})
    with pytest.raises(VerifyError, match="not a sound tar"):
        source.verify(io.BytesIO(os.urandom(4096)), tmp_path, {})
    other = dict(facts, index=[dict(e, sha256="1" * 64) if e["name"] == "erp/.env" else e for e in facts["index"]])
    with pytest.raises(VerifyError, match=r"member erp/\.env differs from the manifest's file list"):
        source.verify(io.BytesIO(raw), tmp_path, other)


def test_restore_refuses_a_non_empty_target_and_force_keeps_it_aside(tmp_path: Path, host: Path, age_identity,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    under_test = _source(host)
    settings = _settings_for(tmp_path, age_identity, under_test)
    run_backup(settings, "config_archive", DAY)
    live = tmp_path / "live"
    live.mkdir()
    (live / "keep.me").write_text("the live config")
    with pytest.raises(RestoreError, match=rf"^restore target {live} is not empty; use --force"):
        restore_backup(settings, "config_archive", DAY, str(live))
    assert [p.name for p in live.iterdir()] == ["keep.me"]
    assert any("REFUSE" in s for s in _source(host).restore_plan(str(live), False, {}))
    result = restore_backup(settings, "config_archive", DAY, str(live), force=True)
    kept = Path(result["kept_aside"])
    assert kept.name.startswith("live.before-restore-") and (kept / "keep.me").read_text() == "the live config"
    assert (live / "erp" / ".env").read_text() == f"DB_PASSWORD={ENV_SECRET}\n" and not (live / "keep.me").exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    assert restore_backup(settings, "config_archive", DAY, str(empty))["kept_aside"] is None


def _tar(*members: tuple[tarfile.TarInfo, bytes | None]) -> bytes:
    """A hand-made archive with a matching index, as an attacker with the artifact could write one."""
    index = [{"name": m.name, "type": "symlink" if m.issym() else "file", "size": m.size, "linkname": m.linkname,
              "sha256": hashlib.sha256(data or b"").hexdigest()} for m, data in members]
    data = json.dumps(index).encode()
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, content in [*members, (_info(INDEX_NAME, size=len(data)), data)]:
            tar.addfile(info, io.BytesIO(content) if content is not None else None)
    return out.getvalue()


def _info(name: str, kind: bytes = tarfile.REGTYPE, size: int = 0, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.size, info.linkname, info.mode = kind, size, linkname, 0o644
    return info


@pytest.mark.parametrize(("members", "error"), [
    ([(_info("/abs.conf", size=1), b"x")], "unsafe member name /abs.conf"),
    ([(_info("a/../../escape.conf", size=1), b"x")], "unsafe member name a/../../escape.conf"),
    ([(_info("hard", tarfile.LNKTYPE, linkname="/etc/passwd"), None)], "hard link or device"),
    ([(_info("out", tarfile.SYMTYPE, linkname="{outside}"), None), (_info("out/x", tarfile.SYMTYPE, linkname="y"), None)],
     "would be written outside the target through a link"),
], ids=["absolute", "dotdot", "hardlink", "through-symlink"])
def test_restore_rejects_unsafe_members(tmp_path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]],
                                        error: str) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    for info, _ in members:
        info.linkname = info.linkname.replace("{outside}", str(outside))
    with pytest.raises((RestoreError, VerifyError), match=error):
        FilesSource([tmp_path]).restore(io.BytesIO(_tar(*members)), str(tmp_path / "target"), False, tmp_path)
    assert list(outside.iterdir()) == [] and not (tmp_path / "escape.conf").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["outside"]  # no target, no partial dir left


def test_restore_checks_every_file_against_the_index(tmp_path: Path, host: Path) -> None:
    source = _source(host)
    raw, _ = _dump(source, tmp_path / "work")
    flipped = bytearray(raw)
    flipped[raw.index(b"pool: 5")] ^= 0x01
    with pytest.raises(VerifyError, match=r"restored member erp/config/nested/deep/db\.yml: content differs"):
        source.restore(io.BytesIO(bytes(flipped)), str(tmp_path / "back"), False, tmp_path / "work")
    assert not (tmp_path / "back").exists() and not list(tmp_path.glob("back.partial-*"))


def test_diff_summary_finds_added_changed_and_removed(tmp_path: Path, host: Path) -> None:
    source = _source(host)
    raw, facts = _dump(source, tmp_path / "work")
    live = tmp_path / "live"
    source.restore(io.BytesIO(raw), str(live), False, tmp_path / "work")
    assert diff_summary(facts["index"], live) == {"added": [], "changed": [], "removed": []}
    config = live / "erp" / "config"
    (config / "app.yml").write_text("listen: 9090\n")
    (config / "run.sh").unlink()
    (config / "new.yml").write_text("x: 1\n")
    (config / "current.yml").unlink()
    (config / "current.yml").symlink_to("new.yml")
    assert diff_summary(facts["index"], live) == {
        "added": ["erp/config/run.sh"], "changed": ["erp/config/app.yml", "erp/config/current.yml"],
        "removed": ["erp/config/new.yml"]}
    assert diff_summary(facts["index"], tmp_path / "nothing")["added"] == sorted(
        e["name"] for e in facts["index"] if e["type"] != "dir")


def test_dry_run_plan_names_what_a_restore_would_add_change_and_remove(tmp_path: Path, host: Path, age_identity,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """The plan compares the manifest's index with the live target: counts, at most 5 names each, never contents."""
    source = _source(host)
    settings = _settings_for(tmp_path, age_identity, source)
    run_backup(settings, "config_archive", DAY)
    live = tmp_path / "live"
    restore_backup(settings, "config_archive", DAY, str(live))
    config = live / "erp" / "config"
    (config / "app.yml").write_text(f"listen: 9090 # {ENV_SECRET}\n")
    (config / "run.sh").unlink()
    (live / "erp" / ODD_NAMES[0]).unlink()
    for i in range(7):
        (config / f"extra{i}.yml").write_text(f"{ENV_SECRET}\n")
    before = _snapshot(live)

    steps = restore_plan(settings, "config_archive", DAY, str(live), True)
    assert steps[-4:] == [
        f"compared with the current {live}: would add 2, change 1, remove 7 path(s)",
        "  would add: erp/config/run.sh, erp/with space\\x0aand newline.conf",
        "  would change: erp/config/app.yml",
        "  would remove: " + ", ".join(f"erp/config/extra{i}.yml" for i in range(5)) + " (and 2 more)"]
    assert f"move the existing {live} aside to {live}.before-restore-<timestamp>" in steps
    assert ENV_SECRET not in "".join(steps) and all("\n" not in s for s in steps)
    assert _snapshot(live) == before  # a dry run reads the target, changes nothing

    assert not any("would add" in s for s in restore_plan(settings, "config_archive", DAY, str(tmp_path / "new"), False))
    assert not any("would add" in s for s in source.restore_plan(str(live), True, {}))  # no index: no comparison
    assert any("REFUSE" in s for s in source.restore_plan(str(live), False, {}))
