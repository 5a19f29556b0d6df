"""PostgreSQL logical dump against a real throwaway cluster: round trip, consistency, bad input."""

from __future__ import annotations

import threading
from pathlib import Path

import psycopg
import pytest

from erp_backup_pipeline.core.pipeline import run_backup
from erp_backup_pipeline.core.restore import restore_backup, verify_backup
from erp_backup_pipeline.errors import RestoreError, SourceError, ToolError
from erp_backup_pipeline_tests.conftest import ERP_PASSWORD, make_settings, pg_source, s3_destination

TABLES = ["articles", "audit_log", "customers", "invoice_lines", "invoices"]


def table_rows(pg, dbname: str) -> dict[str, list[tuple]]:
    with psycopg.connect(pg.dsn(dbname, "erp_user", ERP_PASSWORD)) as conn:
        return {t: conn.execute(f"SELECT * FROM {t} ORDER BY id").fetchall() for t in TABLES}


def test_round_trip_local_and_s3_every_row(tmp_path: Path, pg_server, erp_db, age_identity, moto_server, bucket) -> None:
    settings = make_settings(tmp_path, age_identity, sources=pg_source(pg_server, erp_db),
                             destinations=[{"type": "local", "path": str(tmp_path / "b")},
                                           s3_destination(moto_server, bucket)])
    m = run_backup(settings, "postgres_dump", "2026-11-25")
    assert m.complete and set(m.destinations) == {"local", "offsite"}
    assert all(r["ok"] for r in m.destinations.values())
    assert m.facts["row_estimates"]["public.invoices"] == 2000
    assert m.verify["method"] == "pg_restore --list" and m.verify["tables_with_data"] == 5
    assert m.chain[0]["format"] == "pgdump" and m.chain[1]["codec"] == "zstd"
    restore_backup(settings, "postgres_dump", "2026-11-25", erp_db + "_restored")
    assert table_rows(pg_server, erp_db + "_restored") == table_rows(pg_server, erp_db)


def test_restore_reads_from_s3_when_the_local_copy_is_gone(tmp_path: Path, pg_server, erp_db, age_identity,
                                                           moto_server, bucket) -> None:
    settings = make_settings(tmp_path, age_identity, sources=pg_source(pg_server, erp_db),
                             destinations=[{"type": "local", "path": str(tmp_path / "b")},
                                           s3_destination(moto_server, bucket)])
    m = run_backup(settings, "postgres_dump", "2026-11-25")
    (tmp_path / "b" / m.artifact_key).write_bytes(b"corrupted local copy")
    assert verify_backup(settings, "postgres_dump", "2026-11-25")["ok"]  # falls through to the intact S3 copy
    restore_backup(settings, "postgres_dump", "2026-11-25", erp_db + "_from_s3")
    assert table_rows(pg_server, erp_db + "_from_s3") == table_rows(pg_server, erp_db)


def test_dump_while_the_erp_writes_is_consistent(tmp_path: Path, pg_server, erp_db, age_identity) -> None:
    with psycopg.connect(pg_server.dsn(erp_db, "erp_user", ERP_PASSWORD), autocommit=True) as conn:
        conn.execute("CREATE TABLE ledger (account text PRIMARY KEY, cents bigint)")
        conn.execute("INSERT INTO ledger VALUES ('a', 1000000), ('b', 0)")
    stop = threading.Event()

    def writer() -> None:
        with psycopg.connect(pg_server.dsn(erp_db, "erp_user", ERP_PASSWORD)) as w:
            while not stop.is_set():
                w.execute("UPDATE ledger SET cents = cents - 1 WHERE account = 'a'")
                w.execute("INSERT INTO audit_log(at, actor, details) VALUES (now(), 'move', 'x')")
                w.execute("UPDATE ledger SET cents = cents + 1 WHERE account = 'b'")
                w.commit()

    t = threading.Thread(target=writer)
    t.start()
    try:
        settings = make_settings(tmp_path, age_identity, sources=pg_source(pg_server, erp_db))
        run_backup(settings, "postgres_dump", "2026-11-24")
    finally:
        stop.set()
        t.join()
    restore_backup(settings, "postgres_dump", "2026-11-24", erp_db + "_snap")
    with psycopg.connect(pg_server.dsn(erp_db + "_snap", "erp_user", ERP_PASSWORD)) as conn:
        a, b = (r[0] for r in conn.execute("SELECT cents FROM ledger ORDER BY account"))
        moves = conn.execute("SELECT count(*) FROM audit_log WHERE actor = 'move'").fetchone()[0]
    assert a + b == 1000000 and moves == b


def test_verify_works_on_the_real_artifact_where_the_original_always_failed(tmp_path: Path, pg_server, erp_db,
                                                                             age_identity) -> None:
    """Defect 2: the original ran pg_restore --list on a gzip file, which always fails."""
    settings = make_settings(tmp_path, age_identity, sources=pg_source(pg_server, erp_db),
                             compression={"codec": "gzip", "level": 6})
    m = run_backup(settings, "postgres_dump", "2026-11-25")
    assert m.chain[1]["codec"] == "gzip" and m.verify["ok"]
    assert verify_backup(settings, "postgres_dump", "2026-11-25")["tables_with_data"] == 5


@pytest.mark.parametrize("change, expected", [
    ({"password": "wrong-password-123"}, r'cannot connect: password authentication failed for user "erp_user"'),
    ({"dbname": "no_such_db"}, r'cannot connect: database "no_such_db" does not exist'),
    ({"port": 1}, r"cannot connect: .*(refused|failed)"),
    ({"bin_dir": "/nonexistent-bin"}, r"pg_dump not found in /nonexistent-bin"),
])
def test_bad_connection_settings_fail_early_with_one_line(tmp_path: Path, pg_server, erp_db, age_identity,
                                                          change, expected) -> None:
    earlier = make_settings(tmp_path, age_identity, sources=pg_source(pg_server, erp_db))
    good = run_backup(earlier, "postgres_dump", "2026-11-25")
    settings = make_settings(tmp_path, age_identity, sources=pg_source(pg_server, change.pop("dbname", erp_db), **change))
    with pytest.raises((SourceError, ToolError)) as err:
        run_backup(settings, "postgres_dump", "2026-11-25")
    message = str(err.value)
    assert "\n" not in message
    import re

    assert re.search(expected, message), message
    assert "wrong-password-123" not in message and ERP_PASSWORD not in message
    assert verify_backup(earlier, "postgres_dump", "2026-11-25")["captured_at"] == good.captured_at


def test_restore_refuses_existing_database_and_force_keeps_it(tmp_path: Path, pg_server, erp_db, age_identity) -> None:
    settings = make_settings(tmp_path, age_identity, sources=pg_source(pg_server, erp_db))
    run_backup(settings, "postgres_dump", "2026-11-25")
    with pytest.raises(RestoreError, match=f"database {erp_db} exists"):
        restore_backup(settings, "postgres_dump", "2026-11-25", erp_db)
    with psycopg.connect(pg_server.dsn(erp_db, "erp_user", ERP_PASSWORD), autocommit=True) as conn:
        conn.execute("INSERT INTO customers(name, created_at) VALUES ('after the backup', now())")
    result = restore_backup(settings, "postgres_dump", "2026-11-25", erp_db, force=True)
    kept = result["kept_aside"]
    with psycopg.connect(pg_server.dsn(kept, "erp_user", ERP_PASSWORD)) as conn:
        assert conn.execute("SELECT count(*) FROM customers WHERE name = 'after the backup'").fetchone()[0] == 1
    with psycopg.connect(pg_server.dsn(erp_db, "erp_user", ERP_PASSWORD)) as conn:
        assert conn.execute("SELECT count(*) FROM customers WHERE name = 'after the backup'").fetchone()[0] == 0
