"""The Redis cases, against a throwaway redis-server holding 1 M keys of session/cache shape (``data.fill_redis``).
``repl-diskless-sync-delay`` is set to 0 on that server first: ``redis-cli --rdb`` asks for a diskless sync, which
otherwise waits 5 s for more replicas; the cases compare the dumpers, not that delay.

  (r0) floor     ``redis-cli -h 127.0.0.1 -p PORT --rdb FILE``; artifact = the RDB file
  (r1) pipeline  ``redis_snapshot`` materialized exactly like (c) (child process, moto S3, age, the default
                 compression); timed around ``materialize``
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.child import materialize_case
from bench.data import REDIS_KEYS, fill_redis
from bench.measure import redis_cpu, run_case, timed

if TYPE_CHECKING:
    from bench.context import Bench


def setup_redis(bench: Bench) -> dict[str, Any]:
    """A redis-server filled with ``REDIS_KEYS`` keys; ``repl-diskless-sync-delay`` set to 0."""
    from erp_backup_pipeline.orchestration.assets import BACKUP_ASSETS
    from erp_backup_pipeline_devkit.servers import start_redis

    if "redis_snapshot" not in BACKUP_ASSETS:
        raise RuntimeError(f"no asset 'redis_snapshot' in BACKUP_ASSETS ({', '.join(BACKUP_ASSETS)})")
    t0 = time.perf_counter()
    bench.redis = start_redis(password=None, base=Path(tempfile.mkdtemp(prefix="erp-bench-redis-")))
    client = bench.redis.client()
    version = client.info("server")["redis_version"]
    print(f"redis: redis-server {version} pid {bench.redis.proc.pid} port {bench.redis.port} "
          f"({time.perf_counter() - t0:.1f} s); filling {REDIS_KEYS:,} keys ...", flush=True)
    info = fill_redis(client)
    if info["keys"] != REDIS_KEYS:
        raise RuntimeError(f"redis holds {info['keys']} keys, expected {REDIS_KEYS}")
    client.config_set("repl-diskless-sync-delay", 0)
    info["repl_diskless_sync_delay"] = int(client.config_get("repl-diskless-sync-delay")["repl-diskless-sync-delay"])
    info["redis_version"] = version
    print(f"redis: {info['keys']:,} keys {info['types']} (strings avg {info['string_avg_bytes']} bytes) generated "
          f"in {info['generate_s']} s; INFO memory used_memory_human {info['used_memory_human']}", flush=True)
    print("redis: CONFIG SET repl-diskless-sync-delay 0 (was 5 s by default) before (r0) and (r1): "
          "`redis-cli --rdb` asks for a diskless sync, which would first wait that delay", flush=True)
    return info


def case_r0(bench: Bench, label: str) -> dict[str, Any]:
    """(r0) the floor: ``redis-cli --rdb FILE``; artifact = the RDB file."""
    rdb = bench.tmp / f"r0-{label}.rdb"
    cpu0 = redis_cpu(bench.redis)
    r = timed(["redis-cli", "-h", "127.0.0.1", "-p", str(bench.redis.port), "--rdb", str(rdb)], dict(os.environ))
    size = rdb.stat().st_size
    rdb.unlink()
    return {"wall_s": r["wall_s"], "artifact_bytes": size, "peak_rss_bytes": r["peak_rss_bytes"],
            "client_cpu_s": r["cpu_s"], "server_cpu_s": redis_cpu(bench.redis) - cpu0, "max_staging_bytes": 0}


def case_r1(bench: Bench, label: str, public_key: str, profile: bool = False) -> dict[str, Any]:
    """(r1) ``redis_snapshot`` materialized like (c)."""
    return materialize_case(bench, "", label, public_key, profile=profile, asset="redis_snapshot",
                            sources={"redis": {"host": "127.0.0.1", "port": bench.redis.port}})


def redis_section(bench: Bench, runs: dict[str, list[dict[str, Any]]], public: str, repeat: int) -> dict[str, Any]:
    """Set-up, then (r0) and (r1) ``repeat`` times, interleaved; ``results["redis"]``: the keys, and the
    section's seconds."""
    t_redis = time.perf_counter()
    info = setup_redis(bench)
    for rep in range(repeat):
        for key, fn in (("r0", lambda rep=rep: case_r0(bench, f"{rep}")),
                        ("r1", lambda rep=rep: case_r1(bench, f"redis{rep}", public))):
            run_case(runs, key, fn, rep, repeat)
    info["section_s"] = round(time.perf_counter() - t_redis, 1)
    print(f"redis section took {info['section_s']} s", flush=True)
    return info
