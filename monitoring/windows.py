"""Time windows given on the command line (``7d``, ``36h``, ``90m``) and sample files."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from core.errors import InputError

if TYPE_CHECKING:
    import pandas as pd

_WINDOW = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([dhm]?)\s*$")
_UNITS = {"d": "days", "h": "hours", "m": "minutes", "": "days"}


def parse_window(text: str) -> timedelta:
    """Parse ``<number><unit>`` with unit d (days, the default), h or m.

    Raises:
        InputError: The text is not such a window, or it is zero.
    """
    match = _WINDOW.match(text.lower())
    if not match:
        raise InputError(f"window {text!r}: expected a number and d, h or m, e.g. 7d or 36h")
    window = timedelta(**{_UNITS[match.group(2)]: float(match.group(1))})
    if window <= timedelta(0):
        raise InputError(f"window {text!r} must be longer than zero")
    return window


def read_sample(path: Path) -> pd.DataFrame:
    """A Parquet file or folder (partitioned dataset) as a frame.

    Raises:
        InputError: Missing or unreadable.
    """
    import pandas as pd

    if not path.exists():
        raise InputError(f"{path} does not exist")
    try:
        return pd.read_parquet(path)
    except Exception as error:  # pyarrow raises several types for bad files
        raise InputError(f"{path} is not readable Parquet: {error}") from error
