"""Fixtures of the command tests: each stage's own, shared with its package's tests."""

from __future__ import annotations

from tests.serving.conftest import (  # noqa: F401  (fixtures of `churn serve` and `churn score`)
    champion,
    online_repo,
    registry_templates,
    repo,
    scoring_registry,
    tracking_uri,
    users,
)
