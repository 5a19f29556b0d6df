"""The tests' throwaway servers (PostgreSQL, moto's S3 server, redis-server): re-exported from
``erp_backup_pipeline_devkit.servers``, their one home, which the benchmark imports too.

New code imports ``erp_backup_pipeline_devkit.servers`` directly; this module keeps the tests' imports working.
"""

from erp_backup_pipeline_devkit.servers import (
    PG_SUPERUSER,
    MotoServer,
    PostgresServer,
    RedisServer,
    free_port,
    pg_bindir,
    start_moto,
    start_postgres,
    start_redis,
    stop_process,
)

__all__ = [
    "PG_SUPERUSER",
    "MotoServer",
    "PostgresServer",
    "RedisServer",
    "free_port",
    "pg_bindir",
    "start_moto",
    "start_postgres",
    "start_redis",
    "stop_process",
]
