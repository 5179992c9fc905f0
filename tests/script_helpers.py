"""The benchmark scripts (benchmarks/NAME.py, not a package) imported as modules by the tests of their parts."""

from __future__ import annotations

import contextlib
import importlib.util
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@contextlib.contextmanager
def benchmark_module(name: str, *siblings: str):
    """benchmarks/NAME.py as the module NAME (in sys.modules while in use, so its dataclasses and pickles
    resolve); ``siblings``: the names of benchmarks it imports itself, removed from sys.modules afterwards."""
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        for loaded in (name, *siblings):
            sys.modules.pop(loaded, None)
