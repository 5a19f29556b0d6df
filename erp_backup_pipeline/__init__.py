"""erp_backup_pipeline: backup and restore of the SteinmetZ ERP, orchestrated by Dagster.

Layers (imports point down only): ``core`` (plain Python, never imports dagster),
``settings`` (the typed configuration), ``orchestration`` (the thin Dagster shell) and
``cli`` (the ``erp-backup`` command).
"""

__version__ = "0.1.0"
