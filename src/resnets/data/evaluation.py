"""Loaders for evaluating a trained model: a carved validation split, a source's own
split (``test``, ``val``), or every image of a source, without augmentation."""

from __future__ import annotations

from typing import Any, Optional, Sequence, Union

import numpy as np
import torch

from ..errors import UsageError
from .cache import decode_to_tensor, probe_size
from .large import ImageLoader
from .small import DeviceLoader
from .sources import ImageSource, resolve_source


def build_eval_loader(source: Union[str, ImageSource], *, split: str = "val", recorded_split: Optional[dict] = None,
                      seed: int = 0, val_size: Optional[int] = None, val_fraction: float = 0.1, batch_size: int = 256,
                      device: Union[str, torch.device] = "cpu", mean: Sequence[float], std: Sequence[float],
                      preprocessing: Any = None, num_workers: Optional[int] = None, bad_input: str = "skip",
                      cache_dir: Optional[str] = None) -> tuple[Union[DeviceLoader, ImageLoader], list[str]]:
    """An evaluation loader and the class names of the images it yields.

    ``split="val"``: the validation part of the seeded split carved out of the training
    images (``recorded_split`` re-creates a run's split exactly); ``"all"``: every training
    image; any other name: the source's own split of that name, whole (CIFAR's ``test``
    batch, ``root/<name>/`` of a folder or zip).
    """
    from . import build_loaders

    common = dict(batch_size=batch_size, device=device, mean=tuple(mean), std=tuple(std))
    if split == "val":
        _, val, info = build_loaders(source, seed=seed, val_size=val_size, val_fraction=val_fraction,
                                     split=recorded_split, augment=False, preprocessing=preprocessing,
                                     num_workers=num_workers, bad_input=bad_input, cache_dir=cache_dir, **common)
        if val is None:
            raise UsageError(f"{source}: the validation split is empty")
        return val, list(info.classes)
    data = resolve_source(source, "train" if split == "all" else split, bad_input=bad_input, cache_dir=cache_dir)
    if len(data) == 0:
        raise UsageError(f"{source}: split {split!r} has no images")
    height, width = probe_size(data, bad_input)
    input_size = getattr(preprocessing, "input_size", None) if preprocessing is not None else None
    if max(height, width) <= 64:
        decoded = decode_to_tensor(data, bad_input=bad_input, cache_dir=cache_dir)
        labels = torch.from_numpy(np.asarray(data.targets)[decoded.index])
        loader = DeviceLoader(decoded.images, labels, shuffle=False, augment=False, drop_last=False, **common)
    else:
        image_size = input_size[-1] if input_size else 224
        crop_pct = getattr(preprocessing, "crop_pct", 0.875) if preprocessing is not None else 0.875
        loader = ImageLoader(data, np.arange(len(data)), shuffle=False, train=False, drop_last=False,
                             image_size=image_size, resize_size=int(round(image_size / crop_pct)),
                             num_workers=num_workers if num_workers is not None else 2, bad_input=bad_input,
                             **common)
    return loader, list(data.classes)
