"""One loader from a source and a :class:`DataConfig`: the place where the choice of pipeline
and the model's preprocessing turn into a :class:`DeviceLoader` or an :class:`ImageLoader`.

:func:`build_loaders` (training and its validation), ``resnets eval`` and ``resnets features``
all build their loaders here, so they see the same pipeline and the same transform.
"""

from __future__ import annotations

from typing import Optional, Union

import numpy as np
import torch

from ..errors import UsageError
from .cache import DecodedImages, decode_to_tensor
from .large import ImageLoader
from .pipeline import (DataConfig, choose_pipeline, default_num_workers, given_statistics, input_side, large_transform,
                       with_data_size)
from .small import DeviceLoader
from .sources import ImageSource

Loader = Union[DeviceLoader, ImageLoader]


def measure_mean_std(images: torch.Tensor, chunk: int = 4096) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of uint8 images on the 0..1 scale, rounded to 4 places."""
    # float64 sums over chunks: exact enough and never a float copy of the whole set
    total = torch.zeros(images.shape[1], dtype=torch.float64)
    squares = torch.zeros_like(total)
    for start in range(0, len(images), chunk):
        part = images[start:start + chunk].to(torch.float64).div_(255).transpose(0, 1).reshape(images.shape[1], -1)
        total += part.sum(1)
        squares += (part * part).sum(1)
    count = len(images) * images.shape[2] * images.shape[3]
    mean = total / count
    std = (squares / count - mean * mean).clamp_min(1e-12).sqrt()
    return tuple(round(v, 4) for v in mean.tolist()), tuple(round(v, 4) for v in std.tolist())


def decode_small(source: ImageSource, config: DataConfig,
                 image_size: Optional[tuple[int, int]] = None) -> DecodedImages:
    """The small pipeline's decoded tensor of ``source``: at ``image_size``, else the model's input side, else the
    images' own size."""
    if image_size is None:
        side = input_side(config)
        image_size = (side, side) if side else None
    return decode_to_tensor(source, image_size=image_size, bad_input=config.bad_input, cache_dir=config.cache_dir,
                            use_cache=config.use_cache)


def rows_of(decoded: DecodedImages, indices: np.ndarray) -> torch.Tensor:
    """Rows of the decoded tensor for the given source indices, leaving out images that failed to decode."""
    position = np.full(int(decoded.index.max(initial=-1)) + 1 if len(decoded.index) else 0, -1, dtype=np.int64)
    position[decoded.index] = np.arange(len(decoded.index))
    indices = indices[indices < len(position)]
    rows = position[indices]
    return torch.from_numpy(rows[rows >= 0])


def loader_for(source: ImageSource, config: DataConfig, *, train: bool, indices: Optional[np.ndarray] = None,
               decoded: Optional[DecodedImages] = None) -> tuple[Loader, np.ndarray]:
    """A loader over ``indices`` of ``source`` (default: every image) and the source indices it serves, in order.

    ``train``: shuffled, augmented when ``config.augment``, ``config.drop_last``, ``batch_size``;
    otherwise in order, unaugmented, every image, ``eval_batch_size``. The pipeline is
    :func:`choose_pipeline`'s; ``decoded`` (a tensor already decoded for the small pipeline)
    skips the choice and the decoding. Mean/std: the config's, else the preprocessing's, else
    measured on these images (small) or ImageNet's (large). The large pipeline's indices still
    include files that fail to decode; its loader drops them as it meets them.
    """
    config.check()
    batch_size = config.batch_size if train else config.eval_batch_size or config.batch_size
    batching = dict(batch_size=batch_size, shuffle=train, drop_last=config.drop_last if train else False,
                    seed=config.seed, device=config.device, channels_last=config.channels_last, dtype=config.dtype,
                    rank=config.rank, world_size=config.world_size)
    if decoded is not None or choose_pipeline(source, config) == "small":
        if train and config.train_image_size and config.train_image_size != input_side(config):
            raise UsageError(f"{source.name}: a training size of {config.train_image_size} px needs the large "
                             f"pipeline (pipeline='large'); the small one trains at the evaluation size")
        decoded = decoded if decoded is not None else decode_small(source, config)
        images, served = decoded.images, decoded.index
        labels = torch.from_numpy(np.asarray(source.targets)[decoded.index])
        if indices is not None:
            rows = rows_of(decoded, np.asarray(indices, dtype=np.int64))
            images, labels, served = images[rows], labels[rows], served[rows.numpy()]
        mean, std = given_statistics(config)
        if mean is None or std is None:
            if len(images) == 0:
                raise UsageError(f"{source.name}: no usable images to measure mean/std on")
            mean, std = measure_mean_std(images)
        augment = train and config.augment
        loader = DeviceLoader(images, labels, mean=mean, std=std, augment=augment,
                              trivial_augment=augment and config.trivial_augment,
                              random_erasing=config.random_erasing if augment else 0.0, **batching)
        return loader, served
    indices = np.arange(len(source), dtype=np.int64) if indices is None else np.asarray(indices, dtype=np.int64)
    transform = large_transform(with_data_size(config, source))
    if train and config.train_image_size:
        transform["image_size"] = config.train_image_size
    if source.channels != len(transform["mean"]):
        raise UsageError(f"{source.name}: {source.channels} channels but mean/std have {len(transform['mean'])}")
    workers = config.num_workers if config.num_workers is not None else default_num_workers()
    loader = ImageLoader(source, indices, train=train and config.augment, trivial_augment=config.trivial_augment,
                         random_erasing=config.random_erasing, bad_input=config.bad_input, num_workers=workers,
                         **transform, **batching)
    return loader, indices
