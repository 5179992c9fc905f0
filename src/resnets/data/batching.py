"""What the two loaders share: how many images and batches one process gets per epoch.

Both must agree on this for the resume contract (a step number maps to the same epoch and
batch index whichever pipeline feeds the run).
"""

from __future__ import annotations

import math
from typing import Iterator

import torch

from ..errors import UsageError


def check_rank(rank: int, world_size: int) -> None:
    """Refuse a rank that is not one of ``world_size`` processes (both pipelines and DataConfig)."""
    if not 0 <= rank < world_size:
        raise UsageError(f"rank {rank} out of range for world_size {world_size}: give a rank from 0 to "
                         f"{world_size - 1}")


class EpochBatches:
    """Base of DeviceLoader and ImageLoader. Subclasses set ``config`` (with ``batch_size``,
    ``drop_last``, ``world_size``) and define ``_total_images`` and ``epoch_batches``."""

    def _total_images(self) -> int:
        raise NotImplementedError

    def epoch_batches(self, epoch: int, start_batch: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        raise NotImplementedError

    def side_batches(self, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The batches of ``epoch`` (as ``epoch_batches`` gives them), drawn without disturbing an
        ``epoch_batches`` iteration in progress: for a look at the training data in the middle of an
        epoch (the BatchNorm statistics of averaged weights). Here the two are the same: a loader whose
        iterations share state overrides it."""
        return self.epoch_batches(epoch)

    @property
    def num_samples(self) -> int:
        """Images this rank sees per epoch (padded by repetition to the same count on every rank)."""
        return math.ceil(self._total_images() / self.config.world_size)

    def __len__(self) -> int:
        n, b = self.num_samples, self.config.batch_size
        return n // b if self.config.drop_last else math.ceil(n / b)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Epoch 0's batches, for a quick look; training asks for ``epoch_batches(epoch)``."""
        return self.epoch_batches(0)
