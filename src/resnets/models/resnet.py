"""One ResNet class for every network of the two papers.

The ImageNet stem is a 7x7/2 convolution and a 3x3/2 max pool followed by four stages
(paper Table 1); the CIFAR stem is a single 3x3 convolution followed by three stages of
16, 32 and 64 filters (paper section 4.2). Module names follow torchvision (``conv1``,
``bn1``, ``layerK.i.convJ``, ``downsample.0/1``, ``fc``) so its checkpoints load as they are.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence, Union

import torch
from torch import nn

from ..errors import UsageError, check_choice
from .blocks import SHORTCUT_OPTIONS, BasicBlock, Bottleneck, PreActBasicBlock, PreActBottleneck, make_shortcut
from .layers import NormLayer, get_norm_layer
from .preprocessing import Preprocessing

BLOCKS = {
    "basic": BasicBlock,
    "bottleneck": Bottleneck,
    "preact_basic": PreActBasicBlock,
    "preact_bottleneck": PreActBottleneck,
}
STEMS = ("imagenet", "cifar")
VARIANTS = ("v1", "v1.5")
GLOBAL_POOLS = ("avg", "max", "")


class FeatureInfo(list):
    """The feature maps a network gives, one dict each (``num_chs``, ``reduction``, ``module``), with
    timm's accessors: ``channels()``, ``reduction()`` and ``module_name()`` give the list, or one
    entry's value for an index (or a list of them for a list of indices)."""

    def _get(self, key: str, idx: Union[int, Sequence[int], None] = None):
        if idx is None:
            return [info[key] for info in self]
        if isinstance(idx, int):
            return self[idx][key]
        return [self[i][key] for i in idx]

    def channels(self, idx: Union[int, Sequence[int], None] = None):
        return self._get("num_chs", idx)

    def reduction(self, idx: Union[int, Sequence[int], None] = None):
        return self._get("reduction", idx)

    def module_name(self, idx: Union[int, Sequence[int], None] = None):
        return self._get("module", idx)

    def get_dicts(self) -> list[dict]:
        return [dict(info) for info in self]


class ResNet(nn.Module):
    """A residual (or, with ``shortcut="none"``, plain) network.

    Args:
        block: "basic", "bottleneck", "preact_basic" or "preact_bottleneck".
        layers: blocks per stage, e.g. (3, 4, 6, 3) for ResNet-50 or (3, 3, 3) for ResNet-20.
        widths: base width (``planes``) of each stage; a stage outputs ``width * expansion``.
        stem: "imagenet" (7x7/2 conv + 3x3/2 max pool) or "cifar" (3x3 conv).
        shortcut: "A", "B", "C" (paper section 3.3) or "none" (plain network).
        variant: "v1.5" puts a bottleneck's stride on its 3x3 conv, "v1" on its first 1x1.
        zero_init_residual: start every residual branch's last layer at zero.
        groups, width_per_group: grouped 3x3 convolutions (ResNeXt) and wide bottlenecks.
        replace_stride_with_dilation: per stage after the first, dilate instead of striding.
        norm_layer: "batchnorm", "frozen_batchnorm", "sync_batchnorm", "groupnorm" or a
            callable taking the channel count.
        in_chans, num_classes: input channels and classifier outputs (0: no classifier).
        global_pool: "avg", "max", or "" (no pooling, only with ``num_classes=0``).
    """

    def __init__(self, block: Union[str, type], layers: Sequence[int], widths: Sequence[int] = (64, 128, 256, 512),
                 *, stem: str = "imagenet", num_classes: int = 1000, in_chans: int = 3, shortcut: str = "B",
                 variant: str = "v1.5", zero_init_residual: bool = False, groups: int = 1,
                 width_per_group: int = 64, replace_stride_with_dilation: Optional[Sequence[bool]] = None,
                 norm_layer: Union[str, NormLayer, None] = None, global_pool: str = "avg"):
        super().__init__()
        block_cls = BLOCKS[block] if isinstance(block, str) else block
        if block_cls not in BLOCKS.values():
            raise UsageError(f"block must be one of {sorted(BLOCKS)}, got {block!r}")
        check_choice("stem", stem, STEMS)
        check_choice("shortcut", shortcut, SHORTCUT_OPTIONS)
        check_choice("variant", variant, VARIANTS)
        check_choice("global_pool", global_pool, GLOBAL_POOLS)
        if len(layers) != len(widths) or not layers:
            raise UsageError(f"layers {tuple(layers)} and widths {tuple(widths)} must have the same, non-zero length")
        if any(n < 1 for n in layers):
            raise UsageError(f"every stage needs at least one block, got layers={tuple(layers)}")
        for key, value, kind in (("num_classes", num_classes, int), ("in_chans", in_chans, int),
                                 ("zero_init_residual", zero_init_residual, bool), ("groups", groups, int),
                                 ("width_per_group", width_per_group, int)):
            if type(value) is not kind:  # bool is an int subclass: type(), not isinstance()
                raise UsageError(f"{key} must be {'true or false' if kind is bool else 'an integer'}, got {value!r}")
        if num_classes < 0 or in_chans < 1:
            raise UsageError(f"num_classes must be >= 0 and in_chans >= 1, got {num_classes} and {in_chans}")
        if replace_stride_with_dilation is None:
            replace_stride_with_dilation = [False] * (len(layers) - 1)
        if len(replace_stride_with_dilation) != len(layers) - 1:
            raise UsageError(f"replace_stride_with_dilation needs {len(layers) - 1} entries, "
                             f"got {len(replace_stride_with_dilation)}")

        # what the network is and was trained for: set by the registry (arch, options, default
        # preprocessing) and by loaded weights (classes, their preprocessing); saved in our checkpoints
        self.arch: Optional[str] = None
        self.arch_kwargs: dict = {}
        self.preprocessing: Optional[Preprocessing] = None
        self.classes: Optional[list[str]] = None
        self.checkpoint_info: Any = None  # resnets.weights.CheckpointInfo of the file the weights came from

        norm = get_norm_layer(norm_layer)
        self.preact = block_cls in (PreActBasicBlock, PreActBottleneck)
        self.shortcut = shortcut
        self.variant = variant
        self.stem_type = stem
        self.num_classes = num_classes
        self.global_pool_type = global_pool
        self._norm_layer = norm
        self._groups = groups
        self._base_width = width_per_group
        self._dilation = 1
        self._block_cls = block_cls

        # stem; a pre-activation CIFAR net leaves normalisation to its first block
        self.in_channels = widths[0] if stem == "cifar" else 64
        if stem == "imagenet":
            self.conv1 = nn.Conv2d(in_chans, self.in_channels, kernel_size=7, stride=2, padding=3, bias=False)
        else:
            self.conv1 = nn.Conv2d(in_chans, self.in_channels, kernel_size=3, stride=1, padding=1, bias=False)
        stem_norm = not (self.preact and stem == "cifar")
        if stem_norm:
            self.bn1 = norm(self.in_channels)
            self.relu = nn.ReLU(inplace=True)
        reduction = 1
        if stem == "imagenet":
            reduction = 2
            self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.feature_info = FeatureInfo([dict(num_chs=self.in_channels, reduction=reduction,
                                              module="relu" if stem_norm else "conv1")])
        if stem == "imagenet":
            reduction *= 2

        self.stage_names: list[str] = []
        for index, (num_blocks, width) in enumerate(zip(layers, widths)):
            stride = 1 if index == 0 else 2
            dilate = index > 0 and bool(replace_stride_with_dilation[index - 1])
            # the first pre-activation block after a normalised stem skips its own BN-ReLU
            first_preact = not (self.preact and stem_norm and index == 0)
            layer = self._make_layer(width, num_blocks, stride, dilate, first_preact)
            name = f"layer{index + 1}"
            self.add_module(name, layer)
            self.stage_names.append(name)
            if stride > 1 and not dilate:
                reduction *= stride
            self.feature_info.append(dict(num_chs=self.in_channels, reduction=reduction, module=name))

        self.num_features = self.in_channels
        if self.preact:
            # the 2016 paper ends with a BN-ReLU after the last unit
            self.final_bn = norm(self.num_features)
            self.final_relu = nn.ReLU(inplace=True)
        self.avgpool = self._make_pool(global_pool)
        self.fc = self._make_classifier(num_classes)

        # a skeleton on the meta device (shapes only) has nothing to initialise, and torch's random initialisers
        # there import its compiler stack (3 s at the start of every command that reads a model's shapes)
        if not next(self.parameters()).is_meta:
            self._initialise(zero_init_residual)

    def _initialise(self, zero_init_residual: bool) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                # He et al. 2015 initialisation
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)) and m.weight is not None:
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if zero_init_residual:
            for m in self.modules():
                if isinstance(m, tuple(BLOCKS.values())):
                    m.zero_init_last()

    def _make_layer(self, planes: int, num_blocks: int, stride: int, dilate: bool, first_preact: bool) -> nn.Sequential:
        block = self._block_cls
        previous_dilation = self._dilation
        if dilate:
            self._dilation *= stride
            stride = 1
        common = dict(groups=self._groups, base_width=self._base_width, norm_layer=self._norm_layer,
                      residual=self.shortcut != "none")
        if issubclass(block, (Bottleneck, PreActBottleneck)):  # where the stride goes is a bottleneck's choice
            common["stride_in_1x1"] = self.variant == "v1"
        blocks = []
        for i in range(num_blocks):
            in_channels = self.in_channels if i == 0 else planes * block.expansion
            block_stride = stride if i == 0 else 1
            downsample = make_shortcut(self.shortcut, in_channels, planes * block.expansion, block_stride,
                                       self._norm_layer, preact=self.preact)
            extra = dict(preact=first_preact or i > 0) if self.preact else {}
            blocks.append(block(in_channels, planes, block_stride, downsample,
                                dilation=previous_dilation if i == 0 else self._dilation, **common, **extra))
        self.in_channels = planes * block.expansion
        return nn.Sequential(*blocks)

    @staticmethod
    def _make_pool(global_pool: str) -> nn.Module:
        if global_pool == "avg":
            return nn.AdaptiveAvgPool2d(1)
        if global_pool == "max":
            return nn.AdaptiveMaxPool2d(1)
        return nn.Identity()

    def _make_classifier(self, num_classes: int) -> nn.Module:
        if num_classes > 0 and self.global_pool_type == "":
            raise UsageError("a classifier needs global pooling: use global_pool='avg' or 'max', or num_classes=0")
        return nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

    # -- the feature API -------------------------------------------------------------------

    def forward_stem(self, x: torch.Tensor) -> torch.Tensor:
        """The stem up to its activation (before the ImageNet max pool)."""
        x = self.conv1(x)
        if hasattr(self, "bn1"):
            x = self.relu(self.bn1(x))
        return x

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The last feature map, before global pooling."""
        x = self.forward_stem(x)
        if hasattr(self, "maxpool"):
            x = self.maxpool(x)
        for name in self.stage_names:
            x = getattr(self, name)(x)
        if hasattr(self, "final_bn"):  # pre-activation: the BN-ReLU after the last unit
            x = self.final_relu(self.final_bn(x))
        return x

    def feature_indices(self, indices: Union[None, int, Sequence[int]] = None) -> list[int]:
        """timm's convention: None is every feature map (0: the stem's activation, k: stage k), an int n the last
        n, a sequence those (negative from the end); sorted, each once."""
        count = len(self.stage_names) + 1
        if indices is None:
            return list(range(count))
        if isinstance(indices, int) and not isinstance(indices, bool):
            if not 1 <= indices <= count:
                raise UsageError(f"indices={indices}: this network has {count} feature maps (the stem and "
                                 f"{count - 1} stages); give 1..{count}, or a list of indices")
            return list(range(count - indices, count))
        indices = list(indices)
        bad = [i for i in indices if isinstance(i, bool) or not isinstance(i, int) or not -count <= i < count]
        if bad or not indices:
            raise UsageError(f"indices {indices}: give feature indices 0..{count - 1} (0: the stem, k: stage k; "
                             f"negative from the end)")
        return sorted({i % count for i in indices})

    def forward_intermediates(self, x: torch.Tensor, indices: Union[None, int, Sequence[int]] = None,
                              norm: bool = False, stop_early: bool = False, output_fmt: str = "NCHW",
                              intermediates_only: bool = False
                              ) -> Union[list[torch.Tensor], tuple[torch.Tensor, list[torch.Tensor]]]:
        """timm's feature API: the feature maps at ``indices`` (:meth:`feature_indices`), and unless
        ``intermediates_only`` the last feature map too (as :meth:`forward_features` gives it). ``norm``: a
        pre-activation network's last stage comes through its final BN-ReLU, as ``features_only`` gives it
        (other maps have no norm of their own). ``stop_early``: the stages after the last index asked for are not
        run (the returned last map is then that stage's)."""
        if output_fmt != "NCHW":
            raise UsageError(f"output_fmt={output_fmt!r}: ResNet feature maps are NCHW")
        take = self.feature_indices(indices)
        stages = self.stage_names[:max(take)] if stop_early or intermediates_only else self.stage_names
        maps = []
        x = self.forward_stem(x)
        if 0 in take:
            maps.append(x)
        if hasattr(self, "maxpool"):
            x = self.maxpool(x)
        for index, name in enumerate(stages, start=1):
            x = getattr(self, name)(x)
            if index == len(self.stage_names) and hasattr(self, "final_bn"):
                final = self.final_relu(self.final_bn(x))
                maps += [final if norm else x] if index in take else []
                x = final
            elif index in take:
                maps.append(x)
        return maps if intermediates_only else (x, maps)

    def prune_intermediate_layers(self, indices: Union[None, int, Sequence[int]] = 1, prune_norm: bool = False,
                                  prune_head: bool = True) -> list[int]:
        """Remove the stages after the last of ``indices`` (their final BN with them), and with ``prune_head`` the
        pooling and classifier (``forward`` then returns the last map); returns the indices, as timm's."""
        take = self.feature_indices(indices)
        last = max(take)
        for name in self.stage_names[last:]:
            delattr(self, name)
        if hasattr(self, "final_bn") and (prune_norm or last < len(self.stage_names)):
            del self.final_bn, self.final_relu
        self.stage_names = self.stage_names[:last]
        self.feature_info = FeatureInfo(self.feature_info[:last + 1])
        self.num_features = self.feature_info[-1]["num_chs"]
        if prune_head:
            self.reset_classifier(0, global_pool="")
        return take

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Global pooling and the classifier; ``pre_logits=True`` stops before the classifier."""
        x = self.avgpool(x)
        if self.global_pool_type:
            x = torch.flatten(x, 1)
        return x if pre_logits else self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        return self.fc

    @property
    def pretrained_cfg(self) -> dict:
        """The model's input and head in timm's keys (``input_size``, ``mean``, ``std``, ``interpolation``,
        ``crop_pct``, ``crop_mode``, ``num_classes``, ``first_conv``, ``classifier``), from ``preprocessing``:
        timm's ``resolve_data_config({}, model=model)`` and ``create_transform`` read it."""
        cfg: dict = {}
        if self.preprocessing is not None:
            pre = self.preprocessing
            cfg.update(input_size=tuple(pre.input_size), mean=tuple(pre.mean), std=tuple(pre.std),
                       interpolation=pre.interpolation, crop_pct=pre.crop_pct, crop_mode="center")
        cfg.update(num_classes=self.num_classes, first_conv="conv1", classifier="fc")
        return cfg

    default_cfg = pretrained_cfg  # timm's earlier name

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        """Replace the head with a freshly initialised one of ``num_classes`` outputs
        (0: none, the model then returns pooled features)."""
        if global_pool is not None:
            check_choice("global_pool", global_pool, GLOBAL_POOLS)
            self.global_pool_type = global_pool
            self.avgpool = self._make_pool(global_pool)
        reference = next(self.parameters())
        self.fc = self._make_classifier(num_classes).to(device=reference.device, dtype=reference.dtype)
        self.num_classes = num_classes
        self.classes = None  # the old head's class names name nothing of the new one


class ResNetFeatures(ResNet):
    """A ResNet that returns the feature maps of chosen stages, for detection and
    segmentation heads. Index 0 is the stem's activation, index k the output of stage k.

    Module names are those of the full network, so a classification checkpoint loads
    into it once its classifier keys are dropped.
    """

    def __init__(self, *args, out_indices: Optional[Sequence[int]] = None, **kwargs):
        kwargs["num_classes"] = 0
        super().__init__(*args, **kwargs)
        count = len(self.feature_info)
        if out_indices is None:
            out_indices = tuple(range(count))
        out_indices = tuple(int(i) for i in out_indices)
        bad = [i for i in out_indices if not -count <= i < count]
        if bad or not out_indices:
            raise UsageError(f"out_indices {out_indices} out of range: this model has feature indices 0..{count - 1}")
        self.out_indices = tuple(sorted({i % count for i in out_indices}))
        last = max(self.out_indices)
        # prune the stages after the last one asked for, and the head
        for name in self.stage_names[last:]:
            delattr(self, name)
        self.stage_names = self.stage_names[:last]
        if self.preact and last < count - 1:
            del self.final_bn, self.final_relu
            self.preact_final = False
        else:
            self.preact_final = self.preact
        del self.avgpool, self.fc
        self.feature_info = FeatureInfo(self.feature_info[i] for i in self.out_indices)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outputs = []
        x = self.forward_stem(x)
        if 0 in self.out_indices:
            outputs.append(x)
        if hasattr(self, "maxpool"):
            x = self.maxpool(x)
        for index, name in enumerate(self.stage_names, start=1):
            x = getattr(self, name)(x)
            if index == len(self.stage_names) and self.preact_final:
                # the last stage's map is the one forward_features would give
                x = self.final_relu(self.final_bn(x))
            if index in self.out_indices:
                outputs.append(x)
        return outputs

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward(x)[-1]

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        raise RuntimeError("a features_only model has no head; create the model without features_only")

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        raise RuntimeError("a features_only model has no classifier")
