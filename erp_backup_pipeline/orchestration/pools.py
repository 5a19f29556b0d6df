"""The code location's concurrency pools, and the deployment step that gives each its limit of one run.

Every op that backs up or drills a source is in the pool ``erp_backup/<source>``; the instance
(``concurrency: pools: granularity: run``) lets one run per pool at a time, so a drill never overlaps
its source's backup, nor do two runs of one UI backfill (which carry none of our tags). Dagster 1.13's
run queue applies a pool's ``default_limit`` only after the pass that first sees the pool, so a fresh
instance would start the first batch together: run ``python -m erp_backup_pipeline.orchestration.pools``
once per new instance (``make run`` does), with the instance's ``DAGSTER_HOME`` (and ``DAGSTER_PG_*``).
"""

import sys

import dagster as dg


def pools(defs: dg.Definitions | None = None) -> list[str]:
    """Every pool an op or check of the code location is in."""
    if defs is None:
        from erp_backup_pipeline.orchestration.definitions import defs as loaded

        defs = loaded
    return sorted({op.pool for job in defs.resolve_all_job_defs() for op in job.graph.iterate_op_defs() if op.pool})


def main() -> int:
    """Sets every pool's limit in the instance of $DAGSTER_HOME; ``--list`` only prints the pools' names (for an
    instance reached elsewhere, e.g. ``dagster instance concurrency set NAME 1`` in the daemon's pod)."""
    if sys.argv[1:] == ["--list"]:
        print("\n".join(pools()))
        return 0
    names = pools()
    with dg.DagsterInstance.get() as instance:  # what `dagster instance concurrency set NAME 1` does, once per pool
        storage = instance.event_log_storage
        if not storage.supports_global_concurrency_limits:
            print(f"erp-backup: error: the instance's event log ({type(storage).__name__}) cannot hold concurrency "
                  "limits: use the shipped dagster.yaml", file=sys.stderr)
            return 1
        for pool in names:
            storage.set_concurrency_slots(pool, 1)
    print(f"concurrency pools: {len(names)}, each 1 run at a time ({', '.join(names)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
