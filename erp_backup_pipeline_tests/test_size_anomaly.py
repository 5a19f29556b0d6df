"""Size anomaly: a backup far smaller than the last days warns (a non-blocking check), and never blocks."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import dagster as dg
import pytest

from erp_backup_pipeline.core.anomaly import size_anomaly
from erp_backup_pipeline_tests.test_dagster import check, materialize, write_config


@pytest.mark.parametrize("current, history, expected", [
    (100, [], None),
    (0, [100, 100], "the backup is empty"),
    (60, [100] * 7, None),
    (40, [100] * 7, "40 bytes is less than 0.5 x the median of the previous 7 backup(s) (100 bytes)"),
    (40, [1] * 20 + [100] * 7, "40 bytes is less than 0.5 x the median of the previous 7 backup(s) (100 bytes)"),
    (15, [10, 10, 100], None),  # the median (10), not the mean (40) and not the last value (100)
])
def test_size_anomaly_rule(current: int, history: list[int], expected: str | None) -> None:
    assert size_anomaly(current, history) == expected


def test_a_shrunken_database_warns_but_the_backup_succeeds(tmp_path: Path, demo_sqlite: Path, age_identity) -> None:
    config = write_config(tmp_path, age_identity, sources={"sqlite": {"path": str(demo_sqlite)}})
    for day in ("2026-11-20", "2026-11-21", "2026-11-22"):
        assert check(materialize("sqlite_backup", config, day), "size_anomaly").passed
    with sqlite3.connect(demo_sqlite) as conn:  # someone truncated the big tables
        for table in ("invoice_lines", "audit_log", "invoices", "customers", "articles"):
            conn.execute(f"DELETE FROM {table}")
    with sqlite3.connect(demo_sqlite) as conn:
        conn.execute("VACUUM")
    result = materialize("sqlite_backup", config, "2026-11-23")
    assert result.success  # non-blocking: the artifact is kept, the operator is warned
    warning = check(result, "size_anomaly")
    assert not warning.passed and warning.severity == dg.AssetCheckSeverity.WARN
    assert "less than 0.5 x the median of the previous 3 backup(s)" in (warning.description or "")
    assert warning.metadata["previous_partitions"].value == 3


def test_uploads_compare_the_tree_not_the_incremental_artifact(tmp_path: Path, age_identity) -> None:
    up = tmp_path / "uploads"
    up.mkdir()
    for i in range(20):
        (up / f"doc{i}.pdf").write_bytes(bytes([i]) * 5000)
    config = write_config(tmp_path, age_identity, sources={"uploads": {"path": str(up)}},
                          state_dir=str(tmp_path / "state"))
    for day in ("2026-11-20", "2026-11-21", "2026-11-22"):  # days 2 and 3 ship almost nothing: no warning
        assert check(materialize("uploads_snapshot", config, day), "size_anomaly").passed
    for i in range(15):
        (up / f"doc{i}.pdf").unlink()
    warning = check(materialize("uploads_snapshot", config, "2026-11-23"), "size_anomaly")
    assert not warning.passed and warning.metadata["measured_bytes"].value == 25000
