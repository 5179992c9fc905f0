"""Class names shipped with the package: ImageNet-1k, CIFAR-10 and CIFAR-100."""

from __future__ import annotations

from functools import lru_cache
from importlib import resources
from typing import Optional, Sequence

from ..errors import UsageError

DATASETS = ("imagenet1k", "cifar10", "cifar100")


@lru_cache(maxsize=None)
def _read(dataset: str) -> tuple[str, ...]:
    text = resources.files(__package__).joinpath("class_names").joinpath(f"{dataset}.txt").read_text(encoding="utf-8")
    return tuple(line for line in text.splitlines() if line)


def class_names(dataset: str) -> list[str]:
    """The class names of ``dataset`` ("imagenet1k", "cifar10" or "cifar100"), by label index."""
    if dataset not in DATASETS:
        raise UsageError(f"no class names for {dataset!r}; known: {', '.join(DATASETS)}")
    return list(_read(dataset))


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
