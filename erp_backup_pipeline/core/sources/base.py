"""The source contract: how one kind of ERP store is dumped, verified and restored.

- ``prepare(workdir)`` checks the source and its tools (one-line SourceError/ToolError) and
  returns facts for the manifest (versions, row counts). A source whose engine needs a file
  (SQLite's backup API) takes its snapshot here, inside workdir.
- ``open_dump(workdir, facts)`` returns a DumpStream: the raw dump as a readable, never
  staged on disk unless the engine requires it; ``finish()`` waits for the engine, raises on
  failure, and may return facts learnt while dumping (a file list, say) for the manifest.
- ``verify(reader, workdir, facts)`` consumes the decompressed artifact and raises
  VerifyError when it is not a sound backup of what ``prepare`` saw; returns details.
- ``restore(reader, target, force, workdir, fetch, facts, attachments, **options)`` loads a decompressed
  artifact into a NEW target; a live target is refused without ``force`` and then kept aside, never
  destroyed. ``fetch(artifact_key)`` opens another artifact's plaintext, for a source whose backups build
  on earlier ones (uploads); ``facts`` are the manifest's; ``attachments`` the plaintext of the capture's
  attachments by name; ``options`` the source's own restore options (PostgreSQL: ``no_owner``, ``server``).
  ``restore_plan(target, force, facts, **options)`` says what it would do, refusing the same way.
- ``attachments(workdir, facts)`` and ``verify_attachment(name, data, facts)``, optional: the small extra
  records a capture needs besides its dump, taken right after it (``core.attachments``), and their check.
- ``drill(restore, workdir, facts, verify)``: the restore drill. Calls ``restore(target, **options)`` once with a
  scratch target of its kind under workdir (a new database gets a fresh name and is dropped
  afterwards), then compares what the target holds with the manifest's ``facts``/``verify``
  (rows per table, keys, every file's checksum) and raises VerifyError naming the first mismatch.
- ``on_committed(workdir, manifest)``, optional: called once the manifest is written, for a
  source that remembers what it backed up (the uploads state).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import IO, Any, Protocol

from pydantic import Field, SecretStr

from erp_backup_pipeline.core.config import Model, present, secret
from erp_backup_pipeline.errors import VerifyError


class DumpStream(Protocol):
    def read(self, n: int = -1) -> bytes: ...

    def finish(self) -> dict[str, Any] | None:
        """Wait for the dump engine; raise ToolError/SourceError when it failed; optionally return
        facts learnt while dumping, merged into the manifest's facts."""

    def abort(self) -> None:
        """Stop the engine and release its files."""


class Source(Protocol):
    kind: str
    extension: str

    @property
    def where(self) -> str:
        """What it reads, for an operator: ``postgres erp@db:5432/erp``, ``SQLite database /srv/erp/db.sqlite3``."""

    def prepare(self, workdir: Any) -> dict[str, Any]: ...

    def open_dump(self, workdir: Any, facts: dict[str, Any]) -> DumpStream: ...

    def verify(self, reader: IO[bytes] | Any, workdir: Any, facts: dict[str, Any]) -> dict[str, Any]: ...

    def restore_plan(self, target: str, force: bool, facts: dict[str, Any]) -> list[str]:
        """Human-readable steps a restore into target would take (for --dry-run); facts are the manifest's."""

    def restore(self, reader: IO[bytes] | Any, target: str, force: bool, workdir: Any,
                fetch: Any = None, facts: dict[str, Any] | None = None,
                attachments: dict[str, bytes] | None = None) -> dict[str, Any]: ...

    def drill(self, restore: Callable[[str], dict[str, Any]], workdir: Any, facts: dict[str, Any],
              verify: dict[str, Any]) -> dict[str, Any]: ...


def compare_counts(what: str, expected: dict[str, int] | None, found: dict[str, int]) -> dict[str, Any]:
    """Row counts of a restored database against the manifest's; VerifyError naming the first differences."""
    if expected is None:
        return {"tables": len(found), "rows": sum(found.values()), "compared": "nothing recorded to compare"}
    wrong = [f"{t}: {found.get(t, 'missing')} rows, manifest {n}" for t, n in sorted(expected.items()) if found.get(t) != n]
    wrong += [f"{t}: not in the manifest" for t in sorted(set(found) - set(expected))]
    if wrong:
        raise VerifyError(f"{what}: restored database differs from the manifest in {len(wrong)} table(s): "
                          + "; ".join(wrong[:3]))
    return {"tables": len(found), "rows": sum(found.values()), "compared": "rows per table"}


ALLOW_EMPTY = "a capture without a user table (or, for a directory, without a file) passes; default: it fails the backup"


class WithPassword(Model):
    """A source that may need a password: inline (use ${ENV}) or from a 0600 file."""

    password: SecretStr | None = None
    password_file: Path | None = None

    _section = "?"

    def secret_password(self) -> str | None:
        return secret(self.password, self.password_file, f"sources.{self._section}.password_file")

    def secret_values(self) -> list[str]:
        return present(self.secret_password)


class DirectorySettings(Model):
    """What a directory source must hold, and whether a configured path that is a symlink is followed."""

    allow_empty: bool = Field(False, description=ALLOW_EMPTY)
    max_shrink: float = Field(1.0, gt=0, le=1, description="fail the backup when the file count fell by this share or "
                                                           "more against the previous verified capture; 1.0: only a "
                                                           "fall to zero")
    follow_symlinks: bool = Field(False, description="a configured path that is a symlink is followed (and the manifest "
                                                     "says so); default: the backup fails naming it. Links inside the "
                                                     "tree are always stored as links")
