"""Settings shared by every stage: where the data lives, which Feast profile, where MLflow is.

Each component has its own settings class with its own environment prefix; they are built
on demand (never at import time) and validated when built.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from core.tables import LABELS, USER_FEATURES

PROJECT_ROOT = Path(__file__).resolve().parent.parent

# The registered model every stage trains, serves, scores and watches unless told otherwise.
DEFAULT_MODEL_NAME = "churn-predictor"

FeastProfile = Literal["production", "embedded", "team", "spark", "cluster"]

PROFILE_FILES: dict[str, str] = {
    "production": "feature_store.yaml",
    "embedded": "feature_store.embedded.yaml",
    "team": "feature_store.team.yaml",
    "spark": "feature_store.spark.yaml",
    "cluster": "feature_store.cluster.yaml",
}


class DataSettings(BaseSettings):
    """Where raw, offline and quarantined data live (prefix ``CHURN_``)."""

    model_config = SettingsConfigDict(env_prefix="CHURN_", extra="ignore")

    data_dir: Path = Field(
        default=PROJECT_ROOT / "data",
        description="Root of all local data: raw events, offline tables, quarantine, stores.",
    )
    prediction_log_dir: Path | None = Field(
        default=None,
        description="Serving's prediction log, read by drift and evaluate "
        "(CHURN_PREDICTION_LOG_DIR; default <data_dir>/predictions).",
    )

    @property
    def raw_dir(self) -> Path:
        """Folder of raw event files."""
        return self.data_dir / "raw"

    @property
    def offline_dir(self) -> Path:
        """Folder of the offline feature and label tables that Feast reads."""
        return self.data_dir / "offline"

    @property
    def user_features_path(self) -> Path:
        """Parquet table of user feature snapshots (the Feast batch source)."""
        return self.offline_dir / f"{USER_FEATURES.name}.parquet"

    @property
    def labels_path(self) -> Path:
        """Parquet table of churn labels (the training entity frame)."""
        return self.offline_dir / f"{LABELS.name}.parquet"

    @property
    def prediction_log_path(self) -> Path:
        """Root of serving's partitioned prediction log (read by drift and evaluate)."""
        return self.prediction_log_dir or self.data_dir / "predictions"

    @property
    def quarantine_dir(self) -> Path:
        """Folder where ingest writes the rows it could not use."""
        return self.data_dir / "quarantine"


class BatchSettings(BaseSettings):
    """How the batch commands share a machine with the services (prefix ``CHURN_BATCH_``)."""

    model_config = SettingsConfigDict(env_prefix="CHURN_BATCH_", extra="ignore")

    niceness: int = Field(
        default=10,
        ge=0,
        le=19,
        description="CPU niceness every command but `churn serve` and `churn stream` adds to "
        "itself when it starts (`churn train`, `churn materialize`, `churn score`, "
        "`churn drift`...), so a service on the same cores keeps its latency while a batch "
        "job runs (0: leave the priority as inherited).",
    )


class ModelSettings(BaseSettings):
    """The registered model every stage trains, serves, scores, watches (``CHURN_MODEL_``).

    Declared once: serving, batch scoring, monitoring and training read these, never their
    own copies.
    """

    model_config = SettingsConfigDict(env_prefix="CHURN_MODEL_", extra="ignore")

    name: str = Field(default=DEFAULT_MODEL_NAME, description="Registered model name.")
    alias: str = Field(
        default="champion", description="Alias of the version that is served, scored and watched."
    )
    decision_threshold: float = Field(
        default=0.5,
        ge=0,
        le=1,
        description="A user is predicted to churn when the probability is >= this "
        "(serving's churn_predicted, scoring's and monitoring's thresholded scores).",
    )


class FeastSettings(BaseSettings):
    """How to open the Feast feature store (prefix ``CHURN_FEAST_``).

    The connection values are substituted into the profile's ``${VAR}`` placeholders, so
    the same yaml serves ``feast`` on the command line and the ``churn`` commands.
    """

    model_config = SettingsConfigDict(
        env_prefix="CHURN_FEAST_", extra="ignore", validate_by_name=True, validate_by_alias=True
    )

    repo_path: Path = Field(default=PROJECT_ROOT / "feature_repo")
    profile: FeastProfile = "production"
    redis_url: str = Field(
        default="127.0.0.1:6379",
        validation_alias="CHURN_REDIS_URL",
        description="Feast Redis connection string (host:port[,db=N][,password=...]).",
    )
    redis_cluster_nodes: str | None = Field(
        default=None,
        validation_alias="CHURN_REDIS_CLUSTER_NODES",
        description="Redis Cluster nodes of the cluster profile, Feast's form "
        "host:port,host:port[,password=...] (any reachable nodes; the rest are discovered).",
    )
    registry_url: str | None = Field(
        default=None,
        validation_alias="CHURN_REGISTRY_URL",
        description="SQLAlchemy URL of the shared SQL registry (team profile only).",
    )
    spark_master: str = Field(
        default="local[2]",
        validation_alias="CHURN_SPARK_MASTER",
        description="spark.master of the spark profile: spark://host:7077, yarn, k8s://..., "
        "or local[N] on one machine.",
    )
    spark_staging: str | None = Field(
        default=None,
        validation_alias="CHURN_SPARK_STAGING",
        description="Staging location every executor and the driver can reach (s3://..., "
        "gs://..., hdfs://..., or an absolute path on one machine); default "
        "<data_dir>/spark-staging.",
    )

    @property
    def yaml_path(self) -> Path:
        """The feature_store yaml of the chosen profile."""
        return self.repo_path / PROFILE_FILES[self.profile]

    def substitutions(self) -> dict[str, str]:
        """Values for the ``${VAR}`` placeholders of the profile files."""
        values = {"CHURN_REDIS_URL": self.redis_url}
        if self.registry_url:
            values["CHURN_REGISTRY_URL"] = self.registry_url
        if self.redis_cluster_nodes:
            values["CHURN_REDIS_CLUSTER_NODES"] = self.redis_cluster_nodes
        if self.profile == "spark":
            values["CHURN_SPARK_MASTER"] = self.spark_master
            values["CHURN_SPARK_STAGING"] = self.resolved_spark_staging()
        # feature_repo/sources.py picks the batch source class (FileSource or SparkSource)
        # from the profile when `feast apply` imports it.
        values["CHURN_FEAST_PROFILE"] = self.profile
        return values

    def resolved_spark_staging(self) -> str:
        """The spark profile's staging location (Feast takes a local one as a bare path)."""
        if self.spark_staging:
            return self.spark_staging
        return str((DataSettings().data_dir / "spark-staging").resolve())


class MlflowSettings(BaseSettings):
    """MLflow tracking and registry location (``MLFLOW_TRACKING_URI``).

    Default: a SQLite database under the data folder with artifacts beside it, never in the
    current directory (MLflow's own default depends on where the process runs).
    """

    model_config = SettingsConfigDict(extra="ignore", validate_by_name=True, validate_by_alias=True)

    tracking_uri: str | None = Field(default=None, validation_alias="MLFLOW_TRACKING_URI")
    artifact_root: Path | None = Field(default=None, validation_alias="CHURN_MLFLOW_ARTIFACT_ROOT")

    def resolved_tracking_uri(self, data: DataSettings | None = None) -> str:
        """The tracking URI, defaulting to ``sqlite:///<data_dir>/mlflow/mlflow.db``."""
        if self.tracking_uri:
            return self.tracking_uri
        data = data or DataSettings()
        return f"sqlite:///{(data.data_dir / 'mlflow' / 'mlflow.db').resolve()}"

    def resolved_artifact_root(self, data: DataSettings | None = None) -> Path:
        """Where new experiments store artifacts (``<data_dir>/mlflow/artifacts``)."""
        if self.artifact_root:
            return self.artifact_root.resolve()
        data = data or DataSettings()
        return (data.data_dir / "mlflow" / "artifacts").resolve()

    def prepare(self, data: DataSettings | None = None) -> str:
        """Create the local store folder when the default is used; return the tracking URI.

        Called by commands at start, never at import time.
        """
        uri = self.resolved_tracking_uri(data)
        if uri.startswith("sqlite:///"):
            Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        self.resolved_artifact_root(data).mkdir(parents=True, exist_ok=True)
        return uri
