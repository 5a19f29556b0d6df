"""Whole-ERP recovery: every store of one date restored together, then checked for belonging together.

A backup set is a date's newest verified capture of every configured source (complete when every
source has one). With point-in-time recovery configured (``pitr``), the set's PostgreSQL is the
archived cluster at the set's recovery target: the uploads capture time (documents are written before
the rows that reference them), else the earliest capture of the other stores; a target outside the
archived range says why and falls back to the date's PostgreSQL dump. ``plan_recovery`` names what
goes where under DIR and refuses what would overwrite anything: the SQLite file (``DIR/sqlite/<name>``),
a new PostgreSQL database ``erp_recovered_<date>`` on the configured server (or the point-in-time
cluster in ``DIR/postgres`` on a free loopback port), Redis's ``dump.rdb`` with a redis-server started on
it (``DIR/redis``), the configuration tree (``DIR/config``) and the uploads tree (``DIR/uploads``).
``recover`` restores each store (timed: the measured RTO per store and in total) and then runs the
cross-store checks: rows per table equal to what the manifests recorded, Redis's keys equal to the
snapshot's, every document a database row references (``recovery.document_references``) present in the
restored uploads with the sha256 the uploads snapshot recorded, the configuration's files all there.
Any mismatch fails loudly. The servers it started keep running for the ERP (``recovery_servers``).
"""

from __future__ import annotations

import hashlib
import json
import os
import tarfile
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from erp_backup_pipeline.core import catalog
from erp_backup_pipeline.core import recovery_servers as servers
from erp_backup_pipeline.core.catalog import Entry
from erp_backup_pipeline.core.restore import fetched, plaintext_reader, restore_backup
from erp_backup_pipeline.core.runner import free_port
from erp_backup_pipeline.core.safe_target import check_target, restore_os_error
from erp_backup_pipeline.core.site import Site, takes_site
from erp_backup_pipeline.core.sources import KINDS, restore_order
from erp_backup_pipeline.core.sources.base import compare_counts
from erp_backup_pipeline.core.streams import CHUNK, Progress
from erp_backup_pipeline.errors import BackupError, RestoreError, VerifyError

PITR = servers.PITR  # the step of a set whose PostgreSQL comes from the WAL archive
PG, REDIS, CONFIG, UPLOADS = servers.PG, servers.REDIS, servers.CONFIG, servers.UPLOADS


@dataclass
class BackupSet:
    date: str
    entries: dict[str, Entry]  # source -> the newest verified capture of that date
    missing: list[str]
    pg_target: datetime | None = None  # PostgreSQL point in time matching the other stores (pitr configured)
    pitr_note: str | None = None  # why the set has no point-in-time PostgreSQL

    @property
    def complete(self) -> bool:
        return not self.missing


@takes_site
def backup_sets(site: Site, errors: list[str] | None = None,
                found: catalog.Catalog | None = None) -> list[BackupSet]:
    """One set per date that has any verified, authenticated backup, oldest first (of ``found``, or the catalog
    read now)."""
    sources = site.enabled()
    by_date: dict[str, dict[str, Entry]] = {}
    found = found or catalog.of(site)
    if errors is not None:
        errors += found.errors + [f"rejected: {line}" for line in found.evidence]
    for entry in found.entries:
        m = entry.manifest
        if m.source in sources and m.verify.get("ok") and m.complete:
            by_date.setdefault(m.partition, {})[m.source] = entry  # entries come oldest first: the newest wins
    sets = [BackupSet(d, found, [s for s in sources if s not in found]) for d, found in sorted(by_date.items())]
    if servers.pitr_enabled(site) and sets:
        window, problem = None, None
        try:
            window = servers.archived_range(site)
        except BackupError as exc:
            problem = f"pgBackRest: {exc}"
        for bset in sets:
            bset.pg_target, bset.pitr_note = servers.pitr_target(bset.entries, window, problem)
            if bset.pg_target is not None:
                bset.missing = [s for s in bset.missing if s != PG]
            elif PG not in bset.entries and PG not in bset.missing:
                bset.missing.append("postgres point-in-time")
    return sets


@takes_site
def find_set(site: Site, date: str) -> BackupSet:
    found = catalog.of(site)
    for bset in backup_sets(site, found=found):
        if bset.date == date:
            return bset
    there = [r for r in found.rejected if r.key.rsplit("/", 2)[-2:-1] == [date]]
    if there:
        raise RestoreError(f"no backup set for {date}: no authenticated backup of any source on that date; "
                           f"{len(there)} file(s) there are rejected, first {there[0].line()}")
    raise RestoreError(f"no backup set for {date}: no verified backup of any source on that date")


@dataclass
class Step:
    source: str
    target: str
    what: str
    port: int | None = None  # the server recover starts (Redis, point-in-time PostgreSQL)
    pitr_plan: Any = None
    started: bool = False


@dataclass
class RecoveryPlan:
    date: str
    root: Path
    steps: list[Step] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    entries: dict[str, Entry] = field(default_factory=dict)
    pg_target: datetime | None = None
    notes: list[str] = field(default_factory=list)


def _target(site: Site, source: str, root: Path, date: str, pg_database: str | None) -> tuple[str, str]:
    return KINDS[source].recovery_target(site.section(source), root, date, pg_database)


def _check_reachable(site: Site, root: Path) -> None:
    """pgBackRest restores as pitr.os_user: it must reach DIR (refused now, not after the other stores)."""
    from erp_backup_pipeline.core.pitr.recover import as_user

    user = site.pgbackrest.os_user
    if os.geteuid() != 0 or user == "root":
        return
    existing = next(p for p in (root, *root.parents) if p.exists())
    try:
        as_user(user, ["test", "-x", str(existing)], "test")
    except RestoreError:
        raise RestoreError(f"user {user} cannot reach {existing}: the point-in-time restore runs as {user}; recover "
                           "into a directory whose parents it can search") from None


@takes_site
def plan_recovery(site: Site, date: str, root: Path, pg_database: str | None = None) -> RecoveryPlan:
    """What goes where; RestoreError before anything changes when a target is taken or unreachable."""
    bset = find_set(site, date)
    root = check_target(root, force=False, inside=True)
    if os.path.lexists(root) and not os.path.isdir(root):
        raise RestoreError(f"recovery directory {root} is a file, not a directory; recover into a new directory")
    if root.exists() and any(root.iterdir()):
        raise RestoreError(f"recovery directory {root} is not empty; recover into a new directory")
    plan = RecoveryPlan(date=date, root=root, missing=list(bset.missing), entries=dict(bset.entries),
                        pg_target=bset.pg_target)
    for source in restore_order(bset.entries):
        entry = bset.entries[source]
        if source == PG and bset.pg_target is not None:
            continue  # the point in time replaces the day's dump
        target, what = _target(site, source, root, date, pg_database)
        check = getattr(site.source(source), "check_recovery_target", None)
        if check is not None:  # a new database: free, and the server can take it
            check(target, entry.manifest.facts)
        step = Step(source, target, f"{source} captured {entry.manifest.captured_at} -> {what}")
        if source == REDIS:
            step.port = free_port()
            step.what += f" (127.0.0.1:{step.port})"
        plan.steps.append(step)
    if bset.pg_target is not None:
        from erp_backup_pipeline.core.pitr import recover as pitr_recover

        _check_reachable(site, root)
        datadir = root / "postgres"
        step = Step(PITR, str(datadir), "", port=free_port(),
                    pitr_plan=pitr_recover.plan_restore(site, datadir, target_time=bset.pg_target))
        step.what = (f"PostgreSQL point-in-time to {bset.pg_target.isoformat()} (backup set {step.pitr_plan.label}) "
                     f"-> new data directory {datadir} (port {step.port})")
        plan.steps.insert(0, step)
    elif bset.pitr_note:
        plan.notes.append(f"no point-in-time PostgreSQL for {date}: {bset.pitr_note}"
                          + (f"; the day's {PG} instead" if PG in bset.entries else ""))
    return plan


def _restore_step(site: Site, plan: RecoveryPlan, step: Step, progress: Progress | None) -> dict[str, Any]:
    if step.source == PITR:
        step.started = True  # stopping goes by postmaster.pid: a no-op when the cluster never came up
        return servers.start_pitr(site, step.pitr_plan, step.port or free_port())
    result = restore_backup(site, step.source, plan.date, step.target, progress=progress)
    if step.source == REDIS:
        port = step.port or free_port()
        step.started = True  # the pid file tells whether it is up; stopping a server that never came is a no-op
        result["pid"] = servers.start_redis(site, Path(step.target), port)
    return result


@takes_site
def recover(site: Site, plan: RecoveryPlan, progress: Progress | None = None,
            log: Any = print) -> dict[str, Any]:
    """Restore every store of the plan, start its servers, then check them together. VerifyError when a check
    fails; on any failure the servers started so far are stopped again (the restored files stay)."""
    try:
        plan.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(plan.root, 0o711 if any(s.source == PITR for s in plan.steps) else 0o700)  # os_user passes through
    except OSError as exc:
        raise restore_os_error(exc, str(plan.root)) from None
    timings: dict[str, float] = {}
    results: dict[str, dict[str, Any]] = {}
    t0 = time.monotonic()
    try:
        for step in plan.steps:
            t = time.monotonic()
            log(f"restoring {step.what}")
            results[step.source] = _restore_step(site, plan, step, progress)
            timings[step.source] = round(time.monotonic() - t, 2)
            log(f"  done in {timings[step.source]} s")
        total = round(time.monotonic() - t0, 2)
        t = time.monotonic()
        checks = consistency_checks(site, plan)
        check_seconds = round(time.monotonic() - t, 2)
        failed = [c for c in checks if not c["ok"]]
        if failed:
            raise VerifyError(f"recovery of {plan.date}: {len(failed)} consistency check(s) failed: "
                              + "; ".join(f"{c['check']}: {c['detail']}" for c in failed[:3]))
    except BaseException:
        servers.stop_servers(site, plan.steps)
        raise
    use, stop = servers.pointers(site, plan.steps)
    return {"date": plan.date, "root": str(plan.root), "seconds": timings, "total_seconds": total,
            "check_seconds": check_seconds, "checks": checks, "missing": plan.missing, "results": results,
            "use": use, "stop": stop}


def _rows(site: Site, step: Step) -> dict[str, int]:
    return site.source(step.source).restored_rows(step.target)  # type: ignore[attr-defined, no-any-return]


def _referenced(site: Site, ref: Any, step: Step) -> list[str]:
    if step.source == PITR:
        assert step.port is not None
        return [r[0] for r in servers.pitr_query(site, Path(step.target), step.port, ref.query,
                                                  servers.pitr_dbname(site)) if r and r[0]]
    return site.source(ref.source).restored_query(step.target, ref.query)  # type: ignore[attr-defined, no-any-return]


@takes_site
def recorded_uploads(site: Site, entry: Entry) -> dict[str, str]:
    """name -> sha256 of every file in the uploads snapshot, as the artifact recorded it (its last member;
    paths never reach the manifest). Reads the date's artifact once more: checksum, decrypt, decompress."""
    from erp_backup_pipeline.core.sources.uploads import SNAPSHOT_NAME

    with fetched(site, entry) as path, open(path, "rb") as fh:
        reader: Any = plaintext_reader(site, entry.manifest, fh, stage="check")
        snapshot = None
        try:
            with tarfile.open(fileobj=reader, mode="r|") as tar:
                for member in tar:
                    if member.name == SNAPSHOT_NAME and (data := tar.extractfile(member)) is not None:
                        snapshot = json.loads(data.read())
        except (tarfile.TarError, EOFError, ValueError) as exc:
            raise VerifyError(f"uploads: the artifact is not a sound tar ({exc})") from None
        while reader.read(CHUNK):
            pass
    if snapshot is None:
        raise VerifyError(f"uploads: the artifact has no {SNAPSHOT_NAME}")
    return {e["name"]: e["sha256"] for e in snapshot if e.get("type") == "file"}


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _documents(site: Site, plan: RecoveryPlan, steps: dict[str, Step]) -> list[dict[str, Any]]:
    checks = []
    uploads = steps.get(UPLOADS)
    recorded: dict[str, str] | None = None
    for ref in site.document_references:
        name = f"documents referenced by {ref.source}"
        step = steps.get(ref.source) or (steps.get(PITR) if ref.source == PG else None)
        if step is None or uploads is None:
            checks.append({"check": name, "ok": False,
                           "detail": f"the set has no {ref.source if step is None else UPLOADS} backup"})
            continue
        paths = _referenced(site, ref, step)
        if recorded is None:
            recorded = recorded_uploads(site, plan.entries[UPLOADS])
        root = Path(uploads.target)
        absent, differ = [], []
        for p in paths:
            full = root / p
            if not full.is_file() or not full.resolve().is_relative_to(root.resolve()):
                absent.append(p)
            elif recorded.get(p) != _sha256(full):
                differ.append(p)
        detail = f"{len(paths)} referenced, all present with the recorded sha256"
        if absent:
            detail = f"{len(absent)} of {len(paths)} missing from the restored uploads, first {absent[0]}"
        if differ:
            detail = ((detail + "; ") if absent else "") + (
                f"{len(differ)} of {len(paths)} differ from the sha256 the uploads snapshot recorded, first {differ[0]}")
        checks.append({"check": name, "ok": not absent and not differ, "detail": detail})
    return checks


@takes_site
def consistency_checks(site: Site, plan: RecoveryPlan) -> list[dict[str, Any]]:
    steps = {s.source: s for s in plan.steps}
    entries = plan.entries or find_set(site, plan.date).entries
    plan.entries = entries
    checks: list[dict[str, Any]] = []
    for source in steps:
        if source in KINDS and KINDS[source].answers_sql:  # a database: its rows per table
            expected = entries[source].manifest.facts.get("row_counts")
            try:
                compare_counts(source, expected, _rows(site, steps[source]))
                checks.append({"check": f"{source} rows per table", "ok": True, "detail": "equal to the manifest"})
            except VerifyError as exc:
                checks.append({"check": f"{source} rows per table", "ok": False, "detail": str(exc)})
    if PITR in steps:
        assert plan.pg_target is not None
        checks.append(servers.pitr_check(site, steps[PITR], plan.pg_target, entries.get(PG)))
    if REDIS in steps:
        expected_keys = entries[REDIS].manifest.verify.get("keys")
        checks.append(servers.redis_check(site, steps[REDIS], expected_keys))
    if CONFIG in steps:
        index = entries[CONFIG].manifest.facts.get("index") or []
        root = Path(steps[CONFIG].target)
        files = [e["name"] for e in index if e.get("type", "file") == "file"]
        absent = [n for n in files if not os.path.isfile(root / n)]
        checks.append({"check": "configuration files present", "ok": not absent,
                       "detail": f"{len(files)} files" if not absent else f"{len(absent)} missing, first {absent[0]}"})
    checks += _documents(site, plan, steps)
    if plan.missing:
        checks.append({"check": "every configured store in the set", "ok": False,
                       "detail": f"no backup of {', '.join(plan.missing)} on {plan.date}"})
    return checks
