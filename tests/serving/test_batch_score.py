"""``churn score``: parity with /predict, unscored users, atomic output, exit codes."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from cli.main import build_app
from core.settings import MlflowSettings
from serving.app import create_app
from serving.batch_score import ScoreFailure, ScoringSettings, score_users, unscored_path_for
from serving.settings import ServingSettings
from tests.utils.feast_repo import TestRepo
from tests.utils.features import CHURN_V1_FEATURES
from tests.utils.serving import OnlineUsers, register_model, tracking_uri_in, training_frame


def _hist_model() -> Any:
    from sklearn.ensemble import HistGradientBoostingClassifier

    frame, labels = training_frame(2000, seed=3)
    return HistGradientBoostingClassifier(max_iter=80, early_stopping=False, random_state=0).fit(
        frame, labels
    )


def _gradient_model() -> Any:
    from sklearn.ensemble import GradientBoostingClassifier

    frame, labels = training_frame(2000, seed=3)
    return GradientBoostingClassifier(n_estimators=40, max_depth=4, random_state=0).fit(
        frame, labels
    )


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory, online_repo: Any) -> str:
    """Version 1: HistGradientBoosting (champion); version 2: GradientBoosting."""
    repo, _ = online_repo
    uri = tracking_uri_in(tmp_path_factory.mktemp("mlflow"))
    register_model(uri, project=repo.project, model=_hist_model())
    register_model(uri, project=repo.project, model=_gradient_model(), alias=None)
    return uri


@pytest.mark.parametrize("version", ["1", "2"])
def test_score_and_predict_give_the_same_probability(
    online_repo: tuple[TestRepo, OnlineUsers], registry: str, tmp_path: Path, version: str
) -> None:
    repo, users = online_repo
    log_dir = tmp_path / "predictions"
    settings = ServingSettings(poll_interval_s=0)
    if version != "1":
        from mlflow import MlflowClient

        MlflowClient(registry).set_registered_model_alias("churn-predictor", "served", version)
        settings = ServingSettings(poll_interval_s=0, model_alias="served")
    app = create_app(
        settings,
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
    result = score_users(
        out=out,
        at=request_time,
        users=np.array(users.fresh),
        model_version=version,
        feast=repo.feast,
        mlflow=MlflowSettings(tracking_uri=registry),
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


def test_users_without_features_are_listed_never_scored(
    online_repo: tuple[TestRepo, OnlineUsers], registry: str, tmp_path: Path
) -> None:
    repo, users = online_repo
    out = tmp_path / "out" / "scores.parquet"
    wanted = [users.fresh[0], users.stale, users.missing_feature, users.unknown]
    result = score_users(
        out=out,
        at=pd.Timestamp.now(tz="UTC").to_pydatetime(),
        users=np.array(wanted),
        feast=repo.feast,
        mlflow=MlflowSettings(tracking_uri=registry),
        settings=ScoringSettings(chunk_rows=2),
    )
    scores = pd.read_parquet(out)
    unscored = pd.read_parquet(unscored_path_for(out)).set_index("user_id")

    assert scores["user_id"].tolist() == [users.fresh[0]]
    assert scores["churn_probability"].notna().all()
    assert result.unscored == {"no_features": 2, "missing_features": 1}
    assert unscored.loc[users.stale, "reason"] == "no_features"
    assert unscored.loc[users.unknown, "reason"] == "no_features"
    assert unscored.loc[users.missing_feature, "reason"] == "missing_features"
    assert "feature_2" in unscored.loc[users.missing_feature, "detail"]
    # Only the two finished files: no temporary file left beside them.
    assert sorted(p.name for p in out.parent.iterdir()) == [
        "scores.parquet",
        "scores.unscored.parquet",
    ]


def test_every_user_with_features_is_scored_by_default(
    online_repo: tuple[TestRepo, OnlineUsers],
    registry: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Through the command line, as a user types it (champion, --at now, progress)."""
    repo, users = online_repo
    _environment(monkeypatch, repo, registry)
    out = tmp_path / "all.parquet"
    outcome = CliRunner().invoke(
        build_app(), ["score", "--out", str(out), "--chunk-rows", "15", "--show", "3"]
    )

    assert outcome.exit_code == 0, outcome.output
    scores = pd.read_parquet(out)
    assert sorted(scores["user_id"]) == users.fresh  # stale: outside the TTL, not a user now
    assert (scores["model_version"] == "1").all()
    assert "scored 40 users" in outcome.stdout
    assert "missing_features 1" in outcome.stdout
    assert "users/s, ETA" in outcome.stderr
    # Where the time before the first chunk went: the users listed while the model loads.
    startup = re.search(
        r"start-up ([\d.]+) s to the first retrieval \(users listed in ([\d.]+) s; model "
        r"loaded and prepared in the scoring process in ([\d.]+) s\)",
        outcome.stdout,
    )
    assert startup is not None, outcome.stdout
    assert float(startup[2]) <= float(startup[1])
    assert float(startup[3]) > 0
    riskiest = scores.nlargest(3, "churn_probability")
    assert "3 users most at risk:" in outcome.stdout
    listing = outcome.stdout.split("3 users most at risk:")[1]
    positions = [listing.index(f"user {user}:") for user in riskiest["user_id"]]
    assert positions == sorted(positions)
    assert f"{riskiest['reason_1_feature'].iloc[0]}=" in listing
    probabilities = scores["churn_probability"].to_numpy()
    assert ((probabilities > 0) & (probabilities < 1)).all()
    assert (scores["churn_predicted"] == (probabilities >= 0.5)).all()


def _environment(monkeypatch: pytest.MonkeyPatch, repo: TestRepo, registry: str) -> None:
    monkeypatch.setenv("CHURN_FEAST_REPO_PATH", str(repo.feast.repo_path))
    monkeypatch.setenv("CHURN_REDIS_URL", repo.feast.redis_url)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", registry)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--at", "yesterday"], "is not an ISO date"),
        (["--model-version", "9"], "has no version 9"),
        (["--users", "/nonexistent/users.csv"], "does not exist"),
    ],
)
def test_bad_input_exits_2_and_writes_nothing(
    online_repo: tuple[TestRepo, OnlineUsers],
    registry: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    arguments: list[str],
    message: str,
) -> None:
    repo, _ = online_repo
    _environment(monkeypatch, repo, registry)
    out = tmp_path / "scores.parquet"
    outcome = CliRunner().invoke(build_app(), ["score", "--out", str(out), *arguments])

    assert outcome.exit_code == 2, outcome.output
    assert message in outcome.stderr
    assert list(tmp_path.iterdir()) == []


def test_a_failed_run_leaves_the_previous_file_whole(
    online_repo: tuple[TestRepo, OnlineUsers],
    registry: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The offline table disappears mid-run: exit 1, old output untouched, no temp file."""
    repo, _ = online_repo
    _environment(monkeypatch, repo, registry)
    out = tmp_path / "scores.parquet"
    out.write_bytes(b"previous run")
    source = repo.data.user_features_path
    moved = source.with_name("moved.parquet")
    source.rename(moved)
    try:
        outcome = CliRunner().invoke(build_app(), ["score", "--out", str(out)])
    finally:
        moved.rename(source)

    assert outcome.exit_code == 1, outcome.output
    assert "offline" in outcome.stderr
    assert out.read_bytes() == b"previous run"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scores.parquet"]


def test_chunks_retrieved_ahead_give_the_same_file_as_one_chunk(
    online_repo: tuple[TestRepo, OnlineUsers], registry: str, tmp_path: Path
) -> None:
    """Chunks are retrieved while earlier ones are scored in another process: same file."""
    repo, users = online_repo
    at = pd.Timestamp.now(tz="UTC").to_pydatetime()
    wanted = np.array([*users.fresh, users.missing_feature, users.unknown])
    files = {}
    for chunk_rows in (7, 1000):
        out = tmp_path / f"chunks-{chunk_rows}.parquet"
        files[chunk_rows] = score_users(
            out=out,
            at=at,
            users=wanted,
            feast=repo.feast,
            mlflow=MlflowSettings(tracking_uri=registry),
            settings=ScoringSettings(chunk_rows=chunk_rows),
        )
    pieces, whole = (pd.read_parquet(files[n].path) for n in (7, 1000))

    assert files[7].scored == files[1000].scored == len(users.fresh)
    assert pieces["user_id"].tolist() == sorted(users.fresh)
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
    online_repo: tuple[TestRepo, OnlineUsers], registry: str, tmp_path: Path
) -> None:
    """The table vanishes after chunk 1 is scored: a later chunk's retrieval fails.

    Up to ``_CHUNKS_AHEAD`` retrieved chunks may wait for the scoring process, so chunks of
    2 users leave many chunks to read after the table has gone.
    """
    from serving.batch_score import _CHUNKS_AHEAD

    repo, users = online_repo
    out = tmp_path / "scores.parquet"
    stream = _MovesTheOfflineTable(repo.data.user_features_path)
    try:
        with pytest.raises(ScoreFailure, match="offline retrieval failed"):
            score_users(
                out=out,
                at=pd.Timestamp.now(tz="UTC").to_pydatetime(),
                users=np.array(users.fresh),
                feast=repo.feast,
                mlflow=MlflowSettings(tracking_uri=registry),
                settings=ScoringSettings(chunk_rows=2),
                progress=stream,  # type: ignore[arg-type]
            )
    finally:
        stream.restore()

    assert len(users.fresh) > 2 * (1 + _CHUNKS_AHEAD)
    # the chunks read ahead before the table left may still be scored
    assert 1 <= len(stream.lines) <= 1 + _CHUNKS_AHEAD
    assert list(tmp_path.iterdir()) == []
