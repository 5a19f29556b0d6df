"""Restore side of the ``config_archive`` source: safe extraction, the restore plan, and the live diff.

Owns everything that writes to (or compares with) a restore target, so that files.py keeps
verification and files_capture.py the capture side:

- ``restore_tree`` extracts into a NEW directory next to the target (names checked: never absolute,
  no '..', never through a link; symlinks created last), checks every file against the archive's
  index, and only then moves it into place; a non-empty target is refused without ``force`` and
  then kept aside as ``<target>.before-restore-<timestamp>``, never destroyed.
- ``plan_restore`` describes those steps for ``--dry-run``, and with the manifest's file index
  tells what the restore would add, change or remove in an existing target.
- ``diff_summary`` computes that comparison (files by sha256, symlinks by target); it reads the
  live directory and changes nothing.

Archive reading, the index format and the message helpers live in files_common.py, the only
files_* module this one imports (files.py imports this one). Messages name paths, never contents:
a ``.env`` holds secrets.
"""

from __future__ import annotations

import contextlib
import grp
import hashlib
import os
import pwd
import shutil
import tarfile
import tempfile
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import IO, Any

from erp_backup_pipeline.core.safe_target import check_target, create_file, make_parents, require_kind
from erp_backup_pipeline.core.sources.files_common import (
    INDEX_NAME,
    _hash_member,
    _kind,
    _mismatch,
    _read_archive,
    _reason,
    _stamp,
    nothing_included,
    selector,
    shown,
)
from erp_backup_pipeline.core.streams import CHUNK
from erp_backup_pipeline.errors import RestoreError, VerifyError

_EXAMPLES = 5  # paths named per category in a dry-run plan


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

    def __init__(self, dest: Path, selected: Callable[[str], bool] | None = None) -> None:
        self.dest = os.path.realpath(dest)
        self.selected = selected  # --include: only these members are written; every member is still checked
        self.written = 0  # members written
        self.written_files = 0
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
        if self.selected is not None and not self.selected(member.name):
            self._path(member.name)  # unsafe names are refused whether or not they are asked for
            return {"type": _kind(member), "size": member.size if member.isreg() else 0,
                    **({"sha256": _hash_member(tar, member)} if member.isreg() else {}),
                    **({"linkname": member.linkname} if member.issym() else {})}
        self.written += 1
        self.written_files += member.isreg()
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
        with create_file(path) as out:
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


def plan_restore(target: str, force: bool, facts: dict[str, Any]) -> list[str]:
    """The steps ``restore_tree`` would take; with the manifest's index, what it would change in an existing target."""
    require_kind(target, "dir")
    t = Path(target).absolute()
    owners = "owners too (running as root)" if os.geteuid() == 0 else "not owners (not running as root)"
    steps = [f"extract the tar into {t}.partial-<timestamp>: names checked (never absolute, no '..', never "
             f"through a link), symlinks kept as links, modes and mtimes restored, {owners}",
             f"check every file's sha256 against the archive's {INDEX_NAME}"]
    if _occupied(t):
        steps.append(f"move the existing {t} aside to {t}.before-restore-<timestamp>" if force
                     else f"REFUSE: {t} is not empty (use --force to keep it aside and restore into a new directory)")
    steps.append(f"rename {t}.partial-<timestamp> to {t}")
    index = facts.get("index")
    if index is not None and t.is_dir():
        steps += _diff_lines(diff_summary(index, t), t)
    return steps


def _diff_lines(diff: dict[str, list[str]], t: Path) -> list[str]:
    """The plan lines for a diff: the counts, then up to _EXAMPLES names per category (names only)."""
    lines = [f"compared with the current {shown(t)}: would add {len(diff['added'])}, change {len(diff['changed'])}, "
             f"remove {len(diff['removed'])} path(s)"]
    for verb, key in (("add", "added"), ("change", "changed"), ("remove", "removed")):
        names = diff[key]
        if names:
            more = f" (and {len(names) - _EXAMPLES} more)" if len(names) > _EXAMPLES else ""
            lines.append(f"  would {verb}: " + ", ".join(shown(n) for n in names[:_EXAMPLES]) + more)
    return lines


def restore_tree(reader: IO[bytes] | Any, target: str, force: bool, include: list[str] | None = None) -> dict[str, Any]:
    """Extract into a fresh sibling directory (with ``include``: only the files and directories it names, every
    member still checked), check it against the index, then put it in place."""
    require_kind(target, "dir")
    t = check_target(target, force)
    if _occupied(t) and not force:
        raise RestoreError(f"restore target {shown(t)} is not empty; use --force to keep it aside and restore "
                           "into a new directory")
    stamp = _stamp()
    make_parents(t)
    partial = Path(tempfile.mkdtemp(prefix=f"{t.name}.partial-{stamp}-", dir=t.parent))  # 0700
    try:
        extractor = _Extractor(partial, selector(include))
        files = extractor.run(reader)
        if include and not extractor.written:
            raise nothing_included(include)
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
    return {"target": str(t), "kept_aside": str(kept) if kept else None,
            "files": extractor.written_files if include else files, **({"include": include} if include else {})}


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
