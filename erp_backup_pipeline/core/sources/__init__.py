"""Source registry: asset name -> how to build that source from settings."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from erp_backup_pipeline.core.sources.base import DumpStream, Source
from erp_backup_pipeline.core.sources.files import FilesSource
from erp_backup_pipeline.core.sources.postgres import PostgresSource
from erp_backup_pipeline.core.sources.redis import RedisSource
from erp_backup_pipeline.core.sources.sqlite import SqliteSource
from erp_backup_pipeline.core.sources.uploads import UploadsSource
from erp_backup_pipeline.errors import ConfigError


def _sqlite(settings: Any) -> Source:
    return SqliteSource(settings.sources.sqlite.path)


def _postgres(settings: Any) -> Source:
    pg = settings.sources.postgres
    return PostgresSource(host=pg.host, port=pg.port, user=pg.user, dbname=pg.dbname, password=pg.secret_password(),
                          sslmode=pg.sslmode, bin_dir=pg.bin_dir, connect_timeout=pg.connect_timeout,
                          exact_row_counts=pg.exact_row_counts, role_passwords=pg.role_passwords)


def _redis(settings: Any) -> Source:
    rd = settings.sources.redis
    return RedisSource(host=rd.host, port=rd.port, username=rd.username, password=rd.secret_password(), tls=rd.tls,
                       ca_file=rd.ca_file, bin_dir=rd.bin_dir, timeout=rd.timeout)


def _files(settings: Any) -> Source:
    cfg = settings.sources.config
    return FilesSource(cfg.paths, cfg.excludes, cfg.root, follow_symlinks=cfg.follow_symlinks)


def _uploads(settings: Any) -> Source:
    cfg = settings.sources.uploads
    return UploadsSource(cfg.path, Path(settings.state_dir) / "uploads_snapshot.json", cfg.excludes,
                         follow_symlinks=cfg.follow_symlinks)


# asset name -> (settings attribute under ``sources``, factory)
SOURCES: dict[str, tuple[str, Callable[[Any], Source]]] = {
    "sqlite_backup": ("sqlite", _sqlite),
    "postgres_dump": ("postgres", _postgres),
    "redis_snapshot": ("redis", _redis),
    "config_archive": ("config", _files),
    "uploads_snapshot": ("uploads", _uploads),
}


def enabled_sources(settings: Any) -> list[str]:
    return [name for name, (attr, _) in SOURCES.items()
            if (cfg := getattr(settings.sources, attr)) is not None and cfg.enabled]


def build_source(settings: Any, name: str) -> Source:
    if name not in SOURCES:
        raise ConfigError(f"unknown source '{name}' (known: {', '.join(SOURCES)})")
    attr, factory = SOURCES[name]
    cfg = getattr(settings.sources, attr)
    if cfg is None or not cfg.enabled:
        raise ConfigError(f"source {name} is not configured (sources.{attr} in the config file)")
    return factory(settings)


__all__ = ["SOURCES", "DumpStream", "Source", "build_source", "enabled_sources"]
