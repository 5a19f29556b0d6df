"""What every part of the bench shares: the repository root, the partition every capture is taken for, the
mebibyte, the two compression settings the PostgreSQL cases compare, and the default of ``--pitr-writer-s``.
Standard library only: the child Python of a pipeline case imports it before Dagster."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PARTITION = "2026-11-25"
MB = 1 << 20
DEFAULT_COMPRESSION = {"codec": "zstd", "level": 3, "threads": 2}  # the product's default (speed)
LEVEL7_COMPRESSION = {"codec": "zstd", "level": 7, "threads": 2}  # case (c7): size, by configuration
PITR_WRITER_S = 75.0  # (p2): the writer runs this long (--pitr-writer-s), one row every pitr_cases.PITR_WRITER_INTERVAL_S
