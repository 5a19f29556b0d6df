"""Codec registries: adding a codec is one module and one line here."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from erp_backup_pipeline.core.codecs.age import AgeEncryptor
from erp_backup_pipeline.core.codecs.base import Compressor, Encryptor
from erp_backup_pipeline.core.codecs.gpg import GpgEncryptor, GpgSettings
from erp_backup_pipeline.core.codecs.gzip import GzipCodec
from erp_backup_pipeline.core.codecs.zstd import ZstdCodec
from erp_backup_pipeline.core.config import Model
from erp_backup_pipeline.errors import CodecError, ConfigError


class CompressionSettings(Model):
    codec: Literal["zstd", "gzip"] = "zstd"
    level: int = Field(3, ge=1, le=22)
    threads: int = Field(2, ge=0, le=64, description="zstd worker threads; 0 = single-threaded")

    @model_validator(mode="after")
    def _gzip_level(self) -> CompressionSettings:
        if self.codec == "gzip" and self.level > 9:
            raise ValueError("gzip level must be 1..9")
        return self


class EncryptionSettings(Model):
    codec: Literal["age", "gpg"] = "age"
    recipients: list[str] = Field(default_factory=list, description="age public keys (age1...)")
    recipients_file: Path | None = None
    identity_file: Path | None = Field(None, description="age identity; needed only to verify and restore")
    gpg: GpgSettings = Field(default_factory=GpgSettings)

    def age_recipients(self) -> list[str]:
        found = list(self.recipients)
        if self.recipients_file is not None:
            try:
                lines = self.recipients_file.read_text().splitlines()
            except OSError as exc:
                raise ConfigError(f"encryption.recipients_file: cannot read {self.recipients_file}: {exc.strerror}") from None
            found += [ln.strip() for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]
        return found

    @model_validator(mode="after")
    def _has_recipient(self) -> EncryptionSettings:
        if self.codec == "age" and not self.recipients and self.recipients_file is None:
            raise ValueError("age encryption needs recipients or recipients_file")
        if self.codec == "gpg" and not self.gpg.recipients:
            raise ValueError("gpg encryption needs gpg.recipients")
        return self

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
