"""The backup stages: dump -> compress -> verify -> encrypt -> ship -> manifest.

Each stage is a function from a picklable ``Capture`` record to the next, so the Dagster ops
and the CLI run the same code, and an op can be retried on its own. The data makes one pass
and is never staged on disk:

- dump checks the source, tools, recipients and destinations and records source facts;
- compress drives ``dump | compress`` and tees the compressed bytes into two threads: a
  verifier (decompress, prove it is the dump byte for byte by sha256, run the source's own check)
  and the encryptor, whose ciphertext goes to every destination at once. Uploads are left
  durable but invisible (a partial file, an incomplete multipart upload);
- verify publishes the verification as the blocking check, and aborts every upload on failure; a source
  that holds nothing (no table, no file, a file count fallen to zero) fails it (``emptiness``);
- encrypt publishes what was encrypted and for whom (fingerprints);
- ship commits the uploads, making the artifact visible;
- manifest writes the manifest beside the artifact: the commit point of the backup (only where the artifact
  still is: a run re-executed days later may find it swept by prune as one without a manifest).

A source with attachments (``core.attachments``: the PostgreSQL globals) has them taken right after its dump,
in the compress stage, sealed (compressed, verified, encrypted) there and put on each destination by ship
before the artifact is committed.

Each capture is named by its stamp (``new_stamp``: UTC time to the millisecond and a random token), so two
captures of one source and partition never share a scratch dir or a key, even in the same millisecond.

A destination with ``object_lock`` writes the artifact and its manifest under S3 Object Lock until the
capture time plus the source's ``keep_within`` (the planner never deletes anything younger), at least
``min_days`` after it.

Each stage's bytes, sha256 and seconds are measured inside the stream. A failing stage aborts
the waiting uploads and removes the staging dir.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from importlib.metadata import version as pkg_version
from pathlib import Path
from typing import Any

from erp_backup_pipeline import __version__
from erp_backup_pipeline.core import attachments, commit, emptiness, signing
from erp_backup_pipeline.core.destinations import Destination
from erp_backup_pipeline.core.destinations.local import SWEEP_AGE
from erp_backup_pipeline.core.manifest import Manifest, artifact_dir, safe_part
from erp_backup_pipeline.core.site import Site, takes_site
from erp_backup_pipeline.core.streams import (
    CHUNK,
    HashingReader,
    HashingWriter,
    PipeConsumer,
    Progress,
    StageStats,
    Tee,
    format_progress,
)
from erp_backup_pipeline.errors import BackupError, DestinationError, VerifyError


@dataclass(frozen=True)
class Capture:
    """Everything one backup run of one source and partition has learned so far."""

    source: str
    partition: str
    captured_at: str
    stamp: str
    workdir: str
    kind: str = ""
    facts: dict[str, Any] = field(default_factory=dict)
    chain: list[dict[str, Any]] = field(default_factory=list)
    pending: dict[str, dict[str, Any]] = field(default_factory=dict)
    verify: dict[str, Any] = field(default_factory=dict)
    artifact: dict[str, Any] = field(default_factory=dict)
    destinations: dict[str, dict[str, Any]] = field(default_factory=dict)
    attachments: list[dict[str, Any]] = field(default_factory=list)  # sealed, staged in workdir until ship
    mode: str = "live"  # or how the data was obtained otherwise (a point-in-time copy of a past day)
    signing_at_start: float = 0.0  # signing.COST.seconds when the capture began: what its run spent is the difference

    @property
    def signing_seconds(self) -> float:
        """What this run has spent on authenticity so far (signing, chain, checking signatures)."""
        return signing.COST.seconds - self.signing_at_start

    def stage(self, name: str) -> dict[str, Any]:
        return next(e for e in self.chain if e["stage"] == name)


def _log(progress: Progress | None, text: str) -> None:
    if progress is not None:
        progress(text, 0, None, 0.0)


@contextlib.contextmanager
def _cleanup_on_failure(capture: Capture, site: Site | None = None) -> Iterator[None]:
    """On failure: abort uploads that are waiting for commit and remove the staging dir."""
    try:
        yield
    except BaseException as exc:
        if site is not None and capture.pending:
            _abort_pending(site, capture)
        shutil.rmtree(capture.workdir, ignore_errors=True)
        if isinstance(exc, OSError):  # a full or read-only staging disk, say: one line, not a traceback
            raise BackupError(f"{capture.source} {capture.partition}: {_os_reason(exc)}") from None
        raise


def _os_reason(exc: OSError) -> str:
    return (exc.strerror or type(exc).__name__) + (f" ({exc.filename})" if exc.filename else "")


# a capture's stamp: UTC time to the millisecond and a random token; stamps without the token came before it
STAMP = re.compile(r"(?P<time>\d{8}T\d{6})(?P<ms>\d{3})Z(?:-[0-9a-f]{8})?")


def new_stamp(now: datetime) -> str:
    """A capture's own name: its UTC time to the millisecond, then a random token, ``20261125T010203456Z-9f3a61c2``.
    Two captures of one source and partition never share it, not even in the same millisecond on two hosts, so
    their scratch dirs and their keys on a destination (artifact and manifest) are their own. Readers take the
    capture time from it (``stamp_time``; the S3 sweep reads the first 15 characters); catalog and retention order
    captures by the manifest's ``captured_at``, never by the stamp."""
    if now.tzinfo is not None:
        now = now.astimezone(UTC)
    return now.strftime("%Y%m%dT%H%M%S") + f"{now.microsecond // 1000:03d}Z-{secrets.token_hex(4)}"


def stamp_time(stamp: str) -> datetime | None:
    """The capture time a stamp names (UTC, to the millisecond), or None when it is not one of ``new_stamp``'s."""
    found = STAMP.fullmatch(stamp)
    if found is None:
        return None
    try:
        return datetime.strptime(found["time"], "%Y%m%dT%H%M%S").replace(
            tzinfo=UTC, microsecond=int(found["ms"]) * 1000)
    except ValueError:
        return None


@takes_site
def new_capture(site: Site, source: str, partition: str, now: datetime | None = None, mode: str = "live") -> Capture:
    now = now or datetime.now(UTC)
    parent = site.staging_dir / safe_part(source)
    try:
        site.staging_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(site.staging_dir, 0o700)
        parent.mkdir(exist_ok=True, mode=0o700)  # not parents=True: it makes parents with the umask's mode
        os.chmod(parent, 0o700)
    except OSError as exc:
        raise BackupError(f"{source} {partition}: staging dir: {_os_reason(exc)}") from None
    for _ in range(8):  # a token drawn twice in one millisecond: draw again
        stamp = new_stamp(now)
        workdir = parent / f"{safe_part(partition)}-{stamp}"
        try:
            workdir.mkdir(mode=0o700)
            break
        except FileExistsError:
            continue
    else:
        raise BackupError(f"{source} {partition}: cannot make a scratch dir of its own under {parent}")
    return Capture(source=source, partition=partition, captured_at=now.isoformat(timespec="seconds"),
                   stamp=stamp, workdir=str(workdir), mode=mode, signing_at_start=signing.COST.seconds)


def _stale_workdirs(workdir: Path, older_than: timedelta = SWEEP_AGE) -> list[Path]:
    """Scratch dirs of the same source that no backup has touched for a day: a killed run left them."""
    cutoff = time.time() - older_than.total_seconds()
    return [d for d in workdir.parent.iterdir() if d != workdir and d.is_dir() and d.stat().st_mtime <= cutoff]


@takes_site
def stage_dump(site: Site, capture: Capture, progress: Progress | None = None) -> Capture:
    """Check the source, the tools, the recipients and the destinations; record source facts."""
    with _cleanup_on_failure(capture):
        site.signer()  # a missing or unreadable signing key fails before any work too
        enc = site.encryptor()  # a bad recipient fails before any work
        if hasattr(enc, "check_keys"):
            enc.check_keys()
        for dest in site.destinations:
            if dest.required:
                dest.check()
            with contextlib.suppress(BackupError):  # an optional destination may be down today
                for key in dest.sweep_partials():
                    _log(progress, f"{dest.name}: removed {key}, left by an interrupted backup")
        for stale in _stale_workdirs(Path(capture.workdir)):
            shutil.rmtree(stale, ignore_errors=True)
            _log(progress, f"{capture.source}: removed scratch dir {stale.name}, left by an interrupted backup")
        source = site.source(capture.source)
        t0 = time.monotonic()
        facts = source.prepare(Path(capture.workdir))
        _log(progress, f"{capture.source}: source ready ({facts.get('engine')}) in {time.monotonic() - t0:.1f} s")
        return replace(capture, kind=source.kind, facts=facts)


def _verifier(source: Any, codec: Any, workdir: Path, facts: dict[str, Any], stats: StageStats) -> Any:
    """Decompress what the compressor wrote, hash it, and run the source's own check on it."""
    def consume(compressed: Any) -> dict[str, Any]:
        reader = HashingReader(codec.reader(compressed), stats)
        details = source.verify(reader, workdir, facts)
        while reader.read(CHUNK):
            pass
        return details
    return consume


def _no_destination(what: str, results: dict[str, dict[str, Any]]) -> DestinationError:
    return DestinationError(f"{what}: " + "; ".join(f"{n}: {r['error']}" for n, r in results.items() if not r["ok"]))


class _FanOut:
    """Writes each chunk to every destination's writer; a failing destination is dropped, not fatal."""

    def __init__(self, writers: dict[str, Any], results: dict[str, dict[str, Any]]) -> None:
        self.writers = writers
        self.results = results
        self.stats = StageStats()

    def write(self, data: bytes | memoryview) -> int:
        b = bytes(data)
        self.stats.update(b)
        for name, w in list(self.writers.items()):
            try:
                w.write(b)
            except BackupError as exc:
                w.abort()
                del self.writers[name]
                self.results[name] = {"ok": False, "error": str(exc)}
        if not self.writers:
            raise _no_destination("every destination failed", self.results)
        return len(b)

    def flush(self) -> None:
        pass

    def abort(self) -> None:
        for w in self.writers.values():
            w.abort()


def _destinations(site: Site, capture: Capture) -> list[Destination]:
    """The destinations; those with object_lock lock what they write for this capture until its captured_at
    plus the source's keep_within, at least min_days after it (not at all when that is not in the future)."""
    found = list(site.destinations)
    if all(d.object_lock_mode is None for d in found):
        return found
    policy = site.policies.get(capture.source)
    within = policy.keep_within if policy is not None else timedelta(0)
    captured = datetime.fromisoformat(capture.captured_at)
    for i, dest in enumerate(found):
        if dest.object_lock_mode is not None:
            found[i] = dest.with_retain_until(captured + max(within, timedelta(days=dest.object_lock_min_days)))
    return found


def _open_writers(site: Site, capture: Capture, key: str) -> _FanOut:
    results: dict[str, dict[str, Any]] = {}
    writers: dict[str, Any] = {}
    for dest in _destinations(site, capture):
        try:
            writers[dest.name] = dest.open_writer(key)
        except BackupError as exc:
            results[dest.name] = {"ok": False, "error": str(exc)}
    if not writers:
        raise _no_destination("no destination can take the artifact", results)
    return _FanOut(writers, results)


def _abort_pending(site: Site, capture: Capture) -> None:
    for dest in site.destinations:
        state = capture.pending.get(dest.name)
        if state is not None:
            with contextlib.suppress(BackupError):
                dest.resume_writer(capture.artifact["key"], state).abort()


@takes_site
def stage_compress(site: Site, capture: Capture, progress: Progress | None = None) -> Capture:
    """One pass: dump | compress | (verify, encrypt | every destination). Uploads stay invisible."""
    with _cleanup_on_failure(capture):
        source, codec, enc = site.source(capture.source), site.compressor(), site.encryptor()
        key = (f"{artifact_dir(site.prefix, capture.source, capture.partition)}/"
               f"{capture.stamp}.{source.extension}.{codec.extension}.{enc.extension}")
        fan = _open_writers(site, capture, key)
        verified = StageStats()
        verifier = PipeConsumer(_verifier(source, codec, Path(capture.workdir), capture.facts, verified), "verify")
        encryptor = PipeConsumer(lambda compressed: enc.encrypt(compressed, fan), "encrypt")
        t0 = time.monotonic()
        dump = None
        try:
            dump = source.open_dump(Path(capture.workdir), capture.facts)
            raw = HashingReader(dump, progress=progress, stage="dump")
            out = HashingWriter(Tee(verifier, encryptor))
            codec.compress(raw, out)
            learnt = dump.finish() or {}
            encryptor.close()  # raises when every destination failed
        except BaseException:
            if dump is not None:
                dump.abort()
            verifier.finish()
            encryptor.finish()
            fan.abort()
            raise
        verify = _verify_result(verifier, verified, raw.stats)
        if verify["ok"] and (empty := emptiness.problem(site, capture.source, {**capture.facts, **learnt})):
            verify = {"ok": False, "error": empty}  # the blocking integrity check fails: a failed run, an alert
        if raw.stats.bytes == 0:
            fan.abort()
            raise BackupError(f"{capture.source}: the dump is empty (0 bytes)")
        facts = {**capture.facts, **learnt}
        try:
            sealed = _seal_attachments(source, codec, enc, capture, facts, key)
        except VerifyError as exc:  # published by stage_verify, as a failed check of the main stream is
            sealed = []
            if verify.get("ok"):
                verify = {"ok": False, "error": str(exc)}
        except BaseException:
            fan.abort()
            raise
        pending: dict[str, dict[str, Any]] = {}
        for name, writer in fan.writers.items():
            try:
                pending[name] = writer.suspend()
            except BackupError as exc:
                fan.results[name] = {"ok": False, "error": str(exc)}
        if not pending:
            raise _no_destination("every destination failed", fan.results)
        wall = time.monotonic() - t0
        compress_seconds = max(wall - raw.stats.seconds - out.stats.seconds, 0.0)
        chain = [
            {"stage": "dump", "format": source.extension, "bytes": raw.stats.bytes, "sha256": raw.stats.sha256,
             "seconds": round(raw.stats.seconds, 3)},
            {"stage": "compress", "codec": codec.name, **codec.params(), "bytes": out.stats.bytes,
             "sha256": out.stats.sha256, "seconds": round(compress_seconds, 3)},
            {"stage": "encrypt", "codec": enc.name, **enc.params(), "bytes": fan.stats.bytes,
             "sha256": fan.stats.sha256, "seconds": round(encryptor.seconds, 3)},
        ]
        _log(progress, format_progress("dump|compress|encrypt", raw.stats.bytes, None, wall)
             + f" -> {fan.stats.bytes} bytes to {', '.join(pending)} (not yet visible)")
        return replace(capture, chain=chain, verify=verify, pending=pending, destinations=fan.results, facts=facts,
                       artifact={"key": key, "bytes": fan.stats.bytes, "sha256": fan.stats.sha256},
                       attachments=sealed)


def _seal_attachments(source: Any, codec: Any, enc: Any, capture: Capture, facts: dict[str, Any],
                      key: str) -> list[dict[str, Any]]:
    """Take the source's attachments now, right after its dump, and seal each one (core.attachments)."""
    taken = getattr(source, "attachments", None)
    if taken is None:
        return []
    workdir = Path(capture.workdir)

    def check(name: str, data: bytes) -> dict[str, Any]:
        return dict(source.verify_attachment(name, data, facts))

    return [attachments.seal(att, codec, enc, workdir, key.rsplit("/", 1)[0], capture.stamp, check)
            for att in taken(workdir, facts)]


def _verify_result(verifier: PipeConsumer, verified: StageStats, dump: StageStats) -> dict[str, Any]:
    try:
        details = verifier.close()
    except BaseException as exc:  # noqa: BLE001 - a failed check is a result, published by stage_verify
        return {"ok": False, "error": str(exc) if isinstance(exc, BackupError) else f"{type(exc).__name__}: {exc}"}
    if (verified.bytes, verified.sha256) != (dump.bytes, dump.sha256):
        return {"ok": False, "error": f"decompressed artifact differs from the dump ({verified.bytes} vs "
                                      f"{dump.bytes} bytes)"}
    return {"ok": True, **details, "raw_sha256_match": True, "seconds": round(verifier.seconds, 3)}


@takes_site
def stage_verify(site: Site, capture: Capture, progress: Progress | None = None) -> Capture:
    """Publish the verification of the compressed bytes; a failure aborts every upload."""
    with _cleanup_on_failure(capture, site):
        if not capture.verify.get("ok"):
            raise VerifyError(f"{capture.source}: {capture.verify.get('error', 'verification did not run')}")
        _log(progress, f"{capture.source}: verified ({capture.verify.get('method')}) in {capture.verify['seconds']:.1f} s")
        return capture


@takes_site
def stage_encrypt(site: Site, capture: Capture, progress: Progress | None = None) -> Capture:
    """Publish what was encrypted, to whom (fingerprints), and where the ciphertext waits."""
    with _cleanup_on_failure(capture, site):
        entry = capture.stage("encrypt")
        if entry["bytes"] <= capture.stage("compress")["bytes"]:
            raise BackupError(f"{capture.source}: ciphertext is not larger than its plaintext; encryption did not run")
        _log(progress, f"{capture.source}: encrypted with {entry['codec']} for {len(entry.get('recipients', []))} "
                       f"recipient(s), {entry['bytes']} bytes waiting on {', '.join(capture.pending)}")
        return capture


@takes_site
def stage_ship(site: Site, capture: Capture, progress: Progress | None = None) -> Capture:
    """Commit the verified, encrypted artifact on every destination that holds it."""
    with _cleanup_on_failure(capture, site):
        results = dict(capture.destinations)
        t0 = time.monotonic()
        for dest in _destinations(site, capture):
            state = capture.pending.get(dest.name)
            if state is None:
                continue
            try:
                attachments.ship(dest, capture.attachments)  # before the artifact: nothing named is ever missing
                results[dest.name] = {"ok": True, "uri": dest.resume_writer(capture.artifact["key"], state).commit()}
                lock = dest.lock_args()
                if lock:  # the manifest records how long this copy cannot be deleted
                    results[dest.name]["object_lock"] = {
                        "mode": lock["ObjectLockMode"],
                        "retain_until": lock["ObjectLockRetainUntilDate"].isoformat(timespec="seconds")}
            except BackupError as exc:
                results[dest.name] = {"ok": False, "error": str(exc)}
                with contextlib.suppress(BackupError):  # nothing of this capture becomes visible there
                    dest.resume_writer(capture.artifact["key"], state).abort()
        ok = [n for n, r in results.items() if r["ok"]]
        if not ok:
            raise _no_destination("every destination failed", results)
        wall = time.monotonic() - t0
        _log(progress, f"{capture.source}: shipped to {', '.join(ok)} in {wall:.1f} s")
        artifact = {**capture.artifact, "uri": results[ok[0]]["uri"], "ship_seconds": round(wall, 3)}
        return replace(capture, artifact=artifact, destinations=results, pending={})


def tool_versions() -> dict[str, str]:
    found = {"erp_backup_pipeline": __version__}
    for pkg in ("zstandard", "pyrage", "boto3"):
        try:
            found[pkg] = pkg_version(pkg)
        except Exception:
            pass
    return found


@takes_site
def stage_manifest(site: Site, capture: Capture, progress: Progress | None = None) -> Manifest:
    """Write the manifest beside the artifact on every destination that holds it (the commit point)."""
    try:
        missing = sorted(n for n in site.required if not capture.destinations.get(n, {}).get("ok"))
        manifest = Manifest(
            source=capture.source, kind=capture.kind, partition=capture.partition, captured_at=capture.captured_at,
            finished_at=datetime.now(UTC).isoformat(timespec="seconds"),
            artifact_key=capture.artifact["key"], artifact_bytes=capture.artifact["bytes"],
            artifact_sha256=capture.artifact["sha256"], chain=capture.chain, verify=capture.verify,
            facts=capture.facts, tools={**tool_versions(), **{k: v for k, v in capture.facts.items() if k == "pg_dump"}},
            destinations=capture.destinations, complete=not missing, mode=capture.mode,
            attachments=attachments.manifest_records(capture.attachments),
        )
        holders = [n for n, r in capture.destinations.items() if r.get("ok")]
        manifest, failed = commit.commit(site, manifest, _destinations(site, capture), holders,
                                         lambda line: _log(progress, f"warning: {line}"))
        for name, error in failed.items():
            capture.destinations[name] = {"ok": False, "error": error}
            if name not in missing and name in site.required:
                missing.append(name)
        if missing:
            errors = "; ".join(f"{n}: {capture.destinations.get(n, {}).get('error', 'not written')}" for n in missing)
            raise DestinationError(f"{capture.source} {capture.partition}: not backed up on every required "
                                   f"destination ({errors})")
        _log(progress, f"{capture.source} {capture.partition}: manifest written, backup complete")
        committed = getattr(site.source(capture.source), "on_committed", None)
        if committed is not None:
            try:
                committed(Path(capture.workdir), manifest)
            except (OSError, BackupError) as exc:  # the backup is committed: say what the next one will do instead
                reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
                _log(progress, f"warning: {capture.source} {capture.partition}: the backup is complete, but what it "
                               f"shipped could not be remembered in {site.state_dir} ({reason}); the next backup "
                               "starts from the older state and reads again what changed since")
        return manifest
    finally:
        shutil.rmtree(capture.workdir, ignore_errors=True)


STAGES = (stage_dump, stage_compress, stage_verify, stage_encrypt, stage_ship)


@takes_site
def run_backup(site: Site, source: str, partition: str, progress: Progress | None = None,
               mode: str = "live") -> Manifest:
    """All stages in order, as the Dagster graph runs them."""
    capture = new_capture(site, source, partition, mode=mode)
    for stage in STAGES:
        capture = stage(site, capture, progress)
    return stage_manifest(site, capture, progress)
