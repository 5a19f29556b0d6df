"""The report: the targets (PASS / FAIL / info), the table rows, the console tables and ``results.md``.

``build_report`` turns the collected results into the table rows and the evaluated targets (PostgreSQL dump,
signing, Redis, uploads, PITR); ``write_report`` writes ``OUT/results.json`` and ``OUT/results.md``
(``render_markdown``); ``print_report`` prints the console tables and the notes after them. Nothing here
measures anything.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bench.common import MB

CASE_KEYS = ("a_big", "b_big", "c_big", "c7_big", "cn_big", "a_small", "c_small")
REDIS_CASE_KEYS = ("r0", "r1")
UPLOAD_CASE_KEYS = ("u1", "u2", "u3", "s1", "s2", "s3")


def step_durations(steps: list[dict[str, Any]]) -> str:
    return ", ".join(f"{st['step'].rsplit('_', 1)[-1]} {st['duration_s']:.2f} s" for st in steps if "duration_s" in st)


def mib(n: int | None) -> str:
    return "-" if n is None else f"{n / MB:.1f}"


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def build_report(res: dict[str, Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    c = res["cases"]
    targets: list[dict[str, Any]] = []

    def t(name: str, value: str, target: str, ok: bool) -> None:
        targets.append({"check": name, "value": value, "target": target, "result": verdict(ok)})

    if "a_big" in c:
        pg_targets(res, t, targets)
    signing_target(res, t)
    other_targets(res, t, targets)
    if "pitr" in res:
        pitr_targets(res["pitr"], t, targets)
    return report_rows(res), targets


def pg_targets(res: dict[str, Any], t: Any, targets: list[dict[str, Any]]) -> None:
    c = res["cases"]
    a, b, cb, c7, a_s, c_s = c["a_big"], c["b_big"], c["c_big"], c["c7_big"], c["a_small"], c["c_small"]
    r_ca = cb["wall_s"] / a["wall_s"]
    t("(c)/(a) wall time, big", f"{r_ca:.2f}", "<= 1.8", r_ca <= 1.8)
    r_bc = b["wall_s"] / cb["wall_s"]
    t("(b)/(c) wall time, big", f"{r_bc:.2f}", ">= 2.5", r_bc >= 2.5)
    t("(c) artifact vs (b) artifact, big", f"{cb['artifact_bytes']:,} vs {b['artifact_bytes']:,} "
      f"({cb['artifact_bytes'] / b['artifact_bytes']:.3f}x)", "(c) <= (b)", cb["artifact_bytes"] <= b["artifact_bytes"])
    for label, cc in (("big", cb), ("small", c_s)):
        t(f"(c) peak RSS, {label} (worst run)", f"{mib(cc['peak_rss_bytes'])} MiB", "< 300 MiB",
          cc["peak_rss_bytes"] < 300 * MB)
    growth = cb["peak_rss_bytes"] - c_s["peak_rss_bytes"]
    dbr = res["databases"]["big"]["db_bytes"] / res["databases"]["small"]["db_bytes"]
    t("(c) peak RSS growth small -> big", f"{growth / MB:+.1f} MiB ({cb['peak_rss_bytes'] / c_s['peak_rss_bytes']:.3f}x "
      f"for {dbr:.1f}x data)", "<= +10%", cb["peak_rss_bytes"] <= 1.10 * c_s["peak_rss_bytes"])
    for label, cc in (("big", cb), ("small", c_s)):
        worst = max(cc.get("staging_minus_artifact_all_runs", [cc["max_staging_bytes"] - cc["artifact_bytes"]]))
        t(f"(c) max staging vs artifact, {label}", f"{cc['max_staging_bytes']:,} vs {cc['artifact_bytes']:,} "
          f"(worst run: {worst:+,})", "staging <= artifact", worst <= 0)
    r_ca_s = c_s["wall_s"] / a_s["wall_s"]
    targets.append({"check": "(c)/(a) wall time, small (info)", "value": f"{r_ca_s:.2f}", "target": "-",
                    "result": "info"})
    # (c7): zstd level 7 instead of the default level 3; info rows, the targets above stay on (c)
    t("(c7) artifact vs (b) artifact", f"{c7['artifact_bytes']:,} vs {b['artifact_bytes']:,} "
      f"({c7['artifact_bytes'] / b['artifact_bytes']:.3f}x)", "(c7) <= (b)", c7["artifact_bytes"] <= b["artifact_bytes"])
    targets.append({"check": "(b)/(c7) wall time", "value": f"{b['wall_s'] / c7['wall_s']:.2f}", "target": "-",
                    "result": "info"})
    cn = c["cn_big"]  # (cn): without counting rows in the dump's snapshot (sources.postgres.exact_row_counts)
    targets.append({"check": "(c)/(cn) cost of exact row counts", "value": f"{cb['wall_s'] / cn['wall_s']:.2f} "
                    f"({cb['wall_s']:.2f} s vs {cn['wall_s']:.2f} s)", "target": "-", "result": "info"})
    targets.append({"check": "(b)/(cn) wall time", "value": f"{b['wall_s'] / cn['wall_s']:.2f}", "target": "-",
                    "result": "info"})


def signing_target(res: dict[str, Any], t: Any) -> None:
    """What authenticity costs a postgres_dump backup: the run's own signing_seconds (signing, chain state and
    ledger, reading and checking the signatures of a month's catalog) plus the median import of the signature code
    in a fresh process, against the run's materialize time (conservative: smaller than the whole process)."""
    sg = res.get("signing")
    if not sg:
        return
    imp = sorted(sg["import_s_all_runs"])[len(sg["import_s_all_runs"]) // 2]
    shares = [100 * (r["signing_s"] + imp) / r["wall_s"] for r in sg["runs"]]
    med = sorted(shares)[(len(shares) - 1) // 2]
    spent = ", ".join(f"{r['signing_s'] * 1000:.0f}" for r in sg["runs"])
    t(f"signing + verifying share of (c) big, {sg['runs'][0]['history']} earlier captures",
      f"{med:.2f} % (min {min(shares):.2f}, max {max(shares):.2f}; signing {spent} ms, import {imp * 1000:.0f} ms)",
      "< 1 %", max(shares) < 1.0)


def other_targets(res: dict[str, Any], t: Any, targets: list[dict[str, Any]]) -> None:
    c = res["cases"]
    if "r1" in c:  # Redis, 1 M keys
        r0, r1 = c["r0"], c["r1"]
        r_rr = r1["wall_s"] / r0["wall_s"]
        t("(r1)/(r0) wall time, redis 1M keys", f"{r_rr:.2f} ({r1['wall_s']:.2f} s vs {r0['wall_s']:.2f} s)", "<= 1.5",
          r_rr <= 1.5)
        targets.append({"check": "(r1) artifact vs (r0) RDB (info)", "value": f"{r1['artifact_bytes']:,} vs "
                        f"{r0['artifact_bytes']:,} ({r1['artifact_bytes'] / r0['artifact_bytes']:.3f}x; (r1) raw RDB "
                        f"{int(r1['metadata'].get('raw_bytes', 0)):,})", "target": "-", "result": "info"})
        targets.append({"check": "(r1) Dagster steps (info)", "value": step_durations(r1["steps"]), "target": "-",
                        "result": "info"})
    if "u1" in c:  # uploads, 10,000 files, ~1 GB
        u1, u2, u3, s1, s2, s3 = (c[k] for k in UPLOAD_CASE_KEYS)
        changed = u3["changed_bytes"]
        r_bytes = u2["artifact_bytes"] / u1["artifact_bytes"]
        t("(u2) shipped / (u1) shipped", f"{100 * r_bytes:.3f} % ({u2['artifact_bytes']:,} vs "
          f"{u1['artifact_bytes']:,} bytes)", "< 1 %", r_bytes < 0.01)
        r_time = u2["wall_s"] / u1["wall_s"]
        t("(u2) time / (u1) time", f"{100 * r_time:.1f} % ({u2['wall_s']:.2f} s vs {u1['wall_s']:.2f} s)", "<= 10 %",
          r_time <= 0.10)
        t("(u3) shipped vs changed bytes", f"{u3['artifact_bytes']:,} vs {changed:,} "
          f"({u3['artifact_bytes'] / changed:.2f}x)", "<= 2 x changed", u3["artifact_bytes"] <= 2 * changed)
        for n, (name, u, s) in enumerate((("first", u1, s1), ("unchanged", u2, s2), ("1 % changed", u3, s3)), 1):
            targets.append({"check": f"(u{n}) vs (s{n}) rsync --link-dest, {name} (info)",
                            "value": f"{u['wall_s']:.2f} s vs {s['wall_s']:.2f} s; {u['artifact_bytes']:,} vs "
                                     f"{s['artifact_bytes']:,} bytes", "target": "-", "result": "info"})
        targets.append({"check": "(u2) Dagster steps (info)", "value": step_durations(u2["steps"]), "target": "-",
                        "result": "info"})


def report_rows(res: dict[str, Any]) -> list[dict[str, Any]]:
    c = res["cases"]
    rows = []
    names = {"a_big": "(a) floor pg_dump -Z0 >/dev/null", "b_big": "(b) original pg_dump|gzip|gpg|cp",
             "c_big": "(c) postgres_dump -> S3", "c7_big": "(c) level 7", "cn_big": "(cn) no exact row counts",
             "a_small": "(a) floor",
             "c_small": "(c) postgres_dump -> S3", "r0": "(r0) redis-cli --rdb FILE",
             "r1": "(r1) redis_snapshot -> S3", "u1": "(u1) uploads_snapshot first -> S3",
             "u2": "(u2) uploads_snapshot unchanged", "u3": "(u3) uploads_snapshot 1 % changed",
             "s1": "(s1) rsync -a day1", "s2": "(s2) rsync --link-dest, unchanged",
             "s3": "(s3) rsync --link-dest, 1 % changed"}
    for key in tuple(k for k in CASE_KEYS + REDIS_CASE_KEYS + UPLOAD_CASE_KEYS if k in c):
        cc = c[key]
        if key in REDIS_CASE_KEYS:
            db = f"{res['redis']['used_memory'] / MB:.0f} MiB"
        elif key in UPLOAD_CASE_KEYS:
            db = f"{res['uploads']['bytes'] / MB:.0f} MiB"
        else:
            db = f"{res['databases']['big' if key.endswith('big') else 'small']['db_bytes'] / MB:.0f} MiB"
        rows.append({"case": names[key], "db": db,
                     "wall_s": round(cc["wall_s"], 2),
                     "artifact_bytes": cc["artifact_bytes"],
                     "peak_rss_mib": round(cc["peak_rss_bytes"] / MB, 1),
                     "client_cpu_s": round(cc["client_cpu_s"], 1), "server_cpu_s": round(cc["server_cpu_s"], 1),
                     "max_staging_bytes": cc["max_staging_bytes"]})
    return rows


PITR_NAMES = {"p0": "(p0) `pg_restore` of a local `pg_dump -Fc` into a new database",
              "p1": "(p1) point-in-time restore to T, until promoted",
              "p2": "(p2) restore `--latest` after losing the host, until promoted"}


def pitr_targets(pi: dict[str, Any], t: Any, targets: list[dict[str, Any]]) -> None:
    p0, p1, p2 = pi["p0"], pi["p1"], pi["p2"]
    rpo = p2["rpo_s"]
    t("(p2) RPO, archive_timeout 60 s", f"{rpo:.1f} s (loss C minus the newest recovered commit)" if rpo is not None
      else "no row recovered", "<= 60 s", rpo is not None and rpo <= 60)
    targets.append({"check": "(p2) rows lost (info)", "value": f"{p2['rows_lost']} of {p2['rows_committed']} committed "
                    f"({p2['rows_recovered']} recovered)", "target": "-", "result": "info"})
    t("(p1) state at T (rows before T there, rows after T not)",
      f"marks {p1['marks']!r}, {p1['audit_rows']:,} audit rows, timeline {p1['timeline']}", "exact",
      bool(p1["state_at_target_ok"]))
    t("(p2) recovered rows are a prefix, nothing archived after C",
      f"ids 1..{p2['rows_recovered']} contiguous: {p2['recovered_ids_contiguous']}; segments archived after C: "
      f"{len(p2['segments_archived_after_loss'])}", "yes; 0",
      bool(p2["recovered_ids_contiguous"]) and not p2["segments_archived_after_loss"])
    targets.append({"check": "(p1)/(p0) RTO (info)", "value": f"{p1['wall_s'] / p0['wall_s']:.2f} ({p1['wall_s']:.2f} s "
                    f"vs {p0['wall_s']:.2f} s)", "target": "-", "result": "info"})
    targets.append({"check": "(p2)/(p0) RTO, latest (info)", "value": f"{p2['wall_s'] / p0['wall_s']:.2f} "
                    f"({p2['wall_s']:.2f} s vs {p0['wall_s']:.2f} s)", "target": "-", "result": "info"})


def _pitr_detail(pi: dict[str, Any], key: str) -> str:
    c = pi[key]
    if key == "p0":
        return (f"dump {c['dump_bytes']:,} bytes (`pg_dump -Fc` {c['pg_dump_s']:.2f} s, not counted); pg_restore peak "
                f"RSS {mib(c['peak_rss_bytes'])} MiB, CPU {c['client_cpu_s']:.1f} s client + {c['server_cpu_s']:.1f} s "
                "server")
    redo = f", of which redo {c['redo_elapsed_s']:.2f} s" if "redo_elapsed_s" in c else ""
    return (f"plan {c['plan_s']:.2f} s + pgbackrest restore {c['pgbackrest_restore_s']:.2f} s + start, replay and "
            f"promotion {c['start_to_promoted_s']:.2f} s{redo}; set {c['backup_set']}, WAL {c['wal_from']}..{c['wal_to']},"
            f" timeline {c['timeline']}")


def _secs(v: float | None) -> str:
    return "n/a (no row recovered)" if v is None else f"{v:.1f} s"


def pitr_table(pi: dict[str, Any]) -> list[str]:
    """The console's PITR block."""
    out = [f"{'PITR case (' + str(pi['database']['db_bytes'] // MB) + ' MiB database)':62} {'wall s':>8}  detail",
           "-" * 100]
    for k in ("p0", "p1", "p2"):
        out.append(f"{PITR_NAMES[k].replace('`', ''):62} {pi[k]['wall_s']:>8.2f}  {_pitr_detail(pi, k)}")
    p2 = pi["p2"]
    out.append(f"(p2) RPO {_secs(p2['rpo_s'])}; rows committed {p2['rows_committed']}, recovered {p2['rows_recovered']}, "
               f"lost {p2['rows_lost']}; the section took {pi['section_s']} s")
    return out


def pitr_markdown(pi: dict[str, Any]) -> list[str]:
    db, fb, w, p1, p2 = pi["database"], pi["full_backup"], pi["writes"], pi["p1"], pi["p2"]
    lines = [f"Point-in-time recovery ({pi['pgbackrest']}; the project's own `pitr` code: generated pgbackrest.conf and "
             f"postgresql.conf lines, `PgBackRest`, `recover.plan_restore` + `recover.restore`): an archiving cluster "
             f"(`archive_timeout` {pi['archive_timeout']}, zstd {pi['pitr_settings']['compress_level']}, process-max "
             f"{pi['pitr_settings']['process_max']}, repository cipher aes-256-cbc, posix repository on the same disk) "
             f"filled with the ERP-like data, {db['db_bytes'] / MB:.0f} MiB, in {db['generate_s']} s; full backup "
             f"{fb['label']} in {fb['wall_s']} s ({fb['repository_bytes']:,} bytes in the repository). Then "
             f"{w['before_target']} ({w['wal_bytes_full_stop_to_target'] / MB:.1f} MiB of WAL), the target T, then "
             f"{w['after_target']}. (p0) restores a `pg_dump -Fc` of the database as it was at the full backup into "
             "the bench's other (non-archiving, same settings) cluster; only `pg_restore` is timed. (p1)/(p2) are timed "
             "from `plan_restore` until the restored server answers `pg_is_in_recovery() = false`. The section runs "
             f"once per bench run and took {pi['section_s']} s.", "",
             "| case | wall s | detail |", "|---|---:|---|"]
    for k in ("p0", "p1", "p2"):
        lines.append(f"| {PITR_NAMES[k]} | {pi[k]['wall_s']:.2f} | {_pitr_detail(pi, k)} |")
    lines += ["", f"(p1) restored state: marks {p1['marks']!r} (the 'after' mark is not there), {p1['audit_rows']:,} "
              f"audit rows as at T; {p1.get('recovery_stopping', '')}.",
              f"(p2) a writer committed one row with its `clock_timestamp()` every {p2['writer_interval_s']} s for "
              f"{p2['writer_s']:.0f} s (synchronous_commit on, no forced WAL switch), starting right after a WAL "
              f"switch; segments archive_timeout closed meanwhile: {', '.join(p2['segments_archived_during_writer']) or 'none'}. "
              f"The writer stopped, then at C = {p2['lost_at']} the cluster's {p2['processes_killed']} processes were "
              f"SIGKILLed (a lost host: no shutdown checkpoint, the open segment never archived; segments archived after "
              f"C: {len(p2['segments_archived_after_loss'])}). Restored `--latest`: {p2['rows_recovered']} of "
              f"{p2['rows_committed']} rows, the newest committed at {p2['newest_recovered_commit']} "
              f"({_secs(p2['newest_recovered_since_switch_s'])} after the switch before the writer); "
              f"RPO = C - that = **{_secs(p2['rpo_s'])}**, {p2['rows_lost']} rows lost. The server's own log: last "
              f"completed transaction at {p2.get('last_completed_transaction', '?')}."]
    return lines


def render_markdown(res: dict[str, Any], rows: list[dict[str, Any]], targets: list[dict[str, Any]]) -> str:
    m = res["machine"]
    lines = [f"Benchmark {res['started_at']} on {m['cores']} cores, {m['python']}, {m['pg_dump']}; "
             f"databases: " + (", ".join(f"{k} {v['db_bytes'] / MB:.0f} MiB ({v['rows']['invoice_lines']:,} invoice lines)"
                                         for k, v in res["databases"].items()) or "none (--skip-pg)") + ".", "",
             "| case | DB | wall s | artifact bytes | peak RSS MiB | client CPU s | server CPU s | max staging bytes |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        art = f"{r['artifact_bytes']:,}" if r["artifact_bytes"] is not None else "(raw, discarded)"
        lines.append(f"| {r['case']} | {r['db']} | {r['wall_s']:.2f} | {art} | {r['peak_rss_mib']:.1f} | "
                     f"{r['client_cpu_s']:.1f} | {r['server_cpu_s']:.1f} | {r['max_staging_bytes']:,} |")
    lines += ["", f"Wall times of all {res['repeat']} run(s), the median is shown: " + "; ".join(
        f"{k} {res['cases'][k]['wall_s_all_runs']}" for k in CASE_KEYS + REDIS_CASE_KEYS + UPLOAD_CASE_KEYS
        if k in res["cases"])]
    lines += ["", "| check | value | target | result |", "|---|---|---|---|"]
    for t in targets:
        res_s = f"**{t['result']}**" if t["result"] == "FAIL" else t["result"]
        lines.append(f"| {t['check']} | {t['value']} | {t['target']} | {res_s} |")
    if "pitr" in res:
        lines += [""] + pitr_markdown(res["pitr"])
    if "recovery" in res:
        lines += [""] + recovery_markdown(res["recovery"])
    if "c_big" not in res["cases"]:
        return "\n".join(lines) + "\n"
    cb = res["cases"]["c_big"]
    lines += ["", f"(c) RSS after imports, before `materialize`: {mib(cb['rss_after_imports_bytes'])} MiB (Dagster and "
              f"the project's imports); peak {mib(cb['peak_rss_bytes'])} MiB. (c) peak RSS is the child Python's VmHWM; "
              f"its pg_dump/pg_restore: " + ", ".join(f"{k} {mib(v)} MiB" for k, v in
                                                    cb["subprocess_peak_rss_bytes"].items()) + ".",
              "(a)/(b) peak RSS: `/usr/bin/time %M` per command (max over (b)'s four commands). Server CPU: the "
              "PostgreSQL backends. Raw dump size (-Z0): " + f"{cb['metadata'].get('raw_bytes', 0):,} bytes.",
              "", "(c) big, Dagster step durations: " + ", ".join(
                  f"{st['step'].rsplit('_', 1)[-1]} {st['duration_s']:.2f} s" for st in cb["steps"] if "duration_s" in st)
              + f"; first step started {next(st['t'] for st in cb['steps'] if st['event'] == 'STEP_START'):.2f} s "
              "after `materialize` was called.",
              "", "(c) level 7 (`compression: " + json.dumps(res["cases"]["c7_big"]["compression"]) + "`), big, step "
              "durations: " + ", ".join(f"{st['step'].rsplit('_', 1)[-1]} {st['duration_s']:.2f} s"
                                        for st in res["cases"]["c7_big"]["steps"] if "duration_s" in st) + "."]
    if "r1" in res["cases"]:
        rd, r1 = res["redis"], res["cases"]["r1"]
        types = ", ".join(f"{v:,} {k}" for k, v in rd["types"].items())
        lines += ["", f"Redis {rd['redis_version']}: {rd['keys']:,} keys (by type: {types}"
                  f"; strings avg {rd['string_avg_bytes']} bytes, most with a TTL), generated by pipelined writes in "
                  f"{rd['generate_s']} s; `INFO memory` used_memory_human {rd['used_memory_human']}. "
                  f"`repl-diskless-sync-delay` was set to {rd['repl_diskless_sync_delay']} (default 5 s) before (r0) and "
                  "(r1), so that `redis-cli --rdb` (a diskless sync) does not wait for more replicas: the cases compare "
                  "the dumpers, not that delay. Server CPU of (r0)/(r1): the redis-server and its snapshot fork.",
                  "", "(r1) Dagster step durations: " + step_durations(r1["steps"])
                  + f"; first step started {next(st['t'] for st in r1['steps'] if st['event'] == 'STEP_START'):.2f} s "
                  "after `materialize` was called; (r1) subprocesses: " + ", ".join(
                      f"{k} {mib(v)} MiB" for k, v in r1["subprocess_peak_rss_bytes"].items()) + "."]
    if "u1" in res["cases"]:
        up, cs = res["uploads"], res["cases"]
        ch = up["changed"]
        lines += ["", f"Uploads: a generated tree (seed {up['seed']}) of {up['files']:,} files, {up['bytes']:,} bytes "
                  f"({up['bytes'] / MB:.0f} MiB) in {up['dirs']} directories: {up['scan_files']} JPEG-like scans of "
                  f"1-10 MB, the rest PDF-like files of 1-50 KB (mostly random bytes, a quarter PDF text); generated "
                  f"in {up['generate_s']} s. Between (u2)/(s2) and (u3)/(s3), {ch['files']} files were changed "
                  f"({ch['appended']} appended to, {ch['rewritten']} rewritten in place, {ch['changed_scans']} of them "
                  f"scans): {ch['changed_bytes']:,} bytes. Shipped bytes: (u) the artifact's `encrypted_bytes`; "
                  "(s) rsync's \"Total transferred file size\" into a local directory (not encrypted, not "
                  "compressed, not off-site). The uploads section took " + f"{up['section_s']} s.", ""]
        for k in ("u1", "u2", "u3"):
            md = cs[k]["metadata"]
            lines.append(f"- ({k}) files {md.get('files')}, unchanged_files {md.get('unchanged_files')}, new_blobs "
                         f"{md.get('new_blobs')}, new_bytes {md.get('new_bytes')}, raw (tar) bytes "
                         f"{md.get('raw_bytes')}; state file {cs[k]['state_file_bytes']:,} bytes; steps: "
                         + step_durations(cs[k]["steps"]) + f"; first step started "
                         f"{next(st['t'] for st in cs[k]['steps'] if st['event'] == 'STEP_START'):.2f} s after "
                         "`materialize` was called.")
        for k in ("s1", "s2", "s3"):
            sc = cs[k]
            lines.append(f"- ({k}) `{sc['argv']}`: {sc['rsync_files_transferred']:,} files transferred; files not "
                         f"hard-linked to an earlier day {sc['new_unlinked_files']:,} ({sc['new_unlinked_bytes']:,} "
                         f"bytes), hard-linked {sc['hardlinked_files']:,}.")
    return "\n".join(lines) + "\n"


RECOVERY_NAMES = {"postgres_dump": "postgres_dump -> new database", "redis_snapshot": "redis_snapshot -> "
                  "dump.rdb + redis-server loaded", "config_archive": "config_archive -> DIR/config",
                  "uploads_snapshot": "uploads_snapshot -> DIR/uploads"}


def recovery_rows(rc: dict[str, Any]) -> list[tuple[str, float, str]]:
    """(case, seconds, detail) of the whole-ERP recovery section."""
    rows = []
    for source, secs in rc["seconds"].items():
        b = rc["backups"][source]
        rows.append((f"(w) {RECOVERY_NAMES.get(source, source)}", secs,
                     f"artifact {b['artifact_bytes']:,} bytes, raw {b['raw_bytes']:,}; backup took {b['seconds']} s"))
    rows.append(("(w) total restore, every store (the measured RTO)", rc["total_s"], f"plan {rc['plan_s']} s before"))
    rows.append(("(w) consistency checks", rc["check_s"], "all passed" if rc["all_checks_ok"] else "FAILED"))
    rows.append(("(w) recover as a whole (plan, restores, checks)", rc["wall_s"], ""))
    return rows


def recovery_table(rc: dict[str, Any]) -> list[str]:
    out = [f"{'whole-ERP recovery (' + str(rc['database']['db_bytes'] // MB) + ' MiB PostgreSQL)':62} {'wall s':>8}  "
           "detail", "-" * 100]
    out += [f"{case:62} {secs:>8.2f}  {detail}" for case, secs, detail in recovery_rows(rc)]
    return out + [f"checks: {'; '.join(rc['checks'])}"]


def recovery_markdown(rc: dict[str, Any]) -> list[str]:
    lines = [f"Whole-ERP recovery: PostgreSQL {rc['database']['db_bytes'] / MB:.0f} MiB (`postgres_dump`), Redis "
             f"{rc['redis']['keys']:,} keys, the demo config, uploads {rc['uploads_bytes']:,} bytes; backed up once to "
             "S3 (moto) with age, then `plan_recovery` + `recover`. The section took " + f"{rc['section_s']} s.", "",
             "| case | wall s | detail |", "|---|---:|---|"]
    lines += [f"| {case} | {secs:.2f} | {detail} |" for case, secs, detail in recovery_rows(rc)]
    return lines + ["", "Checks: " + "; ".join(rc["checks"]) + "."]


def print_table(rows: list[dict[str, Any]], targets: list[dict[str, Any]]) -> None:
    hdr = (f"{'case':36} {'DB':>8} {'wall s':>8} {'artifact bytes':>16} {'RSS MiB':>8} {'cli CPU':>8} {'srv CPU':>8} "
           f"{'max staging':>14}")
    print("\n" + hdr + "\n" + "-" * len(hdr))
    for r in rows:
        art = f"{r['artifact_bytes']:,}" if r["artifact_bytes"] is not None else "raw/dev/null"
        print(f"{r['case']:36} {r['db']:>8} {r['wall_s']:>8.2f} {art:>16} {r['peak_rss_mib']:>8.1f} "
              f"{r['client_cpu_s']:>8.1f} {r['server_cpu_s']:>8.1f} {r['max_staging_bytes']:>14,}")
    print()
    w = max((len(t["check"]) for t in targets), default=0)
    for t in targets:
        flag = f"*** {t['result']} ***" if t["result"] == "FAIL" else t["result"]
        print(f"{t['check']:<{w}}  {t['value']:<48} target {t['target']:<20} {flag}")


def write_report(results: dict[str, Any], rows: list[dict[str, Any]], targets: list[dict[str, Any]], out: Path) -> None:
    """``OUT/results.json`` (everything collected) and ``OUT/results.md``."""
    (out / "results.json").write_text(json.dumps(results, indent=2, default=str))
    (out / "results.md").write_text(render_markdown(results, rows, targets))


def print_report(results: dict[str, Any], rows: list[dict[str, Any]], targets: list[dict[str, Any]]) -> None:
    """The console's tables: cases and targets, PITR, recovery; then notes on (c) big, (r1) and (u2)."""
    cases = results["cases"]
    print_table(rows, targets)
    if "pitr" in results:
        print("\n" + "\n".join(pitr_table(results["pitr"])))
    if "recovery" in results:
        print("\n" + "\n".join(recovery_table(results["recovery"])))
    if "c_big" in cases:
        cb = cases["c_big"]
        print(f"\n(c) big: RSS after imports {mib(cb['rss_after_imports_bytes'])} MiB, peak "
              f"{mib(cb['peak_rss_bytes'])} MiB; steps: " + ", ".join(f"{s['step'].rsplit('_', 1)[-1]} "
                                                                     f"{s['duration_s']:.2f}s"
                                                                     for s in cb["steps"] if "duration_s" in s))
    if "r1" in cases:
        r1 = cases["r1"]
        print(f"(r1) redis: peak RSS {mib(r1['peak_rss_bytes'])} MiB; steps: " + step_durations(r1["steps"])
              + "; subprocesses: " + ", ".join(f"{k} {mib(v)} MiB" for k, v in r1["subprocess_peak_rss_bytes"].items()))
    if "u2" in cases:
        print("(u2) uploads unchanged: steps: " + step_durations(cases["u2"]["steps"]) + "; first step started "
              f"{next(s['t'] for s in cases['u2']['steps'] if s['event'] == 'STEP_START'):.2f} s after materialize")
