"""A model's class names: its checkpoint's own, else the shipped list of its size, else indices."""

from __future__ import annotations

from typing import Optional, Sequence

from ..errors import UsageError
from ..weights.classes import DATASETS, class_names


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


__all__ = ["DATASETS", "class_names", "resolve_class_names"]
