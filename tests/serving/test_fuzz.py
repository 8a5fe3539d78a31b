"""The OpenAPI contract, checked as a client would: schemathesis with every check, no allowances.

The run uses schemathesis's own defaults (no excluded checks, no extra expected statuses):
whatever the published schema admits must be accepted, whatever it refuses must get a
4xx it accepts, and every answer must match a declared response, its model and headers.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import httpx

from serving.settings import AuthSettings
from tests.utils.feast_repo import TestRepo
from tests.utils.jwks import AUDIENCE, ISSUER, make_signing_key, running_jwks, sign_token
from tests.utils.serving import OnlineUsers, running_server, write_online_values

OPERATIONS = ["/predict", "/predict/batch", "/model", "/health", "/ready"]


def run_schemathesis(url: str, folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``schemathesis run --checks all`` against ``url`` (seeded, bounded), from ``folder``."""
    schemathesis = Path(sys.executable).with_name("schemathesis")
    return subprocess.run(
        [
            str(schemathesis),
            "run",
            f"{url}/openapi.json",
            "--checks",
            "all",
            "--max-examples",
            "50",
            "--seed",
            "1",
            "--generation-database",
            "none",
            "--request-timeout",
            "10",
            "--no-color",
            *[option for path in OPERATIONS for option in ("--include-path", path)],
            *args,
        ],
        cwd=folder,  # no schemathesis.toml there: the defaults, as a new user runs it
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_schemathesis_with_every_check_finds_nothing(
    make_app, champion, tmp_path: Path, repo: TestRepo, users: OnlineUsers
) -> None:
    # The schema's examples (users 42 and 43) are poison rows: the ratio view divides by
    # zero for one, a value is text for the other. Neither may turn into a 5xx.
    write_online_values(repo, user_id=42, like=users.fresh[0], values={"feature_2": -1e-8})
    write_online_values(repo, user_id=43, like=users.fresh[0], values={"feature_1": "1.5"})
    with running_server(make_app()) as url:
        poisoned = httpx.post(f"{url}/predict/batch", json={"user_ids": [42, 43]}).json()
        completed = run_schemathesis(url, tmp_path)
    output = completed.stdout + completed.stderr

    assert [error["kind"] for error in poisoned["errors"]] == [
        "feature_transform_failed",
        "invalid_feature_value",
    ]
    assert completed.returncode == 0, output
    assert f"Tested: {len(OPERATIONS)}" in output, output
    assert re.search(r"(\d+) generated, \1 passed", output), output


def test_schemathesis_with_every_check_finds_nothing_with_authentication_on(
    make_app, champion, tmp_path: Path
) -> None:
    # The token is sent on every request; schemathesis's ignored_auth check also sends
    # requests without it (and with a broken one) and expects the declared 401.
    key = make_signing_key("key-1")
    with running_jwks([key]) as jwks:
        auth = AuthSettings(enabled=True, issuer=ISSUER, audience=AUDIENCE, jwks_url=jwks.url)
        with running_server(make_app(auth=auth)) as url:
            token = sign_token(key, expires_in_s=3600)
            completed = run_schemathesis(
                url, tmp_path, "--header", f"Authorization: Bearer {token}"
            )
            metrics = httpx.get(f"{url}/metrics").text
    output = completed.stdout + completed.stderr

    assert completed.returncode == 0, output
    # ignored_auth did run: requests without a token were refused as declared.
    assert re.search(r'churn_auth_rejections_total\{reason="missing"\} [1-9]', metrics), metrics
    assert f"Tested: {len(OPERATIONS)}" in output, output
    assert re.search(r"(\d+) generated, \1 passed", output), output
