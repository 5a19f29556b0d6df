"""Configuration files source (``config_archive``): a streamed PAX tar, verified member by member.

Owns how the ERP's configuration (``.env``, config dirs, monitoring config) is captured and
checked, and the archive format both sides share:

- ``open_dump`` walks the configured files, directories and glob patterns (a glob also matches
  dot files) and a background thread writes a PAX tar into an OS pipe: nothing is staged but
  one file at a time (in memory, beyond 8 MiB in a 0600 temp file in the staging dir). Modes,
  owners, mtimes, directories and symlinks (never followed) are kept; excludes match any path
  component; member names are relative to ``root``. Each file is read once per attempt and
  hashed as stored; a file that changes while read is read again, and a file that cannot be
  read fails the backup in ``finish()``: it is never skipped. The last member,
  ``.erp-backup-index.json``, lists every member with its metadata and sha256.
- ``verify`` reads the tar stream, hashes every file and compares with that index
  (``_read_archive``/``_mismatch``, shared with the restore side).
- ``restore``/``restore_plan`` delegate to files_restore.py (safe extraction, the dry-run plan,
  ``diff_summary``), imported lazily because it imports the helpers here; ``diff_summary`` is
  re-exported from this module.

Messages name paths, never contents: a ``.env`` holds secrets.
"""

from __future__ import annotations

import contextlib
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
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from erp_backup_pipeline.core.streams import CHUNK, widen_pipe
from erp_backup_pipeline.errors import BackupError, SourceError, VerifyError

INDEX_NAME = ".erp-backup-index.json"
DEFAULT_EXCLUDES = ("node_modules", "dist", ".git")
ENGINE = "tar (python tarfile, PAX)"
_REREADS = 3  # a file that changes while read is read again at most this often
_SETTLE_PAUSE = 0.05  # seconds before reading a changing file again
_SPOOL_MEMORY = 8 * CHUNK  # one file is held in memory up to this size, beyond it in a temp file in workdir
_MAGIC = re.compile(r"[*?[]")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def shown(path: str | os.PathLike[str]) -> str:
    """A path fit for a one-line message: undecodable bytes as \\xNN, control characters escaped."""
    text = os.fsencode(path).decode("utf-8", "backslashreplace")
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def _stamp() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")


def _expand(pattern: str) -> list[str]:
    """The paths a configured entry stands for: itself when it exists, else its glob matches."""
    if os.path.lexists(pattern):
        return [pattern]
    if _MAGIC.search(pattern):
        return sorted(glob.glob(pattern, recursive=True, include_hidden=True))
    return []


def _base(pattern: str) -> str:
    """The directory a configured entry's member names hang from (a glob: its literal prefix)."""
    if os.path.lexists(pattern) or not _MAGIC.search(pattern):
        return os.path.dirname(pattern)
    parts = pattern.split(os.sep)
    literal = next(i for i, part in enumerate(parts) if _MAGIC.search(part))
    return os.sep.join(parts[:literal]) or os.sep


def _member_name(path: str, root: str) -> str | None:
    """``path`` relative to ``root`` with '/' separators ('' for root itself); None when outside root."""
    if os.path.commonpath([root, path]) != root:
        return None
    rel = os.path.relpath(path, root)
    return "" if rel == "." else rel.replace(os.sep, "/")


def _reason(exc: OSError) -> str:
    if isinstance(exc, FileNotFoundError):
        return "vanished before it could be read"
    if isinstance(exc, PermissionError):
        return "permission denied"
    return (exc.strerror or type(exc).__name__).lower()


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


def _kind(member: tarfile.TarInfo) -> str:
    return "file" if member.isreg() else "dir" if member.isdir() else "symlink" if member.issym() else "special file"


def _open_regular(path: str) -> int:
    """Open for reading without following a symlink or blocking on a FIFO swapped in after listing."""
    return os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)


def _read_chunks(fd: int) -> Iterator[bytes]:
    while chunk := os.read(fd, CHUNK):
        yield chunk


class _Unreadable(Exception):
    pass


class _Archiver:
    """Walks the configured paths, writes the tar, and collects the index and the unreadable paths."""

    def __init__(self, patterns: list[str], root: str, excludes: Sequence[str], workdir: Path) -> None:
        self.patterns, self.root, self.excludes, self.workdir = patterns, root, list(excludes), workdir
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
                stack = [(top, top_name)]
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
                if name == INDEX_NAME:
                    self.problems.append((path, f"uses the reserved name {INDEX_NAME}"))
                    continue
                self._add(tar, path, name)
            data = json.dumps(self.index, sort_keys=True).encode()
            info = tarfile.TarInfo(INDEX_NAME)
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
            spool = tempfile.SpooledTemporaryFile(max_size=_SPOOL_MEMORY, dir=self.workdir)
            try:
                before = os.fstat(fd)
                if not stat.S_ISREG(before.st_mode):
                    raise _Unreadable("is no longer a regular file")
                digest, n = hashlib.sha256(), 0
                for chunk in _read_chunks(fd):
                    if self.stop.is_set():
                        raise SourceError("files: dump aborted")
                    digest.update(chunk)
                    spool.write(chunk)
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
        r, w = os.pipe()
        widen_pipe(w)
        self._r: IO[bytes] | None = os.fdopen(r, "rb")
        self._w = os.fdopen(w, "wb", buffering=CHUNK)
        self._archiver = archiver
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._produce, name="files-tar", daemon=True)
        self._thread.start()

    def _produce(self) -> None:
        try:
            self._archiver.write(self._w)
        except BaseException as exc:  # noqa: BLE001 - raised by finish()
            self._error = exc
        finally:
            with contextlib.suppress(OSError):
                self._w.close()

    def read(self, n: int = -1) -> bytes:
        assert self._r is not None
        return self._r.read(n if n and n > 0 else CHUNK)

    def _close_reader(self) -> None:
        if self._r is not None:
            self._r.close()
            self._r = None

    def finish(self) -> dict[str, Any]:
        if self._r is not None:
            while self._r.read(CHUNK):  # a caller that stopped early must not leave the writer blocked
                pass
        self._thread.join()
        self._close_reader()
        if isinstance(self._error, BackupError):
            raise self._error
        if self._error is not None:
            raise SourceError(f"files: writing the tar stream failed ({type(self._error).__name__}: {self._error})")
        return self._archiver.result()

    def abort(self) -> None:
        self._archiver.stop.set()
        self._close_reader()  # a blocked write now fails with EPIPE
        self._thread.join(timeout=10)


def _load_index(tar: tarfile.TarFile, member: tarfile.TarInfo) -> list[dict[str, Any]]:
    raw = tar.extractfile(member)
    try:
        index = json.loads(raw.read() if raw else b"")
        if isinstance(index, list) and all(isinstance(e, dict) and isinstance(e.get("name"), str) for e in index):
            return index
    except ValueError:
        pass
    raise VerifyError(f"files: {INDEX_NAME} is not a valid member index")


def _hash_member(tar: tarfile.TarFile, member: tarfile.TarInfo, sink: IO[bytes] | None = None) -> str:
    digest = hashlib.sha256()
    src = tar.extractfile(member)
    while src is not None and (chunk := src.read(CHUNK)):
        digest.update(chunk)
        if sink is not None:
            sink.write(chunk)
    return digest.hexdigest()


def _observe(tar: tarfile.TarFile, member: tarfile.TarInfo) -> dict[str, Any]:
    seen: dict[str, Any] = {"type": _kind(member), "size": member.size if member.isreg() else 0}
    if member.isreg():
        seen["sha256"] = _hash_member(tar, member)
    elif member.issym():
        seen["linkname"] = member.linkname
    return seen


Handler = Callable[[tarfile.TarFile, tarfile.TarInfo], dict[str, Any]]


def _read_archive(reader: IO[bytes] | Any, handle: Handler) -> tuple[dict[str, dict[str, Any]], list[dict[str, Any]]]:
    """Every member through ``handle`` (in order), then the index; the whole stream is consumed."""
    observed: dict[str, dict[str, Any]] = {}
    index: list[dict[str, Any]] | None = None
    try:
        with tarfile.open(fileobj=reader, mode="r|", errors="surrogateescape") as tar:
            for member in tar:
                if index is not None:
                    raise VerifyError(f"files: member {shown(member.name)} follows the index")
                if member.name == INDEX_NAME:
                    index = _load_index(tar, member)
                elif member.name in observed:
                    raise VerifyError(f"files: member {shown(member.name)} appears twice")
                else:
                    observed[member.name] = handle(tar, member)
    except (tarfile.TarError, EOFError) as exc:
        raise VerifyError(f"files: the artifact is not a sound tar archive ({exc})") from None
    while reader.read(CHUNK):
        pass
    if index is None:
        raise VerifyError(f"files: the archive has no {INDEX_NAME} (truncated, or not a files backup)")
    return observed, index


def _mismatch(index: list[dict[str, Any]], observed: dict[str, dict[str, Any]]) -> str | None:
    """The first member where archive and index disagree, as a message; None when they agree."""
    expected = {e["name"]: e for e in index}
    for name, got in observed.items():
        want = expected.get(name)
        if want is None:
            return f"member {shown(name)} is not in the index"
        if got["type"] != want.get("type"):
            return f"member {shown(name)} is a {got['type']}, the index says {want.get('type')}"
        if got["type"] == "file" and (got["sha256"], got["size"]) != (want.get("sha256"), want.get("size")):
            return f"member {shown(name)}: content differs from the index (sha256)"
        if got["type"] == "symlink" and got["linkname"] != want.get("linkname"):
            return f"member {shown(name)}: link target differs from the index"
    missing = next((n for n in expected if n not in observed), None)
    return f"member {shown(missing)} is in the index but not in the archive" if missing is not None else None


class FilesSource:
    kind = "files"
    extension = "tar"

    def __init__(self, paths: list[Path], excludes: Sequence[str] = DEFAULT_EXCLUDES, root: Path | None = None) -> None:
        self.paths = [Path(p) for p in paths]
        self.excludes = list(excludes)
        self._patterns = [os.path.abspath(p) for p in self.paths]
        if root is not None:
            self._root = os.path.abspath(root)
        else:
            self._root = os.path.commonpath([_base(p) for p in self._patterns]) if self._patterns else os.sep
        self.root = Path(self._root)

    def prepare(self, workdir: Path) -> dict[str, Any]:
        if not self._patterns:
            raise SourceError("files: no paths configured")
        for pattern in self._patterns:
            matches = _expand(pattern)
            if not matches:
                raise SourceError(f"files: {shown(pattern)} " + ("matches nothing" if _MAGIC.search(pattern)
                                                                  else "does not exist"))
            outside = next((m for m in matches if _member_name(m, self._root) is None), None)
            if outside is not None:
                raise SourceError(f"files: {shown(outside)} is not under the root {shown(self._root)}")
        return {"engine": ENGINE, "paths": [str(p) for p in self.paths], "root": self._root}

    def open_dump(self, workdir: Path, facts: dict[str, Any]) -> _TarDump:
        return _TarDump(_Archiver(self._patterns, self._root, self.excludes, Path(workdir)))

    def verify(self, reader: IO[bytes] | Any, workdir: Path, facts: dict[str, Any]) -> dict[str, Any]:
        observed, index = _read_archive(reader, _observe)
        problem = _mismatch(index, observed)
        if problem:
            raise VerifyError(f"files: {problem}")
        recorded = facts.get("index")
        if recorded is not None:  # the manifest's list (absent while the backup itself is verified)
            ours = {e["name"]: (e.get("type"), e.get("sha256")) for e in index}
            theirs = {e["name"]: (e.get("type"), e.get("sha256")) for e in recorded}
            if ours != theirs:
                first = sorted(n for n in set(ours) | set(theirs) if ours.get(n) != theirs.get(n))[0]
                raise VerifyError(f"files: member {shown(first)} differs from the manifest's file list")
        return {"method": "tar list + sha256 per member", "members": len(observed),
                "bytes": sum(o["size"] for o in observed.values() if o["type"] == "file")}

    def restore_plan(self, target: str, force: bool, facts: dict[str, Any]) -> list[str]:
        from erp_backup_pipeline.core.sources.files_restore import plan_restore  # lazy: it imports this module
        return plan_restore(target, force, facts)

    def restore(self, reader: IO[bytes] | Any, target: str, force: bool, workdir: Path) -> dict[str, Any]:
        from erp_backup_pipeline.core.sources.files_restore import restore_tree  # lazy: it imports this module
        return restore_tree(reader, target, force)
