"""Settings of ``churn score`` (prefix ``CHURN_SCORING_``).

Which model is scored, and the decision threshold, are the platform's model settings
(``CHURN_MODEL_*``: :class:`core.settings.ModelSettings`), shared with serving and monitoring.
"""

from __future__ import annotations

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from serving.settings import refuse_moved_variables


class ScoringSettings(BaseSettings):
    """Defaults of ``churn score`` (prefix ``CHURN_SCORING_``)."""

    model_config = SettingsConfigDict(env_prefix="CHURN_SCORING_", extra="ignore")

    chunk_rows: int = Field(default=100_000, ge=1, description="Users per offline retrieval.")
    reasons: int = Field(default=3, ge=0, description="Top reasons written per user (0: none).")

    @model_validator(mode="after")
    def _no_moved_variables(self) -> ScoringSettings:
        refuse_moved_variables(str(self.model_config.get("env_prefix")))
        return self
