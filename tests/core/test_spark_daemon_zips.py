"""Which of the zips Spark puts first on the executors' path are dropped."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pyspark
import pytest

from core.spark_daemon import without_matching_zips, zip_version

pytestmark = pytest.mark.unit  # in-process only: `make test-unit`

_SPARK_LIB = Path(pyspark.__file__).parent / "python" / "lib"


def _shipped_zips() -> list[str]:
    return sorted(str(path) for path in _SPARK_LIB.glob("*.zip"))


@pytest.mark.unit
def test_the_zips_spark_puts_first_are_dropped_when_the_installed_versions_match() -> None:
    zips = _shipped_zips()
    assert {zip_version(entry)[0] for entry in zips if zip_version(entry)} == {"pyspark", "py4j"}
    path = [*zips, "/opt/site-packages", "/usr/lib/python311.zip"]
    assert without_matching_zips(path) == ["/opt/site-packages", "/usr/lib/python311.zip"]


@pytest.mark.unit
def test_a_pyspark_zip_of_another_version_stays_first(tmp_path: Path) -> None:
    other = tmp_path / "pyspark.zip"
    with zipfile.ZipFile(other, "w") as archive:
        archive.writestr("pyspark/version.py", '__version__: str = "3.5.1"\n')
    py4j_other = str(tmp_path / "py4j-0.10.9.7-src.zip")
    assert zip_version(str(other)) == ("pyspark", "3.5.1")
    assert without_matching_zips([str(other), py4j_other]) == [str(other), py4j_other]
