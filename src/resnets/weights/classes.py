"""Class names shipped with the package: ImageNet-1k, CIFAR-10, CIFAR-100 and Imagenette (its ten ImageNet
classes, in the order of their synset-id folders).

They live with the weights because named weights carry them (``resnets.get_weights(...).classes``);
deployment resolves a model's names from here (``resnets.deploy.resolve_class_names``).
"""

from __future__ import annotations

from functools import lru_cache
from importlib import resources

from ..errors import UsageError

DATASETS = ("imagenet1k", "cifar10", "cifar100", "imagenette")


@lru_cache(maxsize=None)
def _read(dataset: str) -> tuple[str, ...]:
    text = resources.files(__package__).joinpath("class_names").joinpath(f"{dataset}.txt").read_text(encoding="utf-8")
    return tuple(line for line in text.splitlines() if line)


def class_names(dataset: str) -> list[str]:
    """The class names of ``dataset`` (one of ``DATASETS``), by label index."""
    if dataset not in DATASETS:
        raise UsageError(f"no class names for {dataset!r}; known: {', '.join(DATASETS)}")
    return list(_read(dataset))


__all__ = ["DATASETS", "class_names"]
