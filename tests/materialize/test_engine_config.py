"""The engine's options are validated, and the shipped profiles select it."""

from __future__ import annotations

import pytest

from core.feast_store import open_feature_store
from tests.utils.feast_repo import TestRepo

pytestmark = pytest.mark.unit  # in-process only: `make test-unit`


def test_engine_options_are_validated(feature_repo: TestRepo) -> None:
    from pydantic import ValidationError

    from materialize.engine import ENGINE_TYPE, FastEngine, FastEngineConfig

    stores = {"repo_config": None, "offline_store": None, "online_store": None}
    with pytest.raises(ValidationError, match="chunk_row\n"):
        FastEngine(**stores, type=ENGINE_TYPE, chunk_row=5)  # misspelt
    with pytest.raises(ValidationError, match="chunk_rows"):
        FastEngine(**stores, type=ENGINE_TYPE, chunk_rows=0)
    assert FastEngine(**stores, type=ENGINE_TYPE, chunk_rows=7).config.chunk_rows == 7
    # The shipped profiles select the engine, and Feast finds its config class.
    for profile in ("production", "embedded"):
        settings = feature_repo.feast.model_copy(update={"profile": profile})
        config = open_feature_store(settings).config.batch_engine
        assert isinstance(config, FastEngineConfig) and config.type == ENGINE_TYPE
