"""``erp-backup pg setup``, ``restore postgres --target-time/--target-lsn/--latest``, ``backup --from-archive``.

Point-in-time recovery from the command line, over ``core.pitr``: setup writes pgBackRest's
configuration, prints the postgresql.conf lines, then runs ``stanza-create`` and ``check`` and says
what is missing; the restore prints its plan (backup set, WAL range, target) before it changes
anything, and ends with the started server's timeline (or the exact command to start it).
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

from erp_backup_pipeline.core.pitr import config, recover
from erp_backup_pipeline.core.pitr.engine import PgBackRest
from erp_backup_pipeline.core.site import Site
from erp_backup_pipeline.errors import BackupError, ConfigError, RestoreError


def _require_pitr(site: Site) -> None:
    if site.pitr is None:
        raise ConfigError("pitr is not configured: add a pitr section to the config file (docs/guide/pitr.md)")


def cmd_pg_setup(site: Site, as_json: bool = False) -> int:
    _require_pitr(site)
    out = sys.stderr if as_json else sys.stdout
    path = config.write(site)
    lines = config.postgresql_lines(site)
    print(f"wrote {path} (0600, owner {site.pgbackrest.os_user})", file=out)
    print("postgresql.conf needs (then restart PostgreSQL):", file=out)
    for line in lines:
        print(f"  {line}", file=out)
    print("for a standby or a recovery by hand (pgbackrest restore writes it by itself):", file=out)
    print(f"  {config.restore_command(site)}", file=out)
    engine = PgBackRest(site)
    try:
        engine.stanza_create()
        print(f"stanza {site.pgbackrest.stanza}: created (or already there)", file=out)
        engine.check()
    except BackupError as exc:
        raise BackupError(f"pg setup: {exc} (is postgresql.conf set as above and PostgreSQL restarted?)") from None
    print("check: the cluster archives into the repository: ok", file=out)
    if as_json:
        print(json.dumps({"config": str(path), "postgresql_conf": lines, "restore_command": config.restore_command(site),
                          "stanza": site.pgbackrest.stanza, "check": "ok"}, indent=2))
    return 0


def parse_target_time(text: str) -> datetime:
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        raise RestoreError(f"--target-time {text!r} is not a time such as '2026-11-25 10:30:00+01:00'") from None


def cmd_restore_pitr(site: Site, args: argparse.Namespace) -> int:
    _require_pitr(site)
    target_time = parse_target_time(args.target_time) if args.target_time else None
    plan = recover.plan_restore(site, Path(args.to), target_time=target_time, target_lsn=args.target_lsn)
    print("restore plan:")
    for i, step in enumerate(plan.steps, 1):
        print(f"  {i}. {step}")
    if args.dry_run:
        print("dry run: nothing changed")
        return 0
    result = recover.restore(site, plan, port=args.port, start=not args.no_start)
    if args.no_start:
        print(f"restored {plan.label} into {result['datadir']} in {result['restore_seconds']} s; start it with:\n"
              f"  {result['start']}  (as {site.pgbackrest.os_user})")
    else:
        print(f"restored {plan.label} into {result['datadir']} and started it on port {args.port} (socket dir "
              f"{result['datadir']}): recovery reached the target, promoted onto timeline {result['timeline']} "
              f"in {result['seconds']} s")
    return 0


def backfill(site: Site, day: str, progress: Any = None) -> Any:
    """``erp-backup backup postgres --partition D --from-archive``."""
    from erp_backup_pipeline.core.pitr.backfill import backfill_dump

    return backfill_dump(site, day, progress)


def add_restore_arguments(s: argparse.ArgumentParser) -> None:
    s.add_argument("--target-time", help="postgres point in time, e.g. '2026-11-25 10:30:00+01:00' (pgBackRest)")
    s.add_argument("--target-lsn", help="postgres: recover up to this LSN, e.g. 0/3000060 (pgBackRest)")
    s.add_argument("--latest", action="store_true", help="postgres: recover to the end of the archived WAL (pgBackRest)")
    s.add_argument("--port", type=int, default=5433, help="port of the restored cluster (point-in-time restores)")
    s.add_argument("--no-start", action="store_true", help="restore the data directory; print the start command")


def is_pitr(args: argparse.Namespace) -> bool:
    return bool(args.target_time or args.target_lsn or args.latest)
