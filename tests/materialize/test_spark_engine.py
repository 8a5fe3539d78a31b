"""Our engine on Spark: the same online bytes as our DuckDB engine, newer-wins, counted."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pandas as pd
import pytest

from core.feast_store import open_feature_store
from tests.utils.feast_repo import TestRepo
from tests.utils.materialize import (
    END,
    START,
    VIEW,
    AppliedRepo,
    decode_redis,
    engine_results,
    expected_online,
    make_user_features,
    redis_hashes,
    use_engine,
    write_microsecond_table,
)
from tests.utils.spark import SparkCluster

# Feast warns "experimental" whenever a SparkSource is built (each registry load): the spark
# profile uses it on purpose.
pytestmark = pytest.mark.filterwarnings(
    "ignore:The spark data source API is an experimental feature:RuntimeWarning"
)


@pytest.fixture(scope="module")
def repos(
    tmp_path_factory: pytest.TempPathFactory, redis_available: None, spark_cluster: SparkCluster
) -> Iterator[dict]:
    """Two applied repos over the same offline table: the production profile (our DuckDB
    engine) and the spark profile on the standalone cluster (its engine: ours on Spark)."""
    frame = make_user_features(users=400)
    frame = pd.concat(
        [frame, frame.iloc[[0]].assign(user_id=pd.NA, event_timestamp=END - timedelta(hours=2))],
        ignore_index=True,
    ).astype({"user_id": "Int64"})
    duckdb = AppliedRepo(tmp_path_factory.mktemp("duckdb"))
    spark_root = tmp_path_factory.mktemp("spark")
    # `feast apply` on the spark profile reads the source's schema: the table must exist.
    write_microsecond_table(spark_root / "data" / "offline" / "user_features.parquet", frame)
    spark_repo = AppliedRepo(spark_root, profile="spark", spark_master=spark_cluster.master_url)
    try:
        yield {"duckdb": duckdb, "spark": spark_repo, "frame": frame}
    finally:
        duckdb.close()
        spark_repo.close()


def _materialize(repo: TestRepo, start: object, end: object) -> list:
    store = open_feature_store(repo.feast)
    store.materialize(start, end)
    return engine_results(store)


def test_spark_writes_the_bytes_of_the_duckdb_engine_and_reruns_change_nothing(repos: dict) -> None:
    frame = repos["frame"]
    duckdb, on_spark = repos["duckdb"].fresh(), repos["spark"].fresh()
    for repo in (duckdb, on_spark):
        write_microsecond_table(repo.data.user_features_path, frame)
    use_engine(duckdb, "fast", chunk_rows=128)
    # The profile's own engine block, with small batches so every task writes several.
    use_engine(on_spark, "spark", partitions=3, arrow_batch_rows=50, write_batch_rows=20)

    (reference,) = _materialize(duckdb, START, END)
    (first,) = _materialize(on_spark, START, END)
    expected = redis_hashes(duckdb.project)
    ours = redis_hashes(on_spark.project)

    assert first.engine == "spark" and reference.engine == "fast"
    keys = expected.keys() | ours.keys()
    mismatches = [key for key in keys if expected.get(key) != ours.get(key)]
    assert not mismatches  # every field, _created included, byte for byte
    keyed = frame.dropna(subset=["user_id"])
    assert decode_redis(ours) == expected_online(keyed, start=START, end=END)
    assert (first.entities, first.written) == (len(expected), len(expected))
    assert (first.rows_in_range, first.rejected_rows) == (reference.rows_in_range, 1)

    # The engine's Arrow batch settings hold for its own query only: the session's are put back.
    from pyspark.sql import SparkSession

    from materialize.engine.backends.spark import session_settings

    session = SparkSession.getActiveSession()
    assert session is not None
    arrow = (
        "spark.sql.execution.arrow.maxRecordsPerBatch",
        "spark.sql.execution.arrow.maxBytesPerBatch",
    )
    with session_settings(session, {arrow[0]: "1234", arrow[1]: "32m"}):
        (second,) = _materialize(on_spark, START, END)
        after = [session.conf.get(name, None) for name in arrow]
    assert redis_hashes(on_spark.project) == ours
    assert (second.entities, second.written) == (len(expected), 0)
    assert after == ["1234", "32m"]


def test_an_older_range_on_spark_never_replaces_newer_values(repos: dict) -> None:
    frame = repos["frame"]
    repo = repos["spark"].fresh()
    write_microsecond_table(repo.data.user_features_path, frame)  # the profile's own engine block

    _materialize(repo, START, END)
    newer = redis_hashes(repo.project)
    (older,) = _materialize(repo, START - timedelta(days=30), END - timedelta(days=10))
    after = redis_hashes(repo.project)

    assert {key: after[key] for key in newer} == newer
    assert older.written == len(set(after) - set(newer)) > 0
    keyed = frame.dropna(subset=["user_id"])
    assert decode_redis(after) == expected_online(keyed, start=START - timedelta(days=30), end=END)


def test_an_executor_writes_its_batches_without_importing_feast(
    repos: dict, tmp_path: Path
) -> None:
    """The writer the engine pickles for its executors, run in a fresh Python process.

    Importing Feast cost each executor's Python worker about 4 s per run; the executors'
    code path must not import it (nor DuckDB or Typer, which only the driver's side needs),
    and must write what the engine writes.
    """
    import subprocess
    import sys

    import cloudpickle
    import pyarrow as pa

    from core.compute.sampling import CREATED_COLUMN, EVENT_COLUMN
    from core.feast_adapter.store import batch_engine_of

    repo = repos["spark"].fresh()
    store = open_feature_store(repo.feast)
    writer = batch_engine_of(store)._partition_writer(store.get_feature_view("user_features"))
    at = pd.Timestamp(END - timedelta(hours=1))
    before = at - timedelta(hours=1)
    # As a task receives them: grouped by entity (nulls first, as Spark sorts them).
    batch = pa.table(
        {
            "user_id": pa.array([None, 7, 7, 8], pa.int64()),
            "feature_1": [3.5, 1.0, 1.5, 2.5],
            "feature_2": [0.0, -2.0, -1.0, None],
            EVENT_COLUMN: pa.array([at, before, at, at], pa.timestamp("us", tz="UTC")),
            CREATED_COLUMN: pa.array([at, at, at, None], pa.timestamp("us", tz="UTC")),
        }
    ).to_batches()[0]
    task = tmp_path / "task.pickle"
    task.write_bytes(cloudpickle.dumps((writer, batch)))
    run = (
        "import pickle, sys\n"
        "writer, batch = pickle.loads(open(sys.argv[1], 'rb').read())\n"
        "(counts,) = writer(iter([batch]))\n"
        "print(counts.to_pydict())\n"
        "tops = {name.split('.')[0] for name in sys.modules}\n"
        "print(sorted(tops & {'feast', 'duckdb', 'typer'}))\n"
    )

    completed = subprocess.run(
        [sys.executable, "-c", run, str(task)], capture_output=True, text=True, check=True
    )

    counts, driver_only_modules = completed.stdout.strip().splitlines()
    assert counts == "{'entities': [2], 'written': [2], 'rows': [3], 'rejected': [1]}"
    assert driver_only_modules == "[]"
    written = decode_redis(redis_hashes(repo.project))
    assert {user: values for user, (_, values) in written.items()} == {
        7: {"feature_1": 1.5, "feature_2": -1.0},  # its latest row, of two
        8: {"feature_1": 2.5, "feature_2": None},
    }


def test_the_skew_check_on_spark_samples_by_seed_and_finds_no_skew(repos: dict) -> None:
    """The spark backend's sample (a seeded-hash top-k on the executors) and point-in-time
    values (staged both ways): the skew check runs on them."""
    from core.compute import offline_compute
    from core.feast_store import feature_store_session
    from materialize.skew import check_skew

    repo = repos["spark"].fresh()
    write_microsecond_table(repo.data.user_features_path, repos["frame"])
    _materialize(repo, START, END)

    with feature_store_session(repo.feast) as store:
        compute = offline_compute(store)
        view = store.get_feature_view(VIEW)
        first = compute.sample_entities(view, at=END, size=30, seed=5)
        again = compute.sample_entities(view, at=END, size=30, seed=5)
        other = compute.sample_entities(view, at=END, size=30, seed=6)
    report = check_skew(repo.feast, sample=40, seed=1)

    assert compute.name == "spark"
    assert len(first) == 30 and len({row["user_id"] for row in first}) == 30
    assert first == again and first != other
    assert all(row["user_id"] is not None for row in first)
    assert (report.entities, report.mismatches) == (40, 0)
