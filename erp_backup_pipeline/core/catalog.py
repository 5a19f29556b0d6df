"""The catalog: the captures authenticated on each destination; everything else found there is evidence.

A manifest counts only when all of this holds on the destination it was read from (``authenticate``):

- its signature ``<stamp>.manifest.json.sig`` (``core.signing``) is valid for one of ``signing.public_keys``,
  over the manifest's exact bytes (at most ``MAX_MANIFEST_BYTES``); or those bytes' sha256 is listed as signed
  by an authenticated ledger of the same destination, or by this host's chain state (``core.chain``): then the
  signature need not be fetched, one ledger read vouches for a source's every manifest;
- it sits at the key derived from its own signed content (``<prefix>/<source>/<partition>/<stamp>.manifest.json``)
  and the artifact and attachments it names sit beside it under the same stamp: a signed manifest copied to
  another partition or key, or pointing at another capture's artifact, is rejected;
- it is not from the future (``captured_at`` more than ``CLOCK_SKEW`` ahead of now), and its partition is not
  later than the day after its capture.

Everything else is a ``Rejected`` line naming the destination, the key and the reason (unsigned, legacy,
badly signed, misplaced, oversized, unparsable, future-dated): listed by ``erp-backup list``, never used by
verify, restore, recover, drills or prune, and holding prune until someone has looked. ``read`` also checks
each source's hash chain (``core.chain``) when it lists a whole source, and reports findings the same way.
The same capture held by several destinations is one entry listing where it is authenticated.
"""

from __future__ import annotations

from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from erp_backup_pipeline.core import chain, signing
from erp_backup_pipeline.core.destinations import Destination, read_bytes
from erp_backup_pipeline.core.manifest import (
    FORMAT,
    MANIFEST_SUFFIX,
    PARTITION_TIMEZONE,
    Manifest,
    artifact_dir,
    parse_partition,
    safe_part,
)
from erp_backup_pipeline.core.site import Site, takes_site
from erp_backup_pipeline.errors import ArtifactNotFound, BackupError, UsageError, VerifyError

MAX_MANIFEST_BYTES = 1 << 20
ID_LENGTH = 8  # hex digits of a capture ID, as restic shows its snapshots'
MIN_ID_PREFIX = 4
CLOCK_SKEW = timedelta(minutes=5)
LEGACY = ("unsigned (legacy: written before manifests were signed; `erp-backup catalog adopt` verifies it end to "
          "end and signs it)")


@dataclass
class Entry:
    manifest: Manifest
    held_by: list[str] = field(default_factory=list)
    sha256: str = ""  # of the manifest's bytes: the chain links by it

    @property
    def id(self) -> str:
        return short_id(self.sha256)

    def as_row(self) -> dict[str, Any]:
        m = self.manifest
        return {"id": self.id, "source": m.source, "partition": m.partition, "captured_at": m.captured_at,
                "raw_bytes": m.stage("dump")["bytes"], "artifact_bytes": m.artifact_bytes,
                "sha256": m.artifact_sha256, "verified": bool(m.verify.get("ok")), "complete": m.complete,
                "destinations": sorted(self.held_by), "key": m.artifact_key, "mode": m.mode,
                "sequence": m.sequence}


@dataclass(frozen=True)
class Rejected:
    """A file on a destination that looks like part of the catalog and is not trusted: evidence."""

    destination: str
    key: str
    reason: str

    def line(self) -> str:
        return f"{self.destination}: {self.key}: {self.reason}"

    def as_row(self) -> dict[str, str]:
        return {"destination": self.destination, "key": self.key, "reason": self.reason}


@dataclass
class Catalog:
    entries: list[Entry]
    rejected: list[Rejected] = field(default_factory=list)
    findings: list[str] = field(default_factory=list)  # the hash chains' (missing links, forks, rollbacks)
    gaps: list[str] = field(default_factory=list)  # captures missing from a destination they were shipped to
    errors: list[str] = field(default_factory=list)  # destinations that could not be listed
    ledgers: dict[str, dict[str, chain.Ledger]] = field(default_factory=dict)  # source -> destination -> ledger

    @property
    def evidence(self) -> list[str]:
        """What someone must look at before prune may act: every rejected file and every chain finding."""
        return [r.line() for r in self.rejected] + self.findings


@dataclass(frozen=True)
class Trust:
    """What authenticates a manifest: the trusted public keys, and the time it is judged at."""

    keys: tuple[Any, ...]
    now: datetime

    @classmethod
    def of(cls, site: Site, now: datetime | None = None) -> Trust:
        return cls(tuple(site.signing.trusted_keys()), now or datetime.now(UTC))


def _place_problem(m: Manifest, key: str, prefix: str) -> str | None:
    """Why a signed manifest is not where its content puts it, or None."""
    folder = artifact_dir(prefix, m.source, m.partition)
    for other in m.object_keys:  # first: the stamp is read from the artifact's key
        name = other.rsplit("/", 1)[-1]
        if other.rsplit("/", 1)[0] != folder or not name.startswith(m.stamp + "."):
            return f"misplaced: it names {other}, which is not beside it under its own stamp"
    if key != f"{folder}/{m.stamp}{MANIFEST_SUFFIX}":
        return f"misplaced: its content puts it at {folder}/{m.stamp}{MANIFEST_SUFFIX}"
    return None


def _time_problem(m: Manifest, now: datetime) -> str | None:
    try:
        captured = datetime.fromisoformat(m.captured_at)
        day = parse_partition(m.partition)
    except (TypeError, ValueError) as exc:
        return f"not a valid manifest ({exc})"
    if captured.tzinfo is None:
        return "not a valid manifest (captured_at has no time zone)"
    if captured > now + CLOCK_SKEW:
        return f"future-dated: captured_at {m.captured_at} is ahead of now"
    if day > captured.astimezone(ZoneInfo(PARTITION_TIMEZONE)).date() + timedelta(days=1):
        return f"future-dated: partition {m.partition} is later than the day after its capture ({m.captured_at})"
    return None


def authenticate(dest: Destination, key: str, signed: bool, prefix: str, trust: Trust,
                 known: frozenset[str] = frozenset()) -> Entry | Rejected:
    """One manifest on one destination: an Entry when it counts, else why it does not. ``known``: sha256 digests of
    manifests an authenticated ledger of that destination (or this host's chain state) lists as signed; such a
    manifest needs no signature fetched."""
    def rejected(reason: str) -> Rejected:
        return Rejected(dest.name, key, reason)

    try:
        data = read_bytes(dest, key, limit=MAX_MANIFEST_BYTES)
    except ArtifactNotFound:
        return rejected("disappeared while the catalog was read")
    if len(data) > MAX_MANIFEST_BYTES:
        return rejected(f"oversized (more than {MAX_MANIFEST_BYTES} bytes)")
    if chain.digest(data) in known:
        return _checked(dest, key, data, prefix, trust)
    if not signed:
        try:
            legacy = Manifest.from_json(data).format < FORMAT
        except (ValueError, TypeError, AttributeError, KeyError, RecursionError):
            legacy = False
        return rejected(LEGACY if legacy else "unsigned: no signature beside it")
    try:
        with signing.COST.timed():
            signing.verify(data, read_bytes(dest, key + signing.SIGNATURE_SUFFIX, limit=signing.MAX_SIGNATURE_BYTES),
                           list(trust.keys))
    except ArtifactNotFound:
        return rejected("unsigned: its signature disappeared while the catalog was read")
    except VerifyError as exc:
        return rejected(str(exc))
    return _checked(dest, key, data, prefix, trust)


def _checked(dest: Destination, key: str, data: bytes, prefix: str, trust: Trust) -> Entry | Rejected:
    """A manifest whose bytes are authentic: an Entry when it is in its place and not from the future."""
    def rejected(reason: str) -> Rejected:
        return Rejected(dest.name, key, reason)

    try:
        m = Manifest.from_json(data)
    except (ValueError, TypeError, AttributeError, KeyError, RecursionError) as exc:
        return rejected(f"not a valid manifest ({str(exc)[:120] or type(exc).__name__})")
    if m.format != FORMAT or not isinstance(m.sequence, int) or m.sequence < 1:
        return rejected(f"not a manifest of format {FORMAT} with a sequence")
    problem = _place_problem(m, key, prefix) or _time_problem(m, trust.now)
    if problem:
        return rejected(problem)
    return Entry(m, [dest.name], chain.digest(data))


def _scope(prefix: str, source: str | None, partition: str | None) -> str:
    sub = prefix + "/"
    if source:
        sub += safe_part(source) + "/"
        if partition:
            sub += safe_part(partition) + "/"
    return sub


def _read_destination(dest: Destination, sub: str, prefix: str, trust: Trust, local: dict[str, chain.Ledger],
                      rejected: list[Rejected]) -> tuple[list[Entry | Rejected], dict[str, chain.Ledger]]:
    """The destination's manifests under ``sub``, each authenticated; and its ledgers listed there, read first:
    what they (and this host's state) list as signed needs no signature fetched."""
    keys = set(dest.list(sub))
    ledgers = _ledgers(dest, prefix, keys, trust, rejected)
    known = frozenset(sha for ledger in [*ledgers.values(), *local.values()] for sha in ledger.signed.values())
    manifests = sorted(k for k in keys if k.endswith(MANIFEST_SUFFIX))
    with ThreadPoolExecutor(max_workers=8) as pool:  # one or two small GETs each: latency, not bandwidth
        return list(pool.map(lambda k: authenticate(dest, k, k + signing.SIGNATURE_SUFFIX in keys, prefix, trust,
                                                    known), manifests)), ledgers


def _ledgers(dest: Destination, prefix: str, keys: Iterable[str], trust: Trust,
             rejected: list[Rejected]) -> dict[str, chain.Ledger]:
    """The authenticated ledgers among the listed keys, by source; the others are rejected."""
    found = {}
    tail = "/" + chain.LEDGER_NAME
    for key in sorted(k for k in keys if k.endswith(tail) and k.startswith(prefix + "/")):
        source = key[len(prefix) + 1:-len(tail)]
        if "/" in source or chain.ledger_key(prefix, source) != key:
            continue  # not where a source's ledger lies
        try:
            with signing.COST.timed():
                found[source] = chain.read_ledger(read_bytes(dest, key, limit=chain.MAX_LEDGER_BYTES), source,
                                                  trust.keys)
        except ArtifactNotFound:
            continue
        except VerifyError as exc:
            rejected.append(Rejected(dest.name, key, str(exc)))
    return found


def read(destinations: Iterable[Destination], prefix: str, trust: Trust, source: str | None = None,
         partition: str | None = None, local: dict[str, chain.Ledger] | None = None,
         expected: Iterable[str] = ()) -> Catalog:
    """Every destination's authenticated captures (oldest first), rejected files, and, unless a single partition
    is asked for, the chain findings of each source listed: those with a capture, the one asked for, those this
    host has chain state of (``local``) and the ``expected`` ones (the configured sources; a source whose every
    capture is gone has only its ledger and this host's state left to tell). Unreadable destinations are in
    ``errors``."""
    dests = list(destinations)
    merged: dict[str, Entry] = {}
    catalog = Catalog([])
    listed: list[str] = []
    by_key: dict[str, dict[str, Entry]] = {}
    for dest in dests:
        try:
            results, found = _read_destination(dest, _scope(prefix, source, partition), prefix, trust, local or {},
                                               catalog.rejected)
        except (BackupError, ValueError) as exc:
            catalog.errors.append(f"{dest.name}: {exc}")
            continue
        listed.append(dest.name)
        for name, ledger in found.items():
            catalog.ledgers.setdefault(name, {})[dest.name] = ledger
        for result in results:
            if isinstance(result, Rejected):
                catalog.rejected.append(result)
            else:
                held = by_key.setdefault(result.manifest.key, {}).setdefault(result.sha256, result)
                if held is not result:  # the same signed bytes on another destination
                    held.held_by.append(dest.name)
    for key, versions in by_key.items():
        if len(versions) > 1:  # two different signed manifests at one key: a fork, trust neither
            for entry in versions.values():
                for name in entry.held_by:
                    catalog.rejected.append(Rejected(name, key, "fork: another destination holds a different signed "
                                                                "manifest at this key"))
            continue
        merged[key] = next(iter(versions.values()))
    catalog.entries = sorted(merged.values(), key=lambda e: (e.manifest.source, e.manifest.partition,
                                                             e.manifest.captured_at))
    if partition is None:
        sources = sorted({e.manifest.source for e in catalog.entries} | ({source} if source else set())
                         | (set() if source else set(local or {}) | set(expected) | set(catalog.ledgers)))
        for s in sources:
            links = [chain.Link(e.manifest.sequence, e.manifest.previous, e.sha256, e.manifest.key,
                                tuple(sorted(e.held_by)),
                                tuple(n for n, r in e.manifest.destinations.items() if r.get("ok")))
                     for e in catalog.entries if e.manifest.source == s]
            findings, gaps = chain.audit(s, links, catalog.ledgers.get(s, {}), (local or {}).get(s), listed,
                                         complete=not catalog.errors)
            catalog.findings += findings
            catalog.gaps += gaps
    return catalog


def latest(entries: list[Entry], source: str, partition: str | None = None) -> Entry:
    """The newest verified, complete capture of a source's partition; without a partition, of its newest partition
    that has a verified capture (``latest``: what a restore takes by default)."""
    verified = [e for e in entries if e.manifest.source == source and e.manifest.verify.get("ok")]
    if partition is None:
        if not verified:
            raise ArtifactNotFound(f"no backup of {source} in the catalog")
        partition = max(e.manifest.partition for e in verified)
    matching = [e for e in verified if e.manifest.partition == partition]
    if not matching:
        raise ArtifactNotFound(f"no backup of {source} for partition {partition}")
    complete = [e for e in matching if e.manifest.complete]
    return (complete or matching)[-1]


def by_id(entries: list[Entry], capture: str, source: str | None = None, partition: str | None = None) -> Entry:
    """The one capture whose ID begins with ``capture`` (a hex prefix of at least ``MIN_ID_PREFIX`` digits), of
    ``source`` and ``partition`` when given. ArtifactNotFound when none is; UsageError when several are; VerifyError
    when it did not verify at backup time (nothing is restored from it)."""
    wanted = capture.lower()
    if not is_capture_id(wanted):
        raise UsageError(f"capture ID {capture!r} is not one: {MIN_ID_PREFIX} to 64 hex digits, as `erp-backup list` "
                         "shows them")
    hits = [e for e in entries if e.sha256.startswith(wanted) and (source is None or e.manifest.source == source)
            and (partition is None or e.manifest.partition == partition)]
    of = " of " + " ".join(x for x in (source, partition) if x) if source or partition else ""
    if not hits:
        raise ArtifactNotFound(f"no capture {capture}{of} in the catalog (`erp-backup list` shows the IDs)")
    if len(hits) > 1:
        raise UsageError(f"capture ID {capture} is ambiguous: {len(hits)} captures begin with it "
                         f"({', '.join(e.sha256[:12] for e in hits[:3])}); give more digits")
    found = hits[0]
    if not found.manifest.verify.get("ok"):
        raise VerifyError(f"capture {found.id} ({found.manifest.source} {found.manifest.partition}, captured "
                          f"{found.manifest.captured_at}) did not verify when it was made: nothing is restored from it")
    return found


def short_id(manifest_sha256: str) -> str:
    """A capture's ID: the first 8 hex digits of its signed manifest's sha256 (``ID_LENGTH``), the same on every
    destination and in every listing; a restore, verify or drill takes it, or any longer prefix."""
    return manifest_sha256[:ID_LENGTH]


def is_capture_id(text: str) -> bool:
    return MIN_ID_PREFIX <= len(text) <= 64 and all(c in "0123456789abcdef" for c in text.lower())


@takes_site
def of(site: Site, source: str | None = None, partition: str | None = None, now: datetime | None = None,
       destinations: Iterable[Destination] | None = None) -> Catalog:
    """The catalog of the configured destinations (or those given), authenticated with the configured keys and,
    on the host that backs up, compared with its own chain state."""
    from erp_backup_pipeline.core.sources import KINDS

    local = {}
    for name in ([source] if source else list(KINDS)):
        state = chain.load_state(site.state_dir, name)
        if state is not None:
            local[name] = state
    dests = list(site.destinations) if destinations is None else destinations
    return read(dests, site.prefix, Trust.of(site, now), source, partition, local,
                expected=site.enabled())
