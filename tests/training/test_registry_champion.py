"""A champion change is checked against the decision it was based on."""

from __future__ import annotations

from pathlib import Path

import mlflow
import pytest

pytestmark = pytest.mark.unit  # in-process only: `make test-unit`


def test_a_champion_change_against_a_stale_decision_is_refused(tmp_path: Path) -> None:
    from tests.utils.serving import register_model, tracking_uri_in
    from training.registry import ChampionChanged, champion_history, set_champion

    uri = tracking_uri_in(tmp_path / "mlflow")
    first = register_model(uri, project="p", name="m", alias=None)
    second = register_model(uri, project="p", name="m", alias=None)
    client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    set_champion(client, "m", first, reason="first", expected=None)

    # A job that read "no champion" before the first change must not overwrite it.
    with pytest.raises(ChampionChanged, match="champion is v1 now"):
        set_champion(client, "m", second, reason="stale", expected=None)

    assert str(client.get_model_version_by_alias("m", "champion").version) == first
    assert champion_history(client, "m") == [first]
    set_champion(client, "m", second, reason="fresh", expected=first)
    assert champion_history(client, "m") == [first, second]
