"""The typed requests and outcomes of training's entry points.

``churn train`` asks :func:`training.run_training` with a :class:`TrainingConfig` and gets a
:class:`TrainingResult`; ``churn promote`` and ``churn rollback`` ask with a
:class:`PromoteRequest` / :class:`RollbackRequest` and get a :class:`PromoteOutcome` /
:class:`RollbackOutcome`. All are light (no heavy imports) so the command line and other
components, such as the monitoring job's retraining trigger, build them cheaply.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import Field
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from core.exits import ExitCode
from core.settings import DataSettings, FeastProfile, FeastSettings, ModelSettings
from core.tables import LABEL

ModelFamily = Literal["hist_gradient_boosting", "gradient_boosting"]
MissingPolicy = Literal["drop", "keep"]


def _model_name() -> str:
    return ModelSettings().name


class _TrainingEnvironment(EnvSettingsSource):
    """``CHURN_TRAIN_*`` without the model name: that is ``CHURN_MODEL_NAME``, declared once."""

    def __call__(self) -> dict[str, Any]:
        values = super().__call__()
        values.pop("model_name", None)
        return values


class TrainingConfig(BaseSettings):
    """Options of one training run (environment prefix ``CHURN_TRAIN_``): the request of
    :func:`training.run_training`.

    Every option of ``churn train`` maps to one field; unset paths fall back to the Feast and
    data settings of the environment, the model name to :class:`core.settings.ModelSettings`.
    """

    model_config = SettingsConfigDict(env_prefix="CHURN_TRAIN_", extra="ignore", frozen=True)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Arguments first, then the environment without ``CHURN_TRAIN_MODEL_NAME``."""
        return (
            init_settings,
            _TrainingEnvironment(settings_cls),
            dotenv_settings,
            file_secret_settings,
        )

    repo_path: Path | None = Field(
        default=None, description="Feast repo folder (default: CHURN_FEAST_REPO_PATH or ours)."
    )
    profile: FeastProfile | None = Field(
        default=None, description="Feast profile (default: CHURN_FEAST_PROFILE or production)."
    )
    feature_service: str = "churn_v1"
    labels_path: Path | None = Field(
        default=None, description="Labels Parquet (default: <data_dir>/offline/labels.parquet)."
    )
    label_column: str = LABEL  # the labels table's column (core.tables)
    trials: int = Field(default=50, ge=1)
    timeout: float | None = Field(default=3600.0, gt=0, description="Tuning time budget (s).")
    model_name: str = Field(
        default_factory=_model_name,
        description="Registered model name (default: CHURN_MODEL_NAME).",
    )
    experiment: str | None = Field(default=None, description="MLflow experiment (default: model).")
    seed: int = 42
    model_family: ModelFamily = "hist_gradient_boosting"
    storage: str | None = Field(
        default=None, description="Optuna storage URL (default: in memory, one process)."
    )
    study_name: str | None = Field(default=None, description="Optuna study to create or join.")
    storage_retry_seconds: float = Field(
        default=120.0,
        ge=0,
        description="How long tuning waits for an unreachable database storage (a restart) "
        "before failing; trials resume when it answers again.",
    )
    workers: int = Field(default=1, ge=1, description="Local tuning processes on the study.")
    min_auc: float = Field(default=0.78, ge=0.0, le=1.0)
    missing: MissingPolicy = "drop"
    tune_only: bool = Field(
        default=False, description="Only add trials to a shared study (a helper worker)."
    )
    progress: bool = Field(default=True, description="Show the progress bar on a terminal.")
    threads: int = Field(
        default=1, ge=1, description="OpenMP threads per process for fitting and scoring."
    )

    def feast_settings(self) -> FeastSettings:
        """Feast settings of the environment, with the repo and profile overridden if set."""
        overrides: dict[str, Any] = {}
        if self.repo_path is not None:
            overrides["repo_path"] = self.repo_path.resolve()
        if self.profile is not None:
            overrides["profile"] = self.profile
        return FeastSettings(**overrides)

    def resolved_labels_path(self) -> Path:
        """The labels table to train on."""
        return self.labels_path if self.labels_path is not None else DataSettings().labels_path

    def resolved_experiment(self) -> str:
        """The MLflow experiment name (the model name unless set)."""
        return self.experiment or self.model_name


@dataclass(frozen=True)
class TrainingResult:
    """Outcome of :func:`training.run_training` (immutable: built once the run has finished)."""

    run_id: str | None
    test_roc_auc: float | None
    registered: bool
    version: str | None
    promoted: bool
    reason: str
    val_roc_auc: float | None = None
    best_params: dict[str, Any] = field(default_factory=dict)
    model_name: str = ""
    experiment_id: str | None = None
    study_name: str = ""
    trials_complete: int = 0
    trials_pruned: int = 0
    rows: dict[str, int] = field(default_factory=dict)
    champion_test_roc_auc: float | None = None
    below_gate: bool = False
    data_report: dict[str, Any] = field(default_factory=dict)  # training.dataset.DatasetReport
    tuning_seconds: float = 0.0
    total_seconds: float = 0.0

    @property
    def exit_code(self) -> ExitCode:
        """Exit code of ``churn train``: BLOCKED (3) when trained but below the gate."""
        return ExitCode.BLOCKED if self.below_gate else ExitCode.OK


@dataclass(frozen=True)
class PromoteRequest:
    """Make a registered version the champion (``churn promote``).

    Attributes:
        version: The version to promote.
        model_name: The registered model (default: CHURN_MODEL_NAME).
    """

    version: str
    model_name: str = field(default_factory=_model_name)


@dataclass(frozen=True)
class PromoteOutcome:
    """What :func:`training.run_promote` did.

    Attributes:
        model_name: The registered model.
        version: The champion now.
        previous: The champion before (None: there was none).
    """

    model_name: str
    version: str
    previous: str | None

    @property
    def changed(self) -> bool:
        """Whether the champion moved (False when the version already was champion)."""
        return self.previous != self.version


@dataclass(frozen=True)
class RollbackRequest:
    """Give the champion alias back to the previous champion (``churn rollback``)."""

    model_name: str = field(default_factory=_model_name)


@dataclass(frozen=True)
class RollbackOutcome:
    """What :func:`training.run_rollback` did: the champion moved from ``old`` to ``new``."""

    model_name: str
    old: str
    new: str
