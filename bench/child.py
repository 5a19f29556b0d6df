"""The pipeline side of the cases: one asset materialized by Dagster in a child Python, as the product runs it.

``materialize_case`` (parent) writes a configuration (staging dir, the default compression or the case's, age,
the signing key, moto S3, the case's source), starts ``python -m bench --child CONFIG ...`` and samples it;
``child_main`` (the child) imports Dagster and the project, calls ``materialize`` once, and writes its own
figures as JSON: wall time around ``materialize`` only, its VmHWM (its peak RSS is its own: a child process),
CPU of itself and of its subprocesses, the step events and the materialization's metadata. Used by (c), (c7),
(cn), (r1), (u1)-(u3) and the ``--profile`` runs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.common import DEFAULT_COMPRESSION, REPO
from bench.measure import Sampler, redis_cpu, server_cpu, vm
from bench.signing_cases import seed_history

if TYPE_CHECKING:
    from bench.context import Bench


def child_main(config_path: str, out_path: str, partition: str, profile_path: str | None,
               asset: str = "postgres_dump") -> int:
    """The child: materialize ``asset`` for ``partition`` with the configuration at ``config_path``; its figures
    as JSON to ``out_path``; under cProfile to ``profile_path`` when given."""
    import resource

    t_imp = time.perf_counter()
    import dagster as dg

    from erp_backup_pipeline.orchestration.assets import BACKUP_ASSETS, build_backup_asset, source_spec
    from erp_backup_pipeline.orchestration.resources import BackupSettingsResource

    import_seconds = time.perf_counter() - t_imp
    baseline_rss = vm("VmRSS")
    baseline_hwm = vm("VmHWM")
    ru0_self = resource.getrusage(resource.RUSAGE_SELF)
    ru0_children = resource.getrusage(resource.RUSAGE_CHILDREN)

    profiler = None
    if profile_path:
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    wall_start = time.time()
    t0 = time.perf_counter()
    result = dg.materialize(
        [build_backup_asset(BACKUP_ASSETS[asset]), source_spec(BACKUP_ASSETS[asset])],
        partition_key=partition,
        resources={"backup_settings": BackupSettingsResource.pinned(config_path)},
        instance=(instance := dg.DagsterInstance.ephemeral()),
        raise_on_error=False,
    )
    elapsed = time.perf_counter() - t0
    if profiler is not None:
        profiler.disable()
        import pstats

        with open(profile_path, "w") as fh:  # type: ignore[arg-type]
            stats = pstats.Stats(profiler, stream=fh)
            stats.sort_stats("tottime").print_stats(35)
            stats.sort_stats("cumulative").print_stats(35)

    ru1_self = resource.getrusage(resource.RUSAGE_SELF)
    ru1_children = resource.getrusage(resource.RUSAGE_CHILDREN)
    metadata: dict[str, Any] = {}
    for mat in result.get_asset_materialization_events():
        for k, v in mat.materialization.metadata.items():
            val = getattr(v, "value", v)
            metadata[k] = val if isinstance(val, (int, float, str, bool)) or val is None else str(val)
    steps: list[dict[str, Any]] = []
    errors: list[str] = []
    for rec in instance.all_logs(result.run_id):
        ev = rec.dagster_event
        if ev is None:
            continue
        if ev.event_type_value in ("STEP_START", "STEP_SUCCESS", "STEP_FAILURE"):
            entry = {"event": ev.event_type_value, "step": ev.step_key, "t": round(rec.timestamp - wall_start, 3)}
            data: Any = ev.event_specific_data  # StepSuccessData / StepFailureData for these two
            if ev.event_type_value == "STEP_SUCCESS":
                entry["duration_s"] = round(data.duration_ms / 1000, 3)
            if ev.event_type_value == "STEP_FAILURE":
                err = data.error
                errors.append(f"{ev.step_key}: {err.message.strip() if err else '?'}")
            steps.append(entry)
    out = {
        "success": bool(result.success),
        "materialize_start_epoch": wall_start,
        "errors": errors,
        "elapsed_s": elapsed,
        "import_s": import_seconds,
        "rss_baseline_bytes": baseline_rss,
        "hwm_after_imports_bytes": baseline_hwm,
        "peak_rss_bytes": vm("VmHWM"),
        "rss_end_bytes": vm("VmRSS"),
        "ru_maxrss_self_bytes": ru1_self.ru_maxrss * 1024,
        "cpu_self_s": (ru1_self.ru_utime + ru1_self.ru_stime) - (ru0_self.ru_utime + ru0_self.ru_stime),
        "cpu_children_s": (ru1_children.ru_utime + ru1_children.ru_stime)
        - (ru0_children.ru_utime + ru0_children.ru_stime),
        "metadata": metadata,
        "steps": steps,
    }
    Path(out_path).write_text(json.dumps(out, indent=2))
    return 0


def materialize_case(bench: Bench, dbname: str, label: str, public_key: str, profile: bool = False,
                     compression: dict[str, Any] | None = None, asset: str = "postgres_dump",
                     sources: dict[str, Any] | None = None, bucket: str | None = None,
                     extra_config: dict[str, Any] | None = None, pg_extra: dict[str, Any] | None = None,
                     history: int = 0) -> dict[str, Any]:
    """Materialize ``asset`` once in a child Python (``python -m bench --child``) against a fresh configuration:
    ``dbname`` on the bench's cluster (or ``sources``), age to ``public_key``, the bucket ``bucket`` (fresh when
    None) on moto; ``history`` earlier signed captures first. Its figures: the child's own (wall around
    ``materialize``, VmHWM, CPU, step events, the materialization's metadata), the parent's sampling (staging,
    the child's subprocesses' VmHWM), the server's CPU, the new S3 objects."""
    s3 = bench.s3()
    if bucket is None:  # a fresh bucket; a given one is created on first use (the uploads scenario shares one)
        bucket = f"bench-{label}-{int(time.time())}"
    known = {b["Name"] for b in s3.list_buckets().get("Buckets", [])}
    if bucket not in known:
        s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": "eu-central-1"})
    keys_before = {o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])}
    staging = bench.tmp / f"staging-{label}"
    config = {
        "staging_dir": str(staging),
        "prefix": "erp-bench",
        "compression": compression or DEFAULT_COMPRESSION,
        "encryption": {"codec": "age", "recipients": [public_key]},
        "signing": bench.signing(),
        "destinations": [{"type": "s3", "name": "offsite", "bucket": bucket, "endpoint_url": bench.moto.endpoint,
                          "access_key_id": "testing", "secret_access_key": "testing"}],
        "sources": sources or {"postgres": {"host": "127.0.0.1", "port": bench.pg.port, "user": "postgres",
                                            "dbname": dbname, "password": bench.pg.password, "sslmode": "disable",
                                            "bin_dir": bench.bindir, **(pg_extra or {})}},
        **(extra_config or {}),
    }
    cfg_path = bench.tmp / f"config-{label}.yaml"
    cfg_path.write_text(json.dumps(config, indent=2))  # JSON is YAML
    os.chmod(cfg_path, 0o600)
    if history:
        seed_history(cfg_path, history)
        keys_before = {o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])}
    out_json = bench.tmp / f"child-{label}.json"
    (bench.out / "logs").mkdir(exist_ok=True)
    log_path = bench.out / "logs" / f"child-{label}.log"
    argv = [sys.executable, "-m", "bench", "--child", str(cfg_path), "--child-out", str(out_json), "--child-asset", asset]
    if profile:
        argv += ["--child-profile", str(bench.out / f"profile-{label}.txt")]
    server_cpu_now = {"redis_snapshot": lambda: redis_cpu(bench.redis),
                      "postgres_dump": lambda: server_cpu(bench.pg)}.get(asset, lambda: 0.0)  # uploads: no server
    cpu0 = server_cpu_now()
    env = {k: v for k, v in os.environ.items() if k != "DAGSTER_HOME"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)  # -m bench, cwd bench.tmp
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=str(bench.tmp),
                                env={**env, "PYTHONUNBUFFERED": "1"})
        sampler = Sampler(staging=staging, root_pid=proc.pid)
        sampler.start()
        rc = proc.wait()
        sampler.finish()
    server_s = server_cpu_now() - cpu0
    if rc != 0 or not out_json.exists():
        raise RuntimeError(f"child for ({label}) failed with exit {rc}; see {log_path}")
    child = json.loads(out_json.read_text())
    if not child["success"]:
        raise RuntimeError(f"materialize for ({label}) failed: {child['errors']}; see {log_path}")
    objects = [o for o in s3.list_objects_v2(Bucket=bucket).get("Contents", []) if o["Key"] not in keys_before]
    artifact = [o for o in objects if not o["Key"].endswith(".json")]
    md = child["metadata"]
    s3_bytes = sum(o["Size"] for o in artifact)
    # timeline (~10 points per second), t relative to the child's materialize start like its step events
    shift = child["materialize_start_epoch"] - sampler.t0
    tl = [(round(t - shift, 2), rss, st) for t, rss, st in sampler.timeline[::2]]
    return {"wall_s": child["elapsed_s"], "artifact_bytes": int(md.get("encrypted_bytes", s3_bytes)),
            "artifact_bytes_in_s3": s3_bytes, "s3_keys": [o["Key"] for o in objects],
            "peak_rss_bytes": child["peak_rss_bytes"], "rss_after_imports_bytes": child["rss_baseline_bytes"],
            "hwm_after_imports_bytes": child["hwm_after_imports_bytes"],
            "client_cpu_s": child["cpu_self_s"] + child["cpu_children_s"],
            "python_cpu_s": child["cpu_self_s"], "subprocess_cpu_s": child["cpu_children_s"],
            "server_cpu_s": server_s, "max_staging_bytes": sampler.max_staging,
            "subprocess_peak_rss_bytes": sampler.peak_by_name(), "import_s": child["import_s"],
            "metadata": md, "steps": child["steps"], "compression": config["compression"], "history": history,
            "signing_s": float(md.get("signing_seconds", 0.0)),
            "timeline_t_rss_staging": tl}
