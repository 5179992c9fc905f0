"""A model's class names: its checkpoint's own, else the shipped list of its size, else indices."""

from __future__ import annotations

from typing import Optional, Sequence

from ..errors import UsageError
from ..weights.classes import DATASETS, class_names


def printable(name: str) -> str:
    """``name`` as a terminal should show it: control characters (a terminal escape, a newline, a carriage
    return that would overwrite the line) written as Python writes them in a repr (``\\x1b``, ``\\n``); any
    other text, accents and scripts included, as it is."""
    if name.isprintable():
        return name
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in name)


def resolve_class_names(num_classes: int, own: Optional[Sequence[str]] = None) -> list[str]:
    """A checkpoint's own names win; otherwise the shipped list of that size; otherwise
    the label indices as strings."""
    if own is not None:
        if len(own) != num_classes:
            raise UsageError(f"{len(own)} class names for a model with {num_classes} outputs")
        return list(own)
    by_size = {1000: "imagenet1k", 10: "cifar10", 100: "cifar100"}
    if num_classes in by_size:
        return class_names(by_size[num_classes])
    return [str(i) for i in range(num_classes)]


__all__ = ["DATASETS", "class_names", "printable", "resolve_class_names"]
