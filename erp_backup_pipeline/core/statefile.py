"""This host's small state files (what incremental uploads remember, each source's chain state): replaced
atomically, born 0600 in their directory, fsynced before the rename. A failure (a full disk) leaves the old file as
it was and no temp file behind."""

from __future__ import annotations

import contextlib
import os
import tempfile
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
