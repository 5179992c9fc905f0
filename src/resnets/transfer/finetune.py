"""Fine-tuning a pretrained network on a small labelled set of one's own images.

``finetune(FinetuneOptions(...))`` checks the data, turns a strategy into a
:class:`resnets.transfer.Transfer` hook (which parameters train, from when, at what learning
rate) and hands the run to the training engine, which does everything else: resume,
progress, metrics, plots, checkpoints carrying the new class names.

Strategies:

* ``linear-probe``: the backbone is frozen; its pooled features are computed once and cached,
  and only the new classifier trains on them.
* ``full``: every parameter trains, the pretrained backbone at ``lr`` and the fresh
  classifier at ``lr x head_lr_mult``.
* ``gradual``: the classifier trains first; the stages are unfrozen one at a time from the
  last (the stem with the first) at evenly spaced points of the run.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from torch import nn

from .._options import same_as
from ..data import resolve_source
from ..data.sources import BadImageError
from ..errors import UsageError, check_choice
from ..factory import create_model
from ..train.engine import TrainResult, train
from ..train.options import TrainOptions, option
from ..train.recipe import Recipe, list_recipes
from ..weights.named import take_weights_name, weights_tag
from .hook import Transfer

STRATEGIES = ("linear-probe", "full", "gradual")
DEFAULT_RECIPE = "finetune"
DEFAULT_HEAD_LR_MULT = 10.0


@dataclass(kw_only=True)
class FinetuneOptions(TrainOptions):
    """What ``resnets finetune`` takes: every training option, and how to start from pretrained
    weights. Length, batch size, lr, evaluations and the validation split default to the
    ``finetune`` recipe (30 epochs, batch 64, lr 0.01 for the backbone, 20 % held out)."""

    data: Optional[str] = option(help="data source; its class folders become the new classes", cli_required=True)
    recipe: Optional[str] = option(help=f"a shipped recipe ({', '.join(list_recipes())}; default finetune) "
                                        f"or a TOML file of your own")
    lr: Optional[float] = same_as(Recipe, "lr", help="backbone learning rate (default: the recipe's, 0.01)")
    weights: Optional[str] = option(help="pretrained weights: TAG or MODEL.TAG (resnets list --weights), a "
                                         "checkpoint path or URL, or hf-hub:ORG/NAME / local-dir:PATH (needed unless "
                                         "the model is given as MODEL.TAG)")
    strategy: str = option("full", choices=STRATEGIES,
                           help="linear-probe: frozen backbone, cached features; full: every layer, backbone at "
                                "--lr; gradual: unfreeze stage by stage from the last (default: full)")
    freeze_bn: bool = option(False, help="keep the pretrained BatchNorm statistics and affine parameters "
                                         "(small batches)")
    head_lr_mult: float = option(DEFAULT_HEAD_LR_MULT, help="classifier lr = lr x this (default 10)", low=0,
                                 low_open=True)
    image_size: Optional[int] = same_as(Recipe, "image_size", help="input side (default: the weights' own "
                                                                   "preprocessing)")
    init_weights: Optional[str] = option(cli=False)  # --weights is fine-tuning's start

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.weights is None:
            raise UsageError("fine-tuning starts from pretrained weights: give --weights (TAG, MODEL.TAG, a file, a "
                             "URL or hf-hub:ORG/NAME), or the model as MODEL.TAG (resnets list --weights)")

    def _take_weights_name(self) -> None:
        """``resnet56.cifar10``: the model resnet56, from the weights cifar10."""
        self.model, self.weights = take_weights_name(self.model, self.weights)


def stage_groups(model: nn.Module) -> list[list[str]]:
    """Module prefixes to unfreeze, last stage first; the stem goes with the first stage and a
    pre-activation net's final BN with the last."""
    stages = list(model.stage_names)
    groups = [[name] for name in stages]
    stem = [name for name in ("conv1", "bn1") if any(True for _ in getattr(model, name, nn.Identity()).parameters())]
    groups[0] = stem + groups[0]
    if getattr(model, "preact", False) and hasattr(model, "final_bn"):
        groups[-1] = groups[-1] + ["final_bn"]
    return groups[::-1]


def strategy_transfer(strategy: str, model: nn.Module, *, weights: str, head_lr_mult: float = DEFAULT_HEAD_LR_MULT,
                      freeze_bn: bool = False, image_size: Optional[int] = None) -> Transfer:
    """The engine's :class:`Transfer` for a strategy name."""
    check_choice("strategy", strategy, STRATEGIES)
    # a local file is recorded by its absolute path, so that --resume works from any directory
    local = Path(str(weights)).expanduser()
    weights = str(local.resolve()) if local.is_file() else str(weights)
    common = dict(init_weights=weights, lr_mult={"fc": float(head_lr_mult)}, freeze_bn=freeze_bn,
                  image_size=image_size)
    if strategy == "linear-probe":
        return Transfer(trainable=["fc"], cache_features=True, **common)
    if strategy == "full":
        return Transfer(trainable=None, **common)
    groups = stage_groups(model)
    # the classifier alone first, then one more group at each of len(groups) evenly spaced points
    unfreeze = [[round((i + 1) / (len(groups) + 1), 6), group] for i, group in enumerate(groups)]
    return Transfer(trainable=["fc"], unfreeze=unfreeze, **common)


def check_finetune_data(data: str, *, bad_input: str = "skip", cache_dir: Optional[str] = None) -> list[str]:
    """The classes of ``data``, refusing a set a new head cannot be trained on: fewer than two
    classes, or a class with no usable image (an empty folder, or only unreadable files)."""
    source = resolve_source(data, "train", bad_input=bad_input, cache_dir=cache_dir)
    classes = list(source.classes)
    if len(classes) < 2:
        found = f"one class ({classes[0]!r})" if classes else "no class"
        raise UsageError(f"{data}: found {found}; fine-tuning needs at least two classes, "
                         "one folder of images each")
    targets = np.asarray(source.targets)
    if source.images_tensor() is not None:  # pixels already in memory: counting labels is enough
        usable = {label: True for label in targets.tolist()}
    else:
        usable = {}
        for label in range(len(classes)):
            problems = []
            for index in np.flatnonzero(targets == label):
                try:
                    source.decode(int(index))
                    usable[label] = True
                    break
                except BadImageError as error:
                    problems.append(f"{error.path} ({error.reason})")
            if label not in usable and problems:
                raise UsageError(f"{data}: class {classes[label]!r} has no usable image: none of its "
                                 f"{len(problems)} file(s) can be read, e.g. {problems[0]}")
    empty = [classes[label] for label in range(len(classes)) if label not in usable]
    if empty:
        raise UsageError(f"{data}: class folder(s) {empty} hold no images; remove them or add images")
    return classes


def finetune(options: FinetuneOptions) -> TrainResult:
    """Fine-tune ``options.model`` from ``options.weights`` on ``options.data``; returns the
    last evaluation's metrics (``val_top1``, ...). The run directory is a training run
    (``resnets plot``, ``resnets eval`` and ``resnets predict`` read it as they read any)."""
    if options.data is None:
        raise UsageError("fine-tuning needs --data: a labelled image set whose classes become the new head's")
    check_finetune_data(options.data, cache_dir=options.cache_dir)
    with torch.device("meta"):  # the stage names only; nothing is allocated
        skeleton = create_model(options.model, **options.model_kwargs)
    # on --resume the engine compares this with the run's record and refuses a different one (named weights
    # by tag: `--weights cifar10` and `--weights resnet20.cifar10` are one run)
    transfer = strategy_transfer(options.strategy, skeleton, weights=weights_tag(options.model, options.weights),
                                 head_lr_mult=options.head_lr_mult, freeze_bn=options.freeze_bn,
                                 image_size=options.image_size)
    return train(dataclasses.replace(options, recipe=options.recipe or DEFAULT_RECIPE, hook=transfer))
