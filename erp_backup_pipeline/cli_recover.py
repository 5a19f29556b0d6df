"""``erp-backup recover`` and ``erp-backup list --sets``: the whole ERP back to one date, checked.

The plan comes first; then each store is restored with its time; then the consistency checks as a
table; the command fails (exit 1) on any mismatch and ends with how to point the ERP at the result
and how to stop the servers it started.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from erp_backup_pipeline.cli_args import partition_arg
from erp_backup_pipeline.core.recovery import backup_sets, plan_recovery, recover
from erp_backup_pipeline.core.site import Site


def print_sets(site: Site) -> int:
    errors: list[str] = []
    sets = backup_sets(site, errors=errors)
    print(f"{'date':<11} {'complete':<9} stores")
    for bset in sets:
        stores = ", ".join(sorted(bset.entries))
        missing = f" (missing: {', '.join(bset.missing)})" if bset.missing else ""
        print(f"{bset.date:<11} {'yes' if bset.complete else 'NO':<9} {stores}{missing}")
        if bset.pg_target is not None:
            print(f"{'':<21} PostgreSQL point-in-time target {bset.pg_target.isoformat()}")
        elif bset.pitr_note:
            print(f"{'':<21} no PostgreSQL point in time: {bset.pitr_note}")
    for problem in errors:
        print(f"! {problem}")
    return 0


def cmd_recover(site: Site, args: argparse.Namespace) -> int:
    plan = plan_recovery(site, args.date, Path(args.to))
    print(f"recovery plan for {plan.date} into {plan.root}:")
    for i, step in enumerate(plan.steps, 1):
        print(f"  {i}. {step.what}")
    for note in plan.notes:
        print(f"  ! {note}")
    if plan.missing:
        print(f"  ! no backup of {', '.join(plan.missing)} on {plan.date}: the set is incomplete")
    if args.dry_run:
        print("dry run: nothing changed")
        return 0
    report = recover(site, plan, log=print)
    print(f"{'check':<44} {'ok':<4} detail")
    for check in report["checks"]:
        print(f"{check['check']:<44} {'yes' if check['ok'] else 'NO':<4} {check['detail']}")
    print("restore seconds: " + ", ".join(f"{s} {t}" for s, t in report["seconds"].items())
          + f"; total {report['total_seconds']} (the measured RTO); checks {report['check_seconds']}")
    print("point the ERP at it:")
    for line in report["use"]:
        print(f"  {line}")
    if report["stop"]:
        print("servers started by this recovery (stop them by PID when done):")
        for line in report["stop"]:
            print(f"  {line}")
    return 0


def cmd_runbook(site: Site, args: argparse.Namespace) -> int:
    from erp_backup_pipeline.core.runbook import render
    from erp_backup_pipeline.settings import config_path

    text = render(site, str(config_path(args.config)))
    if args.output:
        Path(args.output).write_text(text + "\n")
        print(f"runbook written to {args.output}")
    else:
        print(text)
    return 0


def add_parser(sub: Any, site_of: Any) -> None:
    r = sub.add_parser("runbook", help="the backup and restore procedure, generated from the configuration")
    r.add_argument("--output", "-o", help="write it to this file (default: print it)")
    r.set_defaults(func=lambda a: cmd_runbook(site_of(a), a))

    s = sub.add_parser("recover", help="restore every store of one date into a new directory and check them together")
    s.add_argument("--date", required=True, type=lambda text: partition_arg(text, "--date"),
                   help="YYYY-MM-DD: the backup set (erp-backup list --sets)")
    s.add_argument("--to", required=True, help="a new directory (the PostgreSQL dump goes to a new database; a "
                                               "point-in-time PostgreSQL to DIR/postgres)")
    s.add_argument("--dry-run", action="store_true", help="print the plan, change nothing")
    s.set_defaults(func=lambda a: cmd_recover(site_of(a), a))
