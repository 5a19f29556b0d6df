"""The PostgreSQL dump cases, on the big and the small generated database of the bench's cluster:

  (a) floor      ``pg_dump -Fc -Z0 > /dev/null``
  (b) original   ``pg_dump -Fc -f F`` ; ``gzip F`` ; ``gpg --encrypt F.gz`` ; ``cp F.gz.gpg DEST/``
  (c) pipeline   ``postgres_dump`` materialized in a child Python (``child.materialize_case``) to moto S3 with
                 verify and age; on the big database after ``signing_cases.HISTORY`` earlier signed captures
  (c7)           the same as (c) on the big database with zstd level 7
  (cn)           the same as (c) with ``sources.postgres.exact_row_counts: false``

``dump_section`` runs them ``--repeat`` times, interleaved: a_big, b_big, c_big, c7_big, cn_big, a_small, c_small.
"""

from __future__ import annotations

import shutil
from typing import TYPE_CHECKING, Any

from bench.child import materialize_case
from bench.common import LEVEL7_COMPRESSION
from bench.measure import Sampler, run_case, server_cpu, timed
from bench.signing_cases import HISTORY

if TYPE_CHECKING:
    from bench.context import Bench


def case_a(bench: Bench, dbname: str) -> dict[str, Any]:
    """(a) the floor: ``pg_dump -Fc -Z0 > /dev/null``."""
    cpu0 = server_cpu(bench.pg)
    r = timed([f"{bench.bindir}/pg_dump", "-Fc", "-Z0", *bench.conn_args(dbname)], bench.pg_env())
    return {"wall_s": r["wall_s"], "artifact_bytes": None, "peak_rss_bytes": r["peak_rss_bytes"],
            "client_cpu_s": r["cpu_s"], "server_cpu_s": server_cpu(bench.pg) - cpu0, "max_staging_bytes": 0}


def case_b(bench: Bench, dbname: str) -> dict[str, Any]:
    """(b) the original script: ``pg_dump -Fc -f F``; ``gzip F``; ``gpg --encrypt F.gz``; ``cp F.gz.gpg DEST/``."""
    work = bench.tmp / "b-work"
    dest = bench.tmp / "b-dest"
    work.mkdir()
    dest.mkdir()
    f = work / f"{dbname}.dump"
    env = {**bench.pg_env(), "GNUPGHOME": str(bench.gnupghome)}
    sampler = Sampler(staging=work)
    cpu0 = server_cpu(bench.pg)
    sampler.start()
    steps = [
        timed([f"{bench.bindir}/pg_dump", "-Fc", "-f", str(f), *bench.conn_args(dbname)], env),
        timed(["gzip", str(f)], env),
        timed(["gpg", "--batch", "--trust-model", "always", "--encrypt", "--recipient", "bench@example.invalid",
               f"{f}.gz"], env),
        timed(["cp", f"{f}.gz.gpg", str(dest) + "/"], env),
    ]
    sampler.finish()
    artifact = dest / f"{f.name}.gz.gpg"
    res = {"wall_s": sum(s["wall_s"] for s in steps), "artifact_bytes": artifact.stat().st_size,
           "peak_rss_bytes": max(s["peak_rss_bytes"] for s in steps),
           "client_cpu_s": sum(s["cpu_s"] for s in steps), "server_cpu_s": server_cpu(bench.pg) - cpu0,
           "max_staging_bytes": sampler.max_staging,
           "steps": [{k: (round(v, 3) if isinstance(v, float) else v) for k, v in s.items()} for s in steps]}
    shutil.rmtree(work, ignore_errors=True)
    shutil.rmtree(dest, ignore_errors=True)
    return res


def case_c(bench: Bench, dbname: str, label: str, public_key: str, **options: Any) -> dict[str, Any]:
    """(c), (c7), (cn): ``postgres_dump`` of ``dbname``; ``options`` as ``materialize_case`` takes them
    (``compression``, ``pg_extra``, ``history``, ``profile``)."""
    return materialize_case(bench, dbname, label, public_key, **options)


def dump_section(bench: Bench, runs: dict[str, list[dict[str, Any]]], dbs: dict[str, Any], public: str,
                 repeat: int) -> None:
    """Every dump case ``repeat`` times, interleaved; each repetition's result kept in ``runs``."""
    big, small = dbs["big"]["dbname"], dbs["small"]["dbname"]
    for rep in range(repeat):
        for key, fn in (("a_big", lambda: case_a(bench, big)), ("b_big", lambda: case_b(bench, big)),
                        ("c_big", lambda rep=rep: case_c(bench, big, f"big{rep}", public, history=HISTORY)),
                        ("c7_big", lambda rep=rep: case_c(bench, big, f"big-l7-{rep}", public,
                                                          compression=LEVEL7_COMPRESSION)),
                        ("cn_big", lambda rep=rep: case_c(bench, big, f"big-nocount-{rep}", public,
                                                          pg_extra={"exact_row_counts": False})),
                        ("a_small", lambda: case_a(bench, small)),
                        ("c_small", lambda rep=rep: case_c(bench, small, f"small{rep}", public))):
            run_case(runs, key, fn, rep, repeat)
