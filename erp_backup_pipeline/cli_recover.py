"""``erp-backup recover`` and ``erp-backup list --sets``: the whole ERP back to one date, checked.

The plan comes first; then each store is restored with its time; then the consistency checks as a
table; the command fails (exit 1) on any mismatch and ends with how to point the ERP at the result
and how to stop the servers it started.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from erp_backup_pipeline.cli_args import partition_arg
from erp_backup_pipeline.core.recovery import backup_sets, plan_recovery, recover
from erp_backup_pipeline.core.runner import redact
from erp_backup_pipeline.core.site import Site


def print_sets(site: Site, as_json: bool = False) -> int:
    errors: list[str] = []
    sets = backup_sets(site, errors=errors)
    if as_json:
        print(json.dumps({"sets": [{"date": b.date, "complete": b.complete, "missing": b.missing,
                                    "captures": {source: e.id for source, e in sorted(b.entries.items())},
                                    "pg_target": b.pg_target.isoformat() if b.pg_target else None,
                                    **({"pitr_note": b.pitr_note} if b.pitr_note else {})} for b in sets],
                          "errors": [redact(e) for e in errors]}, indent=2))
        return 0
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
    out = sys.stderr if args.json else sys.stdout  # --json: the result alone on stdout

    def say(line: str) -> None:
        print(line, file=out, flush=True)

    plan = plan_recovery(site, args.date, Path(args.to))
    planned = {"date": plan.date, "root": str(plan.root), "plan": [step.what for step in plan.steps],
               "notes": plan.notes, "missing": plan.missing,
               "captures": {source: e.id for source, e in sorted(plan.entries.items())}}
    say(f"recovery plan for {plan.date} into {plan.root}:")
    for i, step in enumerate(plan.steps, 1):
        say(f"  {i}. {step.what}")
    for note in plan.notes:
        say(f"  ! {note}")
    if plan.missing:
        say(f"  ! no backup of {', '.join(plan.missing)} on {plan.date}: the set is incomplete")
    if args.dry_run:
        say("dry run: nothing changed")
        if args.json:
            print(json.dumps({"dry_run": True, **planned}, indent=2))
        return 0
    report = recover(site, plan, log=say)
    say(f"{'check':<44} {'ok':<4} detail")
    for check in report["checks"]:
        say(f"{check['check']:<44} {'yes' if check['ok'] else 'NO':<4} {check['detail']}")
    say("restore seconds: " + ", ".join(f"{s} {t}" for s, t in report["seconds"].items())
        + f"; total {report['total_seconds']} (the measured RTO); checks {report['check_seconds']}")
    say("point the ERP at it:")
    for line in report["use"]:
        say(f"  {line}")
    if report["stop"]:
        say("servers started by this recovery (stop them by PID when done):")
        for line in report["stop"]:
            say(f"  {line}")
    if args.json:
        print(json.dumps({"dry_run": False, **planned, **report}, indent=2, default=str))
    return 0


def cmd_runbook(site: Site, args: argparse.Namespace) -> int:
    from erp_backup_pipeline.core.runbook import render
    from erp_backup_pipeline.settings import config_path

    config = str(config_path(args.config))
    text = render(site, config)
    if args.output:
        Path(args.output).write_text(text + "\n")
    if args.json:  # what was made: the text itself only when it is not in a file
        print(json.dumps({"config": config, "output": args.output, "lines": text.count("\n") + 1,
                          "sources": site.enabled(), **({} if args.output else {"text": text})}, indent=2))
    elif args.output:
        print(f"runbook written to {args.output}")
    else:
        print(text)
    return 0


def add_parser(sub: Any, site_of: Any) -> None:
    r = sub.add_parser("runbook", help="the backup and restore procedure, generated from the configuration")
    r.add_argument("--output", "-o", help="write it to this file (default: print it)")
    r.add_argument("--json", action="store_true", help="what was made (config, output file, lines, sources; the text "
                                                       "itself without --output) as JSON on stdout")
    r.set_defaults(func=lambda a: cmd_runbook(site_of(a), a))

    s = sub.add_parser("recover", help="restore every store of one date into a new directory and check them together")
    s.add_argument("--date", required=True, type=lambda text: partition_arg(text, "--date"),
                   help="YYYY-MM-DD: the backup set (erp-backup list --sets)")
    s.add_argument("--to", required=True, help="a new directory (the PostgreSQL dump goes to a new database; a "
                                               "point-in-time PostgreSQL to DIR/postgres)")
    s.add_argument("--dry-run", action="store_true", help="print the plan, change nothing")
    s.add_argument("--json", action="store_true", help="the plan (with each store's capture ID) and, after the "
                                                       "recovery, the checks, seconds and how to use it as JSON on "
                                                       "stdout; the lines go to stderr")
    s.set_defaults(func=lambda a: cmd_recover(site_of(a), a))
