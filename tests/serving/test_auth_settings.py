"""The authentication and TLS settings: off by default, refused when half set."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from serving.settings import AuthSettings, ServingSettings

pytestmark = pytest.mark.unit

_ON = {
    "enabled": True,
    "issuer": "https://issuer.test",
    "audience": "churn-api",
    "jwks_url": "https://issuer.test/jwks.json",
}


def test_authentication_is_off_by_default_and_on_with_its_three_values(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert AuthSettings().enabled is False
    for name, value in _ON.items():
        monkeypatch.setenv(f"CHURN_SERVING_AUTH_{name.upper()}", str(value).lower())
    assert AuthSettings().enabled is True


def test_enabled_without_issuer_audience_or_keys_is_refused_naming_them() -> None:
    with pytest.raises(ValidationError) as raised:
        AuthSettings(enabled=True, issuer="https://issuer.test")
    message = str(raised.value)
    assert "CHURN_SERVING_AUTH_AUDIENCE" in message and "CHURN_SERVING_AUTH_JWKS_URL" in message
    assert "CHURN_SERVING_AUTH_ISSUER" not in message


@pytest.mark.parametrize(
    ("override", "named"),
    [
        ({"algorithms": ["HS256"]}, "HS256 not accepted"),
        ({"algorithms": ["none"]}, "none not accepted"),
        ({"jwks_url": "file:///etc/passwd"}, "http or https"),
    ],
)
def test_shared_secret_algorithms_and_non_http_key_urls_are_refused(
    override: dict[str, object], named: str
) -> None:
    with pytest.raises(ValidationError, match=named):
        AuthSettings(**{**_ON, **override})


def test_tls_needs_both_files_and_they_must_exist(tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.write_text("x")
    with pytest.raises(ValidationError, match="go together"):
        ServingSettings(tls_cert_file=cert)
    with pytest.raises(ValidationError, match="CHURN_SERVING_TLS_KEY_FILE: no file"):
        ServingSettings(tls_cert_file=cert, tls_key_file=key)
    key.write_text("x")
    assert ServingSettings(tls_cert_file=cert, tls_key_file=key).tls_enabled
    assert not ServingSettings().tls_enabled
