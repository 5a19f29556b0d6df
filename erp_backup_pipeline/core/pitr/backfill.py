"""Scratch clusters from the WAL archive: backfilling a missed date of the PostgreSQL dump, and the restore drill.

Backfill: the data as it was at the end of that day.

A plain backfill of a past date dumps today's data under yesterday's name. When point-in-time
recovery covers the day, this restores a scratch cluster to the end of the day (midnight
Europe/Berlin: every transaction committed on that date), listening on loopback only, dumps it
through the normal pipeline (compress, verify, encrypt, ship, manifest) with the manifest's ``mode``
saying where the data came from, then stops the cluster and removes it. The scratch data directory
lives under ``pitr.work_dir`` (the PostgreSQL OS user's), never beside production. The drill restores
the latest state the same way and measures how long it takes.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from erp_backup_pipeline.core.manifest import PARTITION_TIMEZONE, Manifest
from erp_backup_pipeline.core.partitions import day_end
from erp_backup_pipeline.core.pipeline import run_backup
from erp_backup_pipeline.core.pitr import config, recover
from erp_backup_pipeline.core.runner import free_port
from erp_backup_pipeline.core.site import Site, takes_site
from erp_backup_pipeline.core.sources import postgres
from erp_backup_pipeline.core.streams import Progress
from erp_backup_pipeline.errors import ConfigError, RestoreError


def end_of_day(day: str) -> datetime:
    """Midnight after ``day`` in Europe/Berlin (DST-aware), as the recovery target."""
    return day_end(day)


@contextlib.contextmanager
def recovered(site: Site, day: str, now: datetime | None = None,
              target: datetime | None = None) -> Iterator[tuple[Site, str]]:
    """A scratch cluster recovered to the end of ``day`` (or to ``target``), listening on 127.0.0.1 only: yields the
    Site whose postgres source is that cluster, and the manifest ``mode`` that says where its data came from; stops
    and removes the cluster afterwards. OutsideArchive, before a cluster is made, when the archive does not reach
    the target."""
    if site.pitr is None:
        raise ConfigError("a point-in-time backfill needs the pitr section (pgBackRest) in the config file")
    pg = site.section(postgres.KIND.name)
    if pg is None:
        raise ConfigError("a point-in-time backfill dumps the postgres source: configure sources.postgres")
    target = target or end_of_day(day)
    if target > (now or datetime.now(UTC)):
        raise RestoreError(f"{day} is not over yet in {PARTITION_TIMEZONE}: back it up live instead")
    work = config.layout(site).work_dir
    base = Path(tempfile.mkdtemp(prefix=f"backfill-{day}-", dir=work))
    datadir = base / "data"
    try:
        base.chmod(0o755)
        plan = recover.plan_restore(site, datadir, target_time=target)
        port = free_port()
        recover.restore(site, plan, port, listen="127.0.0.1")
        scratch = site.with_source(postgres.KIND.name, pg.model_copy(
            update={"host": "127.0.0.1", "port": port, "sslmode": "disable"}))
        yield scratch, f"pitr: recovered to {target.isoformat()} from backup set {plan.label}"
    finally:
        if (datadir / "postmaster.pid").exists():
            recover.stop(site, datadir)
        shutil.rmtree(base, ignore_errors=True)


@takes_site
def backfill_dump(site: Site, day: str, progress: Progress | None = None, now: datetime | None = None,
                  target: datetime | None = None) -> Manifest:
    """The PostgreSQL dump of ``day`` from a scratch cluster recovered to the end of that day (or to ``target``,
    an explicit point in time)."""
    with recovered(site, day, now, target) as (scratch, mode):
        return run_backup(scratch, postgres.KIND.name, day, progress, mode=mode)


@takes_site
def drill(site: Site) -> dict[str, Any]:
    """The restore drill of the pgBackRest repository: restore the latest state into a scratch cluster under
    ``work_dir``, start it, wait for promotion, list its databases, stop and remove it. ``restore_seconds``
    (download, decrypt, decompress, WAL replay, promotion) is the measured RTO of point-in-time recovery."""
    if site.pitr is None:
        raise ConfigError("pitr is not configured (the pitr section of the config file)")
    work = config.layout(site).work_dir
    base = Path(tempfile.mkdtemp(prefix="drill-", dir=work))
    base.chmod(0o755)
    datadir = base / "data"
    try:
        plan = recover.plan_restore(site, datadir)
        port = free_port()
        result = recover.restore(site, plan, port)
        databases = recover.psql(site, datadir, port,
                                 "SELECT string_agg(datname, ',' ORDER BY datname) FROM pg_database "
                                 "WHERE NOT datistemplate").split(",")
        return {"label": plan.label, "timeline": result["timeline"], "restore_seconds": result["seconds"],
                "databases": len(databases), "wal_to": plan.wal_to}
    finally:
        if (datadir / "postmaster.pid").exists():
            recover.stop(site, datadir)
        shutil.rmtree(base, ignore_errors=True)
