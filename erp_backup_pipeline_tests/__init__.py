"""Tests for erp_backup_pipeline: real PostgreSQL, real S3 endpoint (moto server), real files."""
