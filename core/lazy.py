"""A package's public names, imported from their modules only when first used (PEP 562).

For packages whose submodules run where the rest of the package must not load: a spawned
scoring process or a Spark executor imports one module through its package, and importing
Feast costs such a process about 4 s.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def lazy_attributes(package: str, homes: dict[str, str]) -> Callable[[str], Any]:
    """The module ``__getattr__`` of ``package``: each name from its home module, on first use.

    Args:
        package: The package's ``__name__`` (for the error message).
        homes: Public name to the module that defines it.
    """

    def attribute(name: str) -> Any:
        if name not in homes:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(homes[name]), name)

    return attribute
