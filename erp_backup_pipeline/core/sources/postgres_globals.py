"""What a PostgreSQL database needs from its cluster, read in the backup's own run.

A logical dump holds a database's objects with their owners and grants, by role name; the roles, their
memberships and settings, and the database's own properties (owner, encoding, locale, settings, ACL) live in
the cluster. Without them a restore onto a fresh server fails (``role "erp_readonly" does not exist``) and a
restore beside the original cannot give the new database its owner and settings. This module reads them:

- ``cluster_facts(conn, ...)``: the plaintext facts the manifest records (names only, no setting values):
  server version, the database's owner, encoding and locale, the roles it depends on (owners, grantees,
  role-in-database settings, then up and down their memberships; the predefined ``pg_*`` roles excluded), the
  owners, the extensions. A role that may not read a catalog it needs gets one line naming it.
- ``snapshot_facts(conn)``: measured in pg_dump's own snapshot (``postgres._PgDumpStream``): rows per table,
  large objects, a digest of every relation's and schema's owner and privileges, and the tables the database's
  owner could not read; the restore drill measures the same on the restored copy.
- ``globals_sql`` runs ``pg_dumpall --globals-only`` (``--no-role-passwords`` unless password hashes are
  asked for): the standard tools' way back (``psql -f``), kept verbatim as the ``globals`` attachment;
  ``database_document`` is the ``database`` attachment: the same roles and the database as structured data
  (attributes, settings, memberships, comments, password hashes when recorded, the database's settings and
  ACL), from which the product's restore creates what a target lacks.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import psycopg

from erp_backup_pipeline.errors import SourceError, VerifyError

DOCUMENT_FORMAT = 1
USER_SCHEMAS = ("n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ '^pg_toast'"
                " AND n.nspname !~ '^pg_temp_'")
NOT_EXTENSION_MEMBER = ("NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass"
                        " AND d.objid = c.oid AND d.deptype = 'e')")
# the user's tables: ordinary and partitioned, not temporary, not an extension's own
TABLES = ("SELECT c.oid, n.nspname, c.relname, quote_ident(n.nspname) || '.' || quote_ident(c.relname), c.relkind"
          " FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
          f" WHERE c.relkind IN ('r', 'p') AND c.relpersistence <> 't' AND {USER_SCHEMAS} AND {NOT_EXTENSION_MEMBER}"
          " ORDER BY 2, 3")

_ROLES = """
WITH RECURSIVE db AS (SELECT oid, datdba FROM pg_database WHERE datname = current_database()),
base(oid) AS (
  SELECT s.refobjid FROM pg_shdepend s, db WHERE s.refclassid = 'pg_authid'::regclass
     AND (s.dbid = db.oid OR (s.dbid = 0 AND s.classid = 'pg_database'::regclass AND s.objid = db.oid))
  UNION SELECT datdba FROM db
  UNION SELECT r.setrole FROM pg_db_role_setting r, db WHERE r.setdatabase = db.oid AND r.setrole <> 0),
up(oid) AS (SELECT oid FROM base UNION SELECT m.roleid FROM pg_auth_members m JOIN up ON m.member = up.oid),
down(oid) AS (SELECT oid FROM base UNION SELECT m.member FROM pg_auth_members m JOIN down ON m.roleid = down.oid)
SELECT r.rolname FROM pg_roles r WHERE r.oid IN (SELECT oid FROM up UNION SELECT oid FROM down)
  AND r.rolname !~ '^pg_' ORDER BY 1
"""
_OWNERS = """
SELECT DISTINCT pg_get_userbyid(s.refobjid) FROM pg_shdepend s, pg_database d
 WHERE d.datname = current_database() AND s.dbid = d.oid AND s.deptype = 'o' AND s.refclassid = 'pg_authid'::regclass
UNION SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = current_database() ORDER BY 1
"""
_DATABASE = """
SELECT to_jsonb(d) - 'datacl', pg_get_userbyid(d.datdba), pg_encoding_to_char(d.encoding),
       shobj_description(d.oid, 'pg_database'), d.datacl IS NULL, t.spcname
  FROM pg_database d LEFT JOIN pg_tablespace t ON t.oid = d.dattablespace WHERE d.datname = current_database()
"""
ROLE_ATTRIBUTES = ("rolsuper", "rolinherit", "rolcreaterole", "rolcreatedb", "rolcanlogin", "rolreplication",
                   "rolbypassrls", "rolconnlimit")
_PRIVILEGES = f"""
SELECT 'relation', n.nspname, c.relname, c.relkind::text, pg_get_userbyid(c.relowner),
  array(SELECT coalesce(nullif(pg_get_userbyid(a.grantee), 'unknown (OID=0)'), 'PUBLIC') || ' ' || a.privilege_type
               || CASE WHEN a.is_grantable THEN ' grantable' ELSE '' END
          FROM aclexplode(coalesce(c.relacl, acldefault(CASE WHEN c.relkind = 'S' THEN 's' ELSE 'r' END::"char",
                                                        c.relowner))) a ORDER BY 1)::text
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f') AND c.relpersistence <> 't' AND {USER_SCHEMAS}
   AND {NOT_EXTENSION_MEMBER}
UNION ALL
SELECT 'schema', n.nspname, '', 'n', pg_get_userbyid(n.nspowner),
  array(SELECT coalesce(nullif(pg_get_userbyid(a.grantee), 'unknown (OID=0)'), 'PUBLIC') || ' ' || a.privilege_type
               || CASE WHEN a.is_grantable THEN ' grantable' ELSE '' END
          FROM aclexplode(coalesce(n.nspacl, acldefault('n', n.nspowner))) a ORDER BY 1)::text
  FROM pg_namespace n
 WHERE {USER_SCHEMAS} AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_namespace'::regclass
                                     AND d.objid = n.oid AND d.deptype = 'e')
"""
_OWNER_CANNOT_READ = f"""
SELECT quote_ident(n.nspname) || '.' || quote_ident(c.relname) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f') AND c.relpersistence <> 't' AND {USER_SCHEMAS} AND {NOT_EXTENSION_MEMBER}
   AND NOT has_table_privilege(coalesce((SELECT oid FROM pg_roles WHERE rolname = %(owner)s),
                                        (SELECT datdba FROM pg_database WHERE datname = current_database())), c.oid, 'SELECT')
 ORDER BY 1
"""


def _catalog_error(user: str, exc: psycopg.Error) -> SourceError:
    reason = (exc.diag.message_primary if exc.diag else None) or str(exc).splitlines()[0]
    return SourceError(f"postgres: the backup role {user} cannot read role definitions ({reason}); grant it SELECT "
                       "on that catalog, or back up as the database's owner or a superuser")


def _column(conn: psycopg.Connection[Any], query: str, params: Any = None) -> list[Any]:
    return [r[0] for r in conn.execute(query, params).fetchall()]


def cluster_facts(conn: psycopg.Connection[Any], user: str, role_passwords: bool) -> dict[str, Any]:
    """The manifest's facts about what the database needs from its cluster; SourceError (one line) when the
    backup role may not read them, or may not read the password hashes it is asked to record."""
    try:
        version = int(conn.execute("SHOW server_version_num").fetchone()[0])  # type: ignore[index]
        props, owner, encoding, _comment, _acl_default, tablespace = conn.execute(_DATABASE).fetchone()  # type: ignore[misc]
        roles = _column(conn, _ROLES)
        owners = _column(conn, _OWNERS)
        extensions = dict(conn.execute("SELECT extname, extversion FROM pg_extension ORDER BY 1").fetchall())
        superuser = bool(conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").fetchone()[0])  # type: ignore[index]
    except psycopg.errors.InsufficientPrivilege as exc:
        raise _catalog_error(user, exc) from None
    if role_passwords and not superuser:
        raise SourceError(f"postgres: the backup role {user} may not read role password hashes (they are in "
                          "pg_authid, readable by a superuser only); back up as a superuser, or set "
                          "sources.postgres.role_passwords: false to record the roles without them")
    database = {"name": props.get("datname"), "owner": owner, "encoding": encoding, "collate": props.get("datcollate"),
                "ctype": props.get("datctype"), "locale_provider": {"i": "icu", "c": "libc", "b": "builtin"}.get(
                    props.get("datlocprovider") or "c", "libc"),
                "icu_locale": props.get("daticulocale") or props.get("datlocale"), "tablespace": tablespace}
    return {"server_version_num": version, "database": database, "roles": roles, "owners": owners,
            "extensions": extensions, "role_passwords": role_passwords}


def _privileges_digest(conn: psycopg.Connection[Any]) -> tuple[str, int]:
    rows = sorted(tuple(r) for r in conn.execute(_PRIVILEGES).fetchall())
    text = "\n".join("\t".join(str(v) for v in r) for r in rows)
    return hashlib.sha256(text.encode()).hexdigest(), len(rows)


def snapshot_facts(conn: psycopg.Connection[Any], rows: bool = True, owner: str | None = None) -> dict[str, Any]:
    """What a restored copy must hold again, measured in the connection's snapshot (pg_dump's, when exported):
    rows per table (``schema.table`` quoted as PostgreSQL quotes them; not with ``rows=False``), large objects,
    the owner/privileges digest and the tables the database's owner (or ``owner``, the source database's owner
    when a restored copy is measured) cannot read."""
    from psycopg import sql

    found: dict[str, Any] = {}
    if rows:
        found["row_counts"] = counts = {}
        for _oid, nsp, rel, name, _kind in conn.execute(TABLES).fetchall():
            query = sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(nsp, rel))
            counts[name] = int(conn.execute(query).fetchone()[0])  # type: ignore[index]
    digest, objects = _privileges_digest(conn)
    return {**found,
            "large_objects": int(conn.execute("SELECT count(*) FROM pg_largeobject_metadata").fetchone()[0]),  # type: ignore[index]
            "privileges": {"sha256": digest, "objects": objects},
            "owner_cannot_read": _column(conn, _OWNER_CANNOT_READ, {"owner": owner})}


def database_document(conn: psycopg.Connection[Any], facts: dict[str, Any]) -> dict[str, Any]:
    """The ``database`` attachment: the recorded roles and the database, as the restore needs them."""
    names = list(facts.get("roles") or [])
    conn.execute("SET DateStyle = ISO")
    cols = ", ".join(ROLE_ATTRIBUTES)
    roles: dict[str, dict[str, Any]] = {}
    for row in conn.execute(f"SELECT rolname, {cols}, rolvaliduntil::text, shobj_description(oid, 'pg_authid')"
                            " FROM pg_roles WHERE rolname = ANY(%s) ORDER BY 1", (names,)).fetchall():
        roles[row[0]] = {**dict(zip(ROLE_ATTRIBUTES, row[1:9], strict=True)), "valid_until": row[9], "comment": row[10],
                         "settings": [], "password": None}
    for name, config in conn.execute("SELECT r.rolname, s.setconfig FROM pg_db_role_setting s JOIN pg_roles r"
                                     " ON r.oid = s.setrole WHERE s.setdatabase = 0 AND r.rolname = ANY(%s)",
                                     (names,)).fetchall():
        roles[name]["settings"] = list(config or [])
    if facts.get("role_passwords"):
        for name, password in conn.execute("SELECT rolname, rolpassword FROM pg_authid WHERE rolname = ANY(%s)",
                                           (names,)).fetchall():
            roles[name]["password"] = password
    memberships = [list(r) for r in conn.execute(
        "SELECT g.rolname, m.rolname, a.admin_option FROM pg_auth_members a JOIN pg_roles g ON g.oid = a.roleid"
        " JOIN pg_roles m ON m.oid = a.member WHERE m.rolname = ANY(%s) AND (g.rolname = ANY(%s) OR g.rolname ~ '^pg_')"
        " ORDER BY 1, 2", (names, names)).fetchall()]
    props, owner, _encoding, comment, acl_default, _tablespace = conn.execute(_DATABASE).fetchone()  # type: ignore[misc]
    acl = None if acl_default else [list(r) for r in conn.execute(
        "SELECT CASE WHEN a.grantee = 0 THEN NULL ELSE pg_get_userbyid(a.grantee) END, a.privilege_type,"
        " a.is_grantable FROM pg_database d, aclexplode(d.datacl) a WHERE d.datname = current_database()"
        " ORDER BY 1 NULLS FIRST, 2").fetchall()]
    settings: list[str] = []
    role_settings: dict[str, list[str]] = {}
    for role, config in conn.execute(
            "SELECT CASE WHEN s.setrole = 0 THEN NULL ELSE pg_get_userbyid(s.setrole) END, s.setconfig"
            " FROM pg_db_role_setting s JOIN pg_database d ON d.oid = s.setdatabase"
            " WHERE d.datname = current_database()").fetchall():
        (settings if role is None else role_settings.setdefault(role, [])).extend(config or [])
    database = {**facts.get("database", {}), "owner": owner, "comment": comment, "connlimit": props.get("datconnlimit"),
                "acl": acl, "settings": settings, "role_settings": role_settings}
    return {"format": DOCUMENT_FORMAT, "server_version_num": facts.get("server_version_num"), "database": database,
            "roles": roles, "memberships": memberships, "passwords": bool(facts.get("role_passwords"))}


def globals_argv(pg_dumpall: str, conn_args: list[str], role_passwords: bool) -> list[str]:
    return [pg_dumpall, "--globals-only", *([] if role_passwords else ["--no-role-passwords"]), *conn_args]


def _create_role_lines(name: str) -> tuple[str, str]:
    """``CREATE ROLE`` as pg_dumpall writes it, bare or quoted (it quotes only what needs quoting)."""
    return f"CREATE ROLE {name};", 'CREATE ROLE "' + name.replace('"', '""') + '";'


def check_globals(data: bytes, facts: dict[str, Any]) -> dict[str, Any]:
    """The ``globals`` attachment is pg_dumpall's complete output and creates every recorded role."""
    text = data.decode("utf-8", "replace")
    if "PostgreSQL database cluster dump complete" not in text:
        raise VerifyError("postgres: the globals (pg_dumpall --globals-only) are incomplete")
    absent = [n for n in facts.get("roles") or [] if not any(line in text for line in _create_role_lines(n))]
    if absent:
        raise VerifyError(f"postgres: the globals do not create {len(absent)} role(s) the database needs, "
                          f"first {absent[0]}")
    return {"roles": len(facts.get("roles") or []), "bytes": len(data)}


def check_document(data: bytes, facts: dict[str, Any]) -> dict[str, Any]:
    """The ``database`` attachment parses and describes exactly the roles the manifest names."""
    try:
        doc = load_document(data)
    except ValueError as exc:
        raise VerifyError(f"postgres: the database record is not valid ({exc})") from None
    recorded, expected = set(doc["roles"]), set(facts.get("roles") or [])
    if recorded != expected:
        gone = sorted(expected - recorded) or sorted(recorded - expected)
        raise VerifyError(f"postgres: the database record and the manifest disagree on the roles (first {gone[0]}): a "
                          "role was created or dropped during the backup; back up again")
    return {"roles": len(recorded), "memberships": len(doc["memberships"])}


def load_document(data: bytes) -> dict[str, Any]:
    """The ``database`` attachment, parsed; ValueError when it is not one."""
    doc = json.loads(data)
    if not isinstance(doc, dict) or doc.get("format") != DOCUMENT_FORMAT or not isinstance(doc.get("roles"), dict) \
            or not isinstance(doc.get("database"), dict) or not isinstance(doc.get("memberships"), list):
        raise ValueError("not a database record of format 1")
    return doc
