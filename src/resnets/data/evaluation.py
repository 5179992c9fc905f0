"""Loaders for evaluating a trained model: a carved validation split, a source's own
split (``test``, a ``val/`` folder), or every image of a source, without augmentation."""

from __future__ import annotations

from typing import Any, Optional, Sequence, Union

import torch

from ..errors import UsageError
from .loaders import Loader, loader_for
from .pipeline import DataConfig
from .sources import ImageSource, resolve_source
from .splits import Split, make_split


def build_eval_loader(source: Union[str, ImageSource], *, split: str = "val", recorded_split: Optional[dict] = None,
                      seed: int = 0, val_size: Optional[int] = None, val_fraction: float = 0.1, batch_size: int = 256,
                      device: Union[str, torch.device] = "cpu", mean: Sequence[float], std: Sequence[float],
                      preprocessing: Any = None, num_workers: Optional[int] = None, bad_input: str = "skip",
                      cache_dir: Optional[str] = None, channels_last: bool = False) -> tuple[Loader, list[str]]:
    """An evaluation loader and the class names of the images it yields.

    ``split="val"``: the validation part of the seeded split carved out of the training
    images (``recorded_split`` re-creates a run's split exactly); ``"all"``: every training
    image; any other name: the source's own split of that name, whole (CIFAR's ``test``
    batch, ``root/<name>/`` of a folder or zip; ``"val/"`` names the folder ``root/val/``, which
    ``"val"`` does not). The pipeline and transform are the ones
    training chooses for the same data and preprocessing (:func:`loader_for`).
    """
    config = DataConfig(batch_size=batch_size, seed=seed, device=device, mean=tuple(mean), std=tuple(std),
                        preprocessing=preprocessing, augment=False, num_workers=num_workers, bad_input=bad_input,
                        cache_dir=cache_dir, channels_last=channels_last)
    data = resolve_source(source, "train" if split in ("val", "all") else split.rstrip("/"), bad_input=bad_input,
                          cache_dir=cache_dir)
    empty = f"{source}: the validation split is empty" if split == "val" else f"{source}: split {split!r} has no images"
    indices = None
    if split == "val":
        carved = Split.from_dict(recorded_split, data) if recorded_split is not None else \
            make_split(data.targets, val_size=val_size, val_fraction=val_fraction, seed=seed,
                       fingerprint=data.fingerprint)
        indices = carved.val_indices
    if len(data) == 0 or indices is not None and len(indices) == 0:
        raise UsageError(empty)
    loader, served = loader_for(data, config, train=False, indices=indices)
    if len(served) == 0:
        raise UsageError(empty)
    return loader, list(data.classes)
