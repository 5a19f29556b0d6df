"""Hostile and broken input, table-driven: each case sets something up, runs the real product (pipeline,
restore, verify or the CLI) and expects either one clear line matching its regex, or success (the cases
where hostile-looking input is legitimate data: odd file names, symlink loops, links out of the tree).

After every case, nothing earlier is touched: the earlier good backup's manifest and artifact have the same
sha256 as before, it still verifies, and the live ERP database is unchanged.

Forged artifacts are what someone with write access to a destination could produce: the recipient is
public, so they can encrypt a malicious tar to it and write a matching manifest. Restore must still refuse
to write outside its target.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import io
import json
import os
import re
import stat
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyrage
import pytest
import yaml

from erp_backup_pipeline.cli import main
from erp_backup_pipeline.core.codecs import compressor
from erp_backup_pipeline.core.manifest import Manifest
from erp_backup_pipeline.core.pipeline import run_backup
from erp_backup_pipeline.core.restore import restore_backup, verify_backup
from erp_backup_pipeline.errors import BackupError
from erp_backup_pipeline.settings import Settings, parse_settings
from erp_backup_pipeline_tests.conftest import ERP_PASSWORD, pg_source, sign_file, signing_section

EARLIER = "2026-11-24"  # the good backup every case must leave alone
DAY = "2026-11-25"
ODD = ["with space\nand newline.conf", os.fsdecode(b"caf\xe9 latin1.conf"), " leading space"]
OUTSIDE_SECRET = "outside-the-tree-6d0c4e"


class CliFailed(Exception):
    """The CLI exited non-zero; the message is what it printed on stderr."""


@dataclass
class Env:
    tmp: Path
    ident: tuple[Path, str]
    data: dict[str, Any]
    settings: Settings
    good: Manifest
    live_db: Path
    request: pytest.FixtureRequest

    @property
    def backups(self) -> Path:
        return self.tmp / "backups"

    def with_data(self, edit: Callable[[dict[str, Any]], Any]) -> dict[str, Any]:
        data = copy.deepcopy(self.data)
        edit(data)
        return data

    def settings_from(self, data: dict[str, Any]) -> Settings:
        return parse_settings(data, "test", self.tmp)

    def write_config(self, data: dict[str, Any] | str) -> Path:
        path = self.tmp / "erp-backup.yaml"
        path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
        return path

    def path_of(self, key: str) -> Path:
        return self.backups / key

    def manifest_path(self, m: Manifest) -> Path:
        return self.backups / m.key


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _host_tree(root: Path) -> None:
    """A config dir: odd names, a symlink loop, links pointing out of the tree (a file and a directory)."""
    conf = root / "etc erp"
    (conf / "sub dir").mkdir(parents=True)
    (conf / "app.yml").write_text("listen: 8080\n")
    for name in ODD:
        (conf / "sub dir" / name).write_bytes(b"odd " + os.fsencode(name))
    outside = root / "outside"
    outside.mkdir()
    (outside / "secret.pem").write_text(OUTSIDE_SECRET)
    (conf / "loop-a").symlink_to("loop-b")
    (conf / "loop-b").symlink_to("loop-a")
    (conf / "self").symlink_to(".")
    (conf / "out-file").symlink_to(outside / "secret.pem")
    (conf / "out-dir").symlink_to(outside)
    (conf / "dangling").symlink_to("/nonexistent/nowhere")


@pytest.fixture
def env(tmp_path: Path, demo_sqlite: Path, age_identity: tuple[Path, str], request: pytest.FixtureRequest) -> Env:
    _host_tree(tmp_path / "host")
    uploads = tmp_path / "uploads"
    (uploads / "2026").mkdir(parents=True)
    (uploads / "2026" / "RE-1.pdf").write_bytes(b"%PDF invoice 1")
    data: dict[str, Any] = {
        "staging_dir": str(tmp_path / "staging"),
        "state_dir": str(tmp_path / "state"),
        "encryption": {"codec": "age", "recipients": [age_identity[1]], "identity_file": str(age_identity[0])},
        "signing": signing_section(),
        "destinations": [{"type": "local", "name": "local", "path": str(tmp_path / "backups")}],
        "sources": {"sqlite": {"path": str(demo_sqlite)},
                    "config": {"paths": [str(tmp_path / "host" / "etc erp")], "root": str(tmp_path / "host")},
                    "uploads": {"path": str(uploads)}},
    }
    settings = parse_settings(data, "test", tmp_path)
    good = run_backup(settings, "sqlite_backup", EARLIER)
    return Env(tmp_path, age_identity, data, settings, good, demo_sqlite, request)


def cli(env: Env, *argv: str, config: Path | None = None) -> str:
    """Run erp-backup in-process; raise CliFailed with its stderr when it fails, else return stdout."""
    out, err = io.StringIO(), io.StringIO()
    config = config or env.write_config(env.data)
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(["--config", str(config), *argv])
    if rc != 0:
        raise CliFailed(err.getvalue().strip())
    return out.getvalue()


# --- forging and editing what a destination holds ------------------------------------------------------------


def _edit_manifest(env: Env, m: Manifest, edit: Callable[[dict[str, Any]], Any]) -> None:
    path = env.manifest_path(m)
    raw = json.loads(path.read_bytes())
    edit(raw)
    path.write_text(json.dumps(raw))
    sign_file(path)  # as if the signing key had leaked too: content checks still hold (unsigned: test_forged_catalog)


def _forge(env: Env, source: str, plaintext: bytes, recipient: str | None = None) -> Manifest:
    """Back up ``source`` for DAY, then replace its artifact by ``plaintext`` compressed and encrypted to
    ``recipient`` (default: the real one), with a manifest that matches it in every checksum."""
    m = run_backup(env.settings, source, DAY)
    out = io.BytesIO()
    compressor("zstd").compress(io.BytesIO(plaintext), out)
    cipher = pyrage.encrypt(out.getvalue(), [pyrage.x25519.Recipient.from_str(recipient or env.ident[1])])
    env.path_of(m.artifact_key).write_bytes(cipher)

    def edit(raw: dict[str, Any]) -> None:
        raw["artifact_sha256"] = hashlib.sha256(cipher).hexdigest()
        raw["artifact_bytes"] = len(cipher)
        for entry in raw["chain"]:
            if entry["stage"] == "dump":
                entry["bytes"], entry["sha256"] = len(plaintext), hashlib.sha256(plaintext).hexdigest()
        raw["facts"].pop("index", None)  # a forger need not know it; restore checks the archive's own index

    _edit_manifest(env, m, edit)
    return m


def _tar(members: list[tuple[tarfile.TarInfo, bytes | None]]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return out.getvalue()


def _member(name: str, data: bytes | None = None, kind: bytes = tarfile.REGTYPE, linkname: str = "") -> tuple[
        tarfile.TarInfo, bytes | None]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mode, info.size = kind, linkname, 0o644, len(data or b"")
    return info, data


def _config_tar(*members: tuple[tarfile.TarInfo, bytes | None]) -> bytes:
    """A config archive with a matching index as its last member, as the real archiver writes it."""
    index = [{"name": i.name, "type": "symlink" if i.issym() else "file", "size": i.size, "linkname": i.linkname,
              "sha256": hashlib.sha256(d or b"").hexdigest()} for i, d in members]
    return _tar([*members, _member(".erp-backup-index.json", json.dumps(index).encode())])


def _uploads_tar(snapshot: list[dict[str, Any]], blobs: list[bytes]) -> bytes:
    members = [_member("blobs/" + hashlib.sha256(b).hexdigest(), b) for b in blobs]
    return _tar([*members, _member(".erp-backup-snapshot.json", json.dumps(snapshot).encode())])


def _file_entry(name: str, content: bytes) -> dict[str, Any]:
    return {"name": name, "type": "file", "mode": 0o644, "uid": os.getuid(), "gid": os.getgid(),
            "mtime_ns": 1_750_000_000_000_000_000, "size": len(content), "ino": 1,
            "sha256": hashlib.sha256(content).hexdigest(), "holder": None}


def _restore_forged(env: Env, source: str, plaintext: bytes) -> None:
    """Forge an artifact and restore it into a new target next to a victim dir, which must stay empty."""
    _forge(env, source, plaintext)
    victim = env.tmp / "victim"
    victim.mkdir()
    try:
        restore_backup(env.settings, source, DAY, str(env.tmp / "target" / "restored"))
    finally:
        assert list(victim.iterdir()) == [], "restore wrote outside its target"
        assert not (env.tmp / "etc" / "passwd").exists() and not (env.tmp / "target" / "etc").exists()
        assert not (env.tmp / "target").exists() or not any(
            p.name.startswith("restored") for p in (env.tmp / "target").iterdir()), "a partial target was left"


# --- the cases' actions ----------------------------------------------------------------------------------------


def config_error(text: str) -> Callable[[Env], Any]:
    """The CLI with a config file holding ``text``: it must fail before any work."""
    return lambda env: cli(env, "backup", "sqlite", "--partition", DAY, config=env.write_config(text))


def config_edit(edit: Callable[[dict[str, Any]], Any], *argv: str) -> Callable[[Env], Any]:
    return lambda env: cli(env, *(argv or ("backup", "sqlite", "--partition", DAY)),
                           config=env.write_config(env.with_data(edit)))


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def edit(data: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node: Any = data
        for p in parents:
            node = node[int(p)] if isinstance(node, list) else node.setdefault(p, {})
        if value is _DELETE:
            del node[last]
        else:
            node[last] = value
    return edit


_DELETE = object()


def _secret_file(env: Env, name: str, mode: int | None, text: str = ERP_PASSWORD) -> Path:
    path = env.tmp / name
    if mode is not None:
        path.write_text(text + "\n")
        path.chmod(mode)
    return path


def postgres_with_secret_file(mode: int | None) -> Callable[[Env], Any]:
    """A postgres source whose password_file is unsafe or missing: refused before any connection is tried."""
    def run(env: Env) -> Any:
        secret = _secret_file(env, "pgpass", mode)
        data = env.with_data(_set("sources.postgres", {"host": "127.0.0.1", "port": 1, "user": "erp_user",
                                                       "dbname": "erp", "password_file": str(secret)}))
        return run_backup(env.settings_from(data), "postgres_dump", DAY)
    return run


def s3_with_secret_file(env: Env) -> Any:
    secret = _secret_file(env, "s3secret", 0o644)
    data = env.with_data(lambda d: d["destinations"].append(
        {"type": "s3", "name": "offsite", "bucket": "b", "endpoint_url": "http://127.0.0.1:1",
         "access_key_id": "k", "secret_access_key_file": str(secret)}))
    return cli(env, "backup", "sqlite", "--partition", DAY, config=env.write_config(data))


def unset_env_password(env: Env) -> Any:
    os.environ.pop("ERP_FAULT_DB_PASSWORD", None)
    data = env.with_data(_set("sources.postgres", {"host": "127.0.0.1", "user": "u", "dbname": "d",
                                                   "password": "${ERP_FAULT_DB_PASSWORD}"}))
    return cli(env, "backup", "postgres", "--partition", DAY, config=env.write_config(data))


def identity(mode: int | None, text: str | None = None) -> Callable[[Env], Any]:
    """verify with an identity file that is world-readable, missing or not a key."""
    def run(env: Env) -> Any:
        path = _secret_file(env, "other.key", mode, text if text is not None else env.ident[0].read_text())
        data = env.with_data(_set("encryption.identity_file", str(path)))
        return verify_backup(env.settings_from(data), "sqlite_backup", EARLIER)
    return run


def config_archive_round_trip(env: Env) -> None:
    """Odd names, loops and links out of the tree: backed up as they are (links as links), restored identical."""
    m = run_backup(env.settings, "config_archive", DAY)
    raw = env.path_of(m.artifact_key).read_bytes()
    names = {e["name"]: e for e in m.facts["index"]}
    assert {names[f"etc erp/{n}"]["type"] for n in ("loop-a", "loop-b", "self", "out-file", "out-dir", "dangling")} \
        == {"symlink"}
    assert not any(n.startswith("etc erp/out-dir/") or n.startswith("etc erp/self/") for n in names)
    target = env.tmp / "restored"
    restore_backup(env.settings, "config_archive", DAY, str(target))
    src, back = env.tmp / "host" / "etc erp", target / "etc erp"
    for name in ODD:
        assert (back / "sub dir" / name).read_bytes() == (src / "sub dir" / name).read_bytes()
    for link in ("loop-a", "loop-b", "self", "out-file", "out-dir", "dangling"):
        assert (back / link).is_symlink() and os.readlink(back / link) == os.readlink(src / link)
    assert OUTSIDE_SECRET not in "".join(p.read_text(errors="replace") for p in target.rglob("*")
                                         if p.is_file() and not p.is_symlink())
    assert OUTSIDE_SECRET.encode() not in raw
    assert verify_backup(env.settings, "config_archive", DAY)["ok"]


def uploads_round_trip(env: Env) -> None:
    up = Path(env.data["sources"]["uploads"]["path"])
    for name in ODD:
        (up / "2026" / name).write_bytes(os.fsencode(name) * 3)
    (up / "2026" / "loop").symlink_to("loop")
    (up / "out").symlink_to(env.tmp / "host" / "outside")
    run_backup(env.settings, "uploads_snapshot", DAY)
    target = env.tmp / "restored"
    restore_backup(env.settings, "uploads_snapshot", DAY, str(target))
    for name in ODD:
        assert (target / "2026" / name).read_bytes() == os.fsencode(name) * 3
    assert os.readlink(target / "2026" / "loop") == "loop"
    assert os.readlink(target / "out") == str(env.tmp / "host" / "outside")
    assert not (target / "out").resolve().is_relative_to(target)  # a link, its target not copied in


def tampered(edit: Callable[[dict[str, Any]], Any], action: str = "verify") -> Callable[[Env], Any]:
    """A second backup (DAY) whose manifest was edited by hand, then verified or restored."""
    def run(env: Env) -> Any:
        m = run_backup(env.settings, "sqlite_backup", DAY)
        _edit_manifest(env, m, edit)
        if action == "verify":
            return verify_backup(env.settings, "sqlite_backup", DAY)
        if action == "list":
            return cli(env, "verify", "sqlite", "--partition", DAY)
        return restore_backup(env.settings, "sqlite_backup", DAY, str(env.tmp / "restored.sqlite3"))
    return run


def _stage(name: str, key: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def edit(raw: dict[str, Any]) -> None:
        next(e for e in raw["chain"] if e["stage"] == name)[key] = value
    return edit


def corrupt_manifest(text: bytes) -> Callable[[Env], Any]:
    def run(env: Env) -> Any:
        m = run_backup(env.settings, "sqlite_backup", DAY)
        env.manifest_path(m).write_bytes(text)
        sign_file(env.manifest_path(m))
        listing = cli(env, "list", "--json")  # the damaged manifest does not hide the good backups
        assert [r["partition"] for r in json.loads(listing)["captures"]] == [EARLIER]
        return cli(env, "verify", "sqlite", "--partition", DAY)
    return run


def artifact_damage(kind: str) -> Callable[[Env], Any]:
    def run(env: Env) -> Any:
        m = run_backup(env.settings, "sqlite_backup", DAY)
        path = env.path_of(m.artifact_key)
        raw = path.read_bytes()
        if kind == "missing":
            path.unlink()
        elif kind in ("truncated", "truncated-resigned"):
            path.write_bytes(raw[: len(raw) // 2])
            if kind == "truncated-resigned":  # the manifest's checksum fixed too: decryption must notice
                _edit_manifest(env, m, lambda r: r.update(artifact_sha256=_sha(path), artifact_bytes=len(raw) // 2))
        elif kind == "other-key":
            other = pyrage.x25519.Identity.generate()
            plain = io.BytesIO()
            pyrage.decrypt_io(io.BytesIO(raw), plain, [pyrage.x25519.Identity.from_str(
                next(ln for ln in env.ident[0].read_text().splitlines() if ln.startswith("AGE-SECRET-KEY-")))])
            path.write_bytes(pyrage.encrypt(plain.getvalue(), [other.to_public()]))
            _edit_manifest(env, m, lambda r: r.update(artifact_sha256=_sha(path), artifact_bytes=path.stat().st_size))
        return cli(env, "restore", "sqlite", "--partition", DAY, "--to", str(env.tmp / "restored.sqlite3"))
    return run


def restore_onto_live_sqlite(env: Env) -> Any:
    return cli(env, "restore", "sqlite", "--partition", EARLIER, "--to", str(env.live_db))


def restore_onto_live_postgres(env: Env) -> Any:
    pg = env.request.getfixturevalue("pg_server")
    db = env.request.getfixturevalue("erp_db")
    data = env.with_data(lambda d: d["sources"].update(pg_source(pg, db)))
    settings = env.settings_from(data)
    run_backup(settings, "postgres_dump", DAY)
    import psycopg

    def fingerprint() -> Any:
        with psycopg.connect(pg.dsn(db, "erp_user", ERP_PASSWORD)) as conn:
            return conn.execute("SELECT count(*), sum(hashtext(details)) FROM audit_log").fetchone()

    before = fingerprint()
    try:
        return cli(env, "restore", "postgres", "--partition", DAY, "--to", db, config=env.write_config(data))
    finally:
        assert fingerprint() == before


def restore_into_non_empty(source: str) -> Callable[[Env], Any]:
    def run(env: Env) -> Any:
        run_backup(env.settings, source, DAY)
        target = env.tmp / "live"
        target.mkdir()
        (target / "keep.me").write_text("live data")
        try:
            return restore_backup(env.settings, source, DAY, str(target))
        finally:
            assert [p.name for p in target.iterdir()] == ["keep.me"]
    return run


def _outside_link(env: Env) -> str:
    return str(env.tmp / "victim")


def _link(name: str, target: str) -> dict[str, Any]:
    return {"name": name, "type": "symlink", "linkname": target, "mode": 0o777, "uid": os.getuid(),
            "gid": os.getgid(), "mtime_ns": 0}


PASSWD = b"root::0:0::/:/bin/sh\n"
CONFIG_TRAVERSAL: dict[str, tuple[Callable[[Env], bytes], str]] = {
    "dotdot": (lambda env: _config_tar(_member("../../etc/passwd", PASSWD)),
               r"^files: unsafe member name \.\./\.\./etc/passwd \(absolute or with '\.\.'\); refusing to restore$"),
    "absolute": (lambda env: _config_tar(_member(str(env.tmp / "victim" / "passwd"), PASSWD)),
                 r"^files: unsafe member name /.*/victim/passwd \(absolute or with '\.\.'\)"),
    "file-through-link": (lambda env: _config_tar(_member("esc", kind=tarfile.SYMTYPE, linkname=_outside_link(env)),
                                                  _member("esc/passwd", PASSWD)),
                          r"^files: cannot restore esc: file exists$"),  # links are created last: esc is a dir
    "link-through-link": (lambda env: _config_tar(_member("esc", kind=tarfile.SYMTYPE, linkname=_outside_link(env)),
                                                  _member("esc/x", kind=tarfile.SYMTYPE, linkname="/etc/passwd")),
                          r"^files: member esc/x would be written outside the target through a link$"),
    "hardlink": (lambda env: _config_tar(_member("h", kind=tarfile.LNKTYPE, linkname="/etc/passwd")),
                 r"^files: member h is a special file \(hard link or device\); refusing to restore it$"),
}
UPLOADS_TRAVERSAL: dict[str, tuple[Callable[[Env], bytes], str]] = {
    "dotdot": (lambda env: _uploads_tar([_file_entry("../../etc/passwd", PASSWD)], [PASSWD]),
               r"^uploads: refusing the unsafe path \.\./\.\./etc/passwd$"),
    "absolute": (lambda env: _uploads_tar([_file_entry(str(env.tmp / "victim" / "passwd"), PASSWD)], [PASSWD]),
                 r"^uploads: refusing the unsafe path /.*/victim/passwd$"),
    # these two wrote victim/passwd before the fix (uploads.py: links last, parents resolved inside the target)
    "file-through-link": (lambda env: _uploads_tar([_link("esc", _outside_link(env)), _file_entry("esc/passwd", PASSWD)],
                                                   [PASSWD]),
                          r"^uploads: cannot restore the link esc: file exists$"),
    "link-through-link": (lambda env: _uploads_tar([_link("esc", _outside_link(env)), _link("esc/passwd", "/etc/passwd")],
                                                   []),
                          r"^uploads: esc/passwd would be written outside the target through a link$"),
    "member-name": (lambda env: _tar([_member("../../etc/passwd", PASSWD)]),
                    r"^uploads: unexpected member \.\./\.\./etc/passwd in the artifact$"),
}


def forged(source: str, build: Callable[[Env], bytes]) -> Callable[[Env], Any]:
    return lambda env: _restore_forged(env, source, build(env))


CHECKSUM_MISMATCH = r"no intact copy of the artifact: local: .*checksum mismatch \(expected [0-9a-f]{12}\.\.\., got"


@dataclass(frozen=True)
class Case:
    id: str
    action: Callable[[Env], Any]
    error: str | None  # a regex the one-line error must match; None: the action must succeed


CASES = [
    # configuration: typos, wrong types, broken files (the CLI, one line, before any work)
    Case("config-typo-top-level", config_edit(lambda d: d.update(destinatons=d.pop("destinations"))),
         r"destinatons: unknown key \(did you mean 'destinations'\?\)"),
    Case("config-typo-nested", config_edit(_set("sources.sqlite.paht", "x")),
         r"sources\.sqlite\.paht: unknown key \(did you mean 'path'\?\)"),
    Case("config-wrong-type-port", config_edit(_set("sources.postgres", {"port": "fivefourthreetwo"})),
         r"sources\.postgres\.port: Input should be a valid integer"),
    Case("config-wrong-type-bool", config_edit(_set("destinations.0.required", "perhaps")),
         r"destinations\.0\.required: Input should be a valid boolean"),
    Case("config-wrong-type-list", config_edit(_set("sources.config.paths", 42)),
         r"sources\.config\.paths: Input should be a valid list"),
    Case("config-level-out-of-range", config_edit(_set("compression.level", 99)), r"compression\.level: .*22"),
    Case("config-missing-required-key", config_edit(_set("destinations.0.path", _DELETE)),
         r"destinations\.0.*path"),
    Case("config-unknown-codec", config_edit(_set("encryption.codec", "rot13")), r"encryption\.codec: Input should be"),
    Case("config-not-a-mapping", config_error("- just\n- a list\n"), r"config .*erp-backup\.yaml.*mapping"),
    Case("config-broken-yaml", config_error("sources: {sqlite: [unclosed\n"), r"line \d+: not valid YAML"),
    Case("config-empty-file", config_error(""), r"config .*erp-backup\.yaml.*"),
    Case("config-unknown-source-on-cli", config_edit(lambda d: None, "verify", "mysql", "--partition", EARLIER),
         r"unknown source 'mysql'"),
    # secrets missing or unreadable
    Case("secret-file-0644", postgres_with_secret_file(0o644),
         r"sources\.postgres\.password_file: secret file .*pgpass has mode 0644; it must be 0600"),
    Case("secret-file-missing", postgres_with_secret_file(None),
         r"sources\.postgres\.password_file: cannot read secret file .*pgpass: No such file"),
    Case("secret-env-unset", unset_env_password,
         r"sources\.postgres\.password: environment variable ERP_FAULT_DB_PASSWORD is not set"),
    Case("s3-secret-file-0644", s3_with_secret_file, r"secret_access_key_file: secret file .* has mode 0644"),
    Case("identity-file-0644", identity(0o644), r"encryption\.identity_file: secret file .* has mode 0644"),
    Case("identity-file-missing", identity(None), r"encryption\.identity_file: cannot read secret file .*other\.key"),
    Case("identity-file-not-a-key", identity(0o600, "hello\n"), r"other\.key holds no AGE-SECRET-KEY line"),
    # names and links that are legitimate data: backed up and restored byte-identical, links as links
    Case("config-odd-names-loops-and-links-out", config_archive_round_trip, None),
    Case("uploads-odd-names-loops-and-links-out", uploads_round_trip, None),
    # a manifest edited by hand
    Case("manifest-wrong-artifact-sha256", tampered(lambda r: r.update(artifact_sha256="0" * 64)),
         CHECKSUM_MISMATCH),
    Case("manifest-wrong-dump-sha256", tampered(_stage("dump", "sha256", "f" * 64), "restore"),
         r"decrypted content differs from the dump recorded in the manifest"),
    Case("manifest-unknown-compression-codec", tampered(_stage("compress", "codec", "lz4"), "restore"),
         r"unknown compression codec 'lz4'"),
    Case("manifest-unknown-encryption-codec", tampered(_stage("encrypt", "codec", "rot13")),
         r"artifact is encrypted with rot13, config says age"),
    Case("manifest-artifact-key-traversal",
         tampered(lambda r: r.update(artifact_key="erp-steinmetz/../../../../etc/passwd")),
         r"rejected, first local: .*: misplaced: it names erp-steinmetz/\.\./\.\./\.\./\.\./etc/passwd, which is not beside"),
    Case("manifest-not-json", corrupt_manifest(b"{not json"), r"manifest\.json: not a valid manifest"),
    Case("manifest-missing-fields", corrupt_manifest(b'{"source": "sqlite_backup"}'),
         r"manifest\.json: not a valid manifest"),
    # forged archives: restore never writes outside its target
    *(Case(f"config-forged-{k}", forged("config_archive", build), error) for k, (build, error) in CONFIG_TRAVERSAL.items()),
    *(Case(f"uploads-forged-{k}", forged("uploads_snapshot", build), error)
      for k, (build, error) in UPLOADS_TRAVERSAL.items()),
    # damaged artifacts
    Case("artifact-truncated", artifact_damage("truncated"), CHECKSUM_MISMATCH),
    Case("artifact-truncated-manifest-resigned", artifact_damage("truncated-resigned"),
         r"decryption failed|not a valid zstd stream|ends inside|truncated"),
    Case("artifact-encrypted-to-another-key", artifact_damage("other-key"),
         r"age: decryption failed; wrong identity or damaged artifact"),
    Case("artifact-missing", artifact_damage("missing"), r"no intact copy of the artifact: local: .*(not found|no such)"),
    # restore targets that hold live data
    Case("restore-onto-live-sqlite", restore_onto_live_sqlite, r"restore target .*production\.sqlite3 exists; use --force"),
    Case("restore-onto-live-postgres", restore_onto_live_postgres, r"database erp_\w+ exists; use --force"),
    Case("restore-config-into-non-empty-dir", restore_into_non_empty("config_archive"),
         r"restore target .*live is not empty; use --force"),
    Case("restore-uploads-into-non-empty-dir", restore_into_non_empty("uploads_snapshot"),
         r"restore target .*live is not empty; use --force"),
    Case("restore-partition-traversal", lambda env: cli(env, "restore", "sqlite", "--partition", "../../2026-11-24",
                                                        "--to", str(env.tmp / "x.sqlite3")),
         r"error: --partition '\.\./\.\./2026-11-24' is not a date: write it YYYY-MM-DD"),
]


def _earlier_state(env: Env) -> dict[str, str]:
    return {"manifest": _sha(env.manifest_path(env.good)), "artifact": _sha(env.path_of(env.good.artifact_key)),
            "live_db": _sha(env.live_db)}


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_hostile_input(case: Case, env: Env) -> None:
    before = _earlier_state(env)
    if case.error is None:
        case.action(env)
    else:
        with pytest.raises((BackupError, CliFailed)) as err:
            case.action(env)
        message = str(err.value)
        assert "\n" not in message and "Traceback" not in message, message
        assert re.search(case.error, message), message
        assert ERP_PASSWORD not in message
    assert _earlier_state(env) == before
    assert verify_backup(env.settings, "sqlite_backup", EARLIER)["ok"]
    assert [p for p in (env.tmp / "staging").rglob("*") if p.is_file()] == []  # scratch space released
    assert not any(stat.S_ISREG(p.lstat().st_mode) and ".partial-" in p.name for p in env.backups.rglob("*"))


def test_the_table_is_big_enough() -> None:
    assert len(CASES) >= 30 and len({c.id for c in CASES}) == len(CASES)
