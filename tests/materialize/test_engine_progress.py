"""The engine's progress: a bar on a terminal, lines elsewhere."""

from __future__ import annotations

import io

import pytest

from core.compute.local.sampling import ChunkPlan
from materialize.engine.progress import BarProgress, LogProgress, make_progress

pytestmark = pytest.mark.unit  # in-process only: `make test-unit`


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(
    ("stream", "kind"), [(_Terminal(), BarProgress), (io.StringIO(), LogProgress)]
)
def test_progress_is_a_bar_on_a_terminal_and_lines_elsewhere(
    stream: io.StringIO, kind: type
) -> None:
    progress = make_progress(stream)
    progress.start("user_features", ChunkPlan(entities=10, rows=12, rejected_rows=1, chunks=2))
    progress.advance(6)
    progress.advance(4)
    progress.finish(written=9, skipped=1)

    assert type(progress) is kind
    text = stream.getvalue()
    assert "10 entities (12 rows in range, 1 rejected without a join key)" in text
    assert "wrote 9 entities (1 not newer than online)" in text
    assert "rows/s" in text
    if kind is LogProgress:
        assert "chunk 2/2: 10/10 rows (100%)" in text
    else:
        assert "━" in text  # rich's bar
