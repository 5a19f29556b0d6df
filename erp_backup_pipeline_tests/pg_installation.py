"""A PostgreSQL cluster shaped like a real ERP installation, and what to compare a restored copy with.

The database ``erp`` belongs to the application's role ``erp_user`` (which owns every table), grants reads to
``erp_readonly`` (directly and through the group role ``erp_reporting``), has database and role settings, and
uses every identifier form PostgreSQL allows: reserved words, mixed case, spaces, quotes, a line break, non-ASCII,
63-byte names, in schemas, tables, columns, sequences, views, a materialized view, a partitioned table, an
unlogged table, a large object and two extensions (citext, pg_trgm).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg
import yaml
from psycopg import sql

from erp_backup_pipeline_devkit.servers import PostgresServer
from erp_backup_pipeline_tests.conftest import signing_section

APP_PASSWORD = "erp-App-Pw-5c1e9a"
READONLY_PASSWORD = "erp-Ro-Pw-8d2b47"
LONG = "Sehr_langer_Tabellenname_" + "x" * 38  # 63 bytes: the longest name PostgreSQL keeps
ROLES = """
CREATE ROLE erp_user LOGIN CREATEDB PASSWORD '{app}';
CREATE ROLE erp_readonly LOGIN CONNECTION LIMIT 20 PASSWORD '{ro}';
CREATE ROLE erp_reporting NOLOGIN;
COMMENT ON ROLE erp_reporting IS 'Berichte (read-only)';
GRANT erp_reporting TO erp_readonly;
ALTER ROLE erp_user SET work_mem = '32MB';
CREATE DATABASE erp OWNER erp_user;
ALTER DATABASE erp SET search_path = public, "Archiv 2025";
ALTER ROLE erp_readonly IN DATABASE erp SET statement_timeout = '5s';
REVOKE CONNECT, TEMPORARY ON DATABASE erp FROM PUBLIC;
GRANT CONNECT ON DATABASE erp TO erp_readonly;
"""
NAMES = f"""
CREATE EXTENSION citext;
CREATE EXTENSION pg_trgm;
CREATE TABLE "order" (id bigserial PRIMARY KEY, "customerId" citext NOT NULL, note text, total numeric(12,2));
CREATE INDEX order_note_trgm ON "order" USING gin (note gin_trgm_ops);
CREATE TABLE "user" (id int PRIMARY KEY, "select" text, "Group" text);
CREATE TABLE "Invoice" (id bigserial PRIMARY KEY, "customerId" bigint REFERENCES "order"(id), "Betrag €" numeric(12,2));
CREATE SCHEMA "Archiv 2025";
CREATE TABLE "Archiv 2025"."Kunden Alt" (id int PRIMARY KEY, "Name mit Leerzeichen" text);
CREATE TABLE "Größe ÄÖÜ" (id int, "naïve Spalte" text);
CREATE TABLE "a""quote" ("it""s" int);
CREATE TABLE "{LONG}" (id int);
CREATE TABLE "Zeilen
umbruch" (id int);
CREATE SEQUENCE "Rechnung Nr" START 1000;
SELECT nextval('"Rechnung Nr"'), nextval('"Rechnung Nr"');
CREATE VIEW "Offene Posten" AS SELECT o.id, o."customerId", o.total FROM "order" o WHERE o.total > 100;
CREATE MATERIALIZED VIEW "Umsatz je Kunde" AS SELECT "customerId", sum(total) AS summe FROM "order" GROUP BY 1;
CREATE TABLE "Buchung" (id int, at date) PARTITION BY RANGE (at);
CREATE TABLE "Buchung 2025" PARTITION OF "Buchung" FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
CREATE TABLE buchung_2026 PARTITION OF "Buchung" FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
CREATE UNLOGGED TABLE cache_entries (k text PRIMARY KEY, v text);
CREATE TABLE documents (id int PRIMARY KEY, content oid);
INSERT INTO "order"("customerId", note, total)
  SELECT 'Kunde-' || (i % 37), 'Lieferung ' || md5(i::text), round((i * 13.37)::numeric, 2) FROM generate_series(1, 400) i;
INSERT INTO "user" SELECT i, 'x' || i, CASE WHEN i % 2 = 0 THEN 'Vertrieb' END FROM generate_series(1, 30) i;
INSERT INTO "Invoice"("customerId", "Betrag €") SELECT 1 + i % 400, i * 2.5 FROM generate_series(1, 250) i;
INSERT INTO "Archiv 2025"."Kunden Alt" SELECT i, 'Alt Kunde ' || i FROM generate_series(1, 60) i;
INSERT INTO "Größe ÄÖÜ" VALUES (1, 'Straße'), (2, 'Übergröße');
INSERT INTO "a""quote" VALUES (1), (2), (3);
INSERT INTO "{LONG}" SELECT generate_series(1, 5);
INSERT INTO "Zeilen
umbruch" VALUES (7);
INSERT INTO "Buchung" SELECT i, date '2025-06-01' + i FROM generate_series(1, 300) i;
INSERT INTO cache_entries VALUES ('a', 'b');
INSERT INTO documents VALUES (1, lo_from_bytea(0, 'Rechnung RE-0001 als PDF'));
REFRESH MATERIALIZED VIEW "Umsatz je Kunde";
ANALYZE;
"""
GRANTS = """
GRANT SELECT ON ALL TABLES IN SCHEMA public TO erp_readonly;
GRANT USAGE ON SCHEMA "Archiv 2025" TO erp_readonly;
GRANT SELECT ON "Archiv 2025"."Kunden Alt" TO erp_reporting;
GRANT SELECT ON "Invoice" TO erp_reporting;
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO erp_readonly;
"""
USER_TABLES = ("SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
               " WHERE c.relkind IN ('r', 'p', 'm') AND n.nspname NOT IN ('pg_catalog', 'information_schema')"
               " AND n.nspname !~ '^pg_' ORDER BY 1, 2")
PRIVILEGES = ("SELECT n.nspname, c.relname, c.relkind::text, pg_get_userbyid(c.relowner),"
              " array(SELECT coalesce(nullif(pg_get_userbyid(a.grantee), 'unknown (OID=0)'), 'PUBLIC') || ' '"
              " || a.privilege_type FROM aclexplode(coalesce(c.relacl, acldefault('r', c.relowner))) a ORDER BY 1)"
              " FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
              " WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S') AND n.nspname NOT IN ('pg_catalog', 'information_schema')"
              " AND n.nspname !~ '^pg_' ORDER BY 1, 2")


def create_installation(server: PostgresServer) -> None:
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        for statement in ROLES.format(app=APP_PASSWORD, ro=READONLY_PASSWORD).strip().split(";\n"):
            conn.execute(statement)  # one at a time: CREATE DATABASE refuses a transaction block
    with psycopg.connect(server.dsn("erp", "erp_user", APP_PASSWORD), autocommit=True) as conn:
        conn.execute(NAMES)
        conn.execute(GRANTS)
        loid = conn.execute("SELECT content FROM documents").fetchone()[0]  # type: ignore[index]
        conn.execute(f"GRANT SELECT ON LARGE OBJECT {int(loid)} TO erp_readonly")


def shape(dsn: str) -> dict[str, Any]:
    """Everything a restored copy must equal the source in: per table a digest of every row (in a fixed order),
    owners and privileges per relation, sequences, large objects, view definitions, the database's settings."""
    with psycopg.connect(dsn) as conn:
        digests = {}
        for nsp, rel in conn.execute(USER_TABLES).fetchall():
            query = sql.SQL("SELECT count(*), md5(coalesce(string_agg(t::text, E'\\n' ORDER BY t::text), '')) FROM {} t")
            digests[(nsp, rel)] = tuple(conn.execute(query.format(sql.Identifier(nsp, rel))).fetchone() or ())
        return {
            "rows": digests,
            "privileges": conn.execute(PRIVILEGES).fetchall(),
            "sequence": conn.execute('SELECT last_value FROM "Rechnung Nr"').fetchone(),
            "large_objects": conn.execute("SELECT lo_get(content), pg_get_userbyid(m.lomowner), m.lomacl::text FROM documents d"
                                          " JOIN pg_largeobject_metadata m ON m.oid = d.content").fetchall(),
            "views": conn.execute("SELECT viewname, definition FROM pg_views WHERE schemaname = 'public' ORDER BY 1").fetchall(),
            "extensions": conn.execute("SELECT extname FROM pg_extension ORDER BY 1").fetchall(),
            "default_privileges": conn.execute("SELECT defaclacl::text FROM pg_default_acl").fetchall(),
            "database": conn.execute(
                "SELECT pg_get_userbyid(datdba), pg_encoding_to_char(encoding), datcollate,"
                " array(SELECT unnest(setconfig) FROM pg_db_role_setting s WHERE s.setdatabase = d.oid AND s.setrole = 0),"
                " array(SELECT pg_get_userbyid(r.setrole) || ':' || unnest(r.setconfig) FROM pg_db_role_setting r"
                "       WHERE r.setdatabase = d.oid AND r.setrole <> 0),"
                " array(SELECT coalesce(nullif(pg_get_userbyid(a.grantee), 'unknown (OID=0)'), 'PUBLIC') || ' ' ||"
                "       a.privilege_type FROM aclexplode(d.datacl) a ORDER BY 1)"
                " FROM pg_database d WHERE datname = current_database()").fetchone(),
        }


def roles_shape(server: PostgresServer) -> dict[str, Any]:
    """The installation's roles as the server has them: attributes, settings, memberships, comments."""
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        return {
            "roles": conn.execute(
                "SELECT rolname, rolsuper, rolinherit, rolcreaterole, rolcreatedb, rolcanlogin, rolconnlimit,"
                " shobj_description(oid, 'pg_authid'), array(SELECT unnest(setconfig) FROM pg_db_role_setting"
                " WHERE setrole = r.oid AND setdatabase = 0) FROM pg_roles r WHERE rolname LIKE 'erp%' ORDER BY 1").fetchall(),
            "members": conn.execute(
                "SELECT g.rolname, m.rolname FROM pg_auth_members a JOIN pg_roles g ON g.oid = a.roleid"
                " JOIN pg_roles m ON m.oid = a.member WHERE m.rolname LIKE 'erp%' ORDER BY 1, 2").fetchall(),
        }


def application_uses_every_table(dsn_app: str, dsn_readonly: str) -> None:
    """The application's role reads and writes every table; the read-only role reads every table and writes none."""
    with psycopg.connect(dsn_app) as conn:
        tables = [t for t in conn.execute(USER_TABLES.replace("'r', 'p', 'm'", "'r', 'p'")).fetchall()]
        for nsp, rel in tables:
            ident = sql.Identifier(nsp, rel)
            conn.execute(sql.SQL("SELECT * FROM {} LIMIT 1").format(ident))
            conn.execute(sql.SQL("INSERT INTO {0} SELECT * FROM {0} WHERE false").format(ident))
            conn.execute(sql.SQL("DELETE FROM {} WHERE false").format(ident))
        conn.execute("""INSERT INTO "order"("customerId", note, total) VALUES ('neu', 'nach dem Restore', 1)""")
        conn.execute("SELECT lo_get(content) FROM documents")
        conn.rollback()
    with psycopg.connect(dsn_readonly) as conn:
        for nsp, rel in tables:
            if (nsp, rel) == ("public", "documents"):
                conn.execute("SELECT lo_get(content) FROM documents")
            conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(nsp, rel)))
        conn.rollback()
        try:
            conn.execute("""INSERT INTO "order"("customerId") VALUES ('x')""")
        except psycopg.errors.InsufficientPrivilege:
            conn.rollback()
        else:
            raise AssertionError("the read-only role could write after the restore")


def write_config(path: Path, tmp: Path, age_identity: tuple[Path, str], server: PostgresServer, user: str,
                 password: str | None, **extra: Any) -> Path:
    source = {"host": "127.0.0.1", "port": server.port, "user": user, "dbname": "erp", "sslmode": "disable", **extra}
    if password is not None:
        source["password"] = password
    path.write_text(yaml.safe_dump({
        "staging_dir": str(tmp / "staging"),
        "encryption": {"recipients": [age_identity[1]], "identity_file": str(age_identity[0])},
        "signing": signing_section(),
        "destinations": [{"type": "local", "path": str(tmp / "backups")}],
        "sources": {"postgres": source}}))
    return path


def cli(config: Path, *args: str, password: str | None = None) -> subprocess.CompletedProcess[str]:
    """erp-backup in its own process, as an operator runs it; PGPASSWORD for --server."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    if password is not None:
        env["PGPASSWORD"] = password
    return subprocess.run([sys.executable, "-m", "erp_backup_pipeline.cli", "--config", str(config), *args],
                          capture_output=True, text=True, timeout=180, env=env)
