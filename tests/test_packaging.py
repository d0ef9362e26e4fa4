"""What a PyPI user gets: one licence everywhere, the wheel's and the sdist's contents, an sdist whose tests run."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
NOT_SOURCE = shutil.ignore_patterns(".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache",
                                    "revzoo-demo", "bench-results", "*.tmp")
BUILD = """
import sys
from setuptools import build_meta
print(build_meta.build_{kind}(sys.argv[1]))
"""


def front_matter_licence(card: Path) -> str:
    head = card.read_text().split("---")[1]
    (line,) = [line for line in head.splitlines() if line.startswith("license:")]
    return line.split(":", 1)[1].strip()


def test_one_licence_stated_once_and_every_card_agrees() -> None:
    assert PYPROJECT["project"]["license"] == "MIT" and PYPROJECT["project"]["license-files"] == ["LICENSE"]
    assert (ROOT / "LICENSE").read_text().startswith("MIT License")
    assert not any(c.startswith("License ::") for c in PYPROJECT["project"]["classifiers"])  # PEP 639: not both
    cards = sorted(ROOT.glob("plugins/*/revzoo_*/model_card.md"))
    assert cards and {card.name: front_matter_licence(card) for card in cards} == {card.name: "mit" for card in cards}


def test_make_cards_writes_the_distributions_licence_over_a_cards_own() -> None:
    from revzoo.bench import _cards as make_cards

    assert "license: mit" in make_cards._front_matter({"license": "apache-2.0"}, "mit")
    assert "license: apache-2.0" in make_cards._front_matter({"license": "apache-2.0"}, "unknown")


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict[str, Path]:
    """The wheel and the sdist, built offline from a copy of this source tree with the installed setuptools."""
    pytest.importorskip("setuptools", minversion="77.0.1")
    source = shutil.copytree(ROOT, tmp_path_factory.mktemp("src") / "revzoo", ignore=NOT_SOURCE)
    out = tmp_path_factory.mktemp("dist")
    built = {}
    for kind in ("wheel", "sdist"):
        result = subprocess.run([sys.executable, "-c", BUILD.format(kind=kind), str(out)], cwd=source,
                                capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr[-2000:]
        built[kind] = out / result.stdout.strip().splitlines()[-1]
    return built


@pytest.mark.slow
def test_wheel_ships_licence_types_and_metadata_not_tests(built) -> None:
    names = zipfile.ZipFile(built["wheel"]).namelist()
    (dist_info,) = {name.split("/")[0] for name in names if ".dist-info/" in name}
    assert f"{dist_info}/licenses/LICENSE" in names and "revzoo/py.typed" in names
    assert {"revzoo_dalle/__init__.py", "revzoo_lie/__init__.py", "revzoo_vit/__init__.py"} <= set(names)
    assert not [name for name in names if name.startswith("tests/")]
    metadata = Parser().parsestr(zipfile.ZipFile(built["wheel"]).read(f"{dist_info}/METADATA").decode())
    assert metadata["License-Expression"] == "MIT" and metadata["License-File"] == "LICENSE"
    assert "Typing :: Typed" in metadata.get_all("Classifier") and "reversible networks" in metadata["Keywords"]


@pytest.mark.slow
def test_sdist_ships_the_whole_test_tree_and_its_tests_collect(built, tmp_path) -> None:
    with tarfile.open(built["sdist"]) as sdist:
        sdist.extractall(tmp_path, filter="data")
    (unpacked,) = tmp_path.iterdir()
    assert (unpacked / "LICENSE").is_file()
    shipped = {p.relative_to(unpacked / "tests") for p in (unpacked / "tests").rglob("*") if p.is_file()}
    source = {p.relative_to(ROOT / "tests") for p in (ROOT / "tests").rglob("*")
              if p.is_file() and "__pycache__" not in p.parts}
    assert shipped == source
    collected = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider"],
                               cwd=unpacked, capture_output=True, text=True, timeout=300)
    summary = collected.stdout.strip().splitlines()[-1]
    assert collected.returncode == 0 and "collected" in summary and "error" not in summary, collected.stdout[-3000:]


IMPORT_EVERY_MODULE = """
import importlib, pkgutil, sys
names = []
for top in sys.argv[1:]:
    package = importlib.import_module(top)
    names += [top] + [info.name for info in pkgutil.walk_packages(package.__path__, top + ".")
                      if not info.name.endswith(".__main__")]
for name in names:
    importlib.import_module(name)
print(" ".join(sorted(names)))
"""


@pytest.mark.slow
def test_an_installed_wheel_imports_every_module_of_its_source(built, tmp_path) -> None:
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index", "--target", str(site),
                    str(built["wheel"])], check=True, timeout=300)
    tops = ["revzoo", *sorted(PYPROJECT["project"]["entry-points"]["revzoo"].values())]
    imported = subprocess.run([sys.executable, "-c", IMPORT_EVERY_MODULE, *tops], cwd=tmp_path, capture_output=True,
                              text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(site), "PYTHONNOUSERSITE": "1"})
    assert imported.returncode == 0, imported.stderr[-2000:]
    assert all(str(site) in line for line in subprocess.run(
        [sys.executable, "-c", "import revzoo, revzoo.compat.lucidrains as m; print(revzoo.__file__); print(m.__file__)"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(site)},
    ).stdout.splitlines())
    packages = [ROOT / "revzoo", *sorted(ROOT.glob("plugins/*/revzoo_*"))]  # revzoo's and each built-in plugin's
    source = {".".join(path.relative_to(package.parent).with_suffix("").parts) for package in packages
              for path in package.rglob("*.py") if path.name != "__main__.py"}
    wanted = {name.removesuffix(".__init__") for name in source}
    assert wanted <= set(imported.stdout.split()), sorted(wanted - set(imported.stdout.split()))


@pytest.mark.slow
def test_an_installed_wheel_finds_its_cards(built, tmp_path) -> None:
    names = zipfile.ZipFile(built["wheel"]).namelist()
    cards = {str(card.relative_to(card.parents[1])) for card in ROOT.glob("plugins/*/revzoo_*/model_card.md")}
    assert len(cards) == 4 and cards <= set(names)
    site = tmp_path / "site"  # a non-editable install, found before this checkout's editable one
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index", "--target", str(site),
                    str(built["wheel"])], check=True, timeout=300)
    env = {key: value for key, value in os.environ.items() if not key.startswith("REVZOO_")}  # plugins autoload
    shown = subprocess.run([sys.executable, "-m", "revzoo", "info", "vit-tiny-rev", "--json"], cwd=tmp_path,
                           env={**env, "PYTHONPATH": str(site)}, capture_output=True, text=True, timeout=300)
    assert shown.returncode == 0, shown.stderr[-2000:]
    card = json.loads(shown.stdout)["card"]
    assert card == f"{site / 'revzoo_vit' / 'model_card.md'}#vit-tiny-and-vit-tiny-rev"
