"""Stage: validate raw events and write the offline tables (``churn ingest``).

Placeholder so the ``churn`` command line loads; the implementation follows.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def ingest_command(
    raw_path: Annotated[Path, typer.Argument(help="Raw events file (Parquet or CSV).")],
) -> None:
    """Validate raw events and write the offline feature and label tables (not yet built)."""
    typer.echo("error: churn ingest is not implemented yet", err=True)
    raise typer.Exit(1)
