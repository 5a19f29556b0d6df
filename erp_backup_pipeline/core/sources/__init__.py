"""The source registry: every kind of ERP store (``KINDS``), and building an enabled one from the settings.

Each kind's facts live in its own module (``SourceKind``, ``core.sources.kind``); ``KINDS`` registers them, and
every per-kind table elsewhere is derived from it. ``restore_order`` sorts stores the way a whole-ERP restore
takes them (``SourceKind.rank``): the database first, then the configuration, the documents the database's rows
name, Redis last; the runbook and ``recover`` both follow it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from erp_backup_pipeline.core.sources import files, postgres, redis, sqlite, uploads
from erp_backup_pipeline.core.sources.base import DumpStream, Source
from erp_backup_pipeline.core.sources.kind import SourceKind
from erp_backup_pipeline.errors import ConfigError

if TYPE_CHECKING:
    from erp_backup_pipeline.core.site import Configuration

KINDS: dict[str, SourceKind] = {k.name: k for k in (sqlite.KIND, postgres.KIND, redis.KIND, files.KIND, uploads.KIND)}
# the command line's short names: restore postgres, backup sqlite
BY_KEY: dict[str, SourceKind] = {k.key: k for k in KINDS.values()}


def kind_of(text: str) -> SourceKind:
    """The kind an asset name (``postgres_dump``) or short name (``postgres``) names; ConfigError otherwise."""
    kind = KINDS.get(text) or BY_KEY.get(text)
    if kind is None:
        raise ConfigError(f"unknown source '{text}' (known: {', '.join([*BY_KEY, *KINDS])})")
    return kind


def section(config: Configuration, name: str) -> Any:
    """The ``sources.<key>`` settings of a kind, or None when it is absent or disabled."""
    cfg = getattr(config.sources, KINDS[name].key)
    return cfg if cfg is not None and cfg.enabled else None


def restore_order(names: Any) -> list[str]:
    """The stores among ``names`` in the order a whole-ERP restore takes them."""
    return sorted((n for n in names if n in KINDS), key=lambda n: KINDS[n].rank)


def enabled_sources(config: Configuration) -> list[str]:
    return [name for name in KINDS if section(config, name) is not None]


def build_source(config: Configuration, name: str) -> Source:
    kind = kind_of(name)
    cfg = section(config, kind.name)
    if cfg is None:
        raise ConfigError(f"source {kind.name} is not configured (sources.{kind.key} in the config file)")
    return kind.build(cfg, Path(config.state_dir))


__all__ = ["BY_KEY", "KINDS", "DumpStream", "Source", "SourceKind", "build_source", "enabled_sources", "kind_of",
           "restore_order", "section"]
