"""Options said once: a dataclass field carries its command-line help and bounds, so the parser
(``resnets.cli.add_options``) and the dataclass's own check read the same declaration.

Field metadata: ``help``; ``choices``; ``flag`` (another flag name); ``metavar``; ``positional``;
``cli=False`` for fields the command line does not take (set by code: hooks, callbacks);
``same_as(Class, name)`` for a field that takes another class's knob (its bounds, choices and help);
``low``/``high``/``low_open`` for a number's bounds (each number's, for a ``Sequence[int]``), checked
by :func:`check_bounds` and by the parser's type. A ``Sequence`` field takes one or more values; a
``bool`` field that defaults to True is the flag ``--no-NAME``.
"""

from __future__ import annotations

import collections.abc
import math
import typing
from dataclasses import field, fields
from typing import Any

from .errors import check_choice, check_number

MAX_SEED = 2**63 - 1  # seeds are mixed as unsigned 64-bit integers (and passed to torch as a C long)


def option(default: Any = None, help: str = "", **meta: Any) -> Any:
    """A dataclass field with a default and its command-line help (and other CLI metadata)."""
    if default in (dict, list):  # a fresh, empty one for each instance
        return field(default_factory=default, metadata=dict(help=help, **meta))
    return field(default=default, metadata=dict(help=help, **meta))


def required(help: str = "", **meta: Any) -> Any:
    """A dataclass field without a default (a positional argument or a required flag on the command line)."""
    return field(metadata=dict(help=help, **meta))


def same_as(cls: type, name: str, default: Any = None, **meta: Any) -> Any:
    """A field that takes the knob ``cls.name`` is declared with (its bounds and choices, its help unless given),
    so that a training flag, a recipe key and a data option are one declaration: the origin is recorded as
    ``origin`` (``"Recipe.lr"``) and bounds or choices may not be redeclared here."""
    origin = next((f for f in fields(cls) if f.name == name), None)
    if origin is None:
        raise TypeError(f"{cls.__name__} has no field {name!r}")
    redeclared = sorted(meta.keys() & {"low", "high", "low_open", "high_open", "choices"})
    if redeclared:
        raise TypeError(f"{name}: {redeclared[0]} is declared by {cls.__name__}.{name}, not here")
    inherited = {k: v for k, v in origin.metadata.items()
                 if k in ("low", "high", "low_open", "high_open", "choices", "help")}
    merged = {**inherited, **meta, "origin": origin.metadata.get("origin", f"{cls.__name__}.{name}")}
    if default in (dict, list):
        return field(default_factory=default, metadata=merged)
    return field(default=default, metadata=merged)


def option_fields(cls: type) -> list:
    """The fields of an options dataclass that the command line takes."""
    return [f for f in fields(cls) if f.metadata.get("cli", True)]


def bounds(f) -> "tuple[float, float, bool, bool] | None":
    """(low, high, low_open, high_open) of a field declared with ``low``, else None."""
    if "low" not in f.metadata:
        return None
    return (f.metadata["low"], f.metadata.get("high", math.inf), f.metadata.get("low_open", False),
            f.metadata.get("high_open", False))


def check_bounds(options: Any) -> None:
    """Refuse (UsageError naming the field) a value outside the bounds or the choices its field declares
    (None only where the field is Optional): the one check behind every options class, recipe and data
    configuration."""
    hints = typing.get_type_hints(type(options))
    for f in fields(options):
        if f.metadata.get("choices") is not None:
            check_choice(f.name, getattr(options, f.name), f.metadata["choices"], optional=True)
        declared = bounds(f)
        if declared is not None:
            low, high, low_open, high_open = declared
            kinds = (hints[f.name], *typing.get_args(hints[f.name]))  # int, or Optional[int]'s (int, NoneType)
            value = getattr(options, f.name)
            if typing.get_origin(hints[f.name]) is collections.abc.Sequence:  # Sequence[int]: each of them
                values = list(value) if isinstance(value, (list, tuple)) else [value]
            else:
                values = [value]
            for v in values:
                check_number(f.name, v, low, high, low_open=low_open, high_open=high_open, integer=int in kinds,
                             optional=type(None) in kinds)
