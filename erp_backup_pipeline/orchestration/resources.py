"""Dagster resources: the backup settings, from the config file the code location was deployed with.

Which configuration a run uses (and so its keys, sources and destinations) is fixed where the code location
loads, never by whoever launches the run (THREATS.md: Dagster OSS has no authentication; anyone who reaches the
UI or GraphQL may launch runs with run config). The resource therefore has no config field: the path is pinned
when the definitions are built (``$ERP_BACKUP_CONFIG`` in the code location's environment, or the path
``build_definitions`` is given) and Dagster refuses a run config that sets anything for it ("Received unexpected
config entry"). Dagster builds a fresh resource object from its class and run config for every run, so the pin
lives on a class made for that path (``BackupSettingsResource.pinned``). A run reads the file once, when it
first asks, and keeps that configuration (and so one ``core.site.Site``: the same destinations and keys) for all
its ops, even if the file changes mid-run; the next run reads it again when it changed (content, mode, owner).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import ClassVar

import dagster as dg
from pydantic import PrivateAttr

from erp_backup_pipeline.core.runner import register_secrets
from erp_backup_pipeline.core.site import Site, build_site
from erp_backup_pipeline.settings import Settings, config_path, load_settings


@lru_cache(maxsize=8)
def _load(path: str, version: tuple[int, ...]) -> Settings:
    settings = load_settings(path)
    register_secrets(settings.secrets())
    return settings


class BackupSettingsResource(dg.ConfigurableResource):
    """The backup configuration of this code location; no field a run config could change."""

    pinned_path: ClassVar[str | None] = None  # set by ``pinned``; None: $ERP_BACKUP_CONFIG or ./erp-backup.yaml now
    _held: Settings | None = PrivateAttr(default=None)  # this run's configuration, once read

    @classmethod
    def pinned(cls, path: str | Path | None = None) -> BackupSettingsResource:
        """The resource for one config file: ``path``, else the one the environment names right now (made absolute,
        so a later change of directory or environment cannot move it)."""
        fixed = str(config_path(path).absolute())
        pinned = type(cls.__name__, (cls,), {"pinned_path": fixed, "__module__": cls.__module__, "__doc__": cls.__doc__})
        return pinned()

    def load(self) -> Settings:
        """This run's configuration: read at the first call, the same object at every later one."""
        if self._held is None:
            self._held = self._read()
        return self._held

    def site(self) -> Site:
        """This run's configuration, built (``core.site``)."""
        return build_site(self.load())

    def _read(self) -> Settings:
        path = config_path(type(self).pinned_path)
        try:  # read again after any change: content (mtime), mode or owner (ctime), a replaced file (inode)
            st = path.stat()
            version: tuple[int, ...] = (st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_mode)
        except OSError:
            version = ()
        return _load(str(path), version)
