"""Capture side of the ``config_archive`` source: walking the configured paths and streaming the PAX tar.

Owns how the ERP's configuration (``.env``, config dirs, monitoring config) is read and written:

- ``_expand``/``_member_name`` turn configured files, directories and glob patterns (a glob also
  matches dot files) into paths and member names relative to ``root`` (also used by
  ``FilesSource.prepare``).
- ``_Archiver`` walks them depth first (excludes match any path component; symlinks are never
  followed, except a configured path itself when the source says ``follow_symlinks``) and writes
  the tar, keeping modes, owners, mtimes, directories and symlinks. Each file is read once per
  attempt (in memory, beyond 8 MiB in a 0600 temp file in the staging dir) and hashed as stored;
  a file that changes while read is read again, and a file that cannot be read fails the backup
  in ``finish()``: it is never skipped. The last member, ``INDEX_NAME``, lists every member with
  its metadata and sha256.
- ``_TarDump`` is the DumpStream: a background thread writes the tar into an OS pipe.

Imports files_common only. Messages name paths, never contents: a ``.env`` holds secrets.
"""

from __future__ import annotations

import fnmatch
import functools
import glob
import grp
import hashlib
import io
import json
import os
import pwd
import re
import stat
import tarfile
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Any

from erp_backup_pipeline.core.sources.files_common import INDEX_NAME, _kind, _reason, shown
from erp_backup_pipeline.core.streams import CHUNK, PipeProducer
from erp_backup_pipeline.errors import BackupError, SourceError

_REREADS = 3  # a file that changes while read is read again at most this often
_SETTLE_PAUSE = 0.05  # seconds before reading a changing file again
_SPOOL_MEMORY = 8 * CHUNK  # one file is held in memory up to this size, beyond it in a temp file in workdir
_MAGIC = re.compile(r"[*?[]")


def _expand(pattern: str) -> list[str]:
    """The paths a configured entry stands for: itself when it exists, else its glob matches."""
    if os.path.lexists(pattern):
        return [pattern]
    if _MAGIC.search(pattern):
        return sorted(glob.glob(pattern, recursive=True, include_hidden=True))
    return []


def _member_name(path: str, root: str) -> str | None:
    """``path`` relative to ``root`` with '/' separators ('' for root itself); None when outside root."""
    if os.path.commonpath([root, path]) != root:
        return None
    rel = os.path.relpath(path, root)
    return "" if rel == "." else rel.replace(os.sep, "/")


@functools.lru_cache(maxsize=256)
def _user(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return ""


@functools.lru_cache(maxsize=256)
def _group(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return ""


def _tarinfo(name: str, st: os.stat_result) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = (tarfile.DIRTYPE if stat.S_ISDIR(st.st_mode) else
                 tarfile.SYMTYPE if stat.S_ISLNK(st.st_mode) else tarfile.REGTYPE)
    info.mode = stat.S_IMODE(st.st_mode)
    info.uid, info.gid = st.st_uid, st.st_gid
    info.uname, info.gname = _user(st.st_uid), _group(st.st_gid)
    whole, frac = divmod(st.st_mtime_ns, 10**9)
    info.mtime = st.st_mtime_ns / 10**9 if frac else whole  # PAX keeps sub-second mtimes
    return info


def _open_regular(path: str) -> int:
    """Open for reading without following a symlink or blocking on a FIFO swapped in after listing."""
    return os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)


def _read_chunks(fd: int) -> Iterator[bytes]:
    while chunk := os.read(fd, CHUNK):
        yield chunk


class _Unreadable(Exception):
    pass


class _Archiver:
    """Walks the configured paths, writes the tar, and collects the index and the unreadable paths.

    Subclasses change what ``_add`` stores per path and the name of the index written last."""

    index_name = INDEX_NAME

    def __init__(self, patterns: list[str], root: str, excludes: Sequence[str], workdir: Path,
                 follow: bool = False) -> None:
        self.patterns, self.root, self.excludes, self.workdir = patterns, root, list(excludes), workdir
        self.follow = follow  # a configured path that is a symlink is walked where it points (under its own name)
        self.index: list[dict[str, Any]] = []
        self.problems: list[tuple[str, str]] = []
        self.stop = threading.Event()

    def _excluded(self, name: str) -> bool:
        return any(fnmatch.fnmatchcase(part, pat) for part in name.split("/") for pat in self.excludes)

    def candidates(self) -> Iterator[tuple[str, str]]:
        """(path, member name) depth first in name order, each name once, excludes applied."""
        seen: set[str] = set()
        for pattern in self.patterns:
            tops = _expand(pattern)
            if not tops:
                self.problems.append((pattern, "no longer exists"))
            for top in tops:
                top_name = _member_name(top, self.root)
                if top_name is None:
                    self.problems.append((top, f"is not under the root {shown(self.root)}"))
                    continue
                walked = os.path.realpath(top) if self.follow and top == pattern and os.path.islink(top) else top
                stack = [(walked, top_name)]
                while stack:
                    path, name = stack.pop()
                    if name in seen or self._excluded(name):
                        continue
                    seen.add(name)
                    if name:
                        yield path, name
                    if os.path.isdir(path) and not os.path.islink(path):
                        try:
                            children = sorted(os.listdir(path), reverse=True)
                        except OSError as exc:
                            self.problems.append((path, f"cannot be listed: {_reason(exc)}"))
                            continue
                        stack += [(os.path.join(path, c), f"{name}/{c}" if name else c) for c in children]

    def write(self, out: IO[bytes]) -> None:
        with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT, errors="surrogateescape") as tar:
            for path, name in self.candidates():
                if self.stop.is_set():
                    raise SourceError("files: dump aborted")
                if name == self.index_name:
                    self.problems.append((path, f"uses the reserved name {self.index_name}"))
                    continue
                self._add(tar, path, name)
            data = json.dumps(self.index, sort_keys=True).encode()
            info = tarfile.TarInfo(self.index_name)
            info.size, info.mode, info.mtime = len(data), 0o600, int(time.time())
            tar.addfile(info, io.BytesIO(data))

    def _add(self, tar: tarfile.TarFile, path: str, name: str) -> None:
        try:
            st = os.lstat(path)
            if stat.S_ISDIR(st.st_mode):
                self._store(tar, _tarinfo(name, st))
            elif stat.S_ISLNK(st.st_mode):
                info = _tarinfo(name, st)
                info.linkname = os.readlink(path)
                self._store(tar, info)
            elif stat.S_ISREG(st.st_mode):
                spool, digest, settled = self._read_settled(path)
                with spool:
                    info = _tarinfo(name, settled)
                    info.size = settled.st_size
                    self._store(tar, info, spool, digest)
            else:
                self.problems.append((path, "is not a regular file, directory or symlink (exclude it)"))
        except OSError as exc:
            if isinstance(exc, BrokenPipeError):
                raise  # the reader is gone (abort): stop, this is no unreadable file
            self.problems.append((path, _reason(exc)))
        except _Unreadable as exc:
            self.problems.append((path, str(exc)))

    def _store(self, tar: tarfile.TarFile, info: tarfile.TarInfo, data: IO[bytes] | None = None,
               digest: str | None = None) -> None:
        tar.addfile(info, data)
        entry = {"name": info.name, "type": _kind(info), "size": info.size, "mode": info.mode,
                 "uid": info.uid, "gid": info.gid, "mtime": info.mtime}
        if digest is not None:
            entry["sha256"] = digest
        if info.issym():
            entry["linkname"] = info.linkname
        self.index.append(entry)

    def _read_settled(self, path: str) -> tuple[Any, str, os.stat_result]:
        """Read a file once into a spool, hashing it; again when its size or mtime moved meanwhile."""
        for attempt in range(1 + _REREADS):
            if attempt:
                time.sleep(_SETTLE_PAUSE)
            fd = _open_regular(path)
            spool = tempfile.SpooledTemporaryFile(max_size=_SPOOL_MEMORY, dir=str(self.workdir))
            try:
                before = os.fstat(fd)
                if not stat.S_ISREG(before.st_mode):
                    raise _Unreadable("is no longer a regular file")
                digest, n = hashlib.sha256(), 0
                for chunk in _read_chunks(fd):
                    if self.stop.is_set():
                        raise SourceError("files: dump aborted")
                    digest.update(chunk)
                    try:
                        spool.write(chunk)
                    except OSError as exc:  # the staging disk, not the file: no path is unreadable
                        raise SourceError(f"staging dir {shown(self.workdir)}: {_reason(exc)} while reading "
                                          f"{shown(path)}; free space there or set staging_dir to a larger disk") from None
                    n += len(chunk)
                after = os.fstat(fd)
            except BaseException:
                spool.close()
                raise
            finally:
                os.close(fd)
            if n == before.st_size == after.st_size and before.st_mtime_ns == after.st_mtime_ns:
                spool.seek(0)
                return spool, digest.hexdigest(), after
            spool.close()
        raise _Unreadable(f"kept changing while being read ({1 + _REREADS} reads)")

    def result(self) -> dict[str, Any]:
        if self.problems:
            path, reason = self.problems[0]
            raise SourceError(f"files: cannot back up {shown(path)}: {reason}; {len(self.problems)} unreadable "
                              "path(s) in total, the backup would lose data")
        files = [e for e in self.index if e["type"] == "file"]
        return {"files": len(files), "bytes": sum(e["size"] for e in files),
                "index": [{k: e[k] for k in ("name", "type", "size", "sha256", "linkname") if k in e}
                          for e in self.index]}


class _TarDump:
    """The DumpStream: a thread writes the tar into an OS pipe; ``read`` takes it from the other end."""

    def __init__(self, archiver: _Archiver) -> None:
        self._archiver = archiver
        self._pipe = PipeProducer(self._write, "files-tar")

    def _write(self, out: IO[bytes]) -> None:
        try:
            self._archiver.write(out)
        except BackupError:
            raise
        except Exception as exc:  # one line for the operator, whatever broke the tar writer
            raise SourceError(f"files: writing the tar stream failed ({type(exc).__name__}: {exc})") from None

    def read(self, n: int = -1) -> bytes:
        return self._pipe.read(n)

    def finish(self) -> dict[str, Any]:
        try:
            self._pipe.drain()  # a caller that stopped early must not leave the writer blocked
        finally:
            self._pipe.close()
        return self._archiver.result()

    def abort(self) -> None:
        self._archiver.stop.set()
        self._pipe.close(timeout=10)  # a blocked write now fails with EPIPE
