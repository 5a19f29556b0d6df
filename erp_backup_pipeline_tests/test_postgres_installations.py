"""PostgreSQL as real installations have it: quoted names, roles, ownership and grants survive a restore, beside
the original and onto a fresh server, through the pipeline, `recover`, the drill and the runbook's standard tools."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from erp_backup_pipeline.core.drill import restore_drill
from erp_backup_pipeline.core.pipeline import run_backup
from erp_backup_pipeline.core.restore import restore_backup, verify_backup
from erp_backup_pipeline.core.sources import postgres_globals as cluster
from erp_backup_pipeline.core.sources.postgres import _compare_cluster_facts
from erp_backup_pipeline.core.sources.postgres_restore import database_name, package_for
from erp_backup_pipeline.errors import RestoreError, VerifyError
from erp_backup_pipeline.settings import load_settings
from erp_backup_pipeline_devkit.servers import PostgresServer, pg_bindir, start_postgres
from erp_backup_pipeline_tests.conftest import catalog_entries, sign_file
from erp_backup_pipeline_tests.pg_installation import (
    APP_PASSWORD,
    LONG,
    READONLY_PASSWORD,
    application_uses_every_table,
    cli,
    create_installation,
    roles_shape,
    shape,
    write_config,
)

DAY = "2026-11-25"
SUPER_PASSWORD = "pg-Install-Super-3e7a"
FRESH_PASSWORD = "pg-Fresh-Super-9b1c"


@pytest.fixture(scope="module")
def installation() -> Iterator[PostgresServer]:
    server = start_postgres(password=SUPER_PASSWORD)
    try:
        create_installation(server)
        yield server
    finally:
        server.stop()
        shutil.rmtree(server.base, ignore_errors=True)


@pytest.fixture
def fresh() -> Iterator[PostgresServer]:
    """A newly installed server: only its superuser, no ERP roles, no ERP database."""
    server = start_postgres(password=FRESH_PASSWORD)
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(server.base, ignore_errors=True)


@pytest.fixture
def as_app(tmp_path: Path, installation: PostgresServer, age_identity) -> Path:
    """A config backing up as the application's role (the database's owner, no superuser)."""
    return write_config(tmp_path / "app.yaml", tmp_path, age_identity, installation, "erp_user", APP_PASSWORD)


@pytest.fixture
def as_superuser(tmp_path: Path, installation: PostgresServer, age_identity) -> Path:
    """A config backing up as the cluster's superuser, with the roles' password hashes."""
    return write_config(tmp_path / "super.yaml", tmp_path, age_identity, installation, "postgres", SUPER_PASSWORD,
                        role_passwords=True)


def drop_database(server: PostgresServer, *names: str) -> None:
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        for name in names:
            conn.execute(psycopg.sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(psycopg.sql.Identifier(name)))


def test_every_identifier_form_backs_up_and_restores_beside_the_original_with_owners_and_grants(
        as_app: Path, installation: PostgresServer) -> None:
    settings = load_settings(as_app)
    with psycopg.connect(installation.dsn("erp", "erp_user", APP_PASSWORD)) as other_session:
        other_session.execute("CREATE TEMP TABLE scratch_of_a_session (x int)")  # never dumped: not expected
        m = run_backup(settings, "postgres_dump", DAY)
    assert m.verify["ok"] and m.verify["tables_with_data"] == len(m.facts["table_oids"]) == 12
    assert '"Archiv 2025"."Kunden Alt"' in m.facts["table_oids"] and f'public."{LONG}"' in m.facts["row_counts"]
    assert m.facts["row_counts"]['public."order"'] == 400 and m.facts["large_objects"] == 1
    assert m.facts["roles"] == ["erp_readonly", "erp_reporting", "erp_user"] and m.facts["owners"] == ["erp_user"]
    assert set(m.facts["extensions"]) == {"citext", "pg_trgm", "plpgsql"}
    assert [a["name"] for a in m.attachments] == ["globals", "database"]
    held = [p.name for p in (Path(settings.destinations[0].path) / m.artifact_key).parent.iterdir()]
    assert sorted(n.split(".", 1)[1] for n in held) == ["database.json.zst.age", "globals.sql.zst.age", "manifest.json",
                                                      "manifest.json.sig", "pgdump.zst.age"]
    assert APP_PASSWORD not in json.dumps(m.facts) and "SCRAM" not in m.to_json().decode()
    assert verify_backup(settings, "postgres_dump", DAY)["attachment_globals"]["roles"] == 3
    try:
        result = restore_backup(settings, "postgres_dump", DAY, "erp_restored")
        assert result["owners"] == "as recorded" and result["roles_created"] == []
        original = shape(installation.dsn("erp"))
        database = list(original["database"])
        assert database[3] == ['search_path=public, "Archiv 2025"'] and "erp_readonly CONNECT" in database[5]
        database[4] = []  # a role's settings in a database: only a superuser may set them
        assert shape(installation.dsn("erp_restored")) == {**original, "database": tuple(database)}
        assert any("statement_timeout" in n and "not applied" in n for n in result["notes"])
        application_uses_every_table(installation.dsn("erp_restored", "erp_user", APP_PASSWORD),
                                     installation.dsn("erp_restored", "erp_readonly", READONLY_PASSWORD))
        drilled = restore_drill(settings, "postgres_dump", DAY)
        assert drilled["large_objects"] == 1 and drilled["privileged_objects"] > 14 and drilled["tables"] == 13
    finally:
        drop_database(installation, "erp_restored")


def test_onto_a_fresh_server_the_roles_come_first_and_the_erp_logs_in(
        as_superuser: Path, installation: PostgresServer, fresh: PostgresServer) -> None:
    settings = load_settings(as_superuser)
    m = run_backup(settings, "postgres_dump", DAY)
    assert m.facts["role_passwords"] is True and "SCRAM" not in m.to_json().decode()  # hashes only encrypted
    server = f"host=127.0.0.1 port={fresh.port} user=postgres"
    plan = cli(as_superuser, "restore", "postgres", "--partition", DAY, "--to", "erp", "--server", server,
               "--dry-run", password=FRESH_PASSWORD)
    assert plan.returncode == 0, plan.stderr
    assert "create 3 missing role(s) from the recorded globals: erp_readonly, erp_reporting, erp_user" in plan.stdout
    assert roles_shape(fresh)["roles"] == []  # a dry run changes nothing
    done = cli(as_superuser, "restore", "postgres", "--partition", DAY, "--to", "erp", "--server", server,
               password=FRESH_PASSWORD)
    assert done.returncode == 0, done.stderr
    assert "roles created: erp_readonly, erp_reporting, erp_user" in done.stdout and "note:" not in done.stdout
    assert roles_shape(fresh) == roles_shape(installation)
    original = shape(installation.dsn("erp"))
    assert shape(fresh.dsn("erp")) == original
    application_uses_every_table(fresh.dsn("erp", "erp_user", APP_PASSWORD),  # the recorded password hashes
                                 fresh.dsn("erp", "erp_readonly", READONLY_PASSWORD))
    with psycopg.connect(fresh.dsn("erp", "erp_readonly", READONLY_PASSWORD)) as conn:
        assert conn.execute("SHOW statement_timeout").fetchone() == ("5s",)  # role-in-database, as superuser
    again = cli(as_superuser, "restore", "postgres", "--partition", DAY, "--to", "erp_second", "--server", server,
                password=FRESH_PASSWORD)
    assert again.returncode == 0 and "roles created" not in again.stdout and "note:" not in again.stdout


def test_without_password_hashes_the_restore_names_the_roles_that_need_one(
        as_app: Path, installation: PostgresServer, fresh: PostgresServer) -> None:
    run_backup(load_settings(as_app), "postgres_dump", DAY)
    done = cli(as_app, "restore", "postgres", "--partition", DAY, "--to", "erp", "--server",
               f"host=127.0.0.1 port={fresh.port} user=postgres", password=FRESH_PASSWORD)
    assert done.returncode == 0, done.stderr
    for role in ("erp_readonly", "erp_user"):
        assert f"note: role {role} was created without a password" in done.stdout
    assert "note: role erp_reporting" not in done.stdout  # NOLOGIN: needs none
    with psycopg.connect(fresh.dsn(), autocommit=True) as conn:
        conn.execute(f"ALTER ROLE erp_user PASSWORD '{APP_PASSWORD}'")
        conn.execute(f"ALTER ROLE erp_readonly PASSWORD '{READONLY_PASSWORD}'")
    assert shape(fresh.dsn("erp")) == shape(installation.dsn("erp"))
    application_uses_every_table(fresh.dsn("erp", "erp_user", APP_PASSWORD),
                                 fresh.dsn("erp", "erp_readonly", READONLY_PASSWORD))


def test_recover_takes_the_same_path_onto_a_fresh_server(tmp_path: Path, as_app: Path, installation: PostgresServer,
                                                        fresh: PostgresServer, age_identity) -> None:
    run_backup(load_settings(as_app), "postgres_dump", DAY)
    onto = write_config(tmp_path / "fresh.yaml", tmp_path, age_identity, fresh, "postgres", FRESH_PASSWORD)
    done = cli(onto, "recover", "--date", DAY, "--to", str(tmp_path / "recovered"))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "postgres_dump rows per table" in done.stdout and "NO " not in done.stdout
    with psycopg.connect(fresh.dsn(), autocommit=True) as conn:
        conn.execute(f"ALTER ROLE erp_user PASSWORD '{APP_PASSWORD}'")
        conn.execute(f"ALTER ROLE erp_readonly PASSWORD '{READONLY_PASSWORD}'")
    db = "erp_recovered_20261125"
    assert shape(fresh.dsn(db))["privileges"] == shape(installation.dsn("erp"))["privileges"]
    application_uses_every_table(fresh.dsn(db, "erp_user", APP_PASSWORD), fresh.dsn(db, "erp_readonly", READONLY_PASSWORD))


def run_line(line: str, env: dict[str, str], **values: str) -> subprocess.CompletedProcess[str]:
    for name, value in values.items():
        line = line.replace(name, value)
    done = subprocess.run(["bash", "-o", "pipefail", "-c", line], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    return done


def test_the_runbook_restores_onto_a_fresh_server_with_standard_tools(
        as_superuser: Path, installation: PostgresServer, fresh: PostgresServer, age_identity) -> None:
    from erp_backup_pipeline.core.runbook import LINES
    from erp_backup_pipeline_tests.docs import docs_text

    settings = load_settings(as_superuser)
    m = run_backup(settings, "postgres_dump", DAY)
    root = Path(settings.destinations[0].path)
    globals_key = next(a["key"] for a in m.attachments if a["name"] == "globals")
    env = {"PATH": f"/usr/bin:/bin:{pg_bindir()}", "PGHOST": "127.0.0.1", "PGPORT": str(fresh.port),
           "PGUSER": "postgres", "PGPASSWORD": FRESH_PASSWORD}
    for line in LINES["postgres_dump"]:
        assert line in docs_text("runbook.md")
        run_line(line, env, KEY=str(age_identity[0]), GLOBALS=str(root / globals_key),
                 ARTIFACT=str(root / m.artifact_key))
        env["PGPASSWORD"] = fresh.password = SUPER_PASSWORD  # the globals gave postgres its recorded password too
    assert roles_shape(fresh) == roles_shape(installation)
    assert shape(fresh.dsn("erp")) == shape(installation.dsn("erp"))
    application_uses_every_table(fresh.dsn("erp", "erp_user", APP_PASSWORD),
                                 fresh.dsn("erp", "erp_readonly", READONLY_PASSWORD))


def tamper(settings: Any, edit: Any) -> None:
    """Change what the newest manifest of DAY recorded (a stand-in for a source this machine cannot run). Re-signed:
    the tests are about what the restore does with that content, not about an unsigned edit (a rejected manifest)."""
    entry = catalog_entries(settings, "postgres_dump", DAY)[-1]
    path = Path(settings.destinations[0].path) / entry.manifest.key
    data = json.loads(path.read_text())
    edit(data["facts"])
    path.write_text(json.dumps(data))
    sign_file(path)


def test_the_drill_notices_lost_owners_and_privileges(as_app: Path, as_superuser: Path,
                                                      installation: PostgresServer) -> None:
    settings = load_settings(as_app)
    m = run_backup(settings, "postgres_dump", DAY)
    superuser = load_settings(as_superuser)  # what --no-owner as a superuser does: the ERP cannot read its tables
    try:
        restored = restore_backup(superuser, "postgres_dump", DAY, "erp_no_owner", options={"no_owner": True})
        assert restored["owners"] == "postgres (--no-owner)"
        with psycopg.connect(installation.dsn("erp_no_owner")) as conn:
            found = cluster.snapshot_facts(conn, owner="erp_user")
        with pytest.raises(VerifyError, match=r"the database's owner cannot read 1[45] restored table\(s\)"):
            _compare_cluster_facts(m.facts, found, {"owners": "as recorded"})
    finally:
        drop_database(installation, "erp_no_owner")
    tamper(settings, lambda facts: facts["privileges"].update(sha256="0" * 64))
    with pytest.raises(VerifyError, match="owners or privileges of the restored database differ"):
        restore_drill(settings, "postgres_dump", DAY)
    with psycopg.connect(installation.dsn(), autocommit=True) as conn:  # the drill's database is gone, even so
        assert conn.execute("SELECT count(*) FROM pg_database WHERE datname LIKE 'erp_backup_drill_%'").fetchone() == (0,)


# ---- bad input: one line, a distinct exit status, nothing touched --------------------------------------------------

def one_error_line(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 1, (done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("erp-backup: error: ") and "Traceback" not in done.stderr, done.stderr
    return lines[0]


def test_password_hashes_asked_for_by_a_role_that_may_not_read_them(tmp_path: Path, as_app: Path,
                                                                     installation: PostgresServer, age_identity) -> None:
    earlier = run_backup(load_settings(as_app), "postgres_dump", DAY)
    config = write_config(tmp_path / "hashes.yaml", tmp_path, age_identity, installation, "erp_user", APP_PASSWORD,
                          role_passwords=True)
    line = one_error_line(cli(config, "backup", "postgres", "--partition", DAY))
    assert "may not read role password hashes" in line and "pg_authid" in line
    assert "sources.postgres.role_passwords: false" in line
    entries = catalog_entries(load_settings(as_app), "postgres_dump")
    assert [e.manifest.key for e in entries] == [earlier.key]  # nothing new, the earlier backup as it was
    assert not [p for p in (tmp_path / "staging").rglob("*") if p.is_file()]


def test_a_role_that_may_not_read_role_definitions(tmp_path: Path, installation: PostgresServer, age_identity) -> None:
    with psycopg.connect(installation.dsn(), autocommit=True) as conn:
        conn.execute("CREATE DATABASE erp_hardened OWNER erp_user")
    try:
        with psycopg.connect(installation.dsn("erp_hardened"), autocommit=True) as conn:
            conn.execute("CREATE TABLE t (id int)")
            conn.execute("REVOKE SELECT ON pg_catalog.pg_auth_members FROM PUBLIC")
        config = write_config(tmp_path / "hard.yaml", tmp_path, age_identity, installation, "erp_user", APP_PASSWORD)
        config.write_text(config.read_text().replace("dbname: erp", "dbname: erp_hardened"))
        line = one_error_line(cli(config, "backup", "postgres", "--partition", DAY))
        assert "cannot read role definitions" in line and "pg_auth_members" in line
    finally:
        drop_database(installation, "erp_hardened")


def test_a_target_server_of_an_older_major_version_is_refused_before_anything_changes(
        as_app: Path, fresh: PostgresServer) -> None:
    settings = load_settings(as_app)
    run_backup(settings, "postgres_dump", DAY)
    tamper(settings, lambda facts: facts.update(server_version_num=990004))  # this machine has PostgreSQL 15 only
    line = one_error_line(cli(as_app, "restore", "postgres", "--partition", DAY, "--to", "erp", "--server",
                              f"host=127.0.0.1 port={fresh.port} user=postgres", password=FRESH_PASSWORD))
    assert "runs PostgreSQL 15, the dump comes from PostgreSQL 99" in line and "nothing was changed" in line
    assert roles_shape(fresh)["roles"] == []
    with psycopg.connect(fresh.dsn(), autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM pg_database WHERE datname = 'erp'").fetchone() == (0,)


@pytest.fixture
def probe_extension() -> Iterator[str]:
    """An extension installed only for this test (the one server binary here serves both clusters, so 'the target
    lacks it' is made by removing its files after the backup)."""
    share = Path(subprocess.run(["pg_config", "--sharedir"], capture_output=True, text=True, check=True).stdout.strip())
    control, script = share / "extension" / "erp_backup_probe.control", share / "extension" / "erp_backup_probe--1.0.sql"
    assert not control.exists(), f"{control} exists already"
    control.write_text("comment = 'erp-backup test'\ndefault_version = '1.0'\nrelocatable = true\ntrusted = true\n")
    script.write_text("CREATE FUNCTION erp_backup_probe() RETURNS int LANGUAGE sql AS 'SELECT 1';\n")
    try:
        yield "erp_backup_probe"
    finally:
        control.unlink(missing_ok=True)
        script.unlink(missing_ok=True)


def test_an_extension_the_target_lacks_is_named_with_its_package_before_anything_changes(
        tmp_path: Path, installation: PostgresServer, fresh: PostgresServer, age_identity, probe_extension: str) -> None:
    with psycopg.connect(installation.dsn(), autocommit=True) as conn:
        conn.execute("CREATE DATABASE erp_ext OWNER erp_user")
    try:
        with psycopg.connect(installation.dsn("erp_ext", "erp_user", APP_PASSWORD), autocommit=True) as conn:
            conn.execute(f"CREATE EXTENSION {probe_extension}")
            conn.execute("CREATE TABLE t AS SELECT erp_backup_probe() AS one")
        config = write_config(tmp_path / "ext.yaml", tmp_path, age_identity, installation, "erp_user", APP_PASSWORD)
        config.write_text(config.read_text().replace("dbname: erp", "dbname: erp_ext"))
        run_backup(load_settings(config), "postgres_dump", DAY)
    finally:
        drop_database(installation, "erp_ext")
    for path in Path(subprocess.run(["pg_config", "--sharedir"], capture_output=True, text=True,
                                    check=True).stdout.strip(), "extension").glob(f"{probe_extension}*"):
        path.unlink()
    line = one_error_line(cli(config, "restore", "postgres", "--partition", DAY, "--to", "erp", "--server",
                              f"host=127.0.0.1 port={fresh.port} user=postgres", password=FRESH_PASSWORD))
    assert f"extension {probe_extension} is not available on the server at 127.0.0.1:{fresh.port}" in line
    assert "install the Debian package postgresql-15-erp-backup-probe" in line and "nothing was changed" in line
    assert roles_shape(fresh)["roles"] == []


def test_debian_packages_are_named_for_common_extensions() -> None:
    assert package_for("postgis", 15) == "postgresql-15-postgis-3"
    assert package_for("vector", 16) == "postgresql-16-pgvector"
    assert package_for("pg_trgm", 15).startswith("postgresql-15 ")
    assert package_for("plpython3u", 15) == "postgresql-plpython3-15"
    assert package_for("pg_cron", 17) == "postgresql-17-cron"


def test_an_existing_role_with_other_attributes_is_left_as_it_is_and_reported(
        as_app: Path, fresh: PostgresServer) -> None:
    run_backup(load_settings(as_app), "postgres_dump", DAY)
    with psycopg.connect(fresh.dsn(), autocommit=True) as conn:
        conn.execute("CREATE ROLE erp_readonly NOLOGIN CONNECTION LIMIT 3")
    done = cli(as_app, "restore", "postgres", "--partition", DAY, "--to", "erp", "--server",
               f"host=127.0.0.1 port={fresh.port} user=postgres", password=FRESH_PASSWORD)
    assert done.returncode == 0, done.stderr
    assert "roles created: erp_reporting, erp_user" in done.stdout
    assert ("note: role erp_readonly exists on the server at 127.0.0.1:" in done.stdout
            and "canlogin False here, True in the backup" in done.stdout and "left as it is" in done.stdout)
    with psycopg.connect(fresh.dsn(), autocommit=True) as conn:
        assert conn.execute("SELECT rolcanlogin, rolconnlimit FROM pg_roles WHERE rolname = 'erp_readonly'").fetchone() \
            == (False, 3)
        assert conn.execute("SELECT count(*) FROM pg_auth_members a JOIN pg_roles m ON m.oid = a.member"
                            " WHERE m.rolname = 'erp_readonly'").fetchone() == (1,)  # into the created group role


def test_a_restoring_role_that_may_not_create_the_roles_is_refused(as_app: Path, fresh: PostgresServer) -> None:
    run_backup(load_settings(as_app), "postgres_dump", DAY)
    with psycopg.connect(fresh.dsn(), autocommit=True) as conn:
        conn.execute("CREATE ROLE restorer LOGIN CREATEDB PASSWORD 'restorer-Pw-1'")
    line = one_error_line(cli(as_app, "restore", "postgres", "--partition", DAY, "--to", "erp", "--server",
                              f"host=127.0.0.1 port={fresh.port} user=restorer", password="restorer-Pw-1"))
    assert "3 role(s) the database needs are missing" in line and "may not create roles" in line
    assert "restorer-Pw-1" not in line


def test_to_takes_a_database_name_only(as_app: Path, installation: PostgresServer) -> None:
    run_backup(load_settings(as_app), "postgres_dump", DAY)
    with psycopg.connect(installation.dsn(), autocommit=True) as conn:
        conn.execute("CREATE DATABASE erp_other OWNER erp_user")
    try:
        for target in ("dbname=erp_other", f"postgresql://erp_user@127.0.0.1:{installation.port}/erp_other",
                       "erp other", "x" * 64):
            line = one_error_line(cli(as_app, "restore", "postgres", "--partition", DAY, "--to", target))
            assert "connection string" in line or "is not a database name" in line
        with psycopg.connect(installation.dsn("erp_other")) as conn:  # never written into
            assert conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'").fetchone() == (0,)
        done = cli(as_app, "restore", "postgres", "--partition", DAY, "--to", '"Erp Wiederherstellung"')
        assert done.returncode == 0, done.stderr
        restored = make_conninfo(installation.dsn(), dbname="Erp Wiederherstellung")
        assert shape(restored)["rows"] == shape(installation.dsn("erp"))["rows"]
        line = one_error_line(cli(as_app, "restore", "postgres", "--partition", DAY, "--to", "erp", "--server",
                                  f"host=127.0.0.1 password={APP_PASSWORD}"))
        assert "must not carry a password" in line and APP_PASSWORD not in line
    finally:
        drop_database(installation, "erp_other", "Erp Wiederherstellung")
    assert database_name('"a ""quoted"" name"') == 'a "quoted" name'
    with pytest.raises(RestoreError):
        database_name('"unbalanced')


def test_no_owner_restores_everything_as_the_restoring_role(as_superuser: Path, installation: PostgresServer) -> None:
    run_backup(load_settings(as_superuser), "postgres_dump", DAY)
    try:
        done = cli(as_superuser, "restore", "postgres", "--partition", DAY, "--to", "erp_flat", "--no-owner")
        assert done.returncode == 0 and "owners: postgres (--no-owner)" in done.stdout
        assert {r[3] for r in shape(installation.dsn("erp_flat"))["privileges"]} == {"postgres"}
    finally:
        drop_database(installation, "erp_flat")


def test_a_dedicated_backup_role_backs_up_drills_without_owners_and_restores_only_as_told(
        tmp_path: Path, installation: PostgresServer, age_identity) -> None:
    """A backup role that reads everything (pg_read_all_data) but owns nothing and is no member of the owner: the
    backup and its drill work (owners not compared, said so); a default restore refuses in one line."""
    with psycopg.connect(installation.dsn(), autocommit=True) as conn:
        conn.execute("CREATE ROLE erp_backup LOGIN CREATEDB PASSWORD 'erp-Backup-Pw-2f'")
        conn.execute("GRANT pg_read_all_data TO erp_backup")
        conn.execute("GRANT CONNECT ON DATABASE erp TO erp_backup")
    with psycopg.connect(installation.dsn("erp", "erp_user", APP_PASSWORD), autocommit=True) as conn:
        conn.execute("GRANT SELECT ON LARGE OBJECT " + str(conn.execute("SELECT content FROM documents").fetchone()[0])  # type: ignore[index]
                     + " TO erp_backup")
    try:
        config = write_config(tmp_path / "backup-role.yaml", tmp_path, age_identity, installation, "erp_backup",
                              "erp-Backup-Pw-2f")
        settings = load_settings(config)
        m = run_backup(settings, "postgres_dump", DAY)
        assert "erp_backup" in m.facts["roles"] and m.facts["owners"] == ["erp_user"]
        drilled = restore_drill(settings, "postgres_dump", DAY)
        assert drilled["owners"] == "not compared: restored as erp_backup (--no-owner, --no-privileges)"
        assert drilled["large_objects"] == 1 and drilled["rows"] == sum(m.facts["row_counts"].values())
        line = one_error_line(cli(config, "restore", "postgres", "--partition", DAY, "--to", "erp_by_backup"))
        assert "needs a superuser or membership of role erp_backup in erp_user" in line and "--no-owner" in line
    finally:
        with psycopg.connect(installation.dsn("erp"), autocommit=True) as conn:
            conn.execute("REVOKE CONNECT ON DATABASE erp FROM erp_backup")
            conn.execute("DROP OWNED BY erp_backup")  # its grant on the large object
            conn.execute("DROP ROLE erp_backup")
