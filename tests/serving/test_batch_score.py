"""Batch scoring (``run_score``): parity with /predict, unscored users, atomic output.

The command itself (options, output, exit codes) is tested in tests/cli/test_serving.py.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from core.errors import OfflineSourceError
from core.settings import MlflowSettings, ModelSettings
from serving.app import create_app
from serving.batch import ScoreRequest, ScoringSettings, run_score, unscored_path_for
from serving.settings import ServingSettings
from tests.utils.feast_repo import TestRepo
from tests.utils.features import CHURN_V1_FEATURES
from tests.utils.serving import OnlineUsers


@pytest.mark.parametrize("version", ["1", "2"])
def test_score_and_predict_give_the_same_probability(
    online_repo: tuple[TestRepo, OnlineUsers], scoring_registry: str, tmp_path: Path, version: str
) -> None:
    repo, users = online_repo
    registry = scoring_registry
    log_dir = tmp_path / "predictions"
    model = ModelSettings()
    if version != "1":
        from mlflow import MlflowClient

        MlflowClient(registry).set_registered_model_alias("churn-predictor", "served", version)
        model = ModelSettings(alias="served")
    app = create_app(
        ServingSettings(poll_interval_s=0),
        model=model,
        feast=repo.feast,
        mlflow=MlflowSettings(tracking_uri=registry),
        data=repo.data.model_copy(update={"prediction_log_dir": log_dir}),
    )
    with TestClient(app) as client:
        batch = client.post("/predict/batch", json={"user_ids": users.fresh}).json()
    answered = {p["user_id"]: p["churn_probability"] for p in batch["predictions"]}
    assert sorted(answered) == users.fresh
    # The prediction log holds the unrounded probabilities and the request time.
    log = pd.read_parquet(log_dir)
    assert log["event_timestamp"].nunique() == 1
    request_time = pd.to_datetime(log["event_timestamp"], utc=True).iloc[0].to_pydatetime()

    out = tmp_path / "scores.parquet"
    result = run_score(
        ScoreRequest(
            out=out,
            at=request_time,
            users=np.array(users.fresh),
            model_version=version,
            feast=repo.feast,
            mlflow=MlflowSettings(tracking_uri=registry),
        )
    )
    scores = pd.read_parquet(out).set_index("user_id")
    served = log.set_index("user_id")

    assert result.scored == len(users.fresh)
    assert (scores["model_version"] == version).all()
    for user in users.fresh:
        assert (
            abs(scores.at[user, "churn_probability"] - served.at[user, "churn_probability"]) <= 1e-9
        )
        assert round(scores.at[user, "churn_probability"], 4) == answered[user]
    # Reasons: the three largest contributions, with the values the service saw.
    first = users.fresh[0]
    reason_features = [scores.at[first, f"reason_{k}_feature"] for k in (1, 2, 3)]
    assert set(reason_features) <= set(CHURN_V1_FEATURES)
    for k, feature in enumerate(reason_features, start=1):
        assert scores.at[first, f"reason_{k}_value"] == served.at[first, feature]
    effects = [abs(scores.at[first, f"reason_{k}_contribution"]) for k in (1, 2, 3)]
    assert effects == sorted(effects, reverse=True) and effects[0] > 0


def test_users_without_features_are_listed_and_a_missing_value_goes_to_the_model(
    online_repo: tuple[TestRepo, OnlineUsers], scoring_registry: str, tmp_path: Path
) -> None:
    repo, users = online_repo
    out = tmp_path / "out" / "scores.parquet"
    wanted = [users.fresh[0], users.stale, users.missing_feature, users.unknown]
    result = run_score(
        ScoreRequest(
            out=out,
            at=pd.Timestamp.now(tz="UTC").to_pydatetime(),
            users=np.array(wanted),
            feast=repo.feast,
            mlflow=MlflowSettings(tracking_uri=scoring_registry),
            settings=ScoringSettings(chunk_rows=2),
        )
    )
    scores = pd.read_parquet(out)
    unscored = pd.read_parquet(unscored_path_for(out)).set_index("user_id")

    # The champion (HistGradientBoosting) takes missing values: the default policy, model.
    assert scores["user_id"].tolist() == [users.fresh[0], users.missing_feature]
    assert scores["churn_probability"].notna().all()
    assert scores["missing_features"].tolist() == [None, "feature_2, feature_ratio"]
    assert result.unscored == {"no_features": 2}
    assert result.scored_with_missing == 1
    assert result.missing_note == "missing values: model (default)"
    assert unscored.loc[users.stale, "reason"] == "no_features"
    assert unscored.loc[users.unknown, "reason"] == "no_features"
    # Only the two finished files: no temporary file left beside them.
    assert sorted(p.name for p in out.parent.iterdir()) == [
        "scores.parquet",
        "scores.unscored.parquet",
    ]


def test_chunks_retrieved_ahead_give_the_same_file_as_one_chunk(
    online_repo: tuple[TestRepo, OnlineUsers], scoring_registry: str, tmp_path: Path
) -> None:
    """Chunks are retrieved while earlier ones are scored in another process: same file."""
    repo, users = online_repo
    at = pd.Timestamp.now(tz="UTC").to_pydatetime()
    wanted = np.array([*users.fresh, users.missing_feature, users.unknown])
    files = {}
    for chunk_rows in (7, 1000):
        out = tmp_path / f"chunks-{chunk_rows}.parquet"
        files[chunk_rows] = run_score(
            ScoreRequest(
                out=out,
                at=at,
                users=wanted,
                feast=repo.feast,
                mlflow=MlflowSettings(tracking_uri=scoring_registry),
                settings=ScoringSettings(chunk_rows=chunk_rows),
            )
        )
    pieces, whole = (pd.read_parquet(files[n].path) for n in (7, 1000))

    # The user with a null feature is scored too (the champion takes missing values).
    assert files[7].scored == files[1000].scored == len(users.fresh) + 1
    assert pieces["user_id"].tolist() == [*sorted(users.fresh), users.missing_feature]
    assert files[7].scored_with_missing == files[1000].scored_with_missing == 1
    pd.testing.assert_frame_equal(pieces, whole, check_exact=True)
    pd.testing.assert_frame_equal(
        pd.read_parquet(files[7].unscored_path), pd.read_parquet(files[1000].unscored_path)
    )
    # The compiled trees were checked against predict_proba and used.
    assert files[7].engine_note.startswith("engine: compiled_forest (")


class _MovesTheOfflineTable:
    """A progress stream that takes the offline table away after the first chunk."""

    def __init__(self, source: Path):
        self.source = source
        self.moved = source.with_name("moved-mid-run.parquet")
        self.lines: list[str] = []

    def write(self, text: str) -> int:
        if text.strip():
            self.lines.append(text)
            if self.source.exists():
                self.source.rename(self.moved)
        return len(text)

    def flush(self) -> None:
        """Nothing buffered."""

    def restore(self) -> None:
        if self.moved.exists():
            self.moved.rename(self.source)


def test_a_retrieval_failing_mid_run_fails_the_run_and_writes_nothing(
    online_repo: tuple[TestRepo, OnlineUsers], scoring_registry: str, tmp_path: Path
) -> None:
    """The table vanishes after chunk 1 is scored: a later chunk's retrieval fails.

    Up to ``CHUNKS_AHEAD`` retrieved chunks may wait for the scoring process, so chunks of
    2 users leave many chunks to read after the table has gone.
    """
    from serving.batch.chunks import CHUNKS_AHEAD

    repo, users = online_repo
    out = tmp_path / "scores.parquet"
    stream = _MovesTheOfflineTable(repo.data.user_features_path)
    try:
        with pytest.raises(OfflineSourceError, match="offline retrieval failed"):
            run_score(
                ScoreRequest(
                    out=out,
                    at=pd.Timestamp.now(tz="UTC").to_pydatetime(),
                    users=np.array(users.fresh),
                    feast=repo.feast,
                    mlflow=MlflowSettings(tracking_uri=scoring_registry),
                    settings=ScoringSettings(chunk_rows=2),
                    progress=stream,  # type: ignore[arg-type]
                )
            )
    finally:
        stream.restore()

    assert len(users.fresh) > 2 * (1 + CHUNKS_AHEAD)
    # the chunks read ahead before the table left may still be scored
    assert 1 <= len(stream.lines) <= 1 + CHUNKS_AHEAD
    assert list(tmp_path.iterdir()) == []


def test_the_output_pair_replaces_the_previous_one_under_its_lock(
    online_repo: tuple[TestRepo, OnlineUsers], scoring_registry: str, tmp_path: Path
) -> None:
    """While another run holds the lock, a finished run waits before replacing the pair."""
    import threading
    import time

    from core.locks import file_lock
    from core.settings import DataSettings
    from serving.batch.chunks import output_lock_path

    repo, users = online_repo
    data = DataSettings(data_dir=tmp_path / "data")
    out = tmp_path / "out" / "scores.parquet"
    finished: list[object] = []

    def score() -> None:
        finished.append(
            run_score(
                ScoreRequest(
                    out=out,
                    users=np.array(users.fresh),
                    feast=repo.feast,
                    mlflow=MlflowSettings(tracking_uri=scoring_registry),
                    data=data,
                )
            )
        )

    with file_lock(output_lock_path(data, out)):
        run = threading.Thread(target=score)
        run.start()
        deadline = time.monotonic() + 300
        # The list of unscored users is the last file written before the lock is asked for.
        while not list(out.parent.glob(".scores.unscored.parquet.*.tmp")):
            assert run.is_alive(), "the run ended before asking for the lock"
            assert time.monotonic() < deadline, "the run never asked for the lock"
            time.sleep(0.05)
        time.sleep(0.5)
        waiting = run.is_alive()
        replaced_early = out.exists() or unscored_path_for(out).exists()
    run.join(timeout=60)

    assert waiting and not replaced_early
    assert len(finished) == 1
    assert sorted(pd.read_parquet(out)["user_id"]) == users.fresh
    assert sorted(p.name for p in out.parent.iterdir()) == [
        "scores.parquet",
        "scores.unscored.parquet",
    ]
