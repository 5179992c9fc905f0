"""Fine-tuning as a training hook: pretrained weights, a new head, and which parameters train when."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from torch import nn

from ..errors import UsageError
from ..models import freeze_batchnorm
from ..train.hooks import TrainHook, under_prefix
from .features import cached_feature_loaders
from ..pretrained import load_pretrained


@dataclass
class Transfer(TrainHook):
    """Start from pretrained weights and choose which parameters train, when and how fast.

    Prefixes name modules of the state dict (``fc``, ``layer4``, ``conv1``...). A parameter
    trains from step 0 if it matches ``trainable`` (None: every parameter), or from
    ``fraction x run length`` for each ``[fraction, [prefixes]]`` of ``unfreeze``. A BatchNorm
    whose parameters are all frozen at a step normalises with its running statistics and
    leaves them alone, so a frozen module is frozen entirely.
    """

    init_weights: Optional[str] = None  # checkpoint of any supported format; its classifier is replaced
    trainable: Optional[list] = None
    unfreeze: list = field(default_factory=list)
    lr_mult: dict = field(default_factory=dict)  # {prefix: learning-rate multiplier}, e.g. {"fc": 10.0}
    freeze_bn: bool = False  # every BatchNorm becomes FrozenBatchNorm2d: pretrained statistics and affine kept
    cache_features: bool = False  # only the classifier trains: pooled features computed once, no augmentation
    image_size: Optional[int] = None  # input side (default: the pretrained weights' own)

    def __post_init__(self) -> None:
        self._starts: Optional[dict[str, Optional[int]]] = None

    def record(self) -> dict:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def checkpoint_metadata(self) -> dict:
        return {"pretrained": self.init_weights} if self.init_weights else {}

    def data_options(self) -> dict:
        # cached features are computed once, so a linear probe sees every image unaugmented
        return dict(augment=False, drop_last=False) if self.cache_features else {}

    def feeds_images(self) -> bool:
        return not self.cache_features

    def initial_model(self, arch: str, model_kwargs: dict) -> Optional[nn.Module]:
        if not self.init_weights:
            return None
        return load_pretrained(arch, self.init_weights, image_size=self.image_size, **model_kwargs)

    def setup(self, model: nn.Module, *, num_classes: int, total_steps: int, world_size: int,
              classes: Optional[list] = None) -> nn.Module:
        if world_size > 1 and (self.cache_features or self.unfreeze):
            raise UsageError("a linear probe on cached features and gradual unfreezing run in one process, "
                             "not under torchrun")
        if self.init_weights:
            model.reset_classifier(num_classes)
            if "num_classes" in model.arch_kwargs:  # the file's head size would otherwise be recorded
                model.arch_kwargs = {**model.arch_kwargs, "num_classes": num_classes}
        if self.freeze_bn:
            model = freeze_batchnorm(model)
        self._starts = self._training_starts(model, total_steps)
        # the optimiser holds every parameter that trains at some step; frozen ones have no gradient
        for name, p in model.named_parameters():
            p.requires_grad_(self._starts[name] is not None)
        return model

    def lr_multipliers(self) -> dict[str, float]:
        return dict(self.lr_mult)

    def loaders(self, model: nn.Module, train_loader: Any, val_loader: Any, *, run_dir: Path, batch_size: int,
                seed: int) -> tuple[Any, Any, nn.Module]:
        if not self.cache_features:
            return train_loader, val_loader, model
        # linear probe: the frozen backbone runs once; the steps train the classifier on its features
        train_loader, val_loader = cached_feature_loaders(model, train_loader, val_loader,
                                                          run_dir / "features.safetensors",
                                                          batch_size=batch_size, seed=seed)
        return train_loader, val_loader, model.fc

    def before_step(self, model: nn.Module, step: int) -> None:
        """Set which parameters train at ``step``. A BatchNorm whose parameters are all frozen is put
        in eval mode, so that it neither normalises with batch statistics nor updates its own."""
        for name, p in model.named_parameters():
            start = self._starts[name]
            p.requires_grad_(start is not None and step >= start)
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                params = list(module.parameters(recurse=False))
                module.train(model.training and not (params and not any(p.requires_grad for p in params)))

    def _training_starts(self, model: nn.Module, total_steps: int) -> dict[str, Optional[int]]:
        """The step from which each parameter trains (None: never), from ``trainable`` and ``unfreeze``."""
        names = [name for name, _ in model.named_parameters()]
        # a module that exists but holds no parameters (a BatchNorm frozen by --freeze-bn) is no error
        modules = {name for name, _ in model.named_modules()}
        schedule = [(0, self.trainable)] if self.trainable is not None else [(0, [""])]
        schedule += [(int(fraction * total_steps), prefixes) for fraction, prefixes in self.unfreeze]
        for _, prefixes in schedule:
            unknown = [p for p in prefixes if p and p not in modules and not any(under_prefix(n, [p]) for n in names)]
            if unknown:
                top = list(dict.fromkeys(n.split(".")[0] for n in names))
                raise UsageError(f"no parameters under {unknown} in {getattr(model, 'arch', None) or 'the model'}; "
                                 f"its modules are {top}")
        starts: dict[str, Optional[int]] = {}
        for name in names:
            steps = [step for step, prefixes in schedule if "" in prefixes or under_prefix(name, prefixes)]
            starts[name] = min(steps) if steps else None
        return starts


__all__ = ["Transfer"]
