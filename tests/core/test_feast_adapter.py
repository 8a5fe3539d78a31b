"""The Feast adapter: no private Feast name outside it, and its byte comparison."""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

import pytest

from core.feast_adapter.selfcheck import EncodedRow, compare_rows

pytestmark = pytest.mark.unit  # in-process only: `make test-unit`

ROOT = Path(__file__).resolve().parents[2]
ADAPTER = ROOT / "core" / "feast_adapter"
PACKAGES = (
    "core",
    "materialize",
    "training",
    "serving",
    "monitoring",
    "workflow",
    "cli",
    "bench",
    "tests",  # tests go through the adapter too (tests/utils helpers)
)


def _is_private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


# Feast modules whose objects the code reaches through attributes rather than imports.
_REACHED_MODULES = (
    "feast.feature_store",
    "feast.infra.passthrough_provider",
    "feast.infra.online_stores.redis",
    "feast.infra.online_stores.sqlite",
    "feast.infra.registry.registry",
    "feast.infra.registry.sql",
    "feast.infra.compute_engines.local.compute",
)


def _imported_feast_modules(sources: list[str]) -> set[str]:
    modules: set[str] = set()
    for source in sources:
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "feast":
                modules.add(node.module or "feast")
            elif isinstance(node, ast.Import):
                modules.update(a.name for a in node.names if a.name.split(".")[0] == "feast")
    return modules


@cache
def feast_private_names() -> frozenset[str]:
    """Private names (functions, methods, classes, attributes) of the Feast modules in use.

    Every Feast module the scanned code imports, those it reaches through attributes, and
    what they import in turn are parsed (generated protobuf modules aside): parsing all
    of Feast would take a minute on a loaded machine.
    """
    import importlib
    import sys

    sources = [path.read_text() for path in _modules(include_adapter=True)]
    for module in sorted(_imported_feast_modules(sources) | set(_REACHED_MODULES)):
        importlib.import_module(module)
    files = {
        module.__file__
        for name, module in list(sys.modules.items())
        if name.split(".")[0] == "feast"
        and ".protos." not in name
        and getattr(module, "__file__", None)
    }
    names: set[str] = set()
    for file in sorted(files):
        for node in ast.walk(ast.parse(Path(file).read_bytes())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                name = node.name
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                name = node.attr
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                name = node.id
            else:
                continue
            if _is_private(name):
                names.add(name)
    return frozenset(names)


def _feast_bases(tree: ast.Module) -> set[str]:
    """Names imported from feast modules (classes a subclass may extend)."""
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "feast":
            found.update(alias.asname or alias.name for alias in node.names)
    return found


def private_feast_uses(source: str, private: frozenset[str]) -> list[str]:
    """Private Feast names used in one module's source, as ``line: what``.

    Counted: ``from feast... import _x`` and imports of private feast modules; ``obj._x``
    where ``_x`` is private in Feast (``self._x`` and ``cls._x`` are the class's own
    unless the class extends a Feast class); overriding a private Feast method.
    """
    tree = ast.parse(source)
    feast_bases = _feast_bases(tree)
    found: list[str] = []
    extends_feast: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef) and any(
            isinstance(base, ast.Name) and base.id in feast_bases for base in node.bases
        ):
            extends_feast.update(id(child) for child in ast.walk(node))
            found += [
                f"{item.lineno}: overrides {item.name}"
                for item in node.body
                if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef) and item.name in private
            ]
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "feast":
            if any(_is_private(part) for part in (node.module or "").split(".")):
                found.append(f"{node.lineno}: imports module {node.module}")
            found += [
                f"{node.lineno}: imports {alias.name} from {node.module}"
                for alias in node.names
                if _is_private(alias.name)
            ]
        elif isinstance(node, ast.Import):
            found += [
                f"{node.lineno}: imports module {alias.name}"
                for alias in node.names
                if alias.name.split(".")[0] == "feast"
                and any(_is_private(part) for part in alias.name.split("."))
            ]
        elif isinstance(node, ast.Attribute) and node.attr in private:
            own = isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")
            if not own or id(node) in extends_feast:
                found.append(f"{node.lineno}: uses .{node.attr}")
    return sorted(found, key=lambda use: int(use.split(":")[0]))


def _modules(*, include_adapter: bool = False) -> list[Path]:
    return [
        path
        for package in PACKAGES
        if (ROOT / package).is_dir()
        for path in sorted((ROOT / package).rglob("*.py"))
        if include_adapter or ADAPTER not in path.parents
    ]


def test_no_private_feast_name_is_used_outside_the_adapter() -> None:
    private = feast_private_names()
    uses = {
        str(path.relative_to(ROOT)): found
        for path in _modules()
        if (found := private_feast_uses(path.read_text(), private))
    }

    assert uses == {}


def test_the_scan_finds_every_kind_of_private_use() -> None:
    source = """
from feast.infra.online_stores.helpers import _mmh3
from feast.infra.compute_engines.local.compute import LocalComputeEngine
import feast._private_module


class Engine(LocalComputeEngine):
    def _materialize_one(self, registry, task):
        return super()._materialize_one(registry, task)


def read(store, online, config):
    return store._get_provider(), online._get_client(config)


class Own:
    def __init__(self):
        self._client = None  # our own attribute: not Feast's
"""
    uses = private_feast_uses(source, feast_private_names())

    assert [use.split(": ", 1)[1] for use in uses] == [
        "imports _mmh3 from feast.infra.online_stores.helpers",
        "imports module feast._private_module",
        "overrides _materialize_one",
        "uses ._materialize_one",
        "uses ._get_provider",
        "uses ._get_client",
    ]


def test_the_adapter_itself_holds_the_private_names() -> None:
    private = feast_private_names()
    used = [
        use
        for path in sorted(ADAPTER.rglob("*.py"))
        for use in private_feast_uses(path.read_text(), private)
    ]

    # The scan is not vacuous: the adapter's own uses are found by it.
    assert any("_mmh3" in use for use in used)
    assert any("_materialize_one" in use for use in used)


def _row(key: bytes, **fields: bytes) -> EncodedRow:
    return EncodedRow(key=key, fields={name.encode(): value for name, value in fields.items()})


@pytest.mark.parametrize(
    ("ours", "expected"),
    [
        (_row(b"k1", a=b"\x01", _ts_v=b"t"), []),
        (_row(b"k2", a=b"\x01", _ts_v=b"t"), ["Redis key differs (Feast 6b31, ours 6b32)"]),
        (_row(b"k1", b=b"\x01", _ts_v=b"t"), ["hash field names differ (Feast only: f_a"]),
        (_row(b"k1", a=b"\x02", _ts_v=b"t"), ["bytes of f_a differ (Feast 01, ours 02)"]),
    ],
)
def test_compare_rows_names_each_difference(ours: EncodedRow, expected: list[str]) -> None:
    feast = _row(b"k1", a=b"\x01", _ts_v=b"t")
    check = compare_rows("v", [feast], [ours], field_names={b"a": "f_a", b"b": "f_b"})

    assert check.ok == (not expected)
    assert len(check.differences) == len(expected)
    for line, part in zip(check.differences, expected, strict=True):
        assert part in line
