"""The fenced code blocks of the documentation pages, and which of them run.

The convention (stated in ``docs/index.md`` and ``docs/development.md``): on the four role
pages a block fenced ``bash`` is run by ``test_role_pages``; ``console``, ``text``,
``json`` and ``yaml`` blocks are not. Any other language there is refused, so a command
is never left unrun because of a spelling (``sh``, ``shell``).
"""

from __future__ import annotations

import re
import textwrap
from dataclasses import dataclass
from pathlib import Path

from core.settings import PROJECT_ROOT

DOCS = PROJECT_ROOT / "docs"
ROLE_PAGES = ("data-engineer", "ml-engineer", "api-client", "operator")  # the order they run in
RUNNABLE = "bash"
NOT_RUN = frozenset({"console", "text", "json", "yaml"})

_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,})(?P<info>[^`]*)$")


@dataclass(frozen=True)
class Block:
    """One fenced block: its language (the info string's first word) and its text."""

    language: str
    text: str
    line: int  # 1-based line of the opening fence


def demo_redis_url() -> str:
    """The Redis database `make demo` materializes into (the Makefile's ``DEMO_REDIS_URL``)."""
    found = re.search(r"^DEMO_REDIS_URL \?= (\S+)$", (PROJECT_ROOT / "Makefile").read_text(), re.M)
    assert found is not None, "the Makefile no longer sets DEMO_REDIS_URL"
    return found[1]


def role_page(name: str) -> Path:
    """The Markdown file of a role page."""
    return DOCS / "roles" / f"{name}.md"


def fenced_blocks(markdown: str) -> list[Block]:
    """Every fenced block of a page, in order (indented ones, as in admonitions, included)."""
    blocks: list[Block] = []
    lines = markdown.splitlines()
    index = 0
    while index < len(lines):
        opening = _FENCE.match(lines[index])
        if opening is None:
            index += 1
            continue
        start, fence = index, opening["fence"]
        body: list[str] = []
        index += 1
        while index < len(lines) and lines[index].strip() != fence:
            body.append(lines[index])
            index += 1
        if index == len(lines):
            raise ValueError(f"line {start + 1}: fence {fence} is never closed")
        words = opening["info"].split()
        language = words[0].lstrip("{.").rstrip("}") if words else ""
        blocks.append(Block(language, textwrap.dedent("\n".join(body)), start + 1))
        index += 1
    return blocks


def runnable_blocks(markdown: str) -> list[Block]:
    """The blocks a test runs: those fenced ``bash``."""
    return [block for block in fenced_blocks(markdown) if block.language == RUNNABLE]
