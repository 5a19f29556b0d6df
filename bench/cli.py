"""The command line of ``python -m bench`` (and ``make bench``): its options, and one bench run in order —
servers and databases, the dump cases, PITR, Redis, uploads, whole-ERP recovery, the medians, the signing share,
the ``--profile`` runs, then the report. The hidden ``--child*`` options run ``child.child_main`` instead (the
child Python of a pipeline case). What the cases are and how they are measured: the package docstring
(``bench/__init__.py``).
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import bench as package
from bench.common import PARTITION, PITR_WRITER_S


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench", description=(package.__doc__ or "").split("\n\n")[0])
    p.add_argument("--size-mb", type=int, default=500)
    p.add_argument("--small-mb", type=int, default=250)
    p.add_argument("--out", default=str(Path(__file__).resolve().parent / "out"))
    p.add_argument("--repeat", type=int, default=1,
                   help="run the six cases N times (interleaved); report the median wall time per case")
    p.add_argument("--keep", action="store_true", help="keep the temp dir (configs, child JSON) for inspection")
    p.add_argument("--profile", action="store_true",
                   help="afterwards, one extra (c) run on the big database under cProfile (not in the figures)")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--child-out", help=argparse.SUPPRESS)
    p.add_argument("--skip-redis", action="store_true", help="leave out the Redis cases (r0) and (r1)")
    p.add_argument("--skip-uploads", action="store_true",
                   help="leave out the uploads cases (u1)-(u3) and their rsync baseline (s1)-(s3)")
    p.add_argument("--skip-pg", action="store_true",
                   help="leave out the PostgreSQL dump cases (a), (b), (c), (c7), (cn) and their databases")
    p.add_argument("--skip-pitr", action="store_true",
                   help="leave out the point-in-time recovery section (p0)-(p2) (about 3 minutes, run once)")
    p.add_argument("--skip-recovery", action="store_true",
                   help="leave out the whole-ERP recovery (w) (run once; alone it generates only the big database)")
    p.add_argument("--pitr-writer-s", type=float, default=PITR_WRITER_S,
                   help="(p2): how long the writer runs before the host is lost (default %(default)s)")
    p.add_argument("--child-profile", help=argparse.SUPPRESS)
    p.add_argument("--child-asset", default="postgres_dump", help=argparse.SUPPRESS)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.child:
        from bench.child import child_main

        return child_main(args.child, args.child_out, PARTITION, args.child_profile, args.child_asset)
    return run(args)


def machine(bindir: str) -> dict[str, Any]:
    """The machine and the versions of the tools the cases compare."""
    return {
        "cores": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform(),
        "pg_dump": subprocess.run([f"{bindir}/pg_dump", "--version"], capture_output=True, text=True).stdout.strip(),
        "gzip": subprocess.run(["gzip", "--version"], capture_output=True, text=True).stdout.splitlines()[0],
        "gpg": subprocess.run(["gpg", "--version"], capture_output=True, text=True).stdout.splitlines()[0],
    }


def run(args: argparse.Namespace) -> int:
    import pyrage

    from bench.context import Bench
    from bench.dump_cases import case_c, dump_section
    from bench.measure import TIME_BIN, median_cases
    from bench.pitr_cases import pitr_section
    from bench.recovery_cases import recovery_section
    from bench.redis_cases import case_r1, redis_section
    from bench.report import build_report, print_report, write_report
    from bench.signing_cases import signing_summary
    from bench.uploads_cases import uploads_section

    if not os.path.exists(TIME_BIN):
        sys.exit(f"{TIME_BIN} (Debian package 'time') is needed to measure the peak RSS of (a) and (b)")
    started = datetime.now(UTC)
    bench = Bench(args)
    results: dict[str, Any] = {"started_at": started.isoformat(timespec="seconds"), "repeat": args.repeat}
    t_all = time.perf_counter()
    try:
        dbs = bench.setup()
        results["databases"] = dbs
        results["machine"] = machine(bench.bindir)
        public = str(pyrage.x25519.Identity.generate().to_public())
        runs: dict[str, list[dict[str, Any]]] = {}
        if not args.skip_pg:
            dump_section(bench, runs, dbs, public, args.repeat)
        if not args.skip_pitr:
            if not shutil.which("pgbackrest"):
                sys.exit("pgbackrest (Debian package 'pgbackrest') is needed for the PITR section; or use --skip-pitr")
            results["pitr"] = pitr_section(bench, public)
            results["machine"]["pgbackrest"] = results["pitr"]["pgbackrest"]
            print(f"pitr section took {results['pitr']['section_s']} s", flush=True)
        if not args.skip_redis:
            results["redis"] = redis_section(bench, runs, public, args.repeat)
            results["machine"]["redis"] = f"redis-server {results['redis']['redis_version']}"
        if not args.skip_uploads:
            results["uploads"] = uploads_section(bench, runs, public, args.repeat)
        if not args.skip_recovery:
            results["recovery"] = recovery_section(bench, dbs)
            print(f"recovery section took {results['recovery']['section_s']} s", flush=True)
        cases = median_cases(runs)
        results["cases"] = cases
        if "c_big" in runs:
            results["signing"] = signing_summary(runs["c_big"])
        if args.profile:
            if "big" in dbs:  # not with --skip-pg
                print("profiling (c) on the big database (cProfile; not part of the figures) ...", flush=True)
                prof = case_c(bench, dbs["big"]["dbname"], "big-profiled", public, profile=True)
                results["profile_run"] = {"wall_s": prof["wall_s"], "steps": prof["steps"],
                                          "file": str(bench.out / "profile-big-profiled.txt")}
            if "r1" in cases:
                print("profiling (r1) (cProfile; not part of the figures) ...", flush=True)
                prof = case_r1(bench, "redis-profiled", public, profile=True)
                results["profile_run_redis"] = {"wall_s": prof["wall_s"], "steps": prof["steps"],
                                                "file": str(bench.out / "profile-redis-profiled.txt")}
        rows, targets = build_report(results)
        results["table"] = rows
        results["targets"] = targets
        results["bench_seconds"] = round(time.perf_counter() - t_all, 1)
        write_report(results, rows, targets, bench.out)
        print_report(results, rows, targets)
        print(f"bench took {results['bench_seconds']} s; wrote {bench.out / 'results.json'} and {bench.out / 'results.md'}")
    finally:
        bench.teardown()
    return 0
