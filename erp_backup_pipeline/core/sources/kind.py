"""``SourceKind``: everything the pipeline knows about one kind of ERP store, in one frozen record.

Each source module defines its kind next to its code (``sqlite.KIND``, ``postgres.KIND``…); the registry
``core.sources.KINDS`` registers them (``restore_order`` sorts them by ``rank``), and every per-kind table (cron times, default
retention, artifact formats, runbook lines, asset texts, metric labels, command-line names) is read from it.
A new kind is one module plus one line in that registry.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from erp_backup_pipeline.core.config import Model
from erp_backup_pipeline.core.retention import RetentionPolicy
from erp_backup_pipeline.core.sources.base import Source


@dataclass(frozen=True)
class SourceKind:
    """One kind of store. ``name`` is the asset and the store's name in keys, manifests and metrics."""

    name: str  # postgres_dump
    key: str  # its section under ``sources:`` and its short name on the command line: postgres
    settings: type[Model]  # the model of that section
    build: Callable[[Any, Path], Source]  # (its ``sources.<key>`` settings, the state directory) -> the source
    extension: str  # the artifact's format, first of its extension chain: pgdump
    cron: str  # nightly, Europe/Berlin: the original strategy's time
    rank: int  # its place in a whole-ERP restore (``core.sources.restore_order``), lowest first
    policy: RetentionPolicy  # default retention, from the original strategy
    engine: str  # the Dagster kind tag and the source asset's engine: postgres
    upstream: str  # the external asset this backup reads: erp_postgres_database
    upstream_description: str
    description: str  # the backup asset's description in the UI
    metric_label: str  # the ``type`` label of the Prometheus metrics: postgresql
    what: str  # in the runbook: the PostgreSQL database (logical dump)
    restore_lines: tuple[str, ...]  # the runbook's restore with standard tools (tested verbatim)
    emptiness: Literal["tables", "files", None]  # what an empty capture lacks: fails unless allow_empty
    holds: Callable[[Mapping[str, Any]], str]  # "the SQLite database X holds", from a capture's facts
    # a whole-ERP recovery's target: (its settings, the recovery directory, the date, the database name asked
    # for) -> (the restore target, what it is, in words)
    recovery_target: Callable[[Any, Path, str, str | None], tuple[str, str]]
    answers_sql: bool = False  # a database: a restored copy answers queries and counts its rows per table
    attachment_formats: Mapping[str, str] = field(default_factory=dict)  # name -> format of the extra records
    restore_notes: tuple[str, ...] = ()  # runbook markdown lines after the restore lines

    def clock_time(self) -> str:
        """``0 2 * * *`` as ``02:00``."""
        minute, hour, *_ = self.cron.split()
        return f"{int(hour):02d}:{int(minute):02d}"

    def formats(self) -> list[str]:
        """The first parts of every file's extension chain this kind writes: the artifact's and its attachments'."""
        return [self.extension, *(f"{name}.{fmt}" for name, fmt in self.attachment_formats.items())]
