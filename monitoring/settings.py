"""Settings of the drift monitor and the retraining trigger (prefix ``CHURN_MONITORING_``).

The model watched is ``core.settings.ModelSettings``' (``CHURN_MODEL_NAME``,
``CHURN_MODEL_ALIAS``), the one every stage reads.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from core.settings import DataSettings

Correction = Literal["none", "holm", "bh"]


class MonitoringSettings(BaseSettings):
    """Statistics, thresholds, outputs and retraining policy of ``churn drift``.

    Lists (``exclude_columns``) are read from the environment as JSON, e.g.
    ``CHURN_MONITORING_EXCLUDE_COLUMNS='["user_id"]'``.
    """

    model_config = SettingsConfigDict(env_prefix="CHURN_MONITORING_", extra="ignore")

    # Statistics.
    psi_bins: int = Field(default=10, ge=2, description="PSI bins (reference quantiles).")
    psi_epsilon: float = Field(
        default=1e-4, gt=0, lt=0.01, description="Proportion used for empty PSI bins."
    )
    max_categories: int = Field(
        default=10,
        ge=1,
        description="Numeric columns with at most this many distinct values are categorical "
        "(PSI over categories and a chi-square test instead of KS).",
    )
    max_string_categories: int = Field(
        default=50,
        ge=2,
        description="Text columns with more distinct values are skipped (identifiers).",
    )
    # Thresholds of the reference design; ``major`` wins over ``minor``.
    psi_major: float = Field(default=0.2, gt=0)
    psi_minor: float = Field(default=0.1, gt=0)
    p_major: float = Field(default=0.01, gt=0, lt=1)
    p_minor: float = Field(default=0.05, gt=0, lt=1)
    correction: Correction = Field(
        default="holm",
        description="Multiple-testing correction of the p-values over the features: holm "
        "(family-wise error), bh (Benjamini-Hochberg false discovery rate) or none.",
    )
    # With tens of thousands of rows a KS or chi-square p-value falls below 0.01 for
    # differences nobody would act on (a training window that is not whole weeks shifts
    # the weekday mix by a few percent: Cramér's V 0.03). PSI thresholds are unaffected.
    min_effect_size: float = Field(
        default=0.05,
        ge=0,
        le=1,
        description="A p-value flags drift only when the effect size (KS statistic or "
        "Cramér's V) is at least this; 0 restores the reference design's plain rule.",
    )
    exclude_columns: list[str] = Field(
        default=[
            "user_id",
            "event_timestamp",
            "created",
            "request_id",
            # Prediction-log metadata: a new model version is not data drift, and the
            # thresholded score follows the score, which is reported apart.
            "model_name",
            "model_version",
            "churn_predicted",
        ],
        description="Columns never compared in two-file mode (keys, timestamps, log metadata).",
    )
    workers: int = Field(
        default=0, ge=0, description="Threads comparing features at once (0: one per CPU)."
    )
    # One current row gave PSI 8.3, "major" and a retraining: below this many values on
    # either side nothing is tested and the feature reports insufficient_data.
    min_samples: int = Field(
        default=30,
        ge=1,
        description="Fewest non-missing values per side for a column to be tested; below "
        "it the column is insufficient_data (never major, never a retraining).",
    )

    # Multivariate drift: a domain classifier told to separate reference rows from current
    # rows (monitoring.multivariate). Its cross-validated AUROC is 0.5 when it cannot.
    multivariate: bool = Field(
        default=True,
        description="Train the domain classifier (multivariate drift) beside the univariate "
        "tests; false leaves summary.multivariate at status not_run.",
    )
    multivariate_max_rows: int = Field(
        default=5_000,
        ge=1,
        description="Rows drawn at random (seeded) from each window for the domain "
        "classifier; larger windows are sampled by the offline-compute backend.",
    )
    multivariate_folds: int = Field(
        default=5, ge=2, le=20, description="Cross-validation folds of the domain classifier."
    )
    multivariate_seed: int = Field(
        default=0, description="Seed of the row sample, the folds, the model and permutations."
    )
    multivariate_auc_minor: float = Field(
        default=0.6,
        gt=0.5,
        lt=1,
        description="Multivariate drift is minor when the AUROC reaches this and its 95% "
        "interval lies above 0.5.",
    )
    multivariate_auc_major: float = Field(
        default=0.75,
        gt=0.5,
        le=1,
        description="Multivariate drift is major when the AUROC reaches this and its 95% "
        "interval lies above 0.5.",
    )
    multivariate_top_features: int = Field(
        default=3, ge=1, description="Separating features named in the summary."
    )

    # Data quality of the current window against the reference (the training set).
    quality_null_minor: float = Field(
        default=0.05,
        gt=0,
        le=1,
        description="Null rate above the reference's by this much (absolute share): minor.",
    )
    quality_null_major: float = Field(
        default=0.2,
        gt=0,
        le=1,
        description="Null rate above the reference's by this much (absolute share): major.",
    )
    quality_out_of_range_minor: float = Field(
        default=0.02,
        gt=0,
        le=1,
        description="Share of current values outside the reference's [min, max], beyond the "
        "2/(n+1) a sample of the reference's own distribution shows: minor.",
    )
    quality_out_of_range_major: float = Field(
        default=0.1,
        gt=0,
        le=1,
        description="Same share as quality_out_of_range_minor: major.",
    )
    quality_unseen_minor: float = Field(
        default=0.01,
        gt=0,
        le=1,
        description="Share of current values in categories the reference never had: minor.",
    )
    quality_unseen_major: float = Field(
        default=0.05,
        gt=0,
        le=1,
        description="Share of current values in categories the reference never had: major.",
    )

    # Where the statistics are computed on the spark profile.
    statistics: Literal["auto", "process", "spark"] = Field(
        default="auto",
        description="On the spark profile: 'spark' computes the statistics from Spark "
        "aggregates (PSI exact, KS within a stated bound), 'process' reads both windows into "
        "this process in bounded batches (exact), 'auto' aggregates in Spark when the two "
        "windows hold more than spark_statistics_rows rows. Other profiles and file or "
        "prediction-log samples are compared in process ('spark' is refused there).",
    )
    spark_statistics_rows: int = Field(
        default=5_000_000,
        ge=0,
        description="With statistics='auto', windows above this many rows (both together) "
        "are compared from Spark aggregates instead of in this process.",
    )

    # Performance without labels (churn estimate) and with them (churn evaluate).
    min_window_rows: int = Field(
        default=500,
        ge=2,
        description="Fewest predictions a performance figure is claimed for, estimated or "
        "realized (per model version too); below it the status is insufficient_data.",
    )
    estimate_confidence: float = Field(
        default=0.95,
        gt=0.5,
        lt=1,
        description="Coverage of the estimated figures' intervals (realized values of "
        "calibrated predictions fall inside this often).",
    )
    # At the data-quality check's major out-of-range share: a window refused here also
    # raises the major data-quality alert the trigger falls back on. bench.estimate: a
    # feature moved 0.5 SD (19% of rows outside) was still missed in 1 window of 4.
    estimate_max_out_of_range: float = Field(
        default=0.1,
        ge=0,
        le=1,
        description="Largest share of a window's rows outside a model feature's training "
        "[min, max] an estimate is claimed for; above it the status is out_of_support (the "
        "model extrapolates there: no figure, no retraining decided on it).",
    )

    # Windows and sources.
    window_days: float = Field(default=7, gt=0, description="Current window: the last N days.")
    max_data_lag_hours: float = Field(
        default=48,
        ge=0,
        description="Without --until, the newest snapshot (or prediction) may be at most "
        "this old; older data is stale (exit 5). 0 turns the check off.",
    )

    # Outputs.
    pushgateway_url: str | None = Field(
        default=None, description="Prometheus Pushgateway (host:port or URL); else textfile."
    )
    pushgateway_job: str = "churn_drift"

    # Retraining trigger.
    retrain_cooldown_hours: float = Field(
        default=24, ge=0, description="No new retraining within this many hours of the last."
    )
    retrain_auc_margin: float = Field(
        default=0.03,
        ge=0,
        lt=1,
        description="Retrain when the estimated (or realized) ROC AUC is more than this "
        "below the champion's test ROC AUC, the estimate's whole interval below it too.",
    )
    retrain_on_drift: bool = Field(
        default=False,
        description="Also retrain on major drift alone (drift is otherwise an alert: "
        "exit code, metric and decisions log, no retraining).",
    )
    decisions_path: Path | None = Field(
        default=None,
        description="JSON-lines log of drift decisions (default <data_dir>/monitoring/"
        "decisions.jsonl).",
    )

    @model_validator(mode="after")
    def _check_thresholds(self) -> MonitoringSettings:
        if self.psi_minor > self.psi_major:
            raise ValueError(f"psi_minor {self.psi_minor} is above psi_major {self.psi_major}")
        if self.p_major > self.p_minor:
            raise ValueError(f"p_major {self.p_major} is above p_minor {self.p_minor}")
        for name in ("multivariate_auc", "quality_null", "quality_out_of_range", "quality_unseen"):
            minor, major = getattr(self, f"{name}_minor"), getattr(self, f"{name}_major")
            if minor > major:
                raise ValueError(f"{name}_minor {minor} is above {name}_major {major}")
        return self

    def aggregates_required(self) -> bool:
        """Whether the statistics must come from a distributed backend's aggregates."""
        return self.statistics == "spark"

    def aggregates_for(self, rows: int) -> bool:
        """Whether windows of ``rows`` rows (both together) held by a distributed backend
        are compared from its aggregates rather than read into this process."""
        return self.aggregates_required() or (
            self.statistics == "auto" and rows > self.spark_statistics_rows
        )

    def resolved_decisions_path(self, data: DataSettings | None = None) -> Path:
        """Where drift decisions are appended."""
        if self.decisions_path is not None:
            return self.decisions_path
        return (data or DataSettings()).data_dir / "monitoring" / "decisions.jsonl"
