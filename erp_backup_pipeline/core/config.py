"""What every plug-in's settings model shares: strict frozen models, secrets, http(s) URLs.

Each source, destination, codec and alert channel defines its own settings model next to its code, on
``Model`` (unknown keys refused, values frozen). A secret is given inline (``SecretStr``, usually
``${ENV}``) or as a ``*_file`` that only its owner may read; ``secret()`` is the one way to read either, and
a model that holds secrets lists their values in ``secret_values()`` so that logs and errors can be redacted
(``erp_backup_pipeline.settings.Settings.secrets`` collects them from the whole tree).
"""

from __future__ import annotations

import stat
import urllib.parse
from collections.abc import Callable
from pathlib import Path

from pydantic import BaseModel, ConfigDict, SecretStr

from erp_backup_pipeline.errors import ConfigError


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    def secret_values(self) -> list[str]:
        """The secrets this model holds (not its children's); a file that cannot be read holds none."""
        return []


def read_secret_file(path: Path, what: str) -> str:
    """Read a secret from a file that only its owner may read (mode 0600 or stricter)."""
    try:
        st = path.stat()
    except OSError as exc:
        raise ConfigError(f"{what}: cannot read secret file {path}: {exc.strerror}") from None
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(f"{what}: secret file {path} has mode {stat.S_IMODE(st.st_mode):04o}; it must be 0600")
    try:
        return path.read_text().strip()
    except OSError as exc:
        raise ConfigError(f"{what}: cannot read secret file {path}: {exc.strerror}") from None


def secret(value: SecretStr | None, file: Path | None, what: str) -> str | None:
    """A secret given inline or in a file (``what`` names the file's key in errors), or None when neither is set."""
    if value is not None:
        return value.get_secret_value()
    if file is not None:
        return read_secret_file(file, what)
    return None


def present(*readers: Callable[[], str | None]) -> list[str]:
    """The values of secret readers that are set and readable, for ``secret_values``."""
    found: list[str] = []
    for read in readers:
        try:
            value = read()
        except ConfigError:
            value = None
        if value:
            found.append(value)
    return found


def http_url(value: str) -> str:
    """``value`` without a trailing slash when it is an http:// or https:// URL with a host; ValueError otherwise."""
    parts = urllib.parse.urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an http:// or https:// URL")
    return value.rstrip("/")
