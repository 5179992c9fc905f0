"""The large-image pipeline: decode in DataLoader workers, augment with torchvision.transforms.v2.

Resume contract, as for the small pipeline: :class:`ResumableSampler` yields, for each image,
its index and a seed derived from (seed, epoch, position), and the dataset seeds the transform
with it, so ``epoch_batches(epoch, start_batch)`` reproduces the same crops and flips however
many workers there are and wherever the epoch is resumed. With ``world_size > 1`` each rank
takes every ``world_size``-th position of the shared order (the ``DistributedSampler`` scheme).

A file that fails to decode never crashes a worker: the worker returns a marker, the collate
function drops it, and the loader in the main process warns (naming the file) and counts it,
or raises :class:`BadImageError` under ``bad_input='error'``. Multi-frame images give their first
frame; the workers pass their names back and the loader says so once a pass, with the count.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Iterator, Optional, Sequence, Union

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from ..errors import UsageError
from .batching import EpochBatches, check_rank
from .pipeline import DEFAULT_CROP_PCT, DEFAULT_IMAGE_SIZE, DEFAULT_INTERPOLATION, default_num_workers
from .decode import BadImageError, BadInputWarning, check_policy, report_first_frames, take_first_frames
from .sources import ImageSource, mix_seed


@dataclass
class ImageLoaderConfig:
    batch_size: int = 64
    shuffle: bool = True
    train: bool = True  # RandomResizedCrop + flip; False: Resize + CenterCrop
    drop_last: bool = False
    image_size: int = DEFAULT_IMAGE_SIZE
    resize_size: Optional[int] = None  # evaluation resize; default image_size / DEFAULT_CROP_PCT
    interpolation: str = DEFAULT_INTERPOLATION
    trivial_augment: bool = False
    random_erasing: float = 0.0
    num_workers: int = field(default_factory=default_num_workers)
    pin_memory: Optional[bool] = None  # default: when the device is CUDA
    persistent_workers: bool = True
    prefetch_factor: int = 2
    channels_last: bool = False
    dtype: torch.dtype = torch.float32
    bad_input: str = "skip"
    rank: int = 0
    world_size: int = 1


def build_transform(cfg: ImageLoaderConfig, mean: Sequence[float], std: Sequence[float]):
    """The transforms.v2 pipeline on uint8 CHW tensors (the output of torchvision.io decoding)."""
    from torchvision.transforms import InterpolationMode, v2

    interpolation = InterpolationMode(cfg.interpolation)
    if cfg.train:
        steps = [v2.RandomResizedCrop(cfg.image_size, interpolation=interpolation, antialias=True),
                 v2.RandomHorizontalFlip()]
        if cfg.trivial_augment:
            steps.append(v2.TrivialAugmentWide(interpolation=interpolation))
    else:
        resize = cfg.resize_size or int(round(cfg.image_size / DEFAULT_CROP_PCT))
        steps = [v2.Resize(resize, interpolation=interpolation, antialias=True), v2.CenterCrop(cfg.image_size)]
    steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std))]
    if cfg.train and cfg.random_erasing > 0:
        steps.append(v2.RandomErasing(p=cfg.random_erasing, value=0))
    return v2.Compose(steps)


class TransformedImages(Dataset):
    """Items are (source index, seed) pairs from :class:`ResumableSampler`; returns (image, label, problem,
    first_frame): ``problem`` the (path, reason) of a file that failed to decode, ``first_frame`` the path of a
    multi-frame file of which the first frame was taken (else None)."""

    def __init__(self, source: ImageSource, indices: Sequence[int], transform):
        self.source = source
        self.indices = torch.as_tensor(indices, dtype=torch.int64)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, item: tuple[int, int]):
        position, seed = item
        index = int(self.indices[position])
        label = int(self.source.targets[index])
        take_first_frames()
        try:
            image = self.source.decode(index)
        except BadImageError as error:
            return None, label, (error.path, error.reason), None
        first_frame = (take_first_frames() or [None])[0]
        # the transform's randomness comes from this image's own seed, not the worker's stream
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return self.transform(image), label, None, first_frame


def collate_dropping_bad(items: list):
    """Stack the good items; carry the (path, reason) of bad ones, and the paths of multi-frame ones, to the
    main process."""
    good = [(image, label) for image, label, problem, _ in items if problem is None]
    bad = [problem for _, _, problem, _ in items if problem is not None]
    first_frame = [path for *_, path in items if path is not None]
    if not good:
        return None, None, bad, first_frame
    return (torch.stack([g[0] for g in good]), torch.tensor([g[1] for g in good], dtype=torch.int64), bad,
            first_frame)


class ResumableSampler(Sampler):
    """A seeded order over ``num_samples`` positions, sharded by rank, that can start mid-epoch."""

    def __init__(self, num_samples: int, *, seed: int = 0, shuffle: bool = True, rank: int = 0, world_size: int = 1):
        check_rank(rank, world_size)
        self.total = num_samples
        self.seed, self.shuffle, self.rank, self.world_size = seed, shuffle, rank, world_size
        self.epoch = 0
        self.start = 0  # position within this rank's share

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return math.ceil(self.total / self.world_size) - self.start

    def order(self, epoch: int) -> list[tuple[int, int]]:
        generator = torch.Generator().manual_seed(mix_seed(self.seed, epoch))
        order = torch.randperm(self.total, generator=generator) if self.shuffle else torch.arange(self.total)
        per_rank = math.ceil(self.total / self.world_size)
        order = torch.cat([order, order[: per_rank * self.world_size - self.total]])  # equal shares
        positions = range(self.rank, per_rank * self.world_size, self.world_size)
        return [(int(order[p]), mix_seed(self.seed, epoch, p)) for p in positions]

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return iter(self.order(self.epoch)[self.start:])


class ImageLoader(EpochBatches):
    """A DataLoader over an image source with the ``epoch_batches(epoch, start_batch)`` contract."""

    def __init__(self, source: ImageSource, indices: Sequence[int], *, mean: Sequence[float], std: Sequence[float],
                 seed: int = 0, device: Union[str, torch.device] = "cpu",
                 config: Optional[ImageLoaderConfig] = None, **options):
        self.config = config or ImageLoaderConfig()
        for key, value in options.items():
            if not hasattr(self.config, key):
                raise TypeError(f"unknown ImageLoader option {key!r}")
            setattr(self.config, key, value)
        cfg = self.config
        check_policy(cfg.bad_input)
        self.device = torch.device(device)
        self.source = source
        self.dataset = TransformedImages(source, indices, build_transform(cfg, mean, std))
        self.sampler = ResumableSampler(len(self.dataset), seed=seed, shuffle=cfg.shuffle, rank=cfg.rank,
                                        world_size=cfg.world_size)
        pin = cfg.pin_memory if cfg.pin_memory is not None else self.device.type == "cuda"
        workers = cfg.num_workers
        self.loader = DataLoader(
            self.dataset, batch_size=cfg.batch_size, sampler=self.sampler, num_workers=workers,
            collate_fn=collate_dropping_bad, pin_memory=pin, drop_last=cfg.drop_last,
            persistent_workers=cfg.persistent_workers and workers > 0,
            prefetch_factor=cfg.prefetch_factor if workers > 0 else None)
        self.skipped: dict[str, str] = {}  # every bad file met so far, path -> reason
        self.first_frame: set[str] = set()  # every multi-frame file met so far (its first frame was used)

    def _total_images(self) -> int:
        return len(self.dataset)

    def epoch_batches(self, epoch: int, start_batch: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The batches of ``epoch`` from ``start_batch`` on, on the device.

        A batch that met bad files is smaller by that many images (never empty: an all-bad batch is dropped).
        """
        cfg = self.config
        if not 0 <= start_batch <= len(self):
            raise UsageError(f"start_batch must be in [0, {len(self)}], got {start_batch}")
        self.sampler.set_epoch(epoch)
        self.sampler.start = start_batch * cfg.batch_size
        return self._device_batches(self.loader)

    def side_batches(self, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The batches of ``epoch`` from a one-off DataLoader with a sampler of its own: the training's
        loader (its sampler and persistent workers) is shared state, which a second iteration would reset."""
        sampler = ResumableSampler(len(self.dataset), seed=self.sampler.seed, shuffle=self.sampler.shuffle,
                                   rank=self.sampler.rank, world_size=self.sampler.world_size)
        sampler.set_epoch(epoch)
        loader = self.loader
        workers = loader.num_workers
        return self._device_batches(DataLoader(
            self.dataset, batch_size=loader.batch_size, sampler=sampler, num_workers=workers,
            collate_fn=loader.collate_fn, drop_last=loader.drop_last,
            prefetch_factor=self.config.prefetch_factor if workers > 0 else None))

    def _device_batches(self, loader: DataLoader) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        cfg = self.config
        first_frame: set[str] = set()
        try:
            for images, labels, bad, multi in loader:
                if bad:
                    self._report(bad)
                first_frame.update(multi)
                if images is None:
                    continue
                images = images.to(self.device, non_blocking=True)
                if cfg.channels_last:
                    images = images.contiguous(memory_format=torch.channels_last)
                yield images.to(cfg.dtype), labels.to(self.device, non_blocking=True)
        finally:  # once a pass (or the part of it that ran), naming only files not said before
            report_first_frames(self.source.name, sorted(first_frame - self.first_frame))
            self.first_frame |= first_frame

    def _report(self, bad: list[tuple[str, str]]) -> None:
        if self.config.bad_input == "error":
            path, reason = bad[0]
            raise BadImageError(path, f"{reason} (bad_input='error')")
        new = [(p, r) for p, r in bad if p not in self.skipped]
        self.skipped.update(bad)
        if new:
            named = "; ".join(f"{p} ({r})" for p, r in new)
            warnings.warn(f"skipped {len(new)} image(s) that failed to decode: {named}", BadInputWarning, stacklevel=3)
