"""Manifest signatures (core.signing): keys as OpenSSH writes them, signatures as ssh-keygen checks them, and every
malformed key or signature a one-line error, never a traceback."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from erp_backup_pipeline.core import signing
from erp_backup_pipeline.errors import ConfigError, VerifyError


def keygen(path: Path, *args: str) -> Path:
    subprocess.run(["ssh-keygen", "-q", "-N", "", "-f", str(path), *args], check=True)
    path.chmod(0o600)
    return path


def test_a_key_made_by_ssh_keygen_signs_what_ssh_keygen_verifies(tmp_path: Path) -> None:
    key = keygen(tmp_path / "sk", "-t", "ed25519")
    signer = signing.load_signer(key)
    public = (tmp_path / "sk.pub").read_text()
    assert signing.public_line(signer.public).split()[:2] == public.split()[:2]
    message = b'{"source": "sqlite_backup"}\n'
    (tmp_path / "m").write_bytes(message)
    (tmp_path / "m.sig").write_bytes(signer.sign(message))
    (tmp_path / "allowed").write_text(f'erp-backup namespaces="{signing.NAMESPACE}" {public}')
    done = subprocess.run(["ssh-keygen", "-Y", "verify", "-f", str(tmp_path / "allowed"), "-I", "erp-backup",
                           "-n", signing.NAMESPACE, "-s", str(tmp_path / "m.sig")], input=message, capture_output=True)
    assert done.returncode == 0, done.stderr
    trusted = [signing.parse_public(public)]
    assert signing.verify(message, (tmp_path / "m.sig").read_bytes(), trusted) is trusted[0]
    # and a key this project generates is one ssh-keygen reads
    signing.generate(tmp_path / "ours")
    assert subprocess.run(["ssh-keygen", "-y", "-f", str(tmp_path / "ours")], capture_output=True, text=True,
                          check=True).stdout.split()[:2] == signing.public_line(
        signing.load_signer(tmp_path / "ours").public).split()[:2]


@pytest.mark.parametrize(("make", "reason"), [
    (lambda p: keygen(p, "-t", "rsa", "-b", "1024"), r"a ssh-rsa key, not ssh-ed25519"),
    (lambda p: (subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "secret", "-f", str(p)], check=True),
                p.chmod(0o600)), r"the key is encrypted with a passphrase"),
    (lambda p: (p.write_text("not a key\n"), p.chmod(0o600)), r"not an OpenSSH private key file"),
    (lambda p: (p.write_text("-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEA\n"
                             "-----END OPENSSH PRIVATE KEY-----\n"), p.chmod(0o600)), r"truncated"),
    (lambda p: (keygen(p, "-t", "ed25519"), p.chmod(0o644)), r"has mode 0644; it must be 0600"),
    (lambda p: None, r"cannot read"),
])
def test_a_key_that_cannot_sign_is_one_line(tmp_path: Path, make, reason: str) -> None:
    path = tmp_path / "key"
    make(path)
    with pytest.raises(ConfigError, match=reason) as err:
        signing.load_signer(path)
    assert "\n" not in str(err.value) and str(err.value).startswith("signing.key_file: ")


def test_a_signing_key_is_never_overwritten(tmp_path: Path) -> None:
    first = signing.generate(tmp_path / "k")
    with pytest.raises(ConfigError, match="exists; a signing key is never overwritten"):
        signing.generate(tmp_path / "k")
    assert signing.public_line(signing.load_signer(tmp_path / "k").public) == first
    assert (tmp_path / "k").stat().st_mode & 0o777 == 0o600


def test_public_key_lines_other_than_ssh_ed25519_are_refused(tmp_path: Path) -> None:
    keygen(tmp_path / "rsa", "-t", "rsa", "-b", "1024")
    for line in [(tmp_path / "rsa.pub").read_text(), "ssh-ed25519 not-base64!", "ssh-ed25519", "",
                 "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5"]:
        with pytest.raises(ConfigError, match=r"^signing\.public_keys: "):
            signing.parse_public(line)


def test_a_signature_fails_for_another_message_key_or_purpose(tmp_path: Path) -> None:
    signing.generate(tmp_path / "a")
    signing.generate(tmp_path / "b")
    a, b = signing.load_signer(tmp_path / "a"), signing.load_signer(tmp_path / "b")
    message = b"manifest bytes"
    sig = a.sign(message)
    assert signing.verify(message, sig, [b.public, a.public]) == a.public
    with pytest.raises(VerifyError, match=r"^signature does not match the manifest \(edited after signing\)$"):
        signing.verify(message + b" ", sig, [a.public])
    with pytest.raises(VerifyError, match=r"^signed by a key that is not in signing\.public_keys$"):
        signing.verify(message, sig, [b.public])
    with pytest.raises(VerifyError, match=r"^signature is for another purpose"):  # a ledger's signature
        signing.verify(message, a.sign(message, signing.CHAIN_NAMESPACE), [a.public])
    with pytest.raises(VerifyError, match=r"^signature is oversized$"):
        signing.verify(message, sig * 20, [a.public])


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600) | st.text(max_size=600).map(str.encode))
def test_any_bytes_as_a_signature_are_a_verify_error_never_a_crash(garbage: bytes) -> None:
    key = signing.Signer(Ed25519PrivateKey.generate())
    armored = b"-----BEGIN SSH SIGNATURE-----\n" + garbage + b"\n-----END SSH SIGNATURE-----\n"
    for candidate in (garbage, armored):
        with pytest.raises(VerifyError):
            signing.verify(b"message", candidate, [key.public])
