"""The check rows a training run leaves for serving: its test rows, in model column order.

Serving compares any faster inference engine with the model's own ``predict_proba`` on
these rows before using it, so a model is never served with different probabilities.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

CHECK_ROWS_ARTIFACT = "serving/check_rows.parquet"
MAX_CHECK_ROWS = 20_000


def select_check_rows(frame: Any, features: Sequence[str]) -> Any:
    """The model columns of at most ``MAX_CHECK_ROWS`` rows (every row when fewer), in order.

    Args:
        frame: The test rows (a DataFrame with at least ``features``).
        features: Model columns in model order.
    """
    rows = frame[list(features)]
    if len(rows) > MAX_CHECK_ROWS:
        rows = rows.sample(n=MAX_CHECK_ROWS, random_state=0).sort_index()
    return rows.reset_index(drop=True)


def read_check_rows(path: str | Path, *, features: Sequence[str]) -> np.ndarray:
    """Check rows as float64, columns in ``features`` order.

    Raises:
        ValueError: A model column is missing from the file.
    """
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    missing = [name for name in features if name not in table.column_names]
    if missing:
        raise ValueError(f"check rows lack column(s) {', '.join(missing)}")
    return (
        np.column_stack(
            [
                table.column(name).to_numpy(zero_copy_only=False).astype(np.float64)
                for name in features
            ]
        )
        if len(features)
        else np.empty((table.num_rows, 0))
    )
