"""Destination health: can each configured destination be used right now?

``destination_problems`` asks every destination its ``check()`` (reachable, credentials accepted, bucket or
directory there, Object Lock as configured), all at once, and returns one redacted line per destination
that cannot be used, or None for one that can. A destination that does not answer within ``timeout``
seconds is a problem too: the question must not hang the Dagster sensor that asks it (sensor
evaluations time out after 60 s). Nothing is written (a local destination's missing directory is
created, as a backup would).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor, wait

from erp_backup_pipeline.core.destinations import Destination
from erp_backup_pipeline.core.runner import redact
from erp_backup_pipeline.core.site import Site, takes_site
from erp_backup_pipeline.errors import BackupError

TIMEOUT_SECONDS = 30.0


def _ask(dest: Destination) -> str | None:
    try:
        dest.check()
    except BackupError as exc:
        return redact(str(exc))
    except Exception as exc:  # anything else a client library raises: still one line, never a traceback
        return redact(f"destination {dest.name}: {type(exc).__name__}: {exc}".splitlines()[0])
    return None


@takes_site
def destination_problems(site: Site, timeout: float = TIMEOUT_SECONDS) -> dict[str, str | None]:
    """Destination name -> one line saying why it cannot be used, or None; in the configured order."""
    destinations = list(site.destinations)
    pool = ThreadPoolExecutor(max_workers=max(1, len(destinations)), thread_name_prefix="destination-health")
    try:
        futures = {dest.name: pool.submit(_ask, dest) for dest in destinations}
        wait(futures.values(), timeout=timeout)
        return {name: (f.result() if f.done() else f"destination {name}: no answer within {timeout:.0f} s")
                for name, f in futures.items()}
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
