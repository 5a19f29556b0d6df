"""``erp-backup catalog adopt``: manifests written before manifests were signed, verified and signed into the chain.

An unsigned (legacy) manifest is never trusted silently: the catalog lists it as rejected. Adopting one means
proving the capture end to end first, the way ``verify`` does (download, sha256 against the manifest, decrypt,
decompress, the source's own check, every attachment and what an uploads snapshot depends on), and only then
signing it into its source's chain at its own key (``core.commit``, replacing the unsigned file atomically on
each destination that holds it, the signature first). Captures are adopted oldest first per source, so an uploads
snapshot's earlier artifacts are adopted before it. A capture that does not verify stays as it is, rejected, with
the reason; a dry run verifies and signs nothing, it only lists what would be adopted.

An unsigned manifest is also what a writer at one destination can plant. So by default a capture is adopted only
when every configured destination holds the very same manifest bytes: one destination's files never decide what
another trusts. A capture held by fewer is listed and kept rejected unless ``include_partial`` is given (after an
operator has checked it, or on an installation with a single destination, where nothing can tell them apart).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from erp_backup_pipeline.core import catalog, chain, commit
from erp_backup_pipeline.core.destinations import read_bytes
from erp_backup_pipeline.core.manifest import FORMAT, Manifest
from erp_backup_pipeline.core.restore import verify_entry
from erp_backup_pipeline.core.site import Site, takes_site
from erp_backup_pipeline.errors import BackupError

Log = Callable[[str], None]


@takes_site
def legacy(site: Site) -> list[catalog.Entry]:
    """The unsigned manifests of configured sources, one entry per capture with where it is held, oldest first.
    An entry's ``sha256`` is the manifest bytes' digest, empty when two destinations hold different bytes."""
    found = catalog.of(site)
    dests = {d.name: d for d in list(site.destinations)}
    ours = set(site.enabled())
    by_key: dict[str, catalog.Entry] = {}
    for item in found.rejected:
        if item.reason != catalog.LEGACY or item.destination not in dests:
            continue
        try:
            data = read_bytes(dests[item.destination], item.key, limit=catalog.MAX_MANIFEST_BYTES)
            m = Manifest.from_json(data)
        except (BackupError, ValueError, TypeError, AttributeError, KeyError, RecursionError):
            continue
        if m.key != item.key or m.source not in ours:
            continue  # misplaced, or no source of ours: it stays rejected
        digest = chain.digest(data)
        entry = by_key.setdefault(item.key, catalog.Entry(m, sha256=digest))
        if entry.sha256 != digest:
            entry.sha256 = ""  # two destinations hold different bytes at this key
        entry.held_by.append(item.destination)
    return sorted(by_key.values(), key=lambda e: (e.manifest.source, e.manifest.captured_at))


def _not_everywhere(site: Site, entry: catalog.Entry) -> str | None:
    """Why a writer at one destination could have planted this capture, or None."""
    names = [d.name for d in site.destinations]
    if not entry.sha256:
        return "the destinations hold different manifests at its key"
    missing = [n for n in names if n not in entry.held_by]
    if missing:
        return (f"held by {', '.join(sorted(entry.held_by))} only, not {', '.join(missing)}: a writer at one "
                "destination could have planted it; check it, then adopt it with --include-partial")
    return None


@takes_site
def adopt(site: Site, dry_run: bool = True, log: Log = print,
          include_partial: bool = False) -> list[tuple[catalog.Entry, str, str]]:
    """(entry, action, detail) per legacy capture: adopt (dry run), adopted, or kept (not on every destination, or
    it did not verify)."""
    done = []
    for entry in legacy(site):
        m = entry.manifest
        what = f"{m.source} {m.partition} captured {m.captured_at}"
        partial = _not_everywhere(site, entry)
        if partial and (not include_partial or not entry.sha256):
            log(f"not adopted: {what}: {partial}")
            done.append((entry, "kept", f"stays rejected: {partial}"))
            continue
        if dry_run:
            done.append((entry, "adopt", f"would be verified end to end and signed ({', '.join(entry.held_by)})"))
            continue
        try:
            verify_entry(site, entry, read_data=0)
        except BackupError as exc:
            log(f"not adopted: {what}: {exc}")
            done.append((entry, "kept", f"does not verify, stays rejected: {exc}"))
            continue
        signed, failed = commit.commit(site, replace(m, format=FORMAT), list(site.destinations),
                                       entry.held_by, log, replacing=True)
        detail = f"sequence {signed.sequence} on {', '.join(n for n in entry.held_by if n not in failed)}"
        if failed:
            detail += "; not on " + "; ".join(f"{n}: {err}" for n, err in sorted(failed.items()))
        log(f"adopted {what}: {detail}")
        done.append((entry, "adopted", detail))
    return done
