"""Factories and readers for materialization tests: small offline tables, raw online state."""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from core.settings import FeastProfile
from tests.utils.feast_repo import TestRepo, make_feature_repo
from tests.utils.services import delete_project_keys, redis_client, unique_name

# A fixed materialization end, so expectations do not depend on the clock.
END = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
START = END - timedelta(days=21)
ISO = "%Y-%m-%dT%H:%M:%S"  # how the feast command line takes times


def make_user_features(
    *,
    users: int = 300,
    snapshots: int = 3,
    end: datetime = END,
    seed: int = 7,
) -> pd.DataFrame:
    """A user-features table (contract schema) with the cases materialization must handle.

    Each user has ``snapshots`` rows spread over the 30 days before ``end``, with about 10%
    null feature values. On top of that: rows after ``end`` (must be ignored), users whose
    only rows are older than the 21-day window, and a tie on ``event_timestamp`` that
    ``created`` breaks.
    """
    rng = np.random.default_rng(seed)
    user_ids = np.repeat(np.arange(1, users + 1, dtype="int64"), snapshots)
    # Distinct whole-second offsets per user, so the latest row of each user is unique.
    offsets = np.concatenate(
        [rng.choice(30 * 86_400, size=snapshots, replace=False) for _ in range(users)]
    )
    event = pd.Timestamp(end) - pd.to_timedelta(offsets, unit="s")
    frame = pd.DataFrame(
        {
            "user_id": user_ids,
            "event_timestamp": event,
            "created": event + pd.Timedelta(minutes=5),
            "feature_1": np.round(rng.gamma(2.0, 3.0, size=len(user_ids)), 6),
            "feature_2": np.round(rng.normal(0.0, 2.0, size=len(user_ids)), 6),
        }
    )
    frame.loc[rng.random(len(frame)) < 0.1, "feature_1"] = np.nan
    frame.loc[rng.random(len(frame)) < 0.1, "feature_2"] = np.nan
    extra = pd.DataFrame(
        {
            # user 1: a row after `end` that must not be materialized
            # user 2: same event time twice; the later `created` wins
            # users beyond `users`: only rows older than the window
            "user_id": [1, 2, 2, users + 1, users + 2],
            "event_timestamp": [
                pd.Timestamp(end) + pd.Timedelta(hours=1),
                pd.Timestamp(end) - pd.Timedelta(seconds=1),
                pd.Timestamp(end) - pd.Timedelta(seconds=1),
                pd.Timestamp(end) - pd.Timedelta(days=40),
                pd.Timestamp(end) - pd.Timedelta(days=50),
            ],
            "created": [
                pd.Timestamp(end) + pd.Timedelta(hours=1),
                pd.Timestamp(end),
                pd.Timestamp(end) + pd.Timedelta(minutes=1),
                pd.Timestamp(end) - pd.Timedelta(days=40),
                pd.Timestamp(end) - pd.Timedelta(days=50),
            ],
            "feature_1": [999.0, 1.0, 2.0, 3.0, 4.0],
            "feature_2": [999.0, 10.0, 20.0, 30.0, 40.0],
        }
    )
    frame = pd.concat([frame, extra], ignore_index=True)
    frame["user_id"] = frame["user_id"].astype("int64")
    for column in ("event_timestamp", "created"):
        frame[column] = pd.to_datetime(frame[column], utc=True).astype("datetime64[ns, UTC]")
    # Shuffled, as ingest output need not be sorted.
    return frame.sample(frac=1.0, random_state=seed).reset_index(drop=True)


def use_engine(repo: TestRepo, engine: str = "fast", **options: object) -> None:
    """Point every profile of a test repo at an engine: ``fast`` (ours), ``spark`` (ours on
    Spark) or ``stock`` (Feast's local engine).

    Options go into the ``batch_engine`` block (e.g. ``chunk_rows=50``).
    """
    engine_types = {
        "fast": "materialize.engine.FastEngine",
        "spark": "materialize.engine.backends.spark.SparkEngine",
    }
    if engine == "stock":
        block = "batch_engine: local\n"
    else:
        lines = ["batch_engine:", f"  type: {engine_types[engine]}"]
        lines += [f"  {name}: {value}" for name, value in options.items()]
        block = "\n".join(lines) + "\n"
    for path in repo.feast.repo_path.glob("feature_store*.yaml"):
        text = re.sub(r"^batch_engine:.*\n(?:[ \t]+.*\n)*", "", path.read_text(), flags=re.M)
        path.write_text(text + block)


def point_churn_at(repo: TestRepo, monkeypatch: Any) -> TestRepo:
    """Point the `churn` command line at ``repo`` through the environment; return it."""
    monkeypatch.setenv("CHURN_FEAST_REPO_PATH", str(repo.feast.repo_path))
    monkeypatch.setenv("CHURN_REDIS_URL", repo.feast.redis_url)
    return repo


def corrupt_online_feature_2(repo: TestRepo, value: float) -> int:
    """Overwrite ``feature_2`` online for the lowest user whose features are all set.

    Returns:
        That user's id.
    """
    from feast.protos.feast.types.Value_pb2 import Value

    from core.feast_adapter.layout import RedisLayout

    online = decode_redis(redis_hashes(repo.project))
    user = min(user for user, (_, values) in online.items() if None not in values.values())
    layout = RedisLayout()
    key = layout.int64_redis_key("user_id", user, project=repo.project, version=3)
    field = layout.feature_field(VIEW, "feature_2")
    redis_client().hset(key, field, Value(double_val=value).SerializeToString())
    return user


def set_key_ttl(repo: TestRepo, seconds: int) -> None:
    """Give the Redis online store of every profile a ``key_ttl_seconds``."""
    for path in repo.feast.repo_path.glob("feature_store*.yaml"):
        text = re.sub(r"^  key_ttl_seconds: .*\n", "", path.read_text(), flags=re.M)
        text = re.sub(
            r"^(  connection_string: .*\n)",
            rf"\1  key_ttl_seconds: {seconds}\n",
            text,
            flags=re.M,
        )
        path.write_text(text)


def latest_rows(frame: pd.DataFrame, *, start: datetime, end: datetime) -> pd.DataFrame:
    """What materializing [start, end] must leave online: each user's latest row, by user."""
    inside = frame[(frame["event_timestamp"] >= start) & (frame["event_timestamp"] <= end)]
    ordered = inside.sort_values(["event_timestamp", "created"], kind="stable")
    return ordered.groupby("user_id").tail(1).set_index("user_id").sort_index()


def write_user_features(path: Path, frame: pd.DataFrame) -> Path:
    """Write ``frame`` as the user-features Parquet table at ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(path, index=False)
    return path


def _per_key(project: str, command: str, db: int) -> dict[bytes, object]:
    client = redis_client(db)
    keys = list(client.scan_iter(match=f"*{project}", count=1000))
    pipe = client.pipeline(transaction=False)
    for key in keys:
        getattr(pipe, command)(key)
    suffix = len(project.encode())
    return {key[:-suffix]: value for key, value in zip(keys, pipe.execute(), strict=True)}


def kill_at_stderr_line(
    command: list[str], marker: str, *, env: dict[str, str], cwd: Path | None = None
) -> int:
    """Run ``command``, SIGKILL it when its stderr shows ``marker``; return its exit status."""
    import signal
    import subprocess
    import time

    process = subprocess.Popen(
        command, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    assert process.stderr is not None
    deadline = time.monotonic() + 120
    for line in process.stderr:
        if marker in line or time.monotonic() > deadline:
            break
    process.send_signal(signal.SIGKILL)
    status = process.wait()
    process.stderr.close()
    return status


def write_offline_table(users: int, path: Path | None = None) -> pd.DataFrame:
    """Write :func:`make_user_features` at ``path`` (default: where the test's data
    settings point); return it."""
    from core.settings import DataSettings

    frame = make_user_features(users=users)
    write_user_features(path or DataSettings().user_features_path, frame)
    return frame


class AppliedRepo:
    """A test repo applied once (``feast apply`` is slow), reset to that state per test.

    Its offline table lives under its own data folder, where the applied source points.
    :meth:`fresh` restores the profiles, the registry (no materialization intervals) and
    the SQLite store, and deletes the project's Redis keys.
    """

    def __init__(
        self,
        root: Path,
        *,
        profile: FeastProfile = "production",
        spark_master: str = "local[2]",
        extra_definitions: dict[str, str] | None = None,
        redis_cluster_nodes: str | None = None,
    ) -> None:
        import pytest

        from materialize.apply import apply_feature_repo

        self.repo = make_feature_repo(
            root,
            project=unique_name("churn_test"),
            profile=profile,
            spark_master=spark_master,
            redis_cluster_nodes=redis_cluster_nodes,
        )
        # Further Feast definition files (name -> source), applied with the repo's own.
        for name, source in (extra_definitions or {}).items():
            (self.repo.feast.repo_path / name).write_text(source)
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("CHURN_DATA_DIR", str(self.repo.data.data_dir))
            apply_feature_repo(self.repo.feast)
        paths = [*self.repo.feast.repo_path.glob("feature_store*.yaml")]
        paths += [path for path in self.repo.data.data_dir.glob("*.db")]
        self._files = {path: path.read_bytes() for path in paths}

    def fresh(self) -> TestRepo:
        """The repo as just applied, with no online data."""
        for path, content in self._files.items():
            path.write_bytes(content)
        self._delete_keys()
        return self.repo

    def _delete_keys(self) -> None:
        nodes = self.repo.feast.redis_cluster_nodes
        if self.repo.feast.profile == "cluster" and nodes:
            from tests.utils.redis_cluster import delete_cluster_project_keys

            delete_cluster_project_keys(nodes, self.repo.project)
        else:
            delete_project_keys(self.repo.project)

    def write_table(self, users: int) -> pd.DataFrame:
        """Write the offline table the applied repo reads; return it."""
        return write_offline_table(users, self.repo.data.user_features_path)

    def close(self) -> None:
        """Delete the project's Redis keys."""
        self._delete_keys()


def applied_repo_fixture(profile: FeastProfile = "production") -> Any:
    """A module-scoped fixture ``applied``: an :class:`AppliedRepo` of the profile."""
    import pytest

    @pytest.fixture(scope="module")
    def applied(
        tmp_path_factory: pytest.TempPathFactory, redis_available: None
    ) -> Iterator[AppliedRepo]:
        repo = AppliedRepo(tmp_path_factory.mktemp("applied"), profile=profile)
        yield repo
        repo.close()

    return applied


def redis_hashes(project: str, db: int = 0) -> dict[bytes, dict[bytes, bytes]]:
    """Every hash stored for ``project``, by serialized entity key (the project removed)."""
    return _per_key(project, "hgetall", db)  # type: ignore[return-value]


def feast_fields(hashes: dict[bytes, dict[bytes, bytes]]) -> dict[bytes, dict[bytes, bytes]]:
    """The hashes without the ``_created:<view>`` field our writer adds (Feast never reads it)."""
    return {
        key: {name: value for name, value in fields.items() if not name.startswith(b"_created:")}
        for key, fields in hashes.items()
    }


def redis_ttls(project: str, db: int = 0) -> dict[bytes, int]:
    """Remaining time to live (seconds; -1: none) of every key of ``project``."""
    return _per_key(project, "ttl", db)  # type: ignore[return-value]


def sqlite_rows(db_path: Path, table: str) -> dict[tuple[bytes, str], tuple[Any, ...]]:
    """Every row of a Feast SQLite online table, raw, keyed by (entity_key, feature_name)."""
    connection = sqlite3.connect(db_path)
    try:
        cursor = connection.execute(
            f"SELECT entity_key, feature_name, value, value_text, vector_value, event_ts, "
            f'created_ts FROM "{table}"'
        )
        return {(row[0], row[1]): tuple(row[2:]) for row in cursor.fetchall()}
    finally:
        connection.close()


FEATURES = ["feature_1", "feature_2"]
VIEW = "user_features"


def expected_online(
    frame: pd.DataFrame, *, start: datetime, end: datetime
) -> dict[int, tuple[datetime, dict[str, float | None]]]:
    """Event time and feature values each user must have online after [start, end]."""
    latest = latest_rows(frame, start=start, end=end)
    return {
        int(user): (
            row.event_timestamp.to_pydatetime(),
            {name: None if pd.isna(row[name]) else float(row[name]) for name in FEATURES},
        )
        for user, row in latest.iterrows()
    }


def decode_redis(
    hashes: dict[bytes, dict[bytes, bytes]],
) -> dict[int, tuple[datetime, dict[str, float | None]]]:
    """Decode Feast-layout hashes (from :func:`redis_hashes`) of the user_features view."""
    from feast.infra.key_encoding_utils import deserialize_entity_key
    from feast.protos.feast.types.Value_pb2 import Value
    from feast.type_map import feast_value_type_to_python_type
    from google.protobuf.timestamp_pb2 import Timestamp

    from core.feast_adapter.layout import RedisLayout

    layout = RedisLayout()
    decoded: dict[int, tuple[datetime, dict[str, float | None]]] = {}
    for key, fields in hashes.items():
        entity = deserialize_entity_key(key, entity_key_serialization_version=3)
        stamp = Timestamp()
        stamp.ParseFromString(fields[layout.timestamp_field(VIEW)])
        values: dict[str, float | None] = {}
        for name in FEATURES:
            value = Value()
            value.ParseFromString(fields[layout.feature_field(VIEW, name)])
            values[name] = feast_value_type_to_python_type(value)
        decoded[entity.entity_values[0].int64_val] = (stamp.ToDatetime(tzinfo=UTC), values)
    return decoded


def engine_results(store: Any) -> list[Any]:
    """What the batch engine Feast built for ``store`` recorded (one entry per view run)."""
    from core.feast_adapter.store import batch_engine_of

    return list(batch_engine_of(store).results)


def materialize_range(repo: TestRepo, start: object, end: object) -> list[Any]:
    """Materialize [start, end] through the SDK with the repo's engine; return its stats."""
    from core.feast_store import open_feature_store

    store = open_feature_store(repo.feast)
    store.materialize(start, end)
    return engine_results(store)


def online_values(repo: TestRepo, users: list[int]) -> dict[str, Any]:
    """What Feast's SDK reads for ``users`` at END: churn_v1, and the view with event times."""
    from core.feast_store import open_feature_store

    store = open_feature_store(repo.feast)
    rows = [{"user_id": user, "event_timestamp": END} for user in users]
    service = store.get_feature_service("churn_v1")
    return {
        "service": store.get_online_features(features=service, entity_rows=rows).to_dict(),
        "view": store.get_online_features(
            features=[f"{VIEW}:{name}" for name in FEATURES], entity_rows=rows
        ).to_dict(include_event_timestamps=True),
    }


def write_microsecond_table(path: Path, frame: pd.DataFrame) -> None:
    """Write an offline table with microsecond times (Spark cannot read Parquet nanos)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    times = {column: "datetime64[us, UTC]" for column in ("event_timestamp", "created")}
    frame.astype(times).to_parquet(path, index=False)
