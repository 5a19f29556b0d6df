"""Object Lock that matches retention: what the plan keeps for long stays locked for as long.

A capture is uploaded locked until its capture time plus ``keep_within`` (at least the destination's
``object_lock.min_days``, ``core.pipeline``). The retention plan keeps some captures far longer: the newest of a
week, month or year, or of a long-term class (GoBD), and what those depend on; ``Plan.lock_until`` gives the end
of that keep. On every destination with ``object_lock`` that holds such a capture, ``extend`` moves the lock of
its manifest, signature, artifact and attachments to that end (PutObjectRetention on the newest version, in the
object's own mode), so that not even the pipeline's own credentials can delete kept history early. A lock is only
ever extended, never shortened; a lock that already reaches the end is left alone. Prune calls it after deleting.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from erp_backup_pipeline.core.catalog import Entry
from erp_backup_pipeline.core.destinations import Destination
from erp_backup_pipeline.core.orphans import locking
from erp_backup_pipeline.core.runner import redact
from erp_backup_pipeline.core.signing import SIGNATURE_SUFFIX
from erp_backup_pipeline.errors import BackupError

Log = Callable[[str], None]


def extend(wanted: list[tuple[Entry, datetime, str]], destinations: dict[str, Destination], dry_run: bool,
           log: Log) -> list[tuple[Entry, str, str]]:
    """(entry, destination, outcome) per capture whose lock had to grow: outcome ``locked until … (why)`` (dry run:
    ``would lock until …``) or ``failed: …``. Real runs log one line each."""
    done = []
    for entry, until, why in wanted:
        m = entry.manifest
        for name in sorted(entry.held_by):
            dest = locking(destinations[name]) if name in destinations else None
            if dest is None:
                continue
            what = f"{m.source} {m.partition} captured {m.captured_at} on {name}"
            try:
                grown = [k for k in (m.key, m.key + SIGNATURE_SUFFIX, *m.object_keys)
                         if dest.extend_lock(k, until, dry_run=dry_run)]
            except BackupError as exc:
                outcome = f"failed: the lock could not be extended to {until.isoformat()} ({why}): {exc}"
                log(redact(f"failed to lock {what}: {exc}"))
                done.append((entry, name, outcome))
                continue
            if not grown:
                continue
            outcome = f"{'would lock' if dry_run else 'locked'} until {until.isoformat()} ({why})"
            if not dry_run:
                log(redact(f"locked {what} until {until.isoformat()} ({why}): {len(grown)} object(s)"))
            done.append((entry, name, outcome))
    return done
