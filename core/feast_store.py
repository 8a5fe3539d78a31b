"""The one checkpoint for the feature store: open a profile's store, checked before use.

Every command that retrieves features opens the store through :func:`open_feature_store`
(or :func:`feature_store_session`): the profile's placeholders are checked first, and the
registry's on-demand view code is compared with the repo's before Feast can execute it
(:mod:`core.feast_trust`). Only ``churn apply``, which writes the registry, opens it without
that check.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from core.errors import ConfigurationError
from core.feast_trust import check_on_demand_sources
from core.settings import FeastSettings

if TYPE_CHECKING:
    from feast import FeatureStore
    from feast.repo_config import RepoConfig

_PLACEHOLDER = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def _profile_environment(settings: FeastSettings) -> dict[str, str]:
    """The variables a profile may reference: the process environment plus the settings."""
    return {**os.environ, **settings.substitutions()}


def render_profile(settings: FeastSettings) -> dict[str, Any]:
    """Read the profile's yaml and substitute its ``${VAR}`` placeholders.

    Feast itself leaves an unset variable in place and fails much later (for Redis with
    ``KeyError: 'port'``); this names every unset variable at once instead.

    Raises:
        ConfigurationError: The yaml is missing or references unset variables.
    """
    path = settings.yaml_path
    if not path.is_file():
        raise ConfigurationError(f"Feast profile {settings.profile!r}: no file {path}")
    text = path.read_text()
    environment = _profile_environment(settings)
    missing = sorted({name for name in _PLACEHOLDER.findall(text) if name not in environment})
    if missing:
        raise ConfigurationError(
            f"Feast profile {settings.profile!r} ({path.name}) needs environment "
            f"variable(s) {', '.join(missing)}"
        )
    rendered = _PLACEHOLDER.sub(lambda match: environment[match.group(1)], text)
    loaded: dict[str, Any] = yaml.safe_load(rendered)
    return loaded


def load_repo_config(settings: FeastSettings) -> RepoConfig:
    """Build Feast's RepoConfig for the profile, paths resolved against the repo."""
    from feast.repo_config import RepoConfig

    config = RepoConfig(**render_profile(settings))
    config.repo_path = settings.repo_path
    return config


def open_feature_store(
    settings: FeastSettings | None = None, *, verify_on_demand_sources: bool = True
) -> FeatureStore:
    """Open the feature store of the configured profile, its on-demand code verified.

    Args:
        settings: Which repo and profile; read from the environment when omitted.
        verify_on_demand_sources: Compare the registry's on-demand view code with the
            repo's before anything can run it. Only the command that writes the registry
            (``churn apply``) turns it off.

    Raises:
        ConfigurationError: The profile's yaml is missing or references unset variables.
        OnDemandSourceMismatch: The registry holds on-demand code that is not the repo's.
    """
    from feast import FeatureStore

    settings = settings or FeastSettings()
    config = load_repo_config(settings)
    if getattr(config.offline_store, "type", None) == "spark":
        prepare_spark_driver()
    store = FeatureStore(repo_path=str(settings.repo_path), config=config)
    if verify_on_demand_sources:
        try:
            check_on_demand_sources(store, settings.repo_path)
        except BaseException:
            release_feature_store(store)
            raise
    return store


def prepare_spark_driver() -> None:
    """Set up this process as the spark profile's driver, before its session starts.

    - Local time is UTC: pyspark turns every timestamp it collects into a naive datetime in
      the process's local zone, and Feast's Spark store takes the entity rows' collected
      time range as UTC; on a driver set to another zone the join would silently cut rows
      at the range's ends.
    - Executors run this interpreter unless ``PYSPARK_PYTHON`` says otherwise: their tasks
      (encoding, on-demand features, scores) import this project and its dependencies,
      which a bare ``python3`` on the node lacks (a cluster whose nodes differ sets it).
    """
    if os.environ.get("TZ") != "UTC":
        os.environ["TZ"] = "UTC"
        time.tzset()
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)


def release_feature_store(store: FeatureStore) -> None:
    """Close the connection pools of a SQL registry (a file registry holds none)."""
    registry = getattr(store, "_registry", None)  # the property would create one
    for name in ("write_engine", "read_engine"):
        engine = getattr(registry, name, None)
        if engine is not None:
            engine.dispose()


@contextmanager
def feature_store_session(
    settings: FeastSettings | None = None, *, verify_on_demand_sources: bool = True
) -> Iterator[FeatureStore]:
    """Open the feature store (:func:`open_feature_store`) for a block of work, then release it."""
    store = open_feature_store(settings, verify_on_demand_sources=verify_on_demand_sources)
    try:
        yield store
    finally:
        release_feature_store(store)


def feast_cli_environment(settings: FeastSettings) -> dict[str, str]:
    """Environment for running the ``feast`` command line on this profile."""
    render_profile(settings)  # fail early, naming unset variables
    environment = _profile_environment(settings)
    environment["FEAST_FS_YAML_FILE_PATH"] = str(settings.yaml_path)
    return environment


def run_feast_cli(settings: FeastSettings, *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``feast <args>`` in the repo folder on this profile, as a data engineer would.

    A separate process is used because Feast imports the repo's modules by bare name
    (``entities``, ``views``): two repos applied in one process would share them.

    Raises:
        subprocess.CalledProcessError: feast exited non-zero (its output is attached).
    """
    feast_executable = Path(sys.executable).with_name("feast")
    command = [str(feast_executable), "-f", str(settings.yaml_path), *args]
    return subprocess.run(
        command,
        cwd=settings.repo_path,
        env=feast_cli_environment(settings),
        check=True,
        capture_output=True,
        text=True,
    )
