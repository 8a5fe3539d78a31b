"""Property-based fuzzing of the OpenAPI schema (schemathesis CLI) against a running server."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx

from tests.utils.feast_repo import TestRepo
from tests.utils.serving import OnlineUsers, running_server, write_online_values

TOKEN = "fuzz-token-0123456789"
# A request that breaks a schema limit so badly that its body is over the size limit gets
# 413 before it is parsed: a rejection too.
CONFIG = """
[checks.negative_data_rejection]
expected-statuses = [
    "400", "401", "403", "404", "405", "406", "409", "413", "415", "422", "428", "429",
]
"""


def test_schemathesis_finds_no_server_error_nor_schema_violation(
    make_app, champion, tmp_path: Path, repo: TestRepo, users: OnlineUsers
) -> None:
    # The schema's examples (users 42 and 43) are poison rows: the ratio view divides by
    # zero for one, a value is text for the other. Neither may turn into a 5xx.
    write_online_values(repo, user_id=42, like=users.fresh[0], values={"feature_2": -1e-8})
    write_online_values(repo, user_id=43, like=users.fresh[0], values={"feature_1": "1.5"})
    (tmp_path / "schemathesis.toml").write_text(CONFIG)
    schemathesis = Path(sys.executable).with_name("schemathesis")
    with running_server(make_app(admin_token=TOKEN)) as url:
        poisoned = httpx.post(f"{url}/predict/batch", json={"user_ids": [42, 43]}).json()
        completed = subprocess.run(
            [
                str(schemathesis),
                "run",
                f"{url}/openapi.json",
                "--checks",
                "all",
                # A schema-valid user_id may be unknown: 404 is its documented answer.
                "--exclude-checks",
                "positive_data_acceptance",
                "--max-examples",
                "100",
                "--seed",
                "1",
                "--generation-database",
                ":memory:",
                "--header",
                f"Authorization: Bearer {TOKEN}",
                "--request-timeout",
                "10",
                "--no-color",
            ],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=600,
        )
    output = completed.stdout + completed.stderr
    assert [error["kind"] for error in poisoned["errors"]] == [
        "feature_transform_failed",
        "invalid_feature_value",
    ]
    assert completed.returncode == 0, output
    assert "No issues found" in output or "passed" in output, output
