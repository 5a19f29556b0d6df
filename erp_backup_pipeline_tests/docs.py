"""The operator documentation the tests hold to its word: README.md and the docs/ tree.

Doc-tests read the page that holds a text (``docs_text("runbook.md")``) and check lines in it verbatim, or run
its commands as written.
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = ROOT / "docs"


def docs_text(*names: str) -> str:
    """The text of one page under docs/, e.g. ``docs_text("runbook.md")`` or ``docs_text("reference", "cli.md")``."""
    return DOCS.joinpath(*names).read_text()
