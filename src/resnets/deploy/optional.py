"""Optional packages of the deploy features: the one mechanism of :mod:`resnets.errors`, under the
names this package has always exported."""

from __future__ import annotations

from ..errors import OPTIONAL_EXTRAS, MissingDependencyError, available, require

EXTRAS = OPTIONAL_EXTRAS
MissingExtraError = MissingDependencyError  # an optional package is not installed; the message names the extra

__all__ = ["EXTRAS", "MissingExtraError", "available", "require"]
