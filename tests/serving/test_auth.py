"""Bearer-token authentication of the prediction routes, with real tokens and a real issuer.

Tokens are RS256 JWTs signed with test keys; the issuer's keys are served over HTTP from
127.0.0.1 (tests/utils/jwks.py), and the service runs in uvicorn on loopback.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from fastapi import FastAPI

from serving.settings import AuthSettings
from tests.utils.jwks import (
    AUDIENCE,
    ISSUER,
    JwksServer,
    SigningKey,
    forge_hs256_token,
    make_signing_key,
    running_jwks,
    sign_token,
)
from tests.utils.serving import OnlineUsers, running_server


@pytest.fixture(scope="module")
def signing_keys() -> tuple[SigningKey, SigningKey]:
    """The issuer's key and the key it rotates to (two RSA keys: generated once)."""
    return make_signing_key("key-1"), make_signing_key("key-2")


@pytest.fixture
def jwks(signing_keys: tuple[SigningKey, SigningKey]) -> Iterator[JwksServer]:
    """The issuer's JWKS endpoint, publishing key-1."""
    with running_jwks([signing_keys[0]]) as server:
        yield server


@pytest.fixture
def auth_app(
    make_app: Callable[..., FastAPI], champion: str, jwks: JwksServer
) -> Callable[..., FastAPI]:
    """An app with authentication on, trusting ``jwks``; auth settings overridable."""

    def build(**overrides: Any) -> FastAPI:
        settings = AuthSettings(
            enabled=True, issuer=ISSUER, audience=AUDIENCE, jwks_url=jwks.url, **overrides
        )
        return make_app(auth=settings)

    return build


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _rejections(url: str) -> dict[str, float]:
    """churn_auth_rejections_total by reason, from /metrics."""
    text = httpx.get(f"{url}/metrics").text
    counts = {}
    for line in text.splitlines():
        if line.startswith("churn_auth_rejections_total{"):
            reason = line.split('reason="', 1)[1].split('"', 1)[0]
            counts[reason] = float(line.rsplit(" ", 1)[1])
    return counts


def test_a_valid_token_passes_and_every_bad_one_gets_401_without_internals(
    auth_app: Callable[..., FastAPI],
    signing_keys: tuple[SigningKey, SigningKey],
    jwks: JwksServer,
    users: OnlineUsers,
) -> None:
    key, other = signing_keys
    user = users.fresh[0]
    public_pem = key.private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    bad_tokens = {
        "expired": sign_token(key, expires_in_s=-120),  # beyond the 30 s leeway
        "wrong_audience": sign_token(key, audience="another-api"),
        "wrong_issuer": sign_token(key, issuer="https://other-issuer.test"),
        "bad_signature": sign_token(other, kid=key.kid),  # names key-1, signed by key-2
        "unknown_key": sign_token(other),  # key-2 is not published
        "malformed": "not-a-jwt",
        # Algorithm confusion: HS256 with the published public key as the shared secret.
        "invalid": forge_hs256_token(
            {"iss": ISSUER, "aud": AUDIENCE, "exp": int(time.time()) + 300},
            public_pem,
            kid=key.kid,
        ),
        # Signed by key-1 for this service, but without an expiry.
        "missing_claim": jwt.encode(
            {"iss": ISSUER, "aud": AUDIENCE, "sub": "c"},
            key.private_key,
            algorithm="RS256",
            headers={"kid": key.kid},
        ),
    }
    with running_server(auth_app()) as url:
        good = _bearer(sign_token(key))
        answers = {
            "predict": httpx.post(f"{url}/predict", json={"user_id": user}, headers=good),
            "batch": httpx.post(f"{url}/predict/batch", json={"user_ids": [user]}, headers=good),
            "model": httpx.get(f"{url}/model", headers=good),
            "again": httpx.post(f"{url}/predict", json={"user_id": user}, headers=good),
        }
        probes = [httpx.get(f"{url}/{path}").status_code for path in ("health", "ready")]
        refused = {
            "missing": httpx.post(f"{url}/predict", json={"user_id": user}),
            "not bearer": httpx.post(
                f"{url}/predict", json={"user_id": user}, headers={"Authorization": "Basic eDp5"}
            ),
            "batch missing": httpx.post(f"{url}/predict/batch", json={"user_ids": [user]}),
            "model missing": httpx.get(f"{url}/model"),
            **{
                reason: httpx.post(f"{url}/predict", json={"user_id": user}, headers=_bearer(t))
                for reason, t in bad_tokens.items()
            },
        }
        rejections = _rejections(url)

    assert {name: answer.status_code for name, answer in answers.items()} == dict.fromkeys(
        answers, 200
    )
    assert answers["predict"].json()["user_id"] == user
    assert probes == [200, 200]
    assert {name: answer.status_code for name, answer in refused.items()} == dict.fromkeys(
        refused, 401
    )
    for name, answer in refused.items():
        assert answer.headers["WWW-Authenticate"].startswith("Bearer"), name
        body = answer.json()
        assert set(body) == {"kind", "detail"} and body["kind"] == "unauthorized", name
        for internal in (jwks.url, "127.0.0.1", "Error", "Traceback", "key-1", ISSUER):
            assert internal not in body["detail"], (name, body)
    assert refused["missing"].headers["WWW-Authenticate"] == "Bearer"
    assert refused["expired"].headers["WWW-Authenticate"] == 'Bearer error="invalid_token"'
    assert refused["expired"].json()["detail"] == "the bearer token has expired"
    # Each refusal counted under its own reason (the operator's view of why).
    assert rejections == {
        "missing": 4,
        "expired": 1,
        "wrong_audience": 1,
        "wrong_issuer": 1,
        "bad_signature": 1,
        "unknown_key": 1,
        "malformed": 1,
        "invalid": 1,
        "missing_claim": 1,
    }


def test_a_token_without_the_required_scope_or_role_gets_403(
    auth_app: Callable[..., FastAPI],
    signing_keys: tuple[SigningKey, SigningKey],
    users: OnlineUsers,
) -> None:
    key = signing_keys[0]
    body = {"user_id": users.fresh[0]}
    with running_server(auth_app(required_scope="churn:predict", required_role="scorer")) as url:

        def status(token: str) -> int:
            return httpx.post(f"{url}/predict", json=body, headers=_bearer(token)).status_code

        statuses = {
            "scope and role": status(
                sign_token(key, scope="openid churn:predict", roles=["scorer"])
            ),
            "scp list": status(
                sign_token(key, claims={"scp": ["churn:predict"]}, roles=["scorer"])
            ),
            "no scope": status(sign_token(key, roles=["scorer"])),
            "other scope": status(sign_token(key, scope="churn:read", roles=["scorer"])),
            "no role": status(sign_token(key, scope="churn:predict")),
        }
        forbidden = httpx.post(
            f"{url}/predict", json=body, headers=_bearer(sign_token(key, roles=["scorer"]))
        )

    assert statuses == {
        "scope and role": 200,
        "scp list": 200,
        "no scope": 403,
        "other scope": 403,
        "no role": 403,
    }
    assert forbidden.json() == {
        "kind": "forbidden",
        "detail": 'the bearer token lacks the scope "churn:predict"',
    }
    assert forbidden.headers["WWW-Authenticate"] == (
        'Bearer error="insufficient_scope", scope="churn:predict"'
    )


def test_a_rotated_key_is_picked_up_and_a_withdrawn_one_stops_working(
    auth_app: Callable[..., FastAPI],
    signing_keys: tuple[SigningKey, SigningKey],
    jwks: JwksServer,
    users: OnlineUsers,
) -> None:
    old, new = signing_keys
    body = {"user_id": users.fresh[0]}
    old_token, new_token = sign_token(old), sign_token(new)
    with running_server(auth_app(jwks_min_refresh_interval_s=2.0)) as url:

        def status(token: str) -> int:
            return httpx.post(f"{url}/predict", json=body, headers=_bearer(token)).status_code

        fetched_at_start = jwks.fetches
        before = [status(old_token), status(new_token)]  # key-2 not published yet
        jwks.set_keys([old, new])  # the issuer adds key-2...
        # ...and a token signed by it right away: unknown key id, but within the minimum
        # interval since the last fetch (at start): refused without fetching.
        too_soon = [status(new_token) for _ in range(10)]
        fetches_too_soon = jwks.fetches
        time.sleep(2.2)
        after = [status(new_token) for _ in range(10)]
        fetches_after = jwks.fetches
        jwks.set_keys([new])  # the issuer withdraws key-1
        time.sleep(2.2)
        status(sign_token(new, kid="key-3"))  # an unknown id: the set is fetched again
        withdrawn = status(old_token)

    assert fetched_at_start == 1
    assert before == [200, 401]
    assert too_soon == [401] * 10 and fetches_too_soon == 1
    assert after == [200] * 10 and fetches_after == 2  # one fetch picked the new key up
    assert withdrawn == 401  # remembered as valid before, forgotten with the old key set


def test_while_the_issuer_keys_are_unreachable_tokens_get_503_and_ready_is_false(
    auth_app: Callable[..., FastAPI],
    signing_keys: tuple[SigningKey, SigningKey],
    jwks: JwksServer,
    users: OnlineUsers,
) -> None:
    token = sign_token(signing_keys[0])
    body = {"user_id": users.fresh[0]}
    jwks.set_available(False)
    with running_server(auth_app(jwks_min_refresh_interval_s=0.5)) as url:
        ready_down = httpx.get(f"{url}/ready")
        down = httpx.post(f"{url}/predict", json=body, headers=_bearer(token))
        jwks.set_available(True)
        time.sleep(0.6)
        up = httpx.post(f"{url}/predict", json=body, headers=_bearer(token))
        ready_up = httpx.get(f"{url}/ready")

    assert ready_down.status_code == 503
    assert "signing keys" in ready_down.json()["detail"]
    assert down.status_code == 503 and down.json()["kind"] == "auth_unavailable"
    assert down.headers["Retry-After"] == "5"
    assert up.status_code == 200 and ready_up.status_code == 200


def test_without_authentication_the_routes_answer_without_a_token(
    make_app: Callable[..., FastAPI], champion: str, users: OnlineUsers
) -> None:
    app = make_app(auth=AuthSettings())
    with running_server(app) as url:
        answer = httpx.post(f"{url}/predict", json={"user_id": users.fresh[0]})
    schema = app.openapi()

    assert answer.status_code == 200
    assert "401" not in schema["paths"]["/predict"]["post"]["responses"]
    assert "security" not in schema["paths"]["/predict"]["post"]
