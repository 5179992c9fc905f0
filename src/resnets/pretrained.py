"""Pretrained weights as a network ready to use or adapt: the file's preprocessing, another input side."""

from __future__ import annotations

import dataclasses
from typing import Any, Optional

from torch import nn

from .errors import UsageError
from .factory import create_model
from .models import Preprocessing


def load_pretrained(name: str, weights: str, *, image_size: Optional[int] = None, **model_kwargs: Any) -> nn.Module:
    """``name`` with ``weights`` (any supported format) loaded, classifier included.

    ``model.preprocessing`` is the one recorded in the file where it has one (our checkpoints
    store the mean/std the network was trained with), else the model's default (ImageNet
    statistics for torchvision and timm files); ``image_size`` replaces its input side.
    A file of another architecture raises :class:`resnets.CheckpointError` naming the keys
    that do not fit and what the file looks like.
    """
    model = create_model(name, weights=weights, **model_kwargs)
    recorded = model.checkpoint_info.metadata.get("preprocessing")
    if isinstance(recorded, dict):
        known = {f.name for f in dataclasses.fields(Preprocessing)}
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in recorded.items() if k in known}
        model.preprocessing = dataclasses.replace(model.preprocessing, **values)
    if image_size is not None:
        if image_size < 8:
            raise UsageError(f"image size {image_size} is too small; expected at least 8 pixels")
        channels = model.preprocessing.input_size[0]
        model.preprocessing = dataclasses.replace(model.preprocessing, input_size=(channels, image_size, image_size))
    return model


__all__ = ["load_pretrained"]
