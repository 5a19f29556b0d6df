"""The per-source hash chain: every signed manifest names its place in its source's history.

Each manifest carries ``sequence`` (1, 2, 3 … per source, in signing order) and ``previous`` (the sha256 of
the previous manifest's bytes). Retention deletes captures from the middle of that history, so the history
also has a **ledger** per source, ``<prefix>/<source>/chain.json`` (its body and the body's signature in one
object, ``sign_ledger``), written to every destination that holds the source: the head (newest sequence and
its sha256) and every capture retention pruned (sequence -> sha256). Prune writes the ledger before it deletes;
a backup after its manifest.

The backing-up host keeps the same record in ``<state_dir>/chain/<source>.json``; ``core.commit`` advances it
under a lock (``locked``), so two runs of one source never fork the chain; a lost state file is rebuilt from
what is authenticated on the destinations.

``audit`` judges one source's authenticated captures (all destinations together) against the ledgers: a
capture whose predecessor is neither there nor pruned is a **missing link** (deleted by someone else), two
different captures with one sequence a **fork**, a ledger or local head whose capture is gone a **rollback**
(the newest history removed). Each finding is a line naming the source, sequence and where.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from erp_backup_pipeline.core import signing, statefile
from erp_backup_pipeline.core.manifest import safe_part
from erp_backup_pipeline.errors import VerifyError

LEDGER_NAME = "chain.json"
LEDGER_FORMAT = 1
MAX_LEDGER_BYTES = 8 << 20


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def ledger_key(prefix: str, source: str) -> str:
    return f"{prefix}/{safe_part(source)}/{LEDGER_NAME}"


@dataclass
class Ledger:
    """One source's chain record: its head and what retention pruned."""

    source: str
    sequence: int = 0
    sha256: str | None = None
    pruned: dict[int, str] = field(default_factory=dict)
    pending: dict[str, Any] | None = None  # this host's state only: a manifest being written (core.commit)
    # every capture signed and not pruned (sequence -> sha256 of its manifest): the catalog takes a manifest whose
    # bytes hash to one of these as authenticated without fetching its signature (one GET per ledger, not per
    # manifest); the ledger's own signature covers them
    signed: dict[int, str] = field(default_factory=dict)

    def to_json(self) -> bytes:
        body: dict[str, Any] = {"format": LEDGER_FORMAT, "source": self.source, "sequence": self.sequence,
                                "sha256": self.sha256, "pruned": {str(k): v for k, v in sorted(self.pruned.items())},
                                "signed": {str(k): v for k, v in sorted(self.signed.items())},
                                "written_at": datetime.now(UTC).isoformat(timespec="seconds")}
        if self.pending:
            body["pending"] = self.pending
        return (json.dumps(body, indent=1, sort_keys=True) + "\n").encode()

    @classmethod
    def from_json(cls, data: bytes, source: str) -> Ledger:
        """ValueError when data is not this source's ledger."""
        raw = json.loads(data)
        if not isinstance(raw, dict) or raw.get("format") != LEDGER_FORMAT or raw.get("source") != source:
            raise ValueError("not a chain ledger of this source")
        seq, sha, pruned = raw.get("sequence"), raw.get("sha256"), raw.get("pruned")
        if not isinstance(seq, int) or seq < 0 or not (sha is None or isinstance(sha, str)) or not isinstance(pruned, dict):
            raise ValueError("chain ledger fields have the wrong types")
        pending = raw.get("pending") if isinstance(raw.get("pending"), dict) else None
        signed = raw.get("signed")
        return cls(source, seq, sha, {int(k): str(v) for k, v in pruned.items()}, pending,
                   {int(k): str(v) for k, v in signed.items()} if isinstance(signed, dict) else {})

    def merge(self, other: Ledger) -> None:
        """The newer head of the two, and every signed and pruned capture either knows."""
        if other.sequence > self.sequence:
            self.sequence, self.sha256 = other.sequence, other.sha256
        self.pruned.update(other.pruned)
        self.signed.update(other.signed)
        self.forget_pruned()

    def record(self, sequence: int, sha256: str) -> None:
        """A capture signed into the chain: the head when it is the newest."""
        self.signed[sequence] = sha256
        if sequence > self.sequence:
            self.sequence, self.sha256 = sequence, sha256

    def forget_pruned(self) -> None:
        for sequence in self.pruned:
            self.signed.pop(sequence, None)


def sign_ledger(ledger: Ledger, signer: signing.Signer) -> bytes:
    """The ledger object: its body and the body's signature in one file, so a reader never sees one without the
    other."""
    body = ledger.to_json().decode()
    return (json.dumps({"body": body, "signature": signer.sign(body.encode(), signing.CHAIN_NAMESPACE).decode()},
                       indent=1) + "\n").encode()


def read_ledger(data: bytes, source: str, keys: Any) -> Ledger:
    """An authenticated ledger of source; VerifyError naming why not."""
    if len(data) > MAX_LEDGER_BYTES:
        raise VerifyError("chain ledger is oversized")
    try:
        outer = json.loads(data)
        body, signature = outer["body"], outer["signature"]
        if not isinstance(body, str) or not isinstance(signature, str):
            raise TypeError("body and signature must be text")
    except (ValueError, TypeError, KeyError, RecursionError) as exc:
        raise VerifyError(f"not a chain ledger ({exc})") from None
    signing.verify(body.encode(), signature.encode(), keys, signing.CHAIN_NAMESPACE)
    try:
        return Ledger.from_json(body.encode(), source)
    except (ValueError, TypeError, RecursionError) as exc:
        raise VerifyError(f"not a chain ledger of {source} ({exc})") from None


def _state_file(state_dir: Path, source: str) -> Path:
    return Path(state_dir) / "chain" / f"{safe_part(source)}.json"


@contextlib.contextmanager
def locked(state_dir: Path, source: str) -> Iterator[None]:
    """Exclusive per source on this host: reading the head, signing the next manifest and advancing it."""
    path = _state_file(state_dir, source)
    # state_dir itself 0700 as core.sources.uploads makes it (mkdir(parents=True) gives the parents the umask's mode)
    Path(state_dir).mkdir(parents=True, exist_ok=True, mode=0o700)
    path.parent.mkdir(exist_ok=True, mode=0o700)
    with statefile.locked(path.with_suffix(".lock")):
        yield


def load_state(state_dir: Path, source: str) -> Ledger | None:
    """This host's record of the chain, or None when it has none (a new host, a lost state directory)."""
    try:
        data = _state_file(state_dir, source).read_bytes()
    except FileNotFoundError:
        return None
    try:
        return Ledger.from_json(data, source)
    except (ValueError, TypeError):
        return None


def save_state(state_dir: Path, ledger: Ledger) -> None:
    """Write the record atomically (0600, a fresh temp file renamed over the old one)."""
    statefile.replace(_state_file(state_dir, ledger.source), ledger.to_json())


@dataclass(frozen=True)
class Link:
    """What the audit needs of one authenticated capture."""

    sequence: int
    previous: str | None
    sha256: str
    key: str
    where: tuple[str, ...]  # destinations it is authenticated on
    shipped_to: tuple[str, ...] = ()  # destinations its own manifest says hold it


def audit(source: str, links: Iterable[Link], ledgers: dict[str, Ledger], local: Ledger | None = None,
          readable: Iterable[str] = (), complete: bool = True) -> tuple[list[str], list[str]]:
    """Findings about one source's history, and gaps: captures missing from a destination their manifest says they
    were shipped to (``readable``: the destinations that could be listed). Findings (a missing link, a fork, a
    rollback) mean the history was changed by someone else; a gap may also be a manifest write that failed there.
    Rollbacks are judged only when every destination was read (``complete``)."""
    by_seq: dict[int, list[Link]] = {}
    for link in links:
        by_seq.setdefault(link.sequence, []).append(link)
    known = Ledger(source)
    for ledger in ledgers.values():
        known.merge(ledger)
    if local is not None:
        known.merge(local)
    findings = []
    for seq, found in sorted(by_seq.items()):
        if len({f.sha256 for f in found}) > 1:
            findings.append(f"{source}: fork at sequence {seq}: {len(found)} different signed captures "
                            f"({', '.join(sorted(f.key for f in found))[:300]})")
    present = {seq: found[0] for seq, found in by_seq.items()}
    for seq, link in sorted(present.items()):
        if seq <= 1:
            continue
        before = present.get(seq - 1)
        expected = before.sha256 if before is not None else known.pruned.get(seq - 1)
        if expected is None:
            findings.append(f"{source}: missing link: the capture before sequence {seq} ({link.key}) is on no "
                            "destination and was not pruned")
        elif expected != link.previous:
            findings.append(f"{source}: broken link at sequence {seq} ({link.key}): its previous capture is not the "
                            "one the chain holds")
    listed = set(readable)
    gaps = []
    for seq, link in sorted(present.items()):
        gone = sorted((set(link.shipped_to) & listed) - set(link.where))
        if gone and seq not in known.pruned:
            gaps.append(f"{source}: sequence {seq} ({link.key}) is not on {', '.join(gone)}, which it was shipped to, "
                        "and was not pruned (deleted there, or its manifest write failed)")
    if not complete:
        return findings, gaps
    for name, ledger in sorted(ledgers.items()):
        if ledger.sequence and ledger.sequence not in present and ledger.sequence not in known.pruned:
            findings.append(f"{source}: rollback on {name}: its ledger names sequence {ledger.sequence} as the newest "
                            "capture, which is on no destination")
    if local is not None and local.sequence and local.sequence not in present and local.sequence not in known.pruned:
        findings.append(f"{source}: rollback: this host signed sequence {local.sequence} last, which is on no "
                        "destination")
    return findings, gaps
