"""Decode a whole source once into one uint8 NCHW tensor, cached on disk by content fingerprint.

The cache file is ``<cache_dir>/decoded/<key>.pt`` where the key covers the source fingerprint,
the image size and the channel count; it is written to a temporary file and renamed, so an
interrupted run never leaves a half-written cache behind.
"""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Union

import numpy as np
import torch

from .._io import atomic_path, cache_root
from ..errors import UsageError
from .decode import BadImageError, check_policy, report_first_frames, report_skipped, take_first_frames
from .sources import ImageSource

_CACHE_VERSION = 2  # 2: float TIFFs scaled (were black), multi-frame images' first frame


@dataclass
class DecodedImages:
    """Every usable image of a source, decoded."""

    images: torch.Tensor  # uint8 (N, C, H, W)
    index: np.ndarray  # the source index of each row; bad images are absent
    skipped: list = field(default_factory=list)  # (path, reason) of images that failed to decode
    resized: int = 0  # images whose size differed and were resized + center-cropped
    from_cache: bool = False
    cache_path: Optional[Path] = None
    first_frame: list = field(default_factory=list)  # multi-frame files of which the first frame was taken


def atomic_save(obj: object, path: Path) -> None:
    """``torch.save`` to a temporary file in the same folder, then rename over ``path``."""
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def cache_key(source: ImageSource, image_size: tuple[int, int]) -> str:
    text = f"v{_CACHE_VERSION}:{source.fingerprint}:{image_size[0]}x{image_size[1]}:{source.channels}"
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _fit(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    from torchvision.transforms.v2 import functional as F

    image = F.resize(image, list(size) if size[0] != size[1] else size[0], antialias=True)
    return F.center_crop(image, list(size))


def probe_size(source: ImageSource, bad_input: str = "skip", tries: int = 16) -> tuple[int, int]:
    """(H, W) of the source's images: known, or read from the first decodable image."""
    if source.image_size is not None:
        return tuple(source.image_size)
    for index in range(min(len(source), tries)):
        try:
            return tuple(source.decode(index).shape[1:])
        except BadImageError:
            if bad_input == "error":
                raise
    raise UsageError(f"{source.name}: none of the first {tries} images could be decoded")


def decode_to_tensor(source: ImageSource, *, image_size: Optional[tuple[int, int]] = None, bad_input: str = "skip",
                     cache_dir: Optional[Union[str, Path]] = None, use_cache: bool = True,
                     num_threads: Optional[int] = None) -> DecodedImages:
    """All images of ``source`` as one uint8 tensor (decoded once, then read from the cache)."""
    check_policy(bad_input)
    held = source.images_tensor() if image_size is None or tuple(image_size) == source.image_size else None
    if held is not None:  # CIFAR pickles and synthetic data are already pixels: nothing to decode or cache
        return DecodedImages(held, np.arange(len(source), dtype=np.int64))
    size = tuple(image_size) if image_size is not None else probe_size(source, bad_input)
    path = Path(cache_dir or cache_root()) / "decoded" / f"{cache_key(source, size)}.pt"
    if use_cache and path.is_file():
        try:
            record = torch.load(path, weights_only=True)
            if record.get("fingerprint") == source.fingerprint:
                skipped = [tuple(item) for item in record["skipped"]]
                report_skipped(source.name, skipped, bad_input)
                first_frame = list(record.get("first_frame", []))  # said again: the images are the same
                report_first_frames(source.name, first_frame)
                return DecodedImages(record["images"], record["index"].numpy(), skipped, record["resized"],
                                     True, path, first_frame)
        except Exception:  # an unreadable cache is rebuilt, never trusted
            pass

    def work(index: int):
        try:
            image = source.decode(index)
        except BadImageError as error:
            return index, None, error
        if tuple(image.shape[1:]) != size:
            return index, _fit(image, size), "resized"
        return index, image, None

    images = torch.empty((len(source), source.channels, *size), dtype=torch.uint8)
    keep = np.zeros(len(source), dtype=bool)
    skipped, resized = [], 0
    take_first_frames()  # notes left by an earlier loop in this process are not this one's
    threads = num_threads or min(4, os.cpu_count() or 1)
    # torchvision's decoders release the GIL, so threads decode in parallel without worker processes
    with ThreadPoolExecutor(threads) as pool:
        for index, image, problem in pool.map(work, range(len(source)), chunksize=256):
            if isinstance(problem, BadImageError):
                if bad_input == "error":
                    raise problem
                skipped.append((problem.path, problem.reason))
                continue
            resized += problem == "resized"
            images[index] = image
            keep[index] = True
    index = np.flatnonzero(keep).astype(np.int64)
    if len(index) != len(source):
        images = images[torch.from_numpy(index)]
    report_skipped(source.name, skipped, bad_input)
    first_frame = sorted(set(take_first_frames()))
    report_first_frames(source.name, first_frame)
    if use_cache:
        atomic_save(dict(images=images, index=torch.from_numpy(index), skipped=[list(s) for s in skipped],
                         resized=resized, fingerprint=source.fingerprint, first_frame=first_frame), path)
    return DecodedImages(images, index, skipped, resized, False, path if use_cache else None, first_frame)
