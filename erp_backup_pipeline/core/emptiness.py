"""Honest sources: a source that suddenly holds nothing is a failed backup, not a small one (THREATS.md).

``problem(site, source, facts)`` judges a capture once it is verified; the pipeline turns its answer into
a failed verification, so the blocking ``integrity`` check is where it is decided: a failed backup is a failed
run and an alert, and no earlier backup is touched.

- Databases (``SourceKind.emptiness`` ``tables``: SQLite, PostgreSQL): no user table (a 0-byte or table-less
  SQLite file, an empty database) fails, unless the source says ``allow_empty: true``.
- Directory sources (``files``: the configuration, the uploads): no file at all fails unless ``allow_empty``
  (an unmounted share leaves an empty mount point); a file count that fell by ``max_shrink`` or more against
  the source's previous verified capture fails (default 1.0: only a fall to zero), the line naming the path
  and both counts.

Redis (``None``) is not judged: an empty cache or session store is an ordinary state of it.
"""

from __future__ import annotations

from typing import Any

from erp_backup_pipeline.core import catalog
from erp_backup_pipeline.core.manifest import Manifest
from erp_backup_pipeline.core.site import Site, takes_site
from erp_backup_pipeline.core.sources import KINDS


def _previous(site: Site, source: str) -> Manifest | None:
    """The source's newest verified capture in the catalog (None when there is none or it cannot be read)."""
    entries = catalog.of(site, source).entries  # authenticated only: a forged count never excuses a shrink
    verified = [e.manifest for e in entries if e.manifest.verify.get("ok")]
    return max(verified, key=lambda m: m.captured_at) if verified else None


@takes_site
def problem(site: Site, source: str, facts: dict[str, Any]) -> str | None:
    """Why this capture is no backup of what the source should hold, or None."""
    kind = KINDS[source]
    cfg = site.section(source)
    if kind.emptiness == "tables":
        tables = facts.get("row_counts", facts.get("row_estimates"))
        if isinstance(tables, dict) and not tables and not cfg.allow_empty:
            return (f"{kind.holds(facts)} no tables: an empty database is no backup (a 0-byte file, the wrong "
                    f"database?); if it is meant to be empty, set sources.{kind.key}.allow_empty: true")
        return None
    if kind.emptiness != "files" or not isinstance(facts.get("files"), int):
        return None
    files: int = facts["files"]
    if files == 0 and cfg.allow_empty:
        return None
    if files > 0 and cfg.max_shrink >= 1:
        return None
    before = _previous(site, source)
    held = before.facts.get("files") if before is not None else None
    earlier = "there is no earlier verified capture to compare with"
    if before is not None and isinstance(held, int):
        earlier = f"the previous verified capture ({before.partition}, {before.captured_at}) held {held}"
    if files == 0:
        return (f"{kind.holds(facts)} 0 files and {earlier}: an unmounted share or an emptied directory is no "
                f"backup; if it is meant to be empty, set sources.{kind.key}.allow_empty: true")
    if isinstance(held, int) and held > 0 and (held - files) / held >= cfg.max_shrink:
        return (f"{kind.holds(facts)} {files} files and {earlier}: {100 * (held - files) / held:.0f} % fewer, "
                f"sources.{kind.key}.max_shrink is {cfg.max_shrink:g}")
    return None
