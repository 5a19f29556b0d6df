"""The one wrapper that runs every external program (pg_dump, pg_restore, gpg, ...).

Arguments are a list (never a shell string), secrets travel in the environment, stderr is
captured to a bounded buffer and redacted, and a failure raises ToolError naming the program
and its exit code with the last line of its stderr.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import threading
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

from erp_backup_pipeline.errors import ToolError, ToolTimeout

_SECRETS: set[str] = set()


def register_secrets(values: Iterable[str]) -> None:
    """Remember secret values so that they are masked in any text we show or record."""
    _SECRETS.update(v for v in values if v and len(v) >= 3)


def redact(text: str) -> str:
    for secret in sorted(_SECRETS, key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


def free_port() -> int:
    """A loopback TCP port nobody listens on now, for a server we start (a scratch or recovered one)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def find_program(name: str, bin_dir: Path | None = None) -> str:
    """Absolute path of an external program, or ToolError saying what to install."""
    if bin_dir is not None:
        candidate = Path(bin_dir) / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
        raise ToolError(f"{name} not found in {bin_dir} (sources.*.bin_dir)")
    found = shutil.which(name)
    if not found:
        raise ToolError(f"{name} not found on PATH; install it (Debian packages: docs/guide/deployment.md, Requirements)")
    return found


def _last_line(text: str) -> str:
    """The line that says what went wrong: the last ``error:`` line (else ``FATAL:``, else the last line), with
    the server's reason when a detail line after it gives one. pg_dump ends with ``detail: Command was: COPY
    ...``, which alone says nothing about why."""
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    if not lines:
        return "no error output"
    found = [i for i, ln in enumerate(lines) if "error:" in ln.lower()] or \
        [i for i, ln in enumerate(lines) if "fatal:" in ln.lower()]
    if not found:
        return redact(lines[-1])
    picked = [lines[found[-1]]] + [ln for ln in lines[found[-1] + 1:] if "error message from server" in ln.lower()]
    return redact(" ".join(picked))


class Process:
    """A running external program whose stderr is drained in the background."""

    def __init__(self, argv: Sequence[str], *, env: Mapping[str, str] | None = None,
                 stdin: Any = None, stdout: Any = None, name: str | None = None) -> None:
        self.name = name or Path(argv[0]).name
        full_env = {**os.environ, **(env or {})}
        try:
            self.proc = subprocess.Popen(list(argv), stdin=stdin, stdout=stdout, stderr=subprocess.PIPE,
                                         env=full_env, bufsize=0, start_new_session=False)
        except FileNotFoundError:
            raise ToolError(f"{self.name} not found; install it (see docs/guide/deployment.md, Requirements)") from None
        self._err = bytearray()
        self._reader = threading.Thread(target=self._drain, daemon=True)
        self._reader.start()

    def _drain(self) -> None:
        assert self.proc.stderr is not None
        for chunk in iter(lambda: self.proc.stderr.read(8192), b""):  # type: ignore[union-attr]
            self._err += chunk
            if len(self._err) > 65536:
                del self._err[: len(self._err) - 65536]

    @property
    def stdout(self) -> IO[bytes]:
        assert self.proc.stdout is not None
        return self.proc.stdout

    @property
    def stdin(self) -> IO[bytes]:
        assert self.proc.stdin is not None
        return self.proc.stdin

    def stderr_text(self) -> str:
        self._reader.join(timeout=5)
        return redact(self._err.decode("utf-8", "replace"))

    def wait(self, check: bool = True) -> int:
        rc = self.proc.wait()
        self._reader.join(timeout=5)
        if check and rc != 0:
            raise ToolError(f"{self.name} failed (exit {rc}): {_last_line(self.stderr_text())}")
        return rc

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def run(argv: Sequence[str], *, env: Mapping[str, str] | None = None, input_bytes: bytes | None = None,
        timeout: float | None = None) -> subprocess.CompletedProcess[bytes]:
    """Run a program to completion, capture its output, raise ToolError on a non-zero exit."""
    name = Path(argv[0]).name
    try:
        done = subprocess.run(list(argv), input=input_bytes, capture_output=True, timeout=timeout,
                              env={**os.environ, **(env or {})})
    except FileNotFoundError:
        raise ToolError(f"{name} not found; install it (see docs/guide/deployment.md, Requirements)") from None
    except subprocess.TimeoutExpired:
        raise ToolTimeout(f"{name} timed out after {timeout:.0f} s") from None
    if done.returncode != 0:
        raise ToolError(f"{name} failed (exit {done.returncode}): {_last_line(done.stderr.decode('utf-8', 'replace'))}")
    return done
