"""Optional packages: each deploy feature that needs one says which extra installs it."""

from __future__ import annotations

import importlib
from types import ModuleType

from ..errors import OPTIONAL_EXTRAS, UsageError

EXTRAS = OPTIONAL_EXTRAS  # one table of which extra installs which module


class MissingExtraError(UsageError):
    """An optional package is not installed; the message names the extra that installs it."""


def require(module: str, purpose: str) -> ModuleType:
    """``import module``, or a one-line MissingExtraError naming the extra to install."""
    try:
        return importlib.import_module(module)
    except ImportError:
        top = module.split(".")[0]
        raise MissingExtraError(f"{purpose} needs the '{top}' package: pip install 'resnets[{EXTRAS[top]}]'") from None


def available(module: str) -> bool:
    """Whether ``module`` imports (a backend that is not installed is left out of backend="auto")."""
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True
