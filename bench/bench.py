#!/usr/bin/env python
"""Side-by-side benchmark of the PostgreSQL backup, in ONE run, on a generated ERP-like database.

    .venv/bin/python bench/bench.py [--size-mb 500] [--small-mb 250] [--out bench/out] [--profile] [--skip-redis]
                                    [--skip-uploads] [--skip-pitr] [--skip-pg] [--skip-recovery]

Cases (all against the same throwaway PostgreSQL 15 cluster, on loopback):
  (a) floor      ``pg_dump -Fc -Z0 > /dev/null``
  (b) original   ``pg_dump -Fc -f F`` ; ``gzip F`` ; ``gpg --encrypt F.gz`` ; ``cp F.gz.gpg DEST/``
  (c) pipeline   ``postgres_dump`` materialized in-process (Dagster ``materialize``) to a moto S3 server
                 running in its own process, with verify and age encryption; timed around
                 ``materialize`` only, in a child Python process so its peak RSS is its own.
                 Compression: the default ``{codec: zstd, level: 3, threads: 2}``. On the big database its
                 bucket first holds 30 earlier signed captures (``seed_history``): the run authenticates a
                 month's catalog. Its ``signing_seconds`` plus the signature code's import in a fresh
                 interpreter (``python -X importtime``) against its time is the signing share (< 1 %).
  (c7) pipeline  the same as (c) on the big database, with ``{codec: zstd, level: 7, threads: 2}``: shows
                 that the artifact size of (b) is reachable by configuration, and what it costs in time.
                 Reported as its own row; the targets stay evaluated on the default (c).
  (cn) pipeline  the same as (c) with ``sources.postgres.exact_row_counts: false``: what counting every
                 table's rows in pg_dump's snapshot (for the restore drill) costs.

Redis cases (a throwaway redis-server 1 M keys of session/cache shape, filled by pipelined writes;
``--skip-redis`` leaves them out). ``repl-diskless-sync-delay`` is set to 0 on that server first:
``redis-cli --rdb`` asks for a diskless sync, which otherwise waits 5 s for more replicas; the cases
compare the dumpers, not that delay.
  (r0) floor     ``redis-cli -h 127.0.0.1 -p PORT --rdb FILE``; artifact = the RDB file.
  (r1) pipeline  ``redis_snapshot`` materialized exactly like (c) (child process, moto S3, age, the
                 default compression); timed around ``materialize``.

Uploads cases (``--skip-uploads`` leaves them out): a generated tree of 10,000 files (seeded: ~9,900
PDF-like files of 1-50 KB, mostly random bytes with some PDF text, and ~135 JPEG-like scans of
1-10 MB; ~1 GB in ~350 nested directories, mtimes in the past). One scenario per repetition, with
a fresh ``state_dir``, bucket and rsync destination:
  (u1) pipeline  first ``uploads_snapshot`` backup, materialized exactly like (c) (child process, moto S3,
                 age, the default compression); shipped bytes = the artifact's ``encrypted_bytes``.
  (u2) pipeline  the same again, tree unchanged (same ``state_dir``: the backup is incremental).
  (u3) pipeline  the same again after 100 files (1 %) were changed (half appended to, half rewritten
                 in place); changed bytes = the sizes of those files.
  (s1) original  ``rsync -a --stats SRC/ DST/day1/`` (a local directory: the original strategy's method)
  (s2) original  ``rsync -a --stats --link-dest=DST/day1 SRC/ DST/day2/``, tree unchanged
  (s3) original  ``rsync -a --stats --link-dest=DST/day2 SRC/ DST/day3/`` after the same 1 % change
                 For rsync, shipped bytes = its "Total transferred file size" (checked against the
                 sizes of the files in DST/dayN that are not hard links). (s1)-(s2) run after (u2),
                 (s3) after (u3); the tree is in the page cache for all of them.

Point-in-time recovery (pgBackRest; ``--skip-pitr`` leaves it out; run once, whatever ``--repeat`` says, about
3 minutes). Set up with the project's own code (``core.pitr.config`` writes pgbackrest.conf and gives the
postgresql.conf lines, ``archive_timeout = 60``; ``PgBackRest`` runs stanza-create, check and backups;
``recover.plan_restore`` + ``recover.restore`` restore), as the ``postgres`` user, in a 0755 /tmp dir: a third
cluster, archiving from the start, filled with the same ERP-like generator to ``--size-mb``; a full backup
(repository cipher on); a ``pg_dump -Fc`` of that state.
  (p0) baseline  ``pg_restore`` of that local dump into a new database on the bench's first (non-archiving)
                 cluster; only pg_restore is timed.
  (p1) RTO       after the full backup, writes (5 % of the invoices updated, 100,000 audit rows), a target time
                 T, writes after T, a WAL switch: ``plan_restore(target_time=T)`` + ``restore(start=True)`` into
                 a new data directory (restore = download, decompress, decrypt; then WAL replay to T and
                 promotion), timed until the server has promoted; checked: the rows before T, none after.
  (p2) RPO       a WAL switch, then a writer commits one row holding its ``clock_timestamp()`` every 0.1 s for
                 ``--pitr-writer-s`` (75) s, no forced switch; the writer stops and the host is lost at C (the
                 cluster's process group SIGKILLed: no shutdown checkpoint, the open segment is never archived);
                 ``restore`` ``--latest`` into a new data directory; RPO = C - newest recovered commit time
                 (target <= 60 s), rows lost = committed - recovered.

Whole-ERP recovery (``--skip-recovery`` leaves it out; run once; alone, with every other ``--skip-*``, it
generates only the big database): the demo ERP's stores backed up once to the moto S3 server with age
encryption, in-process (``run_backup``): ``postgres_dump`` of the big ERP-like database (the one of (c)),
``redis_snapshot`` of a small redis-server (10,000 keys of the same shape), ``config_archive`` and
``uploads_snapshot`` of the demo ERP's config and uploads (``core.demo``, plus 200 PDF-like files), no SQLite;
``recovery.document_references`` names 20 documents from the invoices table. Then
``erp-backup recover``'s code (``plan_recovery`` + ``recover``) into a new directory and a new database:
  (w)  each store's restore seconds (download, checksum, decrypt, decompress, load; Redis: the snapshot
       written and a redis-server started on it, loaded), their total (the measured RTO), and the
       consistency checks' seconds (rows counted in the restored database, the uploads snapshot read once
       more for its recorded checksums). Everything it started is stopped by PID and the database dropped.

Measurements
  wall        perf_counter around the command(s) / around ``materialize``
  peak RSS    (a),(b): ``/usr/bin/time -f %M`` per command (ru_maxrss of a child spawned directly
              from this Python would include this process's RSS: Linux carries the parent's high-water
              mark across vfork+exec). (c): VmHWM of the child Python itself (read from /proc at the
              end); its pg_dump/pg_restore children are sampled from /proc every 50 ms.
  server CPU  CPU seconds of the PostgreSQL cluster during the case (postmaster + reaped backends);
              for (r0)/(r1) of the redis-server (+ its reaped snapshot child).
  staging     the parent sums the sizes of the files under the staging dir every 50 ms; max reported.

Prints a table, writes ``OUT/results.json`` and ``OUT/results.md``. Exit code 0 even when a
target fails (it is a report). Everything it starts (PostgreSQL, Redis, moto, gpg-agent, the restored PITR
clusters) is stopped by PID or by its own tool (``pg_ctl -D``), also on failure, and every temp dir is removed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

PARTITION = "2026-11-25"
TIME_BIN = "/usr/bin/time"
MB = 1 << 20
DEFAULT_COMPRESSION = {"codec": "zstd", "level": 3, "threads": 2}  # the product's default (speed)
LEVEL7_COMPRESSION = {"codec": "zstd", "level": 7, "threads": 2}  # case (c7): size, by configuration
UPLOAD_FILES = 10_000
UPLOAD_SCANS = 135  # 1-10 MB each; the rest are 1-50 KB PDF-like files
UPLOAD_CHANGED = 100  # 1 % of the files, changed between (u2) and (u3)
UPLOAD_SEED = 20261125
RECOVERY_STORES = ("postgres_dump", "redis_snapshot", "config_archive", "uploads_snapshot")
RECOVERY_DOCS_QUERY = "SELECT format('invoices/RE-%s.pdf', lpad((id - 1)::text, 5, '0')) FROM invoices WHERE id <= 20"

# --------------------------------------------------------------------------------------------
# child mode: run the Dagster materialize and report its own figures as JSON
# --------------------------------------------------------------------------------------------


def _vm(field: str) -> int:
    """A field of /proc/self/status in bytes (VmRSS, VmHWM)."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return 0


def child_main(config_path: str, out_path: str, partition: str, profile_path: str | None,
               asset: str = "postgres_dump") -> int:
    import resource

    t_imp = time.perf_counter()
    import dagster as dg

    from erp_backup_pipeline.orchestration.assets import BACKUP_ASSETS, build_backup_asset, source_spec
    from erp_backup_pipeline.orchestration.resources import BackupSettingsResource

    import_seconds = time.perf_counter() - t_imp
    baseline_rss = _vm("VmRSS")
    baseline_hwm = _vm("VmHWM")
    ru0_self = resource.getrusage(resource.RUSAGE_SELF)
    ru0_children = resource.getrusage(resource.RUSAGE_CHILDREN)

    profiler = None
    if profile_path:
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    wall_start = time.time()
    t0 = time.perf_counter()
    result = dg.materialize(
        [build_backup_asset(BACKUP_ASSETS[asset]), source_spec(BACKUP_ASSETS[asset])],
        partition_key=partition,
        resources={"backup_settings": BackupSettingsResource.pinned(config_path)},
        instance=(instance := dg.DagsterInstance.ephemeral()),
        raise_on_error=False,
    )
    elapsed = time.perf_counter() - t0
    if profiler is not None:
        profiler.disable()
        import pstats

        with open(profile_path, "w") as fh:  # type: ignore[arg-type]
            stats = pstats.Stats(profiler, stream=fh)
            stats.sort_stats("tottime").print_stats(35)
            stats.sort_stats("cumulative").print_stats(35)

    ru1_self = resource.getrusage(resource.RUSAGE_SELF)
    ru1_children = resource.getrusage(resource.RUSAGE_CHILDREN)
    metadata: dict[str, Any] = {}
    for ev in result.get_asset_materialization_events():
        for k, v in ev.materialization.metadata.items():
            val = getattr(v, "value", v)
            metadata[k] = val if isinstance(val, (int, float, str, bool)) or val is None else str(val)
    steps: list[dict[str, Any]] = []
    errors: list[str] = []
    for rec in instance.all_logs(result.run_id):
        ev = rec.dagster_event
        if ev is None:
            continue
        if ev.event_type_value in ("STEP_START", "STEP_SUCCESS", "STEP_FAILURE"):
            entry = {"event": ev.event_type_value, "step": ev.step_key, "t": round(rec.timestamp - wall_start, 3)}
            if ev.event_type_value == "STEP_SUCCESS":
                entry["duration_s"] = round(ev.event_specific_data.duration_ms / 1000, 3)
            if ev.event_type_value == "STEP_FAILURE":
                err = ev.event_specific_data.error
                errors.append(f"{ev.step_key}: {err.message.strip() if err else '?'}")
            steps.append(entry)
    out = {
        "success": bool(result.success),
        "materialize_start_epoch": wall_start,
        "errors": errors,
        "elapsed_s": elapsed,
        "import_s": import_seconds,
        "rss_baseline_bytes": baseline_rss,
        "hwm_after_imports_bytes": baseline_hwm,
        "peak_rss_bytes": _vm("VmHWM"),
        "rss_end_bytes": _vm("VmRSS"),
        "ru_maxrss_self_bytes": ru1_self.ru_maxrss * 1024,
        "cpu_self_s": (ru1_self.ru_utime + ru1_self.ru_stime) - (ru0_self.ru_utime + ru0_self.ru_stime),
        "cpu_children_s": (ru1_children.ru_utime + ru1_children.ru_stime)
        - (ru0_children.ru_utime + ru0_children.ru_stime),
        "metadata": metadata,
        "steps": steps,
    }
    Path(out_path).write_text(json.dumps(out, indent=2))
    return 0


# --------------------------------------------------------------------------------------------
# signing: an earlier history to authenticate, and what importing the signature code costs a fresh process
# --------------------------------------------------------------------------------------------

HISTORY = 30  # earlier postgres_dump captures in the bucket of each (c) run on the big database: a month's


def seed_history(cfg_path: Path, n: int) -> None:
    """n earlier postgres_dump captures, one per day before PARTITION, committed and signed into the chain the way
    the pipeline commits a capture (``core.commit``), with small artifacts: a backup reads, authenticates and audits
    the manifests, signatures and ledger of its catalog, never the artifacts. So (c) pays for a month's history."""
    import hashlib
    from datetime import date, timedelta
    from datetime import time as clock

    from erp_backup_pipeline.core import commit
    from erp_backup_pipeline.core.destinations import build_destinations, put_bytes
    from erp_backup_pipeline.core.manifest import Manifest, artifact_dir
    from erp_backup_pipeline.core.pipeline import new_stamp
    from erp_backup_pipeline.settings import load_settings

    settings = load_settings(str(cfg_path))
    [dest] = build_destinations(settings)
    first = date.fromisoformat(PARTITION)
    for k in range(n, 0, -1):
        day = first - timedelta(days=k)
        when = datetime.combine(day + timedelta(days=1), clock(1, 0), tzinfo=UTC)
        key = f"{artifact_dir(settings.prefix, 'postgres_dump', day.isoformat())}/{new_stamp(when)}.pgdump.zst.age"
        body = os.urandom(4096)
        put_bytes(dest, key, body)
        sha = hashlib.sha256(body).hexdigest()
        m = Manifest(source="postgres_dump", kind="postgres", partition=day.isoformat(),
                     captured_at=when.isoformat(timespec="seconds"), finished_at=when.isoformat(timespec="seconds"),
                     artifact_key=key, artifact_bytes=len(body), artifact_sha256=sha,
                     chain=[{"stage": "dump", "bytes": 1, "sha256": sha}], verify={"ok": True}, facts={}, tools={},
                     destinations={dest.name: {"ok": True}}, complete=True)
        commit.commit(settings, m, [dest], [dest.name])


def signing_import_seconds(repeat: int = 5) -> list[float]:
    """Seconds a fresh interpreter spends importing the signature code (``core.signing`` and the cryptography it
    loads; dagster, boto3 and the codecs do not load it), after what a run loads anyway: read with
    ``python -X importtime`` in a new process each time (its cumulative line counts only what it adds)."""
    out = []
    script = "import dagster, boto3, psycopg, zstandard, pyrage; import erp_backup_pipeline.core.signing"
    for _ in range(repeat):
        done = subprocess.run([sys.executable, "-X", "importtime", "-c", script],
                              capture_output=True, text=True, cwd=str(REPO), check=True)
        line = next(ln for ln in done.stderr.splitlines() if ln.rstrip().endswith("erp_backup_pipeline.core.signing"))
        out.append(int(line.split("|")[1]) / 1e6)  # cumulative microseconds
    return out


# --------------------------------------------------------------------------------------------
# data generator
# --------------------------------------------------------------------------------------------


def _arr(words: list[str]) -> str:
    return "ARRAY[" + ",".join("'" + w.replace("'", "''") + "'" for w in words) + "]"


FIRST = _arr("Anna Ben Clara David Emma Felix Greta Hannah Ida Jonas Karl Lena Max Nina Oskar Paula Quentin Rosa "
             "Stefan Tina Ulrich Vera Walter Xaver Yvonne Zoe Lukas Mia Leon Sophie Elias Marie Noah Lea Paul "
             "Johanna Finn Laura Moritz Julia".split())
LAST = _arr("Müller Schmidt Schneider Fischer Weber Meyer Wagner Becker Schulz Hoffmann Schäfer Koch Bauer Richter "
            "Klein Wolf Schröder Neumann Schwarz Zimmermann Braun Krüger Hofmann Hartmann Lange Schmitt Werner "
            "Krause Meier Lehmann Huber Kaiser Fuchs Peters Lang Scholz Möller Weiß Jung Hahn".split())
SUFFIX = _arr(["GmbH", "GmbH & Co. KG", "AG", "e.K.", "OHG", "Steinmetzbetrieb", "Bestattungen", "Natursteine"])
STREET = _arr("Hauptstraße Schulstraße Gartenstraße Bahnhofstraße Dorfstraße Bergstraße Birkenweg Lindenstraße "
              "Kirchstraße Waldstraße Ringstraße Schillerstraße Goethestraße Mühlenweg Am Steinbruch Friedhofsweg "
              "Industriestraße Marktplatz Rosenweg Wiesenweg".split())
CITY = _arr("Berlin Hamburg München Köln Frankfurt Stuttgart Düsseldorf Leipzig Dortmund Essen Bremen Dresden "
            "Hannover Nürnberg Duisburg Bochum Wuppertal Bielefeld Bonn Münster Passau Regensburg Würzburg "
            "Augsburg Freiburg Kassel Erfurt Rostock Kiel Lübeck".split())
COUNTRY = _arr(["DE"] * 8 + ["AT", "CH", "NL", "PL"])
DOMAIN = _arr(["example.de", "mail.example", "web.example", "firma.example", "posteo.example"])
SEGMENT = _arr(["private", "trade", "funeral_home", "municipality", "architect", "wholesale"])
ADJ = _arr("polierter geschliffener gestockter gesägter geflammter bossierter spaltrauer gebürsteter antiker "
           "matter heller dunkler roter grauer schwarzer weißer".split())
MATERIAL = _arr("Granit Marmor Sandstein Kalkstein Basalt Schiefer Travertin Gneis Quarzit Diabas Muschelkalk "
                "Porphyr".split())
PRODUCT = _arr("Grabstein Grabplatte Einfassung Fensterbank Treppenstufe Arbeitsplatte Bodenplatte Mauerabdeckung "
               "Urnenstele Findling Pflasterstein Randstein Sockel Vase Laterne Inschrift".split())
WORD = _arr("Kunde wünscht Änderung der Inschrift Lieferung verschoben Rechnung korrigiert Zahlung erhalten "
            "Mahnung versendet Angebot angenommen Skonto gewährt Termin vereinbart Material bestellt Aufmaß "
            "erfolgt Fundament gegossen Montage abgeschlossen Reklamation Nachbesserung Farbe Schrift Gold "
            "Bronze vertieft erhaben Ornament Kreuz Rose Foto Lieferschein Gutschrift Teilzahlung Rückfrage "
            "Genehmigung Friedhofsverwaltung Steinmetz Werkstatt Transport Kran Versetzen Reinigung "
            "Versiegelung Politur Probe Muster Zeichnung Entwurf freigegeben".split())
USERS = _arr(["admin", "buchhaltung", "werkstatt", "vertrieb1", "vertrieb2", "montage", "system", "import-job",
              "m.weber", "s.koch", "t.braun", "a.huber"])
ACTION = _arr(["create", "update", "update", "update", "delete", "print", "send", "export", "login", "approve"])
ENTITY = _arr(["invoice", "invoice", "customer", "article", "payment", "offer", "order", "delivery_note"])
STATUS = _arr(["paid", "paid", "paid", "open", "open", "overdue", "cancelled", "draft"])
PAYMENT = _arr(["sepa", "transfer", "cash", "card", "paypal"])
AGENT = _arr(["Mozilla/5.0 (Windows NT 10.0; Win64; x64)", "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_2)",
              "erp-desktop/4.2.1", "erp-mobile/2.0 (Android 14)", "python-requests/2.31"])
UNIT = _arr(["Stk", "m²", "lfm", "kg", "Std", "pausch"])


def _text(n: int) -> str:
    return " || ' ' || ".join(["pick(" + WORD + ")"] * n)


SCHEMA = """
CREATE OR REPLACE FUNCTION pick(text[]) RETURNS text LANGUAGE sql VOLATILE
  AS $$ SELECT $1[1 + floor(random() * array_length($1, 1))::int] $$;
CREATE TABLE customers (id bigint NOT NULL, customer_no text NOT NULL, name text NOT NULL, street text, zip text,
  city text, country char(2), email text, phone text, vat_id text, credit_limit numeric(12,2), attributes jsonb,
  created_at timestamptz NOT NULL);
CREATE TABLE articles (id bigint NOT NULL, sku text NOT NULL, name text NOT NULL, description text, unit text,
  price numeric(12,2), cost numeric(12,2), weight_kg numeric(10,3), stock integer, attributes jsonb);
CREATE TABLE invoices (id bigint NOT NULL, invoice_no text NOT NULL, customer_id bigint NOT NULL, issued_on date,
  due_on date, status text, currency char(3), net_total numeric(12,2), tax_total numeric(12,2),
  gross_total numeric(12,2), notes text, meta jsonb);
CREATE TABLE invoice_lines (id bigint NOT NULL, invoice_id bigint NOT NULL, line_no integer, article_id bigint,
  description text, quantity numeric(12,3), unit_price numeric(12,2), discount_pct numeric(5,2),
  tax_rate numeric(5,2), line_total numeric(12,2));
CREATE TABLE audit_log (id bigint NOT NULL, at timestamptz NOT NULL, actor text, action text, entity text,
  entity_id bigint, details text, payload jsonb);
"""


def load_statements(invoices: int) -> list[str]:
    customers = max(invoices // 10, 100)
    articles = max(invoices // 50, 500)
    lines = invoices * 5
    audits = invoices * 3
    return [
        f"""INSERT INTO customers
SELECT g, 'K' || lpad(g::text, 8, '0'),
  pick({FIRST}) || ' ' || pick({LAST}) || CASE WHEN random() < 0.3 THEN ' ' || pick({SUFFIX}) ELSE '' END,
  pick({STREET}) || ' ' || (1 + floor(random() * 200))::int, lpad(floor(random() * 99999)::int::text, 5, '0'),
  pick({CITY}), pick({COUNTRY}),
  lower(pick({FIRST})) || '.' || substr(md5(g::text), 1, 6) || '@' || pick({DOMAIN}),
  '+49 ' || (100 + floor(random() * 900))::int || ' ' || (100000 + floor(random() * 8999999))::int,
  'DE' || (100000000 + floor(random() * 899999999))::bigint,
  round((random() * 50000)::numeric, 2),
  jsonb_build_object('segment', pick({SEGMENT}), 'payment_terms_days', (ARRAY[7, 14, 30, 60])[1 + floor(random() * 4)::int],
    'newsletter', random() < 0.4, 'discount_pct', round((random() * 10)::numeric, 1),
    'contact', jsonb_build_object('first', pick({FIRST}), 'last', pick({LAST})),
    'tags', jsonb_build_array(pick({MATERIAL}), pick({SEGMENT}))),
  timestamptz '2012-01-01' + random() * interval '14 years'
FROM generate_series(1, {customers}) g""",
        f"""INSERT INTO articles
SELECT g, 'ART-' || lpad(g::text, 6, '0'), pick({ADJ}) || ' ' || pick({MATERIAL}) || ' ' || pick({PRODUCT}),
  {_text(12)}, pick({UNIT}), round((5 + random() * 3000)::numeric, 2), round((2 + random() * 1500)::numeric, 2),
  round((random() * 900)::numeric, 3), floor(random() * 500)::int,
  jsonb_build_object('material', pick({MATERIAL}), 'finish', pick({ADJ}),
    'thickness_mm', (ARRAY[20, 30, 40, 60, 80])[1 + floor(random() * 5)::int],
    'supplier', pick({LAST}) || ' ' || pick({SUFFIX}), 'ean', (4000000000000 + floor(random() * 999999999999))::bigint::text)
FROM generate_series(1, {articles}) g""",
        f"""INSERT INTO invoices
SELECT g, 'RE-' || (2012 + g % 14) || '-' || lpad(g::text, 8, '0'), 1 + floor(random() * {customers})::bigint,
  d, d + 30, pick({STATUS}), 'EUR', net, round(net * 0.19, 2), net + round(net * 0.19, 2),
  CASE WHEN random() < 0.35 THEN {_text(10)} END,
  jsonb_build_object('payment_method', pick({PAYMENT}), 'reference', md5(g::text || 'ref'), 'dunning_level',
    floor(random() * 3)::int, 'sales_rep', pick({USERS}), 'printed', random() < 0.8)
FROM (SELECT g, date '2012-01-01' + floor(random() * 5100)::int AS d, round((20 + random() * 8000)::numeric, 2) AS net
      FROM generate_series(1, {invoices}) g) s""",
        f"""INSERT INTO invoice_lines
SELECT g, (g - 1) / 5 + 1, (g - 1) % 5 + 1, art,
  pick({ADJ}) || ' ' || pick({MATERIAL}) || ' ' || pick({PRODUCT}) || ', ' || pick({WORD}) || ' ' || pick({WORD}),
  qty, price, disc, CASE WHEN random() < 0.85 THEN 19.00 ELSE 7.00 END, round(qty * price * (1 - disc / 100), 2)
FROM (SELECT g, 1 + floor(random() * {articles})::bigint AS art, round((1 + random() * 40)::numeric, 3) AS qty,
        round((5 + random() * 900)::numeric, 2) AS price,
        CASE WHEN random() < 0.2 THEN (ARRAY[2, 3, 5, 10])[1 + floor(random() * 4)::int] ELSE 0 END::numeric AS disc
      FROM generate_series(1, {lines}) g) s""",
        f"""INSERT INTO audit_log
SELECT g, timestamptz '2012-01-01' + random() * interval '14 years', pick({USERS}), pick({ACTION}), pick({ENTITY}),
  1 + floor(random() * {invoices})::bigint,
  {_text(9)} || ' (Vorgang ' || substr(md5(g::text), 1, 10) || ')',
  jsonb_build_object('ip', '10.' || floor(random() * 255)::int || '.' || floor(random() * 255)::int || '.'
      || floor(random() * 255)::int,
    'request_id', md5(random()::text), 'user_agent', pick({AGENT}),
    'old', jsonb_build_object('status', pick({STATUS})), 'new', jsonb_build_object('status', pick({STATUS})))
FROM generate_series(1, {audits}) g""",
    ]


INDEXES = """
ALTER TABLE customers ADD PRIMARY KEY (id);
ALTER TABLE articles ADD PRIMARY KEY (id);
ALTER TABLE invoices ADD PRIMARY KEY (id);
ALTER TABLE invoice_lines ADD PRIMARY KEY (id);
ALTER TABLE audit_log ADD PRIMARY KEY (id);
CREATE INDEX invoices_customer_idx ON invoices (customer_id);
CREATE INDEX invoice_lines_invoice_idx ON invoice_lines (invoice_id);
CREATE INDEX audit_log_at_idx ON audit_log (at);
DROP FUNCTION pick(text[]);
"""
TABLES = ["customers", "articles", "invoices", "invoice_lines", "audit_log"]


def db_size(dsn: str, dbname: str) -> int:
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        return int(conn.execute("SELECT pg_database_size(%s)", (dbname,)).fetchone()[0])  # type: ignore[index]


def generate_db(server: Any, dbname: str, invoices: int) -> dict[str, Any]:
    import psycopg

    t0 = time.perf_counter()
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{dbname}"')
    with psycopg.connect(server.dsn(dbname), autocommit=True) as conn:
        conn.execute("SET synchronous_commit = off")
        conn.execute("SET maintenance_work_mem = '256MB'")
        conn.execute(SCHEMA)
        for stmt in load_statements(invoices):
            conn.execute(stmt)
        conn.execute(INDEXES)
        conn.execute("VACUUM (FREEZE, ANALYZE)")  # hint bits set now, not during the first timed dump
        counts = {t: int(conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]) for t in TABLES}  # type: ignore[index]
        sizes = {t: int(conn.execute("SELECT pg_total_relation_size(%s)", (t,)).fetchone()[0]) for t in TABLES}  # type: ignore[index]
    return {"dbname": dbname, "invoices": invoices, "rows": counts, "table_bytes": sizes,
            "db_bytes": db_size(server.dsn(), dbname), "generate_s": round(time.perf_counter() - t0, 1)}


def drop_db(server: Any, dbname: str) -> None:
    import psycopg

    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')


def calibrate(server: Any) -> tuple[int, float]:
    """Bytes of an empty database and bytes per invoice (with its lines, audit rows, customers...)."""
    probe = 20000
    info = generate_db(server, "erp_calibrate", probe)
    drop_db(server, "erp_calibrate")
    import psycopg

    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        conn.execute('CREATE DATABASE "erp_empty"')
    empty = db_size(server.dsn(), "erp_empty")
    drop_db(server, "erp_empty")
    return empty, (info["db_bytes"] - empty) / probe


# --------------------------------------------------------------------------------------------
# Redis generator: sessions and cache of the ERP's web front end
# --------------------------------------------------------------------------------------------

REDIS_KEYS = 1_000_000
REDIS_BATCH = 10_000  # commands per pipeline round trip
R_WORDS = ("Kunde wünscht Änderung der Inschrift Lieferung verschoben Rechnung korrigiert Zahlung erhalten Mahnung "
           "versendet Angebot angenommen Skonto gewährt Termin vereinbart Material bestellt Aufmaß erfolgt Fundament "
           "gegossen Montage abgeschlossen Reklamation Nachbesserung Farbe Schrift Gold Bronze vertieft erhaben "
           "Ornament Kreuz Rose Foto Lieferschein Gutschrift Teilzahlung Rückfrage Genehmigung Steinmetz Werkstatt "
           "Transport Kran Versetzen Reinigung Versiegelung Politur Probe Muster Zeichnung Entwurf freigegeben").split()
R_MATERIAL = "Granit Marmor Sandstein Kalkstein Basalt Schiefer Travertin Gneis Quarzit Diabas Muschelkalk Porphyr".split()
R_PRODUCT = ("Grabstein Grabplatte Einfassung Fensterbank Treppenstufe Arbeitsplatte Bodenplatte Mauerabdeckung "
             "Urnenstele Findling Pflasterstein Randstein Sockel Vase Laterne").split()
R_ROLES = ["admin", "buchhaltung", "werkstatt", "vertrieb", "montage", "readonly", "export"]
R_AGENTS = ["Mozilla/5.0 (Windows NT 10.0; Win64; x64)", "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_2)",
            "erp-desktop/4.2.1", "erp-mobile/2.0 (Android 14)"]
R_LANG = ["de", "de", "de", "en", "fr"]


def fill_redis(client: Any, n: int = REDIS_KEYS, seed: int = 20261125) -> dict[str, Any]:
    """``n`` keys, pipelined in batches of REDIS_BATCH: 70 % strings of 50-300 bytes (session JSON,
    cached article JSON, JWT-like refresh tokens; most with a TTL), 20 % small hashes (user prefs,
    carts), 10 % lists (recently viewed) and sets (roles, watch lists)."""
    import base64
    import random

    rng = random.Random(seed)
    filler = " ".join(rng.choice(R_WORDS) for _ in range(4000))
    counts = {"string": 0, "hash": 0, "list": 0, "set": 0}
    string_bytes = 0
    t0 = time.perf_counter()
    pipe = client.pipeline(transaction=False)
    queued = 0

    def pad(head: str, lo: int = 50, hi: int = 300) -> str:
        """Close the JSON object ``head`` with a note so that it is 50-300 characters long."""
        want = rng.randint(lo, hi) - len(head) - 11  # ,"note":"" + }
        if want <= 0:
            return head + "}"
        off = rng.randrange(len(filler) - want)
        return head + ',"note":"' + filler[off:off + want] + '"}'

    for i in range(n):
        r = rng.random()
        if r < 0.70:
            counts["string"] += 1
            if r < 0.40:  # web session
                key = f"sess:{rng.getrandbits(128):032x}"
                value = pad(f'{{"uid":{rng.randint(1, 5000)},"csrf":"{rng.getrandbits(128):032x}","roles":'
                            f'["{rng.choice(R_ROLES)}"],"ip":"10.{rng.randrange(256)}.{rng.randrange(256)}.'
                            f'{rng.randrange(256)}","ua":"{rng.choice(R_AGENTS)}","last":{1764000000 + i}')
                pipe.set(key, value, ex=rng.randint(1800, 86400))
            elif r < 0.58:  # cached article / price calculation
                key = f"cache:article:{i}:{rng.choice(R_LANG)}"
                value = pad(f'{{"sku":"ART-{i % 100000:06d}","name":"{rng.choice(R_MATERIAL)} '
                            f'{rng.choice(R_PRODUCT)}","price":{rng.randint(500, 300000) / 100},'
                            f'"stock":{rng.randrange(500)}')
                if rng.random() < 0.5:
                    pipe.set(key, value, ex=rng.randint(600, 7200))
                else:
                    pipe.set(key, value)
            else:  # refresh token: JWT-like, mostly random bytes
                key = f"auth:refresh:{rng.getrandbits(96):024x}"
                body = base64.urlsafe_b64encode(rng.randbytes(rng.randint(60, 180))).decode().rstrip("=")
                value = f"eyJhbGciOiJIUzI1NiJ9.{body}.{base64.urlsafe_b64encode(rng.randbytes(32)).decode().rstrip('=')}"
                pipe.set(key, value, ex=rng.randint(86400, 30 * 86400))
            string_bytes += len(value.encode())
        elif r < 0.90:
            counts["hash"] += 1
            if r < 0.80:
                pipe.hset(f"user:{i}:prefs", mapping={
                    "lang": rng.choice(R_LANG), "theme": rng.choice(["light", "dark"]),
                    "page_size": rng.choice([25, 50, 100]), "last_report": rng.choice(R_WORDS),
                    "tz": "Europe/Berlin", "notify": rng.choice(["0", "1"])})
            else:
                cart = {f"ART-{rng.randrange(100000):06d}": rng.randint(1, 20) for _ in range(rng.randint(2, 8))}
                pipe.hset(f"cart:{i}", mapping=cart)
                pipe.expire(f"cart:{i}", rng.randint(3600, 7 * 86400))
                queued += 1
        elif r < 0.95:
            counts["list"] += 1
            pipe.rpush(f"recent:{i}", *(f"ART-{rng.randrange(100000):06d}" for _ in range(rng.randint(5, 20))))
        else:
            counts["set"] += 1
            pipe.sadd(f"watch:{i}", *(str(rng.randrange(1, 200000)) for _ in range(rng.randint(3, 15))))
        queued += 1
        if queued >= REDIS_BATCH:
            pipe.execute()
            queued = 0
    if queued:
        pipe.execute()
    seconds = time.perf_counter() - t0
    mem = client.info("memory")
    return {"keys": int(client.dbsize()), "types": counts, "string_avg_bytes": round(string_bytes / max(counts["string"], 1)),
            "generate_s": round(seconds, 1), "used_memory": int(mem["used_memory"]),
            "used_memory_human": mem["used_memory_human"]}


def redis_cpu(server: Any) -> float:
    """CPU seconds of the redis-server so far, its reaped children (the snapshot fork) included.

    The server reaps its fork in its cron (10 Hz): first wait (up to 3 s) until it has no child.
    """
    import psutil

    proc = psutil.Process(server.proc.pid)
    deadline = time.monotonic() + 3
    while proc.children() and time.monotonic() < deadline:
        time.sleep(0.02)
    t = proc.cpu_times()
    return t.user + t.system + t.children_user + t.children_system


# --------------------------------------------------------------------------------------------
# uploads tree generator: the ERP's documents (invoices as PDF, scanned delivery notes)
# --------------------------------------------------------------------------------------------

PDF_WORDS = (b"/Type /Page /Parent 2 0 R /MediaBox [0 0 595.28 841.89] /Resources << /Font << /F1 5 0 R /F2 6 0 R >> "
             b"/ProcSet [/PDF /Text /ImageC] >> /Contents 7 0 R /Filter /FlateDecode /Length /Subtype /Type1 "
             b"/BaseFont /Helvetica-Bold /Encoding /WinAnsiEncoding BT /F1 9 Tf 56.7 760 Td (Rechnung) Tj ET "
             b"(Steinmetz Natursteine GmbH) (Grabstein Granit poliert) (Inschrift vertieft vergoldet) (Netto) "
             b"(MwSt 19 %) (Brutto) (Zahlbar innerhalb 14 Tagen ohne Abzug) (IBAN DE89 3704 0044 0532 0130 00) "
             b"/XObject /Im1 /Width 1240 /Height 1754 /ColorSpace /DeviceRGB /BitsPerComponent 8").split()


def _pdf_like(rng: random.Random, size: int, text: bytes, n: int) -> bytes:
    """A PDF-shaped file: header, compressed-looking (random) stream bytes, then PDF text and a trailer.

    About a quarter is text, so the file compresses a little, as real PDFs do, not 100x."""
    head = b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<< /Type /Catalog /Pages 2 0 R >>\nendobj\n" \
        + f"7 0 obj\n<< /Length {size} /Filter /FlateDecode >>\nstream\n".encode()
    tail = f"\ntrailer\n<< /Size {n % 97 + 8} /Root 1 0 R /ID [<{rng.getrandbits(128):032x}>] >>\n%%EOF\n".encode()
    text_len = size // 4
    off = rng.randrange(len(text) - text_len)
    body = rng.randbytes(max(size - len(head) - len(tail) - text_len - 11, 0))
    data = head + body + b"\nendstream\n" + text[off:off + text_len] + tail
    return data[:size]


def generate_uploads_tree(root: Path, seed: int = UPLOAD_SEED) -> dict[str, Any]:
    """UPLOAD_FILES files in ~350 leaf directories (invoices by month, offers, customer folders, scans by
    quarter), seeded; returns counts, bytes and the sorted file list."""
    rng = random.Random(seed)
    t0 = time.perf_counter()
    years = range(2013, 2027)
    small_dirs = [f"rechnungen/{y}/{m:02d}" for y in years for m in range(1, 13)]
    small_dirs += [f"angebote/{y}" for y in years] + [f"lieferscheine/{y}" for y in years]
    small_dirs += [f"kunden/K{k:08d}/korrespondenz" for k in sorted(rng.sample(range(1, 40000), 100))]
    scan_dirs = [f"scans/{y}/Q{q}" for y in years for q in range(1, 5)]
    text = b" ".join(rng.choice(PDF_WORDS) for _ in range(40000))
    assert len(text) > 4 * 50 * 1024
    t_lo, t_hi = datetime(2013, 1, 1, tzinfo=UTC).timestamp(), datetime(2026, 11, 1, tzinfo=UTC).timestamp()
    for d in small_dirs + scan_dirs:
        (root / d).mkdir(parents=True, exist_ok=True)
    files: list[Path] = []
    total = scans = 0
    for n in range(UPLOAD_FILES):
        if n < UPLOAD_SCANS:
            d = rng.choice(scan_dirs)
            size = rng.randint(1 * MB, 10 * MB)
            data = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01" + rng.randbytes(size - 13)
            path = root / d / f"scan-{n:05d}.jpg"
            scans += 1
        else:
            d = rng.choice(small_dirs)
            size = rng.randint(1024, 50 * 1024)
            data = _pdf_like(rng, size, text, n)
            path = root / d / f"{d.split('/')[0][:2].upper()}-{n:06d}.pdf"
        path.write_bytes(data)
        mt = rng.uniform(t_lo, t_hi)
        os.utime(path, (mt, mt))
        files.append(path)
        total += len(data)
    dirs = sum(1 for _ in root.rglob("*") if _.is_dir())
    return {"files": len(files), "dirs": dirs, "bytes": total, "scan_files": scans, "seed": seed,
            "generate_s": round(time.perf_counter() - t0, 1), "file_list": sorted(files)}


def modify_uploads_tree(files: list[Path], n: int = UPLOAD_CHANGED, seed: int = UPLOAD_SEED) -> dict[str, Any]:
    """Change ``n`` files picked by the seed: every other one gets 200-4096 bytes appended, the rest get
    512 bytes rewritten in place (same size and inode, new mtime). Changed bytes = their sizes after."""
    rng = random.Random(seed + 1)
    chosen = rng.sample(files, n)
    appended = 0
    for i, p in enumerate(chosen):
        if i % 2 == 0:
            with open(p, "ab") as fh:
                fh.write(rng.randbytes(rng.randint(200, 4096)))
            appended += 1
        else:
            size = p.stat().st_size
            with open(p, "r+b") as fh:
                fh.seek(rng.randrange(max(size - 512, 1)))
                fh.write(rng.randbytes(512))
    sizes = [p.stat().st_size for p in chosen]
    return {"files": n, "appended": appended, "rewritten": n - appended, "changed_bytes": sum(sizes),
            "largest_changed_bytes": max(sizes), "changed_scans": sum(p.suffix == ".jpg" for p in chosen)}


# --------------------------------------------------------------------------------------------
# measuring helpers
# --------------------------------------------------------------------------------------------


def _proc_status(pid: int) -> dict[str, str]:
    found: dict[str, str] = {}
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                k, _, v = line.partition(":")
                if k in ("Name", "VmHWM", "VmRSS"):
                    found[k] = v.strip()
    except OSError:
        pass
    return found


def _tree_size(path: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(path):
        for f in files:
            try:
                total += os.stat(os.path.join(root, f)).st_size
            except OSError:
                pass
    return total


class Sampler(threading.Thread):
    """Every ``interval`` s: total file size under ``staging``; VmHWM/VmRSS of ``root_pid`` and descendants."""

    def __init__(self, staging: Path | None = None, root_pid: int | None = None, interval: float = 0.05) -> None:
        super().__init__(daemon=True)
        self.staging = staging
        self.root_pid = root_pid
        self.interval = interval
        self.max_staging = 0
        self.hwm: dict[int, tuple[str, int]] = {}
        self.timeline: list[tuple[float, int, int]] = []  # (t, root VmRSS bytes, staging bytes)
        self._halt = threading.Event()
        self.t0 = time.time()

    def sample(self) -> None:
        import psutil

        staged = _tree_size(self.staging) if self.staging is not None and self.staging.exists() else 0
        self.max_staging = max(self.max_staging, staged)
        root_rss = 0
        if self.root_pid:
            try:
                root = psutil.Process(self.root_pid)
                pids = [self.root_pid] + [c.pid for c in root.children(recursive=True)]
            except psutil.NoSuchProcess:
                pids = []
            for pid in pids:
                st = _proc_status(pid)
                if "VmHWM" not in st:
                    continue
                hwm = int(st["VmHWM"].split()[0]) * 1024
                if pid == self.root_pid:
                    root_rss = int(st["VmRSS"].split()[0]) * 1024
                name = st.get("Name", "?")
                self.hwm[pid] = (name, max(hwm, self.hwm.get(pid, (name, 0))[1]))
        self.timeline.append((round(time.time() - self.t0, 3), root_rss, staged))

    def run(self) -> None:
        while not self._halt.wait(self.interval):
            self.sample()

    def finish(self) -> None:
        self._halt.set()
        self.join()
        self.sample()

    def peak_by_name(self, skip_root: bool = True) -> dict[str, int]:
        out: dict[str, int] = {}
        for pid, (name, hwm) in self.hwm.items():
            if skip_root and pid == self.root_pid:
                continue
            out[name] = max(out.get(name, 0), hwm)
        return out


def server_cpu(server: Any) -> float:
    """CPU seconds used so far by the cluster: postmaster + its reaped children (the backends).

    A backend's CPU reaches the postmaster's children totals only once the postmaster has reaped
    it, so first wait (up to 3 s) until every child but the cluster's long-lived auxiliary
    processes (checkpointer, walwriter, ...: the oldest children) is gone, zombies included.
    """
    import psutil

    pm = psutil.Process(server.pid)
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        transient = []
        for c in pm.children():
            try:  # a backend: 'postgres: USER DB 127.0.0.1(PORT) ...'; an exiting one: empty cmdline or zombie
                cmd = " ".join(c.cmdline())
                if c.status() == psutil.STATUS_ZOMBIE or not cmd or "(" in cmd or "autovacuum worker" in cmd:
                    transient.append(c)
            except psutil.ZombieProcess:
                transient.append(c)
            except psutil.Error:
                pass
        if not transient:
            break
        time.sleep(0.02)
    t = pm.cpu_times()
    return t.user + t.system + t.children_user + t.children_system


def timed(argv: list[str], env: dict[str, str], stdout: Any = subprocess.DEVNULL) -> dict[str, Any]:
    """Run one command under /usr/bin/time; wall (perf_counter), peak RSS, user+sys CPU."""
    with tempfile.NamedTemporaryFile("r", suffix=".time") as tf:
        t0 = time.perf_counter()
        proc = subprocess.run([TIME_BIN, "-o", tf.name, "-f", "%M %U %S", *argv], env=env, stdout=stdout,
                              stderr=subprocess.PIPE)
        wall = time.perf_counter() - t0
        fields = tf.read().strip().splitlines()[-1].split()
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:2])} failed (exit {proc.returncode}): "
                           f"{proc.stderr.decode(errors='replace').strip()[-400:]}")
    return {"cmd": Path(argv[0]).name, "wall_s": wall, "peak_rss_bytes": int(fields[0]) * 1024,
            "cpu_s": float(fields[1]) + float(fields[2])}


# --------------------------------------------------------------------------------------------
# point-in-time recovery helpers: (p0) pg_restore baseline, (p1) RTO to a time, (p2) RPO
# --------------------------------------------------------------------------------------------

PITR_DB = "erp_pitr"
PITR_CIPHER = "bench-pitr-cipher-3f9a7c21"  # repo1-cipher-pass: the restores decrypt every file
PITR_WRITER_S = 75.0  # (p2): the writer runs this long, one row every PITR_WRITER_INTERVAL_S
PITR_WRITER_INTERVAL_S = 0.1


def pg_sql(server: Any, dbname: str, statement: str, params: Any = None) -> list[tuple[Any, ...]]:
    import psycopg

    with psycopg.connect(server.dsn(dbname), autocommit=True) as conn:
        cur = conn.execute(statement, params)
        return cur.fetchall() if cur.description else []


def wait_archived(server: Any, timeout: float = 600) -> float:
    """Wait until no completed WAL segment waits for archive_command (no ``.ready`` file); seconds waited."""
    t0 = time.perf_counter()
    while True:
        [(ready,)] = pg_sql(server, "postgres",
                            "SELECT count(*) FROM pg_ls_archive_statusdir() WHERE name LIKE '%.ready'")
        if ready == 0:
            return time.perf_counter() - t0
        if time.perf_counter() - t0 > timeout:
            raise RuntimeError(f"{ready} WAL segment(s) still not archived after {timeout:.0f} s")
        time.sleep(0.2)


def kill_cluster(server: Any) -> int:
    """Lose the host: SIGKILL the postmaster and every process of the cluster (backends, checkpointer,
    archiver and a running archive-push) at once: no shutdown checkpoint, no last segment archived.
    pg_ctl starts the postmaster in its own session, so its process group is the cluster; the group is
    killed by its id (the postmaster's PID), then any straggler by its own PID. Returns how many died."""
    import psutil

    pm = psutil.Process(server.pid)
    procs = [pm, *pm.children(recursive=True)]
    if os.getpgid(server.pid) == server.pid:
        os.killpg(server.pid, signal.SIGKILL)
    for p in procs:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    _gone, alive = psutil.wait_procs(procs, timeout=10)

    def living(p: Any) -> bool:  # a zombie (not reaped yet by its parent) runs nothing
        try:
            return bool(p.is_running() and p.status() != psutil.STATUS_ZOMBIE)
        except psutil.NoSuchProcess:
            return False

    if [p for p in alive if living(p)]:
        raise RuntimeError(f"processes of the lost cluster survived SIGKILL: {[p.pid for p in alive if living(p)]}")
    server.pid = 0  # nothing left to stop
    return len(procs)


def archived_segments(repo: Path) -> list[str]:
    """WAL segment files in a posix pgBackRest repository (names only), sorted."""
    return sorted(p.name.split("-")[0] for p in (repo / "archive").rglob("*") if p.is_file()
                  and re.match(r"^[0-9A-F]{24}-", p.name))


def recovery_log(datadir: Path) -> dict[str, Any]:
    """What the restored server logged about its recovery (PostgreSQL 15 wording): redo time, where it
    stopped, the last replayed transaction's commit time."""
    try:
        text = (datadir / "restore.log").read_text(errors="replace")
    except OSError:
        return {}
    out: dict[str, Any] = {}
    if m := re.search(r"redo done at (\S+) system usage: .*elapsed: ([\d.]+) s", text):
        out["redo_done_at"], out["redo_elapsed_s"] = m.group(1), float(m.group(2))
    if m := re.search(r"redo starts at (\S+)", text):
        out["redo_starts_at"] = m.group(1)
    if m := re.search(r"recovery stopping (before|after) commit of transaction \d+, time (.+)", text):
        out["recovery_stopping"] = m.group(0).strip()
    if m := re.search(r"last completed transaction was at log time (.+)", text):
        out["last_completed_transaction"] = m.group(1).strip()
    if m := re.search(r"selected new timeline ID: (\d+)", text):
        out["new_timeline"] = int(m.group(1))
    return out


class RpoWriter(threading.Thread):
    """(p2)'s application: one INSERT of its own commit time (clock_timestamp()) every ``interval`` s, each
    its own transaction, synchronous_commit on (an ERP's commits are; the bench cluster's default is off).
    No WAL switch is forced: archive_timeout alone decides when a segment is closed and archived."""

    def __init__(self, dsn: str, interval: float = PITR_WRITER_INTERVAL_S) -> None:
        super().__init__(daemon=True)
        self.dsn = dsn
        self.interval = interval
        self.committed = 0
        self.last_id = 0
        self.first_at: datetime | None = None
        self.last_at: datetime | None = None
        self.error: str | None = None
        self._halt = threading.Event()

    def run(self) -> None:
        import psycopg

        try:
            with psycopg.connect(self.dsn, autocommit=True) as conn:
                conn.execute("SET synchronous_commit = on")
                due = time.monotonic()
                while not self._halt.is_set():
                    row = conn.execute("INSERT INTO rpo_probe (at) VALUES (clock_timestamp()) RETURNING id, at").fetchone()
                    assert row is not None
                    self.committed += 1
                    self.last_id, self.last_at = int(row[0]), row[1]
                    self.first_at = self.first_at or row[1]
                    due += self.interval
                    self._halt.wait(max(0.0, due - time.monotonic()))
        except Exception as exc:  # reported by the section; the thread must not die silently
            self.error = f"{type(exc).__name__}: {exc}"

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=30)


# --------------------------------------------------------------------------------------------
# the cases
# --------------------------------------------------------------------------------------------


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.tmp = Path(tempfile.mkdtemp(prefix="erp-bench-"))
        self.out = Path(args.out).resolve()
        self.out.mkdir(parents=True, exist_ok=True)
        self.pg: Any = None
        self.moto: Any = None
        self.redis: Any = None
        self.gnupghome: Path | None = None
        self.bindir = ""
        self.invoices_for: dict[str, int] = {}  # size label -> invoices to generate (from the calibration)
        self.pitr_pg: Any = None  # the archiving cluster of the PITR section
        self.pitr_base: Path | None = None
        self.pitr_writer: RpoWriter | None = None
        self.pitr_started: list[tuple[Any, Path]] = []  # restored clusters: (settings, data directory)
        self.rec_redis: Any = None  # the whole-ERP recovery section's small Redis
        self.recovery_dbs: list[str] = []  # databases the recovery section created (dropped at the end)

    # ---------------------------------------------------------------- setup / teardown
    def signing(self) -> dict[str, Any]:
        """The configurations' signing section: one key in the bench's temp dir."""
        key = self.tmp / "signing.key"
        if not key.exists():
            from erp_backup_pipeline.core.signing import generate

            generate(key)
        return {"key_file": str(key)}

    def pg_env(self) -> dict[str, str]:
        return {**os.environ, "PGPASSWORD": self.pg.password, "PGSSLMODE": "disable"}

    def conn_args(self, dbname: str) -> list[str]:
        return ["--host", "127.0.0.1", "--port", str(self.pg.port), "--username", "postgres", "--dbname", dbname,
                "--no-password"]

    def setup(self) -> dict[str, Any]:
        from erp_backup_pipeline_tests.servers import pg_bindir, start_moto, start_postgres

        self.bindir = str(pg_bindir())
        t0 = time.perf_counter()
        self.pg = start_postgres()
        self.moto = start_moto()
        print(f"servers: PostgreSQL pid {self.pg.pid} port {self.pg.port}; moto pid {self.moto.proc.pid} "
              f"{self.moto.endpoint} ({time.perf_counter() - t0:.1f} s)", flush=True)
        empty, per_invoice = calibrate(self.pg)
        targets = {"big": self.args.size_mb, "small": self.args.small_mb}
        plan = {k: max(int((mb * MB - empty) / per_invoice), 1000) for k, mb in targets.items()}
        self.invoices_for = plan
        print(f"calibration: empty db {empty / MB:.1f} MiB, {per_invoice:.0f} bytes per invoice (+5 lines, "
              f"3 audit rows, ...); generating {plan if not self.args.skip_pg else 'nothing (--skip-pg)'}", flush=True)
        if self.args.skip_pg:  # the databases and the gpg key serve only the cases (a), (b), (c)
            return {}
        with ThreadPoolExecutor(2) as pool:  # two databases, two cores
            futs = {k: pool.submit(generate_db, self.pg, f"erp_{k}", n) for k, n in plan.items()}
            dbs = {k: f.result() for k, f in futs.items()}
        for k, d in dbs.items():
            print(f"database {d['dbname']}: pg_database_size {d['db_bytes'] / MB:.1f} MiB (target {targets[k]} MiB),"
                  f" rows {d['rows']}, generated in {d['generate_s']} s", flush=True)
        # throwaway gpg key for (b)
        self.gnupghome = Path(tempfile.mkdtemp(prefix="gpg-", dir="/tmp"))
        os.chmod(self.gnupghome, 0o700)
        subprocess.run(["gpg", "--batch", "--passphrase", "", "--quick-gen-key", "bench@example.invalid", "default",
                        "default", "never"], env={**os.environ, "GNUPGHOME": str(self.gnupghome)}, check=True,
                       capture_output=True)
        return dbs

    def teardown(self) -> None:
        self.pitr_teardown()
        if self.rec_redis is not None:
            self.rec_redis.stop()
        for dbname in self.recovery_dbs:
            if self.pg is not None:
                drop_db(self.pg, dbname)
        if self.gnupghome is not None:
            subprocess.run(["gpgconf", "--kill", "gpg-agent"], env={**os.environ, "GNUPGHOME": str(self.gnupghome)},
                           capture_output=True)
            shutil.rmtree(self.gnupghome, ignore_errors=True)
        if self.moto is not None:
            self.moto.stop()
        if self.redis is not None:
            self.redis.stop()
            shutil.rmtree(self.redis.base, ignore_errors=True)
        if self.pg is not None:
            self.pg.stop()
            shutil.rmtree(self.pg.base, ignore_errors=True)
        if not self.args.keep:
            shutil.rmtree(self.tmp, ignore_errors=True)

    # ---------------------------------------------------------------- (a)
    def case_a(self, dbname: str) -> dict[str, Any]:
        cpu0 = server_cpu(self.pg)
        r = timed([f"{self.bindir}/pg_dump", "-Fc", "-Z0", *self.conn_args(dbname)], self.pg_env())
        return {"wall_s": r["wall_s"], "artifact_bytes": None, "peak_rss_bytes": r["peak_rss_bytes"],
                "client_cpu_s": r["cpu_s"], "server_cpu_s": server_cpu(self.pg) - cpu0, "max_staging_bytes": 0}

    # ---------------------------------------------------------------- (b)
    def case_b(self, dbname: str) -> dict[str, Any]:
        work = self.tmp / "b-work"
        dest = self.tmp / "b-dest"
        work.mkdir()
        dest.mkdir()
        f = work / f"{dbname}.dump"
        env = {**self.pg_env(), "GNUPGHOME": str(self.gnupghome)}
        sampler = Sampler(staging=work)
        cpu0 = server_cpu(self.pg)
        sampler.start()
        steps = [
            timed([f"{self.bindir}/pg_dump", "-Fc", "-f", str(f), *self.conn_args(dbname)], env),
            timed(["gzip", str(f)], env),
            timed(["gpg", "--batch", "--trust-model", "always", "--encrypt", "--recipient", "bench@example.invalid",
                   f"{f}.gz"], env),
            timed(["cp", f"{f}.gz.gpg", str(dest) + "/"], env),
        ]
        sampler.finish()
        artifact = dest / f"{f.name}.gz.gpg"
        res = {"wall_s": sum(s["wall_s"] for s in steps), "artifact_bytes": artifact.stat().st_size,
               "peak_rss_bytes": max(s["peak_rss_bytes"] for s in steps),
               "client_cpu_s": sum(s["cpu_s"] for s in steps), "server_cpu_s": server_cpu(self.pg) - cpu0,
               "max_staging_bytes": sampler.max_staging,
               "steps": [{k: (round(v, 3) if isinstance(v, float) else v) for k, v in s.items()} for s in steps]}
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(dest, ignore_errors=True)
        return res

    # ---------------------------------------------------------------- (c)
    def case_c(self, dbname: str, label: str, public_key: str, profile: bool = False,
               compression: dict[str, Any] | None = None, asset: str = "postgres_dump",
               sources: dict[str, Any] | None = None, bucket: str | None = None,
               extra_config: dict[str, Any] | None = None, pg_extra: dict[str, Any] | None = None,
               history: int = 0) -> dict[str, Any]:
        import boto3

        s3 = boto3.client("s3", endpoint_url=self.moto.endpoint, region_name="eu-central-1",
                          aws_access_key_id="testing", aws_secret_access_key="testing")
        if bucket is None:  # a fresh bucket; a given one is created on first use (the uploads scenario shares one)
            bucket = f"bench-{label}-{int(time.time())}"
        known = {b["Name"] for b in s3.list_buckets().get("Buckets", [])}
        if bucket not in known:
            s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": "eu-central-1"})
        keys_before = {o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])}
        staging = self.tmp / f"staging-{label}"
        config = {
            "staging_dir": str(staging),
            "prefix": "erp-bench",
            "compression": compression or DEFAULT_COMPRESSION,
            "encryption": {"codec": "age", "recipients": [public_key]},
            "signing": self.signing(),
            "destinations": [{"type": "s3", "name": "offsite", "bucket": bucket, "endpoint_url": self.moto.endpoint,
                              "access_key_id": "testing", "secret_access_key": "testing"}],
            "sources": sources or {"postgres": {"host": "127.0.0.1", "port": self.pg.port, "user": "postgres",
                                                "dbname": dbname, "password": self.pg.password, "sslmode": "disable",
                                                "bin_dir": self.bindir, **(pg_extra or {})}},
            **(extra_config or {}),
        }
        cfg_path = self.tmp / f"config-{label}.yaml"
        cfg_path.write_text(json.dumps(config, indent=2))  # JSON is YAML
        os.chmod(cfg_path, 0o600)
        if history:
            seed_history(cfg_path, history)
            keys_before = {o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])}
        out_json = self.tmp / f"child-{label}.json"
        (self.out / "logs").mkdir(exist_ok=True)
        log_path = self.out / "logs" / f"child-{label}.log"
        argv = [sys.executable, str(Path(__file__).resolve()), "--child", str(cfg_path), "--child-out", str(out_json),
                "--child-asset", asset]
        if profile:
            argv += ["--child-profile", str(self.out / f"profile-{label}.txt")]
        server_cpu_now = {"redis_snapshot": lambda: redis_cpu(self.redis),
                          "postgres_dump": lambda: server_cpu(self.pg)}.get(asset, lambda: 0.0)  # uploads: no server
        cpu0 = server_cpu_now()
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=str(self.tmp),
                                    env={**{k: v for k, v in os.environ.items() if k != "DAGSTER_HOME"}, "PYTHONUNBUFFERED": "1"})
            sampler = Sampler(staging=staging, root_pid=proc.pid)
            sampler.start()
            rc = proc.wait()
            sampler.finish()
        server_s = server_cpu_now() - cpu0
        if rc != 0 or not out_json.exists():
            raise RuntimeError(f"child for ({label}) failed with exit {rc}; see {log_path}")
        child = json.loads(out_json.read_text())
        if not child["success"]:
            raise RuntimeError(f"materialize for ({label}) failed: {child['errors']}; see {log_path}")
        objects = [o for o in s3.list_objects_v2(Bucket=bucket).get("Contents", []) if o["Key"] not in keys_before]
        artifact = [o for o in objects if not o["Key"].endswith(".json")]
        md = child["metadata"]
        s3_bytes = sum(o["Size"] for o in artifact)
        # timeline (~10 points per second), t relative to the child's materialize start like its step events
        shift = child["materialize_start_epoch"] - sampler.t0
        tl = [(round(t - shift, 2), rss, st) for t, rss, st in sampler.timeline[::2]]
        return {"wall_s": child["elapsed_s"], "artifact_bytes": int(md.get("encrypted_bytes", s3_bytes)),
                "artifact_bytes_in_s3": s3_bytes, "s3_keys": [o["Key"] for o in objects],
                "peak_rss_bytes": child["peak_rss_bytes"], "rss_after_imports_bytes": child["rss_baseline_bytes"],
                "hwm_after_imports_bytes": child["hwm_after_imports_bytes"],
                "client_cpu_s": child["cpu_self_s"] + child["cpu_children_s"],
                "python_cpu_s": child["cpu_self_s"], "subprocess_cpu_s": child["cpu_children_s"],
                "server_cpu_s": server_s, "max_staging_bytes": sampler.max_staging,
                "subprocess_peak_rss_bytes": sampler.peak_by_name(), "import_s": child["import_s"],
                "metadata": md, "steps": child["steps"], "compression": config["compression"], "history": history,
                "signing_s": float(md.get("signing_seconds", 0.0)),
                "timeline_t_rss_staging": tl}


    # ---------------------------------------------------------------- uploads: (u1)-(u3), rsync (s1)-(s3)
    def case_u(self, label: str, public_key: str, tree: Path, state_dir: Path, bucket: str) -> dict[str, Any]:
        r = self.case_c("", label, public_key, asset="uploads_snapshot", sources={"uploads": {"path": str(tree)}},
                        bucket=bucket, extra_config={"state_dir": str(state_dir)})
        state = state_dir / "uploads_snapshot.json"
        r["state_file_bytes"] = state.stat().st_size if state.exists() else 0
        return r

    def case_s(self, tree: Path, dest: Path, day: str, link_dest: str | None) -> dict[str, Any]:
        target = dest / day
        argv = ["rsync", "-a", "--stats"] + ([f"--link-dest={dest / link_dest}"] if link_dest else []) \
            + [f"{tree}/", f"{target}/"]
        stats_path = self.tmp / f"rsync-{day}.stats"
        with open(stats_path, "w") as fh:
            r = timed(argv, dict(os.environ), stdout=fh)
        stats = stats_path.read_text()

        def stat_int(label: str) -> int:
            m = re.search(rf"^{re.escape(label)}: ([\d,]+)", stats, re.M)
            if m is None:
                raise RuntimeError(f"rsync --stats printed no '{label}':\n{stats}")
            return int(m.group(1).replace(",", ""))

        new_bytes = new_files = linked = 0  # files of this day that are not hard links to an earlier day
        for root, _dirs, files in os.walk(target):
            for f in files:
                st = os.lstat(os.path.join(root, f))
                if st.st_nlink == 1:
                    new_bytes += st.st_size
                    new_files += 1
                else:
                    linked += 1
        transferred = stat_int("Total transferred file size")
        return {"wall_s": r["wall_s"], "artifact_bytes": transferred, "peak_rss_bytes": r["peak_rss_bytes"],
                "client_cpu_s": r["cpu_s"], "server_cpu_s": 0.0, "max_staging_bytes": 0,
                "rsync_files_transferred": stat_int("Number of regular files transferred"),
                "new_unlinked_bytes": new_bytes, "new_unlinked_files": new_files, "hardlinked_files": linked,
                "argv": " ".join(argv[:-2] + ["SRC/", f"DST/{day}/"]).replace(str(dest), "DST")}

    def uploads_scenario(self, runs: dict[str, list[dict[str, Any]]], public_key: str, rep: int,
                         repeat: int) -> dict[str, Any]:
        """(u1), (u2), (s1), (s2); change 1 % of the files; (u3), (s3). Fresh tree, state, bucket, DST."""
        base = self.tmp / f"uploads-{rep}"
        tree, state_dir, dest = base / "tree", base / "state", base / "rsync-dest"
        tree.mkdir(parents=True)
        dest.mkdir()
        info = generate_uploads_tree(tree)
        files = info.pop("file_list")
        print(f"uploads: generated {info['files']:,} files ({info['scan_files']} scans of 1-10 MB), "
              f"{info['bytes']:,} bytes ({info['bytes'] / MB:.0f} MiB) in {info['dirs']} directories in "
              f"{info['generate_s']} s", flush=True)
        bucket = f"bench-uploads-{rep}-{int(time.time())}"
        for key, fn in (("u1", lambda: self.case_u(f"uploads{rep}-u1", public_key, tree, state_dir, bucket)),
                        ("u2", lambda: self.case_u(f"uploads{rep}-u2", public_key, tree, state_dir, bucket)),
                        ("s1", lambda: self.case_s(tree, dest, "day1", None)),
                        ("s2", lambda: self.case_s(tree, dest, "day2", "day1"))):
            run_case(runs, key, fn, rep, repeat)
        info["changed"] = modify_uploads_tree(files)
        ch = info["changed"]
        print(f"uploads: changed {ch['files']} files ({ch['appended']} appended to, {ch['rewritten']} rewritten in "
              f"place; {ch['changed_scans']} of them scans): {ch['changed_bytes']:,} bytes", flush=True)
        for key, fn in (("u3", lambda: self.case_u(f"uploads{rep}-u3", public_key, tree, state_dir, bucket)),
                        ("s3", lambda: self.case_s(tree, dest, "day3", "day2"))):
            run_case(runs, key, fn, rep, repeat)
            runs[key][-1]["changed_bytes"] = ch["changed_bytes"]
        if not self.args.keep:
            shutil.rmtree(base, ignore_errors=True)
        return info


    # ---------------------------------------------------------------- Redis: setup, (r0), (r1)
    def setup_redis(self) -> dict[str, Any]:
        from erp_backup_pipeline.orchestration.assets import BACKUP_ASSETS
        from erp_backup_pipeline_tests.servers import start_redis

        if "redis_snapshot" not in BACKUP_ASSETS:
            raise RuntimeError(f"no asset 'redis_snapshot' in BACKUP_ASSETS ({', '.join(BACKUP_ASSETS)})")
        t0 = time.perf_counter()
        self.redis = start_redis(password=None, base=Path(tempfile.mkdtemp(prefix="erp-bench-redis-")))
        client = self.redis.client()
        version = client.info("server")["redis_version"]
        print(f"redis: redis-server {version} pid {self.redis.proc.pid} port {self.redis.port} "
              f"({time.perf_counter() - t0:.1f} s); filling {REDIS_KEYS:,} keys ...", flush=True)
        info = fill_redis(client)
        if info["keys"] != REDIS_KEYS:
            raise RuntimeError(f"redis holds {info['keys']} keys, expected {REDIS_KEYS}")
        client.config_set("repl-diskless-sync-delay", 0)
        info["repl_diskless_sync_delay"] = int(client.config_get("repl-diskless-sync-delay")["repl-diskless-sync-delay"])
        info["redis_version"] = version
        print(f"redis: {info['keys']:,} keys {info['types']} (strings avg {info['string_avg_bytes']} bytes) generated "
              f"in {info['generate_s']} s; INFO memory used_memory_human {info['used_memory_human']}", flush=True)
        print("redis: CONFIG SET repl-diskless-sync-delay 0 (was 5 s by default) before (r0) and (r1): "
              "`redis-cli --rdb` asks for a diskless sync, which would first wait that delay", flush=True)
        return info

    def case_r0(self, label: str) -> dict[str, Any]:
        rdb = self.tmp / f"r0-{label}.rdb"
        cpu0 = redis_cpu(self.redis)
        r = timed(["redis-cli", "-h", "127.0.0.1", "-p", str(self.redis.port), "--rdb", str(rdb)], dict(os.environ))
        size = rdb.stat().st_size
        rdb.unlink()
        return {"wall_s": r["wall_s"], "artifact_bytes": size, "peak_rss_bytes": r["peak_rss_bytes"],
                "client_cpu_s": r["cpu_s"], "server_cpu_s": redis_cpu(self.redis) - cpu0, "max_staging_bytes": 0}

    def case_r1(self, label: str, public_key: str, profile: bool = False) -> dict[str, Any]:
        return self.case_c("", label, public_key, profile=profile, asset="redis_snapshot",
                           sources={"redis": {"host": "127.0.0.1", "port": self.redis.port}})

    # ---------------------------------------------------------------- whole-ERP recovery: (w)
    def recovery_section(self, dbs: dict[str, Any]) -> dict[str, Any]:
        """Back up a whole demo ERP (the big PostgreSQL, small Redis, config, uploads) once, then recover it."""
        import boto3

        from erp_backup_pipeline.core.codecs.age import generate_identity
        from erp_backup_pipeline.core.demo import create_demo
        from erp_backup_pipeline.core.pipeline import run_backup
        from erp_backup_pipeline.core.recovery import plan_recovery, recover
        from erp_backup_pipeline.core.recovery_servers import stop_servers
        from erp_backup_pipeline.settings import parse_settings
        from erp_backup_pipeline_tests.servers import start_redis

        t_section = time.perf_counter()
        base = Path(tempfile.mkdtemp(prefix="recovery-", dir=self.tmp))
        info: dict[str, Any] = {}
        if "big" in dbs:
            db = dbs["big"]
        else:  # running alone: only the big database
            db = generate_db(self.pg, "erp_recovery_big", self.invoices_for["big"])
            self.recovery_dbs.append(db["dbname"])
            print(f"recovery: database {db['dbname']} {db['db_bytes'] / MB:.1f} MiB generated in {db['generate_s']} s",
                  flush=True)
        info["database"] = {k: db[k] for k in ("dbname", "db_bytes", "rows")}
        self.rec_redis = start_redis(password=None, base=base / "redis-src")
        info["redis"] = {k: v for k, v in fill_redis(self.rec_redis.client(), n=10_000).items()
                         if k in ("keys", "used_memory", "used_memory_human")}
        demo = create_demo(base / "erp")
        rng = random.Random(UPLOAD_SEED)
        text = b" ".join(rng.choice(PDF_WORDS) for _ in range(40000))
        for n in range(200):
            (demo["uploads"] / "invoices" / f"scan-{n:04d}.pdf").write_bytes(
                _pdf_like(rng, rng.randrange(1024, 50 * 1024), text, n))
        info["uploads_bytes"] = _tree_size(demo["uploads"])
        key = base / "backup.key"
        public = generate_identity(key)
        bucket = f"bench-recovery-{int(time.time())}"
        boto3.client("s3", endpoint_url=self.moto.endpoint, region_name="eu-central-1", aws_access_key_id="testing",
                     aws_secret_access_key="testing").create_bucket(
            Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": "eu-central-1"})
        settings = parse_settings({
            "staging_dir": str(base / "staging"), "state_dir": str(base / "state"), "prefix": "erp-bench",
            "compression": DEFAULT_COMPRESSION,
            "encryption": {"codec": "age", "recipients": [public], "identity_file": str(key)},
            "signing": self.signing(),
            "destinations": [{"type": "s3", "name": "offsite", "bucket": bucket, "endpoint_url": self.moto.endpoint,
                              "access_key_id": "testing", "secret_access_key": "testing"}],
            "sources": {"postgres": {"host": "127.0.0.1", "port": self.pg.port, "user": "postgres",
                                     "dbname": db["dbname"], "password": self.pg.password, "sslmode": "disable",
                                     "bin_dir": self.bindir},
                        "redis": {"host": "127.0.0.1", "port": self.rec_redis.port},
                        "config": {"paths": [str(demo["config"])]}, "uploads": {"path": str(demo["uploads"])}},
            "recovery": {"document_references": [{"source": "postgres_dump", "query": RECOVERY_DOCS_QUERY}]},
        }, "bench-recovery", base)
        backups = {}
        for source in RECOVERY_STORES:
            t0 = time.perf_counter()
            m = run_backup(settings, source, PARTITION)
            backups[source] = {"seconds": round(time.perf_counter() - t0, 2), "artifact_bytes": m.artifact_bytes,
                               "raw_bytes": m.stage("dump")["bytes"]}
            print(f"recovery: backed up {source} in {backups[source]['seconds']} s ({m.artifact_bytes:,} bytes)",
                  flush=True)
        info["backups"] = backups
        root = base / "recovered"
        t0 = time.perf_counter()
        plan = plan_recovery(settings, PARTITION, root)
        plan_s = time.perf_counter() - t0
        self.recovery_dbs += [s.target for s in plan.steps if s.source == "postgres_dump"]
        try:
            report = recover(settings, plan, log=lambda line: print(f"recovery: {line}", flush=True))
            wall = time.perf_counter() - t0
        finally:
            problems = stop_servers(settings, plan.steps)
            if problems:
                print(f"recovery: could not stop: {problems}", file=sys.stderr)
        info.update(plan_s=round(plan_s, 2), seconds=report["seconds"], total_s=report["total_seconds"],
                    check_s=report["check_seconds"], wall_s=round(wall, 2),
                    checks=[f"{c['check']}: {c['detail']}" for c in report["checks"]],
                    all_checks_ok=all(c["ok"] for c in report["checks"]))
        for dbname in list(self.recovery_dbs):  # the recovered database, and the big one if generated here
            drop_db(self.pg, dbname)
            self.recovery_dbs.remove(dbname)
        self.rec_redis.stop()
        self.rec_redis = None
        if not self.args.keep:
            shutil.rmtree(base, ignore_errors=True)
        info["section_s"] = round(time.perf_counter() - t_section, 1)
        return info

    # ---------------------------------------------------------------- PITR: (p0), (p1), (p2)
    def pitr_settings(self, base: Path, public_key: str, port: int | None = None) -> Any:
        """The project's settings with a ``pitr`` section for a cluster under ``base`` (posix repository,
        cipher on, everything else the product's defaults: archive_timeout 60, zstd 3, process-max 2)."""
        from erp_backup_pipeline.settings import parse_settings

        pitr: dict[str, Any] = {"stanza": "erp", "pg_data": str(base / "pg" / "data"),
                                "pg_socket_path": str(base / "pg" / "sock"), "work_dir": str(base / "pgbr"),
                                "repo": {"type": "posix", "path": str(base / "repo")}, "cipher_pass": PITR_CIPHER,
                                "pg_bin_dir": self.bindir}
        if port is not None:
            pitr["pg_port"] = port
        data = {"staging_dir": str(base / "staging"), "state_dir": str(base / "state"),
                "encryption": {"codec": "age", "recipients": [public_key]},
                "signing": self.signing(),
                "destinations": [{"type": "local", "name": "local", "path": str(base / "dest")}], "pitr": pitr}
        return parse_settings(data, "bench-pitr", base)

    def pitr_restore(self, settings: Any, datadir: Path, **target: Any) -> dict[str, Any]:
        """``recover.plan_restore`` + ``recover.restore(start=True)`` into ``datadir``, timed as one: until the
        restored server has promoted (download, decompress, decrypt, WAL replay, promotion)."""
        from erp_backup_pipeline.core.pitr import recover
        from erp_backup_pipeline_tests.servers import free_port

        port = free_port()
        t0 = time.perf_counter()
        plan = recover.plan_restore(settings, datadir, **target)
        t_plan = time.perf_counter() - t0
        self.pitr_started.append((settings, datadir))  # stopped by the section, or by teardown on failure
        res = recover.restore(settings, plan, port, start=True)
        wall = time.perf_counter() - t0
        return {"wall_s": wall, "plan_s": t_plan, "pgbackrest_restore_s": res["restore_seconds"],
                "start_to_promoted_s": wall - t_plan - res["restore_seconds"], "timeline": res["timeline"],
                "backup_set": plan.label, "wal_from": plan.wal_from, "wal_to": plan.wal_to, "target": plan.target,
                "port": port, "datadir_bytes": _tree_size(datadir), **recovery_log(datadir)}

    def pitr_stop(self, datadir: Path) -> None:
        from erp_backup_pipeline.core.pitr import recover

        for entry in list(self.pitr_started):
            if entry[1] == datadir:
                if (datadir / "postmaster.pid").exists():
                    recover.stop(entry[0], datadir)
                self.pitr_started.remove(entry)
        shutil.rmtree(datadir.parent, ignore_errors=True)

    def pitr_teardown(self) -> None:
        if self.pitr_writer is not None:
            self.pitr_writer.stop()
        for _settings, datadir in list(self.pitr_started):
            try:
                self.pitr_stop(datadir)
            except Exception as exc:  # keep tearing down
                print(f"pitr: could not stop the restored cluster in {datadir}: {exc}", file=sys.stderr)
        if self.pitr_pg is not None:
            self.pitr_pg.stop()  # by PID; a no-op after (p2) killed it
        if self.pitr_base is not None and not self.args.keep:
            shutil.rmtree(self.pitr_base, ignore_errors=True)

    def pitr_scratch(self, name: str) -> Path:
        """A fresh parent (0755, searchable by postgres) for one restored data directory."""
        assert self.pitr_base is not None
        d = self.pitr_base / name
        d.mkdir(mode=0o755)
        d.chmod(0o755)
        return d / "data"

    def pitr_section(self, public_key: str) -> dict[str, Any]:
        """Set-up, (p0), (p1), (p2); once per bench run (not repeated: the writer alone takes 75 s)."""
        from erp_backup_pipeline.core.pitr import config as pitr_config
        from erp_backup_pipeline.core.pitr import recover
        from erp_backup_pipeline.core.pitr.engine import PgBackRest
        from erp_backup_pipeline_tests.servers import start_postgres

        t_section = time.perf_counter()
        info: dict[str, Any] = {"loadavg_1m_at_start": os.getloadavg()[0]}
        # ---- an archiving cluster set up the product's way (as the postgres user; a 0755 /tmp dir)
        base = self.pitr_base = Path(tempfile.mkdtemp(prefix="erp-bench-pitr-", dir="/tmp"))
        base.chmod(0o755)
        settings = self.pitr_settings(base, public_key)
        pitr_config.write(settings)
        lines = pitr_config.postgresql_lines(settings)
        info["postgresql_lines"] = lines
        self.pitr_pg = server = start_postgres(extra_conf="\n".join(lines) + "\n", base=base / "pg")
        settings = self.pitr_settings(base, public_key, port=server.port)
        pitr_config.write(settings)
        engine = PgBackRest(settings)
        engine.stanza_create()
        engine.check()
        [(archive_timeout,)] = pg_sql(server, "postgres", "SHOW archive_timeout")
        info["archive_timeout"] = archive_timeout
        info["pgbackrest"] = subprocess.run([engine.program, "version"], capture_output=True,
                                            text=True).stdout.strip()
        info["pitr_settings"] = {"compress_level": settings.pitr.compress_level,
                                 "process_max": settings.pitr.process_max, "cipher": "aes-256-cbc"}
        print(f"pitr: archiving cluster pid {server.pid} port {server.port}, {info['pgbackrest']}, stanza "
              f"'{settings.pitr.stanza}' created and checked; archive_timeout {archive_timeout}; generating "
              f"{self.invoices_for['big']} invoices ...", flush=True)
        # ---- fill it with the ERP-like data (archived while it is written), then a full backup
        info["database"] = generate_db(server, PITR_DB, self.invoices_for["big"])
        info["database"]["archive_catch_up_s"] = round(wait_archived(server), 1)
        t0 = time.perf_counter()
        full = engine.backup("full")
        info["full_backup"] = {"label": full["label"], "wall_s": round(time.perf_counter() - t0, 2),
                               "database_bytes": full["info"]["size"],
                               "repository_bytes": full["info"]["repository"]["size"],
                               "lsn_stop": full["lsn"]["stop"], "wal_start": full["archive"]["start"],
                               "wal_stop": full["archive"]["stop"]}
        fb = info["full_backup"]
        print(f"pitr: database {info['database']['db_bytes'] / MB:.1f} MiB generated in "
              f"{info['database']['generate_s']} s (archive caught up {info['database']['archive_catch_up_s']} s "
              f"later); full backup {fb['label']} in {fb['wall_s']} s, {fb['repository_bytes']:,} bytes in the "
              "repository", flush=True)

        # ---- (p0) baseline: pg_restore of a local pg_dump -Fc of the same database into a new database
        dump = base / "p0.dump"
        env = {**os.environ, "PGPASSWORD": server.password, "PGSSLMODE": "disable"}
        pg_conn = ["--host", "127.0.0.1", "--port", str(server.port), "--username", "postgres", "--no-password"]
        d = timed([f"{self.bindir}/pg_dump", "-Fc", "-f", str(dump), *pg_conn, "--dbname", PITR_DB], env)
        # restored into the bench's other cluster (same build and settings, not archiving: the baseline pays
        # for no WAL archive, and its WAL does not load the archiving cluster's archiver)
        drop_db(self.pg, "erp_p0")
        pg_sql(self.pg, "postgres", 'CREATE DATABASE "erp_p0"')
        cpu0 = server_cpu(self.pg)
        r = timed([f"{self.bindir}/pg_restore", *self.conn_args("erp_p0"), str(dump)], self.pg_env())
        p0 = {"wall_s": r["wall_s"], "peak_rss_bytes": r["peak_rss_bytes"], "client_cpu_s": r["cpu_s"],
              "server_cpu_s": server_cpu(self.pg) - cpu0, "dump_bytes": dump.stat().st_size,
              "pg_dump_s": d["wall_s"], "restored_db_bytes": db_size(self.pg.dsn(), "erp_p0"),
              "restored_rows": {t: int(pg_sql(self.pg, "erp_p0", f"SELECT count(*) FROM {t}")[0][0]) for t in TABLES}}
        drop_db(self.pg, "erp_p0")
        dump.unlink()
        if p0["restored_rows"] != info["database"]["rows"]:
            raise RuntimeError(f"(p0) restored rows {p0['restored_rows']} != generated {info['database']['rows']}")
        print(f"pitr: (p0) pg_restore {p0['wall_s']:.2f} s (dump {p0['dump_bytes']:,} bytes, pg_dump {d['wall_s']:.2f} "
              "s, not counted)", flush=True)

        # ---- writes after the full backup, the target T, writes after T; all archived
        pg_sql(server, PITR_DB, "CREATE TABLE pitr_marks (phase text NOT NULL, at timestamptz DEFAULT clock_timestamp())")
        t0 = time.perf_counter()
        lsn0 = full["lsn"]["stop"]
        pg_sql(server, PITR_DB, "UPDATE invoices SET status = 'paid', meta = meta || jsonb_build_object('paid_on', "
               "current_date) WHERE id % 20 = 0")
        pg_sql(server, PITR_DB, "INSERT INTO audit_log SELECT m.top + g, clock_timestamp(), 'bench', 'update', 'invoice', "
               "g, 'pitr bench: before the target, row ' || g, jsonb_build_object('g', g, 'phase', 'before') "
               "FROM (SELECT max(id) AS top FROM audit_log) m, generate_series(1, 100000) g")
        pg_sql(server, PITR_DB, "INSERT INTO pitr_marks (phase) VALUES ('before')")
        [(audit_at_t,)] = pg_sql(server, PITR_DB, "SELECT count(*) FROM audit_log")
        time.sleep(1.1)
        target = datetime.now(UTC)
        [(lsn_t, wal_bytes)] = pg_sql(server, "postgres", "SELECT pg_current_wal_lsn()::text, "
                                      "pg_wal_lsn_diff(pg_current_wal_lsn(), %s::pg_lsn)::bigint", (lsn0,))
        time.sleep(1.1)
        pg_sql(server, PITR_DB, "INSERT INTO pitr_marks (phase) VALUES ('after')")
        pg_sql(server, PITR_DB, "UPDATE invoices SET status = 'cancelled' WHERE id % 20 = 1")
        engine.check()  # a WAL switch, archived now: the WAL after T is in the repository
        info["writes"] = {"wal_bytes_full_stop_to_target": int(wal_bytes), "lsn_at_target": lsn_t,
                          "target": target.isoformat(), "seconds": round(time.perf_counter() - t0, 1),
                          "before_target": "UPDATE 5 % of invoices (jsonb), INSERT 100,000 audit_log rows, 1 mark",
                          "after_target": "1 mark, UPDATE another 5 % of invoices"}
        print(f"pitr: writes after the full backup: {wal_bytes / MB:.1f} MiB of WAL up to T = {target.isoformat()}",
              flush=True)

        # ---- (p1) point-in-time restore to T into a new data directory, until the server is promoted
        dd1 = self.pitr_scratch("p1")
        p1 = self.pitr_restore(settings, dd1, target_time=target)
        p1["marks"] = recover.psql(settings, dd1, p1["port"], "SELECT string_agg(phase, ',' ORDER BY at) FROM pitr_marks",
                                   dbname=PITR_DB)
        [(audit_now,)] = pg_sql(server, PITR_DB, "SELECT count(*) FROM audit_log")
        p1["audit_rows"] = int(recover.psql(settings, dd1, p1["port"], "SELECT count(*) FROM audit_log", dbname=PITR_DB))
        p1["paid_on_rows"] = int(recover.psql(settings, dd1, p1["port"], "SELECT count(*) FROM invoices WHERE "
                                              "meta ? 'paid_on'", dbname=PITR_DB))
        [(paid_on_rows,)] = pg_sql(server, PITR_DB, "SELECT count(*) FROM invoices WHERE meta ? 'paid_on'")
        # at T: the 'before' writes are there, the 'after' ones are not
        p1["state_at_target_ok"] = (p1["marks"] == "before" and p1["audit_rows"] == int(audit_at_t) == int(audit_now)
                                    and p1["paid_on_rows"] == int(paid_on_rows) > 0)
        self.pitr_stop(dd1)
        print(f"pitr: (p1) restore to T {p1['wall_s']:.2f} s (pgbackrest restore {p1['pgbackrest_restore_s']:.2f} s, "
              f"start + replay + promotion {p1['start_to_promoted_s']:.2f} s), timeline {p1['timeline']}, marks "
              f"{p1['marks']!r}", flush=True)

        # ---- (p2) RPO: a writer, no forced WAL switch, then the host is lost; restore the latest state
        pg_sql(server, PITR_DB, "CREATE TABLE rpo_probe (id bigserial PRIMARY KEY, at timestamptz NOT NULL)")
        engine.check()  # a WAL switch now: archive_timeout's 60 s count from here, as after any quiet switch
        switched_at = datetime.now(UTC)
        segments_before = archived_segments(Path(settings.pitr.repo.path))
        self.pitr_writer = writer = RpoWriter(server.dsn(PITR_DB))
        writer.start()
        writer_s = float(self.args.pitr_writer_s)
        print(f"pitr: (p2) writer running for {writer_s:.0f} s (a row every {PITR_WRITER_INTERVAL_S} s, "
              "no forced WAL switch) ...", flush=True)
        time.sleep(writer_s)
        writer.stop()
        self.pitr_writer = None
        lost_at = datetime.now(UTC)  # C: the writer has stopped; the host goes now
        killed = kill_cluster(server)
        if writer.error:
            raise RuntimeError(f"(p2) writer failed: {writer.error}")
        segments_at_loss = archived_segments(Path(settings.pitr.repo.path))
        dd2 = self.pitr_scratch("p2")
        p2 = self.pitr_restore(settings, dd2)  # --latest: no target, replay to the end of the archive
        out = recover.psql(settings, dd2, p2["port"], "SELECT count(*), coalesce(max(id), 0), "
                           "to_char(max(at) AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US') FROM rpo_probe",
                           dbname=PITR_DB)
        self.pitr_stop(dd2)
        count, max_id, max_at = out.split("|")
        recovered_at = datetime.fromisoformat(max_at).replace(tzinfo=UTC) if max_at else None
        segments_after = archived_segments(Path(settings.pitr.repo.path))
        new_segments = [s for s in segments_at_loss if s not in segments_before]
        p2.update({
            "lost_at": lost_at.isoformat(), "writer_started": writer.first_at.isoformat() if writer.first_at else None,
            "writer_last_commit": writer.last_at.isoformat() if writer.last_at else None,
            "rows_committed": writer.committed, "rows_recovered": int(count), "rows_lost": writer.committed - int(count),
            "recovered_ids_contiguous": int(count) == int(max_id),
            "newest_recovered_commit": recovered_at.isoformat() if recovered_at else None,
            "rpo_s": (lost_at - recovered_at).total_seconds() if recovered_at else None,
            "writer_last_commit_to_loss_s": (lost_at - writer.last_at).total_seconds() if writer.last_at else None,
            "switch_before_writer": switched_at.isoformat(),
            "newest_recovered_since_switch_s": (recovered_at - switched_at).total_seconds() if recovered_at else None,
            "segments_archived_during_writer": new_segments,
            "segments_archived_after_loss": [s for s in segments_after if s not in segments_at_loss],
            "processes_killed": killed, "writer_s": writer_s, "writer_interval_s": PITR_WRITER_INTERVAL_S})
        print(f"pitr: (p2) restore --latest {p2['wall_s']:.2f} s; rows committed {p2['rows_committed']}, recovered "
              f"{p2['rows_recovered']}, lost {p2['rows_lost']}; RPO {p2['rpo_s']} s", flush=True)
        info["section_s"] = round(time.perf_counter() - t_section, 1)
        info["loadavg_1m_at_end"] = os.getloadavg()[0]
        info["p0"], info["p1"], info["p2"] = p0, p1, p2
        return info


# --------------------------------------------------------------------------------------------
# report
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------


def run_case(runs: dict[str, list[dict[str, Any]]], key: str, fn: Any, rep: int, repeat: int) -> None:
    """Run one case once, note the load around it, and keep its result under ``key``."""
    print(f"[{rep + 1}/{repeat}] running {key} ...", end=" ", flush=True)
    load0 = os.getloadavg()[0]
    r = fn()
    r["loadavg_1m_before_after"] = [load0, os.getloadavg()[0]]
    runs.setdefault(key, []).append(r)
    print(f"{r['wall_s']:.2f} s", flush=True)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size-mb", type=int, default=500)
    p.add_argument("--small-mb", type=int, default=250)
    p.add_argument("--out", default=str(Path(__file__).resolve().parent / "out"))
    p.add_argument("--repeat", type=int, default=1,
                   help="run the six cases N times (interleaved); report the median wall time per case")
    p.add_argument("--keep", action="store_true", help="keep the temp dir (configs, child JSON) for inspection")
    p.add_argument("--profile", action="store_true",
                   help="afterwards, one extra (c) run on the big database under cProfile (not in the figures)")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--child-out", help=argparse.SUPPRESS)
    p.add_argument("--skip-redis", action="store_true", help="leave out the Redis cases (r0) and (r1)")
    p.add_argument("--skip-uploads", action="store_true",
                   help="leave out the uploads cases (u1)-(u3) and their rsync baseline (s1)-(s3)")
    p.add_argument("--skip-pg", action="store_true",
                   help="leave out the PostgreSQL dump cases (a), (b), (c), (c7), (cn) and their databases")
    p.add_argument("--skip-pitr", action="store_true",
                   help="leave out the point-in-time recovery section (p0)-(p2) (about 3 minutes, run once)")
    p.add_argument("--skip-recovery", action="store_true",
                   help="leave out the whole-ERP recovery (w) (run once; alone it generates only the big database)")
    p.add_argument("--pitr-writer-s", type=float, default=PITR_WRITER_S,
                   help="(p2): how long the writer runs before the host is lost (default %(default)s)")
    p.add_argument("--child-profile", help=argparse.SUPPRESS)
    p.add_argument("--child-asset", default="postgres_dump", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        return child_main(args.child, args.child_out, PARTITION, args.child_profile, args.child_asset)

    import pyrage

    if not os.path.exists(TIME_BIN):
        sys.exit(f"{TIME_BIN} (Debian package 'time') is needed to measure the peak RSS of (a) and (b)")
    started = datetime.now(UTC)
    bench = Bench(args)
    results: dict[str, Any] = {"started_at": started.isoformat(timespec="seconds"), "repeat": args.repeat}
    t_all = time.perf_counter()
    try:
        dbs = bench.setup()
        results["databases"] = dbs
        results["machine"] = {
            "cores": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform(),
            "pg_dump": subprocess.run([f"{bench.bindir}/pg_dump", "--version"], capture_output=True,
                                      text=True).stdout.strip(),
            "gzip": subprocess.run(["gzip", "--version"], capture_output=True, text=True).stdout.splitlines()[0],
            "gpg": subprocess.run(["gpg", "--version"], capture_output=True, text=True).stdout.splitlines()[0],
        }
        public = str(pyrage.x25519.Identity.generate().to_public())
        runs: dict[str, list[dict[str, Any]]] = {}
        big, small = (dbs["big"]["dbname"], dbs["small"]["dbname"]) if dbs else ("", "")
        for rep in range(args.repeat if not args.skip_pg else 0):
            for key, fn in (("a_big", lambda: bench.case_a(big)), ("b_big", lambda: bench.case_b(big)),
                            ("c_big", lambda rep=rep: bench.case_c(big, f"big{rep}", public, history=HISTORY)),
                            ("c7_big", lambda rep=rep: bench.case_c(big, f"big-l7-{rep}", public,
                                                                    compression=LEVEL7_COMPRESSION)),
                            ("cn_big", lambda rep=rep: bench.case_c(big, f"big-nocount-{rep}", public,
                                                                    pg_extra={"exact_row_counts": False})),
                            ("a_small", lambda: bench.case_a(small)),
                            ("c_small", lambda rep=rep: bench.case_c(small, f"small{rep}", public))):
                run_case(runs, key, fn, rep, args.repeat)
        if not args.skip_pitr:
            if not shutil.which("pgbackrest"):
                sys.exit("pgbackrest (Debian package 'pgbackrest') is needed for the PITR section; or use --skip-pitr")
            results["pitr"] = bench.pitr_section(public)
            results["machine"]["pgbackrest"] = results["pitr"]["pgbackrest"]
            print(f"pitr section took {results['pitr']['section_s']} s", flush=True)
        if not args.skip_redis:
            t_redis = time.perf_counter()
            results["redis"] = bench.setup_redis()
            results["machine"]["redis"] = f"redis-server {results['redis']['redis_version']}"
            for rep in range(args.repeat):
                for key, fn in (("r0", lambda rep=rep: bench.case_r0(f"{rep}")),
                                ("r1", lambda rep=rep: bench.case_r1(f"redis{rep}", public))):
                    run_case(runs, key, fn, rep, args.repeat)
            results["redis"]["section_s"] = round(time.perf_counter() - t_redis, 1)
            print(f"redis section took {results['redis']['section_s']} s", flush=True)
        if not args.skip_uploads:
            if shutil.which("rsync") is None:
                sys.exit("rsync (Debian package 'rsync') is needed for the uploads baseline; or use --skip-uploads")
            t_up = time.perf_counter()
            for rep in range(args.repeat):
                results["uploads"] = bench.uploads_scenario(runs, public, rep, args.repeat)
            results["uploads"]["section_s"] = round(time.perf_counter() - t_up, 1)
            print(f"uploads section took {results['uploads']['section_s']} s", flush=True)
        if not args.skip_recovery:
            results["recovery"] = bench.recovery_section(dbs)
            print(f"recovery section took {results['recovery']['section_s']} s", flush=True)
        cases: dict[str, Any] = {}
        for key, rs in runs.items():  # the repetition with the median wall time stands for the case
            chosen = dict(sorted(rs, key=lambda r: r["wall_s"])[(len(rs) - 1) // 2])
            chosen["wall_s_all_runs"] = [round(r["wall_s"], 3) for r in rs]
            if key.startswith("c") or key == "r1":  # c_big, c7_big, c_small, r1
                chosen["peak_rss_bytes_all_runs"] = [r["peak_rss_bytes"] for r in rs]
                chosen["peak_rss_bytes"] = max(r["peak_rss_bytes"] for r in rs)  # worst case for the RSS target
                chosen["staging_minus_artifact_all_runs"] = [r["max_staging_bytes"] - r["artifact_bytes"] for r in rs]
            cases[key] = chosen
        results["cases"] = cases
        if "c_big" in runs:
            results["signing"] = {"import_s_all_runs": signing_import_seconds(),
                                  "runs": [{"signing_s": r["signing_s"], "wall_s": r["wall_s"], "history": r["history"]}
                                           for r in runs["c_big"]]}
        if args.profile:
            if "big" in dbs:  # not with --skip-pg
                print("profiling (c) on the big database (cProfile; not part of the figures) ...", flush=True)
                prof = bench.case_c(dbs["big"]["dbname"], "big-profiled", public, profile=True)
                results["profile_run"] = {"wall_s": prof["wall_s"], "steps": prof["steps"],
                                          "file": str(bench.out / "profile-big-profiled.txt")}
            if "r1" in cases:
                print("profiling (r1) (cProfile; not part of the figures) ...", flush=True)
                prof = bench.case_r1("redis-profiled", public, profile=True)
                results["profile_run_redis"] = {"wall_s": prof["wall_s"], "steps": prof["steps"],
                                                "file": str(bench.out / "profile-redis-profiled.txt")}
        rows, targets = build_report(results)
        results["table"] = rows
        results["targets"] = targets
        results["bench_seconds"] = round(time.perf_counter() - t_all, 1)
        (bench.out / "results.json").write_text(json.dumps(results, indent=2, default=str))
        md = render_markdown(results, rows, targets)
        (bench.out / "results.md").write_text(md)
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
        print(f"bench took {results['bench_seconds']} s; wrote {bench.out / 'results.json'} and {bench.out / 'results.md'}")
    finally:
        bench.teardown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
