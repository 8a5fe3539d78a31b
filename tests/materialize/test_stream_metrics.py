"""The stream worker's freshness histogram: Prometheus' semantics, served on /metrics."""

from __future__ import annotations

import signal
import subprocess
import time
import urllib.request

import numpy as np
import pytest

from materialize.stream.metrics import FRESHNESS_BUCKETS, BatchHistogram, Latencies
from tests.utils.feast_repo import TestRepo
from tests.utils.materialize import AppliedRepo
from tests.utils.services import redis_client
from tests.utils.serving import free_port
from tests.utils.stream import CHURN, new_stream_key, stream_environment


def _samples(exposition: str, name: str) -> dict[str, float]:
    from prometheus_client.parser import text_string_to_metric_families

    return {
        sample.name + str(sample.labels.get("le", "")): sample.value
        for family in text_string_to_metric_families(exposition)
        if family.name == name
        for sample in family.samples
    }


@pytest.mark.unit
def test_batches_of_observations_bin_like_a_prometheus_histogram() -> None:
    from prometheus_client import CollectorRegistry, Histogram, generate_latest

    values = np.array([0.0, 0.01, 0.0100001, 0.2, 3, 4000, 0.05])
    reference_registry, ours_registry = CollectorRegistry(), CollectorRegistry()
    reference = Histogram("h", "doc", buckets=FRESHNESS_BUCKETS, registry=reference_registry)
    for value in values:
        reference.observe(float(value))
    ours = BatchHistogram("h", "doc", FRESHNESS_BUCKETS)
    ours.observe(values[:3])
    ours.observe(values[3:])
    ours_registry.register(ours)

    expected = _samples(generate_latest(reference_registry).decode(), "h")
    got = _samples(generate_latest(ours_registry).decode(), "h")
    assert got.pop("h_sum") == pytest.approx(expected.pop("h_sum"))
    assert got == {name: value for name, value in expected.items() if "created" not in name}


@pytest.mark.unit
def test_latency_percentiles_are_per_event_to_the_millisecond() -> None:
    latencies = Latencies()
    latencies.add(np.array([3.2] * 98 + [40.5, 250.0]))

    assert latencies.percentiles() == (4.0, 41.0, 250.0)


def test_the_worker_serves_freshness_of_every_applied_event(
    tmp_path_factory: pytest.TempPathFactory, redis_available: None
) -> None:
    applied = AppliedRepo(tmp_path_factory.mktemp("stream-metrics"))
    repo: TestRepo = applied.repo
    key, port, client = new_stream_key(), free_port(), redis_client()
    worker = subprocess.Popen(
        [CHURN, "stream"],
        env=stream_environment(repo, key, CHURN_STREAM_METRICS_PORT=str(port)),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while not client.exists(key) and time.monotonic() < deadline:
            time.sleep(0.1)
        pipe = client.pipeline(transaction=False)
        for index in range(50):
            event = {
                "event_id": f"m{index}",
                "user_id": str(900 + index % 3),
                "event_type": "login",
                "event_time": f"{time.time():.6f}",
            }
            pipe.xadd(key, event)
        pipe.xadd(key, {"event_id": "bad", "user_id": "x", "event_type": "a", "event_time": "1"})
        pipe.execute()
        samples: dict[str, float] = {}
        while time.monotonic() < deadline:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
                samples = _samples(reply.read().decode(), "churn_stream_freshness_seconds")
            if samples.get("churn_stream_freshness_seconds_count") == 50:
                break
            time.sleep(0.1)
    finally:
        worker.send_signal(signal.SIGTERM)
        out, err = worker.communicate(timeout=120)
        applied.close()

    assert worker.returncode == 0, err
    assert samples["churn_stream_freshness_seconds_count"] == 50  # the dead letter is not
    assert samples["churn_stream_freshness_seconds_bucket+Inf"] == 50
    assert 0 < samples["churn_stream_freshness_seconds_sum"] < 50 * 60
    assert "51 entries: 50 applied" in out
