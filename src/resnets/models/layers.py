"""Normalisation layers and the lookup that makes the norm layer pluggable."""

from __future__ import annotations

from functools import partial
from typing import Callable, Union

import torch
from torch import nn

from ..errors import UsageError

NormLayer = Callable[[int], nn.Module]


class FrozenBatchNorm2d(nn.Module):
    """Batch norm with fixed statistics and affine parameters.

    Used when fine-tuning with small batches, where updating the running statistics
    would hurt. State-dict keys are those of ``nn.BatchNorm2d`` (``num_batches_tracked``
    is accepted and dropped), so checkpoints move freely between the two.
    """

    def __init__(self, num_features: int, eps: float = 1e-5):
        super().__init__()
        self.num_features = num_features
        self.eps = eps
        self.register_buffer("weight", torch.ones(num_features))
        self.register_buffer("bias", torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        state_dict.pop(prefix + "num_batches_tracked", None)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # y = (x - mean) / sqrt(var + eps) * weight + bias, folded into one scale and shift
        scale = self.weight * (self.running_var + self.eps).rsqrt()
        shift = self.bias - self.running_mean * scale
        return x * scale.reshape(1, -1, 1, 1).to(x.dtype) + shift.reshape(1, -1, 1, 1).to(x.dtype)

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}"


def _group_norm(num_channels: int, groups: int = 32) -> nn.GroupNorm:
    return nn.GroupNorm(min(groups, num_channels), num_channels)


NORM_LAYERS: dict[str, NormLayer] = {
    "batchnorm": nn.BatchNorm2d,
    "frozen_batchnorm": FrozenBatchNorm2d,
    "sync_batchnorm": nn.SyncBatchNorm,
    "groupnorm": _group_norm,
}


def get_norm_layer(norm_layer: Union[str, NormLayer, None]) -> NormLayer:
    """Resolve ``norm_layer`` (a name from NORM_LAYERS or a callable ``f(channels)``)."""
    if norm_layer is None:
        return nn.BatchNorm2d
    if isinstance(norm_layer, str):
        key = norm_layer.lower().replace("-", "_")
        aliases = {"bn": "batchnorm", "frozen_bn": "frozen_batchnorm", "frozenbn": "frozen_batchnorm",
                   "syncbn": "sync_batchnorm", "sync_bn": "sync_batchnorm", "gn": "groupnorm"}
        key = aliases.get(key, key)
        if key not in NORM_LAYERS:
            raise UsageError(f"unknown norm_layer {norm_layer!r}; expected one of "
                             f"{sorted(NORM_LAYERS)} or a callable taking the channel count")
        return NORM_LAYERS[key]
    if isinstance(norm_layer, partial) or callable(norm_layer):
        return norm_layer
    raise TypeError(f"norm_layer must be a name or a callable, got {type(norm_layer).__name__}")


@torch.no_grad()
def freeze_batchnorm(module: nn.Module) -> nn.Module:
    """Replace every ``nn.BatchNorm2d`` in ``module`` by a FrozenBatchNorm2d holding its
    current statistics and affine parameters. Returns the (possibly new) module."""
    if isinstance(module, nn.BatchNorm2d):
        frozen = FrozenBatchNorm2d(module.num_features, module.eps)
        if module.affine:
            frozen.weight.copy_(module.weight)
            frozen.bias.copy_(module.bias)
        if module.track_running_stats:
            frozen.running_mean.copy_(module.running_mean)
            frozen.running_var.copy_(module.running_var)
        return frozen.to(module.weight.device if module.affine else frozen.weight.device)
    for name, child in module.named_children():
        new_child = freeze_batchnorm(child)
        if new_child is not child:
            setattr(module, name, new_child)
    return module
