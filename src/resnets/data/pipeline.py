"""What a loader is built from: the data layer's defaults, its options (:class:`DataConfig`)
and the decisions taken from a model's preprocessing (which pipeline, what input size,
which transform). :func:`resnets.data.loaders.loader_for` builds the loader; training,
evaluation and ``resnets features`` all get their loaders from it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import torch

from .._options import MAX_SEED, check_bounds, option
# the large pipeline's defaults where neither the caller nor a model's preprocessing gives them
from ..models.preprocessing import DEFAULT_CROP_PCT, DEFAULT_INTERPOLATION, IMAGENET_MEAN, IMAGENET_STD, MAX_INPUT_SIDE
from .batching import check_rank
from .cache import probe_size
from .sources import ImageSource

# images no larger than this (longest side, pixels) are held on the device: CIFAR's 32, downsampled ImageNet's 64
SMALL_IMAGE_MAX_SIDE = 64
SMALL_IMAGE_MAX_BYTES = 4 << 30  # ... when the whole set, as uint8, also fits in this
DEFAULT_IMAGE_SIZE = 224
MIN_INPUT_SIDE = 8  # the smallest input a stride-32 ImageNet net or a stride-4 CIFAR net still pools
PIPELINES = ("auto", "small", "large")
MAX_BATCH_SIZE = 1 << 20
MAX_WORKERS = 1024  # large_transform, when neither the config nor a source gives a size


def default_num_workers() -> int:
    """DataLoader workers of the large pipeline when none are asked for."""
    return min(4, os.cpu_count() or 1)


@dataclass
class DataConfig:
    """Options of :func:`build_loaders` and :func:`loader_for` (every field is also a keyword argument)."""

    batch_size: int = option(128, help="global batch size (split over processes)", low=1, high=MAX_BATCH_SIZE)
    eval_batch_size: Optional[int] = option(None, low=1, high=MAX_BATCH_SIZE)  # default: batch_size
    seed: int = option(0, help="seed of the initialisation, the split and the data order", low=0, high=MAX_SEED)
    # images carved out of train for validation; 0: none
    val_size: Optional[int] = option(None, help="images carved out of train for validation", low=0)
    # used when val_size is None (CIFAR: 5,000 of 50,000, as the paper)
    val_fraction: float = option(0.1, help="the part of train held out for validation when val_size is not given",
                                 low=0, high=1, high_open=True)
    split: Optional[dict] = None  # a recorded Split.to_dict(): re-create it exactly
    val_source: Optional[Union[str, ImageSource]] = None  # a separate validation set instead of a carved split
    device: Union[str, torch.device] = "cpu"
    pipeline: str = option("auto", help="data pipeline: on-device tensors (small images) or DataLoader workers "
                                        "(large)", choices=PIPELINES)
    # default: the model's preprocessing, else the images' own (with_data_size in the large pipeline)
    image_size: Optional[int] = option(None, help="input side in pixels", low=MIN_INPUT_SIDE, high=MAX_INPUT_SIDE)
    # the large pipeline's training crops; default image_size
    train_image_size: Optional[int] = option(None, help="side of the training crops in pixels",
                                             low=MIN_INPUT_SIDE, high=MAX_INPUT_SIDE)
    preprocessing: Any = None  # a model's ``preprocessing`` (Preprocessing or dict): input size, mean/std, crop
    mean: Optional[Sequence[float]] = None  # default: preprocessing, else measured on train (small) / ImageNet
    std: Optional[Sequence[float]] = None
    augment: bool = True
    drop_last: bool = True  # training batches only; evaluation keeps every image
    channels_last: bool = False
    dtype: torch.dtype = torch.float32
    trivial_augment: bool = False  # TrivialAugmentWide after crop and flip (training only)
    # probability of erasing a random box after normalisation (training only)
    random_erasing: float = option(0.0, help="probability of erasing a random box (training only)", low=0, high=1)
    # large pipeline; default default_num_workers()
    num_workers: Optional[int] = option(None, help="data loader workers (large images)", low=0, high=MAX_WORKERS)
    rank: int = option(0, low=0)
    world_size: int = option(1, low=1)
    bad_input: str = "skip"  # "skip": skip, count and warn naming the file; "error": refuse
    cache_dir: Optional[Union[str, Path]] = None  # default $RESNETS_CACHE or ~/.cache/resnets
    use_cache: bool = True
    download: bool = False  # fetch cifar10 / cifar100 when missing from the cache
    small_max_side: int = SMALL_IMAGE_MAX_SIDE
    small_max_bytes: int = SMALL_IMAGE_MAX_BYTES

    def check(self) -> "DataConfig":
        """Refuse a number that cannot be used (UsageError naming the field), before any image is read.
        Called by :func:`build_loaders` and :func:`loader_for`, after keyword options are applied."""
        check_bounds(self)
        check_rank(self.rank, self.world_size)
        return self


def preprocessing_field(preprocessing: Any, key: str) -> Any:
    """``key`` of a model's preprocessing (a Preprocessing, a dict or None)."""
    if preprocessing is None:
        return None
    if isinstance(preprocessing, dict):
        return preprocessing.get(key)
    return getattr(preprocessing, key, None)


def choose_pipeline(source: ImageSource, config: DataConfig) -> str:
    """``"small"`` or ``"large"``: ``config.pipeline`` when it names one; under ``"auto"``, small
    when the images are no larger than ``small_max_side`` and all of them, as uint8, fit in
    ``small_max_bytes``."""
    if config.pipeline in ("small", "large"):
        return config.pipeline
    height, width = probe_size(source, config.bad_input)
    side = config.image_size or max(height, width)
    fits = len(source) * source.channels * side * side <= config.small_max_bytes
    return "small" if max(height, width) <= config.small_max_side and fits else "large"


def input_side(config: DataConfig) -> Optional[int]:
    """The model's input side: ``image_size``, else the preprocessing's; None: the data's own."""
    input_size = preprocessing_field(config.preprocessing, "input_size")
    return config.image_size or (input_size[-1] if input_size else None)


def given_statistics(config: DataConfig) -> tuple[Optional[Sequence[float]], Optional[Sequence[float]]]:
    """(mean, std) given, else the preprocessing's; None where neither says."""
    return (config.mean or preprocessing_field(config.preprocessing, "mean"),
            config.std or preprocessing_field(config.preprocessing, "std"))


def with_data_size(config: DataConfig, source: ImageSource) -> DataConfig:
    """``config``, with the size of ``source``'s images where neither ``image_size`` nor the preprocessing
    gives an input size (a CIFAR-family net trained from scratch): the first image's longer side, evaluated
    whole (crop 1.0), as the small pipeline decodes at the images' own size."""
    if input_side(config) is not None:
        return config
    side = max(probe_size(source, config.bad_input))
    given = {key: preprocessing_field(config.preprocessing, key) for key in ("mean", "std", "interpolation")}
    return replace(config, preprocessing={**given, "input_size": (source.channels, side, side), "crop_pct": 1.0})


def large_transform(config: DataConfig) -> dict:
    """The large pipeline's transform options for :class:`ImageLoader`: the caller's, else the
    model's preprocessing, else ImageNet's statistics at 224 px with a 0.875 crop."""
    mean, std = given_statistics(config)
    image_size = input_side(config) or DEFAULT_IMAGE_SIZE
    crop_pct = preprocessing_field(config.preprocessing, "crop_pct") or DEFAULT_CROP_PCT
    return dict(mean=tuple(mean or IMAGENET_MEAN), std=tuple(std or IMAGENET_STD), image_size=image_size,
                resize_size=int(round(image_size / crop_pct)),
                interpolation=preprocessing_field(config.preprocessing, "interpolation") or DEFAULT_INTERPOLATION)
