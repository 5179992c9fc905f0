"""The CIFAR family (paper section 4.2): 6n+2 layers of 16, 32 and 64 filters, and the
pre-activation bottleneck nets of 9n+2 layers (2016 paper)."""

from __future__ import annotations

from torch import nn

from ..errors import UsageError
from .blocks import plain_options
from .preprocessing import CIFAR10_PREPROCESSING
from .registry import register_model
from .resnet import ResNet, ResNetFeatures

CIFAR_WIDTHS = (16, 32, 64)


def cifar_resnet(depth: int, *, bottleneck: bool = False, preact: bool = False, plain: bool = False,
                 features_only: bool = False, **kwargs) -> ResNet:
    """A CIFAR ResNet of any valid depth: 6n+2 with basic blocks, 9n+2 with bottlenecks.

    Shortcuts default to option A (parameter-free) for post-activation nets, as in the
    2015 paper, and to projections on the pre-activated input for pre-activation nets, as
    in the 2016 paper's code. ``plain=True`` removes every shortcut.
    """
    per_block = 9 if bottleneck else 6
    if depth < per_block + 2 or (depth - 2) % per_block:
        kind = "bottleneck (9n+2)" if bottleneck else "basic-block (6n+2)"
        raise UsageError(f"depth {depth} is not a valid {kind} CIFAR depth")
    n = (depth - 2) // per_block
    if plain:
        kwargs = plain_options(kwargs)
    kwargs.setdefault("shortcut", "B" if preact else "A")
    kwargs.setdefault("num_classes", 10)
    block = ("preact_" if preact else "") + ("bottleneck" if bottleneck else "basic")
    cls = ResNetFeatures if features_only else ResNet
    return cls(block, (n, n, n), CIFAR_WIDTHS, stem="cifar", **kwargs)


def _register(kind: str):
    return register_model("cifar", kind, CIFAR10_PREPROCESSING)


@_register("residual")
def resnet20(**kwargs) -> nn.Module:
    """CIFAR ResNet-20 (n=3), option A shortcuts."""
    return cifar_resnet(20, **kwargs)


@_register("residual")
def resnet32(**kwargs) -> nn.Module:
    """CIFAR ResNet-32 (n=5), option A shortcuts."""
    return cifar_resnet(32, **kwargs)


@_register("residual")
def resnet44(**kwargs) -> nn.Module:
    """CIFAR ResNet-44 (n=7), option A shortcuts."""
    return cifar_resnet(44, **kwargs)


@_register("residual")
def resnet56(**kwargs) -> nn.Module:
    """CIFAR ResNet-56 (n=9), option A shortcuts."""
    return cifar_resnet(56, **kwargs)


@_register("residual")
def resnet110(**kwargs) -> nn.Module:
    """CIFAR ResNet-110 (n=18), option A shortcuts."""
    return cifar_resnet(110, **kwargs)


@_register("residual")
def resnet1202(**kwargs) -> nn.Module:
    """CIFAR ResNet-1202 (n=200), option A shortcuts."""
    return cifar_resnet(1202, **kwargs)


@_register("plain")
def plain20(**kwargs) -> nn.Module:
    """CIFAR plain-20: ResNet-20 without shortcuts."""
    return cifar_resnet(20, plain=True, **kwargs)


@_register("plain")
def plain32(**kwargs) -> nn.Module:
    """CIFAR plain-32."""
    return cifar_resnet(32, plain=True, **kwargs)


@_register("plain")
def plain44(**kwargs) -> nn.Module:
    """CIFAR plain-44."""
    return cifar_resnet(44, plain=True, **kwargs)


@_register("plain")
def plain56(**kwargs) -> nn.Module:
    """CIFAR plain-56."""
    return cifar_resnet(56, plain=True, **kwargs)


@_register("plain")
def plain110(**kwargs) -> nn.Module:
    """CIFAR plain-110."""
    return cifar_resnet(110, plain=True, **kwargs)


@_register("preact")
def preact_resnet110(**kwargs) -> nn.Module:
    """Pre-activation CIFAR ResNet-110 (basic blocks, 2016 paper)."""
    return cifar_resnet(110, preact=True, **kwargs)


@_register("preact")
def preact_resnet164(**kwargs) -> nn.Module:
    """Pre-activation CIFAR ResNet-164 (bottlenecks, 2016 paper)."""
    return cifar_resnet(164, preact=True, bottleneck=True, **kwargs)


@_register("preact")
def preact_resnet1001(**kwargs) -> nn.Module:
    """Pre-activation CIFAR ResNet-1001 (bottlenecks, 2016 paper)."""
    return cifar_resnet(1001, preact=True, bottleneck=True, **kwargs)
