"""On-demand view code from the registry is used only when it is the repo's code."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from core.errors import OnDemandSourceMismatch
from core.feast_store import open_feature_store
from core.feast_trust import (
    check_on_demand_sources,
)
from materialize.apply import apply_feature_repo
from tests.utils.feast_repo import TestRepo, make_feature_repo, tamper_registry
from tests.utils.services import unique_name


@pytest.fixture
def applied(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> TestRepo:
    repo = make_feature_repo(tmp_path, project=unique_name("odfv"), profile="embedded")
    monkeypatch.setenv("CHURN_DATA_DIR", str(repo.data.data_dir))
    apply_feature_repo(repo.feast)
    return repo


def test_the_applied_repo_passes_and_an_injected_statement_is_refused_unexecuted(
    applied: TestRepo, tmp_path: Path
) -> None:
    store = open_feature_store(applied.feast)
    assert check_on_demand_sources(store, applied.feast.repo_path) == 3

    marker = tmp_path / "ran"
    tamper_registry(applied, "user_feature_transforms", f"\nopen({str(marker)!r}, 'w')\n")
    store = open_feature_store(applied.feast, verify_on_demand_sources=False)
    with pytest.raises(OnDemandSourceMismatch, match="user_feature_transforms: the registry's"):
        check_on_demand_sources(store, applied.feast.repo_path)
    assert not marker.exists()  # checking never executes the stored text
    # The checkpoint: opening the store (as every command does) runs the same check.
    with pytest.raises(OnDemandSourceMismatch, match="user_feature_transforms: the registry's"):
        open_feature_store(applied.feast)
    assert not marker.exists()

    # `churn train` refuses it before any retrieval (a process of its own: no MLflow state
    # leaks into other tests).
    completed = subprocess.run(
        [
            str(Path(sys.executable).with_name("churn")), "train",
            "--repo", str(applied.feast.repo_path), "--profile", "embedded", "--no-progress",
        ],
        env={**os.environ, "CHURN_DATA_DIR": str(applied.data.data_dir)},
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert completed.returncode == 2, completed.stdout + completed.stderr
    assert "on-demand view code that Feast would execute" in completed.stderr
    assert "user_feature_transforms: the registry's code differs" in completed.stderr
    assert not marker.exists()
