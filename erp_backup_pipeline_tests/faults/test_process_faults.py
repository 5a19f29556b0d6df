"""Process faults with real servers: a backup SIGKILLed at each stage, S3 failing and hanging behind a proxy,
PostgreSQL and Redis restarted mid-stream, two runs of one partition at once, and the hourly partitions
across the DST change days. After each: no half-written backup, the earlier one intact and verifying, and
the next run (or, for what only a day-old sweep may remove, the next day's run) succeeds and cleans up."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import dagster as dg
import psutil
import psycopg
import pytest

from erp_backup_pipeline.core import chain, pipeline
from erp_backup_pipeline.core.catalog import of as catalog_of
from erp_backup_pipeline.core.destinations import s3 as s3_module
from erp_backup_pipeline.core.pipeline import run_backup
from erp_backup_pipeline.core.prune import prune
from erp_backup_pipeline.core.restore import verify_backup
from erp_backup_pipeline.errors import DESTINATION
from erp_backup_pipeline.orchestration.assets import daily_partitions
from erp_backup_pipeline.orchestration.pitr import hourly_partitions
from erp_backup_pipeline_tests.conftest import (
    S3_KEY_ID,
    S3_SECRET,
    pg_source,
    redis_source,
    s3_destination,
)
from erp_backup_pipeline_tests.faults.tools import (
    Fault,
    catalog,
    create_big_database,
    drop_database,
    error_lines,
    is_complete,
    is_manifest_put,
    is_upload_part,
    kill_leftovers,
    local_files,
    multipart_uploads,
    pids_alive,
    s3_objects,
    s3_proxy,
    settings_of,
    start_cli,
    verify_entry,
    wait_for,
    write_config,
)

GOOD, KILLED = "2026-11-24", "2026-11-25"
BIG_ROWS = 400_000  # about 80 MB dumped, 45 MB compressed: several seconds of streaming, 9 parts of 5 MiB


@pytest.fixture(scope="module")
def big_db(pg_server: Any) -> Iterator[str]:
    name = create_big_database(pg_server, BIG_ROWS)
    try:
        yield name
    finally:
        drop_database(pg_server, name)


def _pg_config(tmp_path: Path, age_identity: Any, pg: Any, db: str, moto: Any, bucket: str, **s3: Any) -> Path:
    return write_config(tmp_path, age_identity, sources=pg_source(pg, db), destinations=[
        {"type": "local", "name": "local", "path": str(tmp_path / "backups")},
        s3_destination(moto, bucket, multipart_threshold_mb=5, part_size_mb=5, **s3)])


def _finish(proc: subprocess.Popen[str], timeout: float = 600) -> tuple[int, str, str]:
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise AssertionError(f"erp-backup still running after {timeout:.0f} s: {err[-2000:]}") from None
    return proc.returncode, out, err


def _cli_backup(config: Path, partition: str) -> None:
    rc, out, err = _finish(start_cli(config, "backup", "postgres_dump", "--partition", partition))
    assert rc == 0, err


class _DayLater(datetime):
    """The S3 destination's clock a day and an hour on: what the next day's run sees."""

    @classmethod
    def now(cls, tz: Any = None) -> Any:  # type: ignore[override]
        return datetime.now(tz) + timedelta(hours=25)


def _age_by_a_day(paths: list[Path]) -> None:
    then = datetime.now().timestamp() - 25 * 3600
    for p in paths:
        os.utime(p, (then, then))


def _leftovers(tmp_path: Path, s3_client: Any, bucket: str) -> dict[str, list[str]]:
    backups = tmp_path / "backups"
    staging = tmp_path / "staging" / "postgres_dump"
    return {"partial files": sorted(p.name for p in backups.rglob("*") if ".partial-" in p.name) if backups.exists()
            else [],
            "scratch dirs": sorted(p.name for p in staging.iterdir()) if staging.exists() else [],
            "multipart uploads": sorted(u["Key"] for u in multipart_uploads(s3_client, bucket))}


# --- 1. SIGKILL of a real `erp-backup backup` process ---------------------------------------------------------

_DIE_IN_MANIFEST = """\
import os, signal, sys
from erp_backup_pipeline import cli
from erp_backup_pipeline.core import pipeline

def _killed_before_the_manifest(*args, **kwargs):  # a timing double: the process dies right here
    os.kill(os.getpid(), signal.SIGKILL)

pipeline.stage_manifest = _killed_before_the_manifest
sys.exit(cli.main(sys.argv[1:]))
"""


def _children(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


@pytest.mark.parametrize("moment", ["dump", "upload", "manifest"])
def test_sigkill_leaves_no_half_backup_and_the_next_runs_recover(
        moment: str, tmp_path: Path, age_identity: Any, pg_server: Any, big_db: str, moto_server: Any,
        bucket: str, s3_client: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """SIGKILL while pg_dump streams (before any part is up), while the multipart upload is under way, and
    between the upload's commit and the manifest."""
    config = _pg_config(tmp_path, age_identity, pg_server, big_db, moto_server, bucket)
    settings = settings_of(config)
    _cli_backup(config, GOOD)
    [good] = catalog(settings)
    before_local, before_s3 = local_files(tmp_path / "backups"), s3_objects(s3_client, bucket)

    script = None
    if moment == "manifest":
        script = str(tmp_path / "die_in_manifest.py")
        Path(script).write_text(_DIE_IN_MANIFEST)
    proc = start_cli(config, "backup", "postgres_dump", "--partition", KILLED, script=script)
    children: list[int] = []
    try:
        if moment == "dump":
            found = wait_for("pg_dump streaming", lambda: [c for c in _children(proc.pid) if c.name() == "pg_dump"])
            children = [c.pid for c in _children(proc.pid)]
            proc.send_signal(signal.SIGKILL)
            assert found
        elif moment == "upload":
            def parts_up() -> bool:
                return any(s3_client.list_parts(Bucket=bucket, Key=u["Key"], UploadId=u["UploadId"]).get("Parts")
                           for u in multipart_uploads(s3_client, bucket))
            wait_for("a part of the multipart upload on S3", parts_up)
            children = [c.pid for c in _children(proc.pid)]
            proc.send_signal(signal.SIGKILL)
        rc, _, err = _finish(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert rc == -signal.SIGKILL, err
    # pg_dump and pg_restore die with their reader/writer: nothing keeps a snapshot or connection open
    try:
        wait_for("the killed run's children to exit", lambda: not pids_alive(children), timeout=60)
    finally:
        kill_leftovers(children)

    # no half-written backup: the catalog shows the good one only, byte for byte as before, and it verifies
    assert [e.manifest.key for e in catalog(settings)] == [good.manifest.key]
    after_local, after_s3 = local_files(tmp_path / "backups"), s3_objects(s3_client, bucket)
    assert {k: after_local[k] for k in before_local} == before_local
    assert {k: after_s3[k] for k in before_s3} == before_s3
    assert verify_backup(settings, "postgres_dump", GOOD)["ok"]
    left = _leftovers(tmp_path, s3_client, bucket)
    new_local = sorted(set(after_local) - set(before_local))
    new_s3 = sorted(set(after_s3) - set(before_s3))
    if moment == "manifest":  # committed, never described: invisible to the catalog, not a backup
        names = sorted(Path(k).name.split(".", 1)[1] for k in new_local + new_s3)  # the artifact and its attachments
        assert names == sorted(["pgdump.zst.age", "globals.sql.zst.age", "database.json.zst.age"] * 2)
        assert left["multipart uploads"] == [] and left["partial files"] == []
    else:
        assert new_s3 == []
        assert [k for k in new_local if ".partial-" not in Path(k).name] == []
        if moment == "upload":
            assert len(left["multipart uploads"]) == 1 and len(left["partial files"]) == 1

    # the next run succeeds at once (it leaves a young upload alone: it could be a live run's)
    _cli_backup(config, KILLED)
    assert [e.manifest.partition for e in catalog(settings)] == [GOOD, KILLED]
    assert verify_backup(settings, "postgres_dump", KILLED)["ok"]
    assert _leftovers(tmp_path, s3_client, bucket) == left

    # the next day's run removes what the killed run left behind
    staging = tmp_path / "staging" / "postgres_dump"
    _age_by_a_day([p for p in (tmp_path / "backups").rglob("*") if ".partial-" in p.name]
                  + [p for p in staging.iterdir()])
    monkeypatch.setattr(s3_module, "datetime", _DayLater)
    lines: list[str] = []
    run_backup(settings, "postgres_dump", "2026-11-26", lambda text, *_: lines.append(text))
    assert _leftovers(tmp_path, s3_client, bucket) == {"partial files": [], "scratch dirs": [],
                                                        "multipart uploads": []}
    if left != {"partial files": [], "scratch dirs": [], "multipart uploads": []}:
        assert any("left by an interrupted backup" in ln for ln in lines)
    entries = catalog(settings)
    assert [e.manifest.partition for e in entries] == [GOOD, KILLED, "2026-11-26"]
    assert all(verify_entry(settings, e) for e in entries)
    if moment == "manifest":
        _prune_sweeps_the_orphans(settings, tmp_path, s3_client, bucket, new_local, new_s3)


def _prune_sweeps_the_orphans(settings: Any, tmp_path: Path, s3_client: Any, bucket: str, local_keys: list[str],
                              s3_keys: list[str]) -> None:
    """The artifact (and its attachments) the killed run committed but never described stay while a run could still
    write its manifest (retention.orphan_grace_hours, 48 h) and are swept by prune after it, from both destinations;
    nothing else goes."""
    assert [f"site-a/{k}" for k in local_keys] == s3_keys and len(local_keys) == 3
    held = local_files(tmp_path / "backups"), s3_objects(s3_client, bucket)
    now = datetime.now(UTC)
    young = prune(settings, now=now + timedelta(hours=1), dry_run=False, log=pytest.fail)
    assert sorted((o.destination, o.key, a) for o, a, _ in young.orphans) == sorted(
        (d, k, "keep") for d in ("local", "offsite") for k in local_keys)
    assert young.deleted == young.failed == []
    assert (local_files(tmp_path / "backups"), s3_objects(s3_client, bucket)) == held
    lines: list[str] = []
    swept = prune(settings, now=now + timedelta(days=3), dry_run=False, log=lines.append)
    assert sorted((o.destination, o.key, a) for o, a, _ in swept.orphans) == sorted(
        (d, k, "deleted") for d in ("local", "offsite") for k in local_keys)
    assert swept.deleted == swept.failed == [] and len(lines) == 6
    assert local_files(tmp_path / "backups") == {k: v for k, v in held[0].items() if k not in local_keys}
    assert s3_objects(s3_client, bucket) == {k: v for k, v in held[1].items() if k not in s3_keys}
    entries = catalog(settings)
    assert [e.manifest.partition for e in entries] == [GOOD, KILLED, "2026-11-26"]
    assert all(verify_entry(settings, e) for e in entries)


# --- 2. S3 answering 500/503 and hanging, behind a fault-injecting proxy ------------------------------------------

def _random_sqlite(path: Path, megabytes: int = 12) -> Path:
    import sqlite3

    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE blobs (id INTEGER PRIMARY KEY, data BLOB)")
        conn.executemany("INSERT INTO blobs(data) VALUES (?)", [(os.urandom(100_000),) for _ in range(megabytes * 10)])
    conn.close()
    return path


def _proxied_sqlite_config(tmp_path: Path, age_identity: Any, proxy: Any, bucket: str, **s3: Any) -> Path:
    dest = {"type": "s3", "name": "offsite", "bucket": bucket, "prefix": "site-a", "endpoint_url": proxy.endpoint,
            "access_key_id": S3_KEY_ID, "secret_access_key": S3_SECRET, "multipart_threshold_mb": 5,
            "part_size_mb": 5, **s3}
    return write_config(tmp_path, age_identity, sources={"sqlite": {"path": str(_random_sqlite(tmp_path / "erp.db"))}},
                        destinations=[dest])


def _is_signature_put(method: str, target: str) -> bool:
    return method == "PUT" and urlsplit(target).path.endswith(".manifest.json.sig")


def _is_ledger_put(method: str, target: str) -> bool:
    return method == "PUT" and urlsplit(target).path.endswith("/chain.json")


def test_a_burst_of_s3_errors_and_timeouts_is_retried_and_the_backup_succeeds(
        tmp_path: Path, age_identity: Any, moto_server: Any, bucket: str, s3_client: Any) -> None:
    """503 SlowDown twice and a hang past the read timeout on UploadPart, 500 on CompleteMultipartUpload, 503 on
    the PutObject of the manifest's signature and of the manifest, 500 on the chain ledger's: each request is retried
    (standard mode: backoff with jitter) and the run succeeds, its capture signed into the chain and the ledger
    written."""
    with s3_proxy(moto_server.endpoint) as proxy:
        proxy.faults = [Fault(is_upload_part, 2, 503), Fault(is_upload_part, 1, 0, hang=6.0),
                        Fault(is_complete, 1, 500), Fault(_is_signature_put, 1, 503), Fault(is_manifest_put, 1, 503),
                        Fault(_is_ledger_put, 1, 500)]
        settings = settings_of(_proxied_sqlite_config(tmp_path, age_identity, proxy, bucket, read_timeout_seconds=2))
        m = run_backup(settings, "sqlite_backup", KILLED)
        assert [f.injected for f in proxy.faults] == [2, 1, 1, 1, 1, 1]
        parts = -(-m.artifact_bytes // (5 << 20))
        assert parts >= 3
        assert proxy.count("forwarded", is_upload_part) == parts  # each part stored once
        assert proxy.count(None, is_upload_part) == parts + 3  # ... after three failed tries
        assert proxy.count(None, is_complete) == 2 and proxy.count(None, is_manifest_put) == 2
        assert proxy.count(None, _is_signature_put) == 2 and proxy.count(None, _is_ledger_put) == 2
        assert verify_backup(settings, "sqlite_backup", KILLED)["ok"]
    assert m.sequence == 1 and m.previous is None
    found = catalog_of(settings, "sqlite_backup")
    assert [e.manifest.key for e in found.entries] == [m.key]
    assert (found.rejected, found.findings, found.gaps, found.errors) == ([], [], [], [])
    assert found.ledgers["sqlite_backup"]["offsite"].sequence == 1
    assert sorted(s3_objects(s3_client, bucket)) == sorted(
        f"site-a/{k}" for k in (m.artifact_key, m.key, m.key + ".sig", chain.ledger_key(settings.prefix, "sqlite_backup")))
    assert multipart_uploads(s3_client, bucket) == []
    assert not any((tmp_path / "staging").rglob("*.sqlite3"))


def test_a_long_s3_outage_fails_the_run_with_one_line_and_no_manifest_points_at_nothing(
        tmp_path: Path, age_identity: Any, moto_server: Any, bucket: str, s3_client: Any,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """S3 answers 503 to everything from the first UploadPart on, through every retry: the run fails with one
    line; nothing becomes visible; the earlier backup is intact; once S3 is back the next run succeeds, and the
    upload the outage kept the run from aborting is swept by the next day's run."""
    with s3_proxy(moto_server.endpoint) as proxy:
        config = _proxied_sqlite_config(tmp_path, age_identity, proxy, bucket, max_attempts=3)
        settings = settings_of(config)
        good = run_backup(settings, "sqlite_backup", GOOD)
        before = s3_objects(s3_client, bucket)
        outage = threading.Event()

        def down(method: str, target: str) -> bool:
            if is_upload_part(method, target):
                outage.set()
            return outage.is_set()

        proxy.faults = [Fault(down, 10**9, 503)]
        t0 = time.monotonic()
        rc, out, err = _finish(start_cli(config, "backup", "sqlite_backup", "--partition", KILLED))
        print(f"failed after {time.monotonic() - t0:.1f} s, {proxy.count('503')} requests refused: {err}")
        assert rc == DESTINATION.code and out == "" and "Traceback" not in err  # the destination is down: 13
        [line] = error_lines(err)
        assert line.startswith(f"erp-backup: error: sqlite_backup {KILLED}: ") and "SlowDown" in line, line
        tries = proxy.count("503", is_upload_part)
        assert tries >= 3  # the first part, tried max_attempts times
        assert s3_objects(s3_client, bucket) == before  # no artifact, no manifest: nothing points at nothing
        stranded = multipart_uploads(s3_client, bucket)
        assert len(stranded) <= 1  # its abort met the outage too
        assert not any((tmp_path / "staging").rglob("*.sqlite3"))

        proxy.faults = []  # S3 is back
        assert [e.manifest.key for e in catalog(settings)] == [good.key]
        again = run_backup(settings, "sqlite_backup", KILLED)
        assert verify_backup(settings, "sqlite_backup", GOOD)["ok"] and verify_backup(settings, "sqlite_backup", KILLED)
        assert multipart_uploads(s3_client, bucket) == stranded  # young: it could be a live run's
        monkeypatch.setattr(s3_module, "datetime", _DayLater)
        run_backup(settings, "sqlite_backup", "2026-11-26")
        assert multipart_uploads(s3_client, bucket) == []
        assert [e.manifest.key for e in catalog(settings)][:2] == [good.key, again.key]


# --- 3. PostgreSQL restarted mid-dump ---------------------------------------------------------------------------

def _copy_running(pg: Any, db: str) -> bool:
    try:
        with psycopg.connect(pg.dsn(), autocommit=True, connect_timeout=5) as conn:
            row = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND query LIKE 'COPY %%'",
                               (db,)).fetchone()
            return bool(row and row[0])
    except psycopg.Error:
        return False


def _no_leftovers(tmp_path: Path, s3_client: Any, bucket: str, source: str) -> None:
    backups, staging = tmp_path / "backups", tmp_path / "staging" / source
    assert not backups.exists() or [p for p in backups.rglob("*") if p.is_file()] == []
    assert not staging.exists() or list(staging.iterdir()) == []
    assert s3_objects(s3_client, bucket) == {} and multipart_uploads(s3_client, bucket) == []


def _backup_with_fault(config: Path, source: str, wait: Any, fault: Any) -> tuple[int, str, str]:
    """``erp-backup backup SOURCE`` in its own process; once ``wait()`` returns, ``fault()``; its exit code and output."""
    proc = start_cli(config, "backup", source, "--partition", KILLED)
    try:
        wait()
        fault()
        return _finish(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_postgres_restarted_mid_dump_fails_with_one_line_and_ships_nothing(
        tmp_path: Path, age_identity: Any, pg_server: Any, big_db: str, moto_server: Any, bucket: str,
        s3_client: Any) -> None:
    config = _pg_config(tmp_path, age_identity, pg_server, big_db, moto_server, bucket)
    rc, out, err = _backup_with_fault(config, "postgres_dump",
                                      lambda: wait_for("pg_dump's COPY", lambda: _copy_running(pg_server, big_db)),
                                      pg_server.restart)
    assert rc == 1 and out == "" and "Traceback" not in err
    [line] = error_lines(err)
    assert line.startswith(f"erp-backup: error: postgres_dump {KILLED}: "), line
    # the reason, not pg_dump's last line ("detail: Command was: COPY ..."), which was all it said before
    assert re.search(r"pg_dump failed \(exit 1\): pg_dump: error: .*(terminating connection|server closed the "
                     r"connection|connection to server)", line), line
    _no_leftovers(tmp_path, s3_client, bucket, "postgres_dump")
    _cli_backup(config, KILLED)  # the server is back: the next run works
    assert verify_backup(settings_of(config), "postgres_dump", KILLED)["ok"]


def test_the_op_retry_policy_recovers_a_dagster_run_when_postgres_is_back(
        tmp_path: Path, age_identity: Any, pg_server: Any, big_db: str, moto_server: Any, bucket: str,
        s3_client: Any) -> None:
    from erp_backup_pipeline.orchestration.assets import BACKUP_ASSETS, build_backup_asset, source_spec
    from erp_backup_pipeline.orchestration.resources import BackupSettingsResource

    config = _pg_config(tmp_path, age_identity, pg_server, big_db, moto_server, bucket)
    restarted = threading.Event()

    def restart_mid_dump() -> None:
        wait_for("pg_dump's COPY", lambda: _copy_running(pg_server, big_db))
        pg_server.restart()
        restarted.set()

    thread = threading.Thread(target=restart_mid_dump, daemon=True)
    thread.start()
    info = BACKUP_ASSETS["postgres_dump"]
    result = dg.materialize([build_backup_asset(info), source_spec(info)], partition_key=KILLED,
                            resources={"backup_settings": BackupSettingsResource.pinned(str(config))},
                            raise_on_error=False)
    thread.join(timeout=120)
    assert restarted.is_set()
    assert result.success
    retried = [e for e in result.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"]
    # one retry, or two when the first comes while the server is still starting (the delay is 5 s, jittered)
    assert 1 <= len(retried) <= 2 and {e.step_key for e in retried} == {"postgres_dump.postgres_dump_compress"}
    assert "pg_dump" in str(retried[0].event_specific_data)
    settings = settings_of(config)
    [entry] = catalog(settings)
    verify_entry(settings, entry)
    assert multipart_uploads(s3_client, bucket) == []
    assert [p for p in (tmp_path / "backups").rglob("*") if ".partial-" in p.name] == []
    assert not (tmp_path / "staging" / "postgres_dump").exists() or \
        list((tmp_path / "staging" / "postgres_dump").iterdir()) == []


# --- 4. Redis restarted mid-SYNC --------------------------------------------------------------------------------

def _restart_redis(server: Any) -> None:
    """SIGTERM, then the same server again on the same port and directory (as systemd would restart it)."""
    from erp_backup_pipeline_devkit.servers import stop_process

    assert server.proc is not None
    stop_process(server.proc)
    argv = ["redis-server", "--port", str(server.port), "--bind", "127.0.0.1", "--dir", str(server.base),
            "--save", "", "--appendonly", "no", "--logfile", str(server.base / "redis.log"),
            "--repl-diskless-sync-delay", "0", "--requirepass", server.password]
    server.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def answers() -> bool:
        try:
            return bool(server.client().ping())
        except Exception:
            return False
    wait_for("redis back", answers, timeout=60)


def test_redis_restarted_mid_sync_fails_with_one_line_and_the_next_run_succeeds(
        tmp_path: Path, age_identity: Any, redis_server: Any, moto_server: Any, bucket: str, s3_client: Any) -> None:
    r = redis_server.client()
    pipe = r.pipeline(transaction=False)
    for i in range(20_000):
        pipe.set(f"doc:{i}", os.urandom(2048))
    pipe.execute()
    config = write_config(tmp_path, age_identity, sources=redis_source(redis_server), destinations=[
        {"type": "local", "name": "local", "path": str(tmp_path / "backups")},
        s3_destination(moto_server, bucket, multipart_threshold_mb=5, part_size_mb=5)])
    def syncing() -> bool:
        try:
            return bool(r.info("persistence").get("rdb_bgsave_in_progress"))
        except Exception:
            return False

    rc, out, err = _backup_with_fault(config, "redis_snapshot",
                                      lambda: wait_for("the SYNC snapshot streaming", syncing, interval=0.005),
                                      lambda: _restart_redis(redis_server))
    assert rc == 1 and out == "" and "Traceback" not in err
    [line] = error_lines(err)
    assert line.startswith(f"erp-backup: error: redis_snapshot {KILLED}: redis "), line
    assert "connection closed" in line or "snapshot" in line, line
    _no_leftovers(tmp_path, s3_client, bucket, "redis_snapshot")
    redis_server.client().set("after:restart", "1")
    rc, out, err = _finish(start_cli(config, "backup", "redis_snapshot", "--partition", KILLED))
    assert rc == 0, err
    assert verify_backup(settings_of(config), "redis_snapshot", KILLED)["ok"]


# --- 5. Two runs of one partition at once -----------------------------------------------------------------------

def test_two_runs_of_one_partition_at_once_never_interleave(
        tmp_path: Path, age_identity: Any, pg_server: Any, big_db: str, moto_server: Any, bucket: str,
        s3_client: Any) -> None:
    """A manual run during the scheduled one: both complete as two captures with their own keys (or one is
    refused with one line); every manifest in the catalog verifies against its own artifact."""
    config = _pg_config(tmp_path, age_identity, pg_server, big_db, moto_server, bucket)
    procs = [start_cli(config, "backup", "postgres_dump", "--partition", KILLED) for _ in range(2)]
    results = [_finish(p) for p in procs]
    ok = [r for r in results if r[0] == 0]
    for rc, _, err in results:
        if rc != 0:
            assert len(error_lines(err)) == 1 and "Traceback" not in err, err
    assert ok
    settings = settings_of(config)
    entries = catalog(settings)
    assert len(entries) == len(ok) and all(e.manifest.partition == KILLED for e in entries)
    keys = [e.manifest.artifact_key for e in entries]
    assert len(set(keys)) == len(keys) and len({e.manifest.key for e in entries}) == len(entries)
    assert [verify_entry(settings, e) for e in entries] == keys
    for e in entries:
        assert sorted(e.held_by) == ["local", "offsite"]
    assert multipart_uploads(s3_client, bucket) == []
    assert [p for p in (tmp_path / "backups").rglob("*") if ".partial-" in p.name] == []


def test_two_captures_in_the_same_millisecond_get_their_own_names(
        tmp_path: Path, age_identity: Any, demo_sqlite: Path, moto_server: Any, bucket: str, s3_client: Any,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Two runs of one source and partition that start in the same millisecond (two hosts, or a manual run at the
    scheduled moment). The stamp named the scratch dir and both keys by the millisecond alone: the second capture
    failed with a FileExistsError traceback, and on two hosts the second upload could overwrite the first's artifact
    under the first's manifest. Each stamp now carries a random token, drawn again should it collide."""
    settings = settings_of(write_config(tmp_path, age_identity, sources={"sqlite": {"path": str(demo_sqlite)}},
                                        destinations=[{"type": "local", "name": "local", "path": str(tmp_path / "b")},
                                                      s3_destination(moto_server, bucket)]))
    now = datetime(2026, 11, 25, 1, 0, 0, 123456, tzinfo=UTC)
    a, b = (pipeline.new_capture(settings, "sqlite_backup", KILLED, now=now) for _ in range(2))
    assert a.stamp != b.stamp and a.workdir != b.workdir
    assert re.fullmatch(r"20261125T010000123Z-[0-9a-f]{8}", a.stamp) and a.stamp[:19] == b.stamp[:19]
    assert pipeline.stamp_time(a.stamp) == pipeline.stamp_time(b.stamp) == now.replace(microsecond=123000)
    assert pipeline.stamp_time("20261125T010000123Z") == now.replace(microsecond=123000)  # before the token
    for stage in pipeline.STAGES:  # interleaved, as two processes would run them
        a, b = stage(settings, a), stage(settings, b)
    with ThreadPoolExecutor(2) as pool:  # and both commit at once: the source's chain lock puts them in an order
        ma, mb = pool.map(lambda capture: pipeline.stage_manifest(settings, capture), (a, b))
    assert len({ma.artifact_key, mb.artifact_key, ma.key, mb.key}) == 4
    entries = catalog(settings)
    assert sorted(e.manifest.key for e in entries) == sorted([ma.key, mb.key])
    assert [sorted(e.held_by) for e in entries] == [["local", "offsite"]] * 2
    assert sorted(verify_entry(settings, e) for e in entries) == sorted([ma.artifact_key, mb.artifact_key])
    # one chain: the two captures are sequences 1 and 2, the second linked to the first; no fork, nothing rejected
    found = catalog_of(settings, "sqlite_backup")
    assert (found.rejected, found.findings, found.gaps, found.errors) == ([], [], [], [])
    first, second = sorted(found.entries, key=lambda e: e.manifest.sequence)
    assert (first.manifest.sequence, second.manifest.sequence) == (1, 2) and sorted([ma.sequence, mb.sequence]) == [1, 2]
    assert first.manifest.previous is None and second.manifest.previous == first.sha256
    assert {n: ledger.sequence for n, ledger in found.ledgers["sqlite_backup"].items()} == {"local": 2, "offsite": 2}
    assert sorted(s3_objects(s3_client, bucket)) == sorted(
        [f"site-a/{k}" for m in (ma, mb) for k in (m.artifact_key, m.key, m.key + ".sig")]
        + [f"site-a/{chain.ledger_key(settings.prefix, 'sqlite_backup')}"])
    # the same token twice in one millisecond: the second capture draws again
    tokens = iter(["0badc0de", "0badc0de", "5eed1e55"])
    monkeypatch.setattr(pipeline.secrets, "token_hex", lambda n: next(tokens))
    c, d = (pipeline.new_capture(settings, "sqlite_backup", KILLED, now=now) for _ in range(2))
    assert (c.stamp, d.stamp) == ("20261125T010000123Z-0badc0de", "20261125T010000123Z-5eed1e55")
    for capture in (c, d):
        Path(capture.workdir).rmdir()


# --- 6. Clock and calendar --------------------------------------------------------------------------------------

@pytest.mark.parametrize("day", ["2026-03-29", "2026-10-25"])
def test_hourly_utc_partitions_have_no_gap_across_the_dst_change_days(day: str) -> None:
    start = datetime.fromisoformat(day).replace(tzinfo=UTC) - timedelta(days=1)
    keys = hourly_partitions.get_partition_keys_in_range(
        dg.PartitionKeyRange(f"{start:%Y-%m-%d-%H:%M}", f"{start + timedelta(hours=71):%Y-%m-%d-%H:%M}"))
    assert len(keys) == len(set(keys)) == 72
    starts = [hourly_partitions.time_window_for_partition_key(k).start.astimezone(UTC) for k in keys]
    assert starts == [start + timedelta(hours=h) for h in range(72)]
    for k in keys:
        window = hourly_partitions.time_window_for_partition_key(k)
        assert window.end - window.start == timedelta(hours=1)
    # the daily (Europe/Berlin) partition of that day is one partition of 23 or 25 hours
    window = daily_partitions.time_window_for_partition_key(day)
    assert window.end.astimezone(UTC) - window.start.astimezone(UTC) == \
        timedelta(hours=23 if day.endswith("03-29") else 25)
    assert daily_partitions.get_partition_keys_in_range(dg.PartitionKeyRange(day, day)) == [day]
