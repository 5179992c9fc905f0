"""The one error base of the package.

A ``ResnetsError`` means the input was wrong (a file, an option, a checkpoint, a data set),
not the code: the command line prints its message as one line and exits with code 2 (3 for
a diverged training). Anything else that escapes is a bug and stays a traceback.
"""

from __future__ import annotations

import importlib
import math
import numbers
from types import ModuleType


class ResnetsError(Exception):
    """Wrong input: the message names what was wrong and what to do."""

    exit_code = 2


class UsageError(ResnetsError, ValueError):
    """An argument, option or value that cannot be used as given."""


class MissingFileError(ResnetsError, FileNotFoundError):
    """A file or directory the user named does not exist."""


# optional modules -> the extra that installs them (pyproject.toml's [project.optional-dependencies])
OPTIONAL_EXTRAS = {"onnx": "onnx", "onnxscript": "onnx", "onnxruntime": "onnx", "fastapi": "serve",
                   "uvicorn": "serve", "multipart": "serve", "python_multipart": "serve", "starlette": "serve",
                   "openvino": "openvino", "nncf": "openvino", "pytorch_grad_cam": "explain",
                   "huggingface_hub": "hub", "torchmetrics": "detection", "pycocotools": "detection"}


class MissingDependencyError(ResnetsError, ImportError):
    """An optional module is not installed; the message names the extra that installs it."""


def _missing(top: str, purpose: str) -> MissingDependencyError:
    return MissingDependencyError(f"{purpose} needs the optional module {top!r}, which is not installed: "
                                  f"pip install \"resnets[{OPTIONAL_EXTRAS[top]}]\"")


def missing_dependency(error: BaseException, purpose: str = "this") -> "MissingDependencyError | None":
    """For a ModuleNotFoundError of one of OPTIONAL_EXTRAS' modules (or an error raised from one), the
    one-line error naming ``pip install "resnets[EXTRA]"``; None for anything else."""
    seen = error
    while seen is not None:
        if isinstance(seen, ModuleNotFoundError) and seen.name:
            top = seen.name.split(".")[0]
            if top in OPTIONAL_EXTRAS:
                return _missing(top, purpose)
        seen = seen.__cause__ or seen.__context__
    return None


def require(module: str, purpose: str) -> ModuleType:
    """``import module`` (one of OPTIONAL_EXTRAS' or below one), or the one-line MissingDependencyError
    saying that ``purpose`` needs it and which extra installs it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise _missing(module.split(".")[0], purpose) from None


def available(module: str) -> bool:
    """Whether ``module`` imports (a backend that is not installed is left out of backend="auto")."""
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True


class DiskFullError(ResnetsError, OSError):
    """A write failed because the disk (or the user's quota) is full; the file it would have
    replaced is left as it was."""


def range_text(low: float, high: float = math.inf, *, low_open: bool = False, high_open: bool = False) -> str:
    """How a bound is said in messages: "at least 1", "more than 0 and at most 65535", "at least 0 and
    less than 1"."""
    def said(bound: float) -> str:  # integers whole (2**63 - 1, not 9.22337e+18)
        return str(bound) if isinstance(bound, int) else f"{bound:g}"

    text = f"{'more than' if low_open else 'at least'} {said(low)}"
    return text + (f" and {'less than' if high_open else 'at most'} {said(high)}" if high != math.inf else "")


def check_number(name: str, value, low: float, high: float = math.inf, *, low_open: bool = False,
                 integer: bool = True, optional: bool = False, high_open: bool = False):
    """``value`` when it is a number (an int with ``integer``) in [low, high] ((low, high] with
    ``low_open``), or None with ``optional``; else the UsageError naming ``name``, the bound and the value.
    The Python API's check of what the command line's argparse types refuse before it."""
    if value is None and optional:
        return value
    kinds = numbers.Integral if integer else numbers.Real  # numpy's numbers too
    if isinstance(value, bool) or not isinstance(value, kinds):
        raise UsageError(f"{name} must be {'an integer' if integer else 'a number'}, got {value!r}")
    problem = range_problem(value, low, high, low_open=low_open, high_open=high_open)
    if problem:
        raise UsageError(f"{name} {problem}, got {value!r}")
    return value


def check_choice(name: str, value, choices, *, optional: bool = False):
    """``value`` when it is one of ``choices`` (or None with ``optional``), else the UsageError naming ``name``,
    the choices and the value: the one wording of a bad choice, for options classes and function arguments."""
    if value is None and optional:
        return value
    if value not in choices:
        raise UsageError(f"{name} must be one of {', '.join(map(str, choices))}, got {value!r}")
    return value


def range_problem(value: float, low: float, high: float = math.inf, *, low_open: bool = False,
                  high_open: bool = False) -> "str | None":
    """What is wrong with a number against [low, high] ((low, high] with ``low_open``), e.g. "must be at
    least 1", or None when nothing is: the one test behind check_number and the command line's types."""
    if not math.isfinite(value):
        return "must be a finite number"
    if not (value > low if low_open else value >= low) or not (value < high if high_open else value <= high):
        return f"must be {range_text(low, high, low_open=low_open, high_open=high_open)}"
    return None


__all__ = ["DiskFullError", "MissingDependencyError", "MissingFileError", "OPTIONAL_EXTRAS", "ResnetsError",
           "UsageError", "available", "check_choice", "check_number", "missing_dependency", "range_problem",
           "range_text",
           "require"]
