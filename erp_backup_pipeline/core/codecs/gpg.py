"""GPG encryption to existing public keys, for teams that already have them (gpg binary)."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import IO, Any

from pydantic import Field

from erp_backup_pipeline.core.config import Model
from erp_backup_pipeline.core.runner import Process, find_program
from erp_backup_pipeline.core.streams import CHUNK, copy_stream
from erp_backup_pipeline.errors import CodecError, ToolError


class GpgEncryptor:
    name = "gpg"
    extension = "gpg"

    def __init__(self, recipients: list[str], homedir: Path | None = None) -> None:
        if not recipients:
            raise CodecError("encryption.gpg.recipients is empty")
        self.recipients = list(recipients)
        self.homedir = homedir

    def _base(self) -> list[str]:
        argv = [find_program("gpg"), "--batch", "--yes", "--no-tty", "--quiet"]
        if self.homedir is not None:
            argv += ["--homedir", str(self.homedir)]
        return argv

    def params(self) -> dict[str, Any]:
        return {"recipients": ["gpg:" + r for r in self.recipients]}

    def recognises(self, head: bytes) -> bool:
        # OpenPGP binary packet: old-format tag 1 (0x84/0x85) or new-format 0xc1 (PKESK)
        return bool(head) and head[0] in (0x84, 0x85, 0x86, 0xC1)

    def check_keys(self) -> None:
        """Fail early, with one line, when a recipient key is not in the keyring."""
        for r in self.recipients:
            proc = Process(self._base() + ["--list-keys", r], stdout=-3)
            if proc.wait(check=False) != 0:
                raise CodecError(f"gpg: no public key for recipient '{r}' in the keyring")

    def _pipe(self, argv: list[str], src: IO[bytes] | Any, dst: IO[bytes] | Any) -> None:
        proc = Process(argv, stdin=-1, stdout=-1)
        errors: list[BaseException] = []

        def feed() -> None:
            try:
                copy_stream(src, proc.stdin, CHUNK)
            except (BrokenPipeError, OSError) as exc:
                errors.append(exc)
            finally:
                try:
                    proc.stdin.close()
                except OSError:
                    pass

        t = threading.Thread(target=feed, daemon=True)
        t.start()
        try:
            copy_stream(proc.stdout, dst, CHUNK)
        finally:
            t.join()
        try:
            proc.wait()
        except ToolError as exc:
            raise CodecError(str(exc)) from None

    def encrypt(self, src: IO[bytes] | Any, dst: IO[bytes] | Any) -> None:
        argv = self._base() + ["--trust-model", "always", "--encrypt"]
        for r in self.recipients:
            argv += ["--recipient", r]
        self._pipe(argv, src, dst)

    def decrypt(self, src: IO[bytes] | Any, dst: IO[bytes] | Any) -> None:
        self._pipe(self._base() + ["--decrypt"], src, dst)


class GpgSettings(Model):
    recipients: list[str] = Field(default_factory=list)
    homedir: Path | None = None
