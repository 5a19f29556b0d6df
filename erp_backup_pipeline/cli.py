"""``erp-backup``: the command line, a thin layer over the core.

Commands: init, keygen, backup, list, verify, drill, restore, prune, recover (cli_recover), pg setup (cli_pitr),
metrics. Errors are one line on stderr and a non-zero exit; secrets are redacted from everything printed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn

from rich.console import Console

from erp_backup_pipeline import cli_address, cli_pitr, cli_recover
from erp_backup_pipeline.cli_args import partition_arg
from erp_backup_pipeline.core import catalog, chain, late
from erp_backup_pipeline.core import check as repo_check
from erp_backup_pipeline.core.codecs.age import generate_identity
from erp_backup_pipeline.core.drill import restore_drill
from erp_backup_pipeline.core.partitions import is_over, today
from erp_backup_pipeline.core.pipeline import run_backup
from erp_backup_pipeline.core.prune import prune
from erp_backup_pipeline.core.restore import list_files, restore_backup, restore_plan, verify_backup
from erp_backup_pipeline.core.runner import redact, register_secrets
from erp_backup_pipeline.core.site import Site, build_site
from erp_backup_pipeline.core.sources import BY_KEY, KINDS, kind_of, postgres
from erp_backup_pipeline.core.sources.redis import target_with_password
from erp_backup_pipeline.core.streams import human_bytes, progress_text
from erp_backup_pipeline.errors import (
    DESTINATION,
    EXIT_STATUSES,
    FAILURE,
    INTERRUPTED,
    ArtifactNotFound,
    BackupError,
    ConfigError,
    DestinationError,
    ExitStatus,
    UsageError,
    VerifyError,
)
from erp_backup_pipeline.settings import load_settings, read_secret_file


def _source_name(text: str) -> str:
    return kind_of(text).name


def _site(args: argparse.Namespace) -> Site:
    """The configuration of ``--config``, built; its secrets are redacted from every line printed from now on."""
    settings = load_settings(args.config)
    register_secrets(settings.secrets())
    return build_site(settings)


def _progress(stage: str, done: int, total: int | None, seconds: float) -> None:
    """Plain progress lines on stderr (every 5 s), for logs and pipes."""
    print(redact(progress_text(stage, done, total, seconds)), file=sys.stderr, flush=True)


class _Bar:
    """A live progress bar per stage on a terminal (rich); messages print above it."""

    interval = 0.2

    def __init__(self) -> None:
        from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeElapsedColumn, TransferSpeedColumn

        self._bar = Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                             TimeElapsedColumn(), console=Console(stderr=True), transient=True)
        self._tasks: dict[str, Any] = {}

    def __enter__(self) -> _Bar:
        self._bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._bar.stop()

    def __call__(self, stage: str, done: int, total: int | None, seconds: float) -> None:
        if not done and total is None and not seconds:
            self._bar.console.print(redact(stage), highlight=False)
            return
        if stage not in self._tasks:
            self._tasks[stage] = self._bar.add_task(stage, total=total)
        self._bar.update(self._tasks[stage], completed=done, total=total)


def _progress_json(stage: str, done: int, total: int | None, seconds: float) -> None:
    """``--progress json``: one JSON object per line on stderr, a message or a stage's bytes so far."""
    if not done and total is None and not seconds:
        record: dict[str, Any] = {"type": "message", "message": redact(stage)}
    else:
        record = {"type": "progress", "stage": stage, "bytes": done, "total": total, "seconds": round(seconds, 3)}
    print(json.dumps(record), file=sys.stderr, flush=True)


def _no_progress(stage: str, done: int, total: int | None, seconds: float) -> None:
    return None


PROGRESS_MODES = ("auto", "plain", "json", "none")
_progress_mode = "auto"  # --progress, set by main for the command it runs


@contextlib.contextmanager
def progress_reporter() -> Iterator[Any]:
    """auto: a live bar on a terminal, plain lines otherwise; plain; json (one object per line); none."""
    if _progress_mode == "json":
        yield _progress_json
    elif _progress_mode == "none":
        yield _no_progress
    elif _progress_mode == "auto" and sys.stderr.isatty():
        with _Bar() as bar:
            yield bar
    else:
        yield _progress


def cmd_init(args: argparse.Namespace) -> int:
    from erp_backup_pipeline.core.init import init_demo

    config = init_demo(Path(args.var), with_postgres=args.postgres)
    if args.json:
        print(json.dumps({"var": str(Path(args.var).absolute()), "config": str(config)}, indent=2))
        return 0
    print(f"demo ERP, key and config ready under {Path(args.var).absolute()}")
    print(f"config: {config}")
    return 0


def cmd_keygen(args: argparse.Namespace) -> int:
    if args.signing:
        from erp_backup_pipeline.core.signing import generate

        line = generate(Path(args.output))
        if args.json:
            print(json.dumps({"key_file": args.output, "kind": "signing", "public_key": line}, indent=2))
            return 0
        print(f"signing key written to {args.output} (mode 0600); set signing.key_file on the host that backs up")
        print(f"public key (signing.public_keys of the hosts that verify and restore): {line}")
        return 0
    public = generate_identity(Path(args.output))
    if args.json:
        print(json.dumps({"key_file": args.output, "kind": "age", "public_key": public}, indent=2))
        return 0
    print(f"identity written to {args.output} (mode 0600); keep it OFF the backup host")
    print(f"public key (put it in encryption.recipients): {public}")
    return 0


def cmd_backup(args: argparse.Namespace) -> int:
    site = _site(args)
    names = site.enabled() if args.source == "all" else [_source_name(args.source)]
    partition = args.partition or today().isoformat()
    if args.from_archive and (names != [postgres.KIND.name] or not args.partition):
        raise ConfigError(f"--from-archive backs up {postgres.KIND.name} for a past --partition from the WAL archive")
    if not args.from_archive:  # a live capture of a date that is over: refused before anything is touched
        late.check_allowed(site, partition)
    if args.dry_run:
        return _backup_plan(site, names, partition, args)
    failed: list[ExitStatus] = []
    done: list[dict[str, Any]] = []
    for name in names:
        try:
            with progress_reporter() as report:
                m = (cli_pitr.backfill(site, partition, report) if args.from_archive
                     else run_backup(site, name, partition, report))
            note = late.late_note(m)  # a date that was over: it holds the data of the day it ran
            shipped = [n for n, r in m.destinations.items() if r.get("ok")]
            done.append({"id": catalog.short_id(chain.digest(m.to_json())), "source": name, "partition": partition,
                         "captured_at": m.captured_at, "artifact_bytes": m.artifact_bytes, "sha256": m.artifact_sha256,
                         "destinations": shipped, "late": note is not None, **({"note": note} if note else {})})
            if not args.json:  # --json: the object says it all
                print(f"{name} {partition}: {human_bytes(m.artifact_bytes)} sha256 {m.artifact_sha256[:16]} "
                      f"-> {', '.join(shipped)}" + (f"; {note}" if note else ""))
        except BackupError as exc:
            failed.append(exc.status)
            done.append({"source": name, "partition": partition, **_error_object(exc.status, redact(str(exc)))})
            print(f"erp-backup: error: {name} {partition}: {redact(str(exc))}", file=sys.stderr)
    if args.json:
        print(json.dumps({"backups": done}, indent=2))
    # one failure, or several of one kind: its status; failures of different kinds: 1
    return 0 if not failed else failed[0].code if len(set(failed)) == 1 else FAILURE.code


def _backup_plan(site: Site, names: list[str], partition: str, args: argparse.Namespace) -> int:
    """``backup --dry-run``: what each backup would read, how it would be packed and where it would go; it reads
    and writes nothing (the configuration is checked as a backup checks it)."""
    comp, enc = site.compressor().name, site.encryptor().name
    dests = [{"name": d.name, "uri": d.uri(site.prefix + "/"), "required": d.required} for d in site.destinations]
    plans = []
    for name in names:
        reads = ("the pgBackRest archive, recovered to the end of " + partition if args.from_archive
                 else site.source(name).where)
        when = None if args.from_archive else late.start_line(partition) if is_over(partition) else None
        plans.append({"source": name, "partition": partition, "reads": redact(reads), "compression": comp,
                      "encryption": enc, "destinations": dests, "late": when is not None,
                      **({"note": when} if when else {})})
    if args.json:
        print(json.dumps({"dry_run": True, "backups": plans}, indent=2))
        return 0
    for plan in plans:
        where = ", ".join(f"{d['name']} ({d['uri']}{', required' if d['required'] else ''})" for d in dests)
        print(f"{plan['source']} {partition}: would read {plan['reads']}; {comp} compress, {enc} encrypt, ship to "
              f"{where}" + (f"; {plan['note']}" if plan.get("note") else ""))
    print("dry run: nothing read or written")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    site = _site(args)
    if args.sets:
        return cli_recover.print_sets(site, args.json)
    found = catalog.of(site, _source_name(args.source) if args.source else None)
    errors = found.errors
    checks = repo_check.last_checks(site)
    rows = [{**e.as_row(), **_as_of(e.manifest), **_last_check(checks.get(e.sha256))} for e in found.entries]
    if args.json:
        print(json.dumps({"captures": rows, "rejected": [r.as_row() for r in found.rejected],
                          "findings": found.findings, "gaps": found.gaps, "errors": errors}, indent=2))
    else:
        print(f"{'source':<16} {'partition':<11} {'captured_at':<26} {'raw':>10} {'artifact':>10} "
              f"{'sha256':<14} {'id':<9} {'verified':<8} destinations")
        for r in rows:
            flag = "yes" if r["verified"] else "NO"
            where = ",".join(r["destinations"]) + ("" if r["complete"] else " (INCOMPLETE)")
            if r.get("checked_at"):
                where += f"  checked {r['checked_at'][:10]} " + ("ok" if r["check_ok"] else "FAILED")
            if r.get("late"):
                where += f"  LATE: holds the data of {r['data_as_of'][:10]}"
            print(f"{r['source']:<16} {r['partition']:<11} {r['captured_at']:<26} {human_bytes(r['raw_bytes']):>10} "
                  f"{human_bytes(r['artifact_bytes']):>10} {r['sha256'][:12]:<14} {r['id']:<9} {flag:<8} {where}")
        if found.rejected:
            print(f"rejected: {len(found.rejected)} file(s) that are not trusted and never used:")
            for item in found.rejected:
                print(redact(f"  {item.line()}"))
        for line in found.findings + found.gaps:
            print(redact(f"chain: {line}"))
    for err in errors:
        print(f"erp-backup: warning: {redact(err)}", file=sys.stderr)
    return DESTINATION.code if errors and not rows else 0  # nothing to list, and a destination could not be read


def _last_check(record: dict[str, Any] | None) -> dict[str, Any]:
    """When ``erp-backup check`` last checked the capture, and its result (``check_problem``: the first problem)."""
    if not record:
        return {}
    return {"checked_at": record.get("checked_at"), "check_ok": bool(record.get("ok")),
            "check_read_data": bool(record.get("read_data")),
            **({"check_problem": redact(str(record["problem"]))} if record.get("problem") else {})}


def _as_of(manifest: Any) -> dict[str, Any]:
    """``data_as_of`` (the recovery target, or the capture time) and ``late`` (a live capture of a date that was
    over: it holds the data of the day it ran), for list."""
    found = late.of(manifest)
    if found is None:
        return {}
    return {"data_as_of": found.iso, "late": found.late}


def cmd_check(args: argparse.Namespace) -> int:
    site = _site(args)
    subset = (repo_check.Subset() if args.read_data else
              repo_check.Subset.parse(args.read_data_subset) if args.read_data_subset else None)
    human = sys.stderr if args.json else sys.stdout

    def line(text: str) -> None:
        print(redact(text), file=human, flush=True)

    result = repo_check.check(site, _source_name(args.source) if args.source else None, subset, line)
    read = sum(1 for c in result.captures if c.read_data)
    bad = [c for c in result.captures if not c.ok]
    for problem in result.problems:
        line(f"problem: {problem}")
    for error in result.errors:
        line(f"destination unreadable: {error}")
    line(f"checked {len(result.captures)} capture(s) on {len(site.destinations)} destination(s), read the data of "
         f"{read}: {len(bad)} capture(s) with problems, {len(result.problems)} catalog problem(s)")
    failure: BackupError | None = None
    if bad or result.problems:
        first = bad[0].problems[0] if bad else result.problems[0]
        failure = VerifyError(f"check: {len(bad)} capture(s) with problems, {len(result.problems)} catalog problem(s); "
                              f"first: {first}")
    elif result.errors:
        failure = DestinationError(f"check: {len(result.errors)} destination(s) could not be read; first: "
                                   f"{result.errors[0]}")
    if failure is not None:
        print(f"erp-backup: error: {redact(str(failure))}", file=sys.stderr)
    if args.json:  # one object, the error in it: the result is what a script wants most when something is wrong
        print(json.dumps({"ok": result.ok, "captures": [c.as_row() for c in result.captures],
                          "problems": [redact(p) for p in result.problems],
                          "errors": [redact(e) for e in result.errors],
                          **(_error_object(failure.status, redact(str(failure))) if failure else {})}, indent=2))
    return failure.status.code if failure else 0


def cmd_ls(args: argparse.Namespace) -> int:
    site = _site(args)
    at = cli_address.resolve(site, args, "source", default_latest=False)
    entry, files = list_files(site, at.source, at.partition, at.capture, args.path)
    if args.path and not files:
        raise ArtifactNotFound(f"{args.path}: not in capture {entry.id} ({at.source} {entry.manifest.partition})")
    m = entry.manifest
    if args.json:
        print(json.dumps({"id": entry.id, "source": m.source, "partition": m.partition,
                          "captured_at": m.captured_at, "files": files}, indent=2))
        return 0
    print(f"capture {entry.id}: {m.source} {m.partition} captured {m.captured_at}, {len(files)} entries",
          file=sys.stderr)
    for f in files:
        size = human_bytes(f["size"]) if f.get("size") is not None else ""
        shown = f["path"] + ("/" if f["type"] == "dir" else f" -> {f['linkname']}" if f.get("linkname") else "")
        print(redact(f"{f['type']:<8} {size:>10}  {f.get('mtime', ''):<25} {shown}"))
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    site = _site(args)
    at = cli_address.resolve(site, args, "source", default_latest=False)
    with progress_reporter() as report:
        read_data = 0 if args.read_data else args.read_data_sample
        result = verify_backup(site, at.source, at.partition, report, read_data, capture=at.capture)
    print(json.dumps(result, indent=2) if args.json else
          f"OK {result['source']} {result['partition']} captured {result['captured_at']}: "
          f"checksums match, decrypts, decompresses, {result['method']} passes ({result['seconds']} s)")
    return 0


DRILL_FIELDS = {"source", "partition", "captured_at", "ok", "restore_seconds", "seconds", "compared"}


def cmd_drill(args: argparse.Namespace) -> int:
    site = _site(args)
    at = cli_address.resolve(site, args, "source", default_latest=True)
    partition, capture = at.partition, at.capture
    if not partition and not capture:  # latest: its date, so that a failure names it, and that very capture
        newest = catalog.latest(catalog.of(site, at.source).entries, at.source)
        partition, capture = newest.manifest.partition, newest.sha256
    try:
        with progress_reporter() as report:
            result = restore_drill(site, at.source, partition, report, capture=capture)
    except BackupError as exc:
        exc.args = (f"drill {at.source} {partition or capture}: {exc}",)
        raise
    counts = " ".join(f"{k}={v}" for k, v in result.items()
                      if k not in DRILL_FIELDS and isinstance(v, int) and not isinstance(v, bool))
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"OK {at.source} {result['partition']} captured {result['captured_at']}: restored in "
          f"{result['restore_seconds']} s (drill {result['seconds']} s); compared {result.get('compared', 'nothing')}"
          + (f": {counts}" if counts else ""))
    return 0


def cmd_restore(args: argparse.Namespace) -> int:
    site = _site(args)
    if cli_pitr.is_pitr(args):
        if args.kind != "postgres":
            raise ConfigError("--target-time, --target-lsn and --latest are for postgres only")
        return cli_pitr.cmd_restore_pitr(site, args)
    at = cli_address.resolve(site, args, "kind", default_latest=False)
    args.kind, source = at.key, at.source
    options = _restore_options(args)
    target = args.to
    if source == "redis_snapshot" and target.startswith(("redis://", "rediss://")):
        target = target_with_password(target, _restore_password(args))
    elif args.password_file:
        raise ConfigError("--password-file is for a Redis restore target (redis://...)")
    steps = restore_plan(site, source, at.partition, target, args.force, options, capture=at.capture)
    human = sys.stderr if args.json else sys.stdout  # --json: the result alone on stdout
    print("restore plan:", file=human)
    for i, step in enumerate(steps, 1):
        print(f"  {i}. {step}", file=human)
    if args.dry_run:
        print("dry run: nothing changed", file=human)
        if args.json:
            print(json.dumps({"dry_run": True, "plan": steps}, indent=2))
        return 0
    with progress_reporter() as report:
        result = restore_backup(site, source, at.partition, target, args.force, report, options, capture=at.capture)
    if args.json:
        print(json.dumps({"dry_run": False, "plan": steps, **result}, indent=2, default=str))
        return 0
    kept = f"; previous target kept as {result['kept_aside']}" if result.get("kept_aside") else ""
    print(f"restored {source} {result['partition']} (captured {result['captured_at']}) into {result['target']} "
          f"in {result['seconds']} s{kept}")
    if result.get("roles_created"):
        print(f"roles created: {', '.join(result['roles_created'])}")
    if result.get("owners"):
        print(f"owners: {result['owners']}")
    for note in result.get("notes") or []:
        print(redact(f"note: {note}"))
    return 0


def _restore_options(args: argparse.Namespace) -> dict[str, Any]:
    """The source's own restore options: PostgreSQL's for a PostgreSQL restore, --include for a file tree."""
    options: dict[str, Any] = {}
    if args.include:
        if args.kind not in ("config", "uploads"):
            raise UsageError("--include picks files of a config or uploads capture")
        options["include"] = list(args.include)
    if args.kind != "postgres":
        if args.no_owner or args.server:
            raise ConfigError("--no-owner and --server are for postgres only")
        return options
    return {"no_owner": args.no_owner, "server": args.server}


RESTORE_PASSWORD_ENV = "ERP_RESTORE_PASSWORD"


def _restore_password(args: argparse.Namespace) -> str | None:
    """The restore target's password: from --password-file (0600) or $ERP_RESTORE_PASSWORD, never from argv."""
    if args.password_file:
        password: str | None = read_secret_file(Path(args.password_file), "--password-file")
    else:
        password = os.environ.get(RESTORE_PASSWORD_ENV) or None
    if password:
        register_secrets([password])
    return password


def cmd_prune(args: argparse.Namespace) -> int:
    site = _site(args)
    out = sys.stderr if args.json else sys.stdout  # the deletion lines; --json keeps stdout for the JSON

    def log(line: str) -> None:
        print(redact(line), file=out, flush=True)

    result = prune(site, dry_run=args.dry_run, log=log)
    rows = result.as_rows()
    counts = {"deleted": result.count("deleted"), "kept": result.count("keep"), "failed": result.count("failed")}
    if args.json:
        print(json.dumps({"dry_run": result.dry_run, **counts,
                          "to_delete": result.count("delete") if result.dry_run else 0,
                          "notes": [redact(n) for n in result.notes],
                          "rows": [{k: redact(v) for k, v in r.items()} for r in rows],
                          "locks": [{"source": e.manifest.source, "partition": e.manifest.partition,
                                     "captured_at": e.manifest.captured_at, "destination": name,
                                     "outcome": redact(outcome)} for e, name, outcome in result.locks]}, indent=2))
    else:
        print(f"{'source':<16} {'partition':<11} {'captured_at':<26} {'action':<8} reason")
        for r in rows:
            print(redact(f"{r['source']:<16} {r['partition']:<11} {r['captured_at']:<26} {r['action']:<8} {r['reason']}"))
        for note in result.notes:
            print(redact(f"note: {note}"))
        for e, name, outcome in result.locks:
            print(redact(f"lock: {e.manifest.source} {e.manifest.partition} captured {e.manifest.captured_at} on "
                         f"{name}: {outcome}"))
        if result.dry_run:
            print(f"dry run: {result.count('delete')} to delete, {counts['kept']} to keep; nothing deleted")
        else:
            print(f"deleted {counts['deleted']}, kept {counts['kept']}, failed {counts['failed']}")
    if counts["failed"]:
        print(f"erp-backup: error: prune: {counts['failed']} backup(s) or artifact(s) without a manifest could not be "
              "deleted everywhere (see the lines above)", file=sys.stderr)
        return 1
    if result.lock_failures:
        print(f"erp-backup: error: prune: the Object Lock of {result.lock_failures} kept backup(s) could not be extended "
              "to the end of their keep (see the lock lines)", file=sys.stderr)
        return 1
    return 0


def cmd_catalog_adopt(args: argparse.Namespace) -> int:
    from erp_backup_pipeline.core.adopt import adopt

    site = _site(args)
    human = sys.stderr if args.json else sys.stdout
    done = adopt(site, dry_run=args.dry_run, log=lambda line: print(redact(line), file=human, flush=True),
                 include_partial=args.include_partial)
    if args.json:
        print(json.dumps({"dry_run": args.dry_run, "captures": [
            {"source": e.manifest.source, "partition": e.manifest.partition, "captured_at": e.manifest.captured_at,
             "action": action, "detail": redact(detail)} for e, action, detail in done]}, indent=2))
    for entry, action, detail in done:
        m = entry.manifest
        if args.dry_run or action == "kept":
            print(redact(f"{m.source:<16} {m.partition:<11} {m.captured_at:<26} {action:<8} {detail}"), file=human)
    adopted = sum(1 for _, a, _ in done if a == "adopted")
    kept = sum(1 for _, a, _ in done if a == "kept")
    if args.dry_run:
        print(f"dry run: {sum(1 for _, a, _ in done if a == 'adopt')} unsigned capture(s) would be verified and "
              f"signed, {sum(1 for _, a, _ in done if a == 'kept')} not; nothing changed", file=human)
        return 0
    print(f"adopted {adopted}, not adopted {kept} (they stay rejected)", file=human)
    return 1 if kept else 0


def cmd_metrics(args: argparse.Namespace) -> int:
    from erp_backup_pipeline.orchestration.metrics import serve  # the one command that needs Dagster

    print(f"serving Prometheus metrics of $DAGSTER_HOME's instance on http://{args.host}:{args.port}/metrics")
    serve(args.port, args.host)
    return 0


class _Parser(argparse.ArgumentParser):
    """argparse, whose usage errors end as every other error does: one ``erp-backup: error:`` line (after the usage),
    exit status 2, and with ``--json`` the error object."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        raise UsageError(f"{self.prog.removeprefix('erp-backup ')}: {message}" if self.prog != "erp-backup" else message)


def exit_status_table() -> str:
    """The exit statuses, as ``--help`` ends with them (docs/reference/exit-codes.md is tested against it)."""
    return "exit statuses:\n" + "\n".join(f"  {s.code:>3}  {s.name:<24} {s.meaning}" for s in EXIT_STATUSES)


def version() -> str:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed

    try:
        return installed("erp_backup_pipeline")
    except PackageNotFoundError:  # run from a source tree that is not installed
        return "unknown"


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="erp-backup", description="Backup and restore of the SteinmetZ ERP.", epilog=exit_status_table(),
                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"erp-backup {version()}")
    p.add_argument("--config", help="config file (default: $ERP_BACKUP_CONFIG or ./erp-backup.yaml)")
    p.add_argument("--progress", choices=PROGRESS_MODES, default="auto",
                   help="progress on stderr: auto (a live bar on a terminal, a line every 5 s otherwise), plain, json "
                        "(one JSON object per line) or none")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("init", help="create the demo ERP, an age key and a config under VAR")
    s.add_argument("--var", default="var", metavar="DIR", help="where the demo ERP, keys, config and backups go "
                                                              "(default: var)")
    s.add_argument("--postgres", action="store_true", help="also configure the PostgreSQL source from PG* variables")
    s.add_argument("--json", action="store_true", help="where everything went, as JSON on stdout")
    s.set_defaults(func=cmd_init)

    s = sub.add_parser("keygen", help="make an age identity file (or with --signing a manifest signing key), mode "
                                      "0600, and print its public key")
    s.add_argument("--output", "-o", required=True, metavar="FILE", help="the new key file (mode 0600; an existing "
                                                                        "file is never overwritten)")
    s.add_argument("--signing", action="store_true",
                   help="an ssh-ed25519 signing key for manifests (signing.key_file) instead of an age identity")
    s.add_argument("--json", action="store_true", help="the key file and its public key as JSON on stdout")
    s.set_defaults(func=cmd_keygen)

    s = sub.add_parser("backup", help="back up a source (or all) for a partition, without Dagster")
    s.add_argument("source", help=", ".join([*KINDS, *BY_KEY]) + " or all")
    s.add_argument("--partition", type=partition_arg, help="YYYY-MM-DD (default: today, Europe/Berlin)")
    s.add_argument("--from-archive", action="store_true",
                   help="the PostgreSQL dump of a past date as it was at the end of that day (pgBackRest, pitr "
                        "section)")
    s.add_argument("--json", action="store_true", help="each backup (capture ID, sizes, destinations) or its error "
                                                       "as JSON on stdout; the human lines go to stderr")
    s.add_argument("--dry-run", action="store_true", help="say what each backup would read, how it would be packed "
                                                          "and where it would go; read and write nothing")
    s.set_defaults(func=cmd_backup)

    s = sub.add_parser("list", help="the catalog, from the manifests")
    s.add_argument("--json", action="store_true", help="captures (with their IDs and last check), rejected files, "
                                                       "chain findings and gaps as JSON on stdout")
    s.add_argument("--source", help="one source only")
    s.add_argument("--sets", action="store_true", help="one line per date: its backup set and whether it is complete")
    s.set_defaults(func=cmd_list)

    s = sub.add_parser("verify", help="re-download, check checksums, decrypt, decompress and verify a backup")
    cli_address.add_arguments(s, "source", default_latest=False)
    s.add_argument("--read-data", action="store_true",
                   help="uploads: also read back every earlier artifact the snapshot depends on")
    s.add_argument("--read-data-sample", type=int, metavar="K",
                   help="uploads: read back K randomly chosen earlier artifacts it depends on")
    s.add_argument("--json", action="store_true", help="the result (with the capture ID) as JSON on stdout")
    s.set_defaults(func=cmd_verify)

    s = sub.add_parser("check", help="check every capture on every destination: manifests and chains, each "
                                     "object's presence and size; with --read-data its sha256 (no key needed)")
    s.add_argument("--source", help="one source only")
    reading = s.add_mutually_exclusive_group()
    reading.add_argument("--read-data", action="store_true",
                         help="read back every copy of every capture and compare its sha256 with the manifest")
    reading.add_argument("--read-data-subset", metavar="N/M|P%",
                         help="read back the captures of group N of M (by capture ID; N=1..M in turn reads all) or a "
                              "random P percent")
    s.add_argument("--json", action="store_true", help="every capture's result and the problems as JSON on stdout; "
                                                       "the lines go to stderr")
    s.set_defaults(func=cmd_check)

    s = sub.add_parser("ls", help="list the files of a config or uploads capture (read from its artifact, checked)")
    cli_address.add_arguments(s, "source", default_latest=False, extra="PATH")
    s.add_argument("--json", action="store_true", help="the capture and its files (path, type, size, sha256, mtime) "
                                                       "as JSON on stdout")
    s.set_defaults(func=cmd_ls)

    s = sub.add_parser("drill", help="restore a backup into a scratch target and compare it with its manifest")
    cli_address.add_arguments(s, "source", default_latest=True)
    s.add_argument("--json", action="store_true", help="the drill's result as JSON on stdout")
    s.set_defaults(func=cmd_drill)

    s = sub.add_parser("prune", help="apply the retention policies: print the plan and delete what it deletes")
    s.add_argument("--dry-run", action="store_true", help="print the plan, delete nothing")
    s.add_argument("--json", action="store_true", help="the plan's rows, counts, notes and lock extensions as JSON on "
                                                       "stdout; the deletion lines go to stderr")
    s.set_defaults(func=cmd_prune)

    s = sub.add_parser("catalog", help="the authenticated catalog: adopt manifests written before signing")
    csub = s.add_subparsers(dest="catalog_command", required=True)
    c = csub.add_parser("adopt", help="verify every unsigned (legacy) capture end to end, then sign it into the chain")
    c.add_argument("--dry-run", action="store_true", help="list what would be adopted, verify and sign nothing")
    c.add_argument("--include-partial", action="store_true",
                   help="also captures that not every destination holds (check them first: a writer at one "
                        "destination can plant an unsigned manifest)")
    c.add_argument("--json", action="store_true", help="each capture and what was done with it as JSON on stdout; the "
                                                       "lines go to stderr")
    c.set_defaults(func=cmd_catalog_adopt)

    s = sub.add_parser("metrics", help="Prometheus metrics from the Dagster instance")
    msub = s.add_subparsers(dest="metrics_command", required=True)
    m = msub.add_parser("serve", help="serve /metrics (the instance of $DAGSTER_HOME)")
    m.add_argument("--port", type=int, default=9188, help="the port to serve on (default: 9188)")
    m.add_argument("--host", default="127.0.0.1", help="the address to listen on (default: 127.0.0.1)")
    m.set_defaults(func=cmd_metrics)

    cli_recover.add_parser(sub, _site)

    s = sub.add_parser("pg", help="PostgreSQL point-in-time recovery (pgBackRest)")
    pg = s.add_subparsers(dest="pg_command", required=True)
    g = pg.add_parser("setup", help="write pgBackRest's config, print postgresql.conf lines, stanza-create and check")
    g.add_argument("--json", action="store_true", help="the config file, the postgresql.conf lines and the "
                                                       "restore_command as JSON on stdout")
    g.set_defaults(func=lambda a: cli_pitr.cmd_pg_setup(_site(a), a.json))

    s = sub.add_parser("restore", help="restore a backup into a NEW file, database or data directory")
    cli_address.add_arguments(s, "kind", default_latest=False)
    cli_pitr.add_restore_arguments(s)
    s.add_argument("--to", required=True,
                   help="sqlite: a file path (never a directory); postgres: a database name (plain, or \"quoted\"), "
                   "or with --target-time/--target-lsn/--latest a new data directory; "
                   "redis: redis://[user@]host:port of an empty instance, or a directory for dump.rdb; "
                   "config, uploads: a new directory (never a file)")
    s.add_argument("--include", action="append", metavar="PATH",
                   help="config, uploads: restore only this file, directory or glob (repeatable; `erp-backup ls` "
                        "lists the paths); into a new directory as a whole restore")
    s.add_argument("--dry-run", action="store_true", help="print the plan, change nothing")
    s.add_argument("--json", action="store_true", help="the plan and the result as JSON on stdout; the human lines "
                                                       "go to stderr")
    s.add_argument("--force", action="store_true", help="replace an existing target, keeping it aside; follow a "
                   "symlink among its parents, restore into a directory another user owns")
    s.add_argument("--password-file", metavar="FILE", help="redis: the target's password, from this 0600 file "
                   f"(or ${RESTORE_PASSWORD_ENV}); never in the URL")
    s.add_argument("--no-owner", action="store_true",
                   help="postgres: every restored object belongs to the restoring role (default: owners and grants "
                        "as recorded, missing roles created first)")
    s.add_argument("--server", metavar="CONNINFO",
                   help="postgres: restore onto this server instead of the configured one, e.g. 'host=db2 port=5432 "
                        "user=postgres' (no dbname, no password: PGPASSWORD or ~/.pgpass)")
    s.set_defaults(func=cmd_restore)
    return p


BROKEN_PIPE = 141  # 128 + SIGPIPE: what a shell reports for a tool whose reader closed the pipe


def _failed(status: ExitStatus, line: str, as_json: bool) -> int:
    """One line on stderr; with ``--json`` also an error object on stdout (the status's name and the same line)."""
    print(f"erp-backup: error: {line}" if status is not INTERRUPTED else "erp-backup: interrupted", file=sys.stderr)
    if as_json:
        print(json.dumps(_error_object(status, line)), flush=True)
    return status.code


def _error_object(status: ExitStatus, message: str) -> dict[str, Any]:
    """What ``--json`` says of a failure: ``{"error": {"status", "name", "message"}}``."""
    return {"error": {"status": status.code, "name": status.name, "message": message}}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    as_json = "--json" in argv
    try:
        args = build_parser().parse_args(argv)
        global _progress_mode
        _progress_mode = args.progress
        return int(args.func(args))
    except BackupError as exc:
        return _failed(exc.status, redact(str(exc)), as_json)
    except BrokenPipeError:  # the reader went away (`| head`): quiet, as a shell tool killed by SIGPIPE
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return BROKEN_PIPE
    except OSError as exc:  # a file system error no command turned into its own line: still one line
        where = f": {exc.filename}" if exc.filename else ""
        return _failed(FAILURE, redact((exc.strerror or type(exc).__name__) + where), as_json)
    except KeyboardInterrupt:
        return _failed(INTERRUPTED, "interrupted", as_json)


if __name__ == "__main__":
    sys.exit(main())
