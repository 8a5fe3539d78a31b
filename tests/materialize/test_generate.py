"""`churn generate`: deterministic, realistic raw events with optional feature shifts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from materialize.generate import generate_raw_events, parse_shifts, write_raw_events
from materialize.raw_events import RAW_COLUMNS

pytestmark = pytest.mark.unit  # in-process only: `make test-unit`

END = pd.Timestamp("2026-06-01", tz="UTC")


def _generate(**overrides: object) -> pd.DataFrame:
    arguments: dict[str, object] = {"users": 150, "days": 28, "end": END, "seed": 7}
    arguments.update(overrides)
    return generate_raw_events(**arguments)  # type: ignore[arg-type]


def test_schema_and_window() -> None:
    frame = _generate()

    assert list(frame.columns) == RAW_COLUMNS
    assert frame.dtypes.astype(str).to_dict() == {
        "user_id": "int64",
        "feature_1": "float64",
        "feature_2": "float64",
        "label": "int64",
        "event_date": "datetime64[us, UTC]",
    }
    assert frame["event_date"].min() >= END - pd.Timedelta(days=28)
    assert frame["event_date"].max() < END
    assert set(frame["label"]) == {0, 1}
    assert (frame["feature_1"].dropna() >= 0).all()
    assert not frame.duplicated(["user_id", "event_date"]).any()
    # Every hour of the day occurs, and only whole hours.
    assert frame["event_date"].dt.hour.nunique() == 24
    assert (frame["event_date"].dt.minute == 0).all()


def test_users_have_repeated_snapshots_every_two_to_six_days() -> None:
    frame = _generate()

    assert frame["user_id"].nunique() == 150
    days = frame["event_date"].dt.floor("D")
    gaps = days.groupby(frame["user_id"]).diff().dropna().dt.days
    assert gaps.between(2, 6).all()
    assert frame.groupby("user_id").size().min() >= 4


def test_same_arguments_give_identical_frame_and_file(tmp_path: Path) -> None:
    first, second = _generate(), _generate()
    pd.testing.assert_frame_equal(first, second)

    path_a = write_raw_events(first, tmp_path / "a.parquet").path
    path_b = write_raw_events(second, tmp_path / "b.parquet").path
    assert path_a.read_bytes() == path_b.read_bytes()


def test_different_seed_gives_different_data() -> None:
    first, other = _generate(seed=7), _generate(seed=8)

    assert not first["feature_1"].equals(other["feature_1"])
    assert not first["event_date"].equals(other["event_date"])


def test_population_and_snapshots_do_not_depend_on_batch_size_or_window() -> None:
    base = _generate()
    fewer_users = _generate(users=40)
    later = _generate(days=10, end=END + pd.Timedelta(days=5))

    pd.testing.assert_frame_equal(
        fewer_users.reset_index(drop=True),
        base[base["user_id"] <= 40].reset_index(drop=True),
    )
    overlap_start = END - pd.Timedelta(days=5)
    in_overlap = base[base["event_date"] >= overlap_start].reset_index(drop=True)
    pd.testing.assert_frame_equal(
        later[later["event_date"] < END].reset_index(drop=True), in_overlap
    )
    assert (later["event_date"] >= END).any()


def test_shift_moves_only_the_chosen_feature_after_shift_start() -> None:
    start = END - pd.Timedelta(days=7)
    plain = _generate(null_rate=0.0)
    shifted = _generate(null_rate=0.0, shifts={"feature_2": 2.0}, shift_start=start)

    after = (plain["event_date"] >= start).to_numpy()
    difference = shifted["feature_2"] - plain["feature_2"]
    expected = 2.0 * np.std(plain["feature_2"].to_numpy())
    np.testing.assert_allclose(difference[after], expected)
    assert (difference[~after] == 0).all()
    pd.testing.assert_series_equal(shifted["feature_1"], plain["feature_1"])
    pd.testing.assert_series_equal(shifted["event_date"], plain["event_date"])


def test_negative_usage_shift_keeps_feature_1_non_negative() -> None:
    plain = _generate(null_rate=0.0)
    shifted = _generate(null_rate=0.0, shifts={"feature_1": -3.0})

    assert (shifted["feature_1"] >= 0).all()
    assert shifted["feature_1"].mean() < 0.5 * plain["feature_1"].mean()
    assert (shifted["feature_1"] == 0).any()


@pytest.mark.parametrize("rate", [0.0, 0.1])
def test_null_rate_is_roughly_as_asked(rate: float) -> None:
    frame = _generate(users=300, null_rate=rate)

    for column in ("feature_1", "feature_2"):
        assert frame[column].isna().mean() == pytest.approx(rate, abs=0.02)
    assert not frame[["user_id", "label", "event_date"]].isna().any().any()


def test_churn_depends_on_weekend_and_usage() -> None:
    frame = _generate(users=400)

    weekend = frame["event_date"].dt.dayofweek >= 5
    assert frame.loc[weekend, "label"].mean() > frame.loc[~weekend, "label"].mean() + 0.15
    usage = frame["feature_1"]
    light = frame.loc[usage < usage.quantile(0.25), "label"].mean()
    heavy = frame.loc[usage > usage.quantile(0.75), "label"].mean()
    assert light > heavy + 0.2


def test_a_model_on_the_seven_features_beats_the_registration_gate() -> None:
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.metrics import roc_auc_score

    frame = _generate(users=600, days=42).sort_values("event_date", kind="stable")
    day = frame["event_date"].dt.dayofweek
    features = pd.DataFrame(
        {
            "feature_1": frame["feature_1"],
            "feature_2": frame["feature_2"],
            "feature_ratio": frame["feature_1"] / (frame["feature_2"] + 1e-8),
            "feature_log": np.log1p(frame["feature_1"].clip(lower=0)),
            "day_of_week_sin": np.sin(2 * np.pi * day / 7),
            "day_of_week_cos": np.cos(2 * np.pi * day / 7),
            "is_weekend": (day >= 5).astype(int),
        }
    )
    split = int(len(frame) * 0.8)  # train + validation, then the last 20% as test
    model = HistGradientBoostingClassifier(random_state=0).fit(
        features[:split], frame["label"][:split]
    )
    auc = roc_auc_score(frame["label"][split:], model.predict_proba(features[split:])[:, 1])

    assert 0.78 <= auc <= 0.9


def test_parse_shifts() -> None:
    assert parse_shifts(["feature_1=1.5", "feature_2=-2"]) == {
        "feature_1": 1.5,
        "feature_2": -2.0,
    }
    for bad in ("label=1", "feature_1", "feature_1=big", "feature_1=inf"):
        with pytest.raises(ValueError, match="--shift"):
            parse_shifts([bad])
