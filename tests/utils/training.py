"""Factories for training tests: tiny feature and label tables, and a second Feast repo.

The churn tables follow the data contract (what `churn ingest` writes); labels depend on the
features (and on the weekend flag) so a model can learn them in a few trials.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import typer

from cli.training import promote_command, rollback_command, train_command
from core.settings import DataSettings, FeastSettings
from core.tables import LABELS, USER_FEATURES
from materialize.apply import apply_feature_repo
from tests.utils.feast_repo import TestRepo, make_feature_repo
from tests.utils.history import logistic, write_history, write_parquet
from tests.utils.services import unique_name
from training import TrainingConfig

START = datetime(2026, 1, 5, tzinfo=UTC)  # a Monday


@dataclass(frozen=True)
class ChurnTables:
    """The offline tables written for one test."""

    features: pd.DataFrame
    labels: pd.DataFrame
    labels_path: Path


def make_churn_tables(
    data: DataSettings,
    *,
    users: int = 150,
    snapshots: int = 8,
    seed: int = 0,
    signal: float = 3.0,
) -> ChurnTables:
    """Write ``user_features.parquet`` and ``labels.parquet`` under ``data.offline_dir``.

    The shared synthetic history (tests.utils.history): a snapshot every 2 days per user,
    labelled at the same time from a logistic model of its features and the weekend flag.

    Args:
        data: Where to write.
        users: Number of users.
        snapshots: Snapshots (and labels) per user.
        seed: Random seed.
        signal: Strength of the features' effect on the label (0 gives random labels).
    """
    history = write_history(
        data,
        users=users,
        days=2 * snapshots,
        every_days=2,
        start=START,
        seed=seed,
        signal=signal,
        weekend_effect=0.5,
        append=False,
    )
    return ChurnTables(
        features=history[USER_FEATURES.names[:-1]],  # as written: no ingested_at
        labels=history[LABELS.names],
        labels_path=data.labels_path,
    )


# Planted point-in-time cases, appended to the churn features table by ``add_planted_rows``.
PLANTED_LABEL_TIME = pd.Timestamp(START + timedelta(days=3, hours=12))
LATER_SNAPSHOT_USER = 9001  # its next snapshot comes after the label time
BACKFILLED_USER = 9002  # a snapshot before the label time, but written (created) after it
NO_FEATURES_USER = 9003  # has a label but never a feature row


def add_planted_rows(data: DataSettings) -> pd.DataFrame:
    """Append the planted users' rows to ``user_features.parquet``; return the planted labels.

    For each user the value legitimately available at the label time is 1.0 (feature_1); the
    other rows carry values (99.0, 77.0) that only a leaking join would use.
    """
    label_time = PLANTED_LABEL_TIME
    hour = pd.Timedelta(hours=1)
    rows = [
        # user, event time, created time, feature_1
        (LATER_SNAPSHOT_USER, label_time - 12 * hour, label_time - 12 * hour, 1.0),
        (LATER_SNAPSHOT_USER, label_time + 12 * hour, label_time + 12 * hour, 99.0),
        (BACKFILLED_USER, label_time - 12 * hour, label_time - 12 * hour, 1.0),
        (BACKFILLED_USER, label_time - 6 * hour, label_time + 36 * hour, 77.0),
    ]
    planted = pd.DataFrame(rows, columns=["user_id", "event_timestamp", "created", "feature_1"])
    planted["user_id"] = planted["user_id"].astype("int64")
    planted["feature_2"] = 4.0
    features = pd.read_parquet(data.user_features_path)
    write_parquet(
        pd.concat([features, planted], ignore_index=True),
        data.user_features_path,
        offline_table=True,
    )
    users = [LATER_SNAPSHOT_USER, BACKFILLED_USER, NO_FEATURES_USER]
    return pd.DataFrame(
        {
            "user_id": pd.Series(users, dtype="int64"),
            "event_timestamp": pd.Series([label_time] * 3, dtype="datetime64[ns, UTC]"),
            "label": pd.Series([1, 0, 1], dtype="int64"),
        }
    )


def shuffle_labels_before(
    labels: pd.DataFrame, cutoff: pd.Timestamp, *, seed: int = 1, column: str = "label"
) -> pd.DataFrame:
    """Labels whose values before ``cutoff`` are permuted (a model trained on them is weak).

    Rows at or after the cutoff (the test window) keep their true labels.
    """
    noisy = labels.copy()
    early = noisy["event_timestamp"] < cutoff
    rng = np.random.default_rng(seed)
    noisy.loc[early, column] = rng.permutation(noisy.loc[early, column].to_numpy())
    return noisy


# A second, unrelated Feast repo: shops (string key) with sales features, no on-demand views.
_SHOP_DEFINITIONS = '''
"""Shops and their weekly sales: a repo unrelated to churn."""

from datetime import timedelta

from feast import Entity, FeatureService, FeatureView, Field, FileSource, ValueType
from feast.types import Float64, Int64

shop = Entity(name="shop", join_keys=["shop_code"], value_type=ValueType.STRING)

shop_sales_source = FileSource(
    name="shop_sales_source",
    path="{path}",
    timestamp_field="week_start",
)

shop_sales = FeatureView(
    name="shop_sales",
    entities=[shop],
    ttl=timedelta(days=10),
    schema=[
        Field(name="revenue", dtype=Float64),
        Field(name="visits", dtype=Int64),
        Field(name="refund_rate", dtype=Float64),
    ],
    source=shop_sales_source,
)

shop_risk_v2 = FeatureService(
    name="shop_risk_v2", features=[shop_sales[["refund_rate", "revenue", "visits"]]]
)
'''

_SHOP_YAML = """\
project: {project}
provider: local
registry: {registry}
online_store:
  type: sqlite
  path: {online}
offline_store:
  type: duckdb
entity_key_serialization_version: 3
"""


@dataclass(frozen=True)
class ShopRepo:
    """The applied shop repo and its labels table."""

    feast: FeastSettings
    labels_path: Path
    features: list[str]


def make_shop_repo(root: Path, *, project: str, shops: int = 120, weeks: int = 10) -> ShopRepo:
    """Build, fill and apply a tiny Feast repo about shops defaulting on payments.

    Entity ``shop`` (string key ``shop_code``), view ``shop_sales`` (weekly), service
    ``shop_risk_v2``; labels in column ``defaulted`` at each week start.
    """
    repo = root / "shop_repo"
    repo.mkdir(parents=True)
    data_dir = root / "shop_data"
    sales_path = data_dir / "shop_sales.parquet"
    (repo / "definitions.py").write_text(
        textwrap.dedent(_SHOP_DEFINITIONS).replace("{path}", str(sales_path))
    )
    (repo / "feature_store.yaml").write_text(
        _SHOP_YAML.format(
            project=project,
            registry=data_dir / "registry.db",
            online=data_dir / "online.db",
        )
    )
    rng = np.random.default_rng(5)
    codes = np.repeat([f"S{i:04d}" for i in range(shops)], weeks)
    week_starts = pd.to_datetime(
        [START + timedelta(weeks=int(w)) for w in np.tile(np.arange(weeks), shops)], utc=True
    )
    revenue = rng.gamma(shape=2.0, scale=500.0, size=len(codes))
    visits = rng.poisson(lam=40, size=len(codes)).astype("int64")
    refund_rate = rng.beta(2, 12, size=len(codes))
    logit = 3.0 * (8.0 * (refund_rate - 0.14) - (revenue - 1000.0) / 700.0)
    defaulted = (rng.random(len(codes)) < logistic(logit)).astype("int64")
    write_parquet(
        pd.DataFrame(
            {
                "shop_code": codes,
                "week_start": week_starts,
                "revenue": revenue,
                "visits": visits,
                "refund_rate": refund_rate,
            }
        ),
        sales_path,
    )
    labels_path = write_parquet(
        pd.DataFrame({"shop_code": codes, "event_timestamp": week_starts, "defaulted": defaulted}),
        data_dir / "defaults.parquet",
    )
    settings = FeastSettings(repo_path=repo, profile="production")
    apply_feature_repo(settings)
    return ShopRepo(
        feast=settings, labels_path=labels_path, features=["refund_rate", "revenue", "visits"]
    )


def training_config(feast: FeastSettings, labels_path: Path, **overrides: object) -> TrainingConfig:
    """A small, quick training configuration for tests (few trials, no progress bar)."""
    options: dict[str, object] = {
        "repo_path": feast.repo_path,
        "profile": feast.profile,
        "labels_path": labels_path,
        "trials": 3,
        "timeout": 300,
        "progress": False,
        "seed": 3,
    }
    options.update(overrides)
    return TrainingConfig(**options)  # type: ignore[arg-type]


def training_cli() -> typer.Typer:
    """The training commands as ``churn`` registers them, without the other stages."""
    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    app.command("train")(train_command)
    app.command("promote")(promote_command)
    app.command("rollback")(rollback_command)
    return app


@dataclass(frozen=True)
class ChurnRepo:
    """An applied copy of feature_repo/ (embedded profile) with tiny tables."""

    repo: TestRepo
    tables: ChurnTables
    planted_labels: pd.DataFrame


def make_churn_repo(root: Path) -> ChurnRepo:
    """Apply a copy of feature_repo/ under ``root`` with tiny tables and the planted rows.

    `feast apply` alone takes 10-25 s on the shared machine: fixtures build it once and
    tests only read it (each writes its own labels and has its own MLflow store).
    """
    repo = make_feature_repo(root, project=unique_name("churn_train"), profile="embedded")
    tables = make_churn_tables(repo.data)
    planted = add_planted_rows(repo.data)
    with pytest.MonkeyPatch.context() as patch:
        # The repo's source path is resolved from CHURN_DATA_DIR when it is applied.
        patch.setenv("CHURN_DATA_DIR", str(repo.data.data_dir))
        apply_feature_repo(repo.feast)
    return ChurnRepo(repo=repo, tables=tables, planted_labels=planted)
