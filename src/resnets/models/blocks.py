"""Residual blocks and shortcuts of the two ResNet papers.

Post-activation blocks (He et al. 2015): ``y = relu(F(x) + shortcut(x))``.
Pre-activation blocks (He et al. 2016): ``y = F(relu(bn(x))) + shortcut(x)``, leaving the
identity path free of any operation.

The shortcut options of the 2015 paper, section 3.3:

- ``"A"``: identity; where the shape changes, stride-2 subsampling plus zero channels
  (no parameters).
- ``"B"``: identity; where the shape changes, a 1x1 projection (``downsample``).
- ``"C"``: a 1x1 projection on every block.
- ``"none"``: no shortcut at all, the plain networks of the degradation experiment.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UsageError, check_choice
from .layers import NormLayer

SHORTCUT_OPTIONS = ("A", "B", "C", "none")


def plain_options(kwargs: dict) -> dict:
    """A plain network's options: no shortcut anywhere; asking one for a shortcut is refused, since it would
    build the residual network under the plain one's name."""
    if kwargs.get("shortcut", "none") != "none":
        raise UsageError(f"a plain network has no shortcut; drop shortcut={kwargs['shortcut']!r} (or build the "
                         f"residual network of the same depth)")
    return {**kwargs, "shortcut": "none"}


def conv3x3(in_channels: int, out_channels: int, stride: int = 1, groups: int = 1,
            dilation: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=stride, padding=dilation,
                     groups=groups, dilation=dilation, bias=False)


def conv1x1(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=stride, bias=False)


class ZeroPadShortcut(nn.Module):
    """Option A: parameter-free shortcut for a change of shape.

    Subsamples by ``stride`` (taking every stride-th pixel, as a 1x1 stride-s identity
    would) and appends zero channels, half before and half after the input channels.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        if out_channels < in_channels:
            raise UsageError(f"option A shortcut cannot reduce channels ({in_channels} -> {out_channels})")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.stride = stride
        extra = out_channels - in_channels
        self.pad_before = extra // 2
        self.pad_after = extra - self.pad_before

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride > 1:
            x = x[:, :, ::self.stride, ::self.stride]
        if self.pad_before or self.pad_after:
            # F.pad pads the last dimensions first: (W, W, H, H, C, C)
            x = F.pad(x, (0, 0, 0, 0, self.pad_before, self.pad_after))
        return x

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.out_channels}, stride={self.stride}"


def make_shortcut(option: str, in_channels: int, out_channels: int, stride: int,
                  norm_layer: Optional[NormLayer], preact: bool = False) -> Optional[nn.Module]:
    """The ``downsample`` module of a block, or None for an identity (or absent) shortcut.

    Projections are conv1x1 + norm (torchvision's ``downsample.0`` / ``downsample.1``);
    in pre-activation blocks the input is already normalised, so the projection is a bare
    1x1 convolution, as in the 2016 paper's code.
    """
    check_choice("shortcut", option, SHORTCUT_OPTIONS)
    same_shape = stride == 1 and in_channels == out_channels
    if option == "none" or (same_shape and option in ("A", "B")):
        return None
    if option == "A":
        return ZeroPadShortcut(in_channels, out_channels, stride)
    if preact:
        return conv1x1(in_channels, out_channels, stride)
    return nn.Sequential(conv1x1(in_channels, out_channels, stride), norm_layer(out_channels))


class PostActivationBlock(nn.Module):
    """The 2015 paper's unit: the addition, then the ReLU. Subclasses define F(x)."""

    relu: nn.Module
    downsample: Optional[nn.Module]
    residual: bool

    def residual_function(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.residual_function(x)
        if self.residual:
            # y = F(x) + x, eq. (1); or F(x) + W_s x, eq. (2)
            out = out + (x if self.downsample is None else self.downsample(x))
        return self.relu(out)


class BasicBlock(PostActivationBlock):
    """Two 3x3 convolutions (paper Fig. 2 / Fig. 5 left)."""

    expansion = 1

    def __init__(self, in_channels: int, planes: int, stride: int = 1, downsample: Optional[nn.Module] = None,
                 groups: int = 1, base_width: int = 64, dilation: int = 1, norm_layer: NormLayer = nn.BatchNorm2d,
                 residual: bool = True):
        super().__init__()
        if groups != 1 or base_width != 64:
            raise UsageError("basic blocks take only groups=1 and width_per_group=64")
        self.conv1 = conv3x3(in_channels, planes, stride, dilation=dilation)
        self.bn1 = norm_layer(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes, dilation=dilation)
        self.bn2 = norm_layer(planes)
        self.downsample = downsample
        self.residual = residual
        self.stride = stride

    def residual_function(self, x: torch.Tensor) -> torch.Tensor:
        """F(x): the branch added to the shortcut, before the addition."""
        out = self.relu(self.bn1(self.conv1(x)))
        return self.bn2(self.conv2(out))

    def zero_init_last(self) -> None:
        """Zero the last BN's scale so that the block starts as its shortcut (Goyal et al. 2017)."""
        nn.init.zeros_(self.bn2.weight)


class Bottleneck(PostActivationBlock):
    """1x1 reduce, 3x3, 1x1 expand (paper Fig. 5 right).

    ``stride_in_1x1=True`` is the 2015 paper's layout (ResNet v1); the default puts the
    stride on the 3x3 convolution (v1.5, as torchvision and most checkpoints do).
    """

    expansion = 4

    def __init__(self, in_channels: int, planes: int, stride: int = 1, downsample: Optional[nn.Module] = None,
                 groups: int = 1, base_width: int = 64, dilation: int = 1, norm_layer: NormLayer = nn.BatchNorm2d,
                 residual: bool = True, stride_in_1x1: bool = False):
        super().__init__()
        width = int(planes * (base_width / 64.0)) * groups
        stride_1x1, stride_3x3 = (stride, 1) if stride_in_1x1 else (1, stride)
        self.conv1 = conv1x1(in_channels, width, stride_1x1)
        self.bn1 = norm_layer(width)
        self.conv2 = conv3x3(width, width, stride_3x3, groups, dilation)
        self.bn2 = norm_layer(width)
        self.conv3 = conv1x1(width, planes * self.expansion)
        self.bn3 = norm_layer(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.residual = residual
        self.stride = stride

    def residual_function(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self.bn3(self.conv3(out))

    def zero_init_last(self) -> None:
        nn.init.zeros_(self.bn3.weight)


class PreActBasicBlock(nn.Module):
    """BN-ReLU-conv3x3, BN-ReLU-conv3x3, then the addition (2016 paper, Fig. 1b).

    ``preact=False`` drops the leading BN-ReLU for a block whose input was already
    normalised and activated (the first block after the ImageNet stem).
    """

    expansion = 1

    def __init__(self, in_channels: int, planes: int, stride: int = 1, downsample: Optional[nn.Module] = None,
                 groups: int = 1, base_width: int = 64, dilation: int = 1, norm_layer: NormLayer = nn.BatchNorm2d,
                 residual: bool = True, preact: bool = True):
        super().__init__()
        if groups != 1 or base_width != 64:
            raise UsageError("basic blocks take only groups=1 and width_per_group=64")
        self.bn1 = norm_layer(in_channels) if preact else nn.Identity()
        self.conv1 = conv3x3(in_channels, planes, stride, dilation=dilation)
        self.bn2 = norm_layer(planes)
        self.conv2 = conv3x3(planes, planes, dilation=dilation)
        self.relu = nn.ReLU(inplace=False)
        self.downsample = downsample
        self.residual = residual
        self.preact = preact
        self.stride = stride

    def _activate_input(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.bn1(x)) if self.preact else x

    def _branch(self, x_act: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.relu(self.bn2(self.conv1(x_act))))

    def residual_function(self, x: torch.Tensor) -> torch.Tensor:
        return self._branch(self._activate_input(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x_act = self._activate_input(x)
        out = self._branch(x_act)
        if self.residual:
            # a projection sees the activated input; an identity carries x untouched
            out = out + (x if self.downsample is None else self.downsample(x_act))
        return out

    def zero_init_last(self) -> None:
        # a pre-activation branch ends in a convolution, not a norm
        nn.init.zeros_(self.conv2.weight)


class PreActBottleneck(PreActBasicBlock):
    """BN-ReLU-conv1x1, BN-ReLU-conv3x3, BN-ReLU-conv1x1 (2016 paper)."""

    expansion = 4

    def __init__(self, in_channels: int, planes: int, stride: int = 1, downsample: Optional[nn.Module] = None,
                 groups: int = 1, base_width: int = 64, dilation: int = 1, norm_layer: NormLayer = nn.BatchNorm2d,
                 residual: bool = True, preact: bool = True, stride_in_1x1: bool = False):
        nn.Module.__init__(self)
        width = int(planes * (base_width / 64.0)) * groups
        stride_1x1, stride_3x3 = (stride, 1) if stride_in_1x1 else (1, stride)
        self.bn1 = norm_layer(in_channels) if preact else nn.Identity()
        self.conv1 = conv1x1(in_channels, width, stride_1x1)
        self.bn2 = norm_layer(width)
        self.conv2 = conv3x3(width, width, stride_3x3, groups, dilation)
        self.bn3 = norm_layer(width)
        self.conv3 = conv1x1(width, planes * self.expansion)
        self.relu = nn.ReLU(inplace=False)
        self.downsample = downsample
        self.residual = residual
        self.preact = preact
        self.stride = stride

    def _branch(self, x_act: torch.Tensor) -> torch.Tensor:
        out = self.conv1(x_act)
        out = self.conv2(self.relu(self.bn2(out)))
        return self.conv3(self.relu(self.bn3(out)))

    def zero_init_last(self) -> None:
        nn.init.zeros_(self.conv3.weight)
