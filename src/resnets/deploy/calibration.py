"""Images for INT8 calibration and for the accuracy guard, and the guard itself.

``calibration=`` / ``check(data)`` take a preprocessed batch (optionally with its labels), a
data source string (anything ``--data`` takes, optionally ``SOURCE:SPLIT``, such as
``cifar10:test`` or ``photos.zip:train``) or a folder (class-per-folder: labelled; a flat
folder of images: unlabelled). Sources are sampled (seeded, all classes mixed) down to a count.

Without labels the guard measures how often the candidate's top-1 class differs from fp32's:
a bound on the top-1 it can lose, since each changed prediction moves top-1 by at most one image.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional, Union

import numpy as np
import torch

from ..data.decode import report_first_frames, take_first_frames
from ..data.sources import resolve_source
from ..errors import MissingFileError, UsageError, check_number
from ..models import Preprocessing
from .images import IMAGE_SUFFIXES, find_images, preprocess, read_images
from .runtimes import CALIBRATION_IMAGES, MAX_ACCURACY_LOSS


Data = Union[torch.Tensor, tuple, str, os.PathLike]


@dataclass
class LabelledImages:
    images: torch.Tensor  # preprocessed float (N, C, H, W)
    labels: Optional[torch.Tensor]  # int64 (N,), None when the images came without labels
    source: str
    num_classes: Optional[int] = None  # the source's class count, where it has one

    def for_model(self, num_classes: int) -> "LabelledImages":
        """These images, without labels where the source's classes are not the model's (labels
        that name other classes would make every top-1 meaningless, and the guard blind)."""
        if self.labels is None or self.num_classes in (None, num_classes):
            return self
        return LabelledImages(self.images, None, self.source, self.num_classes)


def _split_spec(text: str) -> tuple[str, Optional[str]]:
    """``photos.zip:train`` -> ("photos.zip", "train"); ``imagenette/:val/`` (the folder, as ``eval --split`` spells
    it) -> ("imagenette/", "val"); a spec whose own syntax has colons (``synthetic:...``, ``sample:cifar10``) is
    split only after its own part."""
    if Path(text).expanduser().exists() or ":" not in text:
        return text, None
    head, split = text.rsplit(":", 1)
    if Path(head).expanduser().exists() or head in ("cifar10", "cifar100") or head.startswith("sample:"):
        return head, split.rstrip("/") or None
    return text, None


def load_images(data: Data, preprocessing: Preprocessing, *, count: int = CALIBRATION_IMAGES,
                seed: int = 0) -> LabelledImages:
    """Preprocessed images (and labels where known) from a batch, a source string or a folder
    (at most ``count`` of the latter two, a seeded sample)."""
    check_number("count", count, 1)
    if isinstance(data, np.ndarray):
        data = torch.from_numpy(data)
    if isinstance(data, torch.Tensor):
        return LabelledImages(_check_batch(data, preprocessing, "calibration batch"), None, "batch")
    if isinstance(data, (tuple, list)) and len(data) == 2 and isinstance(data[0], torch.Tensor):
        images, labels = _check_batch(data[0], preprocessing, "images"), torch.as_tensor(data[1]).long()
        if labels.shape != (len(images),):
            raise UsageError(f"labels must have shape ({len(images)},), got {tuple(labels.shape)}")
        return LabelledImages(images, labels, "batch")
    if not isinstance(data, (str, os.PathLike)):
        raise UsageError(f"images must be a preprocessed (N, C, H, W) batch, an (images, labels) pair, a data "
                         f"source string or a folder, got {type(data).__name__}")
    text = os.fspath(data)
    path = Path(text).expanduser()
    if path.is_dir() and not any(p.is_dir() and not p.name.startswith(".") for p in path.iterdir()):
        files = [p for p in find_images([path]) if p.suffix.lower() in IMAGE_SUFFIXES]
        if not files:
            raise MissingFileError(f"{path}: no images found")
        chosen = [files[i] for i in sorted(np.random.default_rng(seed).permutation(len(files))[:count])]
        read = read_images(chosen, preprocessing)  # an unreadable file found in the folder is skipped, said
        if read.batch is None:
            raise UsageError(f"{path}: none of the {len(chosen)} images chosen could be read")
        return LabelledImages(read.batch, None, text)
    spec, split = _split_spec(text)
    source = resolve_source(spec, split or "train")
    if len(source) == 0:
        raise UsageError(f"{text}: no images")
    # a seeded sample, so that a sorted source (one class after another) gives every class
    chosen = np.sort(np.random.default_rng(seed).permutation(len(source))[:count])
    take_first_frames()  # an earlier loop's notes are not this one's
    images = [preprocess(source.decode(int(i)), preprocessing, source=source.image_id(int(i))) for i in chosen]
    report_first_frames(text, take_first_frames())  # multi-frame images gave their first frame: said once
    return LabelledImages(torch.stack(images), torch.from_numpy(source.targets[chosen]), text, source.num_classes)


def _check_batch(batch: torch.Tensor, preprocessing: Preprocessing, what: str) -> torch.Tensor:
    expected = tuple(preprocessing.input_size)
    if batch.dim() != 4 or tuple(batch.shape[1:]) != expected or len(batch) == 0:
        raise UsageError(f"{what} must be a non-empty preprocessed batch of shape (N, {expected[0]}, {expected[1]}, "
                         f"{expected[2]}), got {tuple(batch.shape)}")
    return batch.float()


@dataclass
class AccuracyCheck:
    """A precision's top-1 against fp32 on the same images (percent), and how often the two
    predict the same class."""

    precision: str
    backend: str
    images: int
    fp32_top1: Optional[float]  # None without labels
    top1: Optional[float]
    agreement: float  # percent of images with the same top-1 class as fp32

    @property
    def loss(self) -> float:
        """Top-1 points lost against fp32; without labels, the share of changed predictions (its bound)."""
        if self.fp32_top1 is None or self.top1 is None:
            return 100.0 - self.agreement
        return self.fp32_top1 - self.top1

    def passes(self, max_loss: float = MAX_ACCURACY_LOSS) -> bool:
        return self.loss <= max_loss

    def to_dict(self) -> dict:
        return {**asdict(self), "loss": self.loss}

    def __str__(self) -> str:
        if self.top1 is None:
            return (f"{self.precision} ({self.backend}) on {self.images} unlabelled images: same top-1 as fp32 on "
                    f"{self.agreement:.2f}%")
        return (f"{self.precision} ({self.backend}) on {self.images} images: top-1 {self.top1:.2f}% against fp32's "
                f"{self.fp32_top1:.2f}% ({-self.loss:+.2f} points), same top-1 as fp32 on {self.agreement:.2f}%")


def compare_top1(precision: str, backend: str, reference: torch.Tensor, candidate: torch.Tensor,
                 labels: Optional[torch.Tensor]) -> AccuracyCheck:
    """An AccuracyCheck from the top-1 classes of fp32 (``reference``) and of the candidate."""
    agreement = float((reference == candidate).double().mean() * 100)
    if labels is None:
        return AccuracyCheck(precision, backend, len(reference), None, None, agreement)
    labels = labels.to(reference.dtype)
    return AccuracyCheck(precision, backend, len(reference), float((reference == labels).double().mean() * 100),
                         float((candidate == labels).double().mean() * 100), agreement)


def top1_classes(run, images: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    """The top-1 class of each image through ``run`` (a batch -> logits callable), in batches."""
    return torch.cat([run(images[i:i + batch_size]).argmax(1) for i in range(0, len(images), batch_size)])
