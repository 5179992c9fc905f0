"""Folding batch normalisation into the preceding convolution for inference.

In eval mode BN is a per-channel affine map, so ``bn(conv(x)) = conv'(x)`` with
``W' = W * g / sqrt(var + eps)`` and ``b' = beta + (b - mean) * g / sqrt(var + eps)``.
Pre-activation BNs (a BN whose input is a block's sum, not a convolution) stay.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from .blocks import BasicBlock, Bottleneck, PreActBasicBlock, PreActBottleneck
from .layers import FrozenBatchNorm2d
from .resnet import ResNet

# (conv, following norm) pairs of each module type, by attribute name
_PAIRS = {
    BasicBlock: (("conv1", "bn1"), ("conv2", "bn2")),
    Bottleneck: (("conv1", "bn1"), ("conv2", "bn2"), ("conv3", "bn3")),
    PreActBasicBlock: (("conv1", "bn2"),),
    PreActBottleneck: (("conv1", "bn2"), ("conv2", "bn3")),
}


def fuse_conv_bn(conv: nn.Conv2d, bn: nn.Module) -> nn.Conv2d:
    """A convolution equal to ``bn(conv(x))`` with ``bn`` in eval mode (computed in float64)."""
    scale = bn.weight.detach().double() / torch.sqrt(bn.running_var.double() + bn.eps)
    fused = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                      conv.dilation, conv.groups, bias=True, padding_mode=conv.padding_mode)
    weight = conv.weight.detach().double() * scale.reshape(-1, 1, 1, 1)
    bias = conv.bias.detach().double() if conv.bias is not None else torch.zeros_like(scale)
    bias = bn.bias.detach().double() + (bias - bn.running_mean.double()) * scale
    fused.weight.data = weight.to(conv.weight.dtype)
    fused.bias.data = bias.to(conv.weight.dtype)
    return fused.to(conv.weight.device)


def _foldable(module: nn.Module) -> bool:
    return isinstance(module, (nn.BatchNorm2d, FrozenBatchNorm2d)) and module.running_var is not None


def fold_batchnorm(model: nn.Module, *, inplace: bool = False) -> nn.Module:
    """An eval-mode copy of ``model`` whose conv-BN pairs are single convolutions; the
    folded BNs become ``nn.Identity``. Norms other than BN (GroupNorm) are left alone."""
    model = model if inplace else copy.deepcopy(model)
    model.eval()
    folded = 0

    def fold(owner: nn.Module, conv_name: str, bn_name: str) -> None:
        nonlocal folded
        conv, bn = getattr(owner, conv_name, None), getattr(owner, bn_name, None)
        if isinstance(conv, nn.Conv2d) and bn is not None and _foldable(bn):
            setattr(owner, conv_name, fuse_conv_bn(conv, bn))
            setattr(owner, bn_name, nn.Identity())
            folded += 1

    with torch.no_grad():
        for module in list(model.modules()):
            if isinstance(module, ResNet) and hasattr(module, "bn1"):
                fold(module, "conv1", "bn1")  # the stem
            for cls, pairs in _PAIRS.items():
                if type(module) is cls:
                    for conv_name, bn_name in pairs:
                        fold(module, conv_name, bn_name)
            if isinstance(module, nn.Sequential) and len(module) == 2 and isinstance(module[0], nn.Conv2d):
                fold(module, "0", "1")  # projection shortcut: downsample.0 / downsample.1
    model.folded_batchnorms = folded
    return model
