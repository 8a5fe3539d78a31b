"""An identity provider for tests and benchmarks: RSA signing keys, signed JWTs, a JWKS endpoint.

The endpoint is a real HTTP server on 127.0.0.1 (``http.server`` in a thread), serving the
public halves of its current keys at ``/jwks.json``; a test replaces them to rotate keys,
or takes the endpoint down, and counts how often the service fetched them.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

ISSUER = "https://issuer.test"
AUDIENCE = "churn-api"


@dataclass(frozen=True)
class SigningKey:
    """An RSA key pair and the key id its tokens name."""

    kid: str
    private_key: rsa.RSAPrivateKey

    def public_jwk(self) -> dict[str, Any]:
        """The public key as a JWK, as an issuer publishes it."""
        jwk = RSAAlgorithm.to_jwk(self.private_key.public_key(), as_dict=True)
        return {**jwk, "kid": self.kid, "use": "sig", "alg": "RS256"}


def make_signing_key(kid: str) -> SigningKey:
    """A fresh 2048-bit RSA key named ``kid``."""
    return SigningKey(kid, rsa.generate_private_key(public_exponent=65537, key_size=2048))


def sign_token(
    key: SigningKey,
    *,
    issuer: str = ISSUER,
    audience: str = AUDIENCE,
    subject: str = "client-1",
    expires_in_s: float = 300,
    scope: str | None = None,
    roles: Sequence[str] | None = None,
    kid: str | None = None,
    claims: dict[str, Any] | None = None,
) -> str:
    """An RS256 JWT signed by ``key`` (its header names ``kid``, default the key's)."""
    now = int(time.time())
    payload: dict[str, Any] = {
        "iss": issuer,
        "aud": audience,
        "sub": subject,
        "iat": now,
        "exp": now + int(expires_in_s),
    }
    if scope is not None:
        payload["scope"] = scope
    if roles is not None:
        payload["roles"] = list(roles)
    payload.update(claims or {})
    return jwt.encode(payload, key.private_key, algorithm="RS256", headers={"kid": kid or key.kid})


class JwksServer:
    """A JWKS endpoint on loopback whose keys a test sets; counts the fetches it answered."""

    def __init__(self, keys: Sequence[SigningKey]) -> None:
        self.keys = list(keys)
        self.fetches = 0
        self.available = True
        self._guard = threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                with owner._guard:
                    owner.fetches += 1
                    body = json.dumps({"keys": [key.public_jwk() for key in owner.keys]})
                    available = owner.available
                if not available or self.path != "/jwks.json":
                    self.send_error(503 if not available else 404)
                    return
                data = body.encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # quiet: the tests read the fetch count instead

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        """The JWKS URL."""
        return f"http://127.0.0.1:{self._server.server_address[1]}/jwks.json"

    def set_keys(self, keys: Sequence[SigningKey]) -> None:
        """Publish these keys from now on (a rotation)."""
        with self._guard:
            self.keys = list(keys)

    def set_available(self, available: bool) -> None:
        """Answer 503 to every fetch (False) or the keys again (True)."""
        with self._guard:
            self.available = available

    def start(self) -> None:
        """Serve in a background thread."""
        self._thread.start()

    def close(self) -> None:
        """Stop serving."""
        self._server.shutdown()
        self._server.server_close()


@contextmanager
def running_jwks(keys: Sequence[SigningKey]) -> Iterator[JwksServer]:
    """A started :class:`JwksServer`, stopped when the block ends."""
    server = JwksServer(keys)
    server.start()
    try:
        yield server
    finally:
        server.close()


def forge_hs256_token(claims: dict[str, Any], secret: bytes, *, kid: str) -> str:
    """An HS256 token keyed with ``secret`` (PyJWT refuses to build one from a public key).

    With the issuer's published public key as ``secret`` it is the algorithm-confusion
    attack: a verifier that let the token choose HMAC would accept it.
    """
    import base64
    import hashlib
    import hmac

    def part(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    header = part(json.dumps({"alg": "HS256", "typ": "JWT", "kid": kid}).encode())
    payload = part(json.dumps(claims).encode())
    signature = hmac.new(secret, f"{header}.{payload}".encode(), hashlib.sha256).digest()
    return f"{header}.{payload}.{part(signature)}"
