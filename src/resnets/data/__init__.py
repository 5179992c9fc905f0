"""The data layer: from what is on disk to batches on the training device.

The engine calls one function::

    from resnets.data import build_loaders

    train, val, info = build_loaders("cifar10", batch_size=128, seed=0, device="cuda")
    for epoch in range(epochs):
        for images, labels in train.epoch_batches(epoch):        # resume: epoch_batches(epoch, start_batch=k)
            ...
    record = info.to_dict()                                     # JSON: classes, split, mean/std, sizes, fingerprint
    # a resumed run passes the recorded split back and gets exactly the same one (or an error if the data changed)
    train, val, info = build_loaders("cifar10", batch_size=128, seed=0, split=record["split"])

``source`` is anything :func:`resolve_source` accepts (``--data`` in the CLI): ``cifar10``,
``cifar100``, a CIFAR python archive or folder, a class-per-folder tree, a zip of one,
``synthetic:[C x]HxW:CLASSES:SIZE[:SEED]`` or ``sample:cifar10``.

Two pipelines, chosen by ``pipeline="auto"``: images no larger than ``small_max_side`` whose
uint8 tensor fits in ``small_max_bytes`` go to the small-image pipeline (:class:`DeviceLoader`:
decoded once, cached on disk, held on the device, augmented by whole batches); anything else goes
to the large-image pipeline (:class:`ImageLoader`: DataLoader workers with torchvision.transforms.v2).
Both loaders yield (float images normalised on the device, int64 labels on the device) and share
the resume contract: ``epoch_batches(epoch, start_batch)`` is a pure function of
(seed, epoch, batch index).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import numpy as np
import torch

from ..download import DownloadError
from ..errors import UsageError
from .cache import DecodedImages, decode_to_tensor, probe_size
from .download import CIFAR_ARCHIVES, cifar_archive
from .large import ImageLoader, ImageLoaderConfig, ResumableSampler, build_transform
from .small import DeviceLoader, DeviceLoaderConfig
from .sources import (SYNTHETIC_SYNTAX, BadImageError, BadInputWarning, FileTreeSource, ImageSource, SyntheticSource,
                      TensorSource, check_policy, decode_bytes, load_cifar, load_folder, load_zip, resolve_source,
                      sample_path)
from .splits import Split, SplitMismatchError, make_split

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class DataConfig:
    """Options of :func:`build_loaders` (every field is also a keyword argument)."""

    batch_size: int = 128
    eval_batch_size: Optional[int] = None  # default: batch_size
    seed: int = 0
    val_size: Optional[int] = None  # images carved out of train for validation; 0: none
    val_fraction: float = 0.1  # used when val_size is None (CIFAR: 5,000 of 50,000, as the paper)
    split: Optional[dict] = None  # a recorded Split.to_dict(): re-create it exactly
    val_source: Optional[Union[str, ImageSource]] = None  # a separate validation set instead of a carved split
    device: Union[str, torch.device] = "cpu"
    pipeline: str = "auto"  # "auto", "small" or "large"
    image_size: Optional[int] = None  # default: the model's preprocessing, else the data's own (small) / 224
    preprocessing: Any = None  # a model's ``preprocessing`` (Preprocessing or dict): input size, mean/std, crop
    mean: Optional[Sequence[float]] = None  # default: preprocessing, else measured on train (small) / ImageNet
    std: Optional[Sequence[float]] = None
    augment: bool = True
    drop_last: bool = True  # training batches only; evaluation keeps every image
    channels_last: bool = False
    dtype: torch.dtype = torch.float32
    trivial_augment: bool = False  # large pipeline
    random_erasing: float = 0.0  # large pipeline, probability
    num_workers: Optional[int] = None  # large pipeline; default min(4, cores)
    rank: int = 0
    world_size: int = 1
    bad_input: str = "skip"  # "skip": skip, count and warn naming the file; "error": refuse
    cache_dir: Optional[Union[str, Path]] = None  # default: resnets._io.cache_root()
    use_cache: bool = True
    download: bool = False  # fetch cifar10 / cifar100 when missing from the cache
    small_max_side: int = 64
    small_max_bytes: int = 4 << 30


@dataclass
class DataInfo:
    """What a run records about its data."""

    source: str
    fingerprint: str
    pipeline: str
    classes: list[str]
    split: dict
    mean: tuple[float, ...]
    std: tuple[float, ...]
    image_size: tuple[int, int]
    channels: int
    train_size: int
    val_size: int
    skipped: list = field(default_factory=list)  # (path, reason) of every file left out so far
    resized: int = 0
    cache_path: Optional[str] = None
    from_cache: bool = False

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def to_dict(self) -> dict:
        record = asdict(self)
        record["skipped"] = [list(item) for item in self.skipped]
        record["num_classes"] = self.num_classes
        return record


def check_same_classes(train: ImageSource, val: ImageSource) -> None:
    """Refuse a validation set whose classes are not exactly the training set's, in the same order."""
    if list(train.classes) == list(val.classes):
        return
    only_train = sorted(set(train.classes) - set(val.classes))
    only_val = sorted(set(val.classes) - set(train.classes))
    detail = f"only in train: {only_train}; only in validation: {only_val}" if only_train or only_val \
        else "same names in a different order"
    raise UsageError(f"train ({train.name}) and validation ({val.name}) classes differ: {detail}")


def _preprocessing_field(preprocessing: Any, key: str) -> Any:
    if preprocessing is None:
        return None
    if isinstance(preprocessing, dict):
        return preprocessing.get(key)
    return getattr(preprocessing, key, None)


def _measure_mean_std(images: torch.Tensor, chunk: int = 4096) -> tuple[tuple[float, ...], tuple[float, ...]]:
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


def _choose_pipeline(cfg: DataConfig, source: ImageSource) -> str:
    if cfg.pipeline in ("small", "large"):
        return cfg.pipeline
    if cfg.pipeline != "auto":
        raise UsageError(f"pipeline must be 'auto', 'small' or 'large', got {cfg.pipeline!r}")
    height, width = probe_size(source, cfg.bad_input)
    side = cfg.image_size or max(height, width)
    fits = len(source) * source.channels * side * side <= cfg.small_max_bytes
    return "small" if max(height, width) <= cfg.small_max_side and fits else "large"


def build_loaders(source: Union[str, Path, ImageSource], config: Optional[DataConfig] = None,
                  **options: Any) -> tuple[Union[DeviceLoader, ImageLoader], Optional[Union[DeviceLoader, ImageLoader]],
                                           DataInfo]:
    """Training loader, validation loader (None when ``val_size=0``) and a :class:`DataInfo`.

    Options are the fields of :class:`DataConfig`, given as ``config`` or keyword arguments.
    """
    cfg = DataConfig() if config is None else DataConfig(**asdict(config))
    names = {f.name for f in fields(DataConfig)}
    for key, value in options.items():
        if key not in names:
            raise TypeError(f"build_loaders got an unknown option {key!r}; options: {sorted(names)}")
        setattr(cfg, key, value)
    check_policy(cfg.bad_input)
    train_source = resolve_source(source, "train", bad_input=cfg.bad_input, cache_dir=cfg.cache_dir,
                                  download=cfg.download)
    val_source = None
    if cfg.val_source is not None:
        val_source = resolve_source(cfg.val_source, "val" if not isinstance(cfg.val_source, ImageSource) else "train",
                                    bad_input=cfg.bad_input, cache_dir=cfg.cache_dir, download=cfg.download) \
            if not _is_cifar_name(cfg.val_source) else resolve_source(cfg.val_source, "test", cache_dir=cfg.cache_dir,
                                                                      download=cfg.download)
        check_same_classes(train_source, val_source)

    if cfg.split is not None:
        split = Split.from_dict(cfg.split, train_source)
    else:
        val_size = 0 if val_source is not None else cfg.val_size
        split = make_split(train_source.targets, val_size=val_size, val_fraction=cfg.val_fraction, seed=cfg.seed,
                           fingerprint=train_source.fingerprint)
    pipeline = _choose_pipeline(cfg, train_source)
    mean = cfg.mean or _preprocessing_field(cfg.preprocessing, "mean")
    std = cfg.std or _preprocessing_field(cfg.preprocessing, "std")
    input_size = _preprocessing_field(cfg.preprocessing, "input_size")
    image_size = cfg.image_size or (input_size[-1] if input_size else None)
    if pipeline == "small":
        return _build_small(cfg, train_source, val_source, split, mean, std, image_size)
    return _build_large(cfg, train_source, val_source, split, mean, std, image_size)


def _is_cifar_name(spec: Any) -> bool:
    return isinstance(spec, str) and spec in CIFAR_ARCHIVES


def _rows(decoded: DecodedImages, indices: np.ndarray) -> torch.Tensor:
    """Rows of the decoded tensor for the given source indices, leaving out images that failed to decode."""
    position = np.full(int(decoded.index.max(initial=-1)) + 1 if len(decoded.index) else 0, -1, dtype=np.int64)
    position[decoded.index] = np.arange(len(decoded.index))
    indices = indices[indices < len(position)]
    rows = position[indices]
    return torch.from_numpy(rows[rows >= 0])


def _build_small(cfg: DataConfig, train_source: ImageSource, val_source: Optional[ImageSource], split: Split,
                 mean, std, image_size):
    size = (image_size, image_size) if image_size else None
    decoded = decode_to_tensor(train_source, image_size=size, bad_input=cfg.bad_input, cache_dir=cfg.cache_dir,
                               use_cache=cfg.use_cache)
    train_rows = _rows(decoded, split.train_indices)
    train_images = decoded.images[train_rows]
    train_labels = torch.from_numpy(train_source.targets[decoded.index])[train_rows]
    if val_source is not None:
        val_decoded = decode_to_tensor(val_source, image_size=tuple(decoded.images.shape[2:]),
                                       bad_input=cfg.bad_input, cache_dir=cfg.cache_dir, use_cache=cfg.use_cache)
        val_images = val_decoded.images
        val_labels = torch.from_numpy(val_source.targets[val_decoded.index])
        skipped = train_source.skipped + decoded.skipped + val_source.skipped + val_decoded.skipped
    else:
        val_rows = _rows(decoded, split.val_indices)
        val_images = decoded.images[val_rows]
        val_labels = torch.from_numpy(train_source.targets[decoded.index])[val_rows]
        skipped = train_source.skipped + decoded.skipped
    if len(train_images) == 0:
        raise UsageError(f"{train_source.name}: no usable training images")
    if mean is None or std is None:
        mean, std = _measure_mean_std(train_images)
    common = dict(mean=mean, std=std, seed=cfg.seed, device=cfg.device, channels_last=cfg.channels_last,
                  dtype=cfg.dtype, rank=cfg.rank, world_size=cfg.world_size)
    train = DeviceLoader(train_images, train_labels, batch_size=cfg.batch_size, shuffle=True, augment=cfg.augment,
                         drop_last=cfg.drop_last, **common)
    val = None
    if len(val_images):
        val = DeviceLoader(val_images, val_labels, batch_size=cfg.eval_batch_size or cfg.batch_size, shuffle=False,
                           augment=False, drop_last=False, **common)
    info = DataInfo(train_source.name, train_source.fingerprint, "small", list(train_source.classes), split.to_dict(),
                    tuple(mean), tuple(std), tuple(decoded.images.shape[2:]), decoded.images.shape[1],
                    len(train_images), len(val_images), list(skipped), decoded.resized,
                    str(decoded.cache_path) if decoded.cache_path else None, decoded.from_cache)
    return train, val, info


def _build_large(cfg: DataConfig, train_source: ImageSource, val_source: Optional[ImageSource], split: Split,
                 mean, std, image_size):
    import os

    mean = tuple(mean or IMAGENET_MEAN)
    std = tuple(std or IMAGENET_STD)
    if train_source.channels != len(mean):
        raise UsageError(f"{train_source.name}: {train_source.channels} channels but mean/std have {len(mean)}")
    image_size = image_size or 224
    crop_pct = _preprocessing_field(cfg.preprocessing, "crop_pct") or 0.875
    interpolation = _preprocessing_field(cfg.preprocessing, "interpolation") or "bilinear"
    workers = cfg.num_workers if cfg.num_workers is not None else min(4, os.cpu_count() or 1)
    common = dict(mean=mean, std=std, seed=cfg.seed, device=cfg.device, image_size=image_size,
                  resize_size=int(round(image_size / crop_pct)), interpolation=interpolation,
                  channels_last=cfg.channels_last, dtype=cfg.dtype, bad_input=cfg.bad_input, rank=cfg.rank,
                  world_size=cfg.world_size, num_workers=workers)
    train = ImageLoader(train_source, split.train_indices, batch_size=cfg.batch_size, shuffle=True,
                        train=cfg.augment, drop_last=cfg.drop_last, trivial_augment=cfg.trivial_augment,
                        random_erasing=cfg.random_erasing, **common)
    if val_source is not None:
        val_set, val_indices = val_source, np.arange(len(val_source))
    else:
        val_set, val_indices = train_source, split.val_indices
    val = None
    if len(val_indices):
        val = ImageLoader(val_set, val_indices, batch_size=cfg.eval_batch_size or cfg.batch_size, shuffle=False,
                          train=False, drop_last=False, **common)
    skipped = list(train_source.skipped) + (list(val_source.skipped) if val_source is not None else [])
    info = DataInfo(train_source.name, train_source.fingerprint, "large", list(train_source.classes), split.to_dict(),
                    mean, std, (image_size, image_size), train_source.channels, len(split.train_indices),
                    len(val_indices), skipped)
    return train, val, info


__all__ = [
    "BadImageError", "BadInputWarning", "CIFAR_ARCHIVES", "DataConfig", "DataInfo", "DecodedImages", "DeviceLoader",
    "DeviceLoaderConfig", "DownloadError", "FileTreeSource", "ImageLoader", "ImageLoaderConfig", "ImageSource",
    "ResumableSampler", "SYNTHETIC_SYNTAX", "Split", "SplitMismatchError", "SyntheticSource", "TensorSource",
    "build_loaders", "build_transform", "check_same_classes", "cifar_archive", "decode_bytes", "decode_to_tensor",
    "load_cifar", "load_folder", "load_zip", "make_split",
    "resolve_source", "sample_path",
]
