"""Every package under passes/ and cost_models/ installs under its hwprune_fx. name."""
from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _modules(folder: str, prefix: str) -> list[str]:
    names = [prefix]
    for info in pkgutil.walk_packages([str(ROOT / folder)], prefix=prefix + "."):
        names.append(info.name)
    return names


@pytest.mark.parametrize("name", _modules("passes", "hwprune_fx.passes") + _modules("cost_models", "hwprune_fx.cost_models"))
def test_module_importable_under_package_name(name: str) -> None:
    mod = importlib.import_module(name)
    assert mod.__name__ == name


def test_every_folder_with_init_is_listed_in_setup_cfg() -> None:
    text = (ROOT / "setup.cfg").read_text()
    for init in list((ROOT / "hwprune_fx").rglob("__init__.py")):
        pkg = ".".join(init.parent.relative_to(ROOT).parts)
        assert f"    {pkg}\n" in text, f"{pkg} missing from setup.cfg packages"
    for folder in ("passes", "cost_models"):
        for init in (ROOT / folder).rglob("__init__.py"):
            pkg = "hwprune_fx." + ".".join(init.parent.relative_to(ROOT).parts)
            assert f"    {pkg}\n" in text, f"{pkg} missing from setup.cfg packages"


def test_short_names_are_not_importable() -> None:
    import sys
    assert "passes" not in sys.modules and "cost_models" not in sys.modules
