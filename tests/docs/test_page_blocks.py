"""The role pages keep the convention that lets a test run them (fast, no services)."""

from __future__ import annotations

import re

import pytest

from tests.docs.blocks import (
    NOT_RUN,
    ROLE_PAGES,
    RUNNABLE,
    demo_redis_url,
    fenced_blocks,
    role_page,
    runnable_blocks,
)

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("name", ROLE_PAGES)
def test_role_page_fences_say_whether_they_run(name: str) -> None:
    blocks = fenced_blocks(role_page(name).read_text())

    unknown = [
        f"line {block.line}: ```{block.language}"
        for block in blocks
        if block.language != RUNNABLE and block.language not in NOT_RUN
    ]
    assert not unknown, f"{name}.md: use ```bash (run) or one of {sorted(NOT_RUN)}: {unknown}"
    assert any(block.language == RUNNABLE for block in blocks), f"{name}.md runs nothing"


def test_fenced_blocks_finds_indented_blocks_and_the_language() -> None:
    markdown = (
        "text\n"
        "```bash\necho one\n```\n"
        "!!! note\n    ```console\n    $ churn serve\n    ```\n"
        "````bash title=x\ncat <<'EOF'\n```\nEOF\n````\n"
    )

    blocks = fenced_blocks(markdown)

    assert [(block.language, block.line) for block in blocks] == [
        ("bash", 2),
        ("console", 6),
        ("bash", 9),
    ]
    assert blocks[1].text == "$ churn serve"
    assert [block.text for block in runnable_blocks(markdown)] == [
        "echo one",
        "cat <<'EOF'\n```\nEOF",
    ]


def test_an_unclosed_fence_is_an_error() -> None:
    with pytest.raises(ValueError, match="line 1: fence ``` is never closed"):
        fenced_blocks("```bash\necho never closed\n")


def test_role_pages_point_at_the_online_store_make_demo_filled() -> None:
    """A registry's materialized intervals belong to the store the demo wrote (issue 25).

    Pointed at another Redis database, `feast materialize-incremental` wrote 0 entities
    right after `make demo`, into an empty store.
    """
    demo_url = demo_redis_url()
    for name in ("data-engineer", "ml-engineer", "operator"):
        exports = re.findall(
            r"^export CHURN_REDIS_URL=(\S+)",
            "\n".join(block.text for block in runnable_blocks(role_page(name).read_text())),
            re.M,
        )
        assert exports == [demo_url], f"{name}.md exports {exports}, make demo uses {demo_url}"
