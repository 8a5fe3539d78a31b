"""Each safety rule has one checkpoint: nothing else in the project loads a model or opens
the feature store. Run by ``make lint`` as well as by the suite.

The code is parsed, not imported: a call is found by its dotted name.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("cli", "core", "materialize", "training", "serving", "monitoring", "workflow", "bench")

# The model checkpoint: resolves, downloads, verifies and loads (core.model_trust checks).
MODEL_CHECKPOINT = {"core/models.py", "core/model_trust.py"}
# The feature-store checkpoint: opens the store and verifies its on-demand code.
STORE_CHECKPOINT = {"core/feast_store.py"}


def _dotted(node: ast.expr) -> str:
    """``a.b.c`` for a chain of names and attributes, else ''."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return ".".join(reversed(parts))
    return ""


def _sources() -> Iterator[tuple[str, ast.Module]]:
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            yield str(path.relative_to(ROOT)), ast.parse(path.read_text(), filename=str(path))


def _calls(tree: ast.Module) -> Iterator[tuple[int, str]]:
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            name = _dotted(node.func)
            if name:
                yield node.lineno, name


def _imported_names(tree: ast.Module) -> Iterator[tuple[int, str, str]]:
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            for alias in node.names:
                yield node.lineno, node.module, alias.name


def _is_model_loader(name: str) -> bool:
    last = name.rsplit(".", 1)[-1]
    return (
        (name.startswith("mlflow.") and last == "load_model")
        or name in ("skops.io.load", "sio.load")
        or last == "MlflowClient"
    )


def test_only_the_model_checkpoint_loads_models_or_builds_mlflow_clients() -> None:
    found = []
    for relative, tree in _sources():
        if relative in MODEL_CHECKPOINT:
            continue
        found += [
            f"{relative}:{line} {name}()" for line, name in _calls(tree) if _is_model_loader(name)
        ]
        found += [
            f"{relative}:{line} from {module} import {name}"
            for line, module, name in _imported_names(tree)
            if module.startswith("mlflow") and name == "load_model"
        ]
    assert not found, (
        "load models and build MLflow clients through core.models only:\n" + "\n".join(found)
    )


def test_only_the_store_checkpoint_builds_a_feature_store_or_checks_its_code() -> None:
    found = []
    for relative, tree in _sources():
        # The benchmarks build Feast's own store on purpose: it is the baseline they time.
        if relative in STORE_CHECKPOINT or relative.startswith("bench/"):
            continue
        for line, name in _calls(tree):
            last = name.rsplit(".", 1)[-1]
            if last in ("FeatureStore", "check_on_demand_sources"):
                found.append(f"{relative}:{line} {name}()")
    assert not found, "open the store through core.feast_store.open_feature_store:\n" + "\n".join(
        found
    )


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("import mlflow\nmlflow.sklearn.load_model('x')", True),
        ("import mlflow\nmlflow.pyfunc.load_model('x')", True),
        ("from mlflow import MlflowClient\nMlflowClient()", True),
        ("import mlflow\nmlflow.MlflowClient()", True),
        ("import skops.io\nskops.io.load('f')", True),
        ("import mlflow\nmlflow.sklearn.log_model(m, name='model')", False),
    ],
)
def test_the_loader_check_recognizes_each_way_of_loading(source: str, expected: bool) -> None:
    tree = ast.parse(source)
    assert any(_is_model_loader(name) for _, name in _calls(tree)) is expected
