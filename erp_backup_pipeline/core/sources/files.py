"""Configuration files source (``config_archive``): class ``FilesSource``, a streamed PAX tar verified member by member.

Owns the source's face to the pipeline and its verification; the work lives in three modules:

- files_capture.py: ``open_dump`` walks the configured files, directories and glob patterns and a
  background thread streams the PAX tar (``_Archiver``, ``_TarDump``); ``prepare`` checks the
  configured entries with the same helpers.
- files_common.py: the archive's index format (``INDEX_NAME``), reading it back and comparing
  (``_read_archive``/``_mismatch``), the message helpers.
- files_restore.py: ``restore``/``restore_plan`` (safe extraction, the dry-run plan, ``diff_summary``).

Here: ``verify`` reads the tar stream, hashes every file and compares with the archive's index and
the manifest's file list. ``INDEX_NAME`` and ``DEFAULT_EXCLUDES`` are importable from this module.
Imports point one way: this module imports the other three, files_capture and files_restore
import files_common only. Messages name paths, never contents: a ``.env`` holds secrets.
"""

from __future__ import annotations

import os
import tarfile
from collections.abc import Callable, Sequence
from datetime import timedelta
from pathlib import Path
from typing import IO, Any

from pydantic import Field

from erp_backup_pipeline.core.retention import RetentionPolicy
from erp_backup_pipeline.core.sources.base import DirectorySettings
from erp_backup_pipeline.core.sources.files_capture import _MAGIC, _Archiver, _expand, _member_name, _TarDump
from erp_backup_pipeline.core.sources.files_common import (
    INDEX_NAME,
    _hash_member,
    _kind,
    _mismatch,
    _read_archive,
    include_step,
    listing,
    shown,
)
from erp_backup_pipeline.core.sources.files_restore import diff_summary, plan_restore, restore_tree
from erp_backup_pipeline.core.sources.kind import SourceKind
from erp_backup_pipeline.errors import SourceError, VerifyError


class ConfigFilesSettings(DirectorySettings):
    """The ERP's configuration files: paths, directories or glob patterns (globs match dot files)."""

    enabled: bool = True
    paths: list[Path] = Field(min_length=1)
    excludes: list[str] = Field(default_factory=lambda: ["node_modules", "dist", ".git"],
                                description="fnmatch patterns matched against every path component")
    root: Path | None = Field(None, description="archive member names are relative to it; default: common parent")

__all__ = ["DEFAULT_EXCLUDES", "INDEX_NAME", "FilesSource"]

DEFAULT_EXCLUDES = ("node_modules", "dist", ".git")
ENGINE = "tar (python tarfile, PAX)"


def _base(pattern: str) -> str:
    """The directory a configured entry's member names hang from (a glob: its literal prefix)."""
    if os.path.lexists(pattern) or not _MAGIC.search(pattern):
        return os.path.dirname(pattern)
    parts = pattern.split(os.sep)
    literal = next(i for i, part in enumerate(parts) if _MAGIC.search(part))
    return os.sep.join(parts[:literal]) or os.sep


def _observe(tar: tarfile.TarFile, member: tarfile.TarInfo) -> dict[str, Any]:
    seen: dict[str, Any] = {"type": _kind(member), "size": member.size if member.isreg() else 0}
    if member.isreg():
        seen["sha256"] = _hash_member(tar, member)
    elif member.issym():
        seen["linkname"] = member.linkname
    return seen


def _checked_archive(reader: IO[bytes] | Any) -> tuple[dict[str, dict[str, Any]], list[dict[str, Any]]]:
    """Every member observed and the archive's index, the two agreeing (VerifyError otherwise)."""
    observed, index = _read_archive(reader, _observe)
    problem = _mismatch(index, observed)
    if problem:
        raise VerifyError(f"files: {problem}")
    return observed, index


class FilesSource:
    kind = "files"
    extension = "tar"

    def __init__(self, paths: list[Path], excludes: Sequence[str] = DEFAULT_EXCLUDES, root: Path | None = None,
                 follow_symlinks: bool = False) -> None:
        self.paths = [Path(p) for p in paths]
        self.follow_symlinks = follow_symlinks
        self.excludes = list(excludes)
        self._patterns = [os.path.abspath(p) for p in self.paths]
        if root is not None:
            self._root = os.path.abspath(root)
        else:
            self._root = os.path.commonpath([_base(p) for p in self._patterns]) if self._patterns else os.sep
        self.root = Path(self._root)

    @property
    def where(self) -> str:
        return "configuration files " + ", ".join(str(p) for p in self.paths)

    def prepare(self, workdir: Path) -> dict[str, Any]:
        if not self._patterns:
            raise SourceError("files: no paths configured")
        followed: dict[str, str] = {}
        for pattern in self._patterns:
            matches = _expand(pattern)
            if not matches:
                raise SourceError(f"files: {shown(pattern)} " + ("matches nothing" if _MAGIC.search(pattern)
                                                                  else "does not exist"))
            outside = next((m for m in matches if _member_name(m, self._root) is None), None)
            if outside is not None:
                raise SourceError(f"files: {shown(outside)} is not under the root {shown(self._root)}")
            if os.path.islink(pattern):
                if not self.follow_symlinks:
                    raise SourceError(f"files: the configured path {shown(pattern)} is a symlink (to "
                                      f"{shown(os.readlink(pattern))}); a backup would hold the link, not the file: "
                                      "configure the real path, or set sources.config.follow_symlinks: true")
                followed[pattern] = os.path.realpath(pattern)
        facts: dict[str, Any] = {"engine": ENGINE, "paths": [str(p) for p in self.paths], "root": self._root}
        return {**facts, "followed_symlinks": followed} if followed else facts

    def open_dump(self, workdir: Path, facts: dict[str, Any]) -> _TarDump:
        return _TarDump(_Archiver(self._patterns, self._root, self.excludes, Path(workdir), follow=self.follow_symlinks))

    def verify(self, reader: IO[bytes] | Any, workdir: Path, facts: dict[str, Any]) -> dict[str, Any]:
        observed, index = _checked_archive(reader)
        recorded = facts.get("index")
        if recorded is not None:  # the manifest's list (absent while the backup itself is verified)
            ours = {e["name"]: (e.get("type"), e.get("sha256")) for e in index}
            theirs = {e["name"]: (e.get("type"), e.get("sha256")) for e in recorded}
            if ours != theirs:
                first = sorted(n for n in set(ours) | set(theirs) if ours.get(n) != theirs.get(n))[0]
                raise VerifyError(f"files: member {shown(first)} differs from the manifest's file list")
        return {"method": "tar list + sha256 per member", "members": len(observed),
                "bytes": sum(o["size"] for o in observed.values() if o["type"] == "file")}

    def list_files(self, reader: IO[bytes] | Any) -> list[dict[str, Any]]:
        """The archive's files (its index, each member checked against it while read)."""
        return listing(_checked_archive(reader)[1])

    def restore_plan(self, target: str, force: bool, facts: dict[str, Any],
                     include: list[str] | None = None) -> list[str]:
        return include_step(include) + plan_restore(target, force, facts)

    def restore(self, reader: IO[bytes] | Any, target: str, force: bool, workdir: Path,
                fetch: Any = None, facts: dict[str, Any] | None = None,
                attachments: dict[str, bytes] | None = None, include: list[str] | None = None) -> dict[str, Any]:
        return restore_tree(reader, target, force, include)

    def drill(self, restore: Callable[[str], dict[str, Any]], workdir: Path, facts: dict[str, Any],
              verify: dict[str, Any]) -> dict[str, Any]:
        """Restore into a scratch directory and compare every path with the manifest's file list (sha256)."""
        target = Path(workdir) / "tree"
        restore(str(target))
        index = facts.get("index")
        if index is None:
            raise VerifyError("files: the manifest holds no file list to compare with")
        diff = diff_summary(index, target)
        diff["removed"] = [n for n in diff["removed"] if n != INDEX_NAME]
        wrong = [f"{len(v)} {k} (first {shown(v[0])})" for k, v in diff.items() if v]
        if wrong:
            raise VerifyError("files: restored tree differs from the manifest: " + ", ".join(wrong))
        files = [e for e in index if e.get("type", "file") == "file"]
        return {"files": len(files), "bytes": sum(int(e.get("size", 0)) for e in files),
                "compared": "every path and sha256 against the manifest"}


def _holds(facts: Any) -> str:
    return f"the configured paths ({', '.join(facts.get('paths', []))}) hold"


KIND = SourceKind(
    name="config_archive", key="config", rank=2, settings=ConfigFilesSettings, extension=FilesSource.extension, cron="0 4 * * *",
    build=lambda cfg, state_dir: FilesSource(cfg.paths, cfg.excludes, cfg.root, follow_symlinks=cfg.follow_symlinks),
    # §3: the script's find -mtime +30 ("Alle Git-Tags" there is about the code repository)
    policy=RetentionPolicy(keep_daily=30, keep_within=timedelta(days=30)),
    engine="files", upstream="erp_config_files",
    upstream_description="The ERP's configuration: .env, config dirs, monitoring config.",
    description="Nightly PAX tar of the configured paths (modes, owners, symlinks, mtimes kept; excludes applied) "
                "with a sha256 index of every member, zstd-compressed, verified member by member, age-encrypted.",
    metric_label="config", what="the configuration files",
    restore_lines=("mkdir -m 700 DIR && age -d -i KEY ARTIFACT | zstd -d | tar -xpf - -C DIR",),
    emptiness="files", holds=_holds,
    recovery_target=lambda cfg, root, date, database: (str(root / "config"), f"configuration tree {root / 'config'}"))
