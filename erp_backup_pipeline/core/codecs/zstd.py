"""zstd compression (the default): multi-threaded, level configurable, streaming."""

from __future__ import annotations

from typing import IO, Any

import zstandard

from erp_backup_pipeline.core.streams import CHUNK, CheckedReader

_ERRORS = (zstandard.ZstdError,)

class ZstdCodec:
    name = "zstd"
    extension = "zst"
    magic = b"\x28\xb5\x2f\xfd"

    def __init__(self, level: int = 3, threads: int = 2) -> None:
        self.level = level
        self.threads = threads

    def params(self) -> dict[str, Any]:
        return {"level": self.level, "threads": self.threads}

    def compress(self, src: IO[bytes] | Any, dst: IO[bytes] | Any) -> None:
        cctx = zstandard.ZstdCompressor(level=self.level, threads=self.threads)
        cctx.copy_stream(src, dst, read_size=CHUNK, write_size=CHUNK)

    def reader(self, src: IO[bytes] | Any) -> IO[bytes] | Any:
        return CheckedReader(_ERRORS, "zstd: input is not a valid zstd stream", zstandard.ZstdDecompressor().stream_reader(
            src, read_size=CHUNK, read_across_frames=True, closefd=False))

    def decompress(self, src: IO[bytes] | Any, dst: IO[bytes] | Any) -> None:
        reader = self.reader(src)
        while chunk := reader.read(CHUNK):
            dst.write(chunk)

