"""What a backup materialization says about the date of its data (``core.late``): ``data_as_of`` on every one; on a
late capture (a live capture of a day that was over) also the text ``late_capture`` and the tag
``erp_backup/late_capture`` (``data-of-<day>``), which the UI shows under the materialization's Tags."""

from __future__ import annotations

from typing import Any

import dagster as dg

from erp_backup_pipeline.core import late

LATE_TAG = "erp_backup/late_capture"


def as_of_metadata(manifest: Any) -> dict[str, Any]:
    found = late.of(manifest)
    if found is None:
        return {}
    md: dict[str, Any] = {"data_as_of": dg.MetadataValue.text(found.iso)}
    if found.late:
        md["late_capture"] = dg.MetadataValue.text(found.note())
    return md


def as_of_tags(manifest: Any) -> dict[str, str]:
    found = late.of(manifest)
    # a tag value may hold letters, digits, '_', '-' and '.' only
    return {LATE_TAG: f"data-of-{found.day}"} if found is not None and found.late else {}
