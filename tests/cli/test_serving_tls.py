"""`churn serve` over HTTPS, with bearer-token authentication on, as a deployment runs it.

A real `churn serve` process with a self-signed certificate for 127.0.0.1; clients verify
the certificate; tokens are RS256 JWTs from a JWKS endpoint on loopback.
"""

from __future__ import annotations

import ssl
from pathlib import Path

import httpx
import pytest

from tests.utils.feast_repo import TestRepo
from tests.utils.jwks import AUDIENCE, ISSUER, make_signing_key, running_jwks, sign_token
from tests.utils.serving import (
    OnlineUsers,
    churn_serve_environment,
    churn_serve_process,
    free_port,
)
from tests.utils.tls import write_self_signed_certificate


def test_churn_serve_answers_https_to_a_client_that_verifies_it_and_checks_tokens(
    champion: str,
    tracking_uri: str,
    repo: TestRepo,
    users: OnlineUsers,
    tmp_path: Path,
) -> None:
    cert_file, key_file = write_self_signed_certificate(tmp_path / "tls")
    trusting = ssl.create_default_context(cafile=str(cert_file))
    key = make_signing_key("key-1")
    port = free_port()
    with running_jwks([key]) as jwks:
        environment = churn_serve_environment(
            repo,
            tracking_uri,
            port=port,
            log_dir=tmp_path / "served",
            workers="2",  # several workers: uvicorn passes the certificate to each
            tls_cert_file=str(cert_file),
            tls_key_file=str(key_file),
            auth_enabled="true",
            auth_issuer=ISSUER,
            auth_audience=AUDIENCE,
            auth_jwks_url=jwks.url,
        )
        with churn_serve_process(environment, verify=trusting) as (url, process):
            body = {"user_id": users.fresh[0]}
            token = {"Authorization": f"Bearer {sign_token(key)}"}
            answered = httpx.post(f"{url}/predict", json=body, headers=token, verify=trusting)
            refused = httpx.post(f"{url}/predict", json=body, verify=trusting)
            with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
                httpx.get(f"{url}/health")  # the system's CAs do not know this certificate
            with pytest.raises(httpx.RemoteProtocolError):
                httpx.get(f"http://127.0.0.1:{port}/health")  # no plain HTTP on the port

    assert url.startswith("https://")
    assert answered.status_code == 200 and answered.json()["model_version"] == champion
    assert refused.status_code == 401
    assert "Traceback" not in process.output  # type: ignore[attr-defined]
