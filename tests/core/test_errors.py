"""One error hierarchy: every error class in core/errors.py, mapped once to HTTP statuses."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from core import errors
from core.errors import (
    BlockedError,
    ChurnError,
    InputError,
    ModelNotFoundError,
    OnlineStoreUnavailable,
    StaleDataError,
    UnavailableError,
    UntrustedModelError,
    http_status_for,
)

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("cli", "core", "materialize", "training", "serving", "monitoring", "workflow")
_BUILTIN_BASES = {"Exception", "ValueError", "RuntimeError", "TimeoutError", "OSError", "KeyError"}
# The API's answer to a request: a kind and its HTTP status from serving's one table, beside
# it in serving/errors.py (it derives from ChurnError, so it is part of the hierarchy).
_ALLOWED = {"serving/errors.py:ServingError"}


def _error_classes_outside_core_errors() -> list[str]:
    known = _BUILTIN_BASES | {
        name for name, value in vars(errors).items() if isinstance(value, type)
    }
    found = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            relative = str(path.relative_to(ROOT))
            if relative == "core/errors.py":
                continue
            for node in ast.walk(ast.parse(path.read_text())):
                if not isinstance(node, ast.ClassDef):
                    continue
                bases = {
                    base.attr if isinstance(base, ast.Attribute) else getattr(base, "id", "")
                    for base in node.bases
                }
                if bases & known and f"{relative}:{node.name}" not in _ALLOWED:
                    found.append(
                        f"{relative}:{node.lineno} {node.name}({', '.join(sorted(bases))})"
                    )
    return found


def test_every_error_class_is_declared_in_core_errors() -> None:
    found = _error_classes_outside_core_errors()
    assert not found, "declare error classes in core/errors.py:\n" + "\n".join(found)


def test_every_error_of_ours_derives_from_one_base() -> None:
    classes = [
        value
        for value in vars(errors).values()
        if isinstance(value, type) and issubclass(value, BaseException)
    ]
    assert all(issubclass(cls, ChurnError) for cls in classes)
    names = [cls.__name__ for cls in classes]
    assert len(names) == len(set(names))


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (ModelNotFoundError("no alias"), 404),
        (UntrustedModelError("hash differs"), 422),
        (InputError("bad"), 422),
        (BlockedError("gate"), 409),
        (StaleDataError("late"), 503),
        (OnlineStoreUnavailable("redis down"), 503),
        (UnavailableError("down"), 503),
        (KeyError("a bug"), 500),
    ],
)
def test_http_status_for_maps_each_family_once(error: BaseException, status: int) -> None:
    assert http_status_for(error) == status
