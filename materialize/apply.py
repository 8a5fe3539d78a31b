"""Stage: register the Feast definitions of ``feature_repo/`` (``churn apply``: ``feast apply``)."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from core.errors import UnavailableError
from core.feast_store import run_feast_cli
from core.settings import DataSettings, FeastSettings

# The streamed view's batch source: a folder of parts under the offline tables
# (feature_repo/sources.py, user_activity_source).
STREAMED_TABLE = "user_activity"


@dataclass(frozen=True)
class ApplyRequest:
    """Which repo and profile ``churn apply`` registers."""

    feast: FeastSettings


@dataclass(frozen=True)
class ApplyOutcome:
    """What ``churn apply`` did: Feast's output, for which repo and profile."""

    output: str
    repo_path: Path
    profile: str


def apply_feature_repo(settings: FeastSettings) -> str:
    """Run ``feast apply`` for the repo and profile; return Feast's output.

    The part directories of push-fed views are created with an empty part, so that
    materialization and point-in-time joins read them before anything was streamed.

    Raises:
        ConfigurationError: The profile cannot be used as configured.
        UnavailableError: feast apply failed (its output is in the message).
    """
    from materialize.stream.target import ensure_offline_dir, prepare_push_directories

    # Before apply too: Spark's offline store reads a source's path when Feast applies it,
    # and the streamed view's directory exists only once something wrote it.
    ensure_offline_dir(DataSettings().data_dir / "offline" / STREAMED_TABLE)
    try:
        completed = run_feast_cli(settings, "apply")
    except subprocess.CalledProcessError as error:
        raise UnavailableError(f"feast apply failed:\n{error.stdout}{error.stderr}") from error
    prepare_push_directories(settings)
    return completed.stdout


def run_apply(request: ApplyRequest) -> ApplyOutcome:
    """``churn apply``: register the feature definitions in the Feast registry.

    Raises:
        ConfigurationError: The profile cannot be used as configured.
        UnavailableError: feast apply failed (its output is in the message).
    """
    output = apply_feature_repo(request.feast)
    return ApplyOutcome(
        output=output, repo_path=request.feast.repo_path, profile=request.feast.profile
    )
