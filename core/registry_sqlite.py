"""An aliased model version's training metrics, read from a SQLite MLflow store directly.

``churn estimate`` on a file of probabilities needs one thing from the registry: the
champion's test ROC AUC (and calibration term), which the estimate is held to. Importing
MLflow to read two numbers costs about 2.5 s, more than the estimate itself; when the
tracking URI is the local SQLite store (the default), this module reads them with the
standard library's ``sqlite3``, read-only, from the tables MLflow's registry and tracking
store keep (``registered_model_aliases``, ``model_versions``, ``latest_metrics``).

Nothing here loads a model: loading always goes through :class:`core.models.ModelRegistry`
and its trust checks. Any other URI, or a store whose tables are not as expected, answers
:data:`UNREAD`, and the caller asks MLflow's client instead.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

_PREFIX = "sqlite:///"


@dataclass(frozen=True)
class AliasMetrics:
    """The aliased version and its training run's latest metrics (those asked for)."""

    version: str
    run_id: str | None
    metrics: dict[str, float] = field(default_factory=dict)


class _Unread:
    """Marker: this store cannot be read here (ask MLflow's client)."""


UNREAD: Final = _Unread()


def alias_metrics(
    tracking_uri: str,
    name: str,
    alias: str,
    keys: Sequence[str],
    prefixes: Sequence[str] = (),
) -> AliasMetrics | _Unread | None:
    """The version ``name@alias`` points at and its run's metrics ``keys`` (and every
    metric whose key starts with one of ``prefixes``).

    Returns:
        The version and metrics; None when the store or the alias does not exist (no
        champion); :data:`UNREAD` for a URI that is not a local SQLite file, or tables
        this reader does not know.
    """
    if not tracking_uri.startswith(_PREFIX):
        return UNREAD
    path = Path(tracking_uri.removeprefix(_PREFIX))
    if not path.is_file():
        return None
    try:
        connection = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    except sqlite3.Error:
        return UNREAD
    try:
        row = connection.execute(
            "SELECT a.version, v.run_id FROM registered_model_aliases a "
            "JOIN model_versions v ON v.name = a.name AND v.version = a.version "
            "WHERE a.name = ? AND a.alias = ?",
            (name, alias),
        ).fetchone()
        if row is None:
            return None
        version, run_id = str(row[0]), row[1]
        metrics: dict[str, float] = {}
        if run_id and (keys or prefixes):
            # substr, not LIKE: a key's "_" or "%" is no wildcard.
            wanted = " OR ".join(
                [f"key IN ({', '.join('?' for _ in keys)})"] * bool(keys)
                + ["substr(key, 1, ?) = ?"] * len(prefixes)
            )
            arguments = [*keys, *(part for prefix in prefixes for part in (len(prefix), prefix))]
            for key, value, is_nan in connection.execute(
                f"SELECT key, value, is_nan FROM latest_metrics WHERE run_uuid = ? AND ({wanted})",
                (run_id, *arguments),
            ):
                metrics[str(key)] = float("nan") if is_nan else float(value)
        return AliasMetrics(version=version, run_id=run_id, metrics=metrics)
    except sqlite3.Error:  # not MLflow's tables (another version, or not a store at all)
        return UNREAD
    finally:
        connection.close()
