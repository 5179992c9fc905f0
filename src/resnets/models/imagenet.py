"""The ImageNet family (paper Table 1): residual, plain, pre-activation, ResNeXt, wide."""

from __future__ import annotations

from typing import Sequence

from torch import nn

from .blocks import plain_options
from .preprocessing import IMAGENET_PREPROCESSING
from .registry import register_model
from .resnet import ResNet, ResNetFeatures

IMAGENET_WIDTHS = (64, 128, 256, 512)


def build_imagenet_resnet(block: str, layers: Sequence[int], *, features_only: bool = False, **kwargs) -> ResNet:
    """A four-stage ImageNet ResNet; ``features_only`` gives a ResNetFeatures."""
    cls = ResNetFeatures if features_only else ResNet
    return cls(block, layers, IMAGENET_WIDTHS, stem="imagenet", **kwargs)


def _register(kind: str):
    return register_model("imagenet", kind, IMAGENET_PREPROCESSING)


@_register("residual")
def resnet18(**kwargs) -> nn.Module:
    """ResNet-18, basic blocks [2, 2, 2, 2]."""
    return build_imagenet_resnet("basic", (2, 2, 2, 2), **kwargs)


@_register("residual")
def resnet34(**kwargs) -> nn.Module:
    """ResNet-34, basic blocks [3, 4, 6, 3]."""
    return build_imagenet_resnet("basic", (3, 4, 6, 3), **kwargs)


@_register("residual")
def resnet50(**kwargs) -> nn.Module:
    """ResNet-50, bottleneck blocks [3, 4, 6, 3]."""
    return build_imagenet_resnet("bottleneck", (3, 4, 6, 3), **kwargs)


@_register("residual")
def resnet101(**kwargs) -> nn.Module:
    """ResNet-101, bottleneck blocks [3, 4, 23, 3]."""
    return build_imagenet_resnet("bottleneck", (3, 4, 23, 3), **kwargs)


@_register("residual")
def resnet152(**kwargs) -> nn.Module:
    """ResNet-152, bottleneck blocks [3, 8, 36, 3]."""
    return build_imagenet_resnet("bottleneck", (3, 8, 36, 3), **kwargs)


@_register("residual")
def resnet200(**kwargs) -> nn.Module:
    """ResNet-200, bottleneck blocks [3, 24, 36, 3] (2016 paper)."""
    return build_imagenet_resnet("bottleneck", (3, 24, 36, 3), **kwargs)


@_register("residual")
def resnext50_32x4d(**kwargs) -> nn.Module:
    """ResNeXt-50 32x4d: ResNet-50 with 32 groups of width 4 in each 3x3."""
    return build_imagenet_resnet("bottleneck", (3, 4, 6, 3), **{"groups": 32, "width_per_group": 4, **kwargs})


@_register("residual")
def resnext101_32x8d(**kwargs) -> nn.Module:
    """ResNeXt-101 32x8d."""
    return build_imagenet_resnet("bottleneck", (3, 4, 23, 3), **{"groups": 32, "width_per_group": 8, **kwargs})


@_register("residual")
def resnext101_64x4d(**kwargs) -> nn.Module:
    """ResNeXt-101 64x4d."""
    return build_imagenet_resnet("bottleneck", (3, 4, 23, 3), **{"groups": 64, "width_per_group": 4, **kwargs})


@_register("residual")
def wide_resnet50_2(**kwargs) -> nn.Module:
    """Wide ResNet-50-2: bottlenecks twice as wide inside."""
    return build_imagenet_resnet("bottleneck", (3, 4, 6, 3), **{"width_per_group": 128, **kwargs})


@_register("residual")
def wide_resnet101_2(**kwargs) -> nn.Module:
    """Wide ResNet-101-2."""
    return build_imagenet_resnet("bottleneck", (3, 4, 23, 3), **{"width_per_group": 128, **kwargs})


@_register("plain")
def plain18(**kwargs) -> nn.Module:
    """Plain-18: ResNet-18 without shortcuts (paper Fig. 4)."""
    return build_imagenet_resnet("basic", (2, 2, 2, 2), **plain_options(kwargs))


@_register("plain")
def plain34(**kwargs) -> nn.Module:
    """Plain-34: ResNet-34 without shortcuts (paper Fig. 3 middle)."""
    return build_imagenet_resnet("basic", (3, 4, 6, 3), **plain_options(kwargs))


def _preact(block: str, layers: Sequence[int], kwargs: dict) -> nn.Module:
    return build_imagenet_resnet(f"preact_{block}", layers, **kwargs)


@_register("preact")
def preact_resnet18(**kwargs) -> nn.Module:
    """Pre-activation ResNet-18."""
    return _preact("basic", (2, 2, 2, 2), kwargs)


@_register("preact")
def preact_resnet34(**kwargs) -> nn.Module:
    """Pre-activation ResNet-34."""
    return _preact("basic", (3, 4, 6, 3), kwargs)


@_register("preact")
def preact_resnet50(**kwargs) -> nn.Module:
    """Pre-activation ResNet-50."""
    return _preact("bottleneck", (3, 4, 6, 3), kwargs)


@_register("preact")
def preact_resnet101(**kwargs) -> nn.Module:
    """Pre-activation ResNet-101."""
    return _preact("bottleneck", (3, 4, 23, 3), kwargs)


@_register("preact")
def preact_resnet152(**kwargs) -> nn.Module:
    """Pre-activation ResNet-152."""
    return _preact("bottleneck", (3, 8, 36, 3), kwargs)


@_register("preact")
def preact_resnet200(**kwargs) -> nn.Module:
    """Pre-activation ResNet-200 (2016 paper, Table 5)."""
    return _preact("bottleneck", (3, 24, 36, 3), kwargs)
