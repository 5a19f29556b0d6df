"""One contract, run against every codec: streaming round trip, own magic, clear error on garbage."""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from erp_backup_pipeline.core.codecs import COMPRESSORS, compressor, compressor_for_magic
from erp_backup_pipeline.core.codecs.age import AgeEncryptor, fingerprint
from erp_backup_pipeline.core.codecs.gpg import GpgEncryptor
from erp_backup_pipeline.errors import CodecError, ConfigError


def _payload(size: int = 6 << 20) -> bytes:
    text = b"".join(b"INSERT INTO invoices VALUES (%d, 'Kunde %d', 1234.50, '{\"stone\": \"granite\"}');\n" % (i, i % 97)
                    for i in range(size // 70))
    return text + os.urandom(256 << 10)


class Chunked:
    """A reader that returns at most 1000 bytes per call, as a pipe does."""

    def __init__(self, data: bytes) -> None:
        self._buf = io.BytesIO(data)

    def read(self, n: int = -1) -> bytes:
        return self._buf.read(min(n if n and n > 0 else 1000, 1000))

    def readable(self) -> bool:
        return True


@pytest.fixture(params=sorted(COMPRESSORS))
def comp(request: pytest.FixtureRequest) -> Any:
    return compressor(request.param, level=3)


@pytest.fixture(params=["age", "gpg"])
def enc(request: pytest.FixtureRequest, age_identity: tuple[Path, str], gpg_home: Path) -> Iterator[Any]:
    if request.param == "age":
        yield AgeEncryptor([age_identity[1]], age_identity[0])
    else:
        yield GpgEncryptor(["erp-backup-test@example.invalid"], gpg_home)


def test_compressor_round_trip_streams(comp: Any) -> None:
    data = _payload()
    packed = io.BytesIO()
    comp.compress(Chunked(data), packed)
    assert packed.getvalue().startswith(comp.magic)
    assert compressor_for_magic(packed.getvalue()[:8]) == comp.name
    assert len(packed.getvalue()) < len(data) // 3
    out = io.BytesIO()
    comp.decompress(Chunked(packed.getvalue()), out)
    assert out.getvalue() == data
    reader = comp.reader(io.BytesIO(packed.getvalue()))
    assert b"".join(iter(lambda: reader.read(4096), b"")) == data


def test_compressor_rejects_garbage_with_one_line(comp: Any) -> None:
    with pytest.raises(CodecError) as err:
        comp.decompress(io.BytesIO(os.urandom(4096)), io.BytesIO())
    assert comp.name in str(err.value) and "\n" not in str(err.value)


def test_compressor_detects_truncation(comp: Any) -> None:
    packed = io.BytesIO()
    comp.compress(io.BytesIO(_payload(1 << 20)), packed)
    cut = packed.getvalue()[: len(packed.getvalue()) // 2]
    out = io.BytesIO()
    with pytest.raises(CodecError, match="truncated|ended before|Compressed file ended"):
        comp.decompress(io.BytesIO(cut), out)


def test_encryptor_round_trip_streams(enc: Any) -> None:
    data = _payload(3 << 20)
    sealed = io.BytesIO()
    enc.encrypt(Chunked(data), sealed)
    assert enc.recognises(sealed.getvalue()[:64])
    assert data[:200] not in sealed.getvalue()
    out = io.BytesIO()
    enc.decrypt(io.BytesIO(sealed.getvalue()), out)
    assert out.getvalue() == data


def test_encryptor_detects_tampering(enc: Any) -> None:
    sealed = io.BytesIO()
    enc.encrypt(io.BytesIO(_payload(1 << 20)), sealed)
    damaged = bytearray(sealed.getvalue())
    damaged[len(damaged) // 2] ^= 0x01
    with pytest.raises(CodecError):
        enc.decrypt(io.BytesIO(bytes(damaged)), io.BytesIO())


def test_encryptor_params_hold_fingerprints_never_keys(enc: Any, age_identity: tuple[Path, str]) -> None:
    params = str(enc.params())
    assert "AGE-SECRET-KEY" not in params
    if enc.name == "age":
        assert enc.params() == {"recipients": [fingerprint(age_identity[1])]}


def test_age_recipient_that_does_not_parse_is_one_line() -> None:
    with pytest.raises(ConfigError, match=r"age recipient 'age1notakeya\.\.\.' does not parse"):
        AgeEncryptor(["age1notakeyatall"])


def test_age_decrypt_without_identity_says_what_is_missing(age_identity: tuple[Path, str]) -> None:
    enc = AgeEncryptor([age_identity[1]])
    sealed = io.BytesIO()
    enc.encrypt(io.BytesIO(b"x"), sealed)
    with pytest.raises(ConfigError, match="identity_file is not set"):
        enc.decrypt(io.BytesIO(sealed.getvalue()), io.BytesIO())


def test_gpg_unknown_recipient_fails_early(gpg_home: Path) -> None:
    with pytest.raises(CodecError, match="no public key for recipient 'nobody@example.invalid'"):
        GpgEncryptor(["nobody@example.invalid"], gpg_home).check_keys()
