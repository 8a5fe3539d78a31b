"""The configuration reference is generated from the settings classes, all of them."""

from __future__ import annotations

import importlib.util
import textwrap
import uuid
from pathlib import Path
from types import ModuleType

import pytest
from pydantic_settings import BaseSettings

from core.settings import PROJECT_ROOT

pytestmark = pytest.mark.unit


def _hook() -> ModuleType:
    path = PROJECT_ROOT / "docs" / "hooks" / "settings_reference.py"
    spec = importlib.util.spec_from_file_location("settings_reference_hook", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _all_subclasses(cls: type) -> set[type]:
    found = set()
    for sub in cls.__subclasses__():
        found |= {sub, *_all_subclasses(sub)}
    return found


def test_every_settings_class_of_the_project_is_in_the_reference() -> None:
    hook = _hook()

    found = hook.find_settings_classes(PROJECT_ROOT)
    reference = hook.render_reference(PROJECT_ROOT)

    packages = tuple(f"{package}." for package in hook.project_packages(PROJECT_ROOT))
    loaded = {cls for cls in _all_subclasses(BaseSettings) if cls.__module__.startswith(packages)}
    assert loaded <= set(found), f"not found by the hook: {loaded - set(found)}"
    for cls in found:
        assert f"### {cls.__name__}:" in reference
        for name in cls.model_fields:
            assert f"| `{name}` |" in reference, f"{cls.__name__}.{name} missing"


def test_a_class_renders_its_variables_types_defaults_and_descriptions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    package = f"fakeproject_{uuid.uuid4().hex[:8]}"
    (tmp_path / "pyproject.toml").write_text(
        f'[tool.setuptools]\npackages = {{ find = {{ include = ["{package}*"] }} }}\n'
    )
    (tmp_path / package).mkdir()
    (tmp_path / package / "__init__.py").write_text("")
    (tmp_path / package / "base.py").write_text(
        textwrap.dedent(
            '''
            from pathlib import Path
            from typing import Literal

            from pydantic import AliasChoices, Field
            from pydantic_settings import BaseSettings, SettingsConfigDict

            ROOT = Path(__file__).resolve().parent.parent


            class ShopSettings(BaseSettings):
                """Where the shop is (prefix ``SHOP_``).

                More detail that stays out of the summary.
                """

                model_config = SettingsConfigDict(env_prefix="SHOP_")

                data_dir: Path = Field(default=ROOT / "data", description="Root, see <data_dir>.")
                mode: Literal["fast", "safe"] = "fast"
                url: str | None = Field(default=None, validation_alias="SHOP_URL_OVERRIDE")
                size: int = Field(default=3, ge=1, le=9, description="a | b")
                tags: list[str] = Field(default_factory=lambda: ["x"])
                secret: str = Field(validation_alias=AliasChoices("TOKEN", "SHOP_TOKEN"))
            '''
        )
    )
    (tmp_path / package / "more.py").write_text(
        f"from {package}.base import ShopSettings\n\n"
        "class OnlineShopSettings(ShopSettings):\n    '''The online one.'''\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))

    reference = _hook().render_reference(tmp_path)

    assert "### ShopSettings: `SHOP_*` {#shopsettings}" in reference
    assert "Where the shop is (prefix `SHOP_`)." in reference
    assert "More detail" not in reference
    assert f"Defined in `{package}/base.py`." in reference
    data_dir = "| `data_dir` | `SHOP_DATA_DIR` | `Path` | `<checkout>/data` |"
    assert f"{data_dir} Root, see &lt;data_dir&gt;. |" in reference
    assert "| `mode` | `SHOP_MODE` | `'fast' | 'safe'` | `fast` | - |" in reference
    assert "| `url` | `SHOP_URL_OVERRIDE` | `str | None` | unset | - |" in reference
    assert "| `size` | `SHOP_SIZE` | `int` (&gt;= 1, &lt;= 9) | `3` | a \\| b |" in reference
    assert '| `tags` | `SHOP_TAGS` | `list[str]` | `["x"]` | - |' in reference
    assert "| `secret` | `TOKEN`, `SHOP_TOKEN` | `str` | required | - |" in reference
    # A subclass of a settings class, in another module, is found too.
    assert "### OnlineShopSettings: `SHOP_*`" in reference
    assert f"Defined in `{package}/more.py`." in reference


def test_a_project_without_settings_classes_fails_the_build(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text(
        '[tool.setuptools]\npackages = { find = { include = ["empty*"] } }\n'
    )
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "__init__.py").write_text("")

    with pytest.raises(RuntimeError, match="no BaseSettings subclass found"):
        _hook().render_reference(tmp_path)
