"""What the orchestrator recorded against what the destinations hold: a backup that vanished, was replaced or
whose chain broke, named by source, partition and destination.

Dagster records each backup it materialized with its manifest's key, sha256 and sequence. ``compare`` takes
those records (``Recorded``, the newest per partition) and the authenticated catalog (``core.catalog``) and
returns one line per disagreement: a recorded capture that is on no destination and that retention did not prune
(its sequence is not in the chain ledger with that sha256), one whose manifest at the key is another one now, and
every rejected file, chain finding and gap of the source (a capture missing from a destination it was shipped to).
No Dagster here: the orchestration reads the records and turns the lines into a failing check.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from erp_backup_pipeline.core.catalog import Catalog
from erp_backup_pipeline.core.manifest import safe_part


@dataclass(frozen=True)
class Recorded:
    """A backup the orchestrator recorded as materialized."""

    source: str
    partition: str
    manifest_key: str
    manifest_sha256: str
    sequence: int


def compare(source: str, recorded: Iterable[Recorded], found: Catalog, prefix: str) -> list[str]:
    """Every disagreement between the records of one source and what its destinations hold."""
    by_key = {e.manifest.key: e for e in found.entries if e.manifest.source == source}
    pruned: dict[int, str] = {}
    for ledger in found.ledgers.get(source, {}).values():
        pruned.update(ledger.pruned)
    lines = []
    for rec in sorted(recorded, key=lambda r: (r.partition, r.sequence)):
        entry = by_key.get(rec.manifest_key)
        if entry is None:
            if pruned.get(rec.sequence) == rec.manifest_sha256:
                continue  # retention deleted it, and said so first
            lines.append(f"{source} {rec.partition}: the backup Dagster recorded (sequence {rec.sequence}, "
                         f"{rec.manifest_key}) is on no destination and was not pruned")
        elif entry.sha256 != rec.manifest_sha256:
            lines.append(f"{source} {rec.partition}: the manifest at {rec.manifest_key} is not the one Dagster recorded "
                         f"(sha256 {entry.sha256[:12]}…, recorded {rec.manifest_sha256[:12]}…): it was replaced")
    own = f"{prefix}/{safe_part(source)}/"
    lines += [f"rejected on {r.destination}: {r.key}: {r.reason}" for r in found.rejected if r.key.startswith(own)]
    lines += [line for line in found.findings + found.gaps if line.startswith(f"{source}: ")]
    lines += [f"unreadable: {e}" for e in found.errors]
    return lines


__all__ = ["Recorded", "compare"]
