"""The commit point of a capture: its manifest, signed into its source's chain, written beside its artifact.

``commit(site, manifest, destinations, holders)`` is the last thing a backup does. Under the source's
chain lock (``chain.locked``):

1. the head of the chain: this host's state (``<state_dir>/chain``), or, when it has none, rebuilt from what
   is authenticated on the destinations (newest sequence; every ledger's pruned captures). A write a killed run
   left pending is settled first: it is the head when its manifest reached any destination;
2. a manifest already at this capture's key (the stage run again after a partial write) is taken as it is when
   it is authenticated, so every destination gets the same signed bytes; anything else there is refused;
3. otherwise the manifest gets ``sequence`` = head + 1 and ``previous`` = the head's sha256, and is signed;
4. on each destination that holds the artifact: the signature (``<stamp>.manifest.json.sig``), then the manifest
   (a reader never sees a manifest without its signature);
5. the head advances when any destination took the manifest, and the ledger (which also lists every signed
   capture by its manifest's sha256) is rewritten on each destination that took it (best effort: a ledger behind
   its newest capture is allowed; that capture's own signature is read instead, and the next commit or prune
   writes the ledger again).

A capture is signed only once this host has recorded it (the pending write of step 3): when the state directory
cannot take that record (a full or read-only disk), the run fails in one line and nothing is committed, since a
capture signed without it would let the next one take the same sequence (a fork). When only the head's advance
cannot be saved after the manifest is written, the backup stands with a warning: the pending record settles it.

``record_pruned`` is prune's counterpart: the captures it is about to delete go into the state and every
destination's ledger first, so their absence is never mistaken for someone else's deletion.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import replace

from erp_backup_pipeline.core import catalog, chain, signing
from erp_backup_pipeline.core.destinations import Destination, put_bytes, read_bytes
from erp_backup_pipeline.core.manifest import Manifest
from erp_backup_pipeline.core.site import Site, takes_site
from erp_backup_pipeline.errors import BackupError, DestinationError

Log = Callable[[str], None]


@takes_site
def head(site: Site, source: str) -> chain.Ledger:
    """This host's record of the source's chain, settled and rebuilt as needed (call under ``chain.locked``)."""
    state = chain.load_state(site.state_dir, source)
    if state is None:
        state = rebuild(site, source)
    if state.pending:
        pending, state.pending = state.pending, None
        if any(_exists(d, pending["key"]) for d in list(site.destinations)):
            state.record(int(pending["sequence"]), str(pending["sha256"]))
        chain.save_state(site.state_dir, state)
    return state


def _exists(dest: Destination, key: str) -> bool:
    try:
        return dest.exists(key)
    except BackupError:
        return False


@takes_site
def rebuild(site: Site, source: str) -> chain.Ledger:
    """The chain's head and pruned captures as the destinations' authenticated captures and ledgers show them."""
    found = catalog.read(list(site.destinations), site.prefix, site.trust(), source)
    state = chain.Ledger(source)
    for ledger in found.ledgers.get(source, {}).values():
        state.merge(ledger)
    for entry in found.entries:
        if entry.manifest.source == source:
            state.record(entry.manifest.sequence, entry.sha256)
    return state


def _already_there(site: Site, manifest: Manifest, destinations: list[Destination]) -> tuple[bytes | None, set[str]]:
    """The signed bytes of this capture's manifest when a destination holds them already (a stage run again), and
    the destinations that hold a manifest at its key."""
    have = {dest.name for dest in destinations if _exists(dest, manifest.key)}
    trust = site.trust()
    for dest in destinations:
        if dest.name not in have:
            continue
        found = catalog.authenticate(dest, manifest.key, _exists(dest, manifest.key + signing.SIGNATURE_SUFFIX),
                                     site.prefix, trust)
        if isinstance(found, catalog.Rejected):
            raise DestinationError(f"{dest.uri(manifest.key)} exists and is not this capture's signed manifest "
                                   f"({found.reason}); nothing was written over it")
        return read_bytes(dest, manifest.key, limit=catalog.MAX_MANIFEST_BYTES), have
    return None, have


def _os_reason(exc: OSError) -> str:
    return (exc.strerror or type(exc).__name__) + (f" ({exc.filename})" if exc.filename else "")


@contextlib.contextmanager
def _uncommitted(site: Site, manifest: Manifest) -> Iterator[None]:
    """A state directory that cannot take the chain's record before the manifest is written: one line, nothing
    committed (only state-dir operations raise OSError in ``commit``; after the write they are warnings)."""
    try:
        yield
    except OSError as exc:
        raise BackupError(f"{manifest.source} {manifest.partition}: nothing was committed: this host's chain state "
                          f"in {site.state_dir} could not be written ({_os_reason(exc)}); a capture is signed only "
                          "once it is recorded there: free space there (or make it writable) and run the backup "
                          "again") from None


@takes_site
def commit(site: Site, manifest: Manifest, destinations: list[Destination], holders: Iterable[str],
           log: Log | None = None, replacing: bool = False) -> tuple[Manifest, dict[str, str]]:
    """Sign and write the manifest on every destination in ``holders``; the manifest as written, and an error line
    per destination that did not take it. ``replacing``: an unsigned manifest stands at the key and is replaced
    in place (``catalog adopt``, after verifying the capture)."""
    with signing.COST.timed():
        return _commit(site, manifest, destinations, holders, log, replacing)


def _commit(site: Site, manifest: Manifest, destinations: list[Destination], holders: Iterable[str],
            log: Log | None, replacing: bool) -> tuple[Manifest, dict[str, str]]:
    signer = site.signer()
    chosen = [d for d in destinations if d.name in set(holders)]
    errors: dict[str, str] = {}
    with _uncommitted(site, manifest), chain.locked(site.state_dir, manifest.source):
        state = head(site, manifest.source)
        data, have = (None, set()) if replacing else _already_there(site, manifest, chosen)
        if data is not None:
            manifest = Manifest.from_json(data)
        else:
            manifest = replace(manifest, sequence=state.sequence + 1, previous=state.sha256)
            data = manifest.to_json()
        sha = chain.digest(data)
        state.pending = {"sequence": manifest.sequence, "sha256": sha, "key": manifest.key}
        chain.save_state(site.state_dir, state)
        signature = signer.sign(data)
        written = []
        for dest in chosen:
            try:
                with signing.COST.excluded():  # as every backup did before manifests were signed
                    gone = [k for k in manifest.object_keys if not dest.exists(k)]
                if gone:  # a manifest never points at nothing (prune sweeps an artifact without one)
                    raise DestinationError(f"{dest.uri(gone[0])} is gone (an artifact without a manifest is swept by "
                                           "prune after retention.orphan_grace_hours)")
                dest.replace(manifest.key + signing.SIGNATURE_SUFFIX, signature)
                with signing.COST.excluded():
                    if replacing:
                        dest.replace(manifest.key, data)
                    elif dest.name not in have:
                        put_bytes(dest, manifest.key, data)
                written.append(dest.name)
            except BackupError as exc:
                errors[dest.name] = f"manifest: {exc}"
        state.pending = None
        if written:
            state.record(manifest.sequence, sha)
        try:
            chain.save_state(site.state_dir, state)
        except OSError as exc:  # the manifest may be written: the pending record on disk settles it next time
            if log is not None:
                log(f"the chain state of {manifest.source} in {site.state_dir} could not be updated "
                    f"({_os_reason(exc)}); it keeps sequence {manifest.sequence} as pending, the next backup or "
                    "prune settles it")
        if written:  # only where the capture went: a destination that took nothing gets nothing
            write_ledger(site, state, signer, [d for d in chosen if d.name in written], log)
    return manifest, errors


@takes_site
def write_ledger(site: Site, state: chain.Ledger, signer: signing.Signer, destinations: Iterable[Destination],
                 log: Log | None = None) -> dict[str, str]:
    """The ledger on each of the destinations; an error line per destination that did not take it."""
    data = chain.sign_ledger(replace(state, pending=None), signer)
    key = chain.ledger_key(site.prefix, state.source)
    failed = {}
    for dest in destinations:
        try:
            dest.replace(key, data)
        except BackupError as exc:
            failed[dest.name] = str(exc)
            if log is not None:
                log(f"{dest.name}: the chain ledger of {state.source} could not be written ({exc}); the next backup "
                    "or prune writes it again")
    return failed


@takes_site
def record_pruned(site: Site, source: str, pruned: dict[int, str], log: Log | None = None) -> dict[str, str]:
    """Before prune deletes these captures (sequence -> manifest sha256): into the state and every ledger. Returns
    the destinations whose ledger could not be written (nothing may be deleted there)."""
    signer = site.signer()
    with chain.locked(site.state_dir, source):
        state = head(site, source)
        state.pruned.update(pruned)
        state.forget_pruned()
        chain.save_state(site.state_dir, state)
        return write_ledger(site, state, signer, list(site.destinations), log)

