"""Destination registry: build the configured destinations from settings."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from erp_backup_pipeline.core.destinations.base import Destination, get, put_bytes, read_bytes
from erp_backup_pipeline.core.destinations.local import LocalDestination
from erp_backup_pipeline.core.destinations.s3 import S3Destination

if TYPE_CHECKING:
    from erp_backup_pipeline.core.site import Configuration


def _local(cfg: Any) -> Destination:
    return LocalDestination(cfg.path, name=cfg.name, required=cfg.required)


def _s3(cfg: Any) -> Destination:
    return S3Destination(
        cfg.bucket, prefix=cfg.prefix, endpoint_url=cfg.endpoint_url, region=cfg.region,
        access_key_id=cfg.access_key_id.get_secret_value() if cfg.access_key_id else None,
        secret_access_key=cfg.secret_key(), multipart_threshold=cfg.multipart_threshold_mb << 20,
        part_size=cfg.part_size_mb << 20, name=cfg.name, required=cfg.required,
        max_attempts=cfg.max_attempts, read_timeout=cfg.read_timeout_seconds,
        object_lock_mode=cfg.object_lock.mode if cfg.object_lock is not None else None,
        object_lock_min_days=(cfg.object_lock.min_days or 0) if cfg.object_lock is not None else 0,
    )


DESTINATIONS: dict[str, Callable[[Any], Destination]] = {"local": _local, "s3": _s3}


def build_destinations(config: Configuration) -> list[Destination]:
    return [DESTINATIONS[d.type](d) for d in config.destinations]


__all__ = ["DESTINATIONS", "Destination", "LocalDestination", "S3Destination", "build_destinations", "get",
           "put_bytes", "read_bytes"]
