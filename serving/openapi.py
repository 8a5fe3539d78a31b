"""The published OpenAPI document: FastAPI's, with integer bounds as exact integers.

FastAPI's OpenAPI model declares ``minimum``/``maximum`` as floats, so the int64 bound
2^63 - 1 of a user id would be published as ``9.223372036854776e+18``: 2^63, one more
than the service accepts (fastapi/fastapi#3355). The bounds are put back as integers.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from serving.schemas import INT64_MAX, INT64_MIN

_BOUNDS = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf")
# Every integer up to 2^53 survives the trip through a float.
_EXACT_AS_FLOAT = 2**53
# The bounds of ours that do not, by the float they were rounded to.
_ROUNDED = {float(bound): bound for bound in (INT64_MIN, INT64_MAX)}


class ServingAPI(FastAPI):
    """FastAPI whose OpenAPI document states integer bounds exactly."""

    def openapi(self) -> dict[str, Any]:
        """The OpenAPI document (built once, without the lifespan: nothing is opened)."""
        if self.openapi_schema:
            return self.openapi_schema
        schema = super().openapi()  # built and kept by FastAPI: corrected in place
        restore_integer_bounds(schema)
        return schema


def restore_integer_bounds(node: Any) -> None:
    """Give every integer schema under ``node`` its bounds as integers, in place.

    Raises:
        ValueError: A bound was rounded and is not one of the known int64 bounds.
    """
    if isinstance(node, dict):
        if node.get("type") == "integer":
            for key in _BOUNDS:
                value = node.get(key)
                if isinstance(value, float):
                    node[key] = _exact(key, value)
        for child in node.values():
            restore_integer_bounds(child)
    elif isinstance(node, list):
        for child in node:
            restore_integer_bounds(child)


def _exact(key: str, value: float) -> int:
    if value.is_integer() and abs(value) <= _EXACT_AS_FLOAT:
        return int(value)
    if value in _ROUNDED:
        return _ROUNDED[value]
    raise ValueError(f"the integer {key} {value!r} was rounded in the OpenAPI document")
