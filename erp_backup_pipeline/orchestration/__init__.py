"""The thin Dagster shell: resources, partitions, the asset factory, schedules and definitions.

No backup logic lives here; every op is one call into ``erp_backup_pipeline.core``.
"""
