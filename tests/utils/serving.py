"""Factories for serving tests: a registered champion, online features, servers, a Redis."""

from __future__ import annotations

import contextlib
import shutil
import signal
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from core.feast_store import open_feature_store
from core.model_trust import HASH_TAG, logged_model_sha256
from materialize.apply import apply_feature_repo
from tests.utils.feast_repo import TestRepo
from tests.utils.features import CHURN_V1_FEATURES, write_user_features
from tests.utils.mlflow_store import copy_empty_store

MODEL_NAME = "churn-predictor"


def tracking_uri_in(folder: Path) -> str:
    """A fresh SQLite MLflow tracking URI under ``folder`` (an empty store, already migrated)."""
    return f"sqlite:///{copy_empty_store(folder / 'mlflow.db')}"


def training_frame(rows: int = 400, *, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    """Synthetic churn_v1 columns and labels: churn falls with usage (feature_1)."""
    rng = np.random.default_rng(seed)
    feature_1 = rng.gamma(2.0, 3.0, size=rows)
    feature_2 = rng.normal(0.0, 2.0, size=rows)
    day = rng.integers(0, 7, size=rows)
    frame = pd.DataFrame(
        {
            "feature_1": feature_1,
            "feature_2": feature_2,
            "feature_ratio": feature_1 / (feature_2 + 1e-8),
            "feature_log": np.log1p(feature_1),
            "day_of_week_sin": np.sin(2 * np.pi * day / 7),
            "day_of_week_cos": np.cos(2 * np.pi * day / 7),
            "is_weekend": (day >= 5).astype(float),
        }
    )
    labels = (rng.random(rows) < 1 / (1 + np.exp(feature_1 - 6.0))).astype(int)
    return frame, labels


def fit_model(
    *,
    seed: int = 0,
    invert: bool = False,
    features: Sequence[str] = CHURN_V1_FEATURES,
    trees: int = 20,
    depth: int = 3,
    rows: int = 400,
) -> Any:
    """A GradientBoostingClassifier fitted on a DataFrame with ``features`` columns.

    Small by default (tests); the benchmark asks for a production-sized one. ``invert``
    flips the labels, so a second version gives visibly different answers.
    """
    from sklearn.ensemble import GradientBoostingClassifier

    frame, labels = training_frame(rows, seed=seed)
    if invert:
        labels = 1 - labels
    frame = frame.rename(columns=dict(zip(CHURN_V1_FEATURES, features, strict=True)))
    model = GradientBoostingClassifier(n_estimators=trees, max_depth=depth, random_state=seed)
    return model.fit(frame[list(features)], labels)


def register_model(
    tracking_uri: str,
    *,
    project: str,
    model: Any = None,
    name: str = MODEL_NAME,
    feature_service: str = "churn_v1",
    features: Sequence[str] = CHURN_V1_FEATURES,
    tags: dict[str, str] | None = None,
    alias: str | None = "champion",
) -> str:
    """Log ``model`` with mlflow.sklearn (skops), register it, tag it, set ``alias``.

    The tags are the training contract's (``feast.feature_service``, ``feast.features``,
    ``feast.project``, ``artifact.sha256`` of the logged files); ``tags`` overrides or
    adds some (an empty value removes one).
    Returns the new version.
    """
    import mlflow
    import skops.io
    from mlflow import MlflowClient

    model = model if model is not None else fit_model(features=features)
    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    experiment = client.get_experiment_by_name("serving-tests")
    if experiment is None:
        artifacts = Path(tracking_uri.removeprefix("sqlite:///")).parent / "artifacts"
        experiment_id = client.create_experiment("serving-tests", artifacts.as_uri())
    else:
        experiment_id = experiment.experiment_id
    all_tags = {
        "feast.feature_service": feature_service,
        "feast.features": ",".join(features),
        "feast.project": project,
        **(tags or {}),
    }
    with contextlib.suppress(Exception):
        client.create_registered_model(name)
    # log_model logs to the active (global) run, and the registry resolves a models:/ source
    # through the global URI too (an MLflow TODO): point both here, then restore.
    previous_uri = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(tracking_uri)
    try:
        with mlflow.start_run(experiment_id=experiment_id) as run:
            info = mlflow.sklearn.log_model(
                model,
                name="model",
                serialization_format="skops",
                skops_trusted_types=skops.io.get_untrusted_types(data=skops.io.dumps(model)),
                # As training logs it (training/mlflow_logging.py): MLflow's requirement
                # inference would load the model in a Python process of its own.
                pip_requirements=mlflow.sklearn.get_default_pip_requirements(include_skops=True),
            )
        all_tags = {HASH_TAG: logged_model_sha256(info.model_uri, tracking_uri), **all_tags}
        version = client.create_model_version(
            name,
            info.model_uri,
            run_id=run.info.run_id,
            tags={key: value for key, value in all_tags.items() if value},
        )
    finally:
        mlflow.set_tracking_uri(previous_uri)
    if alias:
        client.set_registered_model_alias(name, alias, version.version)
    return str(version.version)


def tamper_model_files(tracking_uri: str, version: str, *, name: str = MODEL_NAME) -> Path:
    """Change a registered version's model file where the registry keeps it; its path.

    What an attacker with write access to the artifact store would do: the version, its
    tags (the recorded hash included) and its alias stay as they were.
    """
    from urllib.parse import urlparse

    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    location = Path(urlparse(client.get_model_version_download_uri(name, version)).path)
    [model_file] = location.glob("*.skops")
    with model_file.open("ab") as stream:
        stream.write(b"\0tampered")
    return model_file


def set_champion(tracking_uri: str, version: str, *, name: str = MODEL_NAME) -> None:
    """Move the ``champion`` alias to ``version``."""
    from mlflow import MlflowClient

    MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri).set_registered_model_alias(
        name, "champion", version
    )


@dataclass(frozen=True)
class OnlineUsers:
    """Users written to the online store, by the case they exercise."""

    fresh: list[int]  # complete features, written within the TTL
    stale: int  # only a value older than the 21-day TTL
    missing_feature: int  # fresh, but feature_2 is null
    unknown: int  # never written


def load_online_features(repo: TestRepo, *, now: datetime, fresh_users: int = 40) -> OnlineUsers:
    """Apply the repo, write user features and materialize them with Feast into Redis."""
    users = OnlineUsers(
        fresh=list(range(1, fresh_users + 1)), stale=900, missing_feature=901, unknown=999_999
    )
    rng = np.random.default_rng(3)
    rows: list[tuple[int, datetime, float | None, float | None]] = [
        (
            user,
            now - timedelta(hours=int(rng.integers(1, 100))),
            float(np.round(rng.gamma(2.0, 3.0), 4)),
            float(np.round(rng.normal(0.0, 2.0), 4)),
        )
        for user in users.fresh
    ]
    rows.append((users.stale, now - timedelta(days=30), 5.0, 1.0))
    rows.append((users.missing_feature, now - timedelta(hours=2), 5.0, None))
    write_user_features(repo.data.user_features_path, rows)
    apply_feature_repo(repo.feast)
    store = open_feature_store(repo.feast)
    store.materialize(start_date=now - timedelta(days=60), end_date=now)
    return users


def read_features(online: Any, plan: Any, user_ids: list[int], when: datetime) -> Any:
    """Read ``user_ids`` at ``when`` with an ``OnlineFeatures`` reader, then close it."""
    import asyncio

    async def go() -> Any:
        try:
            return await online.read(plan, user_ids, [when] * len(user_ids))
        finally:
            await online.close()

    return asyncio.run(go())


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextlib.contextmanager
def running_server(app: Any) -> Iterator[str]:
    """Serve ``app`` with uvicorn on loopback in a thread; yield its base URL.

    Leaving the block stops the server gracefully, so the app's lifespan shutdown (the
    prediction log's final write) has run when the block returns.
    """
    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()


class ThrowawayRedis:
    """A private redis-server on a free port that a test can stop, freeze and restart.

    Data survive a stop (saved to an RDB file in ``folder``), as with a real restart.
    """

    def __init__(self, folder: Path):
        self.folder = folder
        self.port = free_port()
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """Feast connection string."""
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        """Start (or restart) the server and wait until it answers."""
        import redis

        self.folder.mkdir(parents=True, exist_ok=True)
        self._process = subprocess.Popen(
            [
                shutil.which("redis-server") or "redis-server",
                "--bind",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--dir",
                str(self.folder),
                "--dbfilename",
                "dump.rdb",
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=1)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                return
            except redis.exceptions.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def stop(self) -> None:
        """Save the data and shut the server down (connections are refused after)."""
        import redis

        if self._process is None:
            return
        with contextlib.suppress(redis.exceptions.ConnectionError):
            redis.Redis(host="127.0.0.1", port=self.port).shutdown(save=True)
        self._process.wait(timeout=10)
        self._process = None

    def crash(self) -> None:
        """Persist the data (as its RDB/AOF would have), then SIGKILL the server."""
        import redis

        assert self._process is not None
        redis.Redis(host="127.0.0.1", port=self.port).save()
        self._process.kill()
        self._process.wait(timeout=10)
        self._process = None

    def freeze(self) -> None:
        """Stop the process without closing sockets: requests hang until the timeout."""
        assert self._process is not None
        self._process.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        """Resume a frozen server."""
        assert self._process is not None
        self._process.send_signal(signal.SIGCONT)

    def close(self) -> None:
        """Kill the server if it still runs."""
        if self._process is not None:
            self.thaw()
            self._process.kill()
            self._process.wait(timeout=10)
            self._process = None


def materialized_on(
    server: ThrowawayRedis, root: Path, *, project: str
) -> tuple[TestRepo, OnlineUsers]:
    """A repo copy whose online store is ``server``, with a few users materialized."""
    import pytest

    from tests.utils.feast_repo import make_feature_repo

    root.mkdir(parents=True, exist_ok=True)
    repo = make_feature_repo(root, project=project)
    repo = TestRepo(
        repo.project, repo.feast.model_copy(update={"redis_url": server.url}), repo.data
    )
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CHURN_DATA_DIR", str(repo.data.data_dir))
        users = load_online_features(repo, now=datetime.now(UTC), fresh_users=3)
    return repo, users


def redis_client_for(redis_url: str) -> Any:
    """A synchronous client for a Feast connection string (``host:port[,db=N]``)."""
    import redis

    address, *options = redis_url.split(",")
    host, port = address.rsplit(":", 1)
    settings = dict(option.split("=", 1) for option in options)
    return redis.Redis(host=host, port=int(port), db=int(settings.get("db", 0)))


def write_online_values(repo: TestRepo, *, user_id: int, like: int, values: dict[str, Any]) -> None:
    """Give ``user_id`` the online row of user ``like``, with some feature values replaced.

    The values are written as Feast protobuf ``Value``s exactly where Feast keeps them, so
    a test can plant what ingest would never let through (a string, an infinity, a ratio
    denominator of zero) and see what the service makes of it.
    """
    from feast.infra.key_encoding_utils import serialize_entity_key
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.protos.feast.types.Value_pb2 import Value

    from serving.features import resolve_feature_plan

    store = open_feature_store(repo.feast)
    plan = resolve_feature_plan(
        store, service_name="churn_v1", features=CHURN_V1_FEATURES, project=None
    )
    [view] = plan.views

    def key(user: int) -> bytes:
        entity = EntityKey(join_keys=[plan.join_key], entity_values=[Value(int64_val=user)])
        version = int(store.config.entity_key_serialization_version)
        return serialize_entity_key(entity, version) + plan.project.encode()

    client = redis_client_for(repo.feast.redis_url)
    row = client.hgetall(key(like))
    assert row, f"user {like} has no online row to copy"
    for name, value in values.items():
        field = view.fields[view.features.index(name)]
        if isinstance(value, str):
            proto = Value(string_val=value)
        else:
            proto = Value(double_val=float(value))
        row[field] = proto.SerializeToString()
    client.delete(key(user_id))
    client.hset(key(user_id), mapping=row)


@dataclass(frozen=True)
class PoisonUsers:
    """Users whose online rows cannot become model inputs, by what is wrong."""

    zero_denominator: int  # feature_2 = -1e-8: the ratio view divides by zero
    text_in_ratio: int  # feature_2 is the text "abc": the ratio view raises
    text_value: int  # feature_1 is the text "1.5": the view copes, the value is not a number
    infinite: int  # feature_1 = inf: ratio and log come out infinite

    def kinds(self) -> dict[int, str]:
        """The error kind each poison user must get."""
        return {
            self.zero_denominator: "feature_transform_failed",
            self.text_in_ratio: "feature_transform_failed",
            self.text_value: "invalid_feature_value",
            self.infinite: "non_finite_features",
        }


def plant_poison_users(repo: TestRepo, *, like: int, first_id: int = 950) -> PoisonUsers:
    """Write the four poison users next to the good ones (copies of user ``like``)."""
    poison = PoisonUsers(first_id, first_id + 1, first_id + 2, first_id + 3)
    write_online_values(
        repo, user_id=poison.zero_denominator, like=like, values={"feature_2": -1e-8}
    )
    write_online_values(repo, user_id=poison.text_in_ratio, like=like, values={"feature_2": "abc"})
    write_online_values(repo, user_id=poison.text_value, like=like, values={"feature_1": "1.5"})
    write_online_values(repo, user_id=poison.infinite, like=like, values={"feature_1": np.inf})
    return poison


def churn_serve_environment(
    repo: TestRepo, tracking_uri: str, *, port: int, log_dir: Path, **settings: str
) -> dict[str, str]:
    """The environment of a ``churn serve`` process on this repo and registry.

    ``settings`` are extra ``CHURN_SERVING_*`` values (``inference_threads="2"``).
    """
    import os

    environment = {
        key: value
        for key, value in os.environ.items()
        # Model loading must work on MLflow's defaults, and Feast's metrics dir be ignored.
        if key not in ("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "PROMETHEUS_MULTIPROC_DIR")
        and not key.startswith(("OMP_", "CHURN_SERVING_"))
    }
    environment.update(
        CHURN_DATA_DIR=str(repo.data.data_dir),
        CHURN_FEAST_REPO_PATH=str(repo.feast.repo_path),
        CHURN_REDIS_URL=repo.feast.redis_url,
        MLFLOW_TRACKING_URI=tracking_uri,
        CHURN_SERVING_PORT=str(port),
        CHURN_PREDICTION_LOG_DIR=str(log_dir),
        **{f"CHURN_SERVING_{key.upper()}": value for key, value in settings.items()},
    )
    return environment


@contextlib.contextmanager
def churn_serve_process(
    environment: dict[str, str],
    *args: str,
    ready_timeout_s: float = 120,
    verify: ssl.SSLContext | None = None,
) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    """Run ``churn serve ARGS`` until it is ready; yield its URL and process.

    With ``verify`` (a context trusting its certificate) the service is expected to answer
    HTTPS, and the URL is ``https://``. Leaving the block sends SIGTERM and waits for the
    process to end (graceful stop); the caller reads ``process.returncode`` and
    ``process.output`` (stdout and stderr) after.
    """
    import sys

    import httpx

    churn = Path(sys.executable).with_name("churn")
    process = subprocess.Popen(
        [str(churn), "serve", "--log-level", "warning", *args],
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    scheme = "http" if verify is None else "https"
    url = f"{scheme}://127.0.0.1:{environment['CHURN_SERVING_PORT']}"
    try:
        deadline = time.monotonic() + ready_timeout_s
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"churn serve exited early:\n{process.communicate()[0]}")
            try:
                ready = httpx.get(f"{url}/ready", timeout=5, verify=verify or True)
                if ready.status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("churn serve did not become ready")
            time.sleep(0.2)
        yield url, process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=90)
        process.output = output  # type: ignore[attr-defined]


class SlowProxy:
    """A TCP proxy in front of a server that holds every reply for ``delay_s`` seconds.

    Stands in for a slow online store: Redis answers, but late (under the client timeout).
    """

    def __init__(self, target_host: str, target_port: int, *, delay_s: float):
        self.target = (target_host, target_port)
        self.delay_s = delay_s
        self.port = free_port()
        self._loop: Any = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._started = threading.Event()

    def __enter__(self) -> SlowProxy:
        self._thread.start()
        self._started.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def _run(self) -> None:
        import asyncio

        async def pipe(reader: Any, writer: Any, delay: float) -> None:
            with contextlib.suppress(Exception):
                while data := await reader.read(65536):
                    if delay:
                        await asyncio.sleep(delay)
                    writer.write(data)
                    await writer.drain()
            writer.close()

        async def handle(client_reader: Any, client_writer: Any) -> None:
            server_reader, server_writer = await asyncio.open_connection(*self.target)
            await asyncio.gather(
                pipe(client_reader, server_writer, 0.0),
                pipe(server_reader, client_writer, self.delay_s),
            )

        self._loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(asyncio.start_server(handle, "127.0.0.1", self.port))
        self._started.set()
        self._loop.run_forever()
