"""Late captures: a live capture of a partition whose day was already over holds the data of the moment it ran, not
of its date.

Owns what a capture's data is as of, derived from its manifest's ``partition``, ``captured_at`` and ``mode`` (no field
of its own: the manifest format is unchanged): a capture recovered from the point-in-time archive (``mode`` ``pitr:
recovered to <time> …``) holds the data of its recovery target and is never late; a live one holds the data of its
capture time, and is late when that is after its partition's day (Europe/Berlin). Owns too the lines that say so,
and the refusal of a late capture when the configuration says ``partitions.late_captures: refuse``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from erp_backup_pipeline.core.partitions import ZONE, day_end, is_over
from erp_backup_pipeline.errors import ConfigError

if TYPE_CHECKING:
    from erp_backup_pipeline.core.site import Site

_RECOVERED = re.compile(r"pitr: recovered to (\S+)")
REFUSE = "refuse"


@dataclass(frozen=True)
class AsOf:
    """What one capture's data is as of."""

    partition: str
    captured_at: datetime
    as_of: datetime  # the recovery target, or the capture time
    recovered: bool  # from the point-in-time archive

    @property
    def late(self) -> bool:
        return not self.recovered and self.captured_at >= day_end(self.partition)

    @property
    def iso(self) -> str:
        """``as_of`` in Europe/Berlin, to the second: what ``data_as_of`` shows."""
        return self.as_of.astimezone(ZONE).isoformat(timespec="seconds")

    @property
    def day(self) -> str:
        """The day (Europe/Berlin) whose data it holds: a recovery target is the end of a day, midnight after it."""
        moment = self.as_of - timedelta(microseconds=1) if self.recovered else self.as_of
        return moment.astimezone(ZONE).date().isoformat()

    def note(self) -> str:
        """``late capture: captured on D, holds the data of D, not of P`` (for a late capture)."""
        return (f"late capture: captured on {self.captured_at.astimezone(ZONE).date().isoformat()}, holds the data of "
                f"{self.day}, not of {self.partition}")


def of(manifest: Any) -> AsOf | None:
    """What a manifest's data is as of; None when its partition or times cannot be read (the catalog rejects such
    manifests; retention keeps them)."""
    try:
        day_end(manifest.partition)
        captured = datetime.fromisoformat(manifest.captured_at)
        if captured.tzinfo is None:
            return None
        found = _RECOVERED.match(manifest.mode or "")
        target = datetime.fromisoformat(found.group(1)) if found else None
    except (TypeError, ValueError, AttributeError):
        return None
    if target is not None and target.tzinfo is not None:
        return AsOf(manifest.partition, captured, target, True)
    return AsOf(manifest.partition, captured, captured, False)


def late_note(manifest: Any) -> str | None:
    """The ``late capture: …`` note of a late capture, else None."""
    found = of(manifest)
    return found.note() if found is not None and found.late else None


def start_line(partition: str, now: datetime | None = None) -> str:
    """What the run says when a live capture of a partition that is over begins."""
    moment = (now or datetime.now(UTC)).astimezone(ZONE)
    return (f"partition {partition} is over: this capture holds the data of now ({moment:%Y-%m-%d %H:%M} "
            f"{ZONE.key}), not of {partition}")


def check_allowed(site: Site, partition: str, now: datetime | None = None, why: str = "") -> None:
    """ConfigError, before anything is touched, when a live capture of ``partition`` now would be late and the
    configuration refuses late captures; ``why``: what else was tried (the archive did not reach the day)."""
    if site.partitions.late_captures != REFUSE or not is_over(partition, now):
        return
    moment = (now or datetime.now(UTC)).astimezone(ZONE)
    raise ConfigError(f"late captures are refused (partitions.late_captures: {REFUSE}): {partition} is over, and a "
                      f"capture now would hold the data of {moment.date().isoformat()}" + (f"; {why}" if why else "")
                      + "; nothing was backed up")
