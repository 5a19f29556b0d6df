"""Codec registries: adding a codec is one module and one line here."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from erp_backup_pipeline.core.codecs.age import AgeEncryptor
from erp_backup_pipeline.core.codecs.base import Compressor, Encryptor
from erp_backup_pipeline.core.codecs.gpg import GpgEncryptor
from erp_backup_pipeline.core.codecs.gzip import GzipCodec
from erp_backup_pipeline.core.codecs.zstd import ZstdCodec
from erp_backup_pipeline.errors import CodecError

COMPRESSORS: dict[str, Callable[..., Compressor]] = {"zstd": ZstdCodec, "gzip": GzipCodec}
ENCRYPTORS: dict[str, Callable[..., Encryptor]] = {"age": AgeEncryptor, "gpg": GpgEncryptor}


def compressor(name: str, **params: Any) -> Compressor:
    try:
        factory = COMPRESSORS[name]
    except KeyError:
        raise CodecError(f"unknown compression codec '{name}' (known: {', '.join(COMPRESSORS)})") from None
    return factory(**params)


def compressor_for_magic(head: bytes) -> str | None:
    for name, factory in COMPRESSORS.items():
        if head.startswith(factory.magic):  # type: ignore[attr-defined]
            return name
    return None


def encryptor_from_settings(enc: Any) -> Encryptor:
    """Build the configured encryptor (settings.EncryptionSettings)."""
    if enc.codec == "age":
        return AgeEncryptor(enc.age_recipients(), enc.identity_file)
    if enc.codec == "gpg":
        return GpgEncryptor(enc.gpg.recipients, enc.gpg.homedir)
    raise CodecError(f"unknown encryption codec '{enc.codec}' (known: {', '.join(ENCRYPTORS)})")


__all__ = ["COMPRESSORS", "ENCRYPTORS", "Compressor", "Encryptor", "compressor", "compressor_for_magic",
           "encryptor_from_settings"]
