"""The destination contract, shared by every destination (local directory, S3).

Every method documents what it guarantees; one contract test suite runs against each.

- ``open_writer(key)`` returns an ArtifactWriter. Nothing is visible under ``key`` until
  ``commit()`` succeeds; ``abort()`` (or an exception, or a killed process) leaves nothing
  that lists or reads as complete. Writing an existing key is refused: artifacts are never
  overwritten (every capture has its own timestamped key).
- ``writer.suspend()`` makes what was written durable but still invisible and returns a small
  JSON-able state; ``resume_writer(key, state)`` rebuilds a writer from it whose ``commit()`` or
  ``abort()`` finishes the job, in another stage or process. No more data can be written.
- ``open_reader(key)`` streams the object; ArtifactNotFound when it does not exist.
- ``get(key, dst, expected_sha256)`` copies the object to dst and re-checks its checksum:
  VerifyError on mismatch.
- ``list(prefix)`` yields the complete keys under prefix, sorted. Partial writes never appear.
- ``exists(key)``; ``delete(key)`` (missing keys are not an error); ``uri(key)``.
- ``replace(key, data)``: a small record (a chain ledger, an adopted manifest) written atomically in place:
  a reader sees the old object or the new one, never a mixture or nothing. Artifacts never use it.
- ``sweep_partials(older_than)`` removes what writers that never committed nor aborted (a killed
  process) left behind, once it is older than any live backup could be; returns the keys.
- Object Lock, a capability: ``object_lock_mode`` (None: this destination never locks) and
  ``object_lock_min_days`` (the shortest lock a capture gets, in days);
  ``with_retain_until(until)`` the same destination writing every object locked until then (itself when it
  never locks); ``lock_args()`` how the objects it writes now are locked (empty: not at all); ``lock(key)``
  what keeps ``key`` from deletion ('locked until …', 'under legal hold') or None; ``extend_lock(key, until)``
  never shortens a lock, True when it was (dry run: would be) extended.
"""

from __future__ import annotations

import builtins
import hashlib
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import IO, Any, Protocol

from erp_backup_pipeline.core.streams import CHUNK
from erp_backup_pipeline.errors import VerifyError


class ArtifactWriter(Protocol):
    key: str

    def write(self, data: bytes) -> int: ...

    def suspend(self) -> dict[str, Any]:
        """Durable but invisible; the returned state resumes it (see resume_writer)."""

    def commit(self) -> str:
        """Make the object visible; returns its URI."""

    def abort(self) -> None:
        """Discard everything written; safe to call twice or after a failed commit."""


class Destination(Protocol):
    name: str
    required: bool
    object_lock_mode: str | None
    object_lock_min_days: int

    def open_writer(self, key: str) -> ArtifactWriter: ...

    def resume_writer(self, key: str, pending: dict[str, Any]) -> ArtifactWriter: ...

    def open_reader(self, key: str) -> IO[bytes] | Any: ...

    def list(self, prefix: str = "") -> Iterator[str]: ...

    def exists(self, key: str) -> bool: ...

    def size(self, key: str) -> int:
        """The stored object's size in bytes; ArtifactNotFound when it is not there."""

    def delete(self, key: str) -> None: ...

    def replace(self, key: str, data: bytes) -> None: ...

    def uri(self, key: str) -> str: ...

    def check(self) -> None:
        """Fail early (DestinationError, one line) when the destination cannot be used."""

    def sweep_partials(self, older_than: timedelta = ...) -> builtins.list[str]: ...

    def with_retain_until(self, until: datetime) -> Destination: ...

    def lock_args(self) -> dict[str, Any]: ...

    def lock(self, key: str) -> str | None: ...

    def extend_lock(self, key: str, until: datetime, dry_run: bool = False) -> bool: ...


def put_bytes(dest: Destination, key: str, data: bytes) -> str:
    writer = dest.open_writer(key)
    try:
        writer.write(data)
        return writer.commit()
    except BaseException:
        writer.abort()
        raise


def get(dest: Destination, key: str, dst: IO[bytes] | Any, expected_sha256: str | None = None) -> str:
    """Copy an object to dst, returning its sha256; VerifyError when it differs from the expected one."""
    digest = hashlib.sha256()
    reader = dest.open_reader(key)
    try:
        while chunk := reader.read(CHUNK):
            digest.update(chunk)
            dst.write(chunk)
    finally:
        reader.close()
    actual = digest.hexdigest()
    if expected_sha256 is not None and actual != expected_sha256:
        raise VerifyError(f"{dest.uri(key)}: checksum mismatch (expected {expected_sha256[:12]}..., got {actual[:12]}...)")
    return actual


def read_bytes(dest: Destination, key: str, limit: int | None = None) -> bytes:
    """The object's bytes; with ``limit``, at most limit + 1 of them (so a caller sees that it is oversized without
    reading a huge object into memory)."""
    reader = dest.open_reader(key)
    try:
        if limit is None:
            return bytes(reader.read())
        data = bytearray()
        while len(data) <= limit and (chunk := reader.read(min(CHUNK, limit + 1 - len(data)))):
            data += chunk
        return bytes(data)
    finally:
        reader.close()
