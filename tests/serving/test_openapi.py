"""The OpenAPI document, built without the lifespan (no Redis, MLflow or Feast repo opened)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from serving.app import create_app
from serving.openapi import restore_integer_bounds
from serving.settings import ServingSettings

pytestmark = pytest.mark.unit


def _document(**settings: Any) -> dict[str, Any]:
    return create_app(ServingSettings(poll_interval_s=0, **settings)).openapi()


def test_the_document_is_built_without_the_lifespan_with_exact_int64_bounds() -> None:
    document = _document(batch_limit=12)
    schemas = document["components"]["schemas"]
    user_id = schemas["PredictRequest"]["properties"]["user_id"]
    batch = schemas["BatchPredictRequest"]["properties"]["user_ids"]

    assert (user_id["minimum"], user_id["maximum"]) == (-(2**63), 2**63 - 1)
    assert all(isinstance(user_id[key], int) for key in ("minimum", "maximum"))
    assert (batch["items"]["minimum"], batch["items"]["maximum"]) == (-(2**63), 2**63 - 1)
    assert (batch["minItems"], batch["maxItems"]) == (1, 12)


def test_every_error_a_prediction_route_sends_is_declared_with_its_model() -> None:
    paths = _document()["paths"]

    def declared(path: str, method: str) -> dict[str, str]:
        responses = paths[path][method]["responses"]
        return {
            status: answer["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]
            for status, answer in responses.items()
            if status != "200"
        }

    assert declared("/predict", "post") == {
        "404": "FeatureProblemResponse",
        "413": "PayloadTooLargeResponse",
        "422": "ValidationErrorResponse",
        "500": "InternalErrorResponse",
        "503": "UnavailableResponse",
    }
    assert declared("/predict/batch", "post") == {
        "413": "PayloadTooLargeResponse",
        "422": "ValidationErrorResponse",
        "500": "InternalErrorResponse",
        "503": "UnavailableResponse",
    }
    assert declared("/model", "get") == {"503": "UnavailableResponse"}
    for path in ("/predict", "/predict/batch", "/model"):
        unavailable = paths[path]["post" if path.startswith("/predict") else "get"]
        retry_after = unavailable["responses"]["503"]["headers"]["Retry-After"]
        assert retry_after["required"] is True
    examples = paths["/predict"]["post"]["responses"]["404"]["content"]["application/json"]
    assert {"unknown_user", "missing_features", "stale_features"} <= set(examples["examples"])


def test_a_rounded_bound_that_is_not_int64_is_refused_not_published() -> None:
    exact = {"type": "integer", "maximum": 9.223372036854776e18, "minimum": 1.0}
    restore_integer_bounds(exact)
    assert exact == {"type": "integer", "maximum": 2**63 - 1, "minimum": 1}

    with pytest.raises(ValueError, match=r"maximum 1e\+30"):
        restore_integer_bounds({"properties": {"n": {"type": "integer", "maximum": 1e30}}})
    number = {"type": "number", "maximum": 1e30}
    restore_integer_bounds(number)
    assert number == {"type": "number", "maximum": 1e30}


def _load_docs_hook() -> Any:
    path = Path(__file__).resolve().parents[2] / "docs" / "hooks" / "openapi_page.py"
    spec = importlib.util.spec_from_file_location("openapi_page", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_api_reference_page_shows_every_route_error_and_model(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The page documents the defaults, whatever the machine building the docs has set.
    monkeypatch.setenv("CHURN_SERVING_BATCH_LIMIT", "7")
    hook = _load_docs_hook()
    config = SimpleNamespace(config_file_path=str(Path(__file__).parents[2] / "mkdocs.yml"))
    document = hook.openapi_document(config)
    page = hook.render_reference(document)

    assert "1 to 100 items" in page and "7 items" not in page
    for path, methods in document["paths"].items():
        for method, operation in methods.items():
            section = page.split(f"#### `{method.upper()} {path}`\n", 1)[1].split("\n#### ", 1)[0]
            for status, response in operation["responses"].items():
                assert f"| {status} | " in section, (path, status)
                examples = response.get("content", {}).get("application/json", {})
                for kind in examples.get("examples", {}):
                    assert f"| {status} | `{kind}` |" in section, (path, kind)
    assert "/admin/reload" in page  # documented, though off without a token
    # Documented with authentication on: the prediction routes answer 401 and 403.
    assert {"401", "403"} <= set(document["paths"]["/predict"]["post"]["responses"])
    for name in document["components"]["schemas"]:
        assert f"\n### {name}\n" in page
    assert "-9223372036854775808 to 9223372036854775807" in page


def test_the_api_reference_page_needs_its_marker() -> None:
    from mkdocs.exceptions import PluginError

    hook = _load_docs_hook()
    page = SimpleNamespace(file=SimpleNamespace(src_uri=hook.PAGE))
    with pytest.raises(PluginError, match="openapi-reference"):
        hook.on_page_markdown("# API reference\n", page, None, None)
    assert (
        hook.on_page_markdown(
            "# Other\n", SimpleNamespace(file=SimpleNamespace(src_uri="x.md")), None, None
        )
        == "# Other\n"
    )
