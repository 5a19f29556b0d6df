"""gzip compression, for compatibility with tools that expect .gz."""

from __future__ import annotations

import gzip
import zlib
from typing import IO, Any

from erp_backup_pipeline.core.streams import CHUNK, CheckedReader, copy_stream

_ERRORS = (OSError, EOFError, zlib.error)

class GzipCodec:
    name = "gzip"
    extension = "gz"
    magic = b"\x1f\x8b"

    def __init__(self, level: int = 6, threads: int = 0) -> None:
        self.level = min(level, 9)

    def params(self) -> dict[str, Any]:
        return {"level": self.level}

    def compress(self, src: IO[bytes] | Any, dst: IO[bytes] | Any) -> None:
        with gzip.GzipFile(fileobj=dst, mode="wb", compresslevel=self.level, mtime=0) as gz:
            copy_stream(src, gz, CHUNK)

    def reader(self, src: IO[bytes] | Any) -> IO[bytes] | Any:
        return CheckedReader(_ERRORS, "gzip: input is not a valid gzip stream", gzip.GzipFile(fileobj=src, mode="rb"))

    def decompress(self, src: IO[bytes] | Any, dst: IO[bytes] | Any) -> None:
        copy_stream(self.reader(src), dst, CHUNK)

