"""Fixtures of the training tests: one applied churn repo shared by the session."""

from __future__ import annotations

import pytest

from tests.utils.training import ChurnRepo, make_churn_repo

__all__ = ["ChurnRepo", "churn_repo"]


@pytest.fixture(scope="session")
def churn_repo(tmp_path_factory: pytest.TempPathFactory) -> ChurnRepo:
    """Applied once per session (see :func:`tests.utils.training.make_churn_repo`)."""
    return make_churn_repo(tmp_path_factory.mktemp("churn_repo"))
