"""The generated data every case runs on: the ERP-like PostgreSQL database, the Redis keys, the uploads tree.

- ERP-like database: the bench's own schema (``SCHEMA``: customers, articles, invoices, invoice lines, an audit
  log; text, numerics, jsonb; primary keys and indexes added after the load, ``INDEXES``) and a set-based loader
  (``load_statements``) whose size scales with the number of invoices; ``calibrate`` measures bytes per invoice so
  that ``--size-mb`` / ``--small-mb`` pick the count. This is the one place of this schema: the tests' ERP tables
  (``erp_backup_pipeline_tests/conftest.py``) and the demo ERP's SQLite tables (``erp_backup_pipeline.core.demo``)
  are other, much smaller datasets of other shapes.
- Redis: ``fill_redis``, 1 M keys of session/cache shape by pipelined writes, seeded.
- Uploads: ``generate_uploads_tree`` (10,000 PDF-/JPEG-like files, ~1 GB, seeded), ``modify_uploads_tree`` (the
  1 % change between (u2) and (u3)), ``pdf_like`` (one PDF-shaped file; also the recovery section's uploads).
"""

from __future__ import annotations

import os
import random
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.common import MB

UPLOAD_FILES = 10_000
UPLOAD_SCANS = 135  # 1-10 MB each; the rest are 1-50 KB PDF-like files
UPLOAD_CHANGED = 100  # 1 % of the files, changed between (u2) and (u3)
UPLOAD_SEED = 20261125

# --------------------------------------------------------------------------------------------
# the ERP-like PostgreSQL database
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


# --------------------------------------------------------------------------------------------
# uploads tree generator: the ERP's documents (invoices as PDF, scanned delivery notes)
# --------------------------------------------------------------------------------------------

PDF_WORDS = (b"/Type /Page /Parent 2 0 R /MediaBox [0 0 595.28 841.89] /Resources << /Font << /F1 5 0 R /F2 6 0 R >> "
             b"/ProcSet [/PDF /Text /ImageC] >> /Contents 7 0 R /Filter /FlateDecode /Length /Subtype /Type1 "
             b"/BaseFont /Helvetica-Bold /Encoding /WinAnsiEncoding BT /F1 9 Tf 56.7 760 Td (Rechnung) Tj ET "
             b"(Steinmetz Natursteine GmbH) (Grabstein Granit poliert) (Inschrift vertieft vergoldet) (Netto) "
             b"(MwSt 19 %) (Brutto) (Zahlbar innerhalb 14 Tagen ohne Abzug) (IBAN DE89 3704 0044 0532 0130 00) "
             b"/XObject /Im1 /Width 1240 /Height 1754 /ColorSpace /DeviceRGB /BitsPerComponent 8").split()


def pdf_text(rng: random.Random) -> bytes:
    """40,000 words of PDF text drawn by ``rng``: what ``pdf_like`` cuts a file's text quarter from."""
    return b" ".join(rng.choice(PDF_WORDS) for _ in range(40000))


def pdf_like(rng: random.Random, size: int, text: bytes, n: int) -> bytes:
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
    text = pdf_text(rng)
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
            data = pdf_like(rng, size, text, n)
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

