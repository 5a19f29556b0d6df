"""When each source is backed up: the original strategy's cron times (Europe/Berlin), one place for all.

The Dagster schedules run on them; the generated runbook and the freshness deadlines quote them.
"""

CRON = {"sqlite_backup": "0 2 * * *", "postgres_dump": "0 2 * * *", "redis_snapshot": "0 3 * * *",
        "config_archive": "0 4 * * *", "uploads_snapshot": "0 5 * * *"}


def clock_time(source: str) -> str:
    """``0 2 * * *`` as ``02:00``."""
    minute, hour, *_ = CRON[source].split()
    return f"{int(hour):02d}:{int(minute):02d}"
