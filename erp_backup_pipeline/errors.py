"""The exception hierarchy. Every error a user sees is one line that names the cause.

    BackupError                  base; ``str(err)`` is the one line shown to the user
    ├── ConfigError              the configuration file or a secret is wrong or missing
    ├── SourceError              the ERP source cannot be read (connection, password, file)
    │   └── SourceUnavailable    ... for now: it is down, restarting or unreachable (transient)
    ├── ToolError                an external program (pg_dump, gpg, ...) is missing or failed
    ├── CodecError               compression or encryption failed (bad recipient, bad key)
    ├── DestinationError         a destination cannot be written or read (bucket, disk full)
    │   ├── DestinationUnavailable  ... for now: unreachable, overloaded, timing out (transient)
    │   └── ArtifactNotFound     the requested object does not exist
    ├── VerifyError              an artifact failed verification (checksum, integrity)
    ├── RestoreError             a restore was refused or failed (target not empty, ...)
    │   └── OutsideArchive       ... a point in time the pgBackRest archive does not reach
    ├── UsageError               the command line is wrong (a partition that is no date); exit status 2
    └── AlertError               an alert could not be delivered (webhook answered 500, SMTP down)

``err.transient`` says whether a pause can cure it (the source or a destination was away for a moment): the
place that raises knows, so retry decisions never read the message. Everything else is permanent: a wrong
password, a missing bucket, a failed verification.

Messages never contain secrets: the runner redacts registered secret values from the
output of external programs, and no code path formats a secret into a message.
"""

from __future__ import annotations


class BackupError(Exception):
    """Base class: the message is one line, fit to show an operator at 3 a.m."""

    transient = False  # a pause can cure it: worth another try

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
    pass


class DestinationUnavailable(DestinationError):
    transient = True


class ArtifactNotFound(DestinationError):
    pass


class VerifyError(BackupError):
    pass


class RestoreError(BackupError):
    pass


class OutsideArchive(RestoreError):
    pass


class AlertError(BackupError):
    pass


class UsageError(BackupError):
    pass
