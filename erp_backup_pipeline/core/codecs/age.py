"""age encryption via pyrage (X25519 recipients): the backup host needs only public keys.

Identities (private keys) are needed only to verify and restore. ``generate_identity`` makes
the key pair for ``erp-backup keygen``.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import IO, Any

import pyrage

from erp_backup_pipeline.errors import CodecError, ConfigError

MAGIC = b"age-encryption.org/v1"


def fingerprint(public_key: str) -> str:
    return "age:" + hashlib.sha256(public_key.encode()).hexdigest()[:16]


def parse_recipient(text: str) -> Any:
    try:
        return pyrage.x25519.Recipient.from_str(text.strip())
    except Exception:  # pyrage raises RecipientError or ValueError depending on the input
        shown = text.strip()[:12] + ("..." if len(text.strip()) > 12 else "")
        raise ConfigError(f"encryption: age recipient '{shown}' does not parse (expected age1...)") from None


def load_identities(path: Path) -> list[Any]:
    from erp_backup_pipeline.settings import read_secret_file

    text = read_secret_file(path, "encryption.identity_file")
    keys = [ln.strip() for ln in text.splitlines() if ln.strip().startswith("AGE-SECRET-KEY-")]
    if not keys:
        raise ConfigError(f"encryption.identity_file: {path} holds no AGE-SECRET-KEY line")
    try:
        return [pyrage.x25519.Identity.from_str(k) for k in keys]
    except Exception:
        raise ConfigError(f"encryption.identity_file: {path} holds a key that does not parse") from None


def generate_identity(path: Path) -> str:
    """Write a new age identity file with mode 0600 (refusing to overwrite) and return its public key."""
    ident = pyrage.x25519.Identity.generate()
    public = str(ident.to_public())
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise ConfigError(f"keygen: {path} already exists; refusing to overwrite a key") from None
    with os.fdopen(fd, "w") as fh:
        fh.write(f"# public key: {public}\n{ident}\n")
    os.chmod(path, 0o600)
    return public


class AgeEncryptor:
    name = "age"
    extension = "age"

    def __init__(self, recipients: list[str], identity_file: Path | None = None) -> None:
        if not recipients:
            raise ConfigError("encryption: no age recipients configured")
        self._public = [r.strip() for r in recipients]
        self._recipients = [parse_recipient(r) for r in recipients]
        self._identity_file = identity_file

    def params(self) -> dict[str, Any]:
        return {"recipients": [fingerprint(r) for r in self._public]}

    def recognises(self, head: bytes) -> bool:
        return head.startswith(MAGIC)

    def encrypt(self, src: IO[bytes] | Any, dst: IO[bytes] | Any) -> None:
        try:
            pyrage.encrypt_io(src, dst, self._recipients)
        except pyrage.EncryptError as exc:
            raise CodecError(f"age: encryption failed ({exc})") from None

    def decrypt(self, src: IO[bytes] | Any, dst: IO[bytes] | Any) -> None:
        if self._identity_file is None:
            raise ConfigError("encryption.identity_file is not set; it is needed to decrypt (verify/restore)")
        identities = load_identities(self._identity_file)
        try:
            pyrage.decrypt_io(src, dst, identities)
        except pyrage.DecryptError as exc:
            raise CodecError(f"age: decryption failed ({exc}); wrong identity or damaged artifact") from None
