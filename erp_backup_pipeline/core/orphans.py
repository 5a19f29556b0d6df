"""Artifacts without a manifest: finding them on every destination and sweeping them (for ``core.prune``).

An artifact without a manifest (a run stopped between the upload's commit and the manifest) is not a backup
and the catalog ignores it, but it costs storage forever, so prune sweeps it, conservatively. An object is such an orphan
only when its key is exactly ``<prefix>/<source>/<partition>/<stamp>.<format>.<compression>.<encryption>`` of a
configured source and no ``<stamp>.manifest.json`` stands beside it. It is kept (a ``keep`` row says why) while
any manifest on any destination names it as its artifact or ``depends_on`` it, while the uploads state names it
(or cannot be read), while its capture is younger than ``retention.orphan_grace_hours`` (default 48: a run may
still write its manifest) and while Object Lock holds it; otherwise it is deleted (a ``delete`` row in the dry
run). Like captures, an orphan is deleted only when both plans find it, and its manifest and lock are read again
right before.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from erp_backup_pipeline.core.catalog import Entry
from erp_backup_pipeline.core.codecs import COMPRESSORS, ENCRYPTORS
from erp_backup_pipeline.core.destinations import Destination
from erp_backup_pipeline.core.manifest import MANIFEST_SUFFIX, safe_part
from erp_backup_pipeline.core.pipeline import STAMP, stamp_time
from erp_backup_pipeline.core.runner import redact
from erp_backup_pipeline.core.signing import SIGNATURE_SUFFIX
from erp_backup_pipeline.core.site import Site, takes_site
from erp_backup_pipeline.core.sources import KINDS
from erp_backup_pipeline.core.sources import uploads as uploads_kind
from erp_backup_pipeline.errors import BackupError

UPLOADS_SOURCE = uploads_kind.KIND.name
Log = Callable[[str], None]


class ListingFailed(BackupError):
    """A destination could not be listed, so what has no manifest there is unknown."""


@dataclass(frozen=True)
class Orphan:
    """A committed artifact on one destination that no manifest beside it describes."""

    destination: str
    key: str
    source: str
    partition: str  # as in the key (sanitized)
    captured: datetime  # from the stamp in the key

    @property
    def manifest_key(self) -> str:
        folder, name = self.key.rsplit("/", 1)
        return f"{folder}/{name.split('.', 1)[0]}{MANIFEST_SUFFIX}"

    def row(self, action: str, reason: str) -> dict[str, str]:
        return {"source": self.source, "partition": self.partition,
                "captured_at": self.captured.isoformat(timespec="seconds"), "action": action, "reason": reason}


def state_references(state_file: Path) -> tuple[set[str], str | None]:
    """The artifact keys the uploads state names as content holders, or why the state cannot be read."""
    try:
        text = state_file.read_text()
    except FileNotFoundError:
        return set(), None
    except OSError as exc:
        return set(), exc.strerror or type(exc).__name__
    try:
        blobs = json.loads(text)["blobs"]
        return {str(key) for key in blobs.values() if key}, None
    except (ValueError, KeyError, TypeError, AttributeError):
        return set(), "not an uploads state"


def _artifact_names(site: Site) -> dict[str, tuple[str, re.Pattern[str]]]:
    """Per source directory of a configured source: the source, and the exact name of its artifacts."""
    def alternatives(factories: Any) -> str:
        return "|".join(re.escape(str(f.extension)) for f in factories.values())

    chain = rf"\.(?:{alternatives(COMPRESSORS)})\.(?:{alternatives(ENCRYPTORS)})"

    def formats(name: str) -> str:
        return "|".join(re.escape(f) for f in KINDS[name].formats())  # the artifact's and its attachments'

    # and a manifest's signature, written just before the manifest: alone, a run stopped between the two
    return {safe_part(name): (name, re.compile(rf"(?P<stamp>{STAMP.pattern})\.(?:(?:{formats(name)}){chain}|"
                                               rf"{re.escape((MANIFEST_SUFFIX + SIGNATURE_SUFFIX).lstrip('.'))})"))
            for name in site.enabled()}


def _parse_orphan(dest: str, key: str, prefix: str, names: dict[str, tuple[str, re.Pattern[str]]]) -> Orphan | None:
    """The artifact this key names exactly (``<prefix>/<source>/<partition>/<stamp>.<chain>``), or None."""
    if not key.startswith(prefix + "/"):
        return None
    parts = key[len(prefix) + 1:].split("/")
    if len(parts) != 3 or parts[0] not in names or not parts[1] or safe_part(parts[1]) != parts[1]:
        return None
    source, pattern = names[parts[0]]
    found = pattern.fullmatch(parts[2])
    captured = stamp_time(found["stamp"]) if found else None
    return Orphan(dest, key, source, parts[1], captured) if captured is not None else None


@takes_site
def find_orphans(site: Site, destinations: list[Destination], entries: list[Entry], now: datetime,
             state_file: Path) -> list[tuple[Orphan, str, str]]:
    """Every artifact without its manifest on its destination, with keep (why) or delete."""
    grace = site.orphan_grace
    names = _artifact_names(site)
    described = {key: e for e in entries for key in e.manifest.object_keys}
    needed = {dep: e for e in entries for dep in e.manifest.facts.get("depends_on") or []}
    found: list[tuple[Orphan, str, str]] = []
    state: tuple[set[str], str | None] | None = None
    for dest in destinations:
        try:
            listed = list(dest.list(site.prefix + "/"))
        except BackupError as exc:
            raise ListingFailed(f"{dest.name} could not be listed ({exc})") from None
        present = set(listed)
        for key in listed:
            orphan = _parse_orphan(dest.name, key, site.prefix, names)
            if orphan is None or orphan.manifest_key in present:
                continue
            what = f"artifact without a manifest on {dest.name}"
            if key in described:
                m = described[key].manifest
                found.append((orphan, "keep", f"{what}, but the manifest on {', '.join(described[key].held_by)} "
                                              f"names it ({m.source} {m.partition} captured {m.captured_at})"))
                continue
            if key in needed:
                m = needed[key].manifest
                found.append((orphan, "keep", f"{what}, but {m.source} {m.partition} (captured {m.captured_at}) "
                                              f"depends on it"))
                continue
            if orphan.source == UPLOADS_SOURCE:
                state = state or state_references(state_file)
                if state[1] is not None or key in state[0]:
                    why = (f"the uploads state {state_file} cannot be read ({state[1]})" if state[1] is not None
                           else f"the uploads state {state_file} names it")
                    found.append((orphan, "keep", f"{what}, but {why}"))
                    continue
            age = now - orphan.captured
            if age < grace:
                found.append((orphan, "keep", f"{what}, captured {_hours(age)} ago: kept for "
                                              f"retention.orphan_grace_hours ({grace // timedelta(hours=1)} h), a run "
                                              f"may still write its manifest"))
                continue
            try:
                locked = lock_of(dest, key)
            except BackupError as exc:
                locked = f"Object Lock state unreadable ({exc})"
            if locked:
                found.append((orphan, "keep", f"{what}: {locked}"))
                continue
            found.append((orphan, "delete", f"{what} (a run stopped between upload and manifest): no backup, "
                                            f"captured {_hours(age)} ago, older than retention.orphan_grace_hours "
                                            f"({grace // timedelta(hours=1)} h)"))
    return found


def _hours(span: timedelta) -> str:
    hours = span / timedelta(hours=1)
    return f"{hours / 24:.1f} days" if hours >= 48 else f"{max(hours, 0):.1f} h"


def locking(dest: Destination) -> Destination | None:
    """dest when it writes with object_lock, else None."""
    return dest if dest.object_lock_mode is not None else None


def lock_of(dest: Destination, key: str) -> str | None:
    """What Object Lock keeps of ``key`` on dest ('locked until …', 'under legal hold'), or None; only a destination
    that writes with object_lock is asked."""
    locked = locking(dest)
    return locked.lock(key) if locked is not None else None


def sweep(first: list[tuple[Orphan, str, str]], fresh: list[tuple[Orphan, str, str]],
          destinations: dict[str, Destination], log: Log) -> list[tuple[Orphan, str, str]]:
    """Delete the orphans both plans delete; their manifest and lock are read once more right before."""
    done: list[tuple[Orphan, str, str]] = []
    reviewed = {o for o, action, _ in first if action == "delete"}
    for orphan, action, reason in fresh:
        if action != "delete":
            done.append((orphan, action, reason))
            continue
        what = f"{orphan.source} {orphan.partition} artifact {orphan.key} (no manifest)"
        if orphan not in reviewed:
            done.append((orphan, "keep", f"deletable only in the listing read again before deleting: "
                                                   f"left for the next prune (otherwise: {reason})"))
            continue
        dest = destinations[orphan.destination]
        try:
            if dest.exists(orphan.manifest_key):
                done.append((orphan, "keep", f"its manifest appeared on {dest.name} right before deleting"))
                continue
            locked = lock_of(dest, orphan.key)
            if locked:
                log(redact(f"kept {what} on {dest.name}: {locked}"))
                done.append((orphan, "keep", f"artifact without a manifest on {dest.name}: {locked}"))
                continue
            dest.delete(orphan.key)
        except (BackupError, OSError) as exc:
            error = str(exc) if isinstance(exc, BackupError) else f"{dest.uri(orphan.key)}: {exc.strerror or exc}"
            log(redact(f"failed to delete {what} from {dest.name}: {error}"))
            done.append((orphan, "failed", f"{reason}; failed on {dest.name}: {error}"))
            continue
        log(redact(f"deleted {what} from {dest.name}: {reason}"))
        done.append((orphan, "deleted", reason))
    return done
