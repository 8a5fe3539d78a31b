"""What bearer-token authentication costs ``churn serve``: the same server without and with it.

Run by ``bench.serve`` (``--auth-rounds``, 3 by default) on its workspace: for each worker
count, ``churn serve`` on the default family's champion is started without authentication
and with it (``CHURN_SERVING_AUTH_*``: RS256 tokens, the issuer's keys served over HTTP on
loopback), alternating which goes first each round, and driven at 8 connections by the same
load generator, every request carrying ``Authorization: Bearer <token>`` when it is on (one
token, as a client reuses its token until it expires). It prints requests/s and p99 of each
run, their medians and spread, and the goal: with authentication, at least 90% of the
requests/s without it. In process it also times one token's check, first seen (signature,
claims) and remembered.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

GOAL_SHARE = 0.9
CONNECTIONS = 8


@dataclass
class AuthComparison:
    """Requests/s and p99 of one worker count, without and with authentication, by round."""

    workers: int
    rps: dict[bool, list[float]] = field(default_factory=lambda: {False: [], True: []})
    p99_ms: dict[bool, list[float]] = field(default_factory=lambda: {False: [], True: []})

    def share(self) -> float:
        """Median requests/s with authentication over the median without."""
        return statistics.median(self.rps[True]) / statistics.median(self.rps[False])


def measure_auth_overhead(
    work: Any,
    champion: Any,
    *,
    workers: int,
    rounds: int,
    seconds: int,
    users: list[int],
    drive: Callable[..., Any],
) -> AuthComparison:
    """Alternate ``churn serve`` without and with authentication, ``rounds`` times each."""
    from bench.serve import (
        _free_port,
        _stop,
        request_bodies,
        scorable_users,
        start_churn,
        wait_until_ready,
    )
    from tests.utils.jwks import AUDIENCE, ISSUER, make_signing_key, running_jwks, sign_token

    key = make_signing_key("bench-key")
    token = sign_token(key, expires_in_s=3600)
    path, template = request_bodies(int(time.time()))["churn"]
    comparison = AuthComparison(workers)
    with running_jwks([key]) as jwks:
        settings = {
            "CHURN_SERVING_AUTH_ENABLED": "true",
            "CHURN_SERVING_AUTH_ISSUER": ISSUER,
            "CHURN_SERVING_AUTH_AUDIENCE": AUDIENCE,
            "CHURN_SERVING_AUTH_JWKS_URL": jwks.url,
        }
        for round_ in range(rounds):
            for auth in (False, True) if round_ % 2 == 0 else (True, False):
                port = _free_port()
                process = start_churn(
                    work, port, workers, champion, settings=settings if auth else None
                )
                url = f"http://127.0.0.1:{port}"
                options: dict[str, Any] = {
                    "connections": CONNECTIONS,
                    "users": users,
                    "folder": work.folder,
                    "headers": {"Authorization": f"Bearer {token}"} if auth else None,
                }
                if not users and auth:
                    raise RuntimeError("the first run of a round is without authentication")
                try:
                    wait_until_ready(url + "/ready", process, timeout=600)  # busy machines
                    if not users:  # found without a token (--auth-only), then kept
                        users += scorable_users(url)
                    drive(url, path, template, seconds=2, **options)
                    result = drive(url, path, template, seconds=seconds, **options)
                finally:
                    _stop(process)
                if result.errors:
                    raise RuntimeError(f"{result.errors} errors with authentication {auth}")
                comparison.rps[auth].append(result.rps)
                comparison.p99_ms[auth].append(result.p99_ms)
                print(
                    f"  auth round {round_ + 1}, {workers} worker(s), authentication "
                    f"{'on ' if auth else 'off'}: {result.rps:,.0f} req/s, p99 "
                    f"{result.p99_ms:.2f} ms"
                )
    return comparison


def format_comparison(comparison: AuthComparison) -> list[str]:
    """The table rows of one worker count: median and spread without and with."""
    lines = []
    for auth in (False, True):
        rps, p99 = comparison.rps[auth], comparison.p99_ms[auth]
        lines.append(
            f"  {comparison.workers} worker(s), authentication {'on ' if auth else 'off'}: "
            f"median {statistics.median(rps):,.0f} req/s ({min(rps):,.0f}-{max(rps):,.0f}), "
            f"p99 median {statistics.median(p99):.2f} ms ({min(p99):.2f}-{max(p99):.2f})"
        )
    return lines


def verdict(comparison: AuthComparison) -> tuple[str, bool]:
    """The goal: with authentication at least 90% of the requests/s without."""
    share = comparison.share()
    return (
        f"{comparison.workers} worker(s), {CONNECTIONS} connections: with authentication "
        f"{share:.1%} of the requests/s without (median of {len(comparison.rps[True])}) "
        f">= {GOAL_SHARE:.0%}",
        share >= GOAL_SHARE,
    )


def time_token_checks(tokens: int = 200, repeats: int = 20_000) -> tuple[float, float]:
    """Microseconds to check a token first seen, and one already verified (in process)."""
    from jwt import PyJWKSet

    from serving.auth import JwksKeys, TokenVerifier
    from serving.settings import AuthSettings
    from tests.utils.jwks import AUDIENCE, ISSUER, make_signing_key, sign_token

    key = make_signing_key("bench-key")
    signed = [sign_token(key, subject=f"client-{i}") for i in range(tokens)]
    settings = AuthSettings(
        enabled=True, issuer=ISSUER, audience=AUDIENCE, jwks_url="http://unused.invalid"
    )
    key_set = PyJWKSet.from_dict({"keys": [key.public_jwk()]})
    verifier = TokenVerifier(settings, JwksKeys(settings, fetch=lambda: key_set))

    async def measure() -> tuple[float, float]:
        await verifier.keys.refresh()
        started = time.perf_counter()
        for token in signed:
            await verifier.authenticate(token)
        first = (time.perf_counter() - started) / tokens
        started = time.perf_counter()
        for _ in range(repeats):
            await verifier.authenticate(signed[0])
        again = (time.perf_counter() - started) / repeats
        return first * 1e6, again * 1e6

    return asyncio.run(measure())
