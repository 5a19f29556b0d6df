"""Whole-ERP recovery (w): the demo ERP's stores backed up once to moto S3 with age, in-process (``run_backup``):
``postgres_dump`` of the big ERP-like database (the one of (c)), ``redis_snapshot`` of a small redis-server (10,000
keys of the same shape), ``config_archive`` and ``uploads_snapshot`` of the demo ERP's config and uploads
(``core.demo``, plus 200 PDF-like files), no SQLite; ``recovery.document_references`` names 20 documents from the
invoices table. Then ``erp-backup recover``'s code (``plan_recovery`` + ``recover``) into a new directory and a new
database: each store's restore seconds, their total (the measured RTO), and the consistency checks' seconds.
Everything it started is stopped by PID and the database dropped. Run once, whatever ``--repeat`` says.
"""

from __future__ import annotations

import random
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.common import DEFAULT_COMPRESSION, MB, PARTITION
from bench.data import UPLOAD_SEED, drop_db, fill_redis, generate_db, pdf_like, pdf_text
from bench.measure import tree_size

if TYPE_CHECKING:
    from bench.context import Bench

RECOVERY_STORES = ("postgres_dump", "redis_snapshot", "config_archive", "uploads_snapshot")
RECOVERY_DOCS_QUERY = "SELECT format('invoices/RE-%s.pdf', lpad((id - 1)::text, 5, '0')) FROM invoices WHERE id <= 20"


def recovery_section(bench: Bench, dbs: dict[str, Any]) -> dict[str, Any]:
    """Back up a whole demo ERP (the big PostgreSQL, small Redis, config, uploads) once, then recover it."""
    from erp_backup_pipeline.core.codecs.age import generate_identity
    from erp_backup_pipeline.core.demo import create_demo
    from erp_backup_pipeline.core.pipeline import run_backup
    from erp_backup_pipeline.core.recovery import plan_recovery, recover
    from erp_backup_pipeline.core.recovery_servers import stop_servers
    from erp_backup_pipeline.settings import parse_settings
    from erp_backup_pipeline_devkit.servers import start_redis

    t_section = time.perf_counter()
    base = Path(tempfile.mkdtemp(prefix="recovery-", dir=bench.tmp))
    info: dict[str, Any] = {}
    if "big" in dbs:
        db = dbs["big"]
    else:  # running alone: only the big database
        db = generate_db(bench.pg, "erp_recovery_big", bench.invoices_for["big"])
        bench.recovery_dbs.append(db["dbname"])
        print(f"recovery: database {db['dbname']} {db['db_bytes'] / MB:.1f} MiB generated in {db['generate_s']} s",
              flush=True)
    info["database"] = {k: db[k] for k in ("dbname", "db_bytes", "rows")}
    bench.rec_redis = start_redis(password=None, base=base / "redis-src")
    info["redis"] = {k: v for k, v in fill_redis(bench.rec_redis.client(), n=10_000).items()
                     if k in ("keys", "used_memory", "used_memory_human")}
    demo = create_demo(base / "erp")
    rng = random.Random(UPLOAD_SEED)
    text = pdf_text(rng)
    for n in range(200):
        (demo["uploads"] / "invoices" / f"scan-{n:04d}.pdf").write_bytes(
            pdf_like(rng, rng.randrange(1024, 50 * 1024), text, n))
    info["uploads_bytes"] = tree_size(demo["uploads"])
    key = base / "backup.key"
    public = generate_identity(key)
    bucket = f"bench-recovery-{int(time.time())}"
    bench.s3().create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": "eu-central-1"})
    settings = parse_settings({
        "staging_dir": str(base / "staging"), "state_dir": str(base / "state"), "prefix": "erp-bench",
        "compression": DEFAULT_COMPRESSION,
        "encryption": {"codec": "age", "recipients": [public], "identity_file": str(key)},
        "signing": bench.signing(),
        "destinations": [{"type": "s3", "name": "offsite", "bucket": bucket, "endpoint_url": bench.moto.endpoint,
                          "access_key_id": "testing", "secret_access_key": "testing"}],
        "sources": {"postgres": {"host": "127.0.0.1", "port": bench.pg.port, "user": "postgres",
                                 "dbname": db["dbname"], "password": bench.pg.password, "sslmode": "disable",
                                 "bin_dir": bench.bindir},
                    "redis": {"host": "127.0.0.1", "port": bench.rec_redis.port},
                    "config": {"paths": [str(demo["config"])]}, "uploads": {"path": str(demo["uploads"])}},
        "recovery": {"document_references": [{"source": "postgres_dump", "query": RECOVERY_DOCS_QUERY}]},
    }, "bench-recovery", base)
    backups = {}
    for source in RECOVERY_STORES:
        t0 = time.perf_counter()
        m = run_backup(settings, source, PARTITION)
        backups[source] = {"seconds": round(time.perf_counter() - t0, 2), "artifact_bytes": m.artifact_bytes,
                           "raw_bytes": m.stage("dump")["bytes"]}
        print(f"recovery: backed up {source} in {backups[source]['seconds']} s ({m.artifact_bytes:,} bytes)",
              flush=True)
    info["backups"] = backups
    root = base / "recovered"
    t0 = time.perf_counter()
    plan = plan_recovery(settings, PARTITION, root)
    plan_s = time.perf_counter() - t0
    bench.recovery_dbs += [s.target for s in plan.steps if s.source == "postgres_dump"]
    try:
        report = recover(settings, plan, log=lambda line: print(f"recovery: {line}", flush=True))
        wall = time.perf_counter() - t0
    finally:
        problems = stop_servers(settings, plan.steps)
        if problems:
            print(f"recovery: could not stop: {problems}", file=sys.stderr)
    info.update(plan_s=round(plan_s, 2), seconds=report["seconds"], total_s=report["total_seconds"],
                check_s=report["check_seconds"], wall_s=round(wall, 2),
                checks=[f"{c['check']}: {c['detail']}" for c in report["checks"]],
                all_checks_ok=all(c["ok"] for c in report["checks"]))
    for dbname in list(bench.recovery_dbs):  # the recovered database, and the big one if generated here
        drop_db(bench.pg, dbname)
        bench.recovery_dbs.remove(dbname)
    bench.rec_redis.stop()
    bench.rec_redis = None
    if not bench.args.keep:
        shutil.rmtree(base, ignore_errors=True)
    info["section_s"] = round(time.perf_counter() - t_section, 1)
    return info
