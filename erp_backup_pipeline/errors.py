"""The exception hierarchy and the exit statuses. Every error a user sees is one line that names the cause.

    BackupError                  base; ``str(err)`` is the one line shown to the user
    ├── ConfigError              the configuration file or a secret is wrong or missing
    ├── SourceError              the ERP source cannot be read (connection, file)
    │   └── SourceUnavailable    ... for now: it is down, restarting or unreachable (transient)
    ├── ToolError                an external program (pg_dump, gpg, ...) is missing or failed
    ├── CodecError               compression or encryption failed (bad recipient, wrong identity)
    ├── DestinationError         a destination cannot be written or read (bucket, disk full, access denied)
    │   ├── DestinationUnavailable  ... for now: unreachable, overloaded, timing out (transient)
    │   └── ArtifactNotFound     the requested object or capture does not exist
    ├── VerifyError              an artifact failed verification (checksum, integrity)
    ├── RestoreError             a restore was refused or failed (target not empty, ...)
    │   └── OutsideArchive       ... a point in time the pgBackRest archive does not reach
    ├── Locked                   another process of this host holds the lock (a prune is running)
    ├── UsageError               the command line is wrong (a partition that is no date)
    └── AlertError               an alert could not be delivered (webhook answered 500, SMTP down)

``err.status`` is the exit status of ``erp-backup`` when the error ends a command (``EXIT_STATUSES``: a script can
tell a wrong key from a corrupt artifact from a destination that is down, as with restic's and pgBackRest's). Each
class has its own; the place that raises refines it where the class alone cannot tell (``status=CREDENTIALS`` on the
SourceError of a refused password, on the CodecError of an identity that does not match, ``LOCKED`` on pgBackRest's
lock, ``FAILURE`` on an ArtifactNotFound where only rejected files are).

``err.transient`` says whether a pause can cure it (the source or a destination was away for a moment): the
place that raises knows, so retry decisions never read the message. Everything else is permanent: a wrong
password, a missing bucket, a failed verification.

Messages never contain secrets: the runner redacts registered secret values from the
output of external programs, and no code path formats a secret into a message.
"""

from __future__ import annotations

from typing import NamedTuple


class ExitStatus(NamedTuple):
    code: int
    name: str  # in ``--json`` error objects
    meaning: str


OK = ExitStatus(0, "ok", "done: the command did what it says (a --dry-run printed its plan, --help its usage)")
FAILURE = ExitStatus(1, "failure", "refused or failed for any other reason: a wrong configuration, a source, tool or "
                                   "destination write that failed, a restore that was refused")
USAGE = ExitStatus(2, "usage", "the command line is wrong: an unknown command or option, a missing or malformed value "
                               "(a date that is not YYYY-MM-DD), an ambiguous capture ID")
VERIFICATION = ExitStatus(3, "verification_failed", "a backup does not verify: a checksum, the decompressed bytes, "
                                                    "the source's own check or a drill's comparison failed")
NOT_FOUND = ExitStatus(10, "not_found", "nothing to act on: no capture with that ID, date or source in the catalog")
LOCKED = ExitStatus(11, "locked", "busy: another process holds the lock (a prune is running, pgBackRest is busy)")
CREDENTIALS = ExitStatus(12, "wrong_key_or_credential", "the age identity does not decrypt the artifact, or a source "
                                                        "or target refused the user or password")
DESTINATION = ExitStatus(13, "destination_unavailable", "a destination cannot be reached, read or written: "
                                                        "unreachable, access denied, missing bucket or directory")
INTERRUPTED = ExitStatus(130, "interrupted", "interrupted (Ctrl-C, SIGINT)")
EXIT_STATUSES = (OK, FAILURE, USAGE, VERIFICATION, NOT_FOUND, LOCKED, CREDENTIALS, DESTINATION, INTERRUPTED)


class BackupError(Exception):
    """Base class: the message is one line, fit to show an operator at 3 a.m."""

    transient = False  # a pause can cure it: worth another try
    status = FAILURE  # the exit status of a command it ends

    def __init__(self, *args: object, status: ExitStatus | None = None) -> None:
        super().__init__(*args)
        if status is not None:  # the raiser knows better than the class (the module's docstring)
            self.status = status

    def __str__(self) -> str:
        text = super().__str__()
        return " ".join(text.split()) if text else self.__class__.__name__


class ConfigError(BackupError):
    pass


class SourceError(BackupError):
    pass


class SourceUnavailable(SourceError):
    transient = True


class ToolError(BackupError):
    pass


class ToolTimeout(ToolError):
    transient = True


class CodecError(BackupError):
    pass


class DestinationError(BackupError):
    status = DESTINATION


class DestinationUnavailable(DestinationError):
    transient = True


class ArtifactNotFound(DestinationError):
    status = NOT_FOUND


class VerifyError(BackupError):
    status = VERIFICATION


class RestoreError(BackupError):
    pass


class OutsideArchive(RestoreError):
    pass


class AlertError(BackupError):
    pass


class Locked(BackupError):
    status = LOCKED


class UsageError(BackupError):
    status = USAGE
