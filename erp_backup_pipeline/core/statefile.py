"""This host's small state files (what incremental uploads remember, each source's chain state): replaced
atomically, born 0600 in their directory, fsynced before the rename. A failure (a full disk) leaves the old file as
it was and no temp file behind. Also the host's lock files (``locked``): one holder at a time per file."""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


def replace(path: Path, data: bytes) -> None:
    """Write data to a fresh temp file beside path (mkstemp: 0600, never an existing name), fsync, rename it over
    path."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def locked(path: Path, busy: Exception | None = None) -> Iterator[None]:
    """Hold the exclusive lock of ``path`` (made 0600, never through a link): wait for it, or with ``busy`` raise
    that at once when another process holds it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if busy is None else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:  # only without waiting, that is with busy given
            assert busy is not None
            raise busy from None
        yield
    finally:
        os.close(fd)
