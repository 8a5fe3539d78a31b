"""MkDocs hook: the configuration reference, generated from the settings classes.

Every pydantic-settings class (a subclass of ``BaseSettings``) defined in the project's
packages is rendered where a page holds the marker ``<!-- settings-reference -->``: one
table per class with each field's name, environment variable, type, default and
description. The classes are found by reading the packages' sources with ``ast`` (a class
whose base is ``BaseSettings`` or another class found so), then imported to read their
fields, so nothing is copied by hand: a new setting or a new settings class appears by
itself, and a module that no longer imports fails the build.
"""

from __future__ import annotations

import ast
import html
import importlib
import json
import re
import sys
import tomllib
import types
import typing
from enum import Enum
from pathlib import Path
from typing import Any

MARKER = "<!-- settings-reference -->"
PROJECT_ROOT = Path(__file__).resolve().parents[2]
# Lower layers first: the settings every stage shares, then the stages, then the top.
_LAYER_ORDER = ["core", "materialize", "training", "serving", "monitoring", "cli", "workflow"]


def on_page_markdown(markdown: str, page: Any, **kwargs: Any) -> str:
    """Replace the marker with the generated reference (MkDocs event)."""
    if MARKER not in markdown:
        return markdown
    return markdown.replace(MARKER, render_reference(PROJECT_ROOT))


def render_reference(root: Path) -> str:
    """Markdown for every settings class of the project under ``root``."""
    classes = find_settings_classes(root)
    if not classes:
        raise RuntimeError(f"no BaseSettings subclass found under {root}: the reference is empty")
    return "\n\n".join(_render_class(cls, root) for cls in classes)


def project_packages(root: Path) -> list[str]:
    """The top-level packages the project installs (``pyproject.toml``), lower layers first."""
    pyproject = tomllib.loads((root / "pyproject.toml").read_text())
    patterns = pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    names = list(dict.fromkeys(pattern.rstrip("*").rstrip(".") for pattern in patterns))
    rank = {name: index for index, name in enumerate(_LAYER_ORDER)}
    return sorted(names, key=lambda name: (rank.get(name, len(rank)), name))


def find_settings_classes(root: Path) -> list[type]:
    """Every ``BaseSettings`` subclass defined in the project's packages, in layer order."""
    from pydantic_settings import BaseSettings

    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    candidates = _candidate_classes(root)
    found: list[type] = []
    for module_name, class_names in candidates.items():
        module = importlib.import_module(module_name)
        for name in class_names:
            cls = getattr(module, name, None)
            if (
                isinstance(cls, type)
                and issubclass(cls, BaseSettings)
                and cls.__module__ == module_name
            ):
                found.append(cls)
    return found


def _candidate_classes(root: Path) -> dict[str, list[str]]:
    """Module name -> names of classes whose bases lead to ``BaseSettings`` (by name)."""
    trees: dict[str, ast.Module] = {}
    for package in project_packages(root):
        for path in sorted((root / package).rglob("*.py")):
            if "__pycache__" in path.parts:
                continue
            module = ".".join(path.relative_to(root).with_suffix("").parts)
            trees[module.removesuffix(".__init__")] = ast.parse(path.read_text(), str(path))
    known = {"BaseSettings"}
    while True:  # a subclass of a subclass, in any module: repeat until nothing new
        candidates: dict[str, list[str]] = {}
        for module, tree in trees.items():
            for node in ast.walk(tree):
                if isinstance(node, ast.ClassDef) and known & set(_base_names(node)):
                    candidates.setdefault(module, []).append(node.name)
        names = known | {name for names in candidates.values() for name in names}
        if names == known:
            return candidates
        known = names


def _base_names(node: ast.ClassDef) -> list[str]:
    names = []
    for base in node.bases:
        if isinstance(base, ast.Name):
            names.append(base.id)
        elif isinstance(base, ast.Attribute):
            names.append(base.attr)
    return names


def _render_class(cls: type, root: Path) -> str:
    config = cls.model_config  # type: ignore[attr-defined]
    prefix = str(config.get("env_prefix") or "")
    source = Path(sys.modules[cls.__module__].__file__ or "").resolve()
    title = f"`{prefix}*`" if prefix else "no common prefix"
    lines = [
        f"### {cls.__name__}: {title} {{#{cls.__name__.lower()}}}",
        "",
        _summary(cls.__doc__),
        "",
        f"Defined in `{_relative(source, root)}`.",
        "",
        "| setting | environment variable | type | default | description |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name, field in cls.model_fields.items():  # type: ignore[attr-defined]
        variables = ", ".join(f"`{variable}`" for variable in _variables(name, field, prefix))
        lines.append(
            f"| `{name}` | {variables} | `{_type_name(field.annotation)}`{_bounds(field)} | "
            f"{_default(field, root)} | {_cell(field.description or '') or '-'} |"
        )
    return "\n".join(lines)


def _summary(docstring: str | None) -> str:
    """The docstring's first paragraph, its reST literals as Markdown code."""
    if not docstring:
        return ""
    first = docstring.strip().split("\n\n")[0]
    return re.sub(r"``([^`]+)``", r"`\1`", " ".join(line.strip() for line in first.splitlines()))


def _variables(name: str, field: Any, prefix: str) -> list[str]:
    """The environment variables pydantic-settings reads for a field."""
    from pydantic import AliasChoices

    alias = field.validation_alias or field.alias
    if isinstance(alias, str):
        return [alias.upper()]
    if isinstance(alias, AliasChoices):
        return [choice.upper() for choice in alias.choices if isinstance(choice, str)]
    return [f"{prefix}{name}".upper()]


def _type_name(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Literal:
        return " | ".join(repr(arg) for arg in args)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type_name(arg) for arg in args)
    if annotation is type(None):
        return "None"
    if origin is not None:
        inner = ", ".join(_type_name(arg) for arg in args)
        return f"{getattr(origin, '__name__', str(origin))}[{inner}]"
    return getattr(annotation, "__name__", str(annotation))


def _bounds(field: Any) -> str:
    """The field's numeric bounds (``ge``, ``gt``, ``le``, ``lt``), as validated."""
    symbols = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<"}
    bounds = [
        f"{symbol} {getattr(item, name)}"
        for item in field.metadata
        for name, symbol in symbols.items()
        if getattr(item, name, None) is not None
    ]
    return html.escape(f" ({', '.join(bounds)})") if bounds else ""


def _default(field: Any, root: Path) -> str:
    from pydantic_core import PydanticUndefined

    if field.default_factory is not None:
        value = field.default_factory()
    elif field.default is PydanticUndefined:
        return "required"
    else:
        value = field.default
    if value is None:
        return "unset"
    return f"`{_format_value(value, root)}`"


def _format_value(value: Any, root: Path) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, Enum):
        return str(value.value)
    if isinstance(value, Path) or (isinstance(value, str) and value.startswith("/")):
        return _relative(Path(value), root, placeholder="<checkout>/")
    if isinstance(value, list | tuple | dict):
        return json.dumps(value)
    return str(value)


def _relative(path: Path, root: Path, placeholder: str = "") -> str:
    """A path under the checkout without the machine's part of it."""
    try:
        return placeholder + path.relative_to(root).as_posix()
    except ValueError:
        return path.as_posix()


def _cell(text: str) -> str:
    """One table cell: reST literals as code; outside code, pipes and angle brackets escaped."""
    text = re.sub(r"``([^`]+)``", r"`\1`", " ".join(text.split()))
    parts = re.split(r"(`[^`]*`)", text)
    return "".join(
        part if part.startswith("`") else html.escape(part, quote=False).replace("|", "\\|")
        for part in parts
    )
