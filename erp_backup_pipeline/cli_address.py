"""How the command line names a capture, for ``restore``, ``verify`` and ``drill``: as restic and pgBackRest users
expect it.

    erp-backup restore sqlite latest --to FILE          the newest verified capture of the newest date
    erp-backup restore 3f9a0c12 --to FILE               a capture by its ID (``erp-backup list``), or a longer prefix
    erp-backup restore sqlite 3f9a0c12 --to FILE        the same, checked to be a sqlite capture
    erp-backup restore sqlite --partition 2026-11-25    the newest verified capture of that date
    erp-backup restore sqlite --partition 2026-11-25 --capture 3f9a0c12   another capture of that date

Owns the arguments and their resolution into (source, partition, capture ID) for ``core.restore.find_entry``; a
bare ID is looked up in the catalog to learn its source. Wrong combinations are usage errors (exit status 2).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import TYPE_CHECKING

from erp_backup_pipeline.cli_args import partition_arg
from erp_backup_pipeline.core import catalog
from erp_backup_pipeline.core.sources import BY_KEY, KINDS
from erp_backup_pipeline.errors import UsageError

if TYPE_CHECKING:
    from erp_backup_pipeline.core.site import Site

LATEST = "latest"


@dataclass(frozen=True)
class Address:
    source: str  # the asset name: sqlite_backup
    partition: str | None  # None with a capture ID or for ``latest``
    capture: str | None  # a capture ID (prefix), or None

    @property
    def key(self) -> str:
        """The source's short name: sqlite."""
        return KINDS[self.source].key

    def shown(self) -> str:
        return " ".join(x for x in (self.key, self.capture or self.partition or LATEST) if x)


def add_arguments(parser: argparse.ArgumentParser, dest: str, default_latest: bool, extra: str | None = None) -> None:
    """SOURCE|ID [CAPTURE], --partition, --capture; with ``extra`` (``ls``'s PATH) one more optional positional,
    after the capture (``args.path``)."""
    sources = ", ".join(BY_KEY)
    parser.add_argument(dest, metavar="SOURCE|ID",
                        help=f"the source ({sources}) or a capture ID from `erp-backup list` (8 hex digits; a "
                             "longer prefix of the manifest's sha256 works too)")
    which = (f"{LATEST} (the newest verified capture of the newest date) or a capture ID" +
             (f" (default: {LATEST})" if default_latest else ""))
    if extra:
        parser.add_argument("which", nargs="*", metavar=f"[CAPTURE] [{extra}]",
                            help=f"CAPTURE: {which}, not with an ID or --partition; {extra}: a file, a directory "
                                 "(everything under it) or a glob over whole paths")
    else:
        parser.add_argument("which", nargs="?", metavar="CAPTURE", help=which)
    parser.add_argument("--partition", type=partition_arg, metavar="YYYY-MM-DD",
                        help="the newest verified capture of this date (Europe/Berlin)")
    parser.add_argument("--capture", metavar="ID", help="with --partition: this capture of the date instead of the "
                                                        "newest")


def resolve(site: Site, args: argparse.Namespace, dest: str, default_latest: bool) -> Address:
    """The capture the arguments name; UsageError for a wrong combination, ArtifactNotFound for an unknown ID."""
    first: str = getattr(args, dest)
    if isinstance(args.which, list):  # [CAPTURE] [PATH]: a capture only after a source without --partition
        rest = list(args.which)
        named = KINDS.get(first) or BY_KEY.get(first)
        args.which = rest.pop(0) if rest and named is not None and not args.partition else None
        if len(rest) > 1:
            raise UsageError(f"one path at most, not {len(rest)}: {' '.join(rest)}")
        args.path = rest[0] if rest else None
    which: str | None = args.which
    if which is not None and args.partition:
        raise UsageError(f"give either {which!r} or --partition, not both")
    if args.capture and not args.partition:
        raise UsageError("--capture picks a capture of a --partition date; name a capture by ID alone without it")
    kind = KINDS.get(first) or BY_KEY.get(first)
    if kind is None:
        if not catalog.is_capture_id(first):
            raise UsageError(f"unknown source {first!r} (known: {', '.join([*BY_KEY, *KINDS])}; or a capture ID "
                             "from `erp-backup list`)")
        if which is not None or args.partition:
            raise UsageError(f"capture {first} names one capture: give no CAPTURE or --partition with it")
        entry = catalog.by_id(catalog.of(site).entries, first)
        return Address(entry.manifest.source, None, entry.sha256)
    if which is not None and which != LATEST and not catalog.is_capture_id(which):
        raise UsageError(f"{which!r} is not a capture: write {LATEST} or a capture ID from `erp-backup list`")
    capture = args.capture or (which if which not in (None, LATEST) else None)
    if which is None and not args.partition and not default_latest:
        raise UsageError(f"name the capture: {kind.key} {LATEST}, {kind.key} ID (from `erp-backup list`) or "
                         f"{kind.key} --partition YYYY-MM-DD")
    return Address(kind.name, args.partition, capture)
