"""Backbones for detection and segmentation: a ResNet's stage outputs, optionally joined by a
feature pyramid, in the form torchvision's detection models (FasterRCNN, RetinaNet, MaskRCNN)
and segmentation models (FCN, DeepLabV3) take.

    bb = backbone("resnet50", weights="tv2_in1k", fpn=True)        # P2..P5 + pool, 256 channels
    detector = torchvision.models.detection.FasterRCNN(bb, num_classes=21)

The module's names follow torchvision's ``BackboneWithFPN`` (``body.layer1...``, ``fpn.inner_blocks...``),
so a torchvision detector's state dict has the same keys and shapes.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Optional, Sequence, Union

import torch
from torch import nn

from ..errors import UsageError, check_choice
from ..factory import create_model
from ..models import build_model
from ..weights.formats import PathOrUrl
from ..weights.named import take_weights_name

FPN_EXTRAS = ("maxpool", "p6p7", "none")


class Backbone(nn.Module):
    """Feature maps of a ResNet's stages (``body``), optionally through a feature pyramid (``fpn``).

    ``forward`` returns an OrderedDict of named maps. ``out_channels`` is what torchvision's heads
    read: an int when every returned map has the same width (always with a pyramid), else the list
    of widths. ``channels`` and ``strides`` give each returned map's width and its stride against
    the input; ``preprocessing`` is the body's (the mean and std a detector should normalise with).
    """

    def __init__(self, body: nn.Module, names: Sequence[str], fpn: Optional[nn.Module] = None,
                 fpn_channels: int = 256, extra_names: Sequence[str] = ()):
        super().__init__()
        self.body = body
        self.names = tuple(names)
        body_channels = [info["num_chs"] for info in body.feature_info]
        body_strides = [info["reduction"] for info in body.feature_info]
        if fpn is not None:
            self.fpn = fpn
            self.channels = [fpn_channels] * (len(self.names) + len(extra_names))
            # each extra level (max pool, P6, P7) halves the last map once more
            self.strides = body_strides + [body_strides[-1] * 2 ** (i + 1) for i in range(len(extra_names))]
            self.names = self.names + tuple(extra_names)
        else:
            self.fpn = None
            self.channels = body_channels
            self.strides = body_strides
        self.out_channels: Union[int, list[int]] = (self.channels[0] if len(set(self.channels)) == 1
                                                    else list(self.channels))
        self.preprocessing = getattr(body, "preprocessing", None)
        self.frozen: tuple[str, ...] = ()

    def forward(self, x: torch.Tensor) -> "OrderedDict[str, torch.Tensor]":
        maps = self.body(x)
        features = OrderedDict(zip(self.names, maps))
        if self.fpn is not None:
            features = self.fpn(features)
        return features

    def train(self, mode: bool = True) -> "Backbone":
        # frozen stages stay in evaluation mode: a trainable BatchNorm in them keeps its statistics too
        super().train(mode)
        for name in self.frozen:
            getattr(self.body, name).eval()
        return self


def backbone(name: str, weights: Optional[PathOrUrl] = None, *, fpn: bool = False,
             out_indices: Optional[Sequence[int]] = None, trainable_stages: int = 3,
             norm: str = "frozen_batchnorm", dilation: Optional[Sequence[bool]] = None,
             names: Optional[Sequence[str]] = None, fpn_channels: int = 256, fpn_extra: str = "maxpool",
             **kwargs) -> Backbone:
    """A registered ResNet as a backbone for torchvision's detection and segmentation models.

    Args:
        name: a registered model (``resnets.list_models()``): ImageNet networks (basic, bottleneck,
            ResNeXt, wide, pre-activation) or CIFAR ones (three stages, strides 1, 2 and 4).
        weights: anything ``create_model`` takes (a named weight, ``MODEL.TAG``, a checkpoint path
            or URL); the classifier is dropped and the BN statistics go into the (frozen) BN layers.
        fpn: join the returned stages with torchvision's FeaturePyramidNetwork (``fpn_channels``
            wide, plus ``fpn_extra`` levels: "maxpool" for Faster/Mask R-CNN, "p6p7" for RetinaNet).
        out_indices: the maps to return, 0 for the stem's activation and k for stage k; default
            every stage (1..4 for ImageNet networks, 1..3 for CIFAR ones).
        trainable_stages: how many stages, counted back from the network's last (the stem counts as
            the first), get gradients; the rest are frozen. 3 trains layer2..layer4 of an ImageNet
            ResNet, as torchvision's ``trainable_layers=3``; 0 freezes the whole body.
        norm: the normalisation layer: "frozen_batchnorm" (fixed statistics, the detection default),
            "batchnorm", or any other ``norm_layer`` the ResNet takes.
        dilation: one flag per stage after the first: dilate that stage instead of striding, e.g.
            (False, True, True) for an output stride of 8 and (False, False, True) for 16 (DeepLabV3).
        names: the keys of the returned maps, one per index (default "0", "1", ...); DeepLabV3 and FCN
            read "out" (and "aux" for their auxiliary head).
        **kwargs: further options of the ResNet (``in_chans``, ``variant``, ...).
    """
    name, weights = take_weights_name(name, weights)  # MODEL.TAG: the model with those weights
    with torch.device("meta"):  # the network's shape only, nothing allocated
        probe = build_model(name, features_only=True)
    stages = len(probe.feature_info) - 1
    if out_indices is None:
        out_indices = tuple(range(1, stages + 1))
    out_indices = tuple(out_indices)
    if (not out_indices or any(type(i) is not int or not 0 <= i <= stages for i in out_indices)
            or list(out_indices) != sorted(set(out_indices))):
        raise UsageError(f"out_indices {out_indices} is not usable for {name}: give increasing indices in 0..{stages} "
                         f"(0: the stem, k: stage k)")
    if type(trainable_stages) is not int or not 0 <= trainable_stages <= stages + 1:
        raise UsageError(f"trainable_stages={trainable_stages!r} is not usable for {name}: give 0..{stages + 1} "
                         f"(its {stages} stages and the stem)")
    if dilation is not None:
        dilation = tuple(dilation)
        if len(dilation) != stages - 1 or any(not isinstance(d, bool) for d in dilation):
            raise UsageError(f"dilation={dilation} is not usable for {name}: give {stages - 1} True/False flags, one "
                             f"per stage after the first (e.g. {(False,) + (True,) * (stages - 2)})")
        if any(dilation[i] and not dilation[i + 1] for i in range(len(dilation) - 1)):
            raise UsageError(f"dilation={dilation}: once a stage is dilated the later ones must be too "
                             f"(a strided stage after a dilated one breaks the output stride)")
        kwargs["replace_stride_with_dilation"] = list(dilation)
    if names is None:
        names = [str(i) for i in range(len(out_indices))]
    names = [str(n) for n in names]
    if len(names) != len(out_indices) or len(set(names)) != len(names):
        raise UsageError(f"names {tuple(names)} must be {len(out_indices)} distinct keys, one per out_indices entry "
                         f"{out_indices}")
    check_choice("fpn_extra", fpn_extra, FPN_EXTRAS)
    if fpn and (type(fpn_channels) is not int or fpn_channels < 1):
        raise UsageError(f"fpn_channels must be a positive integer, got {fpn_channels!r}")

    body = create_model(name, weights=weights, features_only=True, out_indices=out_indices, norm_layer=norm, **kwargs)

    # the stem and the stages, first to last; a pre-activation net's final BN belongs to its last stage
    groups = [["conv1", "bn1"]] + [[f"layer{k}"] for k in range(1, stages + 1)]
    groups[-1].append("final_bn")
    frozen = [module for group in groups[:len(groups) - trainable_stages] for module in group
              if hasattr(body, module)]
    for module in frozen:
        getattr(body, module).requires_grad_(False)

    pyramid, extra_names = None, ()
    if fpn:
        # torchvision is imported here, not with the module: the command line imports this package at start-up
        from torchvision.ops import FeaturePyramidNetwork
        from torchvision.ops.feature_pyramid_network import LastLevelMaxPool, LastLevelP6P7

        extra = {"maxpool": LastLevelMaxPool(), "p6p7": LastLevelP6P7(fpn_channels, fpn_channels), "none": None}
        extra_names = {"maxpool": ("pool",), "p6p7": ("p6", "p7"), "none": ()}[fpn_extra]
        pyramid = FeaturePyramidNetwork([info["num_chs"] for info in body.feature_info], fpn_channels,
                                        extra_blocks=extra[fpn_extra])
    model = Backbone(body, names, pyramid, fpn_channels, extra_names)
    model.frozen = tuple(frozen)
    return model.train()


__all__ = ["Backbone", "backbone"]
