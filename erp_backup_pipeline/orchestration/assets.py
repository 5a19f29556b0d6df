"""The asset factory: one graph-backed, daily-partitioned asset per backup source.

Ops: dump -> compress -> verify -> encrypt -> ship -> manifest, each one call into
``core.pipeline``. The dump op begins the capture through ``core.capture_start``: for a date that is over, the
PostgreSQL dump with PITR on is recovered from the archive (dumped and compressed there, so the compress op passes
it on), anything else is a late capture, or refused. The verify op gates everything after it: a failed verification
fails the blocking ``integrity`` check there and the run; the manifest op emits the materialization with numeric
metadata, the artifact's URI and sha256, and ``data_as_of`` (``orchestration.late_captures``), then the passed
``integrity`` and ``size_anomaly`` checks. After it, not before: Dagster shows a partition's check as Passed only
when its result targets the partition's latest materialization (the check's Partitions view; a result recorded
before the materialization it belongs to shows as Missing there).
"""

import warnings
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import dagster as dg

from erp_backup_pipeline.core import anomaly, capture_start, catalog, chain, pipeline
from erp_backup_pipeline.core.manifest import PARTITION_TIMEZONE, Manifest
from erp_backup_pipeline.core.runner import redact
from erp_backup_pipeline.core.site import Site
from erp_backup_pipeline.core.sources import KINDS, SourceKind
from erp_backup_pipeline.core.streams import human_bytes, progress_text
from erp_backup_pipeline.errors import BackupError, VerifyError
from erp_backup_pipeline.orchestration.late_captures import as_of_metadata, as_of_tags
from erp_backup_pipeline.orchestration.partitions import daily
from erp_backup_pipeline.orchestration.resources import BackupSettingsResource

GROUP = "erp_backups"
SOURCE_GROUP = "erp_sources"
TIMEZONE = PARTITION_TIMEZONE

# the default daily partitions; build_definitions gives every factory the installation's own (orchestration.partitions)
daily_partitions = daily()

# dump and compress talk to the source: a database restarted or a connection dropped is retried after about
# 5 s, 15 s and 35 s (with jitter). Only what a pause can cure is retried (``retryable``): never a configuration
# error, a failed verification, wrong credentials or a missing file.
SOURCE_RETRY = dg.RetryPolicy(max_retries=3, delay=5, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS)


def retryable(exc: BackupError) -> bool:
    """Worth another try after a pause: the source or a destination was away for a moment. The code that raised
    knows (``BackupError.transient``: SourceUnavailable, DestinationUnavailable, a tool that timed out)."""
    return exc.transient


POOL_PREFIX = "erp_backup/"


def pool_for(source: str) -> str:
    """The concurrency pool of everything that backs up or drills ``source``. The instance (both dagster.yaml
    files) limits every pool to one run at a time, at run granularity: whatever launched the run (a job, a
    schedule, an asset backfill from the UI), two runs touching one source never run at once."""
    return f"{POOL_PREFIX}{source}"


# every source kind is a backup asset: its texts and tags come from its SourceKind
BACKUP_ASSETS: dict[str, SourceKind] = KINDS


def partitioned_check(asset: str, name: str, partitions: dg.PartitionsDefinition, description: str,
                      blocking: bool = False) -> dg.AssetCheckSpec:
    """A check whose results are per partition (Dagster marks partitioned checks preview; docs/guide/backups.md)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return dg.AssetCheckSpec(name, asset=asset, blocking=blocking, partitions_def=partitions,
                                 description=description)


def _progress(context: dg.OpExecutionContext) -> Callable[[str, int, int | None, float], None]:
    def report(stage: str, done: int, total: int | None, seconds: float) -> None:
        context.log.info(redact(progress_text(stage, done, total, seconds)))
    return report


def _run_stage(context: dg.OpExecutionContext, fn: Callable[..., Any], settings_res: BackupSettingsResource,
               *args: Any, failure: bool = True) -> Any:
    """Run one core stage; a BackupError becomes a Dagster Failure whose description is its one line."""
    try:
        return fn(settings_res.site(), *args, _progress(context))
    except BackupError as exc:
        if not failure:
            raise
        raise dg.Failure(description=redact(str(exc)), allow_retries=retryable(exc)) from None


def _stage_metadata(capture: pipeline.Capture | Manifest) -> dict[str, Any]:
    """Each stage's seconds (its bytes are raw_bytes, compressed_bytes, encrypted_bytes: one name per figure)."""
    md: dict[str, Any] = {}
    for entry in capture.chain:
        if "seconds" in entry:
            md[f"{entry['stage']}_seconds"] = dg.MetadataValue.float(float(entry["seconds"]))
    return md


def _fact_metadata(facts: dict[str, Any]) -> dict[str, Any]:
    """What each source counted, as numbers: rows per table, keys per Redis database, files archived, PostgreSQL's
    large objects and recorded roles."""
    md: dict[str, Any] = {}
    for table, count in (facts.get("row_counts") or facts.get("row_estimates") or {}).items():
        md[f"rows/{table}"] = dg.MetadataValue.int(int(count))
    for db, count in (facts.get("keyspace") or {}).items():
        md[f"keys/{db}"] = dg.MetadataValue.int(int(count))
    for key in ("files", "keys", "new_blobs", "new_bytes", "unchanged_files", "large_objects"):
        if isinstance(facts.get(key), int):
            md[key] = dg.MetadataValue.int(facts[key])
    if isinstance(facts.get("roles"), list):  # PostgreSQL: the roles recorded with the globals
        md["roles"] = dg.MetadataValue.int(len(facts["roles"]))
    return md


RUNBOOK = "docs/runbook.md"


def materialization_metadata(kind: SourceKind, m: Manifest, uri: str, finished: datetime) -> dict[str, Any]:
    """Everything a backup's materialization shows, from its manifest: the artifact's URI and sha256, what the
    catalog audit compares (orchestration.audit), the sizes, each stage's seconds, what the source counted, and
    the operator's lines. ``finished``: when the backup was complete (``backup_seconds`` runs up to it)."""
    dump_bytes = m.stage("dump")["bytes"]
    comp_bytes = m.stage("compress")["bytes"]
    md: dict[str, Any] = {
        "dagster/uri": dg.MetadataValue.text(uri),
        "sha256": dg.MetadataValue.text(m.artifact_sha256),
        "manifest_key": dg.MetadataValue.text(m.key),
        "manifest_sha256": dg.MetadataValue.text(chain.digest(m.to_json())),
        "sequence": dg.MetadataValue.int(m.sequence),
        "captured_at": dg.MetadataValue.text(m.captured_at),
        "raw_bytes": dg.MetadataValue.int(dump_bytes),
        "compressed_bytes": dg.MetadataValue.int(comp_bytes),
        "encrypted_bytes": dg.MetadataValue.int(m.artifact_bytes),
        "compression_ratio": dg.MetadataValue.float(round(dump_bytes / comp_bytes, 3) if comp_bytes else 0.0),
        "verify_seconds": dg.MetadataValue.float(float(m.verify.get("seconds", 0.0))),
        "destinations": dg.MetadataValue.text(", ".join(sorted(m.destinations))),
        **_stage_metadata(m),
    }
    md.update(_fact_metadata(m.facts))
    md.update(_operator_metadata(kind, m, finished))
    md.update(as_of_metadata(m))  # data_as_of; a late capture says so (late_capture, and a tag: as_of_tags)
    return md


def _operator_metadata(kind: SourceKind, m: Manifest, finished: datetime) -> dict[str, Any]:
    """What an operator reads on the partition's page: the sizes in human units, how long the backup took, and the
    command that restores this very capture (with the runbook for everything around it)."""
    started = datetime.fromisoformat(m.captured_at)
    return {
        "size": dg.MetadataValue.text(f"{human_bytes(m.artifact_bytes)} stored ({human_bytes(m.stage('dump')['bytes'])} "
                                      f"raw, {human_bytes(m.stage('compress')['bytes'])} compressed)"),
        "backup_seconds": dg.MetadataValue.float(round(max(0.0, (finished - started).total_seconds()), 3)),
        "restore": dg.MetadataValue.md(
            f"```sh\nerp-backup restore {kind.key} --partition {m.partition} --to TARGET --dry-run\n```\n"
            "Without `--dry-run` it restores into TARGET, which must be new (an existing one is refused). "
            f"Everything else (the whole ERP, a point in time, without the pipeline): `{RUNBOOK}`, or "
            "`erp-backup runbook` for this installation's own procedure."),
    }


def integrity_passed(instance: dg.DagsterInstance, name: str, partition: str, run_id: str, verify: dict[str, Any],
                     description: str | None = None) -> dg.AssetCheckEvaluation:
    """The passed ``integrity`` check of one partition, targeting the materialization just recorded for it (by the
    run ``run_id``; "" for one recorded outside a run): Dagster shows a check as Passed for a partition only when
    its result targets the partition's latest materialization."""
    from dagster._core.definitions.asset_checks.asset_check_evaluation import (
        AssetCheckEvaluationTargetMaterializationData,
    )

    key = dg.AssetKey(name)
    found = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=key, asset_partitions=[partition]), limit=1).records
    target = None
    if found and found[0].event_log_entry.run_id == run_id:
        target = AssetCheckEvaluationTargetMaterializationData(
            run_id=run_id, storage_id=found[0].storage_id, timestamp=found[0].timestamp)
    md = {k: v for k, v in verify.items() if isinstance(v, (int, float, str, bool))}
    return dg.AssetCheckEvaluation(asset_key=key, check_name="integrity", passed=True, metadata=md,
                                   target_materialization_data=target, blocking=True, partition=partition,
                                   description=description)


def _size_check(name: str, backup_settings: BackupSettingsResource, m: Any) -> dg.AssetCheckResult:
    """Non-blocking: a suspiciously small backup warns (and alerts), it does not fail the run."""
    entries = catalog.of(backup_settings.site(), name).entries
    previous = anomaly.history(entries, name, m.partition)
    current = anomaly.measured_size(m)
    reason = anomaly.size_anomaly(current, previous, backup_settings.load().checks.size_anomaly_ratio)
    md: dict[str, Any] = {"measured_bytes": dg.MetadataValue.int(current),
          "previous_partitions": dg.MetadataValue.int(len(previous[-anomaly.WINDOW:]))}
    median = anomaly.recent_median(previous)
    if median is not None:
        md["median_bytes"] = dg.MetadataValue.float(float(median))
    return dg.AssetCheckResult(asset_key=name, check_name="size_anomaly", passed=reason is None,
                               severity=dg.AssetCheckSeverity.WARN, description=reason, metadata=md)


def build_backup_asset(info: SourceKind, partitions: dg.PartitionsDefinition = daily_partitions) -> dg.AssetsDefinition:
    name = info.name
    pool = pool_for(name)  # every op of the graph: a backfill's runs carry no run tag, but their ops carry this

    @dg.op(name=f"{name}_dump", pool=pool, ins={"source": dg.In(dg.Nothing)}, retry_policy=SOURCE_RETRY,
           description="Check the source, its tools and the destinations; record source facts.")
    def dump(context: dg.OpExecutionContext, backup_settings: BackupSettingsResource) -> pipeline.Capture:
        def start(site: Site, progress: Any) -> pipeline.Capture:
            # live; for a day that is over: from the PITR archive (PostgreSQL), else a late capture or a refusal
            return capture_start.begin(site, name, context.partition_key, progress)

        return _run_stage(context, start, backup_settings)

    @dg.op(name=f"{name}_compress", pool=pool, retry_policy=SOURCE_RETRY,
           description="One pass: dump | compress, teed into the verifier and the encryptor; uploads stay invisible.")
    def compress(context: dg.OpExecutionContext, backup_settings: BackupSettingsResource,
                 capture: pipeline.Capture) -> pipeline.Capture:
        def again(site: Site, progress: Any) -> pipeline.Capture:
            # the failed try removed its scratch dir (a SQLite snapshot with it): check and capture anew
            fresh = capture_start.begin(site, name, context.partition_key, progress)
            return fresh if capture_start.compressed(fresh) else pipeline.stage_compress(site, fresh, progress)

        if capture_start.compressed(capture):  # recovered from the archive: compressed while its cluster ran
            result = capture
        elif context.retry_number:
            result = _run_stage(context, again, backup_settings)
        else:
            result = _run_stage(context, pipeline.stage_compress, backup_settings, capture)
        context.add_output_metadata(_stage_metadata(result))
        return result

    # integrity: a failed verification is reported here (the run stops); a passed one by the manifest op, after the
    # materialization it belongs to (_integrity_passed)
    @dg.op(name=f"{name}_verify", pool=pool,
           out={"capture": dg.Out(), "integrity": dg.Out(dg.Nothing, is_required=False)},
           description="Publish the verification (decompressed bytes equal the dump; the source's own check).")
    def verify(context: dg.OpExecutionContext, backup_settings: BackupSettingsResource,
               capture: pipeline.Capture):  # type: ignore[no-untyped-def]
        try:
            checked = _run_stage(context, pipeline.stage_verify, backup_settings, capture, failure=False)
        except VerifyError as exc:
            yield dg.AssetCheckResult(asset_key=name, check_name="integrity", passed=False,
                                      severity=dg.AssetCheckSeverity.ERROR, description=redact(str(exc)))
            raise dg.Failure(description=redact(str(exc))) from None
        except BackupError as exc:
            raise dg.Failure(description=redact(str(exc))) from None
        yield dg.Output(checked, "capture")

    @dg.op(name=f"{name}_encrypt", pool=pool, description="Publish what was encrypted and for whom (key fingerprints).")
    def encrypt(context: dg.OpExecutionContext, backup_settings: BackupSettingsResource,
                capture: pipeline.Capture) -> pipeline.Capture:
        return _run_stage(context, pipeline.stage_encrypt, backup_settings, capture)

    @dg.op(name=f"{name}_ship", pool=pool, description="Commit the uploads: the artifact becomes visible on every destination.")
    def ship(context: dg.OpExecutionContext, backup_settings: BackupSettingsResource,
             capture: pipeline.Capture) -> pipeline.Capture:
        result = _run_stage(context, pipeline.stage_ship, backup_settings, capture)
        context.add_output_metadata({f"destination_{n}": r.get("uri") or r.get("error", "") for n, r in
                                     result.destinations.items()})
        return result

    @dg.op(name=f"{name}_manifest", pool=pool, out={"result": dg.Out(dg.Nothing), "size_anomaly": dg.Out(dg.Nothing)},
           description="Write the manifest beside the artifact (the commit point); compare its size with the last days.")
    def manifest(context: dg.OpExecutionContext, backup_settings: BackupSettingsResource,
                 capture: pipeline.Capture):  # type: ignore[no-untyped-def]
        m = _run_stage(context, pipeline.stage_manifest, backup_settings, capture)
        md = materialization_metadata(info, m, capture.artifact["uri"], datetime.now(UTC))
        # signing, the chain and checking signatures (make bench sets it against the whole run)
        md["signing_seconds"] = dg.MetadataValue.float(round(capture.signing_seconds, 4))
        yield dg.Output(None, "result", metadata=md, tags=as_of_tags(m))
        # the checks after the materialization, so that they target it (the module's docstring)
        passed = integrity_passed(context.instance, name, context.partition_key, context.run_id, capture.verify)
        context.log_event(passed)  # type: ignore[arg-type]  # Dagster records a check evaluation logged this way
        yield _size_check(name, backup_settings, m)

    checks = [partitioned_check(name, "integrity", partitions, blocking=True,
                                description="The artifact decompresses to the exact dump and passes the source's "
                                            "own check."),
              partitioned_check(name, "size_anomaly", partitions,
                                description="Warns when the dump is less than half (checks.size_anomaly_ratio) of the "
                                            "median of the previous 7 partitions.")]

    @dg.graph_asset(
        name=name,
        partitions_def=partitions,
        check_specs=checks,
        ins={"source": dg.AssetIn(info.upstream, dagster_type=dg.Nothing)},
        group_name=GROUP,
        kinds={info.engine},
        owners=["team:erp-ops"],
        description=info.description,
        tags={"erp_backup/source": info.engine},
    )
    def backup_asset(source):  # type: ignore[no-untyped-def]
        checked, integrity = verify(compress(dump(source)))
        result, size = manifest(ship(encrypt(checked)))
        return {"result": result, f"{name}_integrity": integrity, f"{name}_size_anomaly": size}

    return backup_asset


def unconfigured_spec(name: str, engine: str, upstream: str, section: str) -> dg.AssetSpec:
    """A backup this installation does not make (its ``section`` is absent from the config file): shown in the
    catalog, marked, without partitions, job or schedule, and not executable, so that no "Materialize" (one asset's
    or "Materialize all") can launch it. The code location decides at load; adding the section needs a reload."""
    return dg.AssetSpec(name, deps=[upstream], group_name=GROUP, kinds={engine}, owners=["team:erp-ops"],
                        tags={"erp_backup/configured": "no", "erp_backup/source": engine},
                        description=f"NOT CONFIGURED in this installation: nothing backs this up. To back it up, add "
                                    f"the `{section}` section to the config file (docs/reference/configuration.md) "
                                    "and reload the code location (Deployment > Reload, or restart the daemon and "
                                    "the UI).")


def source_spec(info: SourceKind) -> dg.AssetSpec:
    return dg.AssetSpec(info.upstream, description=info.upstream_description, group_name=SOURCE_GROUP,
                        kinds={info.engine}, owners=["team:erp-ops"])
