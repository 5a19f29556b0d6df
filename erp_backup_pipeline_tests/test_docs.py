"""The documentation holds together: every relative link points at a file that exists, the README leads to the
runbook first, and docs/index.md lists every page."""

from __future__ import annotations

import re
from pathlib import Path

from erp_backup_pipeline_tests.docs import DOCS, README, ROOT

LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^[ \t]*```.*?^[ \t]*```", re.S | re.M)
CODE = re.compile(r"`[^`\n]*`")


def pages() -> list[Path]:
    return [README, *sorted(DOCS.rglob("*.md"))]


def links(page: Path) -> list[str]:
    """The link targets of a page, in order, outside code blocks and code spans."""
    text = CODE.sub("", FENCE.sub("", page.read_text()))
    return LINK.findall(text)


def relative(target: str) -> str | None:
    """A link to a file of this repository, without its anchor; None for a web address or an anchor on the page."""
    if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
        return None
    return target.split("#", 1)[0]


def test_there_is_a_docs_tree() -> None:
    assert (DOCS / "runbook.md").is_file() and (DOCS / "index.md").is_file()
    assert len(pages()) > 10


def test_every_relative_link_points_at_an_existing_file() -> None:
    broken = []
    for page in pages():
        for target in links(page):
            path = relative(target)
            if path is not None and not (page.parent / path).exists():
                broken.append(f"{page.relative_to(ROOT)}: {target}")
    assert broken == []


def test_the_readme_links_the_runbook_before_anything_else() -> None:
    text = README.read_text()
    first = links(README)[0]
    assert first == "docs/runbook.md", f"the README's first link is {first}, not docs/runbook.md"
    assert text.index("](docs/runbook.md)") > text.index("make test")


def test_the_index_lists_every_page() -> None:
    listed = {(DOCS / path).resolve() for target in links(DOCS / "index.md") if (path := relative(target))}
    missing = [str(p.relative_to(ROOT)) for p in DOCS.rglob("*.md") if p.name != "index.md" and p.resolve() not in listed]
    assert missing == []
