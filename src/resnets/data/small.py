"""The small-image pipeline: the whole dataset as one uint8 tensor on the training device.

Augmentation works on whole batches with tensor indexing (pad, random crop and horizontal
flip in one gather; random erasing as one mask), so there is no per-sample Python and no
worker process. Every random choice of an epoch (the order, each image's crop offset, flip and
erased box) is drawn up front from a CPU generator seeded with (seed, epoch):
``epoch_batches(epoch, start_batch)`` is therefore a pure function of (seed, epoch, batch
index), on any device, and a run resumed mid-epoch sees exactly the remaining batches.
TrivialAugment, the one per-image option, draws from a generator seeded with (seed, epoch,
rank, batch index), so it keeps that contract too.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Iterator, NamedTuple, Optional, Sequence, Union

import torch
import torch.nn.functional as F

from .._options import check_bounds, option, same_as
from ..errors import UsageError
from .batching import EpochBatches, check_rank
from .pipeline import DataConfig
from .sources import mix_seed


@dataclass
class DeviceLoaderConfig:
    batch_size: int = same_as(DataConfig, "batch_size", 128)
    shuffle: bool = True
    augment: bool = True  # pad + random crop + flip (paper §4.2); off for evaluation
    drop_last: bool = False
    pad: int = option(4, low=0)
    flip: bool = True
    trivial_augment: bool = False  # TrivialAugmentWide on each image after crop and flip (Müller & Hutter, 2021)
    # probability of erasing one box of each image after normalisation (Zhong et al.)
    random_erasing: float = same_as(DataConfig, "random_erasing", 0.0)
    channels_last: bool = False
    dtype: torch.dtype = torch.float32
    rank: int = same_as(DataConfig, "rank", 0)
    world_size: int = same_as(DataConfig, "world_size", 1)

    def __post_init__(self) -> None:
        check_bounds(self)
        check_rank(self.rank, self.world_size)


# RandomErasing's defaults in torchvision: the box covers 2-33 % of the image, aspect ratio 0.3-3.3,
# filled with 0 after normalisation (the channel mean); up to ten tries to draw a box that fits
ERASE_SCALE, ERASE_RATIO, ERASE_TRIES = (0.02, 0.33), (0.3, 3.3), 10


class EpochPlan(NamedTuple):
    """Every random choice of one rank's epoch, one row per image in batch order."""

    order: torch.Tensor  # (N,) image indices
    offsets: Optional[torch.Tensor]  # (N, 2) crop offsets in the padded image; None: no augmentation
    flips: Optional[torch.Tensor]  # (N,) bool
    boxes: Optional[torch.Tensor]  # (N, 4) erased (top, left, height, width), height 0: none; None: no erasing


def erase_boxes(count: int, height: int, width: int, probability: float,
                generator: torch.Generator) -> torch.Tensor:
    """(count, 4) boxes (top, left, height, width) drawn as torchvision's ``RandomErasing`` draws them: with
    ``probability``, a box of ERASE_SCALE of the area and ERASE_RATIO aspect, the first of ERASE_TRIES
    draws that fits; height and width 0 where the image is left alone."""
    applied = torch.rand(count, generator=generator) < probability
    area = height * width * torch.empty(count, ERASE_TRIES).uniform_(*ERASE_SCALE, generator=generator)
    aspect = torch.empty(count, ERASE_TRIES).uniform_(math.log(ERASE_RATIO[0]), math.log(ERASE_RATIO[1]),
                                                      generator=generator).exp()
    box_h = (area * aspect).sqrt().round().long()
    box_w = (area / aspect).sqrt().round().long()
    corner = torch.rand(count, ERASE_TRIES, 2, generator=generator)
    fits = (box_h < height) & (box_w < width)
    first = fits.int().argmax(1, keepdim=True)  # the first try that fits (0 where none does: masked below)
    box_h, box_w = box_h.gather(1, first)[:, 0], box_w.gather(1, first)[:, 0]
    corner = corner[torch.arange(count), first[:, 0]]
    # corner < 1, so a box that fits lies inside the image; one that does not is dropped by ``keep``
    top = (corner[:, 0] * (height - box_h + 1)).long()
    left = (corner[:, 1] * (width - box_w + 1)).long()
    keep = applied & fits.any(1)
    return torch.stack([top, left, box_h * keep, box_w * keep], 1)


class DeviceLoader(EpochBatches):
    """Batches of (normalised images, int64 labels) from tensors held on ``device``.

    ``images`` is uint8 (N, C, H, W); ``mean``/``std`` are per channel on the 0..1 scale.
    With ``world_size > 1`` each rank takes every ``world_size``-th image of the shared seeded
    order (padded by repetition to equal length, as ``DistributedSampler`` does).
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, *, mean: Sequence[float], std: Sequence[float],
                 seed: int = 0, device: Union[str, torch.device] = "cpu",
                 config: Optional[DeviceLoaderConfig] = None, **options):
        known = {f.name for f in dataclasses.fields(DeviceLoaderConfig)}
        for key in options:
            if key not in known:
                raise TypeError(f"unknown DeviceLoader option {key!r}")
        # a copy with the options (checked as it is made): the caller's config is left as it was
        self.config = cfg = dataclasses.replace(config or DeviceLoaderConfig(), **options)
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise UsageError(f"images must be uint8 (N, C, H, W), got {images.dtype} {tuple(images.shape)}")
        if len(images) != len(labels):
            raise UsageError(f"{len(images)} images but {len(labels)} labels")
        if len(mean) != images.shape[1] or len(std) != images.shape[1]:
            raise UsageError(f"mean/std need {images.shape[1]} values, got {len(mean)}/{len(std)}")
        self.device = torch.device(device)
        self.images = images.to(self.device)
        self.labels = labels.to(self.device, torch.int64)
        self.seed = seed
        self.mean, self.std = tuple(mean), tuple(std)
        # x_norm = (x / 255 - mean) / std = x * scale + shift, one fused multiply-add per element
        std_t = torch.tensor(std, dtype=torch.float32)
        self._scale = (1.0 / (255.0 * std_t)).view(1, -1, 1, 1).to(self.device, cfg.dtype)
        self._shift = (-torch.tensor(mean, dtype=torch.float32) / std_t).view(1, -1, 1, 1).to(self.device, cfg.dtype)
        height, width = images.shape[2:]
        self._rows = torch.arange(height, device=self.device)
        self._cols = torch.arange(width, device=self.device)
        self._cols_flipped = self._cols.flip(0)
        self._trivial = None
        if cfg.trivial_augment:
            from torchvision.transforms import v2

            self._trivial = v2.TrivialAugmentWide()

    def _total_images(self) -> int:
        return len(self.images)

    def _plan(self, epoch: int) -> EpochPlan:
        cfg = self.config
        n = len(self.images)
        generator = torch.Generator().manual_seed(mix_seed(self.seed, epoch))
        order = torch.randperm(n, generator=generator) if cfg.shuffle else torch.arange(n)
        total = self.num_samples * cfg.world_size
        if total > n:  # pad by repetition so that every rank gets the same number of images
            order = torch.cat([order, order[: total - n]])
        offsets = flips = boxes = None
        if cfg.augment:
            # drawn for the whole (padded) order so the draws do not depend on rank or start batch
            offsets = torch.randint(0, 2 * cfg.pad + 1, (total, 2), generator=generator)
            flips = torch.randint(0, 2, (total,), generator=generator, dtype=torch.bool) if cfg.flip else None
            if cfg.random_erasing > 0:  # drawn after the crops, so a run without erasing keeps its crops
                boxes = erase_boxes(total, *self.images.shape[2:], cfg.random_erasing, generator)
        mine = slice(cfg.rank, total, cfg.world_size)
        order = order[mine]
        if offsets is not None:
            offsets = offsets[mine]
            flips = flips[mine] if flips is not None else torch.zeros(len(order), dtype=torch.bool)
        return EpochPlan(order, offsets, flips, boxes[mine] if boxes is not None else None)

    def epoch_batches(self, epoch: int, start_batch: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The batches of ``epoch`` from ``start_batch`` on: (float images on device, int64 labels on device)."""
        cfg = self.config
        if not 0 <= start_batch <= len(self):
            raise UsageError(f"start_batch must be in [0, {len(self)}], got {start_batch}")
        plan = EpochPlan(*(None if t is None else t.to(self.device) for t in self._plan(epoch)))
        for b in range(start_batch, len(self)):
            part = slice(b * cfg.batch_size, min((b + 1) * cfg.batch_size, len(plan.order)))
            batch = EpochPlan(*(None if t is None else t[part] for t in plan))
            yield self._batch(batch, mix_seed(self.seed, epoch, cfg.rank, b))

    def _batch(self, plan: EpochPlan, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        cfg = self.config
        threads = torch.get_num_threads()
        # on CPU a batch is a few small ops: one thread does them in about a millisecond, while
        # several threads stall on any core that other work holds (and the model wants the threads)
        if self.device.type == "cpu" and threads > 1:
            torch.set_num_threads(1)
        try:
            if plan.offsets is None:
                images = self.images[plan.order]
            else:
                images = self._crop_flip(self.images[plan.order], plan.offsets, plan.flips)
                if self._trivial is not None:
                    images = self._trivial_augment(images, seed)
            if cfg.channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            images = images.to(cfg.dtype).mul_(self._scale).add_(self._shift)
            if plan.boxes is not None:
                images = self._erase(images, plan.boxes)
            return images, self.labels[plan.order]
        finally:
            if torch.get_num_threads() != threads:
                torch.set_num_threads(threads)

    def _erase(self, images: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        """Zero (the channel mean, after normalisation) each image's box, one mask for the batch."""
        top, left, box_h, box_w = boxes.unbind(1)
        in_rows = (self._rows >= top[:, None]) & (self._rows < (top + box_h)[:, None])  # (B, H)
        in_cols = (self._cols >= left[:, None]) & (self._cols < (left + box_w)[:, None])  # (B, W)
        return images.masked_fill_(in_rows[:, None, :, None] & in_cols[:, None, None, :], 0)

    def _trivial_augment(self, images: torch.Tensor, seed: int) -> torch.Tensor:
        """torchvision's TrivialAugmentWide on each uint8 image, its draws seeded by ``seed`` (the global
        generator's state is put back afterwards)."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return torch.stack([self._trivial(image) for image in images])

    def _crop_flip(self, batch: torch.Tensor, offsets: torch.Tensor, flips: torch.Tensor) -> torch.Tensor:
        pad = self.config.pad
        # zero padding, as torchvision's RandomCrop(32, padding=4) and the paper
        padded = F.pad(batch, (pad, pad, pad, pad)) if pad else batch
        rows = offsets[:, 0:1] + self._rows  # (B, H): the crop's rows in the padded image
        cols = offsets[:, 1:2] + torch.where(flips[:, None], self._cols_flipped, self._cols)  # (B, W), flip folded in
        n, channels, height, width = padded.shape
        # one gather over the flattened planes crops and flips every image of the batch at once
        flat = (rows[:, :, None] * width + cols[:, None, :]).view(n, 1, -1).expand(n, channels, -1)
        return padded.view(n, channels, height * width).gather(2, flat).view(batch.shape)
