"""What the command line accepts for the values many commands share (partitions), as one line and exit status 2."""

from __future__ import annotations

from datetime import timedelta

from erp_backup_pipeline.core.manifest import parse_partition
from erp_backup_pipeline.core.partitions import today
from erp_backup_pipeline.errors import UsageError


def partition_arg(text: str, what: str = "--partition") -> str:
    """A partition the user typed: a real date, YYYY-MM-DD, not later than the next partition (tomorrow, Berlin)."""
    try:
        day = parse_partition(text)
    except ValueError:
        raise UsageError(f"{what} {text!r} is not a date: write it YYYY-MM-DD, for example 2026-11-25") from None
    current = today()
    if day > current + timedelta(days=1):
        raise UsageError(f"{what} {text} is in the future: the newest partition is {current.isoformat()}")
    return text
