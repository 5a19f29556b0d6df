"""``Site``: one configuration, built once into what the core works with.

``build_site(config)`` is where the core reads the configuration file's model (``Configuration``, the root
model of ``erp_backup_pipeline.settings``): the destinations (clients made once), the retention policies,
the signing keys, the point-in-time setup, each source's section. Asking again with the same configuration
object gives the same Site, so a backup builds its destinations once instead of at every stage; the Dagster
resource holds one configuration object per run, so every op of a run sees the same Site even when the file
changes under it. Sources, codecs and encryptors are made per use (they keep per-capture state):
``source()``, ``compressor()`` and ``encryptor()``.

Every core function takes a Site. The public ones (``takes_site``) also take the configuration itself and
build its Site, so that a script or a test can hand them what ``load_settings`` returned.
"""

from __future__ import annotations

import copy
import functools
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec, Protocol, TypeVar

from erp_backup_pipeline.core.codecs import Compressor, Encryptor, compressor, encryptor_from_settings
from erp_backup_pipeline.core.destinations import Destination, build_destinations
from erp_backup_pipeline.core.retention import RetentionPolicy
from erp_backup_pipeline.core.sources import KINDS, Source, build_source, kind_of, section
from erp_backup_pipeline.errors import ConfigError

if TYPE_CHECKING:
    from erp_backup_pipeline.core.catalog import Trust
    from erp_backup_pipeline.core.codecs import CompressionSettings, EncryptionSettings
    from erp_backup_pipeline.core.partitions import PartitionsSettings
    from erp_backup_pipeline.core.pitr.config import PitrSettings
    from erp_backup_pipeline.core.signing import Signer, SigningSettings


class Configuration(Protocol):
    """What a Site is built from: the configuration file's root model (read-only)."""

    @property
    def prefix(self) -> str: ...
    @property
    def staging_dir(self) -> Path: ...
    @property
    def state_dir(self) -> Path: ...
    @property
    def compression(self) -> CompressionSettings: ...
    @property
    def encryption(self) -> EncryptionSettings: ...
    @property
    def signing(self) -> SigningSettings: ...
    @property
    def destinations(self) -> Sequence[Any]: ...  # each destination's own settings model
    @property
    def sources(self) -> Any: ...  # one optional section per source kind's key
    @property
    def retention(self) -> Any: ...
    @property
    def recovery(self) -> Any: ...
    @property
    def pitr(self) -> PitrSettings | None: ...
    @property
    def partitions(self) -> PartitionsSettings: ...


class Site:
    """The built configuration."""

    def __init__(self, config: Configuration) -> None:
        self._config = config
        self._sections: dict[str, Any] = {}  # source name -> its section, where ``with_source`` replaced it

    # plain values
    @property
    def prefix(self) -> str:
        """The first part of every object key."""
        return self._config.prefix

    @property
    def staging_dir(self) -> Path:
        return Path(self._config.staging_dir)

    @property
    def state_dir(self) -> Path:
        return Path(self._config.state_dir)

    @property
    def partitions(self) -> PartitionsSettings:
        """Where the daily partitions begin, and whether a past date may be captured live."""
        return self._config.partitions

    # destinations
    @cached_property
    def destinations(self) -> list[Destination]:
        return build_destinations(self._config)

    @property
    def destination_settings(self) -> Sequence[Any]:
        """Each destination's settings as written (where it is, for the runbook)."""
        return self._config.destinations

    @property
    def required(self) -> set[str]:
        """The destinations every backup must reach."""
        return {d.name for d in self.destinations if d.required}

    # retention
    @cached_property
    def policies(self) -> dict[str, RetentionPolicy]:
        return self._config.retention.policies()  # type: ignore[no-any-return]

    @property
    def orphan_grace(self) -> timedelta:
        """How old an artifact without a manifest must be before prune deletes it."""
        return timedelta(hours=self._config.retention.orphan_grace_hours)

    # signing
    @property
    def signing(self) -> SigningSettings:
        return self._config.signing

    def signer(self) -> Signer:
        """The signing key (ConfigError when it is missing or unreadable)."""
        return self._config.signing.signer()

    def trust(self, now: datetime | None = None) -> Trust:
        """The keys a manifest may be signed with, as of ``now``."""
        from erp_backup_pipeline.core.catalog import Trust
        return Trust.of(self, now)

    # codecs
    @property
    def encryption(self) -> EncryptionSettings:
        return self._config.encryption

    def compressor(self) -> Compressor:
        comp = self._config.compression
        return compressor(comp.codec, level=comp.level, threads=comp.threads)

    def encryptor(self) -> Encryptor:
        return encryptor_from_settings(self._config.encryption)

    # sources
    def section(self, name: str) -> Any:
        """The settings of a source (asset or short name), or None when it is not configured or disabled."""
        kind = kind_of(name)
        if kind.name in self._sections:
            return self._sections[kind.name]
        return section(self._config, kind.name)

    def enabled(self) -> list[str]:
        """The configured sources, in registration order."""
        return [name for name in KINDS if self.section(name) is not None]

    def source(self, name: str) -> Source:
        """A new source object (it keeps what one capture learns)."""
        kind = kind_of(name)
        if kind.name in self._sections:
            return kind.build(self._sections[kind.name], self.state_dir)
        return build_source(self._config, name)

    def with_source(self, name: str, section: Any) -> Site:
        """This Site, with the source ``name`` read from ``section`` (a scratch copy of a database, say); the
        destinations, keys and policies stay the same objects."""
        other = copy.copy(self)
        other._sections = {**self._sections, kind_of(name).name: section}
        return other

    # recovery
    @property
    def document_references(self) -> list[Any]:
        """The queries whose rows name uploaded documents (``recovery.document_references``)."""
        return list(self._config.recovery.document_references)

    @cached_property
    def pitr(self) -> PitrSettings | None:
        """The pgBackRest section when point-in-time recovery is set up and enabled, else None."""
        pitr = self._config.pitr
        return pitr if pitr is not None and pitr.enabled else None

    @property
    def pgbackrest(self) -> PitrSettings:
        """The pgBackRest section as written, enabled or not; ConfigError when there is none."""
        pitr = self._config.pitr
        if pitr is None:
            raise ConfigError("pitr is not configured (the pitr section of the config file)")
        return pitr


_SITES: OrderedDict[int, tuple[Any, Site]] = OrderedDict()  # id -> (the configuration, kept alive; its Site)
_LOCK = threading.Lock()
_KEEP = 16


def build_site(config: Site | Configuration) -> Site:
    """The Site of this configuration object (the same one each time it is asked for)."""
    if isinstance(config, Site):
        return config
    with _LOCK:
        held = _SITES.get(id(config))
        if held is not None and held[0] is config:
            _SITES.move_to_end(id(config))
            return held[1]
        site = Site(config)
        _SITES[id(config)] = (config, site)
        while len(_SITES) > _KEEP:
            _SITES.popitem(last=False)
        return site


P = ParamSpec("P")
R = TypeVar("R")


def takes_site(fn: Callable[Concatenate[Site, P], R]) -> Callable[Concatenate[Site | Configuration, P], R]:
    """A public core function: its first argument may also be a configuration, whose Site it is then given."""

    @functools.wraps(fn)
    def wrapper(site: Site | Configuration, /, *args: P.args, **kwargs: P.kwargs) -> R:
        return fn(build_site(site), *args, **kwargs)

    return wrapper
