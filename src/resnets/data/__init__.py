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

Two pipelines, chosen by ``pipeline="auto"`` (:func:`choose_pipeline`): images no larger than
``small_max_side`` whose uint8 tensor fits in ``small_max_bytes`` go to the small-image pipeline (:class:`DeviceLoader`:
decoded once, cached on disk, held on the device, augmented by whole batches); anything else goes
to the large-image pipeline (:class:`ImageLoader`: DataLoader workers with torchvision.transforms.v2).
Both loaders yield (float images normalised on the device, int64 labels on the device) and share
the resume contract: ``epoch_batches(epoch, start_batch)`` is a pure function of
(seed, epoch, batch index). :func:`loader_for` builds one loader from a source and a
:class:`DataConfig`; evaluation and ``resnets features`` get theirs from it too, so they see the
pipeline and transform that training sees for the same data and model preprocessing.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np

from ..download import DownloadError
from ..errors import UsageError
from .cache import DecodedImages, decode_to_tensor
from .download import CIFAR_ARCHIVES, cifar_archive
from .large import ImageLoader, ImageLoaderConfig, ResumableSampler, build_transform
from .loaders import Loader, decode_small, loader_for, rows_of
from .pipeline import DataConfig, choose_pipeline, large_transform, with_data_size
from .small import DeviceLoader, DeviceLoaderConfig
from .decode import FirstFrameWarning
from .sources import (SYNTHETIC_SYNTAX, BadImageError, BadInputWarning, FileTreeSource, ImageSource, SyntheticSource,
                      TensorSource, check_policy, decode_bytes, load_cifar, load_folder, load_zip, resolve_source,
                      sample_path)
from .splits import Split, SplitMismatchError, make_split


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


def build_loaders(source: Union[str, Path, ImageSource], config: Optional[DataConfig] = None,
                  **options: Any) -> tuple[Loader, Optional[Loader], DataInfo]:
    """Training loader, validation loader (None when ``val_size=0``) and a :class:`DataInfo`.

    Options are the fields of :class:`DataConfig`, given as ``config`` or keyword arguments.
    """
    cfg = DataConfig() if config is None else DataConfig(**asdict(config))
    names = {f.name for f in fields(DataConfig)}
    for key, value in options.items():
        if key not in names:
            raise TypeError(f"build_loaders got an unknown option {key!r}; options: {sorted(names)}")
        setattr(cfg, key, value)
    cfg.check()
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
    # the validation set goes through the pipeline chosen for the training set
    cfg.pipeline = choose_pipeline(train_source, cfg)
    if cfg.pipeline == "small":
        return _build_small(cfg, train_source, val_source, split)
    return _build_large(cfg, train_source, val_source, split)


def _is_cifar_name(spec: Any) -> bool:
    return isinstance(spec, str) and spec in CIFAR_ARCHIVES


def _build_small(cfg: DataConfig, train_source: ImageSource, val_source: Optional[ImageSource], split: Split):
    decoded = decode_small(train_source, cfg)
    if len(rows_of(decoded, split.train_indices)) == 0:
        raise UsageError(f"{train_source.name}: no usable training images")
    train, _ = loader_for(train_source, cfg, train=True, indices=split.train_indices, decoded=decoded)
    # the validation images are normalised with the training set's statistics (measured, when not given)
    cfg = replace(cfg, mean=train.mean, std=train.std)
    if val_source is not None:
        val_decoded = decode_small(val_source, cfg, image_size=tuple(decoded.images.shape[2:]))
        val, _ = loader_for(val_source, cfg, train=False, decoded=val_decoded)
        skipped = train_source.skipped + decoded.skipped + val_source.skipped + val_decoded.skipped
    else:
        val, _ = loader_for(train_source, cfg, train=False, indices=split.val_indices, decoded=decoded)
        skipped = train_source.skipped + decoded.skipped
    info = DataInfo(train_source.name, train_source.fingerprint, "small", list(train_source.classes), split.to_dict(),
                    tuple(train.mean), tuple(train.std), tuple(decoded.images.shape[2:]), decoded.images.shape[1],
                    len(train.images), len(val.images), list(skipped), decoded.resized,
                    str(decoded.cache_path) if decoded.cache_path else None, decoded.from_cache)
    return train, val if len(val.images) else None, info


def _build_large(cfg: DataConfig, train_source: ImageSource, val_source: Optional[ImageSource], split: Split):
    cfg = with_data_size(cfg, train_source)  # validation images at the training images' size
    train, _ = loader_for(train_source, cfg, train=True, indices=split.train_indices)
    if val_source is not None:
        val_set, val_indices = val_source, np.arange(len(val_source))
    else:
        val_set, val_indices = train_source, split.val_indices
    val = None
    if len(val_indices):
        val, _ = loader_for(val_set, cfg, train=False, indices=val_indices)
    transform = large_transform(cfg)
    skipped = list(train_source.skipped) + (list(val_source.skipped) if val_source is not None else [])
    info = DataInfo(train_source.name, train_source.fingerprint, "large", list(train_source.classes), split.to_dict(),
                    transform["mean"], transform["std"], (transform["image_size"],) * 2, train_source.channels,
                    len(split.train_indices), len(val_indices), skipped)
    return train, val, info


__all__ = [
    "BadImageError", "BadInputWarning", "CIFAR_ARCHIVES", "DataConfig", "DataInfo", "DecodedImages", "DeviceLoader",
    "DeviceLoaderConfig", "DownloadError", "FileTreeSource", "FirstFrameWarning", "ImageLoader", "ImageLoaderConfig",
    "ImageSource",
    "ResumableSampler", "SYNTHETIC_SYNTAX", "Split", "SplitMismatchError", "SyntheticSource", "TensorSource",
    "build_loaders", "build_transform", "check_same_classes", "choose_pipeline", "cifar_archive", "decode_bytes",
    "decode_to_tensor", "load_cifar", "load_folder", "load_zip",
    "loader_for", "make_split", "resolve_source", "sample_path",
]
