"""The wheel carries every file the package reads at run time: recipes, samples, class names, shipped weights."""

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "resnets"


@pytest.mark.slow
def test_the_wheel_holds_every_data_file_of_the_package(tmp_path):
    setuptools = pytest.importorskip("setuptools")
    if tuple(int(part) for part in setuptools.__version__.split(".")[:2]) < (70, 1):
        pytest.importorskip("wheel")  # older setuptools build wheels through the wheel package
    data_files = {str(p.relative_to(PACKAGE.parent)) for p in PACKAGE.rglob("*")
                  if p.is_file() and p.suffix not in (".py", ".pyc") and "__pycache__" not in p.parts}
    assert {"resnets/recipes/paper-cifar.toml", "resnets/data/samples/cifar10-sample.zip"} <= data_files
    source = tmp_path / "source"  # a copy of what a build reads, so that the build leaves nothing in the checkout
    shutil.copytree(ROOT / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "--no-build-isolation",
                            "-q", "-w", str(tmp_path / "wheel")], capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr[-2000:]
    with zipfile.ZipFile(next((tmp_path / "wheel").glob("resnets-*.whl"))) as wheel:
        in_wheel = set(wheel.namelist())
    assert sorted(data_files - in_wheel) == []
