"""SQLite source: online backup API snapshot, integrity_check verification, file restore.

The snapshot is consistent while the ERP writes (SQLite's backup API, one step under a read
transaction). Verification runs ``PRAGMA integrity_check`` on the decompressed artifact itself
and compares every table's row count with the counts taken from the snapshot.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any

from pydantic import Field

from erp_backup_pipeline.core.config import Model
from erp_backup_pipeline.core.retention import RetentionPolicy
from erp_backup_pipeline.core.safe_target import (
    check_target,
    create_file,
    make_parents,
    private_dir,
    put_in_place,
    require_kind,
)
from erp_backup_pipeline.core.sources.base import ALLOW_EMPTY, compare_counts
from erp_backup_pipeline.core.sources.kind import SourceKind
from erp_backup_pipeline.core.streams import CHUNK, copy_stream
from erp_backup_pipeline.errors import RestoreError, SourceError, VerifyError


class SqliteSourceSettings(Model):
    enabled: bool = True
    path: Path
    owner: str = "team:erp-ops"
    allow_empty: bool = Field(False, description=ALLOW_EMPTY)


def _with_sidecars(t: Path) -> list[Path]:
    """The database file and the journal files SQLite would read beside it."""
    return [Path(str(t) + suffix) for suffix in ("", "-wal", "-shm", "-journal")]


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def row_counts(conn: sqlite3.Connection) -> dict[str, int]:
    tables = [r[0] for r in conn.execute(
        "SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%' ORDER BY name")]
    return {t: conn.execute(f"SELECT count(*) FROM {_quote(t)}").fetchone()[0] for t in tables}


def check_file(path: Path) -> tuple[str, dict[str, int]]:
    """integrity_check result and row counts of a database file; VerifyError if it is not one."""
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            result = [r[0] for r in conn.execute("PRAGMA integrity_check")]
            counts = row_counts(conn)
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        raise VerifyError(f"sqlite: artifact is not a sound database ({exc})") from None
    return ("ok" if result == ["ok"] else "; ".join(result[:3])), counts


class _FileDump:
    def __init__(self, path: Path) -> None:
        self._path = path
        self._fh: IO[bytes] | None = open(path, "rb")

    def read(self, n: int = -1) -> bytes:
        assert self._fh is not None
        return self._fh.read(n)

    def finish(self) -> None:
        self.abort()

    def abort(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None
        self._path.unlink(missing_ok=True)


class SqliteSource:
    kind = "sqlite"
    extension = "sqlite3"

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    @property
    def where(self) -> str:
        return f"SQLite database {self.path}"

    def restored_rows(self, target: str) -> dict[str, int]:
        """Rows per table of a restored copy (the file ``target``)."""
        return check_file(Path(target))[1]

    def restored_query(self, target: str, query: str) -> list[str]:
        """The first column of ``query``'s rows, read-only, in a restored copy (the file ``target``)."""
        with sqlite3.connect(f"file:{target}?mode=ro", uri=True) as conn:
            return [r[0] for r in conn.execute(query) if r[0]]

    def _snapshot_path(self, workdir: Path) -> Path:
        return Path(workdir) / "snapshot.sqlite3"

    def prepare(self, workdir: Path) -> dict[str, Any]:
        if not self.path.is_file():
            raise SourceError(f"sqlite: database file {self.path} not found")
        snap = self._snapshot_path(workdir)
        fd = os.open(snap, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.close(fd)
        try:
            src = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=30)
            dst = sqlite3.connect(snap)
            try:
                src.backup(dst, pages=-1)
                dst.execute("PRAGMA journal_mode=DELETE")
                counts = row_counts(dst)
            finally:
                dst.close()
                src.close()
        except sqlite3.Error as exc:
            snap.unlink(missing_ok=True)
            raise SourceError(f"sqlite: cannot back up {self.path}: {exc}") from None
        return {"engine": f"sqlite {sqlite3.sqlite_version}", "row_counts": counts,
                "database": str(self.path)}

    def open_dump(self, workdir: Path, facts: dict[str, Any]) -> _FileDump:
        return _FileDump(self._snapshot_path(workdir))

    def verify(self, reader: IO[bytes] | Any, workdir: Path, facts: dict[str, Any]) -> dict[str, Any]:
        copy = Path(workdir) / "verify.sqlite3"
        try:
            with open(os.open(copy, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as fh:
                copy_stream(reader, fh, CHUNK)
            integrity, counts = check_file(copy)
        finally:
            copy.unlink(missing_ok=True)
        if integrity != "ok":
            raise VerifyError(f"sqlite: integrity_check failed: {integrity}")
        expected = facts.get("row_counts", {})
        if counts != expected:
            diff = sorted(t for t in set(counts) | set(expected) if counts.get(t) != expected.get(t))
            raise VerifyError(f"sqlite: row counts differ from the snapshot in {', '.join(diff[:5])}")
        return {"method": "PRAGMA integrity_check", "integrity": integrity, "tables": len(counts),
                "rows": sum(counts.values())}

    def restore_plan(self, target: str, force: bool, facts: dict[str, Any]) -> list[str]:
        require_kind(target, "file", "production.sqlite3")
        t = Path(target).absolute()
        steps = [f"write the restored database into a new private directory beside {t}, run PRAGMA integrity_check"]
        taken = [p for p in _with_sidecars(t) if os.path.lexists(p)]
        if taken:
            steps.append(f"move the existing {', '.join(map(str, taken))} aside to <name>.before-restore-<timestamp>"
                         if force else f"REFUSE: {taken[0]} exists (use --force to keep it aside and replace it)")
        steps.append(f"link the restored file to {t} (never replacing what is there, never through a link)")
        return steps

    def restore(self, reader: IO[bytes] | Any, target: str, force: bool, workdir: Path,
                fetch: Any = None, facts: dict[str, Any] | None = None,
                attachments: dict[str, bytes] | None = None) -> dict[str, Any]:
        require_kind(target, "file", "production.sqlite3")
        t = check_target(target, force)
        taken = [p for p in _with_sidecars(t) if os.path.lexists(p)]
        if taken and not force:
            raise RestoreError(f"restore target {taken[0]} exists; use --force to keep it aside and replace it")
        make_parents(t)
        with private_dir(t.parent, f".{t.name}.restore-") as tmp:
            partial = tmp / t.name
            with create_file(partial) as fh:
                copy_stream(reader, fh, CHUNK)
            integrity, counts = check_file(partial)
            if integrity != "ok":
                raise VerifyError(f"sqlite: restored database fails integrity_check: {integrity}")
            kept = None
            if taken:
                kept = t.with_name(f"{t.name}.before-restore-{datetime.now(UTC):%Y%m%dT%H%M%SZ}")
                for side in _with_sidecars(t):  # a -wal beside the restored file would be replayed into it
                    if os.path.lexists(side):
                        side.rename(Path(str(kept) + str(side)[len(str(t)):]))
            put_in_place(partial, t)
        return {"target": str(t), "kept_aside": str(kept) if kept else None, "tables": len(counts),
                "rows": sum(counts.values()), "integrity": integrity}

    def drill(self, restore: Callable[[str], dict[str, Any]], workdir: Path, facts: dict[str, Any],
              verify: dict[str, Any]) -> dict[str, Any]:
        target = Path(workdir) / "drill.sqlite3"
        restore(str(target))
        integrity, counts = check_file(target)
        if integrity != "ok":
            raise VerifyError(f"sqlite: restored database fails integrity_check: {integrity}")
        return compare_counts("sqlite", facts.get("row_counts"), counts)


def _holds(facts: Any) -> str:
    return f"the SQLite database {facts.get('database')} holds"


KIND = SourceKind(
    name="sqlite_backup", key="sqlite", rank=1, settings=SqliteSourceSettings, extension=SqliteSource.extension, cron="0 2 * * *",
    build=lambda cfg, state_dir: SqliteSource(cfg.path),
    # §1 "Retention: 30 Tage daily, 12 Monate monthly"; the script's find -mtime +30 and a copy on the 1st of
    # each month that was never pruned (DESIGN defect 8): here 12 monthly buckets, pruned
    policy=RetentionPolicy(keep_daily=30, keep_monthly=12, keep_within=timedelta(days=30)),
    engine="sqlite", upstream="erp_sqlite_database", upstream_description="The ERP's SQLite database (small installs).",
    description="Nightly SQLite snapshot (online backup API), zstd-compressed, integrity-checked, age-encrypted.",
    metric_label="sqlite", what="the SQLite database",
    restore_lines=("mkdir -m 700 DIR && age -d -i KEY ARTIFACT | zstd -d -o DIR/restored.sqlite3 && "
                   "sqlite3 DIR/restored.sqlite3 'PRAGMA integrity_check'",),
    emptiness="tables", holds=_holds, answers_sql=True,
    recovery_target=lambda cfg, root, date, database: (
        str(root / "sqlite" / Path(cfg.path).name), f"SQLite file {root / 'sqlite' / Path(cfg.path).name}"))
