"""How a backup of one daily partition begins, by the day it is for (Europe/Berlin):

- a day not yet over: a live capture, as always (the dump stage);
- a day that is over, for the PostgreSQL dump with point-in-time recovery on: that day recovered from the pgBackRest
  archive into a scratch cluster (``core.pitr.backfill``), dumped and compressed while the cluster runs; its data is
  as of midnight after the day, its manifest's ``mode`` says so, and it is not late;
- any other day that is over, or one the archive does not reach: a late live capture, which holds the data of now,
  said in the log; refused in one line before anything is touched when ``partitions.late_captures`` is ``refuse``
  (``core.late``).

The Dagster asset's first op calls ``begin``; what it returns has passed the dump stage, and the compress stage
too when it came from the archive (``compressed``).
"""

from __future__ import annotations

from datetime import UTC, datetime

from erp_backup_pipeline.core import late, pipeline
from erp_backup_pipeline.core.partitions import is_over
from erp_backup_pipeline.core.pitr.backfill import recovered
from erp_backup_pipeline.core.site import Site, takes_site
from erp_backup_pipeline.core.sources import postgres
from erp_backup_pipeline.core.streams import Progress
from erp_backup_pipeline.errors import OutsideArchive

ARCHIVED_SOURCE = postgres.KIND.name  # the one source the pgBackRest archive can recover a past day of


def _say(progress: Progress | None, text: str) -> None:
    if progress is not None:
        progress(text, 0, None, 0.0)


def compressed(capture: pipeline.Capture) -> bool:
    """The capture has passed the compress stage (one recovered from the archive does so inside ``begin``)."""
    return bool(capture.chain)


@takes_site
def begin(site: Site, source: str, partition: str, progress: Progress | None = None,
          now: datetime | None = None) -> pipeline.Capture:
    """The capture of ``source`` for ``partition`` after its dump stage: live, or recovered from the archive."""
    now = now or datetime.now(UTC)
    if is_over(partition, now):
        why = ""
        if source == ARCHIVED_SOURCE and site.pitr is not None:
            try:
                return _from_archive(site, partition, progress, now)
            except OutsideArchive as exc:
                why = f"the pgBackRest archive does not reach it ({exc})"
        late.check_allowed(site, partition, now, why)
        if why:
            _say(progress, f"{source} {partition}: {why}: capturing live instead")
        _say(progress, late.start_line(partition, now))
    return pipeline.stage_dump(site, pipeline.new_capture(site, source, partition), progress)


def _from_archive(site: Site, partition: str, progress: Progress | None, now: datetime) -> pipeline.Capture:
    _say(progress, f"{ARCHIVED_SOURCE} {partition}: the day is over; recovering it from the pgBackRest archive")
    with recovered(site, partition, now) as (scratch, mode):
        _say(progress, f"{ARCHIVED_SOURCE} {partition}: {mode}")
        capture = pipeline.new_capture(site, ARCHIVED_SOURCE, partition, mode=mode)
        capture = pipeline.stage_dump(scratch, capture, progress)
        return pipeline.stage_compress(scratch, capture, progress)
