"""``Site``: one configuration, built once into what the core works with.

``build_site(settings)`` gives the destinations (clients made once), the retention policies and whether
point-in-time recovery is set up; asking again with the same configuration object gives the same Site, so a
backup builds its destinations once instead of at every stage. Sources, codecs and
encryptors are made per use (they keep per-capture state); ``source()``, ``compressor()`` and ``encryptor()``
make them from the same configuration. The Dagster resource holds one configuration object per run, so every
op of a run sees the same Site even when the file changes under it.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from functools import cached_property
from typing import Any

from erp_backup_pipeline.core.codecs import Compressor, Encryptor, compressor, encryptor_from_settings
from erp_backup_pipeline.core.destinations import Destination, build_destinations
from erp_backup_pipeline.core.retention import RetentionPolicy
from erp_backup_pipeline.core.sources import Source, build_source


class Site:
    """The built configuration. ``settings`` stays reachable for plain values (prefix, directories, checks)."""

    def __init__(self, settings: Any) -> None:
        self.settings = settings

    @cached_property
    def destinations(self) -> list[Destination]:
        return build_destinations(self.settings)

    @cached_property
    def policies(self) -> dict[str, RetentionPolicy]:
        return self.settings.retention.policies()  # type: ignore[no-any-return]

    @cached_property
    def pitr(self) -> Any:
        """The pgBackRest section when point-in-time recovery is set up and enabled, else None."""
        pitr = self.settings.pitr
        return pitr if pitr is not None and pitr.enabled else None

    def source(self, name: str) -> Source:
        """A new source object (it keeps what one capture learns)."""
        return build_source(self.settings, name)

    def compressor(self) -> Compressor:
        comp = self.settings.compression
        return compressor(comp.codec, level=comp.level, threads=comp.threads)

    def encryptor(self) -> Encryptor:
        return encryptor_from_settings(self.settings.encryption)


_SITES: OrderedDict[int, tuple[Any, Site]] = OrderedDict()  # id -> (the configuration, kept alive; its Site)
_LOCK = threading.Lock()
_KEEP = 16


def build_site(settings: Any) -> Site:
    """The Site of this configuration object (the same one each time it is asked for)."""
    if isinstance(settings, Site):
        return settings
    with _LOCK:
        held = _SITES.get(id(settings))
        if held is not None and held[0] is settings:
            _SITES.move_to_end(id(settings))
            return held[1]
        site = Site(settings)
        _SITES[id(settings)] = (settings, site)
        while len(_SITES) > _KEEP:
            _SITES.popitem(last=False)
        return site
