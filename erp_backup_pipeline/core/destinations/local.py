"""Local directory destination: atomic by rename, 0600 files in 0700 directories.

A writer writes ``.<name>.partial-<random>`` beside the final name, fsyncs it and renames it
into place on commit; ``list`` ignores partial files, and ``sweep_partials`` removes the
ones a killed process left behind.
"""

from __future__ import annotations

import builtins
import errno
import os
import secrets
import stat
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import IO, Any, Literal

from erp_backup_pipeline.core.config import Model
from erp_backup_pipeline.errors import ArtifactNotFound, DestinationError

PARTIAL_MARK = ".partial-"
SWEEP_AGE = timedelta(hours=24)  # far longer than any backup keeps an upload waiting for its commit


def _os_error(what: str, exc: OSError) -> DestinationError:
    if exc.errno == errno.ENOSPC:
        return DestinationError(f"{what}: no space left on device")
    return DestinationError(f"{what}: {exc.strerror or exc}")


class LocalWriter:
    def __init__(self, dest: LocalDestination, key: str, pending: dict[str, Any] | None = None) -> None:
        self.key = key
        self._final = dest.path_for(key)
        self._uri = dest.uri(key)
        self._fh: IO[bytes] | None = None
        if pending is not None:  # a suspended writer: its bytes are on disk, only commit/abort remain
            self._tmp = Path(pending["partial"])
            return
        if self._final.exists():
            raise DestinationError(f"{dest.uri(key)} already exists; artifacts are never overwritten")
        dest.ensure_dir(self._final.parent)
        self._tmp = self._final.with_name(f".{self._final.name}{PARTIAL_MARK}{secrets.token_hex(4)}")
        try:
            fd = os.open(self._tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except OSError as exc:
            raise _os_error(dest.uri(key), exc) from None
        self._fh = os.fdopen(fd, "wb")

    def suspend(self) -> dict[str, Any]:
        """Make everything written durable, still invisible; the state lets another stage commit or abort."""
        if self._fh is not None:
            try:
                self._fh.flush()
                os.fsync(self._fh.fileno())
                self._fh.close()
            except OSError as exc:
                self.abort()
                raise _os_error(self._uri, exc) from None
            self._fh = None
        return {"partial": str(self._tmp)}

    def write(self, data: bytes) -> int:
        assert self._fh is not None
        try:
            return self._fh.write(data)
        except OSError as exc:
            raise _os_error(self._uri, exc) from None

    def commit(self) -> str:
        self.suspend()
        try:
            if self._final.exists():
                raise DestinationError(f"{self._uri} already exists; artifacts are never overwritten")
            os.rename(self._tmp, self._final)
            dir_fd = os.open(self._final.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        except OSError as exc:
            self.abort()
            raise _os_error(self._uri, exc) from None
        return self._uri

    def abort(self) -> None:
        if self._fh is not None:
            try:
                self._fh.close()
            except OSError:
                pass
            self._fh = None
        try:
            self._tmp.unlink()
        except FileNotFoundError:
            pass


class LocalDestination:
    object_lock_mode: str | None = None  # a directory cannot hold Object Lock: nothing it writes is locked
    object_lock_min_days = 0

    def __init__(self, path: Path, name: str = "local", required: bool = True) -> None:
        self.root = Path(path).absolute()
        self.name = name
        self.required = required

    def with_retain_until(self, until: datetime) -> LocalDestination:
        return self

    def lock_args(self) -> dict[str, Any]:
        return {}

    def lock(self, key: str) -> str | None:
        return None

    def extend_lock(self, key: str, until: datetime, dry_run: bool = False) -> bool:
        return False

    def path_for(self, key: str) -> Path:
        parts = [p for p in key.split("/") if p]
        if not parts or any(p in (".", "..") for p in parts):
            raise DestinationError(f"invalid object key '{key}'")
        return self.root.joinpath(*parts)

    def ensure_dir(self, directory: Path) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
            rel = directory.relative_to(self.root)
            current = self.root
            for part in rel.parts:
                current = current / part
                current.mkdir(exist_ok=True, mode=0o700)
        except OSError as exc:
            raise _os_error(f"local destination {self.root}", exc) from None

    def uri(self, key: str) -> str:
        return self.path_for(key).as_uri()

    def check(self) -> None:
        self.ensure_dir(self.root)
        if not os.access(self.root, os.W_OK):
            raise DestinationError(f"local destination {self.root} is not writable")

    def open_writer(self, key: str) -> LocalWriter:
        return LocalWriter(self, key)

    def resume_writer(self, key: str, pending: dict[str, Any]) -> LocalWriter:
        return LocalWriter(self, key, pending)

    def open_reader(self, key: str) -> IO[bytes] | Any:
        try:
            return open(self.path_for(key), "rb")
        except FileNotFoundError:
            raise ArtifactNotFound(f"{self.uri(key)} not found") from None
        except OSError as exc:
            raise _os_error(self.uri(key), exc) from None

    def list(self, prefix: str = "") -> Iterator[str]:
        if not self.root.is_dir():
            return iter(())
        keys = []
        for dirpath, _dirs, files in os.walk(self.root):
            for f in files:
                if PARTIAL_MARK in f:
                    continue
                key = Path(dirpath, f).relative_to(self.root).as_posix()
                if key.startswith(prefix):
                    keys.append(key)
        return iter(sorted(keys))

    def exists(self, key: str) -> bool:
        return self.path_for(key).is_file()

    def size(self, key: str) -> int:
        try:
            st = os.stat(self.path_for(key), follow_symlinks=False)
        except FileNotFoundError:
            raise ArtifactNotFound(f"{self.uri(key)} not found") from None
        except OSError as exc:
            raise _os_error(self.uri(key), exc) from None
        if not stat.S_ISREG(st.st_mode):
            raise ArtifactNotFound(f"{self.uri(key)} is not a file")
        return st.st_size

    def delete(self, key: str) -> None:
        try:
            self.path_for(key).unlink()
        except FileNotFoundError:
            pass

    def replace(self, key: str, data: bytes) -> None:
        """Write a fresh partial file, fsync it and rename it over the key (atomic on POSIX)."""
        final = self.path_for(key)
        self.ensure_dir(final.parent)
        tmp = final.with_name(f".{final.name}{PARTIAL_MARK}{secrets.token_hex(4)}")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, final)
            dir_fd = os.open(final.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise _os_error(self.uri(key), exc) from None

    def sweep_partials(self, older_than: timedelta = SWEEP_AGE) -> builtins.list[str]:  # list: the method above
        """Remove partial files a killed writer left, untouched for ``older_than``; returns their keys."""
        cutoff = time.time() - older_than.total_seconds()
        removed = []
        for dirpath, _dirs, files in os.walk(self.root):
            for f in files:
                path = Path(dirpath, f)
                if PARTIAL_MARK in f and path.stat().st_mtime <= cutoff:
                    path.unlink(missing_ok=True)
                    removed.append(path.relative_to(self.root).as_posix())
        return removed


class LocalDestinationSettings(Model):
    type: Literal["local"]
    name: str = "local"
    path: Path
    required: bool = True
