"""Starting from trained weights: the network and how its inputs were prepared (:func:`load_pretrained`,
which fine-tuning uses too), and :class:`WarmStart`, the hook of ``train --init-weights``: every weight
from the file, the classifier too where its classes are the data's."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Optional

from torch import nn

from ..pretrained import load_pretrained
from .hooks import TrainHook


@dataclass
class WarmStart(TrainHook):
    """Train from ``init_weights`` (any supported format) instead of fresh weights, as timm's
    ``--initial-checkpoint``: every parameter trains, and the file's classifier is kept where it scores
    the data's classes (as many, and the same names in the same order where the file records names);
    otherwise a new one replaces it, with a notice."""

    init_weights: str

    def record(self) -> dict:
        return {"warm_start": True, "init_weights": self.init_weights}

    def checkpoint_metadata(self) -> dict:
        return {"pretrained": self.init_weights}

    def initial_model(self, arch: str, model_kwargs: dict) -> Optional[nn.Module]:
        return load_pretrained(arch, self.init_weights, **model_kwargs)

    def setup(self, model: nn.Module, *, num_classes: int, total_steps: int, world_size: int,
              classes: Optional[list] = None) -> nn.Module:
        own = getattr(model, "classes", None)
        if model.num_classes == num_classes and (not own or classes is None or list(own) == list(classes)):
            return model
        what = f"classes {list(own)[:4]}{'...' if len(own) > 4 else ''}" if own else f"{model.num_classes} classes"
        warnings.warn(f"{self.init_weights}: its classifier ({what}) does not score the data's {num_classes} classes"
                      f"{' ' + str(list(classes)[:4]) if classes else ''}; it is replaced by a new, untrained one",
                      stacklevel=2)
        model.reset_classifier(num_classes)
        if "num_classes" in model.arch_kwargs:  # the file's head size would otherwise be recorded
            model.arch_kwargs = {**model.arch_kwargs, "num_classes": num_classes}
        return model

    @classmethod
    def from_record(cls, record: Optional[dict]) -> Optional["WarmStart"]:
        """The hook a run recorded (config.json's ``transfer``), where it was a warm start."""
        return cls(record["init_weights"]) if record and record.get("warm_start") else None
