"""Size anomaly: a backup much smaller than the recent ones is the classic silent failure.

A pure function over sizes, and the history the catalog gives for a source: the newest capture of
each of the previous partitions (verified ones only), oldest first.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable
from typing import Any

from erp_backup_pipeline.core.catalog import Entry

WINDOW = 7


def recent_median(history: list[int]) -> float | None:
    return statistics.median(history[-WINDOW:]) if history else None


def size_anomaly(current: int, history: list[int], ratio: float = 0.5) -> str | None:
    """Why ``current`` looks wrong next to ``history`` (raw dump bytes), or None when it looks fine."""
    if current <= 0:
        return "the backup is empty"
    median = recent_median(history)
    if median is None:
        return None
    if current < ratio * median:
        return (f"{current} bytes is less than {ratio:g} x the median of the previous {min(len(history), WINDOW)} "
                f"backup(s) ({median:.0f} bytes)")
    return None


def measured_size(manifest: Any) -> int:
    """What a backup holds: the files' bytes for file trees (an incremental artifact is small by design),
    else the raw dump's bytes."""
    files_bytes = manifest.facts.get("bytes")
    return int(files_bytes) if isinstance(files_bytes, int) else int(manifest.stage("dump")["bytes"])


def history(entries: Iterable[Entry], source: str, before_partition: str) -> list[int]:
    """Sizes of the newest verified capture of each partition before ``before_partition``, oldest first."""
    newest: dict[str, Any] = {}
    for e in entries:
        m = e.manifest
        if m.source == source and m.partition < before_partition and m.verify.get("ok"):
            if m.partition not in newest or m.captured_at > newest[m.partition].captured_at:
                newest[m.partition] = m
    return [measured_size(newest[p]) for p in sorted(newest)]
