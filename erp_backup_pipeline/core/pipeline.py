"""The backup stages: dump -> compress -> verify -> encrypt -> ship -> manifest.

Each stage is a function from a picklable ``Capture`` record to the next, so the Dagster
ops and the CLI run the same code, and an op can be retried on its own. Data streams:

- dump checks the source, tools, recipients and destinations and records facts;
- compress drives ``dump | compress`` into the one staged file (the compressed artifact, never
  the raw dump) and tees the compressed bytes into a verifier thread that decompresses them,
  proves they are the dump byte for byte (sha256) and runs the source's own check;
- verify publishes that result and proves the staged file is still exactly the verified bytes;
- encrypt resolves the recipients; ship streams the staged file through the encryptor into
  every destination at once (uploads are committed only when the whole stream went out);
- manifest writes the manifest beside the artifact: the commit point.

Staging space is the compressed size, below the final encrypted size. Each stage's bytes,
sha256 and seconds are measured inside the stream. A failing stage removes the staging dir.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from importlib.metadata import version as pkg_version
from pathlib import Path
from typing import Any

from erp_backup_pipeline import __version__
from erp_backup_pipeline.core.codecs import compressor, encryptor_from_settings
from erp_backup_pipeline.core.destinations import build_destinations, put_bytes
from erp_backup_pipeline.core.manifest import Manifest, artifact_dir, safe_part
from erp_backup_pipeline.core.sources import build_source
from erp_backup_pipeline.core.streams import CHUNK, HashingReader, HashingWriter, Progress, StageStats, format_progress
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
    staged: str = ""
    verify: dict[str, Any] = field(default_factory=dict)
    artifact: dict[str, Any] = field(default_factory=dict)
    destinations: dict[str, dict[str, Any]] = field(default_factory=dict)

    def stage(self, name: str) -> dict[str, Any]:
        return next(e for e in self.chain if e["stage"] == name)


def _log(progress: Progress | None, text: str) -> None:
    if progress is not None:
        progress(text, 0, None, 0.0)


@contextlib.contextmanager
def _cleanup_on_failure(capture: Capture) -> Iterator[None]:
    try:
        yield
    except BaseException:
        shutil.rmtree(capture.workdir, ignore_errors=True)
        raise


def new_capture(settings: Any, source: str, partition: str, now: datetime | None = None) -> Capture:
    now = now or datetime.now(UTC)
    stamp = now.strftime("%Y%m%dT%H%M%S") + f"{now.microsecond // 1000:03d}Z"
    workdir = Path(settings.staging_dir) / safe_part(source) / f"{safe_part(partition)}-{stamp}"
    Path(settings.staging_dir).mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(settings.staging_dir, 0o700)
    workdir.mkdir(parents=True, mode=0o700)
    return Capture(source=source, partition=partition, captured_at=now.isoformat(timespec="seconds"),
                   stamp=stamp, workdir=str(workdir))


def stage_dump(settings: Any, capture: Capture, progress: Progress | None = None) -> Capture:
    """Check the source, the tools, the recipients and the destinations; record source facts."""
    with _cleanup_on_failure(capture):
        encryptor_from_settings(settings.encryption)  # a bad recipient fails before any work
        for dest in build_destinations(settings):
            if dest.required:
                dest.check()
        source = build_source(settings, capture.source)
        t0 = time.monotonic()
        facts = source.prepare(Path(capture.workdir))
        _log(progress, f"{capture.source}: source ready ({facts.get('engine')}) in {time.monotonic() - t0:.1f} s")
        return replace(capture, kind=source.kind, facts=facts)


class _Verifier:
    """Runs the source's verification on the compressed bytes while they are written.

    The compressor's output is teed into a pipe; a thread decompresses it, hashes the result and
    feeds it to the source's own check (``pg_restore --list``, ``PRAGMA integrity_check``). The
    writer is never blocked by a failed check: the thread drains the pipe to its end.
    """

    def __init__(self, source: Any, codec: Any, workdir: Path, facts: dict[str, Any]) -> None:
        r, w = os.pipe()
        self._r = os.fdopen(r, "rb")
        self._w: Any = os.fdopen(w, "wb")
        self._source, self._codec, self._workdir, self._facts = source, codec, workdir, facts
        self._details: dict[str, Any] = {}
        self._error: BaseException | None = None
        self.stats = StageStats()
        self._thread = threading.Thread(target=self._run, name="verify", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        t0 = time.thread_time()
        try:
            reader = HashingReader(self._codec.reader(self._r), self.stats)
            self._details = self._source.verify(reader, self._workdir, self._facts)
            while reader.read(CHUNK):
                pass
        except BaseException as exc:  # noqa: BLE001 - reported by finish()
            self._error = exc
        finally:
            while self._r.read(CHUNK):
                pass
            self._r.close()
            self.stats.seconds = time.thread_time() - t0

    def write(self, data: bytes) -> None:
        self._w.write(data)

    def close(self) -> None:
        if self._w is not None:
            self._w.close()
            self._w = None
        self._thread.join()

    def result(self, dump: StageStats) -> dict[str, Any]:
        self.close()
        if self._error is not None:
            return {"ok": False, "error": str(self._error) if isinstance(self._error, BackupError)
                    else f"{type(self._error).__name__}: {self._error}"}
        if (self.stats.bytes, self.stats.sha256) != (dump.bytes, dump.sha256):
            return {"ok": False, "error": f"decompressed artifact differs from the dump ({self.stats.bytes} vs "
                                          f"{dump.bytes} bytes)"}
        return {"ok": True, **self._details, "raw_sha256_match": True, "seconds": round(self.stats.seconds, 3)}


class _Tee:
    def __init__(self, *sinks: Any) -> None:
        self._sinks = sinks

    def write(self, data: bytes) -> int:
        for sink in self._sinks:
            sink.write(data)
        return len(data)

    def flush(self) -> None:
        pass


def stage_compress(settings: Any, capture: Capture, progress: Progress | None = None) -> Capture:
    """Stream the dump through the compressor into the staged file, verifying the bytes on the way."""
    with _cleanup_on_failure(capture):
        source = build_source(settings, capture.source)
        codec = compressor(settings.compression.codec, level=settings.compression.level,
                           threads=settings.compression.threads)
        staged = Path(capture.workdir) / f"{capture.stamp}.{source.extension}.{codec.extension}"
        t0 = time.monotonic()
        dump = source.open_dump(Path(capture.workdir), capture.facts)
        raw = HashingReader(dump, progress=progress, stage="dump")
        verifier = _Verifier(source, codec, Path(capture.workdir), capture.facts)
        try:
            with open(os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as fh:
                out = HashingWriter(_Tee(fh, verifier))
                codec.compress(raw, out)
            dump.finish()
        except BaseException:
            dump.abort()
            verifier.close()
            raise
        verify = verifier.result(raw.stats)
        wall = time.monotonic() - t0
        compress_seconds = max(wall - raw.stats.seconds - out.stats.seconds, 0.0)
        if raw.stats.bytes == 0:
            raise BackupError(f"{capture.source}: the dump is empty (0 bytes)")
        chain = [
            {"stage": "dump", "format": source.extension, "bytes": raw.stats.bytes, "sha256": raw.stats.sha256,
             "seconds": round(raw.stats.seconds, 3)},
            {"stage": "compress", "codec": codec.name, **codec.params(), "bytes": out.stats.bytes,
             "sha256": out.stats.sha256, "seconds": round(compress_seconds, 3)},
        ]
        _log(progress, format_progress("dump+compress", raw.stats.bytes, None, wall)
             + f" -> {out.stats.bytes} bytes compressed")
        return replace(capture, chain=chain, staged=str(staged), verify=verify)


def stage_verify(settings: Any, capture: Capture, progress: Progress | None = None) -> Capture:
    """Publish the verification of the compressed bytes, and prove the staged file is still those bytes."""
    with _cleanup_on_failure(capture):
        if not capture.verify.get("ok"):
            raise VerifyError(f"{capture.source}: {capture.verify.get('error', 'verification did not run')}")
        digest = hashlib.sha256()
        with open(capture.staged, "rb") as fh:
            while chunk := fh.read(CHUNK):
                digest.update(chunk)
        if digest.hexdigest() != capture.stage("compress")["sha256"]:
            raise VerifyError(f"{capture.source}: the staged artifact changed after it was verified (sha256 differs)")
        _log(progress, f"{capture.source}: verified ({capture.verify.get('method')}) in {capture.verify['seconds']:.1f} s")
        return replace(capture, verify={**capture.verify, "staged_sha256_match": True})


def stage_encrypt(settings: Any, capture: Capture, progress: Progress | None = None) -> Capture:
    """Resolve the recipients; the encryption itself streams during ship."""
    with _cleanup_on_failure(capture):
        enc = encryptor_from_settings(settings.encryption)
        if hasattr(enc, "check_keys"):
            enc.check_keys()
        entry = {"stage": "encrypt", "codec": enc.name, **enc.params()}
        return replace(capture, chain=[*capture.chain, entry])


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
            raise DestinationError("every destination failed: " + "; ".join(r["error"] for r in self.results.values()))
        return len(b)

    def flush(self) -> None:
        pass


def stage_ship(settings: Any, capture: Capture, progress: Progress | None = None) -> Capture:
    """Encrypt the staged artifact once and stream the ciphertext to every destination."""
    with _cleanup_on_failure(capture):
        enc = encryptor_from_settings(settings.encryption)
        staged = Path(capture.staged)
        key = f"{artifact_dir(settings.prefix, capture.source, capture.partition)}/{staged.name}.{enc.extension}"
        results: dict[str, dict[str, Any]] = {}
        writers: dict[str, Any] = {}
        dests = build_destinations(settings)
        for dest in dests:
            try:
                writers[dest.name] = dest.open_writer(key)
            except BackupError as exc:
                results[dest.name] = {"ok": False, "error": str(exc)}
        if not writers:
            raise DestinationError("no destination can take the artifact: "
                                   + "; ".join(f"{n}: {r['error']}" for n, r in results.items()))
        fan = _FanOut(writers, results)
        t0 = time.monotonic()
        try:
            with open(staged, "rb") as fh:
                src = HashingReader(fh, progress=progress, stage="encrypt+ship", total=staged.stat().st_size)
                enc.encrypt(src, fan)
        except BaseException:
            for w in fan.writers.values():
                w.abort()
            raise
        for name, w in fan.writers.items():
            try:
                results[name] = {"ok": True, "uri": w.commit()}
            except BackupError as exc:
                results[name] = {"ok": False, "error": str(exc)}
        wall = time.monotonic() - t0
        staged.unlink(missing_ok=True)  # staging space is released as soon as the ciphertext is out
        ok = [n for n, r in results.items() if r["ok"]]
        if not ok:
            raise DestinationError("every destination failed: " + "; ".join(f"{n}: {r['error']}" for n, r in results.items()))
        chain = [dict(e) for e in capture.chain]
        chain[-1].update({"bytes": fan.stats.bytes, "sha256": fan.stats.sha256, "seconds": round(wall, 3)})
        artifact = {"key": key, "bytes": fan.stats.bytes, "sha256": fan.stats.sha256,
                    "uri": results[ok[0]]["uri"], "ship_seconds": round(wall, 3)}
        _log(progress, format_progress("encrypt+ship", fan.stats.bytes, None, wall) + f" to {', '.join(ok)}")
        return replace(capture, chain=chain, artifact=artifact, destinations=results)


def tool_versions() -> dict[str, str]:
    found = {"erp_backup_pipeline": __version__}
    for pkg in ("zstandard", "pyrage", "boto3"):
        try:
            found[pkg] = pkg_version(pkg)
        except Exception:
            pass
    return found


def stage_manifest(settings: Any, capture: Capture, progress: Progress | None = None) -> Manifest:
    """Write the manifest beside the artifact on every destination that holds it (the commit point)."""
    try:
        required = {d.name for d in settings.destinations if d.required}
        missing = sorted(n for n in required if not capture.destinations.get(n, {}).get("ok"))
        manifest = Manifest(
            source=capture.source, kind=capture.kind, partition=capture.partition, captured_at=capture.captured_at,
            finished_at=datetime.now(UTC).isoformat(timespec="seconds"),
            artifact_key=capture.artifact["key"], artifact_bytes=capture.artifact["bytes"],
            artifact_sha256=capture.artifact["sha256"], chain=capture.chain, verify=capture.verify,
            facts=capture.facts, tools={**tool_versions(), **{k: v for k, v in capture.facts.items() if k == "pg_dump"}},
            destinations=capture.destinations, complete=not missing,
        )
        data = manifest.to_json()
        for dest in build_destinations(settings):
            if capture.destinations.get(dest.name, {}).get("ok"):
                try:
                    put_bytes(dest, manifest.key, data)
                except BackupError as exc:
                    capture.destinations[dest.name] = {"ok": False, "error": f"manifest: {exc}"}
                    if dest.name not in missing and dest.name in required:
                        missing.append(dest.name)
        if missing:
            errors = "; ".join(f"{n}: {capture.destinations.get(n, {}).get('error', 'not written')}" for n in missing)
            raise DestinationError(f"{capture.source} {capture.partition}: not backed up on every required "
                                   f"destination ({errors})")
        _log(progress, f"{capture.source} {capture.partition}: manifest written, backup complete")
        return manifest
    finally:
        shutil.rmtree(capture.workdir, ignore_errors=True)


STAGES = (stage_dump, stage_compress, stage_verify, stage_encrypt, stage_ship)


def run_backup(settings: Any, source: str, partition: str, progress: Progress | None = None) -> Manifest:
    """All stages in order, as the Dagster graph runs them."""
    capture = new_capture(settings, source, partition)
    for stage in STAGES:
        capture = stage(settings, capture, progress)
    return stage_manifest(settings, capture, progress)
