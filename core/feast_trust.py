"""On-demand feature views: run only the code the repo holds, not what the registry says.

Feast stores each on-demand view's function as source text in the registry and re-executes
that text (``feast.transformation.udf_rehydrate``) in every process that reads the view,
so whoever can write ``registry.db`` (or the team profile's SQL registry) could run code
in serving and training. Before the store is used, :func:`check_on_demand_sources` reads
the views' raw protos from the registry (no view object is built, so nothing runs) and compares
each stored function with the function of the same name in the repo's Python files,
parsed (never imported) with :mod:`ast`: a SHA-256 of the function's syntax tree,
decorators left out (Feast strips them before executing). Anything else in the stored
text (a second statement, another function) is a mismatch too.
"""

from __future__ import annotations

import ast
import copy
import hashlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.errors import OnDemandSourceMismatch

if TYPE_CHECKING:
    from feast import FeatureStore

_SKIPPED_DIRS = {"__pycache__", "data", ".venv", ".git"}


def source_sha256(source: str) -> str | None:
    """Hash of one function definition's syntax tree, decorators left out.

    None when the text is not exactly one function definition (or does not parse).
    """
    import textwrap

    try:
        module = ast.parse(textwrap.dedent(source))
    except (SyntaxError, ValueError):
        return None
    if len(module.body) != 1 or not isinstance(
        module.body[0], ast.FunctionDef | ast.AsyncFunctionDef
    ):
        return None
    return _function_sha256(module.body[0])


def _function_sha256(node: ast.FunctionDef | ast.AsyncFunctionDef) -> str:
    bare = copy.copy(node)  # shallow: only the decorator list is replaced
    bare.decorator_list = []
    return hashlib.sha256(ast.dump(bare, include_attributes=False).encode()).hexdigest()


def _decorator_name(decorator: ast.expr) -> str:
    target = decorator.func if isinstance(decorator, ast.Call) else decorator
    if isinstance(target, ast.Attribute):
        return target.attr
    return target.id if isinstance(target, ast.Name) else ""


def _view_name(node: ast.FunctionDef | ast.AsyncFunctionDef, decorator: ast.expr) -> str:
    if isinstance(decorator, ast.Call):
        for keyword in decorator.keywords:
            if keyword.arg == "name" and isinstance(keyword.value, ast.Constant):
                return str(keyword.value.value)
    return node.name


def repo_on_demand_sources(repo_path: Path) -> dict[str, str]:
    """Name -> :func:`source_sha256` of every on-demand view function in a Feast repo.

    The repo's ``*.py`` files are parsed, not imported (nothing runs).
    """
    found: dict[str, str] = {}
    for path in sorted(repo_path.rglob("*.py")):
        if _SKIPPED_DIRS.intersection(path.relative_to(repo_path).parts):
            continue
        try:
            tree = ast.parse(path.read_text(), filename=str(path))
        except SyntaxError:
            continue  # Feast would fail on it first; nothing of it can be trusted anyway
        for node in ast.walk(tree):
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            for decorator in node.decorator_list:
                if _decorator_name(decorator) == "on_demand_feature_view":
                    found[_view_name(node, decorator)] = _function_sha256(node)
    return found


def _on_demand_protos(store: FeatureStore) -> list[Any]:
    """The project's on-demand view protos, read fresh and never turned into objects.

    Feast's object listings go through a cache keyed by ``id()`` of the registry proto and
    its ``version_id``, which can hand back views of an earlier read; the raw protos can
    not, and building no object runs no code.
    """
    from core.feast_adapter.store import fresh_registry_proto

    proto = fresh_registry_proto(store)
    return [view for view in proto.on_demand_feature_views if view.spec.project == store.project]


def check_on_demand_sources(store: FeatureStore, repo_path: Path) -> int:
    """Refuse a registry whose on-demand view code is not the repo's; return views checked.

    Call it right after opening the store, before any retrieval.

    Raises:
        OnDemandSourceMismatch: A view's stored function differs from the repo's, is not
            in the repo, or is stored without source (Feast would unpickle it instead).
    """
    expected = repo_on_demand_sources(repo_path)
    views = _on_demand_protos(store)
    problems = []
    for view in views:
        name = view.spec.name
        transformation = view.spec.feature_transformation
        kind = transformation.WhichOneof("transformation")
        if kind is not None and kind != "user_defined_function":
            continue  # substrait plans are data, not Python
        stored = transformation.user_defined_function.body_text if kind else ""
        if not stored:
            problems.append(f"{name}: stored without source text (would be unpickled)")
        elif name not in expected:
            problems.append(f"{name}: no on-demand view of that name in {repo_path}")
        elif source_sha256(stored) != expected[name]:
            problems.append(f"{name}: the registry's code differs from {repo_path}")
    if problems:
        raise OnDemandSourceMismatch(
            "refusing the Feast registry: on-demand view code that Feast would execute is "
            "not the repo's: " + "; ".join(problems) + ". Run `churn apply` from the "
            "reviewed repo (and check who can write the registry)"
        )
    return len(views)
