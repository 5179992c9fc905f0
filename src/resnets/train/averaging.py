"""Averaged weights: what a run evaluates and hands out instead of its last step's weights.

Two kinds, chosen by the recipe:

* ``ema_decay``: an exponential moving average of the parameters and BatchNorm statistics, updated
  after every step (as torchvision's and timm's training scripts keep one);
* ``swa_start``: stochastic weight averaging (Izmailov et al., 2018, "Averaging Weights Leads to
  Wider Optima and Better Generalization"): from ``swa_start`` on, the weights at the end of every
  epoch are averaged with equal weights (:class:`torch.optim.swa_utils.AveragedModel`); since the
  average of the weights is not the average of the networks' statistics, its BatchNorm statistics
  are recomputed (:func:`torch.optim.swa_utils.update_bn`) over ``swa_bn_batches`` training batches
  before it is evaluated or saved.

Both are saved with every checkpoint, so a resumed run continues the same average.
"""

from __future__ import annotations

import copy
import itertools
from typing import Iterable, Optional

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, update_bn

from .recipe import Recipe, swa_start_step


class WeightAverage:
    """The recipe's averaged weights (None from :meth:`from_recipe` when it averages none)."""

    def __init__(self, model: nn.Module, recipe: Recipe, *, steps_per_epoch: int, steps_per_unit: float):
        self.recipe = recipe
        self.steps_per_epoch = steps_per_epoch
        self.swa_from = swa_start_step(recipe, steps_per_unit)
        if self.swa_from is not None:
            self.swa: Optional[AveragedModel] = AveragedModel(model, use_buffers=False)
            self.ema = None
        else:
            self.swa = None
            self.ema = copy.deepcopy(model).eval().requires_grad_(False)

    @classmethod
    def from_recipe(cls, model: nn.Module, recipe: Recipe, *, steps_per_epoch: int,
                    steps_per_unit: float) -> Optional["WeightAverage"]:
        if recipe.ema_decay <= 0 and recipe.swa_start is None:
            return None
        return cls(model, recipe, steps_per_epoch=steps_per_epoch, steps_per_unit=steps_per_unit)

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        """After optimiser step number ``step`` (counted from 1)."""
        if self.ema is not None:
            decay = self.recipe.ema_decay
            for e, p in zip(self.ema.parameters(), model.parameters()):
                e.lerp_(p, 1.0 - decay)
            for e, b in zip(self.ema.buffers(), model.buffers()):
                if e.is_floating_point():  # BatchNorm statistics are averaged with the weights they belong to
                    e.lerp_(b, 1.0 - decay)
                else:
                    e.copy_(b)
        elif step % self.steps_per_epoch == 0 and step > self.swa_from:
            self.swa.update_parameters(model)

    @property
    def ready(self) -> bool:
        """Whether there is an average to use yet (SWA: from the first epoch end after ``swa_start``)."""
        return self.ema is not None or int(self.swa.n_averaged) > 0

    def module(self, bn_batches: Iterable, autocast) -> nn.Module:
        """The averaged network, ready to evaluate and save: for SWA with its BatchNorm statistics
        recomputed on ``bn_batches`` ((images, labels) pairs; the first ``swa_bn_batches`` are used)
        under the ``autocast`` context the run computes in."""
        if self.ema is not None:
            return self.ema
        with autocast:
            update_bn(itertools.islice(bn_batches, self.recipe.swa_bn_batches), self.swa.module)
        return self.swa.module.eval()

    def describe(self) -> dict:
        """For the metadata of the weights the average is saved as."""
        if self.ema is not None:
            return {"kind": "ema", "decay": self.recipe.ema_decay}
        return {"kind": "swa", "averaged": int(self.swa.n_averaged), "start": self.recipe.swa_start,
                "lr": self.recipe.swa_lr, "bn_batches": self.recipe.swa_bn_batches}

    def state_dict(self) -> dict:
        return (self.ema if self.ema is not None else self.swa).state_dict()

    def load_state_dict(self, state: dict) -> None:
        (self.ema if self.ema is not None else self.swa).load_state_dict(state)
