"""Retention: which backups to keep, which to delete, and why, as a plan to review before anything goes.

Owns the retention policy (grandfather-father-son counts, keep-within, long-term yearly classes for
German retention duties), the per-source defaults taken from the original strategy, and ``plan()``: a
pure function from the catalog, the policies and the current time to a ``Plan`` with a reason for every
entry. No I/O and no Dagster: deleting is the caller's job.

How a plan is made, per source:

- One capture counts per partition: its newest verified one (a complete one before an incomplete one).
  The partition's other captures go once older than ``keep_within``; unverified captures of a partition
  without a verified one are kept and never counted.
- Buckets (day, ISO week, month, year) come from the partition key, a date in Europe/Berlin, never from a
  UTC timestamp: time zone and DST cannot move a backup into another bucket. ``keep_daily: N`` keeps the
  newest backup of each of the N newest days that have one (a gap does not shorten the history), and so on.
- An entry is deleted only when nothing keeps it. Protections that no bucket arithmetic can undo: the
  newest verified backup of each source (by partition, by capture time, and on each destination);
  everything captured within ``keep_within``; everything of a source whose newest capture failed or
  whose newest verified backup is older than its cadence plus grace (a stopped pipeline must not age
  its last copies away, as the original's ``find -mtime +90 -exec rm -rf`` did); and every artifact a
  kept entry ``depends_on`` (uploads content), transitively.
- A capture kept by a weekly, monthly or yearly bucket or a long-term class carries the end of that keep
  (``Plan.lock_until``: the bucket's start plus the count, were a backup taken daily from now on; a long-term
  class's year end); so does what it depends on. Prune extends its Object Lock to that end (``core.keep_locks``).

A late capture (``core.late``: a live capture of a day that was over) holds the data of the day it ran, not of its
partition, and is planned as what it is: the capture made on its own date represents a partition before a late
capture of it (a late re-capture never pushes out the backup made on that date), and a week, month or year is kept
by the newest capture holding its own date's data, a late one only where the bucket has nothing else (a backfilled 29
November taken in December never displaces 28 November as November's monthly). Buckets stay those of the partition
date, so a backfill keeps the dates it filled. A plan's rows (``Plan.as_rows``: what a dry run of prune prints) name
a late capture as such.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from functools import partial
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from erp_backup_pipeline.core import late
from erp_backup_pipeline.core.manifest import PARTITION_TIMEZONE

if TYPE_CHECKING:  # only annotations: planning needs no destination code
    from erp_backup_pipeline.core.catalog import Entry

ZONE = ZoneInfo(PARTITION_TIMEZONE)
# German retention duties (§147 (3) AO, GoBD), counted from the end of the calendar year of the record:
GOBD_BOOKS_YEARS = 10  # books, inventories, annual accounts (§147 (1) Nr. 1)
GOBD_VOUCHERS_YEARS = 8  # accounting vouchers, invoices (§147 (1) Nr. 4; 8 years since 2025, BEG IV)
_DURATION = re.compile(r"^\s*(\d+)\s*([hdw])\s*$")
_UNIT_SECONDS = {"h": 3600, "d": 86400, "w": 7 * 86400}


def _duration(value: Any) -> Any:
    """``7d``, ``12w``, ``36h`` or a number of days; anything else is left to pydantic (ISO 8601 ``P7D``)."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return timedelta(days=value)
    if isinstance(value, str) and (m := _DURATION.match(value)):
        return timedelta(seconds=int(m[1]) * _UNIT_SECONDS[m[2]])
    return value


def _human(span: timedelta) -> str:
    if span % timedelta(days=1) == timedelta(0):
        return f"{span.days} day{'s' if span.days != 1 else ''}"
    hours = span / timedelta(hours=1)
    return f"{hours:g} hour{'s' if hours != 1 else ''}"


class RetentionPolicy(BaseModel):
    """One source's retention. Counts are buckets that have a backup; 0 keeps none of that kind."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    keep_daily: int = Field(0, ge=0, description="newest backup of each of the N newest days that have one")
    keep_weekly: int = Field(0, ge=0, description="newest backup of each of the N newest ISO weeks that have one")
    keep_monthly: int = Field(0, ge=0, description="newest backup of each of the N newest months that have one")
    keep_yearly: int = Field(0, ge=0, description="newest backup of each of the N newest years that have one")
    keep_within: timedelta = Field(timedelta(0), description="keep every capture younger than this (7d, 12w, 36h, P7D)")
    long_term: dict[str, int] = Field(default_factory=dict, description="class name: years; the last backup of each "
                                      "calendar year is kept until that many years after the year's end (GoBD: "
                                      f"books {GOBD_BOOKS_YEARS}, vouchers {GOBD_VOUCHERS_YEARS})")
    cadence: timedelta = Field(timedelta(days=1), description="how often a backup is expected")
    grace: timedelta = Field(timedelta(days=1), description="how late it may be before retention holds")

    _durations = field_validator("keep_within", "cadence", "grace", mode="before")(_duration)

    @model_validator(mode="after")
    def _check(self) -> RetentionPolicy:
        if self.keep_within < timedelta(0) or self.grace < timedelta(0):
            raise ValueError("keep_within and grace must not be negative")
        if self.cadence <= timedelta(0):
            raise ValueError("cadence must be positive")
        bad = sorted(name for name, years in self.long_term.items() if not 1 <= years <= 100)
        if bad:
            raise ValueError(f"long_term years must be 1..100 ({', '.join(bad)})")
        return self

    def describe(self) -> str:
        parts = [f"{n} {kind}" for kind, n in (("daily", self.keep_daily), ("weekly", self.keep_weekly),
                                               ("monthly", self.keep_monthly), ("yearly", self.keep_yearly)) if n]
        parts += [f"{name} {years} years" for name, years in sorted(self.long_term.items())]
        if self.keep_within:
            parts.append(f"within {_human(self.keep_within)}")
        return ", ".join(parts) or "only the newest backup"


def __getattr__(name: str) -> Any:
    """``DEFAULT_POLICIES``: each source kind's default policy (``SourceKind.policy``, from the original strategy;
    ``keep_within`` is the age its ``find -mtime +N`` clean-up used, ``keep_daily`` counts as many days that have a
    backup, so gaps do not shorten the history)."""
    if name == "DEFAULT_POLICIES":
        from erp_backup_pipeline.core.sources import KINDS

        return {k.name: k.policy for k in KINDS.values()}
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def bucket(kind: str, day: date) -> str:
    """The bucket label of a partition date: day 2026-11-20, week 2026-W47, month 2026-11, year 2026."""
    if kind == "daily":
        return day.isoformat()
    if kind == "weekly":
        iso = day.isocalendar()
        return f"{iso.year}-W{iso.week:02d}"
    return f"{day.year}-{day.month:02d}" if kind == "monthly" else str(day.year)


def keep_ends(kind: str, day: date, count: int) -> date | None:
    """The first day a backup that a ``kind`` bucket keeps could leave it, were a backup taken every day from now on:
    its bucket's start plus ``count`` buckets. None for daily buckets (the upload's lock covers those)."""
    if kind == "weekly":
        return day - timedelta(days=day.weekday()) + timedelta(weeks=count)
    if kind == "monthly":
        months = day.year * 12 + day.month - 1 + count
        return date(months // 12, months % 12 + 1, 1)
    if kind == "yearly":
        return date(day.year + count, 1, 1)
    return None


@dataclass
class Plan:
    keep: list[tuple[Entry, str]] = field(default_factory=list)
    delete: list[tuple[Entry, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # per source: holds; dependencies no destination holds
    # kept as weekly/monthly/yearly/long-term: (entry, the end of that keep, which bucket); Object Lock follows it
    lock_until: list[tuple[Entry, datetime, str]] = field(default_factory=list)

    def as_rows(self) -> list[dict[str, str]]:
        rows = [_row(e, "keep", r) for e, r in self.keep] + [_row(e, "delete", r) for e, r in self.delete]
        return sorted(rows, key=lambda r: (r["source"], r["partition"], r["captured_at"]))


def _row(entry: Entry, action: str, reason: str) -> dict[str, str]:
    m = entry.manifest
    note = late.late_note(m)  # a live capture of a day that was over: it holds another day's data
    return {"source": m.source, "partition": m.partition, "captured_at": m.captured_at, "action": action,
            "reason": f"{reason}; {note}" if note else reason}


@dataclass
class _Item:
    entry: Entry
    day: date | None
    captured: datetime | None
    keep: list[str] = field(default_factory=list)  # every reason to keep it; none: deleted for `drop`
    drop: str = ""
    until: tuple[date, str] | None = None  # the latest end of a weekly/monthly/yearly/long-term keep, and which
    late: bool = False  # a late capture: it holds the data of a later day than its partition's

    def keep_until(self, end: date | None, why: str) -> None:
        if end is not None and (self.until is None or end > self.until[0]):
            self.until = (end, why)

    @property
    def verified(self) -> bool:
        return bool(self.entry.manifest.verify.get("ok"))

    @property
    def good(self) -> bool:
        return self.verified and bool(self.entry.manifest.complete)

    def order(self) -> tuple[date, datetime]:
        assert self.day is not None and self.captured is not None
        return self.day, self.captured

    def when(self) -> str:
        return f"{self.entry.manifest.partition}, captured {self.entry.manifest.captured_at}"


def _item(entry: Entry) -> _Item:
    m = entry.manifest
    item = _Item(entry, None, None)
    try:
        item.day = date.fromisoformat(m.partition)
    except (TypeError, ValueError):
        item.keep.append(f"partition {m.partition!r} is not a date: kept, never counted")
    try:
        captured = datetime.fromisoformat(m.captured_at)
        item.captured = captured if captured.tzinfo else captured.replace(tzinfo=UTC)
    except (TypeError, ValueError):
        item.keep.append(f"capture time {m.captured_at!r} is unreadable: kept, never counted")
    found = late.of(m)
    item.late = found is not None and found.late
    return item


def plan(entries: Iterable[Entry], policies: Mapping[str, RetentionPolicy], now: datetime) -> Plan:
    """Keep or delete every catalog entry, with a reason each. A source without a policy keeps everything."""
    if now.tzinfo is None:
        raise ValueError("now must carry a time zone")
    items = [_item(e) for e in entries]
    notes: list[str] = []
    sources: dict[str, list[_Item]] = {}
    for it in items:
        sources.setdefault(it.entry.manifest.source, []).append(it)
    for source, group in sorted(sources.items()):
        policy = policies.get(source)
        if policy is None:
            for it in group:
                it.keep.append(f"no retention policy for {source}: kept")
            continue
        counted = [it for it in group if it.day is not None and it.captured is not None]
        _select(counted, policy, now)
        _protect(source, counted, policy, now, notes)
    _keep_dependencies(items, notes)
    result = Plan(notes=notes)
    for it in items:
        if it.keep:
            result.keep.append((it.entry, "; ".join(it.keep)))
            if it.until is not None:
                end = datetime.combine(it.until[0], time(0), ZONE).astimezone(UTC)
                if end > now:
                    result.lock_until.append((it.entry, end, it.until[1]))
        else:
            result.delete.append((it.entry, it.drop))
    return result


def _select(items: list[_Item], policy: RetentionPolicy, now: datetime) -> None:
    """What the policy asks for: buckets over each partition's representative, and keep_within."""
    within = f"older than {_human(policy.keep_within)}" if policy.keep_within else "keep_within is 0"
    by_day: dict[date, list[_Item]] = {}
    for it in items:
        assert it.day is not None
        by_day.setdefault(it.day, []).append(it)
    reps: list[_Item] = []
    for day, captures in by_day.items():
        verified = [c for c in captures if c.verified]
        if not verified:
            for c in captures:
                c.keep.append("not verified: kept, never counted")
            continue
        rep = max(verified, key=lambda c: (c.good, not c.late, c.order()))  # its own day's data first
        reps.append(rep)
        rep.drop = f"in no bucket of the policy ({policy.describe()})"
        for c in captures:
            if c is not rep:
                c.drop = (f"another capture of {day} (the one captured {rep.entry.manifest.captured_at} "
                          f"represents it), {within}")
    reps.sort(key=lambda it: it.order(), reverse=True)
    for kind, count in (("daily", policy.keep_daily), ("weekly", policy.keep_weekly),
                        ("monthly", policy.keep_monthly), ("yearly", policy.keep_yearly)):
        for label, rep in list(_buckets(reps, partial(bucket, kind)).items())[:count]:
            assert rep.day is not None
            rep.keep.append(f"{kind} {label}")
            rep.keep_until(keep_ends(kind, rep.day, count), f"{kind} {label}")
    this_year = now.astimezone(ZONE).year
    for name, years in sorted(policy.long_term.items()):
        for year, rep in _buckets(reps, lambda day: day.year).items():
            if year + years >= this_year:
                rep.keep.append(f"{name} {year} (until {year + years}-12-31)")
                rep.keep_until(date(year + years + 1, 1, 1), f"{name} {year}")
    for it in items:
        assert it.captured is not None
        if it.captured > now:  # a clock ahead of the planner's: never counts as old
            it.keep.append("captured after the planning time")
        elif now - it.captured < policy.keep_within:
            it.keep.append(f"within {_human(policy.keep_within)}")


def _buckets(reps: list[_Item], label: Callable[[date], Any]) -> dict[Any, _Item]:
    """Newest bucket first (``reps`` newest first), each with the capture that keeps it: the newest holding its own
    date's data, a late capture only where the bucket has no other."""
    found: dict[Any, list[_Item]] = {}
    for rep in reps:
        assert rep.day is not None
        found.setdefault(label(rep.day), []).append(rep)
    return {key: next((r for r in members if not r.late), members[0]) for key, members in found.items()}


def _protect(source: str, items: list[_Item], policy: RetentionPolicy, now: datetime, notes: list[str]) -> None:
    """The invariants: the newest verified backups stay, and a failing or stopped source deletes nothing."""
    verified = [it for it in items if it.verified]
    if verified:
        newest = max(verified, key=_Item.order)
        newest.keep.insert(0, "newest verified backup")
        latest = max(verified, key=lambda it: it.order()[::-1])
        if latest is not newest:  # e.g. a backfill: the uploads state builds on the last committed capture
            latest.keep.insert(0, "most recently captured verified backup")
        for dest in sorted({d for it in verified for d in it.entry.held_by}):
            top = max((it for it in verified if dest in it.entry.held_by), key=_Item.order)
            if top is not newest:
                top.keep.insert(0, f"newest verified backup on {dest}")
    hold = _hold(items, policy, now)
    if hold:
        notes.append(f"{source}: retention held, nothing deleted: {hold}")
        for it in items:
            if not it.keep:
                it.keep.append(f"retention held: {hold} (otherwise: {it.drop})")


def _hold(items: list[_Item], policy: RetentionPolicy, now: datetime) -> str | None:
    """Why nothing of this source may be deleted now, or None."""
    if not items:
        return None
    last = max(items, key=lambda it: it.order()[::-1])
    if not last.verified:
        return (f"the newest capture ({last.when()}) is not verified; while the newest backups fail, "
                "the older ones are the last good copies")
    if not last.good:
        return (f"the newest capture ({last.when()}) is not on every required destination; while that lasts, "
                "older copies there may be the last ones")
    window = policy.cadence + policy.grace
    oldest_day = (now - window).astimezone(ZONE).date()
    fresh = [it for it in items if it.good and now - it.order()[1] <= window and it.order()[0] >= oldest_day]
    if fresh:
        return None
    newest = max((it for it in items if it.good), key=_Item.order)
    age = now - newest.order()[1]
    shown = _human(timedelta(days=age.days)) if age.days >= 2 else f"{age // timedelta(hours=1)} hours"
    return (f"the newest verified backup ({newest.when()}) is {shown} old, more than the expected "
            f"{_human(policy.cadence)} plus {_human(policy.grace)} grace: a stopped pipeline must not age its last "
            "copies away")


def _keep_dependencies(items: list[_Item], notes: list[str]) -> None:
    """Keep every artifact a kept entry depends on, and what those depend on."""
    by_key = {it.entry.manifest.artifact_key: i for i, it in enumerate(items)}
    kept = {i for i, it in enumerate(items) if it.keep}
    needed_by: dict[int, list[int]] = {}
    stack = sorted(kept)
    while stack:
        i = stack.pop()
        m = items[i].entry.manifest
        for key in sorted(set(m.facts.get("depends_on") or [])):
            j = by_key.get(key)
            if j is None:
                note = f"{m.source} {m.partition} depends on {key}, which no destination holds"
                if note not in notes:
                    notes.append(note)
                continue
            if j == i:
                continue
            users = needed_by.setdefault(j, [])
            if i not in users:  # i comes round again when its lock end grew
                users.append(i)
            before, theirs = items[j].until, items[i].until
            if theirs is not None:  # locked as long as what needs it
                items[j].keep_until(theirs[0], f"needed by {m.source} {m.partition} ({theirs[1]})")
            if j not in kept or items[j].until != before:
                kept.add(j)
                stack.append(j)
    for j, users in sorted(needed_by.items()):
        first = max(users, key=lambda i: (items[i].entry.manifest.partition, items[i].entry.manifest.captured_at))
        m = items[first].entry.manifest
        more = f" and {len(users) - 1} more" if len(users) > 1 else ""
        items[j].keep.append(f"needed by {m.source} {m.partition}{more}")
