"""Configuration files source (``config_archive``): a streamed PAX tar, verified member by member.

Owns how the ERP's configuration (``.env``, config dirs, monitoring config) is captured, checked
and restored:

- ``open_dump`` walks the configured files, directories and glob patterns (a glob also matches
  dot files) and a background thread writes a PAX tar into an OS pipe: nothing is staged but
  one file at a time (in memory, beyond 8 MiB in a 0600 temp file in the staging dir). Modes,
  owners, mtimes, directories and symlinks (never followed) are kept; excludes match any path
  component; member names are relative to ``root``. Each file is read once per attempt and
  hashed as stored; a file that changes while read is read again, and a file that cannot be
  read fails the backup in ``finish()``: it is never skipped. The last member,
  ``.erp-backup-index.json``, lists every member with its metadata and sha256.
- ``verify`` reads the tar stream, hashes every file and compares with that index.
- ``restore`` extracts into a NEW directory, checks every file against the index, and only then
  moves it into place; a non-empty target is refused without ``force`` and then kept aside.
- ``diff_summary`` tells what a restore over a live directory would add, change or remove.

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
import shutil
import stat
import tarfile
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import IO, Any

from erp_backup_pipeline.core.streams import CHUNK, widen_pipe
from erp_backup_pipeline.errors import BackupError, RestoreError, SourceError, VerifyError

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


def _occupied(t: Path) -> bool:
    return t.is_symlink() or (t.exists() and (not t.is_dir() or any(t.iterdir())))


def _owner_ids(member: tarfile.TarInfo) -> tuple[int, int]:
    """Owner by name when this host knows it (as tar does), else by number."""
    uid, gid = member.uid, member.gid
    with contextlib.suppress(KeyError, ValueError):
        uid = pwd.getpwnam(member.uname).pw_uid if member.uname else uid
    with contextlib.suppress(KeyError, ValueError):
        gid = grp.getgrnam(member.gname).gr_gid if member.gname else gid
    return uid, gid


class _Extractor:
    """Writes members under a fresh directory, never through a link; symlinks and directory metadata last."""

    def __init__(self, dest: Path) -> None:
        self.dest = os.path.realpath(dest)
        self.as_root = os.geteuid() == 0
        self.dirs: list[tarfile.TarInfo] = []
        self.links: list[tarfile.TarInfo] = []

    def run(self, reader: IO[bytes] | Any) -> int:
        observed, index = _read_archive(reader, self._member)
        problem = _mismatch(index, observed)
        if problem:
            raise VerifyError(f"files: restored {problem}")
        for link in self.links:
            self._guarded(link, self._symlink)
        for d in sorted(self.dirs, key=lambda m: m.name.count("/"), reverse=True):
            self._guarded(d, self._dir_attrs)
        return sum(1 for o in observed.values() if o["type"] == "file")

    def _guarded(self, member: tarfile.TarInfo, step: Callable[[tarfile.TarInfo], Any]) -> Any:
        try:
            return step(member)
        except OSError as exc:
            raise RestoreError(f"files: cannot restore {shown(member.name)}: {_reason(exc)}") from None

    def _path(self, name: str) -> str:
        parts = PurePosixPath(name).parts
        if not name or name.startswith("/") or ".." in parts or "\0" in name:
            raise RestoreError(f"files: unsafe member name {shown(name)} (absolute or with '..'); refusing to restore")
        path = os.path.join(self.dest, *parts)
        parent = os.path.realpath(os.path.dirname(path))
        if parent != self.dest and not parent.startswith(self.dest + os.sep):
            raise RestoreError(f"files: member {shown(name)} would be written outside the target through a link")
        return path

    def _member(self, tar: tarfile.TarFile, member: tarfile.TarInfo) -> dict[str, Any]:
        if member.isreg():
            digest = self._guarded(member, lambda m: self._file(tar, m))
            return {"type": "file", "size": member.size, "sha256": digest}
        if member.isdir():
            self._guarded(member, lambda m: os.makedirs(self._path(m.name), mode=0o700, exist_ok=True))
            self.dirs.append(member)
            return {"type": "dir", "size": 0}
        if member.issym():
            self._path(member.name)
            self.links.append(member)  # created last: nothing is ever written through a restored link
            return {"type": "symlink", "size": 0, "linkname": member.linkname}
        raise RestoreError(f"files: member {shown(member.name)} is a {_kind(member)} (hard link or device); "
                           "refusing to restore it")

    def _file(self, tar: tarfile.TarFile, member: tarfile.TarInfo) -> str:
        path = self._path(member.name)
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "wb") as out:
            digest = _hash_member(tar, member, out)
            out.flush()
            if self.as_root:
                os.fchown(out.fileno(), *_owner_ids(member))
            os.fchmod(out.fileno(), member.mode)
        os.utime(path, (member.mtime, member.mtime))
        return digest

    def _symlink(self, member: tarfile.TarInfo) -> None:
        path = self._path(member.name)  # checked again: earlier links exist now
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        os.symlink(member.linkname, path)
        if self.as_root:
            os.chown(path, *_owner_ids(member), follow_symlinks=False)
        os.utime(path, (member.mtime, member.mtime), follow_symlinks=False)

    def _dir_attrs(self, member: tarfile.TarInfo) -> None:
        path = self._path(member.name)
        if os.path.islink(path):
            raise RestoreError(f"files: directory {shown(member.name)} was replaced by a link")
        if self.as_root:
            os.chown(path, *_owner_ids(member))
        os.chmod(path, member.mode)
        os.utime(path, (member.mtime, member.mtime))


def _live_entries(live_dir: Path) -> dict[str, str]:
    """Every non-directory below live_dir (symlinks not followed): member-style name -> path."""
    found: dict[str, str] = {}
    stack = [("", str(live_dir))] if live_dir.is_dir() else []
    while stack:
        prefix, path = stack.pop()
        with contextlib.suppress(OSError), os.scandir(path) as entries:
            for e in entries:
                if e.is_dir(follow_symlinks=False):
                    stack.append((f"{prefix}{e.name}/", e.path))
                else:
                    found[prefix + e.name] = e.path
    return found


def _same(entry: dict[str, Any], path: str) -> bool:
    try:
        if entry.get("type") == "symlink":
            return os.path.islink(path) and os.readlink(path) == entry.get("linkname")
        if os.path.islink(path) or not os.path.isfile(path) or os.path.getsize(path) != entry.get("size"):
            return False
        digest = hashlib.sha256()
        with open(path, "rb") as fh:
            while chunk := fh.read(CHUNK):
                digest.update(chunk)
        return digest.hexdigest() == entry.get("sha256")
    except OSError:
        return False


def diff_summary(index: list[dict[str, Any]], live_dir: Path) -> dict[str, list[str]]:
    """Which paths restoring ``index`` over ``live_dir`` would add, change or remove (files by sha256,
    symlinks by target; directories are implied). ``index``: a manifest's ``facts["index"]`` or the
    archive's own index. Reads live_dir, changes nothing."""
    wanted = {e["name"]: e for e in index if e.get("type", "file") != "dir"}
    live = _live_entries(Path(live_dir))
    return {"added": sorted(n for n in wanted if n not in live),
            "changed": sorted(n for n in wanted if n in live and not _same(wanted[n], live[n])),
            "removed": sorted(n for n in live if n not in wanted)}


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

    def restore_plan(self, target: str, force: bool) -> list[str]:
        t = Path(target).absolute()
        owners = "owners too (running as root)" if os.geteuid() == 0 else "not owners (not running as root)"
        steps = [f"extract the tar into {t}.partial-<timestamp>: names checked (never absolute, no '..', never "
                 f"through a link), symlinks kept as links, modes and mtimes restored, {owners}",
                 f"check every file's sha256 against the archive's {INDEX_NAME}"]
        if _occupied(t):
            steps.append(f"move the existing {t} aside to {t}.before-restore-<timestamp>" if force
                         else f"REFUSE: {t} is not empty (use --force to keep it aside and restore into a new directory)")
        steps.append(f"rename {t}.partial-<timestamp> to {t}")
        return steps

    def restore(self, reader: IO[bytes] | Any, target: str, force: bool, workdir: Path) -> dict[str, Any]:
        t = Path(target).absolute()
        if _occupied(t) and not force:
            raise RestoreError(f"restore target {shown(t)} is not empty; use --force to keep it aside and restore "
                               "into a new directory")
        stamp = _stamp()
        t.parent.mkdir(parents=True, exist_ok=True)
        partial = Path(tempfile.mkdtemp(prefix=f"{t.name}.partial-{stamp}-", dir=t.parent))  # 0700
        try:
            files = _Extractor(partial).run(reader)
            kept = _make_room(t, force, stamp)
            try:
                partial.rename(t)
            except OSError:
                if kept is not None:
                    kept.rename(t)
                raise
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise
        return {"target": str(t), "kept_aside": str(kept) if kept else None, "files": files}


def _make_room(t: Path, force: bool, stamp: str) -> Path | None:
    """Clear the way for the restored directory: an empty one goes, a non-empty one is kept aside."""
    if not (t.exists() or t.is_symlink()):
        return None
    if not _occupied(t):
        t.rmdir()
        return None
    if not force:
        raise RestoreError(f"restore target {shown(t)} is not empty; use --force to keep it aside and restore "
                           "into a new directory")
    kept = t.with_name(f"{t.name}.before-restore-{stamp}")
    n = 1
    while kept.exists() or kept.is_symlink():
        n += 1
        kept = t.with_name(f"{t.name}.before-restore-{stamp}-{n}")
    t.rename(kept)
    return kept
