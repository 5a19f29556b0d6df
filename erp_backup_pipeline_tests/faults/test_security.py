"""Security properties, tested on real runs: no secret in logs, Dagster events, metadata, manifests, error text
or any child process's argv; every staging and artifact file 0600 in 0700 directories from creation (under a
permissive umask); and the backup host needs only the public key.

The GPG codec takes no passphrase (it encrypts to public keys in a keyring; decryption uses gpg-agent's key),
so there is no GPG secret for the pipeline to leak.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import sqlite3
import stat
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import yaml

from erp_backup_pipeline.cli import main
from erp_backup_pipeline.core.pipeline import run_backup
from erp_backup_pipeline.core.restore import restore_backup, verify_backup
from erp_backup_pipeline.errors import CREDENTIALS, ConfigError
from erp_backup_pipeline.orchestration.assets import BACKUP_ASSETS, build_backup_asset, source_spec
from erp_backup_pipeline.orchestration.resources import BackupSettingsResource
from erp_backup_pipeline_tests.conftest import (
    ERP_PASSWORD,
    S3_KEY_ID,
    S3_SECRET,
    make_settings,
    signing_section,
    stored_manifests,
)

DAY = "2026-11-25"
WRONG_PASSWORD = "Wrong-Pw-0c9e77-secret"


def _descendants(root: int) -> list[int]:
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError, ValueError, IndexError):
                stat_line = Path(f"/proc/{entry}/stat").read_text()
                parents[int(entry)] = int(stat_line.rsplit(")", 1)[1].split()[1])
    found, frontier = [], [root]
    while frontier:
        pid = frontier.pop()
        children = [p for p, pp in parents.items() if pp == pid]
        found += children
        frontier += children
    return found


@contextlib.contextmanager
def argv_sampler() -> Iterator[list[list[str]]]:
    """Every distinct argv of this process's descendants, sampled every few ms while the block runs."""
    seen: dict[tuple[str, ...], None] = {}
    stop = threading.Event()

    def poll() -> None:
        while not stop.is_set():
            for pid in _descendants(os.getpid()):
                with contextlib.suppress(OSError):
                    raw = Path(f"/proc/{pid}/cmdline").read_bytes()
                    if raw:
                        seen.setdefault(tuple(os.fsdecode(a) for a in raw.rstrip(b"\0").split(b"\0")), None)
            stop.wait(0.005)

    thread = threading.Thread(target=poll, daemon=True)
    thread.start()
    result: list[list[str]] = []
    try:
        yield result
    finally:
        stop.set()
        thread.join()
        result += [list(a) for a in seen]


def _config(tmp_path: Path, name: str, age_identity: tuple[Path, str], sources: dict[str, Any],
            destinations: list[dict[str, Any]]) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump({
        "staging_dir": str(tmp_path / "staging"),
        "encryption": {"recipients": [age_identity[1]], "identity_file": str(age_identity[0])},
        "signing": signing_section(),
        "destinations": destinations, "sources": sources}))
    return path


def _materialize(config: Path, instance: dg.DagsterInstance) -> dg.ExecuteInProcessResult:
    info = BACKUP_ASSETS["postgres_dump"]
    return dg.materialize([build_backup_asset(info), source_spec(info)], partition_key=DAY, instance=instance,
                          resources={"backup_settings": BackupSettingsResource.pinned(str(config))},
                          raise_on_error=False)


def _event_texts(result: dg.ExecuteInProcessResult, instance: dg.DagsterInstance) -> list[str]:
    """Every event of the run as stored (log lines included), and every metadata value, as text."""
    texts = [repr(e) for e in result.all_events]
    for record in instance.all_logs(result.run_id):
        texts.append(record.user_message or "")
        texts.append(repr(record.dagster_event))
    for mat in result.get_asset_materialization_events():
        texts += [f"{k}={v.value!r}" for k, v in mat.materialization.metadata.items()]
    for check in result.get_asset_check_evaluations():
        texts += [f"{k}={v.value!r}" for k, v in check.metadata.items()]
    return texts


def test_no_secret_in_argv_logs_events_metadata_manifests_or_errors(
        tmp_path: Path, pg_server, erp_db, age_identity, moto_server, bucket, s3_client,
        caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]) -> None:
    caplog.set_level(logging.DEBUG)
    destinations = [{"type": "local", "path": str(tmp_path / "backups")},
                    {"type": "s3", "name": "offsite", "bucket": bucket, "endpoint_url": moto_server.endpoint,
                     "access_key_id": S3_KEY_ID, "secret_access_key": S3_SECRET}]
    source = {"host": "127.0.0.1", "port": pg_server.port, "user": "erp_user", "dbname": erp_db, "sslmode": "disable"}
    good = _config(tmp_path, "good", age_identity, {"postgres": {**source, "password": ERP_PASSWORD}}, destinations)
    bad = _config(tmp_path, "bad", age_identity, {"postgres": {**source, "password": WRONG_PASSWORD}}, destinations)
    identity_secret = next(ln for ln in age_identity[0].read_text().splitlines() if ln.startswith("AGE-SECRET-KEY-"))
    secrets = [ERP_PASSWORD, WRONG_PASSWORD, S3_SECRET, identity_secret]

    texts: list[str] = []
    with argv_sampler() as argvs:
        for config in (good, bad):
            instance = dg.DagsterInstance.ephemeral()
            result = _materialize(config, instance)
            texts += _event_texts(result, instance)
            assert result.success is (config == good)
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            assert main(["--config", str(good), "verify", "postgres", "--partition", DAY]) == 0
            assert main(["--config", str(good), "restore", "postgres", "--partition", DAY, "--to", erp_db + "_r"]) == 0
            assert main(["--config", str(bad), "backup", "postgres", "--partition", DAY]) == CREDENTIALS.code
        texts += [out.getvalue(), err.getvalue()]

    pg_runs = [a for a in argvs if Path(a[0]).name in ("pg_dump", "pg_restore")]
    assert {Path(a[0]).name for a in pg_runs} == {"pg_dump", "pg_restore"}, argvs  # we did watch them run
    assert all("--no-password" in a for a in pg_runs if "--host" in a)  # the password goes by environment
    texts += [" ".join(a) for a in argvs]
    texts += [f"{r.name} {r.levelname} {r.getMessage()} {r.exc_text or ''}" for r in caplog.records]
    texts += stored_manifests(tmp_path / "backups", s3_client, bucket)
    captured = capfd.readouterr()
    texts += [captured.out, captured.err]
    blob = "\n".join(texts)
    assert "password authentication failed" in blob and "artifact_sha256" in blob and "restored postgres_dump" in blob
    assert len(caplog.records) > 20  # DEBUG logging of every library was on
    for secret in secrets:
        assert secret not in blob, f"a secret ({secret[:4]}...) leaked"


# --- modes ------------------------------------------------------------------------------------------------------


def _loose(path: str, st: os.stat_result) -> bool:
    if stat.S_ISLNK(st.st_mode):
        return False
    return stat.S_IMODE(st.st_mode) != (0o700 if stat.S_ISDIR(st.st_mode) else 0o600)


@contextlib.contextmanager
def mode_watch(roots: list[Path], monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, int]]:
    """Record every path under ``roots`` seen with a mode other than 0600 (files) / 0700 (dirs): polled
    every ms while the block runs, and at every os.chmod the product makes (a mode fixed afterwards)."""
    bad: dict[str, int] = {}
    stop = threading.Event()
    real_chmod = os.chmod

    def under(path: str) -> bool:
        return any(path == str(r) or path.startswith(str(r) + os.sep) for r in roots)

    def scan() -> None:
        for root in roots:
            for dirpath, dirnames, filenames in os.walk(root):
                for name in [*dirnames, *filenames, ""]:
                    p = os.path.join(dirpath, name) if name else dirpath
                    with contextlib.suppress(OSError):
                        st = os.lstat(p)
                        if _loose(p, st):
                            bad.setdefault(p, stat.S_IMODE(st.st_mode))

    def poll() -> None:
        while not stop.is_set():
            scan()
            stop.wait(0.001)

    def chmod(path: Any, mode: int, *args: Any, **kwargs: Any) -> None:
        p = os.path.abspath(os.fsdecode(path)) if not isinstance(path, int) else ""
        if p and under(p):
            with contextlib.suppress(OSError):
                st = os.lstat(p)
                if _loose(p, st) and not stat.S_ISLNK(st.st_mode):
                    bad.setdefault(p + " (before chmod)", stat.S_IMODE(st.st_mode))
        real_chmod(path, mode, *args, **kwargs)

    monkeypatch.setattr(os, "chmod", chmod)
    thread = threading.Thread(target=poll, daemon=True)
    thread.start()
    try:
        yield bad
    finally:
        stop.set()
        thread.join()
        scan()


def _big_sqlite(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE docs (id INTEGER PRIMARY KEY, data BLOB)")
        conn.executemany("INSERT INTO docs(data) VALUES (?)", [(os.urandom(64_000),) for _ in range(64)])
    conn.close()
    return path


def test_every_staging_and_artifact_file_is_born_0600_in_0700_dirs(tmp_path: Path, age_identity,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Under umask 000 nothing the product creates may be wider than 0600/0700, not even for a moment."""
    uploads = tmp_path / "erp" / "uploads"
    (uploads / "2026").mkdir(parents=True)
    for i in range(20):
        (uploads / "2026" / f"RE-{i}.pdf").write_bytes(os.urandom(50_000))
    settings = make_settings(tmp_path, age_identity, state_dir=str(tmp_path / "state"), sources={
        "sqlite": {"path": str(_big_sqlite(tmp_path / "erp" / "erp.sqlite3"))},
        "uploads": {"path": str(uploads)}, "config": {"paths": [str(uploads / "2026")]}})
    roots = [tmp_path / "staging", tmp_path / "backups", tmp_path / "state"]
    old = os.umask(0)
    try:
        with mode_watch(roots, monkeypatch) as bad:
            for source in ("sqlite_backup", "uploads_snapshot", "config_archive"):
                run_backup(settings, source, DAY)
                assert verify_backup(settings, source, DAY)["ok"]
    finally:
        os.umask(old)
    files = [p for r in roots for p in r.rglob("*") if p.is_file()]
    # we watched real files: per source an artifact, its manifest, the manifest's signature, the chain ledger and
    # this host's chain state with its lock; and the uploads state
    names = {p.relative_to(tmp_path).as_posix() for p in files}
    for source in ("sqlite_backup", "uploads_snapshot", "config_archive"):
        assert {f"state/chain/{source}.json", f"state/chain/{source}.lock",
                f"backups/{settings.prefix}/{source}/chain.json"} <= names
        assert sum(n.startswith(f"backups/{settings.prefix}/{source}/{DAY}/") for n in names) == 3
        assert sum(n.startswith(f"backups/{settings.prefix}/{source}/{DAY}/") and n.endswith(".manifest.json.sig")
                   for n in names) == 1
    assert "state/uploads_snapshot.json" in names and len(files) >= 19
    assert bad == {}


# --- the backup host holds public keys only ---------------------------------------------------------------------


def test_backup_needs_only_the_public_key_and_decrypting_needs_the_identity(tmp_path: Path, demo_sqlite: Path,
                                                                            age_identity) -> None:
    public_only = make_settings(tmp_path, age_identity, sources={"sqlite": {"path": str(demo_sqlite)}},
                                encryption={"codec": "age", "recipients": [age_identity[1]]})
    m = run_backup(public_only, "sqlite_backup", DAY)
    assert m.complete and m.verify["ok"]  # verified in the stream, before encryption: no key needed
    needed = r"^encryption\.identity_file is not set; it is needed to decrypt \(verify/restore\)$"
    with pytest.raises(ConfigError, match=needed):
        verify_backup(public_only, "sqlite_backup", DAY)
    with pytest.raises(ConfigError, match=needed):
        restore_backup(public_only, "sqlite_backup", DAY, str(tmp_path / "restored.sqlite3"))
    assert not (tmp_path / "restored.sqlite3").exists()
    config = tmp_path / "public.yaml"
    config.write_text(yaml.safe_dump({"staging_dir": str(tmp_path / "staging"),
                                      "encryption": {"recipients": [age_identity[1]]},
                                      "signing": signing_section(),
                                      "destinations": [{"type": "local", "path": str(tmp_path / "backups")}],
                                      "sources": {"sqlite": {"path": str(demo_sqlite)}}}))
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        assert main(["--config", str(config), "verify", "sqlite", "--partition", DAY]) == 1
    assert err.getvalue() == ("erp-backup: error: encryption.identity_file is not set; it is needed to decrypt "
                              "(verify/restore)\n")

    with_identity = make_settings(tmp_path, age_identity, sources={"sqlite": {"path": str(demo_sqlite)}})
    assert verify_backup(with_identity, "sqlite_backup", DAY)["ok"]
    restored = restore_backup(with_identity, "sqlite_backup", DAY, str(tmp_path / "restored.sqlite3"))
    assert restored["integrity"] == "ok" and restored["rows"] > 0
