"""A PostgreSQL cluster archiving into a pgBackRest stanza, for the point-in-time recovery tests.

Everything lives in a /tmp directory that the ``postgres`` user can traverse (pytest's own tmp dirs
are 0700 root); PostgreSQL and pgBackRest run as ``postgres``; the cluster is stopped by PID.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest

from erp_backup_pipeline.core.pitr import config
from erp_backup_pipeline.core.pitr.engine import PgBackRest
from erp_backup_pipeline.settings import Settings
from erp_backup_pipeline_devkit.servers import PostgresServer, start_postgres
from erp_backup_pipeline_tests.conftest import make_settings

CIPHER = "pitr-Cipher-pass-8c2e1f"


@dataclass
class PitrCluster:
    base: Path
    server: PostgresServer
    settings: Settings
    engine: PgBackRest

    def sql(self, statement: str, params: Any = None) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.server.dsn(), autocommit=True) as conn:
            cur = conn.execute(statement, params)
            return cur.fetchall() if cur.description else []

    def archive(self) -> None:
        """Closes the current WAL segment and waits until pgBackRest holds it."""
        self.sql("SELECT pg_switch_wal()")
        self.engine.check()

    def target_between(self, before: str, after: str) -> datetime:
        """Runs ``before`` and archives it, takes a recovery target a second later (whole seconds apart from
        both sides), then runs ``after`` and archives it; returns the target."""
        self.sql(before)
        self.archive()
        time.sleep(1.1)
        target = datetime.now(UTC)
        time.sleep(1.1)
        self.sql(after)
        self.archive()
        return target


def pitr_section(base: Path, **pitr: Any) -> dict[str, Any]:
    """The config file's ``pitr`` section for a cluster under ``base``."""
    return {"stanza": "erp", "pg_data": str(base / "pg" / "data"), "pg_socket_path": str(base / "pg" / "sock"),
            "work_dir": str(base / "pgbr"), "repo": {"type": "posix", "path": str(base / "repo")},
            "cipher_pass": CIPHER, **pitr}


def pitr_settings(tmp_path: Path, age_identity: tuple[Path, str], base: Path, **pitr: Any) -> Settings:
    return make_settings(tmp_path, age_identity, pitr=pitr_section(base, **pitr))


@pytest.fixture
def pitr_cluster(tmp_path: Path, age_identity: tuple[Path, str]) -> Iterator[PitrCluster]:
    base = Path(tempfile.mkdtemp(prefix="erp-backup-pitr-"))
    os.chmod(base, 0o755)
    server = None
    try:
        settings = pitr_settings(tmp_path, age_identity, base)
        config.write(settings)
        server = start_postgres(extra_conf="\n".join(config.postgresql_lines(settings)) + "\n", base=base / "pg")
        settings = pitr_settings(tmp_path, age_identity, base, pg_port=server.port)
        config.write(settings)
        engine = PgBackRest(settings)
        engine.stanza_create()
        yield PitrCluster(base, server, settings, engine)
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(base, ignore_errors=True)
