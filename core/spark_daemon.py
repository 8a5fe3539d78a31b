"""The executors' Python daemon: Spark's own, importing the installed pyspark when it matches.

Spark starts one Python daemon per executor (``python -m pyspark.daemon``) with its
``pyspark.zip`` and py4j zip first on ``PYTHONPATH``. Python cannot cache compiled modules
inside a zip, so each daemon and its workers compile pyspark from source: about 0.6 s of
CPU per executor here, paid by every application, since executors live as long as their
application. When the installed packages are the same versions as the zips (a cluster
whose nodes have the project installed, as the spark profile requires), this daemon drops
the zips from ``sys.path`` before importing pyspark, so the installed, precompiled modules
load instead. Different versions keep the zips: the JVM's own Python side wins.

Selected with ``spark.python.daemon.module: core.spark_daemon`` (the spark profile's
``spark_conf``). The daemon starts before any task, so this module must be installed on
the nodes: files shipped with ``spark.submit.pyFiles`` reach the path only inside a task.
Nothing happens on import; ``python -m core.spark_daemon`` runs the daemon.
"""

from __future__ import annotations

import re
import sys
import zipfile
from importlib import metadata
from pathlib import Path

_VERSION_LINE = re.compile(r"""__version__\s*(?::[^=]*)?=\s*["']([^"']+)["']""")
_PY4J_ZIP = re.compile(r"py4j-(.+)-src\.zip$")


def _installed(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def zip_version(entry: str) -> tuple[str, str] | None:
    """The package and version of a pyspark or py4j zip on the path.

    Args:
        entry: A ``sys.path`` entry.

    Returns:
        ``(package, version)``, or None for anything but a readable pyspark or py4j zip.
    """
    name = Path(entry).name
    py4j = _PY4J_ZIP.match(name)
    if py4j:
        return "py4j", py4j.group(1)
    if name != "pyspark.zip":
        return None
    try:
        with zipfile.ZipFile(entry) as archive:
            text = archive.read("pyspark/version.py").decode()
    except (OSError, KeyError, zipfile.BadZipFile):
        return None
    found = _VERSION_LINE.search(text)
    return ("pyspark", found.group(1)) if found else None


def without_matching_zips(path: list[str]) -> list[str]:
    """The path without the pyspark and py4j zips that the installed packages match.

    Args:
        path: ``sys.path`` entries, in order.

    Returns:
        The entries in the same order, less each zip whose package is installed at the
        zip's version.
    """
    kept = []
    for entry in path:
        archive = zip_version(entry)
        if archive is not None and _installed(archive[0]) == archive[1]:
            continue
        kept.append(entry)
    return kept


def main() -> None:
    """Run Spark's daemon with the installed pyspark where it matches the zips."""
    sys.path[:] = without_matching_zips(sys.path)
    from pyspark import daemon

    daemon.manager()


if __name__ == "__main__":
    main()
