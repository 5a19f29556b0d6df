"""Attachments: the small extra artifacts one capture consists of besides its main stream.

A source may need more than its dump to be restorable: a PostgreSQL database needs the roles its objects
belong to (``globals.sql``) and its own properties (``database.json``), which live in the cluster, not in
the dump. A source that has them returns them from ``attachments(workdir, facts)`` (``Attachment``: a name,
a format and the bytes, taken in the backup's own run) and checks them with ``verify_attachment(name,
data, facts)``. Each is handled like the main artifact, in memory since it is small:

- ``seal`` compresses it, proves the compressed bytes decompress to the same sha256, runs the source's
  check, encrypts it for the same recipients and stages only the ciphertext (0600) in the capture's
  scratch dir;
- ``ship`` puts it on every destination that holds the capture, before the main artifact is committed,
  so a manifest never names an attachment that is not there; the manifest lists each one (``attachments``:
  name, format, key, plaintext bytes and sha256, ciphertext bytes and sha256);
- ``read`` fetches it back for a restore or a verification: from the first destination with an intact
  copy (ciphertext sha256), decrypted, decompressed, and its plaintext sha256 checked.

Keys sit beside the artifact: ``<stamp>.<name>.<format>.<compression>.<encryption>``.
"""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from erp_backup_pipeline.core.destinations import Destination, get, put_bytes
from erp_backup_pipeline.errors import BackupError, VerifyError

MAX_BYTES = 256 << 20  # an attachment is held in memory; anything near this is not a "small" record


@dataclass(frozen=True)
class Attachment:
    name: str  # what it is: "globals"
    format: str  # its file format, the first extension of its key: "sql"
    data: bytes


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def seal(att: Attachment, codec: Any, enc: Any, workdir: Path, key_dir: str, stamp: str,
         check: Callable[[str, bytes], dict[str, Any]]) -> dict[str, Any]:
    """Compress, verify (round trip + the source's check), encrypt and stage one attachment; VerifyError
    when it is not sound. Returns its record (``file`` is the staged ciphertext, not for the manifest)."""
    if not att.data:
        raise VerifyError(f"attachment {att.name} is empty")
    if len(att.data) > MAX_BYTES:
        raise VerifyError(f"attachment {att.name} is {len(att.data)} bytes, over the {MAX_BYTES} an attachment may be")
    compressed = io.BytesIO()
    codec.compress(io.BytesIO(att.data), compressed)
    back = io.BytesIO()
    codec.decompress(io.BytesIO(compressed.getvalue()), back)
    if _sha256(back.getvalue()) != _sha256(att.data):
        raise VerifyError(f"attachment {att.name}: decompressed bytes differ from what was captured")
    details = check(att.name, att.data)
    ciphertext = io.BytesIO()
    enc.encrypt(io.BytesIO(compressed.getvalue()), ciphertext)
    name = f"{stamp}.{att.name}.{att.format}.{codec.extension}.{enc.extension}"
    path = workdir / name
    with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600), "wb") as fh:
        fh.write(ciphertext.getvalue())
    return {"name": att.name, "format": att.format, "key": f"{key_dir}/{name}", "file": str(path),
            "bytes": len(att.data), "sha256": _sha256(att.data), "compressed_bytes": len(compressed.getvalue()),
            "artifact_bytes": len(ciphertext.getvalue()), "artifact_sha256": _sha256(ciphertext.getvalue()),
            "verify": details}


def manifest_records(sealed: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """What the manifest keeps of each sealed attachment (no scratch path)."""
    return [{k: v for k, v in rec.items() if k != "file"} for rec in sealed]


def ship(dest: Destination, sealed: Iterable[dict[str, Any]]) -> None:
    """Put every staged attachment on dest (a retried ship finds those already there and keeps them)."""
    for rec in sealed:
        if dest.exists(rec["key"]):
            continue
        put_bytes(dest, rec["key"], Path(rec["file"]).read_bytes())


def read(destinations: Iterable[Destination], holders: Iterable[str], rec: dict[str, Any], decrypt: Any,
         decompress: Any) -> bytes:
    """The plaintext of one attachment of a capture: the first intact copy on the destinations that hold the
    capture, decrypted and decompressed, its sha256 checked; VerifyError when no copy is intact."""
    held = set(holders)
    errors = []
    for dest in destinations:
        if dest.name not in held:
            continue
        buf = io.BytesIO()
        try:
            get(dest, rec["key"], buf, expected_sha256=rec["artifact_sha256"])
            plain = io.BytesIO()
            decrypt(io.BytesIO(buf.getvalue()), plain)
            data = io.BytesIO()
            decompress(io.BytesIO(plain.getvalue()), data)
        except BackupError as exc:
            errors.append(f"{dest.name}: {exc}")
            continue
        if _sha256(data.getvalue()) != rec["sha256"]:
            errors.append(f"{dest.name}: decrypted content differs from the manifest")
            continue
        return data.getvalue()
    raise VerifyError(f"no intact copy of the capture's {rec['name']} attachment: "
                      + "; ".join(errors or ["no destination holds it"]))
