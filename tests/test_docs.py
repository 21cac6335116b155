"""The documentation's relative links lead somewhere: every link of README.md and docs/**/*.md
to a file of the repository names one that exists, and a link with #anchor to a markdown file
names one of its headings (as GitHub spells heading anchors)."""

import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
README_LINES = 250  # issue 22: the README is a user's guide; the rest lives in docs/

LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^(```|~~~)")


def prose(text: str) -> str:
    """`text` without fenced code blocks (a shell line may hold brackets and parentheses)."""
    kept, inside = [], False
    for line in text.splitlines():
        if FENCE.match(line.strip()):
            inside = not inside
        elif not inside:
            kept.append(line)
    return "\n".join(kept)


def anchor(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    headings = [line.lstrip("#") for line in prose(page.read_text()).splitlines() if re.match(r"#{1,6} ", line)]
    return {anchor(h) for h in headings}


def links(page: Path) -> list[str]:
    return [target for target in LINK.findall(prose(page.read_text())) if not re.match(r"[a-z]+:", target)]


def broken(page: Path, target: str) -> str | None:
    """Why `target`, linked from `page`, leads nowhere; None when it leads somewhere."""
    path, _, fragment = target.partition("#")
    dest = (page.parent / path).resolve() if path else page
    if not dest.exists():
        return f"{target}: no such file"
    if ROOT not in dest.parents and dest != ROOT:
        return f"{target}: outside the repository"
    if fragment and dest.suffix == ".md" and fragment not in anchors(dest):
        return f"{target}: no heading #{fragment} in {dest.relative_to(ROOT)}"
    return None


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_lead_somewhere(page):
    problems = [why for target in links(page) if (why := broken(page, target))]
    assert not problems, f"{page.relative_to(ROOT)}: " + "; ".join(problems)


def test_the_checks_catch_a_broken_link_and_a_missing_anchor(tmp_path, monkeypatch):
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    (tmp_path / "a.md").write_text("# Title: one `code` (x)\n\n```\n[in code](nowhere.md)\n```\n")
    page = tmp_path / "b.md"
    page.write_text("[ok](a.md#title-one-code-x) [gone](c.md) [bad](a.md#other) [web](https://x.org/y)\n")
    found = [broken(page, t) for t in links(page)]
    assert links(page) == ["a.md#title-one-code-x", "c.md", "a.md#other"]
    assert found == [None, "c.md: no such file", "a.md#other: no heading #other in a.md"]
    assert links(tmp_path / "a.md") == []


def test_the_readme_stays_a_users_guide():
    lines = len((ROOT / "README.md").read_text().splitlines())
    assert lines <= README_LINES, f"README.md has {lines} lines; move reference material to docs/"
