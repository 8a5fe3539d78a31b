"""Time windows given on the command line (``7d``, ``36h``, ``90m``)."""

from __future__ import annotations

import re
from datetime import timedelta

from core.errors import InputError

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
