"""Benchmark: what ``"explain": true`` adds to a single ``/predict`` (p50, p99).

``measure_explain_latency(base_url, user_ids)`` drives a running ``churn serve`` with one
connection, alternating plain and explained requests for the same users (so both see the
same machine load), and returns the percentiles of each and the p50 difference; the issue's
goal is at most 1 ms at p50. ``bench/serve.py`` calls it on its own service.

Standalone, from the checkout root (as a module, so ``bench/materialize.py`` does not
shadow the ``materialize`` package)::

    .venv/bin/python -m bench.explain_latency --url http://127.0.0.1:8000 --users 1000
    .venv/bin/python -m bench.explain_latency          # its own service, both model families

Without ``--url`` it builds the workspace of ``bench/serve.py`` (private Feast project on
the local Redis, 10,000 users), serves a 200-tree depth-5 GradientBoostingClassifier, then a
345-tree HistGradientBoostingClassifier, and measures each; everything is removed after.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

GOAL_MS = 1.0


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def measure_explain_latency(
    base_url: str, user_ids: Sequence[int], *, requests: int = 2000, warmup: int = 200
) -> dict[str, float]:
    """Single-request latency of /predict with and without ``"explain": true``.

    Args:
        base_url: A running service, e.g. ``http://127.0.0.1:8000``.
        user_ids: Users with features (cycled through).
        requests: Requests of each kind (plain and explained, interleaved).
        warmup: Requests of each kind sent first and not counted.

    Returns:
        ``plain_p50_ms``, ``plain_p99_ms``, ``explain_p50_ms``, ``explain_p99_ms``,
        ``added_p50_ms`` (client-side round trips, one connection).
    """
    import httpx

    timings: dict[bool, list[float]] = {False: [], True: []}
    with httpx.Client(base_url=base_url, timeout=10) as client:
        for index in range(warmup + requests):
            user = user_ids[index % len(user_ids)]
            for explain in (False, True):
                started = time.perf_counter()
                response = client.post("/predict", json={"user_id": user, "explain": explain})
                elapsed = (time.perf_counter() - started) * 1000
                response.raise_for_status()
                if explain and not response.json().get("reasons"):
                    raise RuntimeError(f"no reasons in {response.text}")
                if index >= warmup:
                    timings[explain].append(elapsed)
    plain, explained = timings[False], timings[True]
    return {
        "plain_p50_ms": statistics.median(plain),
        "plain_p99_ms": _percentile(plain, 0.99),
        "explain_p50_ms": statistics.median(explained),
        "explain_p99_ms": _percentile(explained, 0.99),
        "added_p50_ms": statistics.median(explained) - statistics.median(plain),
    }


def format_result(label: str, result: dict[str, float]) -> str:
    """One line of figures against the goal."""
    verdict = "meets" if result["added_p50_ms"] <= GOAL_MS else "misses"
    return (
        f"{label}: plain p50 {result['plain_p50_ms']:.2f} ms (p99 {result['plain_p99_ms']:.2f}), "
        f"explain p50 {result['explain_p50_ms']:.2f} ms (p99 {result['explain_p99_ms']:.2f}), "
        f"added p50 {result['added_p50_ms']:+.2f} ms ({verdict} the {GOAL_MS:.0f} ms goal)"
    )


def _hist_model() -> Any:
    from tests.utils.serving import training_frame
    from training.models import build_model

    frame, labels = training_frame(20_000, seed=0)
    params = {
        "max_iter": 345,
        "max_depth": 6,
        "learning_rate": 0.05,
        "max_features": 0.8,
        "min_samples_leaf": 20,
    }
    return build_model("hist_gradient_boosting", params, seed=0).fit(frame, labels)


def _own_service(users: int, requests: int) -> None:
    import redis

    from bench.serve import prepare, start_churn, wait_until_ready
    from tests.utils.serving import free_port, register_model

    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ["CHURN_SERVING_POLL_INTERVAL_S"] = "1"
    redis_url = os.environ.get("CHURN_REDIS_URL", "127.0.0.1:6379")
    with tempfile.TemporaryDirectory(prefix="bench-explain-") as folder:
        work = prepare(Path(folder), users=users, redis_url=redis_url, trees=200, depth=5)
        port = free_port()
        server = start_churn(work, port)
        url = f"http://127.0.0.1:{port}"
        try:
            wait_until_ready(url + "/ready", server)
            ids = list(range(1, users + 1))
            gb = measure_explain_latency(url, ids, requests=requests)
            print(format_result("GradientBoosting 200 trees depth 5", gb))
            register_model(work.tracking_uri, project=work.project, model=_hist_model())
            import httpx

            deadline = time.monotonic() + 60
            while httpx.get(url + "/model").json().get("version") != "2":
                if time.monotonic() > deadline:
                    raise RuntimeError("the service did not pick up version 2")
                time.sleep(0.5)
            hgb = measure_explain_latency(url, ids, requests=requests)
            print(format_result("HistGradientBoosting 345 trees depth 6", hgb))
        finally:
            server.terminate()
            server.wait(timeout=30)
            host, _, rest = redis_url.partition(":")
            port_text, *params = rest.split(",")
            db = next((int(p[3:]) for p in params if p.startswith("db=")), 0)
            client = redis.Redis(host=host, port=int(port_text), db=db)
            for key in client.scan_iter(match=f"*{work.project}*".encode(), count=10_000):
                client.delete(key)


def main() -> None:
    """Command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="A running churn serve (default: start one here).")
    parser.add_argument("--users", type=int, default=10_000, help="User ids 1..N.")
    parser.add_argument("--requests", type=int, default=2000, help="Requests of each kind.")
    args = parser.parse_args()
    if args.url:
        result = measure_explain_latency(args.url, range(1, args.users + 1), requests=args.requests)
        print(format_result(args.url, result))
    else:
        _own_service(args.users, args.requests)


if __name__ == "__main__":
    main()
