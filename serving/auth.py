"""Who may call: bearer JWTs checked against one issuer's published keys (JWKS).

PyJWT verifies each token (signature with the key named by its ``kid``, the key's own
algorithm only, ``exp``/``nbf`` with leeway, ``iss``, ``aud``) and its ``PyJWKClient``
fetches and parses the key set. PyJWKClient caches the set and refreshes it on an unknown
key id, but synchronously under a lock: called on the event loop, every fetch (each cache
expiry, each unknown ``kid`` after its cooldown) would stop every request of the worker for
up to the fetch timeout. So it only ever fetches, in a thread, and this module decides when:

- the keys in use are a plain dict read on the loop, replaced whole after each fetch;
- a background task fetches them every ``jwks_refresh_s``;
- a token whose ``kid`` is unknown triggers one fetch, shared by every request waiting for
  it, and at most one per ``jwks_min_refresh_interval_s`` (random key ids cannot make the
  service hammer the issuer); a failed fetch keeps the keys it had.

A token verified once is remembered (bounded, until it expires, forgotten whenever the key
set is fetched again) so a client reusing its token costs a dict lookup, not an RSA check.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jwt
from jwt import PyJWK, PyJWKClient, PyJWKSet

from serving.errors import ServingError
from serving.settings import AuthSettings

logger = logging.getLogger(__name__)

# Verified tokens remembered at most (a client usually reuses one token until it expires).
_MAX_REMEMBERED_TOKENS = 10_000
# Seconds a caller is told to wait while no key set could be fetched yet.
_NO_KEYS_RETRY_AFTER_S = 5
# Why a token was refused: the label values of churn_auth_rejections_total.
REJECTION_REASONS = (
    "missing",
    "malformed",
    "expired",
    "not_yet_valid",
    "wrong_issuer",
    "wrong_audience",
    "bad_signature",
    "unknown_key",
    "missing_claim",
    "invalid",
    "insufficient_scope",
    "no_keys",
)


@dataclass(frozen=True)
class Caller:
    """Who a verified token speaks for.

    Attributes:
        subject: The token's ``sub`` claim ("" when absent).
        scopes: Its scopes (``scope`` as a space-separated string, or ``scp``).
        roles: Its roles (``roles`` claim).
        expires_at: Its ``exp`` (Unix seconds).
    """

    subject: str
    scopes: frozenset[str]
    roles: frozenset[str]
    expires_at: float


FetchKeys = Callable[[], PyJWKSet]


class JwksKeys:
    """The issuer's signing keys by key id, fetched off the event loop.

    Args:
        settings: The JWKS URL, refresh interval, rate limit and timeout.
        fetch: Fetches and parses the key set (blocking; run in a thread). Default:
            PyJWKClient on ``settings.jwks_url``.
        on_fetched: Called with "ok" or "failed" after each fetch.
    """

    def __init__(
        self,
        settings: AuthSettings,
        *,
        fetch: FetchKeys | None = None,
        on_fetched: Callable[[str], None] = lambda outcome: None,
    ) -> None:
        self._settings = settings
        if fetch is None:
            assert settings.jwks_url is not None
            client = PyJWKClient(
                settings.jwks_url,
                cache_jwk_set=False,  # the cache and its refresh policy are this class's
                timeout=settings.jwks_timeout_s,
                headers={"User-Agent": "churn-serve"},
            )
            fetch = lambda: client.get_jwk_set(refresh=True)  # noqa: E731
        self._fetch = fetch
        self._on_fetched = on_fetched
        self._accepted = frozenset(settings.algorithms)
        self.keys: dict[str, PyJWK] = {}
        self.loaded = False
        self.generation = 0  # bumped at each successful fetch
        self._last_attempt = float("-inf")
        self._inflight: asyncio.Future[None] | None = None
        self._refresher: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Fetch the keys once, then keep them fresh in the background."""
        await self.refresh()
        if not self.loaded:
            logger.error(
                "no signing keys from %s yet: tokens get 503 until a fetch succeeds",
                self._settings.jwks_url,
            )
        self._refresher = asyncio.create_task(self._refresh_periodically())

    async def stop(self) -> None:
        """Stop the background refresh."""
        if self._refresher is not None:
            self._refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refresher

    async def key_for(self, kid: str) -> PyJWK | None:
        """The key with this id; an unknown id fetches the set again (rate-limited)."""
        key = self.keys.get(kid)
        if key is not None:
            return key
        elapsed = time.monotonic() - self._last_attempt
        if elapsed >= self._settings.jwks_min_refresh_interval_s or self._inflight is not None:
            await self.refresh()
        return self.keys.get(kid)

    async def refresh(self) -> None:
        """Fetch the key set now, or join the fetch already under way."""
        if self._inflight is None:
            self._inflight = asyncio.ensure_future(self._fetch_keys())
        # Shielded: a request that gives up does not cancel the fetch others wait for.
        await asyncio.shield(self._inflight)

    async def _fetch_keys(self) -> None:
        self._last_attempt = time.monotonic()
        try:
            key_set = await asyncio.to_thread(self._fetch)
        except Exception as error:  # any failure: keep the keys we have, say why
            logger.warning(
                "fetching signing keys from %s failed: %s", self._settings.jwks_url, error
            )
            self._on_fetched("failed")
            return
        finally:
            self._inflight = None
        keys = {
            key.key_id: key
            for key in key_set.keys
            if key.key_id
            and key.public_key_use in ("sig", None)
            and key.algorithm_name in self._accepted
        }
        if not keys:
            logger.warning(
                "the key set at %s has no signing key with a key id for %s",
                self._settings.jwks_url,
                ", ".join(sorted(self._accepted)),
            )
            self._on_fetched("failed")
            return
        self.keys = keys
        self.loaded = True
        self.generation += 1
        self._on_fetched("ok")

    async def _refresh_periodically(self) -> None:
        while True:
            # Until a first key set arrives, retry soon: no token can be checked meanwhile.
            await asyncio.sleep(
                self._settings.jwks_refresh_s
                if self.loaded
                else max(self._settings.jwks_min_refresh_interval_s, 1.0)
            )
            await self.refresh()


class TokenVerifier:
    """Checks bearer tokens: signature, issuer, audience, expiry, then scope and role.

    Args:
        settings: Issuer, audience, algorithms, leeway, required scope and role.
        keys: The issuer's signing keys.
        on_rejected: Called with the reason (one of :data:`REJECTION_REASONS`) of each
            refusal.
    """

    def __init__(
        self,
        settings: AuthSettings,
        keys: JwksKeys,
        *,
        on_rejected: Callable[[str], None] = lambda reason: None,
    ) -> None:
        self.settings = settings
        self.keys = keys
        self._on_rejected = on_rejected
        self._algorithms = list(settings.algorithms)
        self._remembered: dict[str, Caller] = {}
        self._remembered_generation = keys.generation
        self._scope_challenge = 'Bearer error="insufficient_scope"' + (
            f', scope="{settings.required_scope}"' if settings.required_scope else ""
        )

    async def start(self) -> None:
        """Fetch the keys and keep them fresh."""
        await self.keys.start()

    async def stop(self) -> None:
        """Stop refreshing the keys."""
        await self.keys.stop()

    @property
    def problem(self) -> str | None:
        """Why no token can be verified now (no key set fetched yet), else None."""
        return None if self.keys.loaded else "no signing keys fetched from the issuer yet"

    async def authenticate(self, token: str | None) -> Caller:
        """The caller of a request bearing ``token``.

        Raises:
            ServingError: 401 ``unauthorized`` (no token, or not a valid one), 403
                ``forbidden`` (valid, without the required scope or role), 503
                ``auth_unavailable`` (no key set could be fetched yet).
        """
        if not token:
            raise self._reject("missing", "a bearer token is required", challenge="Bearer")
        if self._remembered_generation != self.keys.generation:
            # New keys: a key the issuer withdrew must not keep its tokens valid.
            self._remembered = {}
            self._remembered_generation = self.keys.generation
        caller = self._remembered.get(token)
        if caller is not None and time.time() > caller.expires_at + self.settings.leeway_s:
            del self._remembered[token]
            raise self._reject("expired", "the bearer token has expired")
        if caller is None:
            caller = await self._verify(token)
            if len(self._remembered) >= _MAX_REMEMBERED_TOKENS:
                del self._remembered[next(iter(self._remembered))]
            self._remembered[token] = caller
        self._check_grants(caller)
        return caller

    async def _verify(self, token: str) -> Caller:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise self._reject("malformed", "the bearer token is not a JWT") from None
        kid = header.get("kid")
        key = await self.keys.key_for(kid) if isinstance(kid, str) else None
        if key is None:
            if not self.keys.loaded:
                self._on_rejected("no_keys")
                raise ServingError(
                    "auth_unavailable",
                    "tokens cannot be checked now: the issuer's keys are not available",
                    retry_after_s=_NO_KEYS_RETRY_AFTER_S,
                )
            raise self._reject("unknown_key", "the bearer token is not signed by a known key")
        try:
            claims = jwt.decode(
                token,
                key=key,
                algorithms=self._algorithms,
                audience=self.settings.audience,
                issuer=self.settings.issuer,
                leeway=self.settings.leeway_s,
                options={"require": ["exp", "iss", "aud"], "enforce_minimum_key_length": True},
            )
        except jwt.ExpiredSignatureError:
            raise self._reject("expired", "the bearer token has expired") from None
        except jwt.ImmatureSignatureError:
            raise self._reject("not_yet_valid", "the bearer token is not valid yet") from None
        except jwt.InvalidIssuerError:
            raise self._reject("wrong_issuer", "the bearer token is from another issuer") from None
        except jwt.InvalidAudienceError:
            raise self._reject(
                "wrong_audience", "the bearer token is not for this service"
            ) from None
        except jwt.MissingRequiredClaimError as error:
            raise self._reject(
                "missing_claim", f'the bearer token has no "{error.claim}" claim'
            ) from None
        except jwt.InvalidSignatureError:
            raise self._reject("bad_signature", "the bearer token's signature is wrong") from None
        except jwt.PyJWTError:
            raise self._reject("invalid", "the bearer token is not valid") from None
        return _caller_of(claims)

    def _check_grants(self, caller: Caller) -> None:
        grants = (
            ("scope", self.settings.required_scope, caller.scopes),
            ("role", self.settings.required_role, caller.roles),
        )
        for what, required, held in grants:
            if required is not None and required not in held:
                self._on_rejected("insufficient_scope")
                raise ServingError(
                    "forbidden",
                    f'the bearer token lacks the {what} "{required}"',
                    challenge=self._scope_challenge,
                )

    def _reject(
        self, reason: str, detail: str, *, challenge: str = 'Bearer error="invalid_token"'
    ) -> ServingError:
        self._on_rejected(reason)
        return ServingError("unauthorized", detail, challenge=challenge)


def _caller_of(claims: dict[str, Any]) -> Caller:
    return Caller(
        subject=str(claims.get("sub", "")),
        scopes=_names(claims.get("scope")) | _names(claims.get("scp")),
        roles=_names(claims.get("roles")),
        expires_at=float(claims["exp"]),
    )


def _names(value: Any) -> frozenset[str]:
    """A claim's names: a space-separated string or a list of strings."""
    if isinstance(value, str):
        return frozenset(value.split())
    if isinstance(value, list):
        return frozenset(item for item in value if isinstance(item, str))
    return frozenset()
