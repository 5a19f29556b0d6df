"""Daily partitions: a partition key is a calendar day in Europe/Berlin.

Owns when a partition's day ends (and so whether it is over at a given moment), and the installation's first day:
``partitions.start`` from the configuration; else the day kept in ``<state_dir>/partitions_start``, decided the first
time it is asked for: the day this host made its first backup, read from its chain state (``<state_dir>/chain/``,
``core.chain``: a source's lock file is made by its first commit and never written again), or before any backup
``DEFAULT_FIRST_DAY``. Kept once decided, so that every process that loads the code location (the code server, each
run's worker) has the same partitions, before and after the first backup. Touches nothing but this host's state_dir:
never a destination.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Literal
from zoneinfo import ZoneInfo

from pydantic import Field, field_validator

from erp_backup_pipeline.core import statefile
from erp_backup_pipeline.core.config import Model
from erp_backup_pipeline.core.manifest import PARTITION_TIMEZONE, parse_partition

if TYPE_CHECKING:
    from erp_backup_pipeline.core.site import Site

ZONE = ZoneInfo(PARTITION_TIMEZONE)
DEFAULT_FIRST_DAY = date(2026, 1, 1)  # the partitions' first day before an installation had one of its own
START_FILE = "partitions_start"  # under state_dir: the first day, once decided


def day_end(partition: str) -> datetime:
    """Midnight after the partition's day in Europe/Berlin (DST-aware): every moment before it belongs to the day."""
    return datetime.combine(parse_partition(partition) + timedelta(days=1), time(0), tzinfo=ZONE)


def is_over(partition: str, now: datetime | None = None) -> bool:
    """The partition's day has ended (Europe/Berlin) at ``now``."""
    return (now or datetime.now(UTC)) >= day_end(partition)


def today(now: datetime | None = None) -> date:
    """The current partition's day."""
    return (now or datetime.now(UTC)).astimezone(ZONE).date()


def first_backup_day(state_dir: Path) -> date | None:
    """The day (Europe/Berlin) of this host's first backup: the oldest chain lock file, ``<state_dir>/chain/
    <source>.lock`` (made by ``core.chain.locked`` at a source's first commit, only locked afterwards); None before
    any backup, or when the directory cannot be read."""
    try:
        locks = list((Path(state_dir) / "chain").glob("*.lock"))
    except OSError:
        return None
    made: list[float] = []
    for lock in locks:
        try:
            made.append(lock.stat().st_mtime)
        except OSError:
            continue
    return datetime.fromtimestamp(min(made), ZONE).date() if made else None


def first_day(site: Site) -> date:
    """The installation's first partition: ``partitions.start``; else the day kept in ``<state_dir>/
    partitions_start``; else decided now and kept there (when state_dir can be written): the day of this host's first
    backup, or ``DEFAULT_FIRST_DAY`` before any."""
    start = site.partitions.start
    if start is not None:
        return start
    kept = site.state_dir / START_FILE
    try:
        return date.fromisoformat(kept.read_text().strip())
    except (OSError, ValueError):  # not decided yet (or unreadable: decided again)
        pass
    day = first_backup_day(site.state_dir) or DEFAULT_FIRST_DAY
    try:
        site.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        statefile.replace(kept, f"{day.isoformat()}\n".encode())
    except OSError:
        pass
    return day


class PartitionsSettings(Model):
    """The daily partitions (calendar days in Europe/Berlin): where the UI's dates begin, and whether a past date may
    be captured live."""

    start: date | None = Field(None, description="the first date the UI shows (erp-backup init writes the day it ran); "
                                                 "default: the day of this host's first backup, kept in state_dir")
    late_captures: Literal["allow", "refuse"] = Field(
        "allow", description="a live capture of a date that is over holds the data of the day it runs (late); refuse: "
                             "such a run fails before it touches anything")

    @field_validator("start")
    @classmethod
    def _not_in_the_future(cls, v: date | None) -> date | None:
        if v is not None and v > today():
            raise ValueError(f"{v.isoformat()} is in the future (today is {today().isoformat()} in Europe/Berlin)")
        return v
