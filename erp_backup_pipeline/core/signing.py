"""Manifest signatures: Ed25519 in OpenSSH's SSHSIG format, so ``ssh-keygen -Y verify`` checks them without us.

The backing-up host holds a signing key (an OpenSSH ``ssh-ed25519`` private key file, 0600, separate from the
age identity: it can sign, it cannot decrypt); hosts that verify or restore hold only its public key line
(``signing.public_keys``). A signature is detached, over the exact bytes of the manifest file, in the namespace
``erp-backup-manifest``; it is stored beside the manifest as ``<stamp>.manifest.json.sig``. Format
(``PROTOCOL.sshsig``)::

    "SSHSIG" | uint32 1 | string publickey | string namespace | string "" | string "sha512" | string signature
    signed: "SSHSIG" | string namespace | string "" | string "sha512" | string sha512(message)

The same check by hand (the runbook's line, run by the tests)::

    ssh-keygen -Y verify -f ALLOWED_SIGNERS -I erp-backup -n erp-backup-manifest -s MANIFEST.sig < MANIFEST
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import struct
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from pydantic import Field, model_validator

from erp_backup_pipeline.core.config import Model
from erp_backup_pipeline.errors import ConfigError, VerifyError

NAMESPACE = "erp-backup-manifest"
CHAIN_NAMESPACE = "erp-backup-chain"  # the chain ledgers': a ledger's signature never passes for a manifest's
IDENTITY = "erp-backup"  # the principal in ALLOWED_SIGNERS
SIGNATURE_SUFFIX = ".sig"
MAX_SIGNATURE_BYTES = 4096
_ARMOR_BEGIN, _ARMOR_END = "-----BEGIN SSH SIGNATURE-----", "-----END SSH SIGNATURE-----"


class Cost:
    """Seconds this process spent on authenticity: signing, the chain's state and ledgers, reading and checking
    signatures. The manifest op reports it (``signing_seconds``); ``make bench`` sets it against the whole run."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def _span(self, sign: int) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            with self._lock:
                self.seconds += sign * (time.perf_counter() - t0)

    def timed(self) -> contextlib.AbstractContextManager[None]:
        return self._span(1)

    def excluded(self) -> contextlib.AbstractContextManager[None]:
        """Inside ``timed``: work a backup did before manifests were signed (the manifest's own write)."""
        return self._span(-1)


COST = Cost()


def _string(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


def _read_string(buf: bytes, at: int) -> tuple[bytes, int]:
    if at + 4 > len(buf):
        raise ValueError("truncated")
    (n,) = struct.unpack(">I", buf[at:at + 4])
    if at + 4 + n > len(buf):
        raise ValueError("truncated")
    return buf[at + 4:at + 4 + n], at + 4 + n


def _public_blob(key: Ed25519PublicKey) -> bytes:
    return _string(b"ssh-ed25519") + _string(key.public_bytes_raw())


def _ed25519_public(blob: bytes) -> Ed25519PublicKey:
    """The key of an OpenSSH public key blob (``string "ssh-ed25519" | string key``); ValueError otherwise."""
    kind, at = _read_string(blob, 0)
    raw, _ = _read_string(blob, at)
    if kind != b"ssh-ed25519":
        raise ValueError(f"a {kind[:20].decode(errors='replace')} key, not ssh-ed25519")
    return Ed25519PublicKey.from_public_bytes(raw)


def _ed25519_private(data: bytes) -> Ed25519PrivateKey:
    """The key of an unencrypted OpenSSH private key file (``PROTOCOL.key``: ``openssh-key-v1``) holding one
    ssh-ed25519 key; ValueError naming what is wrong. Read here rather than with cryptography's ``serialization``,
    whose import alone costs a backup run more than all its signing."""
    text = data.decode("ascii").strip()
    begin, end = "-----BEGIN OPENSSH PRIVATE KEY-----", "-----END OPENSSH PRIVATE KEY-----"
    if not (text.startswith(begin) and text.endswith(end)):
        raise ValueError("not an OpenSSH private key file")
    blob = base64.b64decode("".join(text[len(begin):-len(end)].split()), validate=True)
    magic = b"openssh-key-v1\0"
    if not blob.startswith(magic):
        raise ValueError("not an openssh-key-v1 key")
    cipher, at = _read_string(blob, len(magic))
    _kdf, at = _read_string(blob, at)
    _kdf_options, at = _read_string(blob, at)
    if cipher != b"none":
        raise ValueError("the key is encrypted with a passphrase")
    if struct.unpack(">I", blob[at:at + 4])[0] != 1:
        raise ValueError("the file holds more than one key")
    public, at = _read_string(blob, at + 4)
    private, _ = _read_string(blob, at)
    if private[:4] != private[4:8]:
        raise ValueError("the key's check bytes differ")
    kind, at = _read_string(private, 8)
    if kind != b"ssh-ed25519":
        raise ValueError(f"a {kind[:20].decode(errors='replace')} key, not ssh-ed25519")
    raw_public, at = _read_string(private, at)
    secret, _ = _read_string(private, at)  # seed (32) | public key (32)
    key = Ed25519PrivateKey.from_private_bytes(secret[:32])
    if len(secret) != 64 or key.public_key().public_bytes_raw() != raw_public or \
            _ed25519_public(public).public_bytes_raw() != raw_public:
        raise ValueError("the private and public parts do not match")
    return key


def _signed_data(message: bytes, namespace: str) -> bytes:
    return b"SSHSIG" + _string(namespace.encode()) + _string(b"") + _string(b"sha512") + \
        _string(hashlib.sha512(message).digest())


def public_line(key: Ed25519PublicKey, comment: str = IDENTITY) -> str:
    """``ssh-ed25519 AAAA… comment``: what ``signing.public_keys`` holds."""
    return f"ssh-ed25519 {base64.b64encode(_public_blob(key)).decode()} {comment}"


def fingerprint(key: Ed25519PublicKey) -> str:
    """``SHA256:…`` as ``ssh-keygen -l`` prints it."""
    digest = hashlib.sha256(_public_blob(key)).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def parse_public(line: str) -> Ed25519PublicKey:
    fields = line.split()
    if len(fields) < 2 or fields[0] != "ssh-ed25519":
        raise ConfigError(f"signing.public_keys: {line[:40]!r} is not an ssh-ed25519 public key line (only ssh-ed25519 "
                          "keys sign manifests)")
    try:
        return _ed25519_public(base64.b64decode(fields[1], validate=True))
    except ValueError as exc:  # binascii.Error is one
        raise ConfigError(f"signing.public_keys: not an OpenSSH public key line ({exc})") from None


@dataclass(frozen=True)
class Signer:
    """The backing-up host's signing key."""

    key: Ed25519PrivateKey

    @property
    def public(self) -> Ed25519PublicKey:
        return self.key.public_key()

    def sign(self, message: bytes, namespace: str = NAMESPACE) -> bytes:
        """The armored SSHSIG signature of message."""
        blob = b"SSHSIG" + struct.pack(">I", 1) + _string(_public_blob(self.public)) + _string(namespace.encode()) + \
            _string(b"") + _string(b"sha512") + \
            _string(_string(b"ssh-ed25519") + _string(self.key.sign(_signed_data(message, namespace))))
        text = base64.b64encode(blob).decode()
        lines = [text[i:i + 70] for i in range(0, len(text), 70)]
        return ("\n".join([_ARMOR_BEGIN, *lines, _ARMOR_END]) + "\n").encode()


def load_signer(path: Path, what: str = "signing.key_file") -> Signer:
    """The private key file (0600, OpenSSH format, ssh-ed25519); ConfigError in one line otherwise."""
    try:
        st = os.stat(path)
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"{what}: cannot read {path} ({exc.strerror or exc})") from None
    if st.st_mode & 0o077:
        raise ConfigError(f"{what}: {path} has mode {st.st_mode & 0o777:04o}; it must be 0600")
    try:
        return Signer(_ed25519_private(data))
    except (ValueError, UnicodeDecodeError, struct.error) as exc:
        raise ConfigError(f"{what}: {path} is not an unencrypted OpenSSH ssh-ed25519 private key ({exc})") from None


def generate(path: Path) -> str:
    """Write a new signing key (0600, never overwriting) and return its public key line."""
    from cryptography.hazmat.primitives import serialization  # only here: see _ed25519_private

    key = Ed25519PrivateKey.generate()
    data = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                             serialization.NoEncryption())
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except FileExistsError:
        raise ConfigError(f"{path} exists; a signing key is never overwritten") from None
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    return public_line(key.public_key())


def verify(message: bytes, signature: bytes, trusted: list[Ed25519PublicKey] | tuple[Ed25519PublicKey, ...],
           namespace: str = NAMESPACE) -> Ed25519PublicKey:
    """The trusted key that signed message; VerifyError (one line) when none did or the signature is malformed."""
    if len(signature) > MAX_SIGNATURE_BYTES:
        raise VerifyError("signature is oversized")
    try:
        text = signature.decode("ascii").strip()
        if not (text.startswith(_ARMOR_BEGIN) and text.endswith(_ARMOR_END)):
            raise ValueError("not an armored SSH signature")
        blob = base64.b64decode("".join(text[len(_ARMOR_BEGIN):-len(_ARMOR_END)].split()), validate=True)
        if blob[:6] != b"SSHSIG" or struct.unpack(">I", blob[6:10])[0] != 1:
            raise ValueError("not an SSHSIG version 1 signature")
        public, at = _read_string(blob, 10)
        signed_for, at = _read_string(blob, at)
        _reserved, at = _read_string(blob, at)
        algorithm, at = _read_string(blob, at)
        sig, at = _read_string(blob, at)
        kind, rest = _read_string(sig, 0)
        raw_sig, _ = _read_string(sig, rest)
    except (ValueError, UnicodeDecodeError, struct.error) as exc:
        raise VerifyError(f"signature is malformed ({exc})") from None
    if signed_for != namespace.encode() or algorithm != b"sha512" or kind != b"ssh-ed25519":
        raise VerifyError(f"signature is for another purpose (namespace {signed_for[:40]!r}, {algorithm[:20]!r})")
    for key in trusted:
        if _public_blob(key) != public:
            continue
        try:
            key.verify(raw_sig, _signed_data(message, namespace))
        except InvalidSignature:
            raise VerifyError("signature does not match the manifest (edited after signing)") from None
        return key
    raise VerifyError("signed by a key that is not in signing.public_keys")


class SigningSettings(Model):
    """Manifest signatures (core.signing): the backing-up host signs with key_file; every host trusts the
    public_keys (and key_file's own public key)."""

    key_file: Path | None = Field(None, description="the backing-up host's signing key: OpenSSH ssh-ed25519, 0600 "
                                                    "(erp-backup keygen --signing); it signs, it cannot decrypt")
    public_keys: list[str] = Field(default_factory=list, description="ssh-ed25519 public key lines whose manifests "
                                                                     "count; a host that only verifies or restores "
                                                                     "needs just these")

    @model_validator(mode="after")
    def _has_a_key(self) -> SigningSettings:
        if self.key_file is None and not self.public_keys:
            raise ValueError("signing needs key_file (the host that backs up) or public_keys (a host that only "
                             "verifies or restores)")
        return self

    def signer(self) -> Any:
        from erp_backup_pipeline.core.signing import load_signer

        if self.key_file is None:
            raise ConfigError("signing.key_file is not set: this host trusts signing.public_keys but cannot sign a "
                              "manifest, so it cannot back up")
        return load_signer(self.key_file)

    def trusted_keys(self) -> list[Any]:
        from erp_backup_pipeline.core.signing import parse_public

        keys = [parse_public(line) for line in self.public_keys]
        if self.key_file is not None:
            keys.append(self.signer().public)
        return keys
