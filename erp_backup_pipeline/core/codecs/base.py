"""The two codec protocols: a Compressor and an Encryptor, both streaming file to file.

A codec never holds a whole artifact in memory, recognises its own output by magic bytes,
and raises CodecError (one line) when its input is not what it expects.
"""

from __future__ import annotations

from typing import IO, Any, Protocol


class Compressor(Protocol):
    name: str
    extension: str
    magic: bytes

    def params(self) -> dict[str, Any]:
        """What the manifest records about this codec (level, threads)."""

    def compress(self, src: IO[bytes] | Any, dst: IO[bytes] | Any) -> None:
        """Read src to EOF, write the compressed stream to dst."""

    def decompress(self, src: IO[bytes] | Any, dst: IO[bytes] | Any) -> None:
        """Read a compressed stream to EOF, write the original bytes to dst."""

    def reader(self, src: IO[bytes] | Any) -> IO[bytes] | Any:
        """A readable that yields the original bytes of the compressed stream src."""


class Encryptor(Protocol):
    name: str
    extension: str

    def params(self) -> dict[str, Any]:
        """What the manifest records: recipient fingerprints, never keys."""

    def encrypt(self, src: IO[bytes] | Any, dst: IO[bytes] | Any) -> None:
        """Read src to EOF, write ciphertext for every recipient to dst."""

    def decrypt(self, src: IO[bytes] | Any, dst: IO[bytes] | Any) -> None:
        """Read ciphertext to EOF and write plaintext; CodecError without a matching key."""

    def recognises(self, head: bytes) -> bool:
        """True when ``head`` (the first bytes of a file) looks like this codec's output."""
