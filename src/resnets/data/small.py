"""The small-image pipeline: the whole dataset as one uint8 tensor on the training device.

Augmentation works on whole batches with tensor indexing (pad, random crop and horizontal
flip in one gather), so there is no per-sample Python and no worker process. Every random
choice of an epoch (the order, each image's crop offset and flip) is drawn up front from a
CPU generator seeded with (seed, epoch): ``epoch_batches(epoch, start_batch)`` is therefore a
pure function of (seed, epoch, batch index), on any device, and a run resumed mid-epoch sees
exactly the remaining batches.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Optional, Sequence, Union

import torch
import torch.nn.functional as F

from ..errors import UsageError
from .batching import EpochBatches
from .sources import mix_seed


@dataclass
class DeviceLoaderConfig:
    batch_size: int = 128
    shuffle: bool = True
    augment: bool = True  # pad + random crop + flip (paper §4.2); off for evaluation
    drop_last: bool = False
    pad: int = 4
    flip: bool = True
    channels_last: bool = False
    dtype: torch.dtype = torch.float32
    rank: int = 0
    world_size: int = 1


class DeviceLoader(EpochBatches):
    """Batches of (normalised images, int64 labels) from tensors held on ``device``.

    ``images`` is uint8 (N, C, H, W); ``mean``/``std`` are per channel on the 0..1 scale.
    With ``world_size > 1`` each rank takes every ``world_size``-th image of the shared seeded
    order (padded by repetition to equal length, as ``DistributedSampler`` does).
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, *, mean: Sequence[float], std: Sequence[float],
                 seed: int = 0, device: Union[str, torch.device] = "cpu",
                 config: Optional[DeviceLoaderConfig] = None, **options):
        self.config = config or DeviceLoaderConfig()
        for key, value in options.items():
            if not hasattr(self.config, key):
                raise TypeError(f"unknown DeviceLoader option {key!r}")
            setattr(self.config, key, value)
        cfg = self.config
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise UsageError(f"images must be uint8 (N, C, H, W), got {images.dtype} {tuple(images.shape)}")
        if len(images) != len(labels):
            raise UsageError(f"{len(images)} images but {len(labels)} labels")
        if cfg.batch_size < 1:
            raise UsageError(f"batch_size must be positive, got {cfg.batch_size}")
        if not 0 <= cfg.rank < cfg.world_size:
            raise UsageError(f"rank {cfg.rank} out of range for world_size {cfg.world_size}")
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

    def _total_images(self) -> int:
        return len(self.images)

    def _plan(self, epoch: int) -> tuple[torch.Tensor, Optional[torch.Tensor], Optional[torch.Tensor]]:
        cfg = self.config
        n = len(self.images)
        generator = torch.Generator().manual_seed(mix_seed(self.seed, epoch))
        order = torch.randperm(n, generator=generator) if cfg.shuffle else torch.arange(n)
        total = self.num_samples * cfg.world_size
        if total > n:  # pad by repetition so that every rank gets the same number of images
            order = torch.cat([order, order[: total - n]])
        offsets = flips = None
        if cfg.augment:
            # drawn for the whole (padded) order so the draws do not depend on rank or start batch
            offsets = torch.randint(0, 2 * cfg.pad + 1, (total, 2), generator=generator)
            flips = torch.randint(0, 2, (total,), generator=generator, dtype=torch.bool) if cfg.flip else None
        mine = slice(cfg.rank, total, cfg.world_size)
        order = order[mine]
        if offsets is not None:
            offsets = offsets[mine]
            flips = flips[mine] if flips is not None else torch.zeros(len(order), dtype=torch.bool)
        return order, offsets, flips

    def epoch_batches(self, epoch: int, start_batch: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The batches of ``epoch`` from ``start_batch`` on: (float images on device, int64 labels on device)."""
        cfg = self.config
        if not 0 <= start_batch <= len(self):
            raise UsageError(f"start_batch must be in [0, {len(self)}], got {start_batch}")
        order, offsets, flips = self._plan(epoch)
        order = order.to(self.device)
        if offsets is not None:
            offsets, flips = offsets.to(self.device), flips.to(self.device)
        for b in range(start_batch, len(self)):
            part = slice(b * cfg.batch_size, min((b + 1) * cfg.batch_size, len(order)))
            yield self._batch(order[part], offsets[part] if offsets is not None else None,
                              flips[part] if flips is not None else None)

    def _batch(self, index: torch.Tensor, offsets: Optional[torch.Tensor],
               flips: Optional[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        cfg = self.config
        threads = torch.get_num_threads()
        # on CPU a batch is a few small ops: one thread does them in about a millisecond, while
        # several threads stall on any core that other work holds (and the model wants the threads)
        if self.device.type == "cpu" and threads > 1:
            torch.set_num_threads(1)
        try:
            if offsets is None:
                images = self.images[index]
                if cfg.channels_last:
                    images = images.contiguous(memory_format=torch.channels_last)
            else:
                images = self._augment(self.images[index], offsets, flips)
            return images.to(cfg.dtype).mul_(self._scale).add_(self._shift), self.labels[index]
        finally:
            if torch.get_num_threads() != threads:
                torch.set_num_threads(threads)

    def _augment(self, batch: torch.Tensor, offsets: torch.Tensor, flips: torch.Tensor) -> torch.Tensor:
        pad = self.config.pad
        # zero padding, as torchvision's RandomCrop(32, padding=4) and the paper
        padded = F.pad(batch, (pad, pad, pad, pad)) if pad else batch
        rows = offsets[:, 0:1] + self._rows  # (B, H): the crop's rows in the padded image
        cols = offsets[:, 1:2] + torch.where(flips[:, None], self._cols_flipped, self._cols)  # (B, W), flip folded in
        n, channels, height, width = padded.shape
        # one gather over the flattened planes crops and flips every image of the batch at once
        flat = (rows[:, :, None] * width + cols[:, None, :]).view(n, 1, -1).expand(n, channels, -1)
        out = padded.view(n, channels, height * width).gather(2, flat).view(batch.shape)
        return out.contiguous(memory_format=torch.channels_last) if self.config.channels_last else out
