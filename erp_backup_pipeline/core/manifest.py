"""The manifest: the JSON record written beside every artifact, last, as the commit point.

An artifact without a manifest is not a backup (the catalog ignores it), and a manifest counts only with its
signature ``<stamp>.manifest.json.sig`` beside it (core.signing, core.catalog). The manifest holds
partition, source, real capture time, each stage's size/sha256/seconds, the codec chain in
order (restore inverts it), recipient fingerprints (never keys), tool versions and every
destination's result. Object layout::

    <prefix>/<source>/<partition>/<stamp>.<ext chain>       the artifact
    <prefix>/<source>/<partition>/<stamp>.<name>.<format>.<compression>.<encryption>
                                                            its attachments, if any (PostgreSQL: globals, database)
    <prefix>/<source>/<partition>/<stamp>.manifest.json     its manifest
    <prefix>/<source>/<partition>/<stamp>.manifest.json.sig its signature (SSHSIG, ssh-keygen -Y verify)
    <prefix>/<source>/chain.json                            the source's chain ledger (core.chain)
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from datetime import date
from typing import Any

FORMAT = 2  # 2: signed, with sequence and previous (core.chain); 1: unsigned, from before
PARTITION_TIMEZONE = "Europe/Berlin"  # daily partition keys are dates in this zone (DESIGN: conventions)
MANIFEST_SUFFIX = ".manifest.json"
_SAFE = re.compile(r"[^A-Za-z0-9._-]")
_DAY = re.compile(r"\d{4}-\d{2}-\d{2}")


def safe_part(text: str) -> str:
    """A partition key or name made safe for a file name or object key."""
    cleaned = _SAFE.sub("_", text).strip(".")
    return cleaned or "_"


def parse_partition(text: str) -> date:
    """A daily partition key: a real date written ``YYYY-MM-DD``; ValueError for anything else."""
    if not isinstance(text, str) or not _DAY.fullmatch(text):
        raise ValueError(f"{text!r} is not a date written YYYY-MM-DD")
    return date.fromisoformat(text)


def artifact_dir(prefix: str, source: str, partition: str) -> str:
    return f"{prefix}/{safe_part(source)}/{safe_part(partition)}"


@dataclass
class Manifest:
    source: str
    kind: str
    partition: str
    captured_at: str
    finished_at: str
    artifact_key: str
    artifact_bytes: int
    artifact_sha256: str
    chain: list[dict[str, Any]]
    verify: dict[str, Any]
    facts: dict[str, Any]
    tools: dict[str, str]
    destinations: dict[str, dict[str, Any]]
    complete: bool
    mode: str = "live"
    attachments: list[dict[str, Any]] = field(default_factory=list)  # core.attachments: the capture's small extras
    sequence: int = 0  # its place in its source's chain (core.chain), 1, 2, 3 ... in signing order
    previous: str | None = None  # sha256 of the previous manifest's bytes of the same source
    format: int = FORMAT
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return self.artifact_key.rsplit("/", 1)[0] + "/" + self.stamp + MANIFEST_SUFFIX

    @property
    def object_keys(self) -> list[str]:
        """Every object of this capture but the manifest: the artifact, then its attachments."""
        return [self.artifact_key] + [a["key"] for a in self.attachments]

    @property
    def stamp(self) -> str:
        return self.artifact_key.rsplit("/", 1)[1].split(".", 1)[0]

    def to_json(self) -> bytes:
        return (json.dumps(asdict(self), indent=2, sort_keys=True) + "\n").encode()

    @classmethod
    def from_json(cls, data: bytes) -> Manifest:
        raw = json.loads(data)
        known = {f for f in cls.__dataclass_fields__}
        found = cls(**{k: v for k, v in raw.items() if k in known})
        if not isinstance(found.attachments, list) or not all(
                isinstance(a, dict) and all(isinstance(a.get(k), str) for k in ("name", "key", "sha256", "artifact_sha256"))
                for a in found.attachments):
            raise ValueError("attachments is not a list of attachment records")
        return found

    def stage(self, name: str) -> dict[str, Any]:
        for entry in self.chain:
            if entry["stage"] == name:
                return entry
        raise KeyError(name)
