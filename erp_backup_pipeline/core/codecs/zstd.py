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
        return CheckedReader(_ERRORS, "zstd: input is not a valid zstd stream", _FrameReader(src))

    def decompress(self, src: IO[bytes] | Any, dst: IO[bytes] | Any) -> None:
        reader = self.reader(src)
        while chunk := reader.read(CHUNK):
            dst.write(chunk)



class _FrameReader:
    """Decompresses concatenated zstd frames; a stream that ends inside a frame is an error."""

    def __init__(self, src: IO[bytes] | Any) -> None:
        self._src = src
        self._dctx = zstandard.ZstdDecompressor()
        self._obj = self._dctx.decompressobj()
        self._buf = bytearray()
        self._in_frame = False
        self._eof = False

    def _feed(self, chunk: bytes) -> None:
        while chunk:
            if self._obj.eof:
                self._obj = self._dctx.decompressobj()
            self._buf += self._obj.decompress(chunk)
            self._in_frame = not self._obj.eof
            chunk = self._obj.unused_data if self._obj.eof else b""

    def read(self, n: int = -1) -> bytes:
        n = CHUNK if n is None or n < 0 else n
        while len(self._buf) < n and not self._eof:
            chunk = self._src.read(128 << 10)
            if not chunk:
                self._eof = True
                if self._in_frame:
                    raise zstandard.ZstdError("stream ends inside a frame (truncated)")
                break
            self._feed(chunk)
        out = bytes(self._buf[:n])
        del self._buf[:n]
        return out

    def close(self) -> None:
        self._buf = bytearray()
