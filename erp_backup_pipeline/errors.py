"""The exception hierarchy. Every error a user sees is one line that names the cause.

    BackupError                  base; ``str(err)`` is the one line shown to the user
    ├── ConfigError              the configuration file or a secret is wrong or missing
    ├── SourceError              the ERP source cannot be read (connection, password, file)
    ├── ToolError                an external program (pg_dump, gpg, ...) is missing or failed
    ├── CodecError               compression or encryption failed (bad recipient, bad key)
    ├── DestinationError         a destination cannot be written or read (bucket, disk full)
    │   └── ArtifactNotFound     the requested object does not exist
    ├── VerifyError              an artifact failed verification (checksum, integrity)
    ├── RestoreError             a restore was refused or failed (target not empty, ...)
    ├── UsageError               the command line is wrong (a partition that is no date); exit status 2
    └── AlertError               an alert could not be delivered (webhook answered 500, SMTP down)

Messages never contain secrets: the runner redacts registered secret values from the
output of external programs, and no code path formats a secret into a message.
"""

from __future__ import annotations


class BackupError(Exception):
    """Base class: the message is one line, fit to show an operator at 3 a.m."""

    def __str__(self) -> str:
        text = super().__str__()
        return " ".join(text.split()) if text else self.__class__.__name__


class ConfigError(BackupError):
    pass


class SourceError(BackupError):
    pass


class ToolError(BackupError):
    pass


class CodecError(BackupError):
    pass


class DestinationError(BackupError):
    pass


class ArtifactNotFound(DestinationError):
    pass


class VerifyError(BackupError):
    pass


class RestoreError(BackupError):
    pass


class AlertError(BackupError):
    pass


class UsageError(BackupError):
    pass
