"""Whole-ERP recovery: every store of one date restored together, then checked for belonging together.

A backup set is a date's newest verified capture of every configured source (complete when every
source has one). ``plan_recovery`` names what goes where under DIR: the SQLite file
(``DIR/sqlite/<name>``), a new PostgreSQL database ``erp_recovered_<date>`` on the configured server,
Redis's ``dump.rdb`` with the command that starts a server on it (``DIR/redis``), the configuration tree
(``DIR/config``) and the uploads tree (``DIR/uploads``). ``recover`` restores each store (timed: the
measured RTO per store and in total) and then runs the cross-store checks: rows per table equal to
what the manifests recorded, every document a database row references (``recovery.document_references``)
present in the restored uploads, the configuration's files all there. Any mismatch fails loudly.
"""

from __future__ import annotations

import os
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from erp_backup_pipeline.core.catalog import Entry, load_catalog
from erp_backup_pipeline.core.destinations import build_destinations
from erp_backup_pipeline.core.restore import restore_backup
from erp_backup_pipeline.core.sources import build_source, enabled_sources
from erp_backup_pipeline.core.sources.base import compare_counts
from erp_backup_pipeline.core.sources.sqlite import check_file
from erp_backup_pipeline.core.streams import Progress
from erp_backup_pipeline.errors import RestoreError, VerifyError


@dataclass
class BackupSet:
    date: str
    entries: dict[str, Entry]  # source -> the newest verified capture of that date
    missing: list[str]

    @property
    def complete(self) -> bool:
        return not self.missing


def backup_sets(settings: Any, errors: list[str] | None = None) -> list[BackupSet]:
    """One set per date that has any verified backup, oldest first."""
    sources = enabled_sources(settings)
    by_date: dict[str, dict[str, Entry]] = {}
    for entry in load_catalog(build_destinations(settings), settings.prefix, errors=errors):
        m = entry.manifest
        if m.source in sources and m.verify.get("ok") and m.complete:
            by_date.setdefault(m.partition, {})[m.source] = entry  # entries come oldest first: the newest wins
    return [BackupSet(d, found, [s for s in sources if s not in found]) for d, found in sorted(by_date.items())]


def find_set(settings: Any, date: str) -> BackupSet:
    for bset in backup_sets(settings):
        if bset.date == date:
            return bset
    raise RestoreError(f"no backup set for {date}: no verified backup of any source on that date")


@dataclass
class Step:
    source: str
    target: str
    what: str


@dataclass
class RecoveryPlan:
    date: str
    root: Path
    steps: list[Step] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)


def _target(settings: Any, source: str, root: Path, date: str) -> tuple[str, str]:
    if source == "sqlite_backup":
        name = Path(settings.sources.sqlite.path).name
        return str(root / "sqlite" / name), f"SQLite file {root / 'sqlite' / name}"
    if source == "postgres_dump":
        db = f"erp_recovered_{date.replace('-', '')}"
        pg = settings.sources.postgres
        return db, f"new PostgreSQL database {db} on {pg.host}:{pg.port}"
    if source == "redis_snapshot":
        return str(root / "redis"), f"{root / 'redis' / 'dump.rdb'} (start a redis-server on it)"
    if source == "config_archive":
        return str(root / "config"), f"configuration tree {root / 'config'}"
    return str(root / "uploads"), f"uploads tree {root / 'uploads'}"


def plan_recovery(settings: Any, date: str, root: Path) -> RecoveryPlan:
    bset = find_set(settings, date)
    root = Path(root).absolute()
    if root.exists() and any(root.iterdir()):
        raise RestoreError(f"recovery directory {root} is not empty; recover into a new directory")
    plan = RecoveryPlan(date=date, root=root, missing=list(bset.missing))
    for source, entry in bset.entries.items():
        target, what = _target(settings, source, root, date)
        plan.steps.append(Step(source, target, f"{source} captured {entry.manifest.captured_at} -> {what}"))
    return plan


def recover(settings: Any, plan: RecoveryPlan, progress: Progress | None = None,
            log: Any = print) -> dict[str, Any]:
    """Restore every store of the plan, then check them together. VerifyError when a check fails."""
    plan.root.mkdir(parents=True, exist_ok=True, mode=0o700)
    timings: dict[str, float] = {}
    results: dict[str, dict[str, Any]] = {}
    t0 = time.monotonic()
    for step in plan.steps:
        t = time.monotonic()
        log(f"restoring {step.what}")
        results[step.source] = restore_backup(settings, step.source, plan.date, step.target, progress=progress)
        timings[step.source] = round(time.monotonic() - t, 2)
        log(f"  done in {timings[step.source]} s")
    total = round(time.monotonic() - t0, 2)
    checks = consistency_checks(settings, plan)
    failed = [c for c in checks if not c["ok"]]
    report = {"date": plan.date, "root": str(plan.root), "seconds": timings, "total_seconds": total,
              "checks": checks, "missing": plan.missing, "results": results}
    if failed:
        raise VerifyError(f"recovery of {plan.date}: {len(failed)} consistency check(s) failed: "
                          + "; ".join(f"{c['check']}: {c['detail']}" for c in failed[:3]))
    return report


def _rows(settings: Any, step: Step) -> dict[str, int]:
    if step.source == "sqlite_backup":
        return check_file(Path(step.target))[1]
    from erp_backup_pipeline.core.sources.postgres import count_rows

    src = build_source(settings, "postgres_dump")
    with src.connect(dbname=step.target) as conn:  # type: ignore[attr-defined]
        return count_rows(conn)


def _documents(settings: Any, plan: RecoveryPlan, steps: dict[str, Step]) -> list[dict[str, Any]]:
    checks = []
    uploads = steps.get("uploads_snapshot")
    for ref in settings.recovery.document_references:
        step = steps.get(ref.source)
        if step is None or uploads is None:
            checks.append({"check": f"documents referenced by {ref.source}", "ok": False,
                           "detail": f"the set has no {ref.source if step is None else 'uploads_snapshot'} backup"})
            continue
        if ref.source == "sqlite_backup":
            with sqlite3.connect(f"file:{step.target}?mode=ro", uri=True) as conn:
                paths = [r[0] for r in conn.execute(ref.query) if r[0]]
        else:
            src = build_source(settings, "postgres_dump")
            with src.connect(dbname=step.target) as conn:  # type: ignore[attr-defined]
                paths = [r[0] for r in conn.execute(ref.query).fetchall() if r[0]]
        root = Path(uploads.target)
        absent = [p for p in paths if not (root / p).is_file() or not (root / p).resolve().is_relative_to(root.resolve())]
        checks.append({"check": f"documents referenced by {ref.source}", "ok": not absent,
                       "detail": (f"{len(paths)} referenced, all present" if not absent else
                                  f"{len(absent)} of {len(paths)} missing from the restored uploads, first {absent[0]}")})
    return checks


def consistency_checks(settings: Any, plan: RecoveryPlan) -> list[dict[str, Any]]:
    steps = {s.source: s for s in plan.steps}
    bset = find_set(settings, plan.date)
    checks: list[dict[str, Any]] = []
    for source in ("sqlite_backup", "postgres_dump"):
        if source in steps:
            expected = bset.entries[source].manifest.facts.get("row_counts")
            try:
                compare_counts(source, expected, _rows(settings, steps[source]))
                checks.append({"check": f"{source} rows per table", "ok": True, "detail": "equal to the manifest"})
            except VerifyError as exc:
                checks.append({"check": f"{source} rows per table", "ok": False, "detail": str(exc)})
    if "config_archive" in steps:
        index = bset.entries["config_archive"].manifest.facts.get("index") or []
        root = Path(steps["config_archive"].target)
        files = [e["name"] for e in index if e.get("type", "file") == "file"]
        absent = [n for n in files if not os.path.isfile(root / n)]
        checks.append({"check": "configuration files present", "ok": not absent,
                       "detail": f"{len(files)} files" if not absent else f"{len(absent)} missing, first {absent[0]}"})
    checks += _documents(settings, plan, steps)
    if plan.missing:
        checks.append({"check": "every configured store in the set", "ok": False,
                       "detail": f"no backup of {', '.join(plan.missing)} on {plan.date}"})
    return checks
