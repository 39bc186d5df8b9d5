"""Every relative link in README.md and docs/ leads to a file of this repository, and every
``#anchor`` to a heading of the page it names (GitHub's heading ids: lower case, punctuation
dropped, spaces as hyphens)."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
_LINK = re.compile(r"\]\(([^)\s]+)\)")


def _anchors(page: Path) -> set[str]:
    headings = re.findall(r"^#+ (.+)$", page.read_text(), re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


def _broken(page: Path) -> list[str]:
    broken = []
    for target in _LINK.findall(page.read_text()):
        if re.match(r"[a-z]+:", target):  # https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        found = (page.parent / path).resolve() if path else page
        if not found.is_relative_to(REPO) or not found.exists():
            broken.append(f"{target}: no such file in the repository")
        elif anchor and found.suffix == ".md" and anchor not in _anchors(found):
            broken.append(f"{target}: no such heading in {found.name}")
    return broken


def test_every_relative_link_and_anchor_of_the_docs_resolves() -> None:
    broken = {page.name: _broken(page) for page in PAGES}
    assert {name: links for name, links in broken.items() if links} == {}
