"""``create_model``: a registered architecture joined with weights.

The registry (``resnets.models``) builds networks and knows nothing of checkpoints; the
weights layer reads checkpoints and names published ones; this module, above both, builds
the network a checkpoint describes and loads it, adapting its first convolution and its
classifier where the model asked for differs from the weights.
"""

from __future__ import annotations

import warnings
from typing import Optional, Sequence

import torch
from torch import nn

from .errors import UsageError
from .models import build_model
from .weights import CheckpointError, apply_preprocessing, load_checkpoint, load_state_dict
from .weights.formats import PathOrUrl
from .weights.named import default_weights, find_weights


class WeightsAdaptedWarning(UserWarning):
    """Weights loaded into a model that differs from them: a new, untrained classifier, or a first
    convolution adapted to another number of input channels."""


def create_model(name: str, *, weights: Optional[PathOrUrl] = None, pretrained: bool = False,
                 features_only: bool = False, out_indices: Optional[Sequence[int]] = None,
                 sha256: Optional[str] = None, strict: bool = True, **kwargs) -> nn.Module:
    """Build a registered model by name, with weights if given.

    Keyword arguments go to the ResNet (``num_classes``, ``in_chans``, ``shortcut``,
    ``variant``, ``zero_init_residual``, ``norm_layer``, ...). ``features_only=True``
    returns a network giving the feature maps of ``out_indices`` (0: stem, k: stage k).

    ``weights`` is a registered name, for this model a tag (``"tv2_in1k"``) or ``MODEL.TAG``
    (``"resnet50.tv2_in1k"``; see ``resnets.list_weights()``), else the path or URL of a
    checkpoint of any supported format. ``pretrained=True`` without ``weights`` loads the model's
    default named weights. Named weights bring their class names and preprocessing; our own files
    supply the architecture options. The classifier size comes from the weights unless
    ``num_classes`` is given: a different one starts fresh (fine-tuning), and an ``in_chans``
    other than the weights' adapts the first convolution (1 channel: the sum of the RGB filters;
    more: the RGB filters repeated, scaled by 3 / in_chans), each with a WeightsAdaptedWarning.
    """
    named = None
    if weights is None:
        if pretrained:
            named = default_weights(name)
            if named is None:
                raise UsageError(f"pretrained=True: no weights are registered for {name!r} (see "
                                 f"resnets.list_weights() or `resnets list --weights`); pass weights=PATH_OR_URL "
                                 f"of a checkpoint")
        else:
            return build_model(name, features_only=features_only, out_indices=out_indices, **kwargs)
    else:
        named = find_weights(name, weights)
    state_dict, info = load_checkpoint(named.get_path() if named else weights, sha256=sha256)
    source = named.name if named else str(info.path)
    options: dict = {}
    if info.layout == "resnets":
        arch = info.metadata.get("arch")
        if arch and arch != name:
            raise CheckpointError(f"{info.path} holds {arch} weights, not {name}; "
                                  f"use create_model({arch!r}, weights=...)")
        options.update(info.metadata.get("arch_kwargs") or {})
    file_classes = int(state_dict["fc.weight"].shape[0]) if "fc.weight" in state_dict else 0
    options["num_classes"] = file_classes
    file_chans = int(state_dict["conv1.weight"].shape[1]) if "conv1.weight" in state_dict else 3
    if file_chans != 3:
        options["in_chans"] = file_chans
    options.update(kwargs)
    in_chans = options.get("in_chans", 3)
    if in_chans != file_chans:
        state_dict = {**state_dict, "conv1.weight": _adapt_first_conv(state_dict["conv1.weight"], in_chans, source)}
        how = "the sum of its RGB filters" if in_chans == 1 else f"its RGB filters repeated, scaled by 3/{in_chans}"
        warnings.warn(f"{source}: conv1 adapted from {file_chans} input channels to in_chans={in_chans} ({how})",
                      WeightsAdaptedWarning, stacklevel=2)
    exclude: tuple[str, ...] = ()
    if features_only:
        options.pop("num_classes", None)
        model = build_model(name, features_only=True, out_indices=out_indices, **options)
        # a feature extractor keeps the stages up to its last index; the rest of the file is unused
        present = {k.split(".")[0] for k in model.state_dict()}
        exclude = tuple(sorted({k.split(".")[0] + "." for k in state_dict} - {p + "." for p in present}))
    else:
        model = build_model(name, **options)
        if options["num_classes"] != file_classes:
            exclude = ("fc.",)
            if options["num_classes"] > 0:
                warnings.warn(f"{source}: its {file_classes}-class classifier is replaced by a new, untrained one "
                              f"of num_classes={options['num_classes']}", WeightsAdaptedWarning, stacklevel=2)
    load_state_dict(model, state_dict, strict=strict, exclude=exclude, source=source, info=info)
    if not exclude:
        # named weights' display names ("tench") win; the file's own (its training folders, "n01440764") stay in
        # checkpoint_info, which evaluation compares with a data set's folders
        classes = named.classes if named else info.classes
        if classes is not None:
            model.classes = list(classes)
    apply_preprocessing(model, info)
    if named is not None:
        model.preprocessing = named.preprocessing
    model.preprocessing = model.preprocessing.for_channels(in_chans)
    model.checkpoint_info = info
    return model


def _adapt_first_conv(weight: torch.Tensor, in_chans: int, source: str) -> torch.Tensor:
    """RGB filters (out, 3, k, k) for ``in_chans`` input channels, as timm adapts them."""
    if weight.dim() != 4 or weight.shape[1] != 3:
        raise CheckpointError(f"{source}: conv1.weight has shape {tuple(weight.shape)}; only RGB (3-channel) "
                              f"weights can be adapted to in_chans={in_chans}")
    weight = weight.float()
    if in_chans == 1:
        return weight.sum(dim=1, keepdim=True)  # a gray image is R = G = B, so its filter is their sum
    repeats = -(-in_chans // 3)
    # shares of 3/in_chans keep the response's size (exactly, for gray input and in_chans a multiple of 3)
    return weight.repeat(1, repeats, 1, 1)[:, :in_chans] * (3 / in_chans)


__all__ = ["WeightsAdaptedWarning", "create_model"]
