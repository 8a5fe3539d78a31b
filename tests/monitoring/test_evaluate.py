"""Evaluation: predictions joined with late labels, ROC AUC and calibration (the command:
tests/cli/test_monitoring.py)."""

from __future__ import annotations

import pandas as pd
import pytest

from tests.utils.monitoring import START

pytestmark = pytest.mark.unit  # in-process only: `make test-unit`
T = pd.Timestamp(START)


def _frame(rows: list[tuple[int, pd.Timestamp]], **columns: list[float]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=["user_id", "event_timestamp"])
    frame["event_timestamp"] = pd.to_datetime(frame["event_timestamp"], utc=True)
    return frame.assign(**columns)
