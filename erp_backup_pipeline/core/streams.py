"""Streaming helpers: counting/hashing wrappers, timed copies and progress reporting.

Every stage measures its own bytes, sha256 and seconds here, inside the stream, so the
figures are exact even when several stages run in one pass.
"""

from __future__ import annotations

import builtins
import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO, Any

CHUNK = 1 << 20  # 1 MiB
Progress = Callable[[str, int, "int | None", float], None]
"""progress(stage, bytes_done, bytes_total_or_None, seconds_elapsed); called every ``interval``
seconds (an attribute of the callable, default 5) while bytes flow, and once with 0 bytes for a
plain message."""


@dataclass
class StageStats:
    """Bytes, sha256 and time of one stage's output."""

    bytes: int = 0
    seconds: float = 0.0
    _hash: Any = field(default_factory=hashlib.sha256, repr=False)

    def update(self, chunk: builtins.bytes) -> None:  # the field ``bytes`` shadows the type here
        self.bytes += len(chunk)
        self._hash.update(chunk)

    @property
    def sha256(self) -> str:
        return self._hash.hexdigest()


class HashingReader:
    """File-like reader that counts and hashes what passes through, and times its reads."""

    def __init__(self, raw: IO[bytes] | Any, stats: StageStats | None = None,
                 progress: Progress | None = None, stage: str = "", total: int | None = None) -> None:
        self.raw = raw
        self.stats = stats or StageStats()
        self._progress = progress
        self._stage = stage
        self._total = total
        self._started = time.monotonic()
        self._last_report = self._started

    def read(self, n: int = -1) -> bytes:
        t0 = time.monotonic()
        data = self.raw.read(n if n is not None else -1)
        self.stats.seconds += time.monotonic() - t0
        if data:
            self.stats.update(data)
            self._maybe_report()
        return data

    def readinto(self, buf: Any) -> int:
        data = self.read(len(buf))
        buf[: len(data)] = data
        return len(data)

    def readable(self) -> bool:
        return True

    def _maybe_report(self) -> None:
        now = time.monotonic()
        if self._progress is not None and now - self._last_report >= getattr(self._progress, "interval", 5.0):
            self._last_report = now
            self._progress(self._stage, self.stats.bytes, self._total, now - self._started)


class HashingWriter:
    """File-like writer that counts and hashes what is written, timing the writes."""

    def __init__(self, raw: IO[bytes] | Any, stats: StageStats | None = None) -> None:
        self.raw = raw
        self.stats = stats or StageStats()

    def write(self, data: bytes | memoryview) -> int:
        t0 = time.monotonic()
        b = bytes(data)
        self.raw.write(b)
        self.stats.seconds += time.monotonic() - t0
        self.stats.update(b)
        return len(b)

    def writable(self) -> bool:
        return True

    def flush(self) -> None:
        flush = getattr(self.raw, "flush", None)
        if flush:
            flush()


def copy_stream(src: IO[bytes] | Any, dst: IO[bytes] | Any, chunk: int = CHUNK) -> int:
    total = 0
    while True:
        data = src.read(chunk)
        if not data:
            return total
        dst.write(data)
        total += len(data)


def progress_text(stage: str, done: int, total: int | None, seconds: float) -> str:
    """A progress report as one line: a plain message (no bytes yet) or bytes done and rate."""
    return stage if not done and total is None and not seconds else format_progress(stage, done, total, seconds)


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def format_progress(stage: str, done: int, total: int | None, seconds: float) -> str:
    rate = done / seconds if seconds > 0 else 0.0
    of = f" of {human_bytes(total)}" if total else ""
    return f"{stage}: {human_bytes(done)}{of} at {human_bytes(rate)}/s"


class CheckedReader:
    """A reader that turns a library's own exceptions into one-line CodecErrors."""

    def __init__(self, errors: tuple[type[BaseException], ...], message: str, inner: Any) -> None:
        self._errors = errors
        self._message = message
        self._inner = inner

    def read(self, n: int = -1) -> bytes:
        from erp_backup_pipeline.errors import CodecError

        try:
            return self._inner.read(n)
        except self._errors as exc:
            raise CodecError(f"{self._message} ({exc})") from None

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        self._inner.close()


def widen_pipe(fd: int) -> None:
    """Give a pipe a 1 MiB buffer (Linux; default 64 KiB): one chunk per write, far fewer thread switches."""
    import fcntl

    try:
        fcntl.fcntl(fd, getattr(fcntl, "F_SETPIPE_SZ", 1031), CHUNK)
    except OSError:
        pass  # a smaller system limit only costs speed


class PipeProducer:
    """Runs ``produce(writer)`` in a thread and makes what it writes readable, through an OS pipe.

    The mirror of PipeConsumer: it turns a push-style stage (a decryptor, a tar writer) into a
    readable. At end of data ``read`` waits for the thread and raises its error, if any;
    ``close`` ends reading early (a blocked writer then fails with EPIPE) and waits for the thread.
    """

    def __init__(self, produce: Callable[[Any], None], name: str) -> None:
        import os
        import threading

        r, w = os.pipe()
        widen_pipe(w)
        self._r: Any = os.fdopen(r, "rb")
        self._w = os.fdopen(w, "wb", buffering=CHUNK)
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(produce,), name=name, daemon=True)
        self._thread.start()

    def _run(self, produce: Callable[[Any], None]) -> None:
        try:
            produce(self._w)
        except BaseException as exc:  # noqa: BLE001 - handed to the reader
            self.error = exc
        finally:
            try:
                self._w.close()
            except OSError:
                pass

    def read(self, n: int = -1) -> bytes:
        data = self._r.read(n if n and n > 0 else CHUNK) if self._r is not None else b""
        if not data:
            self._thread.join()
            if self.error is not None:
                raise self.error
        return data

    def drain(self) -> None:
        """Read to the end (raising the producer's error), for a caller that stopped early."""
        while self.read(CHUNK):
            pass

    def close(self, timeout: float | None = None) -> None:
        if self._r is not None:
            self._r.close()
            self._r = None
        self._thread.join(timeout)


class PipeConsumer:
    """Runs ``consume(reader)`` in a thread and feeds it, through an OS pipe, what ``write`` gets.

    This joins two push-style stages (a compressor writing, an encryptor or verifier reading) so
    that they run at once with back-pressure and bounded memory. A consumer that fails keeps
    draining the pipe, so the writer is never blocked; ``close()`` returns its result or raises
    its error. ``seconds`` is the consumer thread's own CPU time.
    """

    def __init__(self, consume: Callable[[Any], Any], name: str) -> None:
        import os
        import threading

        r, w = os.pipe()
        widen_pipe(w)
        self._r = os.fdopen(r, "rb")
        self._w: Any = os.fdopen(w, "wb")
        self._consume = consume
        self._result: Any = None
        self.error: BaseException | None = None
        self.seconds = 0.0
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        t0 = time.thread_time()
        try:
            self._result = self._consume(self._r)
        except BaseException as exc:  # noqa: BLE001 - handed to close()
            self.error = exc
        finally:
            while self._r.read(CHUNK):
                pass
            self._r.close()
            self.seconds = time.thread_time() - t0

    def write(self, data: bytes) -> int:
        self._w.write(data)
        return len(data)

    def flush(self) -> None:
        pass

    def finish(self) -> None:
        """Signal end of input and wait for the consumer."""
        if self._w is not None:
            try:
                self._w.close()
            except BrokenPipeError:
                pass
            self._w = None
        self._thread.join()

    def close(self) -> Any:
        self.finish()
        if self.error is not None:
            raise self.error
        return self._result


class Tee:
    """Writes every chunk to each sink in turn."""

    def __init__(self, *sinks: Any) -> None:
        self._sinks = sinks

    def write(self, data: bytes) -> int:
        for sink in self._sinks:
            sink.write(data)
        return len(data)

    def flush(self) -> None:
        pass
