"""requirements.lock against pyproject.toml: every dependency locked, nothing of this machine in it.

A dependency added to, narrowed in or dropped from pyproject.toml without `make lock` fails here,
and so does one whose own dependencies are missing from the lock: the walk follows the installed
packages' metadata, which `make install` took from the lock.
"""

from __future__ import annotations

import re
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

pytestmark = pytest.mark.unit  # in-process only: `make test-unit`

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "requirements.lock"

_PIN = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)==(?P<version>\S+)(?: \\)?$")
_HASH = re.compile(r"^ +--hash=sha256:[0-9a-f]{64}(?: \\)?$")


def _lock_extras() -> list[str]:
    """The extras the lock covers, as the Makefile's `make lock` and `make install` name them."""
    found = re.search(r"^LOCK_EXTRAS := (.+)$", (ROOT / "Makefile").read_text(), re.MULTILINE)
    assert found, "the Makefile declares no LOCK_EXTRAS"
    return found.group(1).strip().split(",")


def _read_lock(text: str) -> tuple[dict[str, str], dict[str, int], list[str]]:
    """Pins (name to version), hash counts per name, and the lines that are neither."""
    pins: dict[str, str] = {}
    hashes: dict[str, int] = {}
    strays: list[str] = []
    current = ""
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if pin := _PIN.match(line):
            current = canonicalize_name(pin["name"])
            pins[current] = pin["version"]
            hashes[current] = 0
        elif _HASH.match(line) and current:
            hashes[current] += 1
        else:
            strays.append(line)
    return pins, hashes, strays


def _project_requirements() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    listed = list(project["dependencies"])
    for extra in _lock_extras():
        assert extra in extras, f"LOCK_EXTRAS names {extra!r}, not an extra of pyproject.toml"
        listed += extras[extra]
    requirements = [Requirement(line) for line in listed]
    return [r for r in requirements if r.marker is None or r.marker.evaluate()]


def _requirements_of(name: str, extra: str | None) -> list[Requirement]:
    """What the installed distribution `name` needs here, for its base or for one of its extras.

    Markers are evaluated for this interpreter: the lock is for Linux and Python 3.11, as is CI.
    """
    requirements = [Requirement(line) for line in metadata.requires(name) or []]
    return [
        r for r in requirements if r.marker is None or r.marker.evaluate({"extra": extra or ""})
    ]


def _check_lock(pins: dict[str, str]) -> list[str]:
    """Walk pyproject's dependencies and theirs; name what the lock misses, contradicts or adds."""
    problems: list[str] = []
    pending = [(r, "pyproject.toml") for r in _project_requirements()]
    visited: set[tuple[str, str | None]] = set()
    while pending:
        requirement, wanted_by = pending.pop()
        name = canonicalize_name(requirement.name)
        locked = pins.get(name)
        if locked is None:
            problems.append(f"{requirement} (wanted by {wanted_by}) is not in the lock")
            continue
        if not requirement.specifier.contains(locked, prereleases=True):
            problems.append(f"{requirement} (wanted by {wanted_by}) but the lock pins {locked}")
            continue
        for extra in [None, *sorted(requirement.extras)]:
            if (name, extra) in visited:
                continue
            visited.add((name, extra))
            try:
                installed = metadata.version(name)
            except metadata.PackageNotFoundError:
                problems.append(f"{name} is locked but not installed: run `make install`")
                break
            if installed != locked:
                problems.append(f"{name} {installed} is installed, the lock pins {locked}")
                break
            pending += [(r, f"{name} {locked}") for r in _requirements_of(name, extra)]
    reached = {name for name, _ in visited}
    problems += [f"{name} is locked but nothing needs it" for name in sorted(pins.keys() - reached)]
    return problems


def test_every_dependency_of_pyproject_and_of_its_dependencies_is_locked() -> None:
    pins, _, _ = _read_lock(LOCK.read_text())

    problems = _check_lock(pins)

    assert not problems, "requirements.lock is out of date (`make lock`):\n" + "\n".join(problems)


def test_a_dependency_changed_without_make_lock_is_caught() -> None:
    pins, _, _ = _read_lock(LOCK.read_text())
    del pins["optuna"]  # as if optuna had just been added to pyproject.toml
    pins["scipy"] = "1.0.0"  # as if scipy's floor had been raised past the lock
    pins["left-pad"] = "1.0"  # as if a dependency had been dropped from pyproject.toml

    problems = _check_lock(pins)

    assert any(p.startswith("optuna") and "not in the lock" in p for p in problems), problems
    assert any(p.startswith("scipy") and "the lock pins 1.0.0" in p for p in problems), problems
    assert "left-pad is locked but nothing needs it" in problems


def test_the_lock_pins_and_hashes_every_package_and_names_nothing_of_this_machine() -> None:
    text = LOCK.read_text()

    pins, hashes, strays = _read_lock(text)

    assert len(pins) > 100, "the lock should hold the whole environment"
    assert not strays, f"lines that are neither a pin, a hash nor a comment: {strays[:5]}"
    assert [name for name, count in hashes.items() if count == 0] == []
    # No local index, wheel folder, constraint file or editable path of the machine that wrote it.
    assert (
        re.findall(r"file:|--index-url|--extra-index-url|--find-links|(?<![\w.])/\w+", text) == []
    )
