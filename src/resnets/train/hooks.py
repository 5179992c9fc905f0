"""How a variation of training plugs into the engine without living in its loop.

The engine calls a :class:`TrainHook` for the initial model (and its adaptation to the
data), for the learning-rate multipliers of its parameter groups, for the loaders, and
before every step; what it records goes into ``config.json`` and the checkpoints.
Fine-tuning (``resnets.transfer.Transfer``) is one: pretrained weights with a new head,
parameters frozen or unfrozen over the run, the classifier trained on cached features.
The hook's ``record()`` goes into the run's ``config.json``; a resumed run must be given a
hook with the same record.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from torch import nn


class TrainHook:
    """Does nothing: a run from scratch. Subclasses override what they change."""

    def record(self) -> dict:
        """What identifies the variation (JSON), kept in config.json and compared on resume."""
        return {}

    def checkpoint_metadata(self) -> dict:
        """Entries for the metadata of every checkpoint the run writes (e.g. the pretrained weights)."""
        return {}

    def data_options(self) -> dict:
        """Overrides of the data pipeline's options (e.g. no augmentation for cached features)."""
        return {}

    def initial_model(self, arch: str, model_kwargs: dict) -> Optional[nn.Module]:
        """The model to start from, before the data is read (its ``preprocessing`` then drives
        the pipeline); None: a fresh, seeded model."""
        return None

    def setup(self, model: nn.Module, *, num_classes: int, total_steps: int, world_size: int,
              classes: Optional[list] = None) -> nn.Module:
        """Adapt the model to the data's ``classes`` (a new head, frozen parts); returns the model to train."""
        return model

    def lr_multipliers(self) -> dict[str, float]:
        """``{module prefix: learning-rate multiplier}`` for the optimiser's parameter groups."""
        return {}

    def feeds_images(self) -> bool:
        """Whether the steps see image batches (False: ``loaders`` hands them features instead), asked
        before anything is read or written."""
        return True

    def loaders(self, model: nn.Module, train_loader: Any, val_loader: Any, *, run_dir: Path, batch_size: int,
                seed: int) -> tuple[Any, Any, nn.Module]:
        """The loaders the steps use and the module they run through (the model itself, or a
        part of it when the loaders yield its intermediate features)."""
        return train_loader, val_loader, model

    def before_step(self, model: nn.Module, step: int) -> None:
        """Called before optimiser step ``step`` (0-based), e.g. to unfreeze parameters."""


__all__ = ["TrainHook", "under_prefix"]


def under_prefix(name: str, prefixes: list) -> bool:
    """Whether a parameter or module name lies under one of the module ``prefixes``."""
    return any(name == prefix or name.startswith(prefix + ".") for prefix in prefixes)
