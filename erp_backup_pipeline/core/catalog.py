"""The catalog: every backup that exists, read from the manifests on every destination.

Only manifests count: an artifact without one (an interrupted run) is not a backup. The
same capture held by several destinations is one entry listing where it is held.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from erp_backup_pipeline.core.destinations import Destination, read_bytes
from erp_backup_pipeline.core.manifest import MANIFEST_SUFFIX, Manifest, safe_part
from erp_backup_pipeline.errors import ArtifactNotFound, BackupError, VerifyError


@dataclass
class Entry:
    manifest: Manifest
    held_by: list[str] = field(default_factory=list)

    def as_row(self) -> dict[str, Any]:
        m = self.manifest
        return {"source": m.source, "partition": m.partition, "captured_at": m.captured_at,
                "raw_bytes": m.stage("dump")["bytes"], "artifact_bytes": m.artifact_bytes,
                "sha256": m.artifact_sha256, "verified": bool(m.verify.get("ok")), "complete": m.complete,
                "destinations": sorted(self.held_by), "key": m.artifact_key, "mode": m.mode}


def load_catalog(destinations: Iterable[Destination], prefix: str, source: str | None = None,
                 partition: str | None = None, errors: list[str] | None = None) -> list[Entry]:
    """All entries, oldest first. Unreadable destinations are reported in ``errors`` and skipped."""
    found: dict[str, Entry] = {}
    sub = prefix + "/"
    if source:
        sub += safe_part(source) + "/"
        if partition:
            sub += safe_part(partition) + "/"
    for dest in destinations:
        try:
            keys = [k for k in dest.list(sub) if k.endswith(MANIFEST_SUFFIX)]
            for key in keys:
                try:
                    manifest = Manifest.from_json(read_bytes(dest, key))
                except (ValueError, TypeError, AttributeError) as exc:  # damaged or edited by hand
                    problem = VerifyError(f"manifest {key} is not valid ({exc})")
                    if errors is None:
                        raise problem from None
                    errors.append(f"{dest.name}: {problem}")
                    continue
                entry = found.setdefault(key, Entry(manifest))
                entry.held_by.append(dest.name)
        except (BackupError, ValueError) as exc:
            if errors is None:
                raise
            errors.append(f"{dest.name}: {exc}")
    return sorted(found.values(), key=lambda e: (e.manifest.source, e.manifest.partition, e.manifest.captured_at))


def latest(entries: list[Entry], source: str, partition: str) -> Entry:
    """The newest verified, complete capture of a source's partition."""
    matching = [e for e in entries if e.manifest.source == source and e.manifest.partition == partition
                and e.manifest.verify.get("ok")]
    if not matching:
        raise ArtifactNotFound(f"no backup of {source} for partition {partition}")
    complete = [e for e in matching if e.manifest.complete]
    return (complete or matching)[-1]
