"""Hot swaps free the replaced model: nothing of a version outlives its replacement.

The service freezes the heap after each load (GC pauses off p99). Frozen objects are never
examined by the collector, so any reference cycle in a replaced model (the on-demand
views' functions and their namespaces, Feast's objects) stayed in memory for the life of
the process: memory grew with every swap. Here six swaps go through the admin route, and
every object of each replaced version must be gone once the collector has run (the
benchmark ``bench/hot_swap.py`` measures the process's memory over 20 swaps).
"""

from __future__ import annotations

import gc
import weakref
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI
from fastapi.testclient import TestClient

from tests.utils.feast_repo import TestRepo
from tests.utils.serving import fit_model, register_model, set_champion

SWAPS = 6
TOKEN = "s3cret-admin-token-0123"


def _objects_of(model: Any) -> list[Any]:
    """The served model's own objects: its wrapper, plan, engine, explainer, functions."""
    objects = [model, model.plan, model.predictor, model.engine]
    objects += [transform.function for transform in model.plan.transforms]
    if model.explainer is not None:
        objects.append(model.explainer)
    return objects


def test_swaps_leave_no_replaced_model_alive(
    make_app: Callable[..., FastAPI], champion: str, tracking_uri: str, repo: TestRepo
) -> None:
    other = register_model(
        tracking_uri, project=repo.project, model=fit_model(invert=True), alias=None
    )
    replaced: list[weakref.ref[Any]] = []
    with TestClient(make_app(admin_token=TOKEN)) as client:
        service = client.app.state.service  # type: ignore[attr-defined]
        versions = []
        for swap in range(SWAPS):
            replaced += [weakref.ref(item) for item in _objects_of(service.model)]
            set_champion(tracking_uri, other if swap % 2 == 0 else champion)
            answer = client.post("/admin/reload", headers={"Authorization": f"Bearer {TOKEN}"})
            assert answer.json()["outcome"] == "loaded", answer.json()
            versions.append(service.model.version)
        served = service.model
        gc.collect()
        alive = [ref() for ref in replaced if ref() is not None]
        # The objects still served are allowed (a plan's service may be shared); nothing else.
        kept = {id(item) for item in _objects_of(served)}
        leaked = [type(item).__name__ for item in alive if id(item) not in kept]

    assert versions == [other, champion] * (SWAPS // 2)
    assert leaked == [], f"{len(leaked)} objects of replaced versions are alive: {leaked[:10]}"
