"""Fine-tuning a pretrained network on a small labelled set of one's own images.

``finetune(FinetuneOptions(...))`` checks the data, turns a strategy into a
:class:`resnets.train.engine.Transfer` (which parameters train, from when, at what learning
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

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import torch
from torch import nn

from ..errors import UsageError
from ..train.engine import TrainOptions, Transfer, train

STRATEGIES = ("linear-probe", "full", "gradual")
DEFAULT_RECIPE = "finetune"
DEFAULT_HEAD_LR_MULT = 10.0


@dataclass
class FinetuneOptions:
    """What ``resnets finetune`` takes. Length, batch size, lr, evaluations and the validation
    split default to the ``finetune`` recipe (30 epochs, batch 64, lr 0.01, 20 % held out)."""

    model: str
    weights: str  # pretrained checkpoint, any supported format
    data: str  # any --data source; its classes become the new head's
    out: Path
    strategy: str = "full"
    freeze_bn: bool = False
    head_lr_mult: float = DEFAULT_HEAD_LR_MULT
    recipe: Optional[str] = None
    iterations: Optional[int] = None
    epochs: Optional[float] = None
    batch_size: Optional[int] = None
    lr: Optional[float] = None  # the backbone's; the classifier's is lr x head_lr_mult
    evaluations: Optional[int] = None
    val_size: Optional[int] = None
    seed: Optional[int] = None
    image_size: Optional[int] = None  # input side (default: the weights' own preprocessing)
    device: str = "cpu"
    resume: bool = False
    model_kwargs: dict = field(default_factory=dict)
    num_workers: Optional[int] = None
    cache_dir: Optional[str] = None
    progress: Optional[bool] = None
    log: Any = None
    on_step: Optional[Callable[[int, nn.Module], None]] = None


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
    if strategy not in STRATEGIES:
        raise UsageError(f"--strategy must be one of {', '.join(STRATEGIES)}, got {strategy!r}")
    if head_lr_mult <= 0:
        raise UsageError(f"--head-lr-mult must be positive, got {head_lr_mult}")
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
    import numpy as np

    from ..data import resolve_source
    from ..data.sources import BadImageError

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


def finetune(options: FinetuneOptions) -> dict:
    """Fine-tune ``options.model`` from ``options.weights`` on ``options.data``; returns the
    last evaluation's metrics (``val_top1``, ...). The run directory is a training run
    (``resnets plot``, ``resnets eval`` and ``resnets predict`` read it as they read any)."""
    from ..models import create_model

    check_finetune_data(options.data, cache_dir=options.cache_dir)
    with torch.device("meta"):  # the stage names only; nothing is allocated
        skeleton = create_model(options.model, **options.model_kwargs)
    # on --resume the engine compares this with the run's record and refuses a different one
    transfer = strategy_transfer(options.strategy, skeleton, weights=options.weights,
                                 head_lr_mult=options.head_lr_mult, freeze_bn=options.freeze_bn,
                                 image_size=options.image_size)
    return train(TrainOptions(
        model=options.model, out=Path(options.out), data=options.data, recipe=options.recipe or DEFAULT_RECIPE,
        resume=options.resume, device=options.device, iterations=options.iterations, epochs=options.epochs,
        batch_size=options.batch_size, lr=options.lr, seed=options.seed, evaluations=options.evaluations,
        val_size=options.val_size, model_kwargs=options.model_kwargs, num_workers=options.num_workers,
        cache_dir=options.cache_dir, progress=options.progress, log=options.log, transfer=transfer,
        on_step=options.on_step))
