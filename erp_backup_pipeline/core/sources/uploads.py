"""Uploaded documents (``uploads_snapshot``): an incremental snapshot, content stored once.

Every daily artifact is a PAX tar holding only the file contents that no earlier backup holds
(members ``blobs/<sha256>``), followed by the complete snapshot of the tree as the last member
``.erp-backup-snapshot.json``: every directory, symlink and file with its metadata, sha256 and the
artifact that holds its content (``null`` = this one). So every day restores as a full copy, as
``rsync --link-dest`` gives, while unchanged files cost nothing and small files are packed into
one object per day instead of one request each.

The backup host holds only public keys, so it cannot read earlier artifacts to learn what they
hold. It keeps a local state file instead (``state_dir``, 0600): path -> size, mtime, inode,
sha256, and sha256 -> artifact key. A file whose size, mtime and inode did not change is not
read again; a changed file is read (and re-read while it keeps changing, never stored torn) and
its content shipped only when its sha256 is new. The state is advanced only after the backup's
manifest is written (``on_committed``); without it the next backup simply ships everything.

Restore reads the date's artifact, then the earlier artifacts it depends on (``fetch``), and
builds the tree beside the target before moving it into place. Paths never reach the manifest
(document names can be personal data): only counts and the artifacts depended on.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import tarfile
import tempfile
from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import timedelta
from pathlib import Path
from typing import IO, Any

from pydantic import Field

from erp_backup_pipeline.core import statefile
from erp_backup_pipeline.core.retention import RetentionPolicy
from erp_backup_pipeline.core.safe_target import check_target, create_file, make_parents, require_kind
from erp_backup_pipeline.core.sources.base import DirectorySettings
from erp_backup_pipeline.core.sources.files_capture import _Archiver, _TarDump, _Unreadable
from erp_backup_pipeline.core.sources.files_common import (
    _reason,
    _stamp,
    include_step,
    listing,
    nothing_included,
    selector,
    shown,
)
from erp_backup_pipeline.core.sources.files_restore import _make_room, _occupied
from erp_backup_pipeline.core.sources.kind import SourceKind
from erp_backup_pipeline.core.streams import CHUNK
from erp_backup_pipeline.errors import RestoreError, SourceError, VerifyError


class UploadsSettings(DirectorySettings):
    """The ERP's uploaded documents, backed up incrementally (content stored once)."""

    enabled: bool = True
    path: Path
    excludes: list[str] = Field(default_factory=list, description="fnmatch patterns matched against every path component")

SNAPSHOT_NAME = ".erp-backup-snapshot.json"
BLOB_DIR = "blobs/"
ENGINE = "incremental tar (content-addressed, python tarfile, PAX)"
Fetch = Callable[[str], AbstractContextManager[Any]]


def load_state(path: Path) -> dict[str, Any]:
    """The local state; empty (a full backup follows) when missing or unreadable."""
    try:
        state = json.loads(path.read_text())
        if isinstance(state.get("files"), dict) and isinstance(state.get("blobs"), dict):
            return state
    except (OSError, ValueError):
        pass
    return {"files": {}, "blobs": {}}


def save_state(path: Path, state: dict[str, Any]) -> None:
    """Replace the state file atomically; on failure (a full disk) the old one stays and no temp file is left."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    statefile.replace(path, json.dumps(state).encode())


class _IncrementalArchiver(_Archiver):
    """The config archiver's walk and careful reading, storing only content no artifact holds yet."""

    index_name = SNAPSHOT_NAME

    def __init__(self, root: str, excludes: list[str], workdir: Path, state: dict[str, Any]) -> None:
        super().__init__([root], root, excludes, workdir)
        self.state = state
        self.stored: set[str] = set()
        self.new_bytes = 0
        self.reused = 0

    def _add(self, tar: tarfile.TarFile, path: str, name: str) -> None:
        try:
            st = os.lstat(path)
            entry: dict[str, Any] = {"name": name, "mode": stat.S_IMODE(st.st_mode), "uid": st.st_uid,
                                     "gid": st.st_gid, "mtime_ns": st.st_mtime_ns}
            if stat.S_ISDIR(st.st_mode):
                entry["type"] = "dir"
            elif stat.S_ISLNK(st.st_mode):
                entry.update(type="symlink", linkname=os.readlink(path))
            elif stat.S_ISREG(st.st_mode):
                entry.update(type="file", **self._content(tar, path, name, st))
            else:
                self.problems.append((path, "is not a regular file, directory or symlink (exclude it)"))
                return
            self.index.append(entry)
        except OSError as exc:
            if isinstance(exc, BrokenPipeError):
                raise
            self.problems.append((path, _reason(exc)))
        except _Unreadable as exc:
            self.problems.append((path, str(exc)))

    def _content(self, tar: tarfile.TarFile, path: str, name: str, st: os.stat_result) -> dict[str, Any]:
        known = self.state["files"].get(name)
        if known and known[:3] == [st.st_size, st.st_mtime_ns, st.st_ino] and known[3] in self.state["blobs"]:
            self.reused += 1
            return {"size": st.st_size, "ino": st.st_ino, "sha256": known[3], "holder": self.state["blobs"][known[3]]}
        spool, digest, settled = self._read_settled(path)
        with spool:
            holder = self.state["blobs"].get(digest)
            if holder is None and digest not in self.stored:
                info = tarfile.TarInfo(BLOB_DIR + digest)
                info.size, info.mode, info.mtime = settled.st_size, 0o600, int(settled.st_mtime)
                tar.addfile(info, spool)
                self.stored.add(digest)
                self.new_bytes += settled.st_size
            else:
                self.reused += holder is not None
        return {"size": settled.st_size, "ino": settled.st_ino, "sha256": digest, "holder": holder,
                "mtime_ns": settled.st_mtime_ns}

    def result(self) -> dict[str, Any]:
        if self.problems:
            path, reason = self.problems[0]
            raise SourceError(f"uploads: cannot back up {shown(path)}: {reason}; {len(self.problems)} unreadable "
                              "path(s) in total, the backup would lose data")
        files = [e for e in self.index if e["type"] == "file"]
        next_state = Path(self.workdir) / "next-state.json"
        try:
            with os.fdopen(os.open(next_state, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as fh:
                fh.write(json.dumps(self.index))
        except OSError as exc:
            raise SourceError(f"staging dir {shown(self.workdir)}: {_reason(exc)} while writing the uploads state; free "
                              "space there or set staging_dir to a larger disk") from None
        return {"files": len(files), "bytes": sum(e["size"] for e in files), "new_blobs": len(self.stored),
                "new_bytes": self.new_bytes, "unchanged_files": self.reused,
                "depends_on": sorted({e["holder"] for e in files if e["holder"]})}


class UploadsSource:
    kind = "uploads"
    extension = "tar"

    def __init__(self, path: Path, state_file: Path, excludes: list[str] | None = None,
                 follow_symlinks: bool = False) -> None:
        self.path = Path(path).absolute()
        self.state_file = Path(state_file)
        self.excludes = list(excludes or [])
        self.follow_symlinks = follow_symlinks

    @property
    def where(self) -> str:
        return f"uploads directory {self.path}"

    def _root(self) -> tuple[str, str | None]:
        """The directory to walk, and the link it was reached through (None: the configured path itself)."""
        link = None
        if self.path.is_symlink():
            if not self.follow_symlinks:
                raise SourceError(f"uploads: {shown(self.path)} is a symlink (to {shown(os.readlink(self.path))}); a backup "
                                  "would hold the link, not the documents: configure the real path, or set "
                                  "sources.uploads.follow_symlinks: true")
            link = os.path.realpath(self.path)
        root = link or str(self.path)
        if not os.path.isdir(root):
            raise SourceError(f"uploads: directory {shown(self.path)} " + ("is not a directory" if os.path.lexists(root)
                                                                          else "does not exist"))
        return root, link

    def prepare(self, workdir: Path) -> dict[str, Any]:
        _, link = self._root()
        facts = {"engine": ENGINE, "path": str(self.path), "state_known_files": len(load_state(self.state_file)["files"])}
        return {**facts, "followed_symlink": link} if link else facts

    def open_dump(self, workdir: Path, facts: dict[str, Any]) -> _TarDump:
        root, _ = self._root()
        return _TarDump(_IncrementalArchiver(root, self.excludes, Path(workdir), load_state(self.state_file)))

    def on_committed(self, workdir: Path, manifest: Any) -> None:
        """The backup is committed: advance the local state to what this artifact and its holders hold."""
        index = json.loads((Path(workdir) / "next-state.json").read_text())
        files: dict[str, list[Any]] = {}
        blobs: dict[str, str] = {}
        for e in index:
            if e["type"] == "file":
                files[e["name"]] = [e["size"], e["mtime_ns"], e["ino"], e["sha256"]]
                blobs.setdefault(e["sha256"], e["holder"] or manifest.artifact_key)
        # only content the newest snapshot still references: those artifacts are kept while it is,
        # so a later backup never points at an artifact that retention may have removed
        save_state(self.state_file, {"files": files, "blobs": blobs})

    def drill(self, restore: Callable[[str], dict[str, Any]], workdir: Path, facts: dict[str, Any],
              verify: dict[str, Any]) -> dict[str, Any]:
        """Build the day's full tree (every file's content checked by sha256 on the way) in a scratch
        directory, then count its files and bytes against the manifest."""
        target = Path(workdir) / "tree"
        restore(str(target))
        files = total = 0
        for dirpath, _, names in os.walk(target):
            for name in names:
                st = os.lstat(os.path.join(dirpath, name))
                if stat.S_ISREG(st.st_mode):
                    files += 1
                    total += st.st_size
        if (files, total) != (facts.get("files"), facts.get("bytes")):
            raise VerifyError(f"uploads: restored tree holds {files} files / {total} bytes, the manifest "
                              f"{facts.get('files')} / {facts.get('bytes')}")
        return {"files": files, "bytes": total, "depends_on": len(facts.get("depends_on", [])),
                "compared": "every file's sha256 while built; file count and bytes against the manifest"}

    def verify(self, reader: IO[bytes] | Any, workdir: Path, facts: dict[str, Any]) -> dict[str, Any]:
        blobs, snapshot = _read(reader, None)
        missing = [e["name"] for e in snapshot if e["type"] == "file" and not e["holder"] and e["sha256"] not in blobs]
        if missing:
            raise VerifyError(f"uploads: content of {shown(missing[0])} is in neither this artifact nor an earlier one "
                              f"({len(missing)} file(s))")
        return {"method": "tar list + sha256 per blob", "files": sum(e["type"] == "file" for e in snapshot),
                "blobs": len(blobs), "bytes": sum(blobs.values())}

    def list_files(self, reader: IO[bytes] | Any) -> list[dict[str, Any]]:
        """The snapshot's files: the whole tree of its date, also what earlier artifacts hold (every blob of this
        artifact checked against its sha256 while read)."""
        return listing(_read(reader, None)[1])

    def restore_plan(self, target: str, force: bool, facts: dict[str, Any],
                     include: list[str] | None = None) -> list[str]:
        require_kind(target, "dir")
        t = Path(target).absolute()
        steps = include_step(include)
        steps += [f"read this artifact and the {len(facts.get('depends_on', []))} earlier one(s) holding unchanged "
                  f"content; build {facts.get('files', '?')} file(s) in {t}.partial-<timestamp>, every file checked "
                  "by sha256"]
        if _occupied(t):
            steps.append(f"move the existing {t} aside to {t}.before-restore-<timestamp>" if force
                         else f"REFUSE: {t} is not empty (use --force to keep it aside)")
        return steps + [f"rename {t}.partial-<timestamp> to {t}"]

    def restore(self, reader: IO[bytes] | Any, target: str, force: bool, workdir: Path,
                fetch: Fetch | None = None, facts: dict[str, Any] | None = None,
                attachments: dict[str, bytes] | None = None, include: list[str] | None = None) -> dict[str, Any]:
        require_kind(target, "dir")
        t = check_target(target, force)
        if _occupied(t) and not force:
            raise RestoreError(f"restore target {shown(t)} is not empty; use --force to keep it aside")
        stamp = _stamp()
        make_parents(t)
        partial = Path(tempfile.mkdtemp(prefix=f"{t.name}.partial-{stamp}-", dir=t.parent))
        try:
            store = partial / ".erp-blobs"
            store.mkdir(mode=0o700)
            _, snapshot = _read(reader, store)
            snapshot = _included(snapshot, include)  # --include: the named files, and the directories above them
            for holder in sorted({e["holder"] for e in snapshot if e["type"] == "file" and e["holder"]}):
                if fetch is None:
                    raise RestoreError(f"uploads: the snapshot needs {holder}, and no way to fetch it was given")
                wanted = {e["sha256"] for e in snapshot if e["type"] == "file" and e["holder"] == holder}
                with fetch(holder) as older:
                    _read(older, store, wanted)
            files = _build(partial, store, snapshot)
            shutil.rmtree(store)
            kept = _make_room(t, force, stamp)
            partial.rename(t)
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise
        return {"target": str(t), "kept_aside": str(kept) if kept else None, "files": files,
                **({"include": include} if include else {})}


def _included(snapshot: list[dict[str, Any]], include: list[str] | None) -> list[dict[str, Any]]:
    selected = selector(include)
    if selected is None:
        return snapshot
    chosen = [e for e in snapshot if selected(e["name"])]
    if not chosen:
        raise nothing_included(include or [])
    above = {"/".join(e["name"].split("/")[:i]) for e in chosen for i in range(1, e["name"].count("/") + 1)}
    names = {e["name"] for e in chosen}
    return [e for e in snapshot if e["name"] in names or (e["type"] == "dir" and e["name"] in above)]


def _read(reader: IO[bytes] | Any, store: Path | None,
          wanted: set[str] | None = None) -> tuple[dict[str, int], list[dict[str, Any]]]:
    """Stream an artifact: check every blob's sha256 (keeping the wanted ones in store); return the snapshot."""
    blobs: dict[str, int] = {}
    snapshot: list[dict[str, Any]] | None = None
    try:
        with tarfile.open(fileobj=reader, mode="r|", errors="surrogateescape") as tar:
            for member in tar:
                data = tar.extractfile(member) if member.isreg() else None
                if member.name == SNAPSHOT_NAME and data is not None:
                    snapshot = json.loads(data.read())
                    continue
                if not (member.name.startswith(BLOB_DIR) and data is not None):
                    raise VerifyError(f"uploads: unexpected member {shown(member.name)} in the artifact")
                digest = member.name[len(BLOB_DIR):]
                keep = store is not None and (wanted is None or digest in wanted) and not (store / digest).exists()
                sink = create_file(store / digest) if keep and store is not None else None
                try:
                    h = hashlib.sha256()
                    while chunk := data.read(CHUNK):
                        h.update(chunk)
                        if sink is not None:
                            sink.write(chunk)
                finally:
                    if sink is not None:
                        sink.close()
                if h.hexdigest() != digest:
                    raise VerifyError(f"uploads: blob {digest[:12]}... does not match its sha256")
                blobs[digest] = member.size
    except (tarfile.TarError, EOFError, ValueError) as exc:
        raise VerifyError(f"uploads: the artifact is not a sound tar ({exc})") from None
    if snapshot is None:
        raise VerifyError(f"uploads: the artifact has no {SNAPSHOT_NAME}")
    return blobs, snapshot


def _safe(root: Path, name: str) -> Path:
    parts = name.split("/")
    if name.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise RestoreError(f"uploads: refusing the unsafe path {shown(name)}")
    path = root.joinpath(*parts)
    real_root, parent = os.path.realpath(root), os.path.realpath(path.parent)
    if parent != real_root and not parent.startswith(real_root + os.sep):  # a restored symlink on the way
        raise RestoreError(f"uploads: {shown(name)} would be written outside the target through a link")
    return path


def _build(root: Path, store: Path, snapshot: list[dict[str, Any]]) -> int:
    """Create the tree from the snapshot; file contents come from the blob store, checked once more."""
    uses: dict[str, int] = {}
    for e in snapshot:
        if e["type"] == "file":
            uses[e["sha256"]] = uses.get(e["sha256"], 0) + 1
    for e in sorted((e for e in snapshot if e["type"] == "dir"), key=lambda e: e["name"]):
        _safe(root, e["name"]).mkdir(parents=True, exist_ok=True)
    files = 0
    for e in snapshot:
        path = _safe(root, e["name"])
        if e["type"] == "file":
            path.parent.mkdir(parents=True, exist_ok=True)
            blob = store / e["sha256"]
            if not blob.exists():
                raise RestoreError(f"uploads: content of {shown(e['name'])} was not found in any artifact")
            uses[e["sha256"]] -= 1
            if uses[e["sha256"]]:
                with open(blob, "rb") as src, create_file(path) as dst:
                    shutil.copyfileobj(src, dst, CHUNK)
            else:
                os.rename(blob, path)
            files += 1
    for e in snapshot:  # links last: nothing is ever written through a restored link
        if e["type"] == "symlink":
            path = _safe(root, e["name"])
            path.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.symlink(e["linkname"], path)
            except OSError as exc:
                raise RestoreError(f"uploads: cannot restore the link {shown(e['name'])}: {_reason(exc)}") from None
    for e in sorted(snapshot, key=lambda e: e["name"].count("/"), reverse=True):  # deepest first: dir mtimes hold
        path = _safe(root, e["name"])
        if e["type"] == "symlink":
            continue
        try:
            if os.geteuid() == 0:
                os.lchown(path, e["uid"], e["gid"])
            os.chmod(path, e["mode"])
            os.utime(path, ns=(e["mtime_ns"], e["mtime_ns"]))
        except OSError as exc:
            raise RestoreError(f"uploads: cannot set the metadata of {shown(e['name'])}: {_reason(exc)}") from None
    return files


STATE_FILE = "uploads_snapshot.json"  # under state_dir: what the earlier backups hold (``save_state``)


KIND = SourceKind(
    name="uploads_snapshot", key="uploads", rank=3, settings=UploadsSettings, extension=UploadsSource.extension, cron="0 5 * * *",
    build=lambda cfg, state_dir: UploadsSource(cfg.path, state_dir / STATE_FILE, cfg.excludes,
                                               follow_symlinks=cfg.follow_symlinks),
    # §4 "Retention: 90 Tage"; the script's find -maxdepth 1 -type d -mtime +90 -exec rm -rf (DESIGN defect 4)
    policy=RetentionPolicy(keep_daily=90, keep_within=timedelta(days=90)),
    engine="files", upstream="erp_uploads", upstream_description="The ERP's uploaded documents.",
    description="Nightly incremental snapshot of the uploads: only content no earlier backup holds is shipped "
                "(packed into one tar per day), with the complete tree listing; every day restores as a full copy.",
    metric_label="uploads", what="the uploaded documents (incremental)",
    restore_lines=("mkdir -m 700 BLOBS", "age -d -i KEY ARTIFACT | zstd -d | tar -xf - -C BLOBS"),
    emptiness="files", holds=lambda facts: f"the uploads directory {facts.get('path')} holds",
    recovery_target=lambda cfg, root, date, database: (str(root / "uploads"), f"uploads tree {root / 'uploads'}"),
    restore_notes=("Unpack every artifact in the day's manifest `depends_on` and then the day's own into the one "
                   "new directory BLOBS; `.erp-backup-snapshot.json` lists each file's `name` and `sha256`: copy "
                   "`blobs/<sha256>` to `name`.", ""))
