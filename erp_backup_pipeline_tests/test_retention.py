"""The retention planner: GFS buckets, DST weeks, holds for stopped or failing pipelines, depends_on chains,
and property tests over simulated multi-year calendars with gaps and failures (pure: no servers)."""

from __future__ import annotations

import random
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from erp_backup_pipeline.core.catalog import Entry
from erp_backup_pipeline.core.manifest import Manifest
from erp_backup_pipeline.core.retention import (
    DEFAULT_POLICIES,
    GOBD_BOOKS_YEARS,
    Plan,
    RetentionPolicy,
    bucket,
    plan,
)

BERLIN = ZoneInfo("Europe/Berlin")


def at(day: date, hour: int = 2, minute: int = 0) -> datetime:
    """A Berlin wall-clock time as an aware datetime (UTC)."""
    return datetime.combine(day, time(hour, minute), BERLIN).astimezone(UTC)


def entry(source: str, partition: date | str, captured: datetime, ok: bool = True, complete: bool = True,
          depends_on: list[str] | None = None, held_by: tuple[str, ...] = ("local",)) -> Entry:
    part = partition if isinstance(partition, str) else partition.isoformat()
    stamp = captured.astimezone(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    manifest = Manifest(
        source=source, kind=source.split("_")[0], partition=part, captured_at=captured.isoformat(timespec="seconds"),
        finished_at=captured.isoformat(timespec="seconds"), artifact_key=f"erp/{source}/{part}/{stamp}.tar.zst.age",
        artifact_bytes=100, artifact_sha256="0" * 64, chain=[], verify={"ok": ok},
        facts={"depends_on": list(depends_on)} if depends_on is not None else {}, tools={}, destinations={},
        complete=complete)
    return Entry(manifest, list(held_by))


def nightly(source: str, first: date, last: date, hour: int = 2) -> list[Entry]:
    days = (last - first).days + 1
    return [entry(source, first + timedelta(d), at(first + timedelta(d), hour)) for d in range(days)]


def kept_parts(result: Plan) -> set[str]:
    return {e.manifest.partition for e, _ in result.keep}


def reasons(result: Plan) -> dict[str, str]:
    return {e.manifest.partition: r for e, r in result.keep + result.delete}


# ---------------------------------------------------------------- policy


def test_defaults_are_the_original_strategys_numbers() -> None:
    d = DEFAULT_POLICIES
    assert (d["sqlite_backup"].keep_daily, d["sqlite_backup"].keep_monthly) == (30, 12)
    assert d["sqlite_backup"].keep_within == timedelta(days=30)
    for source, days in (("postgres_dump", 7), ("redis_snapshot", 7), ("config_archive", 30), ("uploads_snapshot", 90)):
        assert (d[source].keep_daily, d[source].keep_within) == (days, timedelta(days=days))
        assert d[source].keep_weekly == d[source].keep_monthly == d[source].keep_yearly == 0


def test_policy_from_config_values() -> None:
    p = RetentionPolicy.model_validate({"keep_within": "7d", "keep_yearly": GOBD_BOOKS_YEARS,
                                        "long_term": {"gobd_vouchers": 8}, "grace": "36h"})
    assert (p.keep_within, p.grace, p.keep_yearly) == (timedelta(days=7), timedelta(hours=36), 10)
    assert RetentionPolicy.model_validate({"keep_within": 14}).keep_within == timedelta(days=14)
    assert RetentionPolicy.model_validate({"keep_within": "2w"}).keep_within == timedelta(weeks=2)
    assert RetentionPolicy.model_validate({"keep_within": "P7D"}).keep_within == timedelta(days=7)
    assert RetentionPolicy.model_validate({"keep_within": "7 days"}).keep_within == timedelta(days=7)
    for bad in ({"keep_daly": 3}, {"keep_daily": -1}, {"cadence": 0}, {"long_term": {"gobd": 0}}, {"keep_within": "a week"}):
        with pytest.raises(ValidationError):
            RetentionPolicy.model_validate(bad)


def test_now_must_be_aware() -> None:
    with pytest.raises(ValueError, match="time zone"):
        plan([], DEFAULT_POLICIES, datetime(2026, 11, 26, 12))


# ---------------------------------------------------------------- buckets


def test_gfs_keeps_30_daily_and_12_month_ends() -> None:
    entries = nightly("sqlite_backup", date(2024, 11, 1), date(2026, 11, 26))
    result = plan(entries, DEFAULT_POLICIES, at(date(2026, 11, 26), 12))
    daily = {(date(2026, 11, 26) - timedelta(d)).isoformat() for d in range(30)}
    month_ends = {"2026-10-31", "2026-09-30", "2026-08-31", "2026-07-31", "2026-06-30", "2026-05-31", "2026-04-30",
                  "2026-03-31", "2026-02-28", "2026-01-31", "2025-12-31"}  # + 2026-11 = 2026-11-26, a daily one
    assert kept_parts(result) == daily | month_ends
    assert len(result.delete) == len(entries) - len(daily | month_ends)
    why = reasons(result)
    assert why["2026-11-26"].startswith("newest verified backup; daily 2026-11-26; monthly 2026-11")
    assert why["2026-11-20"] == "daily 2026-11-20; within 30 days"
    assert why["2026-10-31"] == "daily 2026-10-31; monthly 2026-10; within 30 days"
    assert why["2026-09-30"] == "monthly 2026-09"
    assert why["2025-11-30"] == "in no bucket of the policy (30 daily, 12 monthly, within 30 days)"
    assert not result.notes
    rows = result.as_rows()
    assert rows[0] == {"source": "sqlite_backup", "partition": "2024-11-01", "captured_at": entries[0].manifest.captured_at,
                       "action": "delete", "reason": why["2024-11-01"]}
    assert [r["partition"] for r in rows] == sorted(r["partition"] for r in rows)


def test_gaps_do_not_shorten_the_daily_history() -> None:
    entries = [e for e in nightly("postgres_dump", date(2026, 10, 1), date(2026, 11, 26))
               if not date(2026, 11, 18) <= date.fromisoformat(e.manifest.partition) <= date(2026, 11, 23)]
    result = plan(entries, DEFAULT_POLICIES, at(date(2026, 11, 26), 12))
    assert kept_parts(result) == {"2026-11-26", "2026-11-25", "2026-11-24", "2026-11-17", "2026-11-16", "2026-11-15",
                                  "2026-11-14"}


@pytest.mark.parametrize("switch", [date(2026, 3, 29), date(2026, 10, 25)])  # last Sundays of March / October
def test_dst_weeks_follow_the_berlin_partition_date(switch: date) -> None:
    # captured at 00:30 Berlin: in UTC the previous evening, so a UTC-based week would put Monday's
    # backup into the Sunday's week and pick it as that week's newest
    entries = [entry("redis_snapshot", d, at(d, 0, 30)) for d in
               (switch + timedelta(n) for n in range(-14, 8))]
    assert entries[14].manifest.partition == switch.isoformat()
    assert at(switch + timedelta(1), 0, 30).date() == switch  # the Monday's capture, in UTC, is still Sunday
    policy = RetentionPolicy(keep_weekly=3)
    result = plan(entries, {"redis_snapshot": policy}, at(switch + timedelta(7), 12))
    week = bucket("weekly", switch)
    assert kept_parts(result) == {(switch + timedelta(n)).isoformat() for n in (-7, 0, 7)}
    assert reasons(result)[switch.isoformat()] == f"weekly {week}"
    assert reasons(result)[(switch + timedelta(1)).isoformat()].startswith("in no bucket")


def test_month_and_year_buckets_at_midnight_in_berlin() -> None:
    # 2026-01-01 00:15 Berlin is 2025-12-31 23:15 UTC: it belongs to January and to 2026
    days = [date(2025, 12, 30), date(2025, 12, 31), date(2026, 1, 1), date(2026, 1, 2)]
    entries = [entry("config_archive", d, at(d, 0, 15)) for d in days]
    policy = RetentionPolicy(keep_monthly=2, keep_yearly=2)
    result = plan(entries, {"config_archive": policy}, at(date(2026, 1, 2), 12))
    why = reasons(result)
    assert why["2025-12-31"] == "monthly 2025-12; yearly 2025"
    assert "monthly 2026-01" in why["2026-01-02"] and "yearly 2026" in why["2026-01-02"]
    assert {e.manifest.partition for e, _ in result.delete} == {"2025-12-30", "2026-01-01"}


def test_gobd_long_term_class_keeps_each_year_end_for_ten_years_after_it() -> None:
    entries = [entry("postgres_dump", d, at(d)) for y in range(2012, 2027) for d in (date(y, 6, 30), date(y, 12, 31))
               if d <= date(2026, 11, 26)] + [entry("postgres_dump", date(2026, 11, 26), at(date(2026, 11, 26)))]
    policy = RetentionPolicy(long_term={"gobd_books": GOBD_BOOKS_YEARS})
    result = plan(entries, {"postgres_dump": policy}, at(date(2026, 11, 26), 12))
    # 2016's records are due until the end of 2026; 2026 itself is represented by its newest backup
    assert kept_parts(result) == {f"{y}-12-31" for y in range(2016, 2026)} | {"2026-11-26"}
    assert reasons(result)["2016-12-31"] == "gobd_books 2016 (until 2026-12-31)"
    assert reasons(result)["2015-12-31"].startswith("in no bucket of the policy (gobd_books 10 years)")


# ---------------------------------------------------------------- holds


def test_ninety_days_without_backups_keeps_every_copy() -> None:
    first, last = date(2026, 1, 1), date(2026, 5, 31)
    entries: list[Entry] = []
    for n in range((last - first).days + 1):
        d = first + timedelta(n)
        deps = [entries[0].manifest.artifact_key] if entries else []
        entries.append(entry("uploads_snapshot", d, at(d, 5), depends_on=deps))
    while_running = plan(entries, DEFAULT_POLICIES, at(last, 12))
    assert while_running.delete  # the policy would delete the oldest days while backups run ...
    for now in (at(last + timedelta(91), 12), at(last + timedelta(365), 12), at(last + timedelta(3), 12)):
        stopped = plan(entries, DEFAULT_POLICIES, now)  # ... but not once they stop: not one copy goes
        assert stopped.delete == []
        assert len(stopped.keep) == len(entries)
        assert "a stopped pipeline must not age its last copies away" in stopped.notes[0]
        assert "retention held" in reasons(stopped)["2026-01-02"]


def test_failing_newest_capture_deletes_nothing() -> None:
    entries = nightly("postgres_dump", date(2026, 9, 1), date(2026, 11, 24))
    entries.append(entry("postgres_dump", date(2026, 11, 25), at(date(2026, 11, 25)), ok=False))
    result = plan(entries, DEFAULT_POLICIES, at(date(2026, 11, 25), 12))
    assert result.delete == []
    assert "is not verified" in result.notes[0]
    assert reasons(result)["2026-11-25"] == "not verified: kept, never counted; within 7 days"
    assert reasons(result)["2026-11-24"].startswith("newest verified backup")
    # recovered: the next good capture lifts the hold; the failed one is kept but never counted
    entries.append(entry("postgres_dump", date(2026, 11, 26), at(date(2026, 11, 26))))
    result = plan(entries, DEFAULT_POLICIES, at(date(2026, 11, 26), 12))
    assert kept_parts(result) == {f"2026-11-{d}" for d in range(19, 27)}
    assert reasons(result)["2026-11-25"] == "not verified: kept, never counted; within 7 days"


def test_incomplete_newest_capture_deletes_nothing() -> None:
    entries = nightly("redis_snapshot", date(2026, 9, 1), date(2026, 11, 24), hour=3)
    entries.append(entry("redis_snapshot", date(2026, 11, 25), at(date(2026, 11, 25), 3), complete=False))
    result = plan(entries, DEFAULT_POLICIES, at(date(2026, 11, 25), 12))
    assert result.delete == [] and "not on every required destination" in result.notes[0]


def test_depends_on_chains_are_kept() -> None:
    entries = nightly("uploads_snapshot", date(2026, 1, 1), date(2026, 11, 26), hour=5)
    by_part = {e.manifest.partition: e for e in entries}
    first, mid, newest = by_part["2026-01-01"], by_part["2026-06-15"], by_part["2026-11-26"]
    mid.manifest.facts["depends_on"] = [first.manifest.artifact_key]
    newest.manifest.facts["depends_on"] = [mid.manifest.artifact_key, "erp/uploads_snapshot/gone.tar.zst.age"]
    policy = RetentionPolicy(keep_daily=3)
    result = plan(entries, {"uploads_snapshot": policy}, at(date(2026, 11, 26), 12))
    assert kept_parts(result) == {"2026-11-26", "2026-11-25", "2026-11-24", "2026-06-15", "2026-01-01"}
    assert reasons(result)["2026-06-15"] == "needed by uploads_snapshot 2026-11-26"
    assert reasons(result)["2026-01-01"] == "needed by uploads_snapshot 2026-06-15"
    assert result.notes == ["uploads_snapshot 2026-11-26 depends on erp/uploads_snapshot/gone.tar.zst.age, "
                            "which no destination holds"]


def test_other_captures_of_a_partition_go_once_older_than_keep_within() -> None:
    d = date(2026, 11, 10)
    entries = [entry("config_archive", d, at(d, 4)), entry("config_archive", d, at(d, 9), ok=False),
               entry("config_archive", d, at(d, 11)), *nightly("config_archive", date(2026, 11, 11), date(2026, 11, 20), 4)]
    policy = RetentionPolicy(keep_daily=11, keep_within=timedelta(days=7))
    soon = plan(entries, {"config_archive": policy}, at(date(2026, 11, 12), 12))
    assert soon.delete == []
    later = plan(entries, {"config_archive": policy}, at(date(2026, 11, 20), 12))
    assert [e.manifest.captured_at for e, _ in later.delete] == [entries[0].manifest.captured_at,
                                                                 entries[1].manifest.captured_at]
    assert later.delete[0][1] == (f"another capture of 2026-11-10 (the one captured {entries[2].manifest.captured_at} "
                                  "represents it), older than 7 days")
    assert dict((e.manifest.captured_at, r) for e, r in later.keep)[entries[2].manifest.captured_at] == "daily 2026-11-10"


def test_newest_per_destination_and_most_recent_capture_are_kept() -> None:
    entries = nightly("sqlite_backup", date(2026, 10, 1), date(2026, 11, 26))
    for e in entries[:5]:  # the optional off-site destination stopped receiving after 2026-10-05
        e.held_by.append("offsite")
    backfill = entry("sqlite_backup", date(2026, 3, 3), at(date(2026, 11, 26), 9))
    policy = RetentionPolicy(keep_daily=2)
    result = plan([*entries, backfill], {"sqlite_backup": policy}, at(date(2026, 11, 26), 12))
    assert kept_parts(result) == {"2026-11-26", "2026-11-25", "2026-10-05", "2026-03-03"}
    assert reasons(result)["2026-10-05"] == "newest verified backup on offsite"
    assert reasons(result)["2026-03-03"] == "most recently captured verified backup"


def test_sources_without_policy_and_odd_entries_are_kept() -> None:
    entries = [entry("postgres_dump", date(2020, 1, 1), at(date(2020, 1, 1))),
               entry("sqlite_backup", "not-a-date", at(date(2020, 1, 1))),
               entry("sqlite_backup", date(2026, 11, 26), at(date(2026, 11, 26)))]
    result = plan(entries, {"sqlite_backup": RetentionPolicy()}, at(date(2026, 11, 26), 12))
    assert result.delete == []
    assert reasons(result)["2020-01-01"] == "no retention policy for postgres_dump: kept"
    assert reasons(result)["not-a-date"] == "partition 'not-a-date' is not a date: kept, never counted"


# ---------------------------------------------------------------- properties

SOURCES = ("uploads_snapshot", "postgres_dump")


def simulate(seed: int, years: int, gap_rate: float, fail_rate: float) -> list[Entry]:
    """Nightly captures over several years with random gaps (days to months), failures, incomplete and
    repeated captures, captures at any hour (DST nights included), and uploads' depends_on chains."""
    rng = random.Random(seed)
    entries: list[Entry] = []
    start = date(2021, 1, 1) + timedelta(rng.randrange(700))
    for source in SOURCES:
        holders: list[str] = []
        day, end = start, start + timedelta(days=365 * years)
        while day < end:
            if rng.random() < gap_rate:
                day += timedelta(days=rng.choice((1, 2, 5, 30, 95, 200)))
                continue
            for _ in range(1 + (rng.random() < 0.1)):
                captured = at(day, rng.randrange(24), rng.randrange(60)) + timedelta(seconds=rng.randrange(60))
                deps = None
                if source == "uploads_snapshot":
                    deps = [k for k in holders if rng.random() < 0.7] + (["erp/gone"] if rng.random() < 0.01 else [])
                ok = rng.random() >= fail_rate
                e = entry(source, day, captured, ok=ok, complete=rng.random() < 0.97, depends_on=deps,
                          held_by=("local", "offsite") if rng.random() < 0.9 else ("local",))
                entries.append(e)
                if ok and source == "uploads_snapshot":
                    holders = sorted({*(deps or []), e.manifest.artifact_key} - {"erp/gone"})
            day += timedelta(days=1)
    return sorted(entries, key=lambda e: (e.manifest.source, e.manifest.partition, e.manifest.captured_at))


durations = st.one_of(st.just(timedelta(0)), st.integers(1, 120).map(lambda d: timedelta(days=d)),
                      st.integers(1, 72).map(lambda h: timedelta(hours=h)))
policies = st.builds(RetentionPolicy, keep_daily=st.integers(0, 40), keep_weekly=st.integers(0, 20),
                     keep_monthly=st.integers(0, 24), keep_yearly=st.integers(0, 5), keep_within=durations,
                     long_term=st.dictionaries(st.sampled_from(["gobd_books", "gobd_vouchers"]), st.integers(1, 10)),
                     grace=st.integers(0, 5).map(lambda d: timedelta(days=d)))
calendars = st.builds(simulate, seed=st.integers(0, 2**32), years=st.integers(1, 4),
                      gap_rate=st.sampled_from([0.0, 0.02, 0.1]), fail_rate=st.sampled_from([0.0, 0.05, 0.3]))


def when(e: Entry) -> datetime:
    return datetime.fromisoformat(e.manifest.captured_at)


def held(group: list[Entry], policy: RetentionPolicy, now: datetime) -> bool:
    """Independently: is this source failing (newest capture bad) or stale (no recent good backup)?"""
    last = max(group, key=lambda e: (when(e), e.manifest.partition))
    if not (last.manifest.verify.get("ok") and last.manifest.complete):
        return True
    window = policy.cadence + policy.grace
    return not any(e.manifest.verify.get("ok") and e.manifest.complete and now - when(e) <= window
                   and date.fromisoformat(e.manifest.partition) >= (now - window).astimezone(BERLIN).date()
                   for e in group)


@settings(max_examples=60, deadline=None)
@given(calendar=calendars, policy_a=policies, policy_b=policies,
       days_after=st.one_of(st.integers(-400, 1), st.integers(-400, 400)),  # mostly while backups run
       hour=st.integers(0, 23))
def test_invariants_hold_on_simulated_calendars(calendar: list[Entry], policy_a: RetentionPolicy,
                                                policy_b: RetentionPolicy, days_after: int, hour: int) -> None:
    pols = dict(zip(SOURCES, (policy_a, policy_b), strict=True))
    last = max(when(e) for e in calendar)
    now = at(last.astimezone(BERLIN).date() + timedelta(days_after), hour)
    catalog = [e for e in calendar if when(e) <= now] or calendar[:1]  # the catalog at `now`
    result = plan(catalog, pols, now)
    kept = {id(e) for e, _ in result.keep}
    deleted = {id(e) for e, _ in result.delete}
    assert len(kept) + len(deleted) == len(catalog) and not kept & deleted
    assert all(reason for _, reason in result.keep + result.delete)
    by_key = {e.manifest.artifact_key: e for e in catalog}
    for source in SOURCES:
        group = [e for e in catalog if e.manifest.source == source]
        if not group:
            continue
        policy = pols[source]
        verified = [e for e in group if e.manifest.verify.get("ok")]
        if verified:  # (a) the newest verified backup, by partition and by capture time, stays
            assert id(max(verified, key=lambda e: (e.manifest.partition, when(e)))) in kept
            assert id(max(verified, key=when)) in kept
        if held(group, policy, now):  # (b) a failing or stopped source deletes nothing
            assert not any(id(e) in deleted for e in group)
        for e, reason in result.delete:
            if e.manifest.source == source:  # (e) nothing younger than keep_within goes
                assert now - when(e) >= policy.keep_within, reason
        # GFS: at most N buckets of a kind, each labelled with its partition's Berlin bucket (d)
        for kind, count in (("daily", policy.keep_daily), ("weekly", policy.keep_weekly),
                            ("monthly", policy.keep_monthly), ("yearly", policy.keep_yearly)):
            labels = [part.split(" ")[1] for e, r in result.keep if e.manifest.source == source
                      for part in r.split("; ") if part.startswith(kind + " ")
                      if bucket(kind, date.fromisoformat(e.manifest.partition)) == part.split(" ")[1]]
            all_labels = [part for e, r in result.keep if e.manifest.source == source
                          for part in r.split("; ") if part.startswith(kind + " ")]
            assert len(labels) == len(all_labels) == len(set(labels)) <= count
            buckets = {bucket(kind, date.fromisoformat(e.manifest.partition)) for e in verified}
            assert len(labels) == min(count, len(buckets))
        for e, r in result.keep:  # a bucket holds its partition's newest verified capture (complete first)
            if e.manifest.source == source and any(r.startswith(k) or f"; {k}" in r for k in ("daily ", "weekly ",
                                                                                         "monthly ", "yearly ")):
                same = [c for c in verified if c.manifest.partition == e.manifest.partition]
                assert e is max(same, key=lambda c: (c.manifest.complete, when(c)))
    for e, _ in result.keep:  # (c) what a kept entry depends on stays
        for key in e.manifest.facts.get("depends_on") or []:
            if key in by_key:
                assert id(by_key[key]) in kept


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32), policy=policies, shift_seed=st.integers(0, 2**32))
def test_buckets_do_not_move_with_the_time_of_day(seed: int, policy: RetentionPolicy, shift_seed: int) -> None:
    """(d) Every capture moved to another time of the same Berlin day (across midnight UTC and DST
    switches): the same partitions fill the same buckets."""
    rng = random.Random(seed)
    days = sorted({date(2023, 1, 1) + timedelta(rng.randrange(1100)) for _ in range(300)})
    shift = random.Random(shift_seed)

    def gfs(result: Plan) -> dict[str, list[str]]:
        return {e.manifest.partition: [p for p in r.split("; ") if p.split(" ")[0] in
                                       ("daily", "weekly", "monthly", "yearly", *policy.long_term)]
                for e, r in result.keep + result.delete}

    now = at(date(2026, 3, 1), 12)
    early = plan([entry("sqlite_backup", d, at(d, 0, 1)) for d in days], {"sqlite_backup": policy}, now)
    moved = plan([entry("sqlite_backup", d, at(d, shift.randrange(24), 59)) for d in days],
                 {"sqlite_backup": policy}, now)
    assert gfs(early) == gfs(moved)
