"""Fixtures of the training tests: one applied churn repo shared by the session."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import pytest

from materialize.apply import apply_feature_repo
from tests.utils.feast_repo import TestRepo, make_feature_repo
from tests.utils.services import unique_name
from tests.utils.training import ChurnTables, add_planted_rows, make_churn_tables


@dataclass(frozen=True)
class ChurnRepo:
    """An applied copy of feature_repo/ (embedded profile) with tiny tables."""

    repo: TestRepo
    tables: ChurnTables
    planted_labels: pd.DataFrame


@pytest.fixture(scope="session")
def churn_repo(tmp_path_factory: pytest.TempPathFactory) -> ChurnRepo:
    """Applied once per session: `feast apply` alone takes 10-25 s on the shared machine.

    Tests only read it; each writes its own labels and has its own MLflow store.
    """
    root = tmp_path_factory.mktemp("churn_repo")
    repo = make_feature_repo(root, project=unique_name("churn_train"), profile="embedded")
    tables = make_churn_tables(repo.data)
    planted = add_planted_rows(repo.data)
    with pytest.MonkeyPatch.context() as patch:
        # The repo's source path is resolved from CHURN_DATA_DIR when it is applied.
        patch.setenv("CHURN_DATA_DIR", str(repo.data.data_dir))
        apply_feature_repo(repo.feast)
    return ChurnRepo(repo=repo, tables=tables, planted_labels=planted)
