"""MkDocs hook: the API reference page, written from the service's own OpenAPI document.

In ``mkdocs.yml``::

    hooks:
      - docs/hooks/openapi_page.py

At build time the line ``<!-- openapi-reference -->`` of ``api-reference.md`` becomes every
route (its request body, its responses and errors with their models and examples, its
headers) and every model, rendered from ``create_app(...).openapi()``. The document is built
without the app's lifespan: no Redis, MLflow or Feast repo is opened. The app is built with
every setting at its default (whatever ``CHURN_SERVING_*`` the builder has set) and an admin
token and authentication on, so the admin routes and the 401/403 answers are documented
too. Without a ``api-reference.md`` in the docs
folder the page is generated whole.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.exceptions import PluginError
from mkdocs.structure.files import File, Files
from mkdocs.structure.pages import Page

PAGE = "api-reference.md"
MARKER = "<!-- openapi-reference -->"
_STUB = f"# API reference\n\n{MARKER}\n"
_TAG_TITLES = {"predictions": "Predictions", "operations": "Operations", "admin": "Admin"}
# One-sided bounds; a schema with both sides reads "A to B" (_RANGES).
_CONSTRAINTS = {
    "minimum": "≥ {}",
    "maximum": "≤ {}",
    "exclusiveMinimum": "> {}",
    "exclusiveMaximum": "< {}",
    "minItems": "at least {} items",
    "maxItems": "at most {} items",
    "minLength": "at least {} characters",
    "maxLength": "at most {} characters",
}
_RANGES = {("minimum", "maximum"): "{} to {}", ("minItems", "maxItems"): "{} to {} items"}


def on_files(files: Files, config: MkDocsConfig) -> Files:
    """Add the page when the docs folder has none (the marker is then its whole body).

    The hooks' own sources (``docs/hooks/``) are left out of the site.
    """
    for file in [file for file in files if file.src_uri.startswith("hooks/")]:
        files.remove(file)
    if files.get_file_from_path(PAGE) is None:
        files.append(File.generated(config, PAGE, content=_STUB))
    return files


def on_page_markdown(markdown: str, page: Page, config: MkDocsConfig, files: Files) -> str:
    """Replace the marker of the API reference page with the rendered document."""
    if page.file.src_uri != PAGE:
        return markdown
    if MARKER not in markdown:
        raise PluginError(f"{PAGE} has no line {MARKER!r} for the generated reference")
    return markdown.replace(MARKER, render_reference(openapi_document(config)))


def openapi_document(config: MkDocsConfig) -> dict[str, Any]:
    """The OpenAPI document of the checkout being documented, every setting at its default."""
    root = str(Path(config.config_file_path).resolve().parent)
    if root not in sys.path:
        sys.path.insert(0, root)  # this checkout's code, whatever else is installed
    from serving.app import create_app
    from serving.settings import MIN_ADMIN_TOKEN_CHARS, AuthSettings, ServingSettings

    # Explicit values win over CHURN_SERVING_* variables: the page shows the defaults.
    defaults = {
        name: field.get_default(call_default_factory=True)
        for name, field in ServingSettings.model_fields.items()
        if not field.is_required()
    }
    settings = ServingSettings(**{**defaults, "admin_token": "d" * MIN_ADMIN_TOKEN_CHARS})
    # Authentication on, so its 401 and 403 are documented (no key is fetched to build it).
    auth = AuthSettings(
        enabled=True,
        issuer="https://issuer.example",
        audience="churn-api",
        jwks_url="https://issuer.example/.well-known/jwks.json",
    )
    return create_app(settings, auth=auth).openapi()


def render_reference(document: dict[str, Any]) -> str:
    """The reference in Markdown: the routes by tag, then the models."""
    info = document["info"]
    lines = [
        f"Generated from the OpenAPI document of *{info['title']}* {info['version']} when "
        "this site is built; a running service serves the same at `/openapi.json` "
        "(interactive at `/docs`). Values shown are the defaults (a batch limit of "
        f"{_batch_limit(document)} user_ids), with the admin routes and bearer-token "
        "authentication on: without it (`CHURN_SERVING_AUTH_ENABLED` unset) the routes "
        "take no token and never answer 401 or 403.",
        "",
        "## Routes",
        "",
    ]
    for tag, operations in _operations_by_tag(document).items():
        lines += [f"### {_TAG_TITLES.get(tag, tag.title())}", ""]
        for method, path, operation in operations:
            lines += _render_operation(method, path, operation)
    lines += ["## Models", ""]
    for name, schema in document["components"]["schemas"].items():
        lines += _render_model(name, schema)
    return "\n".join(lines)


def _batch_limit(document: dict[str, Any]) -> int:
    batch = document["components"]["schemas"]["BatchPredictRequest"]
    return int(batch["properties"]["user_ids"]["maxItems"])


def _operations_by_tag(
    document: dict[str, Any],
) -> dict[str, list[tuple[str, str, dict[str, Any]]]]:
    grouped: dict[str, list[tuple[str, str, dict[str, Any]]]] = {}
    for path, methods in document["paths"].items():
        for method, operation in methods.items():
            tag = (operation.get("tags") or ["other"])[0]
            grouped.setdefault(tag, []).append((method.upper(), path, operation))
    return grouped


def _render_operation(method: str, path: str, operation: dict[str, Any]) -> list[str]:
    lines = [f"#### `{method} {path}`", "", operation.get("description", ""), ""]
    if operation.get("security"):
        lines += [
            "Needs `Authorization: Bearer <token>` (the admin token, "
            "`CHURN_SERVING_ADMIN_TOKEN`); absent from a service without one.",
            "",
        ]
    body = operation.get("requestBody")
    if body:
        [(media_type, content)] = body["content"].items()
        lines += [f"**Request body** (`{media_type}`): {_type_of(content['schema'])}", ""]
    lines += [
        "| Status | When | Body | Headers |",
        "| --- | --- | --- | --- |",
    ]
    errors: list[str] = []
    for status, response in operation["responses"].items():
        content = response.get("content", {})
        media: dict[str, Any] = content.get("application/json") or next(iter(content.values()), {})
        model = _type_of(media["schema"]) if "schema" in media else ""
        headers = ", ".join(
            f"`{name}`" + (" (always)" if header.get("required") else "")
            for name, header in response.get("headers", {}).items()
        )
        lines.append(f"| {status} | {_cell(response['description'])} | {model} | {headers} |")
        for example in media.get("examples", {}).values():
            value = example["value"]
            errors.append(f"| {status} | `{value['kind']}` | {_cell(value['detail'])} |")
    lines.append("")
    if errors:
        lines += [
            'Its errors, by `kind` (the body is `{"kind": ..., "detail": ...}`):',
            "",
            "| Status | `kind` | Example `detail` |",
            "| --- | --- | --- |",
            *errors,
            "",
        ]
    return lines


def _render_model(name: str, schema: dict[str, Any]) -> list[str]:
    lines = [f"### {name}", "", schema.get("description", ""), ""]
    if schema.get("type") != "object" or "properties" not in schema:
        return [*lines, f"A {_type_of(schema)}.", ""]
    required = set(schema.get("required", ()))
    lines += ["| Field | Type | Required | Description |", "| --- | --- | --- | --- |"]
    for field, spec in schema["properties"].items():
        limits = _constraints(spec)
        if "default" in spec:
            limits.append(f"default `{json.dumps(spec['default'])}`")
        notes = " ".join(
            [spec.get("description", ""), f"({', '.join(limits)})" if limits else ""]
        ).strip()
        lines.append(
            f"| `{field}` | {_type_of(spec)} | {'yes' if field in required else 'no'} | "
            f"{_cell(notes)} |"
        )
    if schema.get("additionalProperties") is False:
        lines += ["", "No other field is accepted."]
    for example in schema.get("examples", []):
        lines += ["", "Example:", "", "```json", json.dumps(example), "```"]
    return [*lines, ""]


def _type_of(schema: dict[str, Any]) -> str:
    """A schema's type in a few words, models linked to their section."""
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[1]
        return f"[{name}](#{name.lower()})"
    if "anyOf" in schema:
        return " or ".join(_type_of(option) for option in schema["anyOf"])
    if "enum" in schema:
        return " \\| ".join(f"`{json.dumps(value)}`" for value in schema["enum"])
    if "const" in schema:
        return f"`{json.dumps(schema['const'])}`"
    kind = schema.get("type", "any")
    if kind == "array":
        item = _type_of(schema.get("items", {}))
        item_limits = _constraints(schema.get("items", {}))
        if item_limits:
            item += f" ({', '.join(item_limits)})"
        return f"list of {item}"
    if "format" in schema:
        return f"{kind} ({schema['format']})"
    return str(kind)


def _constraints(schema: dict[str, Any]) -> list[str]:
    notes: list[str] = []
    done: set[str] = set()
    for (low, high), template in _RANGES.items():
        if low in schema and high in schema:
            notes.append(template.format(schema[low], schema[high]))
            done |= {low, high}
    notes += [
        template.format(schema[key])
        for key, template in _CONSTRAINTS.items()
        if key in schema and key not in done
    ]
    return notes


def _cell(text: str) -> str:
    """Text safe inside a Markdown table cell."""
    return text.replace("|", "\\|").replace("\n", " ")
