"""Dagster resources: the backup settings, loaded once per run from the config file."""

from __future__ import annotations

from functools import lru_cache

import dagster as dg

from erp_backup_pipeline.core.runner import register_secrets
from erp_backup_pipeline.settings import Settings, config_path, load_settings


@lru_cache(maxsize=8)
def _load(path: str, mtime: float) -> Settings:
    settings = load_settings(path)
    register_secrets(settings.secrets())
    return settings


class BackupSettingsResource(dg.ConfigurableResource):
    """Where the config file is; ``None`` means $ERP_BACKUP_CONFIG or ./erp-backup.yaml."""

    config_path: str | None = None

    def load(self) -> Settings:
        path = config_path(self.config_path)
        try:
            mtime = path.stat().st_mtime
        except OSError:
            mtime = 0.0
        return _load(str(path), mtime)
