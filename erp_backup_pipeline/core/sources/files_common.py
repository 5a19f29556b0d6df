"""Shared ground of the ``config_archive`` source: the archive's index format, reading it back, and messages.

Owns what both the verification side (files.py) and the restore side (files_restore.py) need:

- ``INDEX_NAME``: the last member of every archive, a JSON list of every member with its metadata
  and sha256 (written by files_capture.py).
- ``_read_archive`` reads a tar stream member by member through a handler, loads the index and
  consumes the whole stream; ``_mismatch`` names the first member where archive and index disagree;
  ``_hash_member``/``_kind`` are the per-member helpers both sides use.
- ``shown`` (a path fit for a one-line message), ``_reason`` (an OSError in words) and ``_stamp``
  (the UTC timestamp in kept-aside names).

It imports no other files_* module. Messages name paths, never contents: a ``.env`` holds secrets.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import re
import tarfile
from collections.abc import Callable
from datetime import UTC, datetime
from typing import IO, Any

from erp_backup_pipeline.core.streams import CHUNK
from erp_backup_pipeline.errors import ArtifactNotFound, VerifyError

INDEX_NAME = ".erp-backup-index.json"
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def shown(path: str | os.PathLike[str]) -> str:
    """A path fit for a one-line message: undecodable bytes as \\xNN, control characters escaped."""
    text = os.fsencode(path).decode("utf-8", "backslashreplace")
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def _stamp() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")


def _reason(exc: OSError) -> str:
    if isinstance(exc, FileNotFoundError):
        return "vanished before it could be read"
    if isinstance(exc, PermissionError):
        return "permission denied"
    return (exc.strerror or type(exc).__name__).lower()


def _kind(member: tarfile.TarInfo) -> str:
    return "file" if member.isreg() else "dir" if member.isdir() else "symlink" if member.issym() else "special file"


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


def listing(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A capture's file list as ``erp-backup ls`` shows it (from a config archive's index or an uploads snapshot),
    sorted by path: path, type, size (files), sha256 (files), mtime (UTC), linkname (symlinks)."""
    out = []
    for e in entries:
        mtime = e["mtime_ns"] / 1e9 if isinstance(e.get("mtime_ns"), int) else e.get("mtime")
        row: dict[str, Any] = {"path": e["name"], "type": e.get("type", "file")}
        if row["type"] == "file":
            row["size"] = e.get("size")
            row["sha256"] = e.get("sha256")
        if isinstance(mtime, int | float):
            row["mtime"] = datetime.fromtimestamp(mtime, UTC).isoformat(timespec="seconds")
        if e.get("linkname"):
            row["linkname"] = e["linkname"]
        out.append(row)
    return sorted(out, key=lambda r: r["path"])


def selector(patterns: list[str] | None) -> Callable[[str], bool] | None:
    """Which paths of a capture ``--include`` (or ``ls PATH``) names: a path itself, everything under a directory,
    or a glob over whole paths (``*.pdf``, ``invoices/2026-*``); None (everything) without patterns."""
    wanted = [p.strip("/") for p in patterns or [] if p.strip("/")]
    if not wanted:
        return None

    def selected(name: str) -> bool:
        return any(fnmatch.fnmatchcase(name, w) if any(c in w for c in "*?[") else
                   name == w or name.startswith(w + "/") for w in wanted)

    return selected


def nothing_included(include: list[str]) -> ArtifactNotFound:
    """The refusal of an ``--include`` that names nothing in the capture (before anything is put in place)."""
    return ArtifactNotFound(f"--include {' '.join(include)}: matches nothing in the capture (`erp-backup ls` lists "
                            "it); nothing restored")


def include_step(include: list[str] | None) -> list[str]:
    """The plan's line for ``--include`` (none without it)."""
    return [f"only {', '.join(include)} (and the directories above); every other member is read and checked, not "
            "written"] if include else []
