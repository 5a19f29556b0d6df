"""Redis: a fresh snapshot over the replication protocol, redis-check-rdb, and a full round trip."""

from __future__ import annotations

import io
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from erp_backup_pipeline.core.pipeline import run_backup
from erp_backup_pipeline.core.restore import restore_backup, verify_backup
from erp_backup_pipeline.core.sources.redis import RedisSource
from erp_backup_pipeline.errors import RestoreError, SourceError, VerifyError
from erp_backup_pipeline_devkit.servers import free_port, start_redis
from erp_backup_pipeline_tests.conftest import REDIS_PASSWORD, make_settings, redis_source, s3_destination


def fill(server: Any) -> None:
    r = server.client(0)
    r.set("session:alice", "token-a")
    r.set("session:bob", "token-b", ex=3600)
    r.hset("user:1", mapping={"name": "Anna Müller", "city": "Passau"})
    r.rpush("queue:mails", *[f"mail-{i}" for i in range(50)])
    r.sadd("tags", "granite", "marble", "slate")
    r.zadd("ranking", {"a": 1.5, "b": 2.25, "c": -3})
    r.xadd("events", {"type": "invoice.created", "id": "17"})
    r.xadd("events", {"type": "invoice.paid", "id": "17"})
    r.set("binary", bytes(range(256)))
    r.hset("cache:big", mapping={f"f{i}": "x" * 100 for i in range(500)})
    r.expire("cache:big", 7200)
    r1 = server.client(1)
    r1.set("db1:key", "in database one")
    r1.lpush("db1:list", "x", "y")


def value(r: Any, key: bytes) -> Any:
    kind = r.type(key)
    read = {b"string": r.get, b"hash": r.hgetall, b"list": lambda k: r.lrange(k, 0, -1), b"set": r.smembers,
            b"zset": lambda k: r.zrange(k, 0, -1, withscores=True), b"stream": lambda k: r.xrange(k)}
    return kind, read[kind](key)


def snapshot(server: Any) -> dict[tuple[int, bytes], tuple[Any, int]]:
    """Every key of db0..db2: its type and value, and its TTL rounded to 10 s (-1: none)."""
    found = {}
    for db in (0, 1, 2):
        r = server.client(db)
        for key in r.scan_iter():
            ttl = r.pttl(key)
            found[(db, key)] = (value(r, key), -1 if ttl < 0 else round(ttl / 10000))
    return found


def test_round_trip_every_type_value_and_ttl(tmp_path: Path, redis_server, empty_redis, age_identity,
                                            moto_server, bucket) -> None:
    fill(redis_server)
    settings = make_settings(tmp_path, age_identity, sources=redis_source(redis_server),
                             destinations=[{"type": "local", "path": str(tmp_path / "b")},
                                           s3_destination(moto_server, bucket)])
    m = run_backup(settings, "redis_snapshot", "2026-11-25")
    assert m.verify["method"] == "redis-check-rdb" and m.verify["keys"] == 11
    assert m.facts["keyspace"] == {"db0": 9, "db1": 2}
    assert m.artifact_key.endswith(".rdb.zst.age")
    result = restore_backup(settings, "redis_snapshot", "2026-11-25", empty_redis.url)
    assert result["keys"] == 11
    assert snapshot(empty_redis) == snapshot(redis_server)
    assert empty_redis.client(0).xlen("events") == 2


def test_the_snapshot_holds_keys_written_right_before_it(tmp_path: Path, redis_server, empty_redis,
                                                         age_identity) -> None:
    """Defect 3 of the original: it could copy a stale dump.rdb. SYNC makes a fresh snapshot."""
    settings = make_settings(tmp_path, age_identity, sources=redis_source(redis_server))
    redis_server.client().set("written:just:now", str(time.time()))
    run_backup(settings, "redis_snapshot", "2026-11-25")
    restore_backup(settings, "redis_snapshot", "2026-11-25", empty_redis.url)
    assert empty_redis.client().get("written:just:now") is not None


def test_restore_refuses_a_non_empty_target_and_force_saves_it_aside(tmp_path: Path, redis_server, age_identity) -> None:
    fill(redis_server)
    settings = make_settings(tmp_path, age_identity, sources=redis_source(redis_server))
    run_backup(settings, "redis_snapshot", "2026-11-25")
    target = start_redis(None, tmp_path / "busy")
    try:
        target.client().set("live:key", "do not lose me")
        with pytest.raises(RestoreError, match=r"is not empty \(1 keys\); use --force"):
            restore_backup(settings, "redis_snapshot", "2026-11-25", target.url)
        assert target.client().dbsize() == 1
        result = restore_backup(settings, "redis_snapshot", "2026-11-25", target.url, force=True)
        aside = Path(result["kept_aside"])
        assert aside.parent == tmp_path / "staging" and aside.stat().st_mode & 0o777 == 0o600
        assert b"do not lose me" in aside.read_bytes()
        assert target.client().get("session:alice") == b"token-a"
    finally:
        target.stop()


def test_restore_into_a_directory_starts_with_redis_server(tmp_path: Path, redis_server, age_identity) -> None:
    fill(redis_server)
    settings = make_settings(tmp_path, age_identity, sources=redis_source(redis_server))
    run_backup(settings, "redis_snapshot", "2026-11-25")
    out = tmp_path / "restored-redis"
    result = restore_backup(settings, "redis_snapshot", "2026-11-25", str(out))
    assert result["target"] == str(out / "dump.rdb") and "redis-server --dir" in result["start"]
    port = free_port()
    proc = subprocess.Popen(["redis-server", "--dir", str(out), "--dbfilename", "dump.rdb", "--port", str(port),
                             "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"], stdout=subprocess.DEVNULL)
    try:
        import redis

        r = redis.Redis(port=port)
        for _ in range(100):
            try:
                if r.ping():
                    break
            except redis.ConnectionError:
                time.sleep(0.05)
        assert r.get("session:alice") == b"token-a" and r.zscore("ranking", "b") == 2.25
    finally:
        proc.terminate()
        proc.wait()


@pytest.mark.parametrize("change, expected", [
    ({"password": "wrong-redis-pw"},
     r"redis 127\.0\.0\.1:\d+: cannot connect: authentication failed \(wrong username or password\)"),
    ({"password": None}, r"redis 127\.0\.0\.1:\d+: cannot connect: authentication required \(set sources\.redis\.password\)"),
    ({"port": 1}, r"redis 127\.0\.0\.1:1: cannot connect"),
    ({"bin_dir": "/nonexistent-bin"}, r"redis-check-rdb not found in /nonexistent-bin"),
])
def test_bad_connection_settings_are_one_line(tmp_path: Path, redis_server, age_identity, change, expected) -> None:
    import re

    settings = make_settings(tmp_path, age_identity, sources=redis_source(redis_server, **change))
    with pytest.raises(Exception) as err:
        run_backup(settings, "redis_snapshot", "2026-11-25")
    message = str(err.value)
    assert re.search(expected, message), message
    assert "\n" not in message and REDIS_PASSWORD not in message and "wrong-redis-pw" not in message


def test_garbage_fails_redis_check_rdb(tmp_path: Path) -> None:
    with pytest.raises(VerifyError, match="redis-check-rdb rejects the snapshot"):
        RedisSource(host="x", port=1).verify(io.BytesIO(b"REDIS0009" + os.urandom(5000)), tmp_path, {})


def test_verify_cli_path_and_dropped_connection(tmp_path: Path, redis_server, age_identity) -> None:
    fill(redis_server)
    settings = make_settings(tmp_path, age_identity, sources=redis_source(redis_server))
    run_backup(settings, "redis_snapshot", "2026-11-25")
    assert verify_backup(settings, "redis_snapshot", "2026-11-25")["keys"] == 11


def test_server_dying_mid_snapshot_fails_cleanly(tmp_path: Path, redis_server) -> None:
    """Redis killed during SYNC: the dump fails with one line, never a short artifact that looks whole."""
    r = redis_server.client()
    pipe = r.pipeline(transaction=False)
    for i in range(200_000):
        pipe.set(f"k:{i}", os.urandom(64).hex())
    pipe.execute()
    src = RedisSource(host="127.0.0.1", port=redis_server.port, password=REDIS_PASSWORD)
    stream = src.open_dump(tmp_path, {})
    assert stream.read(4096).startswith(b"REDIS")
    redis_server.proc.kill()
    redis_server.proc.wait()
    closed = r"connection closed (with \d+ bytes of the snapshot missing|before the end of the snapshot)"
    with pytest.raises(SourceError, match=closed):
        while stream.read(65536):
            pass
        stream.finish()


def _aof_written(server: Any) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        info = server.client().info("persistence")
        if info["aof_enabled"] and not info["aof_rewrite_in_progress"] and not info["aof_rewrite_scheduled"]:
            return
        time.sleep(0.05)
    raise AssertionError("AOF rewrite did not finish within 20 s")


def test_a_redis_with_aof_on_round_trips_into_aof_backed_servers(tmp_path: Path, age_identity) -> None:
    """The AOF set is not archived (docs/guide/backups.md, Redis): SYNC's snapshot holds the same keys, taken for this backup.

    What an AOF installation needs is a restore that ends in an AOF-backed server keeping every key across a
    restart, both ways docs/runbook.md gives: into a running AOF instance, and the directory plus the documented
    ``--appendonly no`` start and ``CONFIG SET appendonly yes``.
    """
    source = start_redis(None, tmp_path / "aof-source", appendonly=True)
    servers = [source]
    try:
        fill(source)
        settings = make_settings(tmp_path, age_identity, sources=redis_source(source))
        run_backup(settings, "redis_snapshot", "2026-11-25")

        live = start_redis(None, tmp_path / "aof-live", appendonly=True)
        servers.append(live)
        restore_backup(settings, "redis_snapshot", "2026-11-25", live.url)
        live.stop()
        servers.append(relive := start_redis(None, tmp_path / "aof-live", appendonly=True))
        assert snapshot(relive) == snapshot(source)

        out = tmp_path / "aof-dir"
        restore_backup(settings, "redis_snapshot", "2026-11-25", str(out))
        servers.append(first := start_redis(None, out))  # the documented start: --appendonly no
        first.client().config_set("appendonly", "yes")
        _aof_written(first)
        first.stop()
        assert list((out / "appendonlydir").iterdir())
        servers.append(aof := start_redis(None, out, appendonly=True))
        assert snapshot(aof) == snapshot(source)
    finally:
        for server in servers:
            server.stop()
