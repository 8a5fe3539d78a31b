"""Settings of the prediction service (prefix ``CHURN_SERVING_``)."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

MIN_ADMIN_TOKEN_CHARS = 16

# The model's settings are declared once, in core.settings.ModelSettings; these old names
# were read by `churn serve` and `churn score` until then.
_MOVED_MODEL_VARIABLES = {
    f"CHURN_{prefix}_{old}": f"CHURN_MODEL_{new}"
    for prefix in ("SERVING", "SCORING")
    for old, new in (
        ("MODEL_NAME", "NAME"),
        ("MODEL_ALIAS", "ALIAS"),
        ("DECISION_THRESHOLD", "DECISION_THRESHOLD"),
    )
}


def refuse_moved_variables(prefix: str) -> None:
    """Refuse a model setting still set under the stage's old name, naming the new one.

    Settings ignore unknown variables, so without this check a deployment that still sets
    ``CHURN_SERVING_MODEL_ALIAS`` would quietly serve the champion instead.

    Raises:
        ValueError: An old variable is set (a settings validation error: exit 2).
    """
    for old, new in _MOVED_MODEL_VARIABLES.items():
        if old.startswith(prefix) and old in os.environ:
            raise ValueError(f"{old} is no longer read: set {new} (shared by every command)")


class ServingSettings(BaseSettings):
    """How ``churn serve`` listens and how it protects itself.

    The model (``CHURN_MODEL_NAME``, ``CHURN_MODEL_ALIAS``, ``CHURN_MODEL_DECISION_THRESHOLD``:
    :class:`core.settings.ModelSettings`), Feast (``CHURN_FEAST_*``, ``CHURN_REDIS_URL``) and
    MLflow (``MLFLOW_TRACKING_URI``) keep their own settings classes; these are the service's
    own knobs.
    """

    model_config = SettingsConfigDict(env_prefix="CHURN_SERVING_", extra="ignore")

    host: str = Field(default="127.0.0.1", description="Interface to listen on.")
    port: int = Field(default=8000, ge=1, le=65535, description="TCP port to listen on.")
    admin_token: SecretStr | None = Field(
        default=None,
        description=(
            f"Bearer token of the admin routes; unset, empty or shorter than "
            f"{MIN_ADMIN_TOKEN_CHARS} characters, they are not mounted."
        ),
    )
    workers: int | None = Field(
        default=None,
        ge=1,
        le=64,
        description="Worker processes (default: one per CPU core).",
    )
    inference_threads: int = Field(
        default=1,
        ge=1,
        le=64,
        description="Native (OpenMP/BLAS) threads per worker for model inference.",
    )
    max_body_bytes: int | None = Field(
        default=None,
        ge=256,
        description="Largest request body; larger ones get 413 unread (default: 64 KiB plus "
        "room for batch_limit ids).",
    )
    max_queue_rows: int = Field(
        default=2048,
        ge=1,
        description="Rows that may wait to be scored; beyond it requests get 503 overloaded.",
    )
    ready_backlog_rows: int | None = Field(
        default=None,
        ge=0,
        description="/ready is false while more rows wait (default: half of max_queue_rows).",
    )
    request_deadline_s: float = Field(
        default=2.0,
        gt=0,
        le=60,
        description="Most time a request may take; later it gets 503 deadline_exceeded.",
    )
    poll_interval_s: float = Field(
        default=10.0,
        ge=0,
        description="How often the alias is checked for a new version (0: never).",
    )
    batch_limit: int = Field(
        default=100, ge=1, le=10_000, description="Most user_ids in one /predict/batch."
    )
    online_timeout_s: float = Field(
        default=0.5,
        gt=0,
        le=30,
        description="Bound on one online-store lookup; beyond it the answer is 503.",
    )
    max_micro_batch: int = Field(
        default=256,
        ge=1,
        description="Most rows that concurrent requests share in one lookup and one predict.",
    )
    log_flush_interval_s: float = Field(
        default=5.0, gt=0, description="How often buffered predictions are written."
    )
    log_flush_rows: int = Field(
        default=50_000, ge=1, description="Buffered rows that trigger an early write."
    )
    log_max_buffer_rows: int = Field(
        default=500_000,
        ge=1,
        description="Most prediction-log rows kept in memory while writes fail; the oldest "
        "beyond it are dropped and counted (churn_prediction_log_rows_total{outcome=dropped}).",
    )

    @model_validator(mode="after")
    def _no_moved_variables(self) -> ServingSettings:
        refuse_moved_variables(str(self.model_config.get("env_prefix")))
        return self

    @property
    def admin_enabled(self) -> bool:
        """Whether the admin routes are on: a token of at least the minimum length."""
        token = self.admin_token.get_secret_value() if self.admin_token else ""
        return len(token) >= MIN_ADMIN_TOKEN_CHARS

    def resolved_workers(self) -> int:
        """The worker count: the setting, else one per CPU core."""
        return self.workers or os.cpu_count() or 1

    def resolved_max_body_bytes(self) -> int:
        """The body limit: the setting, else 64 KiB plus room for ``batch_limit`` 64-bit ids."""
        if self.max_body_bytes is not None:
            return self.max_body_bytes
        # '-9223372036854775808, ' is 22 bytes. The 64 KiB keep 413 for bodies far larger
        # than any request the schema admits: a malformed one below that gets a 422 naming
        # what is wrong, as the OpenAPI document promises.
        return 64 * 1024 + 24 * self.batch_limit

    def resolved_ready_backlog_rows(self) -> int:
        """The backlog above which /ready is false."""
        if self.ready_backlog_rows is not None:
            return self.ready_backlog_rows
        return self.max_queue_rows // 2

    opentelemetry: bool = Field(
        default=False,
        description=(
            "FastAPI's native OpenTelemetry (traces, metrics, logs through the globally "
            "configured providers)."
        ),
    )
    metrics_dir: Path | None = Field(
        default=None,
        description=(
            "Folder of the workers' shared metric files; set by `churn serve` when it runs "
            "several workers (multi-process metrics), else unset."
        ),
    )
    tls_cert_file: Path | None = Field(
        default=None,
        description="PEM certificate (chain) to serve HTTPS with; set with tls_key_file.",
    )
    tls_key_file: Path | None = Field(default=None, description="PEM private key of tls_cert_file.")
    tls_key_password: SecretStr | None = Field(
        default=None, description="Password of tls_key_file, when it is encrypted."
    )

    @model_validator(mode="after")
    def _tls_pair(self) -> ServingSettings:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError(
                "CHURN_SERVING_TLS_CERT_FILE and CHURN_SERVING_TLS_KEY_FILE go together: "
                "set both for HTTPS, or neither"
            )
        for name in ("tls_cert_file", "tls_key_file"):
            path = getattr(self, name)
            if path is not None and not path.is_file():
                raise ValueError(f"CHURN_SERVING_{name.upper()}: no file at {path}")
        return self

    @property
    def tls_enabled(self) -> bool:
        """Whether the service answers HTTPS (a certificate and key are set)."""
        return self.tls_cert_file is not None


# Signature algorithms a token may use: asymmetric ones only. An issuer's keys are public;
# a shared-secret (HS*) token could be forged by anyone holding the published key set.
ASYMMETRIC_ALGORITHMS = (
    "RS256",
    "RS384",
    "RS512",
    "PS256",
    "PS384",
    "PS512",
    "ES256",
    "ES384",
    "ES512",
    "EdDSA",
)


class AuthSettings(BaseSettings):
    """Who may call the prediction routes: bearer JWTs from one issuer (off by default).

    With ``enabled``, ``/predict``, ``/predict/batch`` and ``/model`` answer only requests
    carrying ``Authorization: Bearer <JWT>`` signed by one of the issuer's keys (its JWKS),
    issued by ``issuer`` for ``audience`` and not expired; ``/health``, ``/ready`` and
    ``/metrics`` stay open for probes and scrapers.
    """

    model_config = SettingsConfigDict(env_prefix="CHURN_SERVING_AUTH_", extra="ignore")

    enabled: bool = Field(
        default=False,
        description="Require a bearer JWT on the prediction routes (needs issuer, audience "
        "and jwks_url).",
    )
    issuer: str | None = Field(
        default=None, description='The tokens\' issuer: their "iss" claim must equal it.'
    )
    audience: str | None = Field(
        default=None,
        description="This service's name at the issuer: the tokens' \"aud\" claim must hold it.",
    )
    jwks_url: str | None = Field(
        default=None,
        description="Where the issuer publishes its signing keys (JWKS, http or https).",
    )
    required_scope: str | None = Field(
        default=None,
        description='A scope every token must carry ("scope" or "scp" claim); without it '
        "the answer is 403.",
    )
    required_role: str | None = Field(
        default=None,
        description='A role every token must carry ("roles" claim); without it the answer is 403.',
    )
    algorithms: list[str] = Field(
        default=["RS256"],
        min_length=1,
        description=f"Signature algorithms accepted (of {', '.join(ASYMMETRIC_ALGORITHMS)}).",
    )
    leeway_s: float = Field(
        default=30.0,
        ge=0,
        le=300,
        description="Clock skew tolerated on the expiry and not-before times.",
    )
    jwks_refresh_s: float = Field(
        default=300.0,
        gt=0,
        description="How often the key set is fetched again in the background.",
    )
    jwks_min_refresh_interval_s: float = Field(
        default=30.0,
        ge=0,
        description="Least time between two fetches triggered by tokens with an unknown key "
        "id (a new key is picked up at most this late; random key ids cannot flood the issuer).",
    )
    jwks_timeout_s: float = Field(
        default=5.0, gt=0, le=60, description="Bound on one fetch of the key set."
    )

    @model_validator(mode="after")
    def _complete_when_enabled(self) -> AuthSettings:
        unknown = sorted(set(self.algorithms) - set(ASYMMETRIC_ALGORITHMS))
        if unknown:
            raise ValueError(
                f"CHURN_SERVING_AUTH_ALGORITHMS: {', '.join(unknown)} not accepted "
                f"(asymmetric algorithms only: {', '.join(ASYMMETRIC_ALGORITHMS)})"
            )
        if not self.enabled:
            return self
        missing = [
            f"CHURN_SERVING_AUTH_{name.upper()}"
            for name in ("issuer", "audience", "jwks_url")
            if not getattr(self, name)
        ]
        if missing:
            raise ValueError(f"authentication is enabled but {', '.join(missing)} is not set")
        scheme = (self.jwks_url or "").split("://", 1)[0].lower()
        if scheme not in ("http", "https"):
            raise ValueError("CHURN_SERVING_AUTH_JWKS_URL must be an http or https URL")
        return self
