"""Pieces the gradient and response studies share: the blocks of a network in depth order,
the weighted layers the papers count, and a few batches of real images."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch
from torch import nn

from ..data import build_loaders
from ..errors import UsageError
from ..models.resnet import ResNet
from ..train.checkpoint import read_config


def blocks(model: ResNet) -> list[tuple[str, nn.Module]]:
    """(name, block) of every residual (or plain) block, stem to head."""
    return [(f"{stage}.{index}", block) for stage in model.stage_names
            for index, block in enumerate(getattr(model, stage))]


def weighted_layers(model: ResNet) -> list[tuple[str, nn.Module]]:
    """The convolutions of the main path and the classifier, in depth order: the layers the
    papers count in "20 layers" (projection shortcuts are not on the main path)."""
    layers = [(name, module) for name, module in model.named_modules()
              if isinstance(module, (nn.Conv2d, nn.Linear)) and "downsample" not in name]
    return layers


def block_layers(block: nn.Module) -> int:
    """Weighted layers of a block's main path (2 for basic blocks, 3 for bottlenecks)."""
    return sum(1 for name, m in block.named_modules() if isinstance(m, nn.Conv2d) and "downsample" not in name)


def image_batches(data: str, batch_size: int, count: int, seed: int, device: str = "cpu",
                  ) -> tuple[list[tuple[torch.Tensor, torch.Tensor]], int]:
    """``count`` normalised training batches of ``data`` without augmentation, and the
    data's number of classes."""
    train_loader, _, info = build_loaders(data, batch_size=batch_size, seed=seed, val_size=0, augment=False,
                                          device=device)
    if len(train_loader) < count:
        raise UsageError(f"--data {data}: {info.train_size} images make {len(train_loader)} batch(es) of "
                         f"{batch_size}, fewer than the {count} asked for")
    batches = []
    for batch in train_loader.epoch_batches(0):
        if len(batches) == count:
            break
        batches.append(batch)
    return batches, info.num_classes


def chance_error(run_dir: Path) -> Optional[float]:
    """The error (%) of a uniform guess over a run's classes (None where its record names none)."""
    classes = (read_config(run_dir) or {}).get("classes") or []
    return 100.0 * (1 - 1 / len(classes)) if classes else None
