"""Prune: apply the retention plan (``core.retention``) to every destination, or refuse.

``prune()`` reads the catalog from every destination, plans with the configured policies and, unless it
is a dry run, reads the catalog again right before deleting and deletes only what both plans delete.
Each deleted capture goes from every destination that holds it, its manifest first (the catalog stops
showing it at once; an artifact without a manifest is no backup), then its artifact; one log line per
deletion, never a secret. A deletion that fails on one destination is reported and the others go on;
what a capture that could not be deleted depends on is kept.

Refusals and guards, on top of the planner's own invariants:

- a destination whose catalog cannot be read refuses the whole prune: its backups would be missing from
  the plan, and the newest copies there would look like old ones elsewhere;
- an uploads artifact that the local uploads state (``state_dir/uploads_snapshot.json``) still names as
  the holder of some content is never deleted, nor anything it depends on: the next uploads backup ships
  only content the state does not know, and points at that artifact for the rest. When the state file
  exists but cannot be read, no uploads artifact is deleted.
- S3 Object Lock: on a destination with ``object_lock``, each capture's manifest and artifact locks are read
  (HeadObject, every version) before anything of it is deleted there; a locked capture stays on that
  destination ("locked until <date> (<mode>) on offsite") and so does everything it depends on, while the
  destinations that do not hold it locked delete it. The plan says so already (a dry run reads the locks too).
  There, deleting removes every version of the key, never adding a delete marker over a backup.

Artifacts without a manifest are swept too, conservatively (``core.orphans`` finds them and says why each is
kept or deleted): found by both readings, older than ``retention.orphan_grace_hours``, unlocked.

No Dagster here: the CLI (``erp-backup prune``) and the orchestration call it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from erp_backup_pipeline.core import catalog, commit, keep_locks, statefile
from erp_backup_pipeline.core.catalog import Entry
from erp_backup_pipeline.core.destinations import Destination
from erp_backup_pipeline.core.manifest import Manifest
from erp_backup_pipeline.core.orphans import (
    UPLOADS_SOURCE,
    ListingFailed,
    Log,
    Orphan,
    find_orphans,
    lock_of,
    locking,
    state_references,
    sweep,
)
from erp_backup_pipeline.core.retention import Plan, RetentionPolicy, plan
from erp_backup_pipeline.core.runner import redact
from erp_backup_pipeline.core.signing import SIGNATURE_SUFFIX
from erp_backup_pipeline.core.site import Site, takes_site
from erp_backup_pipeline.core.sources.uploads import STATE_FILE as UPLOADS_STATE  # under state_dir (save_state)
from erp_backup_pipeline.errors import BackupError, Locked

_STAYS = "; stays where locked: "  # a planned deletion's reason, when Object Lock holds it on some destination


class PruneRefused(BackupError):
    """Nothing was deleted: the catalog cannot be trusted to hold every backup."""


@dataclass
class PruneResult:
    plan: Plan  # the plan that was applied (after a dry run: the plan that would be)
    dry_run: bool
    deleted: list[tuple[Entry, str]] = field(default_factory=list)  # gone from every destination; the reason
    kept: list[tuple[Entry, str]] = field(default_factory=list)
    failed: list[tuple[Entry, str]] = field(default_factory=list)  # the reason, then what failed where
    # artifacts without a manifest: (orphan, action, reason); action keep/delete (dry run) or keep/deleted/failed
    orphans: list[tuple[Orphan, str, str]] = field(default_factory=list)
    # Object Lock extended to the end of a long keep (core.keep_locks): (entry, destination, outcome)
    locks: list[tuple[Entry, str, str]] = field(default_factory=list)

    @property
    def lock_failures(self) -> int:
        return sum(1 for _, _, outcome in self.locks if outcome.startswith("failed"))

    @property
    def notes(self) -> list[str]:
        return self.plan.notes

    def count(self, action: str) -> int:
        """Captures and orphan artifacts with this action (keep, delete, deleted, failed)."""
        captures = {"keep": self.plan.keep if self.dry_run else self.kept, "delete": self.plan.delete,
                    "deleted": self.deleted, "failed": self.failed}.get(action, [])
        return len(captures) + sum(1 for _, a, _ in self.orphans if a == action)

    def as_rows(self) -> list[dict[str, str]]:
        """source, partition, captured_at, action, reason; action keep/delete (dry run) or keep/deleted/failed."""
        if self.dry_run:
            rows = self.plan.as_rows()
        else:
            rows = [_row(e, action, r) for action, items in (("keep", self.kept), ("deleted", self.deleted),
                                                              ("failed", self.failed)) for e, r in items]
        rows += [o.row(action, reason) for o, action, reason in self.orphans]
        return sorted(rows, key=lambda r: (r["source"], r["partition"], r["captured_at"]))


def _row(entry: Entry, action: str, reason: str) -> dict[str, str]:
    m = entry.manifest
    return {"source": m.source, "partition": m.partition, "captured_at": m.captured_at, "action": action,
            "reason": reason}


@takes_site
def prune(site: Site, now: datetime | None = None, dry_run: bool = True, log: Log = print) -> PruneResult:
    """Plan retention over every destination's catalog and, unless ``dry_run``, delete what the plan deletes.

    Raises PruneRefused (nothing deleted) when a destination cannot be read."""
    now = now or datetime.now(UTC)
    destinations = list(site.destinations)
    policies = site.policies
    state_file = site.state_dir / UPLOADS_STATE
    first, first_orphans = _plan(site, destinations, policies, now, state_file)
    by_name = {d.name: d for d in destinations}
    if dry_run:
        return PruneResult(first, True, kept=list(first.keep), orphans=first_orphans,
                           locks=keep_locks.extend(first.lock_until, by_name, True, log))
    with _only_prune(site.state_dir):
        # right before deleting: what is there now
        fresh, fresh_orphans = _plan(site, destinations, policies, now, state_file)
        reviewed = {e.manifest.key for e, _ in first.delete}
        result = PruneResult(fresh, False, kept=list(fresh.keep))
        todo = []
        for entry, reason in fresh.delete:
            if entry.manifest.key in reviewed:
                todo.append((entry, reason))
            else:
                result.kept.append((entry, f"deletable only in the catalog read again before deleting: left for the "
                                           f"next prune (otherwise: {reason})"))
        todo = _recorded(site, todo, result, log)
        _delete(todo, by_name, result, log)
        result.orphans += sweep(first_orphans, fresh_orphans, by_name, log)
        result.locks = keep_locks.extend(fresh.lock_until, by_name, False, log)
        return result


def _recorded(site: Site, todo: list[tuple[Entry, str]], result: PruneResult, log: Log) -> list[tuple[Entry, str]]:
    """Each source's captures about to go, recorded as pruned in its chain ledger on every destination first; a source
    whose ledger a destination did not take deletes nothing this time (its absence would read as a deletion)."""
    by_source: dict[str, list[tuple[Entry, str]]] = {}
    for entry, reason in todo:
        by_source.setdefault(entry.manifest.source, []).append((entry, reason))
    kept: list[tuple[Entry, str]] = []
    for source, items in sorted(by_source.items()):
        failed = commit.record_pruned(site, source, {e.manifest.sequence: e.sha256 for e, _ in items}, log)
        if failed:
            problem = "; ".join(f"{n}: {err}" for n, err in sorted(failed.items()))
            result.failed += [(e, f"{r}; not deleted: the chain ledger could not be written ({problem})")
                              for e, r in items]
        else:
            kept += items
    return kept


LOCK_FILE = "prune.lock"


@contextlib.contextmanager
def _only_prune(state_dir: Path) -> Iterator[None]:
    """One deleting prune at a time on this host (the command line's and the retention asset's): Locked at once,
    not a wait, when another holds ``state_dir/prune.lock``."""
    Path(state_dir).mkdir(parents=True, exist_ok=True, mode=0o700)
    path = Path(state_dir) / LOCK_FILE
    with statefile.locked(path, busy=Locked(f"another prune is running on this host (it holds {path}); nothing was "
                                            "deleted: run it again when that one has finished")):
        yield


def _plan(site: Site, destinations: list[Destination], policies: dict[str, RetentionPolicy], now: datetime,
          state_file: Path) -> tuple[Plan, list[tuple[Orphan, str, str]]]:
    found = catalog.of(site, now=now, destinations=destinations)
    if found.errors:
        raise PruneRefused(f"refusing to prune: {len(found.errors)} destination(s) could not be read, so the plan "
                           f"would miss their backups ({'; '.join(found.errors)})")
    if found.evidence:
        raise PruneRefused(f"refusing to prune: {len(found.evidence)} file(s) or chain finding(s) on the destinations "
                           f"are not authenticated, first {found.evidence[0]}; `erp-backup list` shows every one: look at "
                           "them, remove what this pipeline did not write, then prune again")
    entries = found.entries
    planned = _guard_locks(_guard_uploads_state(plan(entries, policies, now), state_file), destinations)
    try:
        return planned, find_orphans(site, destinations, entries, now, state_file)
    except ListingFailed as exc:
        raise PruneRefused(f"refusing to prune: {exc}") from None


def _guard_uploads_state(result: Plan, state_file: Path) -> Plan:
    """Move to ``keep`` every uploads artifact the state references, and everything those depend on."""
    uploads = {e.manifest.artifact_key: (e, r) for e, r in result.delete if e.manifest.source == UPLOADS_SOURCE}
    if not uploads:
        return result
    referenced, problem = state_references(state_file)
    moved: dict[str, str] = {}
    if problem is not None:
        for key, (_, reason) in uploads.items():
            moved[key] = (f"the uploads state {state_file} cannot be read ({problem}), so which artifacts the next "
                          f"uploads backup builds on is unknown (otherwise: {reason})")
        notes = [f"{UPLOADS_SOURCE}: nothing deleted, the uploads state {state_file} cannot be read ({problem})"]
    else:
        stack = sorted(key for key in referenced if key in uploads)
        for key in stack:
            moved[key] = (f"referenced by the uploads state {state_file}: the next uploads backup builds on it "
                          f"(otherwise: {uploads[key][1]})")
        while stack:
            user = uploads[stack.pop()][0].manifest
            for dep in sorted(set(user.facts.get("depends_on") or [])):
                if dep in uploads and dep not in moved:
                    moved[dep] = (f"needed by {UPLOADS_SOURCE} {user.partition}, which the uploads state references "
                                  f"(otherwise: {uploads[dep][1]})")
                    stack.append(dep)
        notes = [f"{UPLOADS_SOURCE}: {len(moved)} artifact(s) kept for the uploads state {state_file}"] if moved else []
    if not moved:
        return result
    keep = list(result.keep) + [(uploads[key][0], reason) for key, reason in moved.items()]
    delete = [(e, r) for e, r in result.delete if e.manifest.artifact_key not in moved]
    return Plan(keep=keep, delete=delete, notes=list(result.notes) + notes)


def _lock(dest: Destination, m: Manifest) -> str | None:
    """What Object Lock keeps of this capture on dest (its manifest or its artifact), or None."""
    return lock_of(dest, m.key) or lock_of(dest, m.artifact_key)


def _guard_locks(result: Plan, destinations: list[Destination]) -> Plan:
    """Keep what Object Lock holds on every destination that has the capture; a capture held on some keeps
    what it depends on. A lock that cannot be read counts as one."""
    if not result.delete or not any(locking(d) for d in destinations):
        return result
    by_name = {d.name: d for d in destinations}
    keep = list(result.keep)
    delete: list[tuple[Entry, str]] = []
    needed: dict[str, str] = {}  # artifact key -> which locked capture needs it
    counts: dict[str, int] = {}
    for entry, reason in result.delete:
        m = entry.manifest
        locked: dict[str, str] = {}
        for name in sorted(entry.held_by):
            try:
                why = _lock(by_name[name], m)
            except BackupError as exc:
                why = f"Object Lock state unreadable ({exc})"
            if why:
                locked[name] = why
        if not locked:
            delete.append((entry, reason))
            continue
        held = "; ".join(f"{why} on {name}" for name, why in locked.items())
        counts[m.source] = counts.get(m.source, 0) + 1
        for dep in m.facts.get("depends_on") or []:
            needed.setdefault(dep, f"{m.source} {m.partition}, which Object Lock keeps on {', '.join(locked)}")
        if set(locked) == set(entry.held_by):
            keep.append((entry, f"{held} (otherwise: {reason})"))
        else:
            delete.append((entry, f"{reason}{_STAYS}{held}"))
    while needed:  # what a locked capture depends on stays, transitively
        moved = [(e, r) for e, r in delete if e.manifest.artifact_key in needed]
        delete = [(e, r) for e, r in delete if e.manifest.artifact_key not in needed]
        keep += [(e, f"needed by {needed[e.manifest.artifact_key]} (otherwise: {r})") for e, r in moved]
        needed = {dep: f"{e.manifest.source} {e.manifest.partition}, which a capture Object Lock keeps needs"
                  for e, _ in moved for dep in e.manifest.facts.get("depends_on") or []}
    notes = [f"{source}: {n} capture(s) the policy would delete stay where Object Lock holds them"
             for source, n in sorted(counts.items())]
    return Plan(keep=keep, delete=delete, notes=list(result.notes) + notes)


def _delete(todo: Iterable[tuple[Entry, str]], destinations: dict[str, Destination], result: PruneResult,
            log: Log) -> None:
    """Newest first, so that what a capture that could not be deleted depends on is still there and kept."""
    still_needed: set[str] = set()
    for entry, reason in sorted(todo, key=lambda er: (er[0].manifest.partition, er[0].manifest.captured_at),
                                reverse=True):
        m = entry.manifest
        what = f"{m.source} {m.partition} captured {m.captured_at}"
        if m.artifact_key in still_needed:
            result.kept.append((entry, f"a capture that depends on it could not be deleted (otherwise: {reason})"))
            still_needed.update(m.facts.get("depends_on") or [])
            continue
        problems: list[str] = []
        listed = False  # its manifest still stands somewhere: the catalog still shows it
        locked: dict[str, str] = {}  # destination -> what Object Lock keeps there, read right before deleting
        gone: list[str] = []
        for name in sorted(entry.held_by):
            dest = destinations[name]
            try:
                why = _lock(dest, m)
            except BackupError as exc:
                listed = True
                problems.append(f"{name}: cannot read its Object Lock: {exc}")
                log(redact(f"failed to delete {what} from {name} (lock): {exc}"))
                continue
            if why:
                locked[name] = why
                log(redact(f"kept {what} on {name}: {why}"))
                continue
            for part, key in (("manifest", m.key), ("signature", m.key + SIGNATURE_SUFFIX),
                              *(("artifact", k) for k in m.object_keys)):
                try:
                    dest.delete(key)
                except (BackupError, OSError) as exc:
                    error = str(exc) if isinstance(exc, BackupError) else f"{dest.uri(key)}: {exc.strerror or exc}"
                    if part == "manifest":
                        listed = True
                        problems.append(f"{name}: {error}")
                    else:
                        problems.append(f"{name}: artifact left without its manifest: {error}")
                    log(redact(f"failed to delete {what} from {name} ({part}): {error}"))
                    break
            else:
                gone.append(name)
                log(redact(f"deleted {what} from {name}: {reason}"))
        held = "; ".join(f"{why} on {name}" for name, why in locked.items())
        if problems:
            result.failed.append((entry, f"{reason}; failed on {'; '.join(problems)}"
                                         + (f"; kept where locked: {held}" if held else "")))
            if listed or locked:
                still_needed.update(m.facts.get("depends_on") or [])
        elif locked:
            deleted = f"; deleted from {', '.join(gone)}" if gone else ""
            result.kept.append((entry, f"{held}{deleted} (otherwise: {reason.split(_STAYS)[0]})"))
            still_needed.update(m.facts.get("depends_on") or [])
        else:
            result.deleted.append((entry, reason))
