"""The bench's shared state and its servers: ``Bench`` owns the temp dir, the output dir, the throwaway
PostgreSQL cluster, moto's S3 server, the Redis of the Redis cases, the gpg key of (b), the signing key of the
configurations, the calibration (invoices per database size), and the state the PITR and recovery sections leave
to be cleaned up. ``setup`` starts the servers and generates the databases; ``teardown`` stops everything it
or a section started, by PID or by its own tool, also on failure, and removes every temp dir.

The case families (``dump_cases``, ``redis_cases``, ``uploads_cases``, ``pitr_cases``, ``recovery_cases``) are
functions of a ``Bench``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from bench import pitr_cases
from bench.common import MB
from bench.data import calibrate, drop_db, generate_db


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.tmp = Path(tempfile.mkdtemp(prefix="erp-bench-"))
        self.out = Path(args.out).resolve()
        self.out.mkdir(parents=True, exist_ok=True)
        self.pg: Any = None
        self.moto: Any = None
        self.redis: Any = None
        self.gnupghome: Path | None = None
        self.bindir = ""
        self.invoices_for: dict[str, int] = {}  # size label -> invoices to generate (from the calibration)
        self.pitr_pg: Any = None  # the archiving cluster of the PITR section
        self.pitr_base: Path | None = None
        self.pitr_writer: pitr_cases.RpoWriter | None = None
        self.pitr_started: list[tuple[Any, Path]] = []  # restored clusters: (settings, data directory)
        self.rec_redis: Any = None  # the whole-ERP recovery section's small Redis
        self.recovery_dbs: list[str] = []  # databases the recovery section created (dropped at the end)

    # ---------------------------------------------------------------- helpers of the cases
    def signing(self) -> dict[str, Any]:
        """The configurations' signing section: one key in the bench's temp dir."""
        key = self.tmp / "signing.key"
        if not key.exists():
            from erp_backup_pipeline.core.signing import generate

            generate(key)
        return {"key_file": str(key)}

    def s3(self) -> Any:
        """A boto3 S3 client of the moto server."""
        import boto3

        return boto3.client("s3", endpoint_url=self.moto.endpoint, region_name="eu-central-1",
                            aws_access_key_id="testing", aws_secret_access_key="testing")

    def pg_env(self) -> dict[str, str]:
        return {**os.environ, "PGPASSWORD": self.pg.password, "PGSSLMODE": "disable"}

    def conn_args(self, dbname: str) -> list[str]:
        return ["--host", "127.0.0.1", "--port", str(self.pg.port), "--username", "postgres", "--dbname", dbname,
                "--no-password"]

    # ---------------------------------------------------------------- setup / teardown
    def setup(self) -> dict[str, Any]:
        from erp_backup_pipeline_devkit.servers import pg_bindir, start_moto, start_postgres

        self.bindir = str(pg_bindir())
        t0 = time.perf_counter()
        self.pg = start_postgres()
        self.moto = start_moto()
        print(f"servers: PostgreSQL pid {self.pg.pid} port {self.pg.port}; moto pid {self.moto.proc.pid} "
              f"{self.moto.endpoint} ({time.perf_counter() - t0:.1f} s)", flush=True)
        empty, per_invoice = calibrate(self.pg)
        targets = {"big": self.args.size_mb, "small": self.args.small_mb}
        plan = {k: max(int((mb * MB - empty) / per_invoice), 1000) for k, mb in targets.items()}
        self.invoices_for = plan
        print(f"calibration: empty db {empty / MB:.1f} MiB, {per_invoice:.0f} bytes per invoice (+5 lines, "
              f"3 audit rows, ...); generating {plan if not self.args.skip_pg else 'nothing (--skip-pg)'}", flush=True)
        if self.args.skip_pg:  # the databases and the gpg key serve only the cases (a), (b), (c)
            return {}
        with ThreadPoolExecutor(2) as pool:  # two databases, two cores
            futs = {k: pool.submit(generate_db, self.pg, f"erp_{k}", n) for k, n in plan.items()}
            dbs = {k: f.result() for k, f in futs.items()}
        for k, d in dbs.items():
            print(f"database {d['dbname']}: pg_database_size {d['db_bytes'] / MB:.1f} MiB (target {targets[k]} MiB),"
                  f" rows {d['rows']}, generated in {d['generate_s']} s", flush=True)
        # throwaway gpg key for (b)
        self.gnupghome = Path(tempfile.mkdtemp(prefix="gpg-", dir="/tmp"))
        os.chmod(self.gnupghome, 0o700)
        subprocess.run(["gpg", "--batch", "--passphrase", "", "--quick-gen-key", "bench@example.invalid", "default",
                        "default", "never"], env={**os.environ, "GNUPGHOME": str(self.gnupghome)}, check=True,
                       capture_output=True)
        return dbs

    def teardown(self) -> None:
        pitr_cases.pitr_teardown(self)
        if self.rec_redis is not None:
            self.rec_redis.stop()
        for dbname in self.recovery_dbs:
            if self.pg is not None:
                drop_db(self.pg, dbname)
        if self.gnupghome is not None:
            subprocess.run(["gpgconf", "--kill", "gpg-agent"], env={**os.environ, "GNUPGHOME": str(self.gnupghome)},
                           capture_output=True)
            shutil.rmtree(self.gnupghome, ignore_errors=True)
        if self.moto is not None:
            self.moto.stop()
        if self.redis is not None:
            self.redis.stop()
            shutil.rmtree(self.redis.base, ignore_errors=True)
        if self.pg is not None:
            self.pg.stop()
            shutil.rmtree(self.pg.base, ignore_errors=True)
        if not self.args.keep:
            shutil.rmtree(self.tmp, ignore_errors=True)
