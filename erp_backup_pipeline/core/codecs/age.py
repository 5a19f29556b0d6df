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

from erp_backup_pipeline.errors import CREDENTIALS, CodecError, ConfigError

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
    from erp_backup_pipeline.core.config import read_secret_file

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
        _guarded(lambda s, d: pyrage.encrypt_io(s, d, self._recipients), src, dst, "encryption failed")

    def decrypt(self, src: IO[bytes] | Any, dst: IO[bytes] | Any) -> None:
        if self._identity_file is None:
            raise ConfigError("encryption.identity_file is not set; it is needed to decrypt (verify/restore)")
        identities = load_identities(self._identity_file)
        _guarded(lambda s, d: pyrage.decrypt_io(s, d, identities), src, dst,
                 "decryption failed; wrong identity or damaged artifact")


class _Recorder:
    """Delegates to a stream and remembers the first exception it raised (pyrage hides its type)."""

    def __init__(self, inner: Any, box: list[BaseException]) -> None:
        self._inner = inner
        self._box = box

    def _call(self, name: str, *args: Any) -> Any:
        try:
            return getattr(self._inner, name)(*args)
        except BaseException as exc:
            self._box.append(exc)
            raise

    def read(self, n: int = -1) -> bytes:
        return self._call("read", n)

    def readinto(self, buf: Any) -> int:
        if hasattr(self._inner, "readinto"):
            return self._call("readinto", buf)
        data = self._call("read", len(buf))
        buf[: len(data)] = data
        return len(data)

    def write(self, data: Any) -> int:
        return self._call("write", data)

    def flush(self) -> None:
        if hasattr(self._inner, "flush"):
            self._call("flush")


def _guarded(fn: Any, src: Any, dst: Any, what: str) -> None:
    box: list[BaseException] = []
    try:
        fn(_Recorder(src, box), _Recorder(dst, box))
    except (pyrage.EncryptError, pyrage.DecryptError, OSError) as exc:
        if box:
            raise box[0] from None
        if isinstance(exc, pyrage.DecryptError) and "no matching keys" in str(exc).lower():
            raise CodecError(f"age: {what} ({exc}: the identity of encryption.identity_file is not one this artifact "
                             "was encrypted to)", status=CREDENTIALS) from None
        raise CodecError(f"age: {what} ({exc})") from None
