"""Restoring a PostgreSQL dump onto a server: a new database as the source had it, and the roles it needs.

- ``database_name(text)``: ``--to`` names a database, never a connection string (libpq would expand one
  and write into whatever database it names, past the "exists" guard).
- ``preflight(...)``: everything that would make the restore fail, found before anything changes: a target
  server of an older major version, a pg_restore older than the pg_dump that wrote the dump, an extension
  the target cannot install (named with the Debian package that provides it), a restoring role that may not
  create the database or the missing roles, or may not give objects their recorded owners.
- ``Target``: makes the new database the source's way and undoes it on failure. The database is created
  with the source's encoding and locale; missing roles are created from the ``database`` attachment
  (attributes, settings, comments, memberships; a password only where one was recorded), existing roles are
  left as they are and their differences reported; then the database gets its recorded settings, ACL,
  connection limit, comment and owner. Settings are applied with ``SET … FROM CURRENT`` after ``set_config``
  of the recorded text, so the server parses each value exactly as it did when it was set.
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql

from erp_backup_pipeline.core.sources.postgres_globals import ROLE_ATTRIBUTES
from erp_backup_pipeline.errors import RestoreError

_PLAIN_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_$]*")
NAMEDATALEN = 64
# extensions in PostgreSQL's own server package on Debian (contrib), and the others' packages (MAJOR filled in)
CONTRIB = frozenset(
    "adminpack amcheck autoinc bloom btree_gin btree_gist citext cube dblink dict_int dict_xsyn earthdistance "
    "file_fdw fuzzystrmatch hstore insert_username intagg intarray isn lo ltree moddatetime old_snapshot "
    "pageinspect pg_buffercache pg_freespacemap pg_prewarm pg_stat_statements pg_surgery pg_trgm pg_visibility "
    "pg_walinspect pgcrypto pgrowlocks pgstattuple plpgsql postgres_fdw refint seg sslinfo tablefunc tcn "
    "tsm_system_rows tsm_system_time unaccent uuid-ossp xml2".split())
PACKAGES = {"postgis": "postgresql-{major}-postgis-3", "postgis_topology": "postgresql-{major}-postgis-3",
            "postgis_raster": "postgresql-{major}-postgis-3", "vector": "postgresql-{major}-pgvector",
            "pg_cron": "postgresql-{major}-cron", "pg_partman": "postgresql-{major}-partman",
            "pg_repack": "postgresql-{major}-repack", "pgaudit": "postgresql-{major}-pgaudit",
            "plpython3u": "postgresql-plpython3-{major}", "plperl": "postgresql-plperl-{major}",
            "plperlu": "postgresql-plperl-{major}", "pltcl": "postgresql-pltcl-{major}",
            "timescaledb": "timescaledb-2-postgresql-{major}", "orafce": "postgresql-{major}-orafce",
            "hypopg": "postgresql-{major}-hypopg", "ip4r": "postgresql-{major}-ip4r",
            "pg_squeeze": "postgresql-{major}-squeeze", "pgtap": "postgresql-{major}-pgtap"}
DATABASE_PRIVILEGES = frozenset({"CONNECT", "CREATE", "TEMPORARY"})
SUPERUSER_ATTRIBUTES = ("rolsuper", "rolreplication", "rolbypassrls")
_KEYWORDS = {"rolsuper": ("SUPERUSER", "NOSUPERUSER"), "rolinherit": ("INHERIT", "NOINHERIT"),
             "rolcreaterole": ("CREATEROLE", "NOCREATEROLE"), "rolcreatedb": ("CREATEDB", "NOCREATEDB"),
             "rolcanlogin": ("LOGIN", "NOLOGIN"), "rolreplication": ("REPLICATION", "NOREPLICATION"),
             "rolbypassrls": ("BYPASSRLS", "NOBYPASSRLS")}


def database_name(text: str) -> str:
    """The database ``--to`` names: a plain name (letters, digits, ``_``, ``$``; taken as written) or a quoted
    one (``"Erp Restore"``); RestoreError for anything else, a connection string above all."""
    name = None
    if len(text) >= 2 and text[0] == text[-1] == '"' and '"' not in text[1:-1].replace('""', ""):
        name = text[1:-1].replace('""', '"')
    elif _PLAIN_NAME.fullmatch(text):
        name = text
    if "=" in text or "://" in text:
        raise RestoreError(f"--to {text!r} is a connection string, not a database name: give the database's name "
                           "with --to and the server with --server 'host=… port=… user=…'")
    if not name or "\x00" in name or len(name.encode()) >= NAMEDATALEN:
        raise RestoreError(f"--to {text!r} is not a database name: letters, digits and _ (not starting with a digit), "
                           f'or a quoted name such as \'"Erp Restore"\', at most {NAMEDATALEN - 1} bytes')
    return name


def major(version_num: int) -> int:
    return version_num // 10000 if version_num >= 100000 else version_num // 100


def package_for(extension: str, server_major: int) -> str:
    if extension in CONTRIB:
        return f"postgresql-{server_major} (PostgreSQL's own modules)"
    known = PACKAGES.get(extension)
    if known:
        return known.format(major=server_major)
    return f"postgresql-{server_major}-{extension.removeprefix('pg_').replace('_', '-')} (likely; `apt-cache search` " \
           f"for {extension})"


@dataclass
class Preflight:
    problems: list[str] = field(default_factory=list)
    missing_roles: list[str] = field(default_factory=list)
    foreign_owners: list[str] = field(default_factory=list)  # recorded owners the restoring role may not assign
    superuser: bool = False


def preflight(conn: psycopg.Connection[Any], where: str, facts: dict[str, Any], keep_owner: bool,
              tool_major: int | None) -> Preflight:
    """What would make the restore fail; nothing is changed."""
    pre = Preflight()
    target_num = int(conn.execute("SHOW server_version_num").fetchone()[0])  # type: ignore[index]
    source_num = facts.get("server_version_num")
    if isinstance(source_num, int) and major(target_num) < major(source_num):
        pre.problems.append(f"{where} runs PostgreSQL {major(target_num)}, the dump comes from PostgreSQL "
                            f"{major(source_num)}: a dump restores into the same or a newer major version only")
    dumped_by = re.search(r"\) (\d+)", str(facts.get("pg_dump", "")))
    if tool_major is not None and dumped_by and tool_major < int(dumped_by.group(1)):
        pre.problems.append(f"pg_restore {tool_major} cannot read a dump written by pg_dump {dumped_by.group(1)}: install "
                            f"postgresql-client-{dumped_by.group(1)} (sources.postgres.bin_dir)")
    wanted = sorted(facts.get("extensions") or {})
    if wanted:
        available = {r[0] for r in conn.execute("SELECT name FROM pg_available_extensions WHERE name = ANY(%s)",
                                                (wanted,)).fetchall()}
        for ext in (e for e in wanted if e not in available):
            pre.problems.append(f"extension {ext} is not available on {where}: install the Debian package "
                                f"{package_for(ext, major(target_num))} there first")
    row = conn.execute("SELECT rolsuper, rolcreatedb, rolcreaterole, current_user FROM pg_roles "
                       "WHERE rolname = current_user").fetchone()
    assert row is not None
    pre.superuser, createdb, createrole, user = bool(row[0]), bool(row[1]), bool(row[2]), row[3]
    if not (pre.superuser or createdb):
        pre.problems.append(f"role {user} may not create databases on {where}: it needs CREATEDB (or restore as a "
                            "superuser)")
    roles = list(facts.get("roles") or [])
    existing = {r[0] for r in conn.execute("SELECT rolname FROM pg_roles WHERE rolname = ANY(%s)", (roles,)).fetchall()}
    pre.missing_roles = [r for r in roles if r not in existing]
    if pre.missing_roles and not (pre.superuser or createrole):
        pre.problems.append(f"{len(pre.missing_roles)} role(s) the database needs are missing on {where} "
                            f"({', '.join(pre.missing_roles[:5])}) and role {user} may not create roles: restore as a "
                            "superuser, or create them first")
    if keep_owner and not pre.superuser:
        owners = [o for o in facts.get("owners") or [] if o != user]
        allowed = {r[0] for r in conn.execute(
            "SELECT rolname FROM pg_roles WHERE rolname = ANY(%s) AND pg_has_role(current_user, oid, 'MEMBER')",
            (owners,)).fetchall()}
        pre.foreign_owners = foreign = [o for o in owners if o not in allowed]
        if foreign:
            pre.problems.append(f"restoring with the recorded owners needs a superuser or membership of role {user} in "
                                f"{', '.join(foreign[:5])}: restore as a superuser, or with --no-owner to own "
                                f"everything as {user}")
    return pre


def _locale_clause(db: dict[str, Any]) -> sql.Composable:
    parts: list[sql.Composable] = [sql.SQL("TEMPLATE template0")]
    if db.get("encoding"):
        parts.append(sql.SQL("ENCODING {}").format(sql.Literal(db["encoding"])))
    if db.get("collate"):
        parts.append(sql.SQL("LC_COLLATE {}").format(sql.Literal(db["collate"])))
    if db.get("ctype"):
        parts.append(sql.SQL("LC_CTYPE {}").format(sql.Literal(db["ctype"])))
    if db.get("locale_provider") == "icu" and db.get("icu_locale"):
        parts.append(sql.SQL("LOCALE_PROVIDER icu ICU_LOCALE {}").format(sql.Literal(db["icu_locale"])))
    return sql.SQL(" ").join(parts)


def _set_from_current(conn: psycopg.Connection[Any], alter: sql.Composable, entry: str) -> str | None:
    """``ALTER … SET name FROM CURRENT`` with the recorded ``name=value`` text; None, or why it could not be set."""
    name, _, value = entry.partition("=")
    statement: sql.Composable
    if name in ("role", "session_authorization") or name.startswith("transaction_"):
        statement = sql.SQL("{} SET {} TO {}").format(alter, sql.Identifier(name), sql.Literal(value))
        current = False
    else:
        statement = sql.SQL("{} SET {} FROM CURRENT").format(alter, sql.Identifier(name))
        current = True
    try:
        with conn.transaction():
            if current:
                conn.execute("SELECT set_config(%s, %s, true)", (name, value))
            conn.execute(statement)
    except psycopg.Error as exc:
        return f"{name}: {(exc.diag.message_primary if exc.diag else None) or type(exc).__name__}"
    return None


class Target:
    """The new database on the target server and the roles created for it; ``undo()`` removes both."""

    def __init__(self, conn: psycopg.Connection[Any], name: str, where: str) -> None:
        self.conn, self.name, self.where = conn, name, where
        self.created_db = False
        self.created_roles: list[str] = []
        self.notes: list[str] = []

    def create_database(self, db: dict[str, Any]) -> None:
        try:
            self.conn.execute(sql.SQL("CREATE DATABASE {} {}").format(sql.Identifier(self.name), _locale_clause(db)))
        except psycopg.Error as exc:
            reason = (exc.diag.message_primary if exc.diag else None) or str(exc)
            hint = " (generate the locale on the server: dpkg-reconfigure locales)" if "locale" in reason else ""
            raise RestoreError(f"cannot create database {self.name} on {self.where} with the source's encoding "
                               f"{db.get('encoding')} and locale {db.get('collate')}: {reason}{hint}") from None
        self.created_db = True

    def create_roles(self, doc: dict[str, Any], missing: list[str], superuser: bool) -> None:
        """Every missing role from the record, then the memberships that involve a role created here."""
        for name in missing:
            role = doc["roles"].get(name)
            if role is None:
                raise RestoreError(f"role {name} is missing on {self.where} and the backup does not describe it")
            if not superuser and any(role.get(a) for a in SUPERUSER_ATTRIBUTES):
                raise RestoreError(f"role {name} has SUPERUSER, REPLICATION or BYPASSRLS in the backup: only a "
                                   "superuser can create it; restore as a superuser")
            words: list[sql.Composable] = [sql.SQL(_KEYWORDS[a][0 if role.get(a) else 1]) for a in _KEYWORDS]
            words.append(sql.SQL("CONNECTION LIMIT {}").format(sql.Literal(int(role.get("rolconnlimit", -1)))))
            if role.get("valid_until"):
                words.append(sql.SQL("VALID UNTIL {}").format(sql.Literal(role["valid_until"])))
            if role.get("password"):
                words.append(sql.SQL("PASSWORD {}").format(sql.Literal(role["password"])))
            self.conn.execute(sql.SQL("CREATE ROLE {} WITH {}").format(sql.Identifier(name), sql.SQL(" ").join(words)))
            self.created_roles.append(name)
            if role.get("comment"):
                self.conn.execute(sql.SQL("COMMENT ON ROLE {} IS {}").format(sql.Identifier(name),
                                                                             sql.Literal(role["comment"])))
            for entry in role.get("settings") or []:
                problem = _set_from_current(self.conn, sql.SQL("ALTER ROLE {}").format(sql.Identifier(name)), entry)
                if problem:
                    self.notes.append(f"role {name}: setting not applied ({problem})")
            if role.get("rolcanlogin") and not role.get("password"):
                self.notes.append(f"role {name} was created without a password (the backup records none: "
                                  f"sources.postgres.role_passwords): set one with ALTER ROLE before it logs in")
        present = {r[0] for r in self.conn.execute("SELECT rolname FROM pg_roles WHERE rolname = ANY(%s)",
                                                   ([n for m in doc["memberships"] for n in m[:2]],)).fetchall()}
        for group, member, admin in doc["memberships"]:
            if group not in present or member not in present:
                continue
            if group not in self.created_roles and member not in self.created_roles:
                continue  # both existed: left as they are (reported by compare_roles)
            statement = sql.SQL("GRANT {} TO {}{}").format(sql.Identifier(group), sql.Identifier(member),
                                                            sql.SQL(" WITH ADMIN OPTION" if admin else ""))
            try:
                with self.conn.transaction():
                    self.conn.execute(statement)
            except psycopg.Error as exc:
                self.notes.append(f"membership of {member} in {group} not restored "
                                  f"({(exc.diag.message_primary if exc.diag else None) or type(exc).__name__})")

    def compare_roles(self, doc: dict[str, Any]) -> None:
        """Note every existing role whose attributes or memberships differ from the record (left as they are)."""
        existing = [n for n in doc["roles"] if n not in self.created_roles]
        cols = ", ".join(ROLE_ATTRIBUTES)
        for row in self.conn.execute(f"SELECT rolname, {cols} FROM pg_roles WHERE rolname = ANY(%s) ORDER BY 1",
                                     (existing,)).fetchall():
            recorded = doc["roles"][row[0]]
            here = dict(zip(ROLE_ATTRIBUTES, row[1:], strict=True))
            differ = [f"{a.removeprefix('rol')} {here[a]} here, {recorded.get(a)} in the backup" for a in ROLE_ATTRIBUTES
                      if a in recorded and here[a] != recorded.get(a)]
            if differ:
                self.notes.append(f"role {row[0]} exists on {self.where} with other attributes ({'; '.join(differ)}): "
                                  "left as it is")
        members = {(g, m) for g, m in self.conn.execute(
            "SELECT g.rolname, m.rolname FROM pg_auth_members a JOIN pg_roles g ON g.oid = a.roleid"
            " JOIN pg_roles m ON m.oid = a.member").fetchall()}
        for group, member, _admin in doc["memberships"]:
            if member in existing and group in existing and (group, member) not in members:
                self.notes.append(f"role {member} is not a member of {group} on {self.where} (it is in the backup): "
                                  "left as it is")

    def configure(self, doc: dict[str, Any] | None, owner: str | None, privileges: bool = True) -> None:
        """The database's recorded settings, ACL (unless not ``privileges``), connection limit and comment, then its
        owner."""
        ident = sql.Identifier(self.name)
        db = (doc or {}).get("database") or {}
        for entry in db.get("settings") or []:
            problem = _set_from_current(self.conn, sql.SQL("ALTER DATABASE {}").format(ident), entry)
            if problem:
                self.notes.append(f"database setting not applied ({problem})")
        for role, entries in (db.get("role_settings") or {}).items():
            for entry in entries:
                alter = sql.SQL("ALTER ROLE {} IN DATABASE {}").format(sql.Identifier(role), ident)
                problem = _set_from_current(self.conn, alter, entry)
                if problem:
                    self.notes.append(f"setting of role {role} in the database not applied ({problem})")
        if privileges and db.get("acl") is not None:
            self.conn.execute(sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(ident))
            for grantee, privilege, grantable in db["acl"]:
                if privilege not in DATABASE_PRIVILEGES:
                    self.notes.append(f"database privilege {privilege!r} in the record is not one PostgreSQL has: skipped")
                    continue
                to = sql.SQL("PUBLIC") if grantee is None else sql.Identifier(grantee)
                statement = sql.SQL("GRANT {} ON DATABASE {} TO {}{}").format(
                    sql.SQL(privilege), ident, to, sql.SQL(" WITH GRANT OPTION" if grantable else ""))
                try:
                    with self.conn.transaction():
                        self.conn.execute(statement)
                except psycopg.Error as exc:
                    self.notes.append(f"database privilege {privilege} for {grantee or 'PUBLIC'} not restored "
                                      f"({(exc.diag.message_primary if exc.diag else None) or type(exc).__name__})")
        if isinstance(db.get("connlimit"), int) and db["connlimit"] >= 0:
            self.conn.execute(sql.SQL("ALTER DATABASE {} CONNECTION LIMIT {}").format(ident, sql.Literal(db["connlimit"])))
        if db.get("comment"):
            self.conn.execute(sql.SQL("COMMENT ON DATABASE {} IS {}").format(ident, sql.Literal(db["comment"])))
        if owner:
            self.conn.execute(sql.SQL("ALTER DATABASE {} OWNER TO {}").format(ident, sql.Identifier(owner)))

    def undo(self) -> None:
        """Drop what this restore created (the database, then its roles), leaving everything else."""
        with contextlib.suppress(psycopg.Error):
            if self.created_db:
                self.conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(self.name)))
        for role in reversed(self.created_roles):
            with contextlib.suppress(psycopg.Error):
                self.conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))
