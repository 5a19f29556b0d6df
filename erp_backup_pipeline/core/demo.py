"""The embedded demo ERP: a SQLite database with realistic tables, a config dir, an uploads dir.

``make run`` creates it under ``./var/demo-erp`` together with an age key and a config file,
so a new user sees a real backup without configuring anything.
"""

from __future__ import annotations

import json
import os
import random
import sqlite3
from datetime import date, timedelta
from pathlib import Path

FIRST = ["Anna", "Ben", "Clara", "David", "Eva", "Felix", "Greta", "Hannah", "Jonas", "Lena", "Max", "Mia", "Paul"]
LAST = ["Müller", "Schmidt", "Schneider", "Fischer", "Weber", "Meyer", "Wagner", "Becker", "Hoffmann", "Steinmetz"]
ARTICLES = ["Granitplatte", "Marmorfliese", "Grabstein", "Fensterbank", "Treppenstufe", "Arbeitsplatte", "Sockel"]

SCHEMA = """
CREATE TABLE IF NOT EXISTS customers (id INTEGER PRIMARY KEY, name TEXT NOT NULL, email TEXT, city TEXT,
  created_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS articles (id INTEGER PRIMARY KEY, sku TEXT UNIQUE NOT NULL, name TEXT NOT NULL,
  price_cents INTEGER NOT NULL, attributes TEXT);
CREATE TABLE IF NOT EXISTS invoices (id INTEGER PRIMARY KEY, customer_id INTEGER NOT NULL REFERENCES customers(id),
  number TEXT UNIQUE NOT NULL, issued_on TEXT NOT NULL, total_cents INTEGER NOT NULL, document_path TEXT);
CREATE TABLE IF NOT EXISTS invoice_lines (id INTEGER PRIMARY KEY, invoice_id INTEGER NOT NULL REFERENCES invoices(id),
  article_id INTEGER NOT NULL REFERENCES articles(id), quantity INTEGER NOT NULL, price_cents INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS audit_log (id INTEGER PRIMARY KEY, at TEXT NOT NULL, actor TEXT NOT NULL, action TEXT NOT NULL,
  details TEXT);
"""


def fill_sqlite(path: Path, customers: int = 200, invoices: int = 1000, seed: int = 7, documents: int = 20) -> None:
    """The demo tables; the first ``documents`` invoices reference their PDF in the uploads (invoices/RE-n.pdf)."""
    rng = random.Random(seed)
    conn = sqlite3.connect(path)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.executescript(SCHEMA)
        start = date(2024, 1, 1)
        conn.executemany("INSERT INTO customers(name, email, city, created_at) VALUES (?,?,?,?)", [
            (f"{rng.choice(FIRST)} {rng.choice(LAST)}", f"kunde{i}@example.com", rng.choice(["Berlin", "Köln", "Passau"]),
             str(start + timedelta(days=rng.randrange(700)))) for i in range(customers)])
        conn.executemany("INSERT INTO articles(sku, name, price_cents, attributes) VALUES (?,?,?,?)", [
            (f"ART-{i:05d}", f"{rng.choice(ARTICLES)} {i}", rng.randrange(500, 250000),
             json.dumps({"stone": rng.choice(["granite", "marble", "slate"]), "mm": rng.choice([20, 30, 40])}))
            for i in range(300)])
        for n in range(invoices):
            cur = conn.execute(
                "INSERT INTO invoices(customer_id, number, issued_on, total_cents, document_path) VALUES (?,?,?,?,?)",
                (rng.randrange(1, customers + 1), f"RE-{2024 + n // 600}-{n:05d}",
                 str(start + timedelta(days=n // 3)), 0, f"invoices/RE-{n:05d}.pdf" if n < documents else None))
            inv = cur.lastrowid
            lines = [(inv, rng.randrange(1, 301), rng.randrange(1, 10), rng.randrange(500, 250000))
                     for _ in range(rng.randrange(1, 6))]
            conn.executemany("INSERT INTO invoice_lines(invoice_id, article_id, quantity, price_cents) VALUES (?,?,?,?)", lines)
            conn.execute("UPDATE invoices SET total_cents=? WHERE id=?", (sum(q * p for _, _, q, p in lines), inv))
            conn.execute("INSERT INTO audit_log(at, actor, action, details) VALUES (?,?,?,?)",
                         (str(start + timedelta(days=n // 3)), "system", "invoice.created",
                          json.dumps({"invoice": inv, "lines": len(lines)})))
        conn.commit()
    finally:
        conn.close()


def create_demo(root: Path) -> dict[str, Path]:
    """Create the demo ERP under root (idempotent); returns its parts."""
    root.mkdir(parents=True, exist_ok=True)
    data = root / "data"
    uploads = data / "uploads" / "invoices"
    config = root / "apps" / "backend" / "config"
    for d in (data, uploads, config):
        d.mkdir(parents=True, exist_ok=True)
    db = data / "production.sqlite3"
    if not db.exists():
        fill_sqlite(db)
        for n in range(20):
            (uploads / f"RE-{n:05d}.pdf").write_bytes(b"%PDF-1.4\n% demo invoice " + str(n).encode() + b"\n%%EOF\n")
        (config / "app.json").write_text(json.dumps({"currency": "EUR", "locale": "de-DE"}, indent=2))
        env = root / ".env"
        env.write_text("DATABASE_URL=sqlite:./data/production.sqlite3\nSESSION_SECRET=demo-not-a-secret\n")
        os.chmod(env, 0o600)
    return {"root": root, "sqlite": db, "uploads": data / "uploads", "config": config}
