"""The architecture table of the paper's Table 1, measured from the model itself.

Output sizes come from running the model on an input of the requested size, and
multiply-adds from ``torch.utils.flop_counter.FlopCounterMode`` (its FLOP count halved),
all on the ``meta`` device so that even ResNet-1202 costs no real compute.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from typing import Optional, Sequence

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from .._options import option, required
from .blocks import SHORTCUT_OPTIONS
from .preprocessing import MAX_INPUT_SIDE
from .registry import build_model, get_model_spec
from .resnet import VARIANTS, ResNet

FAMILIES = ("imagenet", "cifar")


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_macs(model: nn.Module, input_size: tuple[int, int, int], batch_size: int = 1) -> int:
    """Multiply-adds of one forward pass, counted by running the model (FLOPs / 2)."""
    device = next(model.parameters()).device
    x = torch.zeros(batch_size, *input_size, device=device)
    was_training = model.training
    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x)
    model.train(was_training)
    return int(counter.get_total_flops()) // 2 // batch_size


def _conv_text(conv: nn.Conv2d) -> str:
    k = conv.kernel_size
    text = f"{k[0]}x{k[1]}, {conv.out_channels}"
    if conv.groups > 1:
        text += f", groups {conv.groups}"
    if conv.dilation[0] > 1:
        text += f", dilation {conv.dilation[0]}"
    return text


def _branch_convs(block: nn.Module) -> list[nn.Conv2d]:
    return [getattr(block, name) for name in ("conv1", "conv2", "conv3") if hasattr(block, name)]


def summarize(name: str, input_size: Optional[int] = None, **kwargs) -> dict:
    """Table 1 for a registered model: stem and stage output sizes, block layouts,
    parameters and multiply-adds at ``input_size`` (default: the model's own)."""
    spec = get_model_spec(name)
    with torch.device("meta"):
        model = build_model(name, **kwargs)
    if not isinstance(model, ResNet):
        raise TypeError(f"{name} is not a ResNet")
    size = input_size or model.preprocessing.input_size[-1]
    in_chans = model.preprocessing.input_size[0]

    shapes: dict[str, tuple[int, ...]] = {}
    hooks = [getattr(model, n).register_forward_hook(
        lambda _m, _i, out, n=n: shapes.__setitem__(n, tuple(out.shape))) for n in ["conv1", *model.stage_names]]
    macs = count_macs(model, (in_chans, size, size))
    for hook in hooks:
        hook.remove()

    stages = [dict(name="conv1", module="conv1", output_size=list(shapes["conv1"][2:]),
                   channels=shapes["conv1"][1], blocks=0,
                   layers=[_conv_text(model.conv1) + f", stride {model.conv1.stride[0]}"])]
    for index, stage_name in enumerate(model.stage_names):
        stage = getattr(model, stage_name)
        out = shapes[stage_name]
        # the paper's Table 1 lists the stem's max pool at the top of conv2_x
        pool = "3x3 max pool, stride 2" if index == 0 and hasattr(model, "maxpool") else None
        stages.append(dict(name=f"conv{index + 2}_x", module=stage_name, output_size=list(out[2:]),
                           channels=out[1], blocks=len(stage), pool=pool,
                           layers=[_conv_text(c) for c in _branch_convs(stage[0])]))
    # v1 / v1.5 says where a bottleneck strides; basic-block nets have no such choice
    bottleneck = any(len(_branch_convs(getattr(model, n)[0])) == 3 for n in model.stage_names if len(getattr(model, n)))
    description = spec.description
    registered = re.search(r"option ([A-Z]) shortcuts", description)
    if registered and model.shortcut and registered.group(1) != model.shortcut:
        # the registration describes its default; this network was built with another shortcut
        description = description.replace(registered.group(0), f"option {model.shortcut} shortcuts (registered "
                                                                f"with option {registered.group(1)})")
    return dict(
        name=name, family=spec.family, kind=spec.kind, description=description,
        input_size=[in_chans, size, size], params=count_parameters(model), macs=macs,
        shortcut=model.shortcut, variant=model.variant if bottleneck else None, preact=model.preact,
        depth=network_depth(model), num_classes=model.num_classes, global_pool=model.global_pool_type, stages=stages,
        preprocessing=model.preprocessing.to_dict(),
    )


def network_depth(model: ResNet) -> int:
    """Weighted layers as the papers count them: convolutions on the main path plus the classifier."""
    convs = 1 + sum(len(_branch_convs(block)) for n in model.stage_names for block in getattr(model, n))
    return convs + (1 if isinstance(model.fc, nn.Linear) else 0)


def format_table(summary: dict) -> str:
    """Render a summary as a Markdown table in the layout of the paper's Table 1."""
    lines = [f"{summary['name']}: {summary['description']}", "",
             "| layer | output size | blocks |", "| --- | --- | --- |"]
    for stage in summary["stages"]:
        size = "x".join(str(s) for s in stage["output_size"])
        if stage["blocks"]:
            layout = "[" + "; ".join(stage["layers"]) + f"] x {stage['blocks']}"
            if stage.get("pool"):
                layout = f"{stage['pool']}; {layout}"
        else:
            layout = "; ".join(stage["layers"])
        lines.append(f"| {stage['name']} | {size} | {layout} |")
    pool = {"avg": "global average pool", "max": "global max pool", "": "no pooling"}[summary["global_pool"]]
    head = f"{pool}, {summary['num_classes']}-d fc" if summary["num_classes"] else pool
    lines.append(f"| head | {'1x1' if summary['global_pool'] else '-'} | {head} |")
    variant = f", variant {summary['variant']}" if summary["variant"] else ""
    lines += ["", f"depth {summary['depth']}, shortcut {summary['shortcut']}{variant}"
                  f"{', pre-activation' if summary['preact'] else ''}",
              f"parameters {summary['params']:,}",
              f"multiply-adds {_human(summary['macs'])} at {'x'.join(map(str, summary['input_size']))}"]
    return "\n".join(lines)


def _human(n: int) -> str:
    if n >= 1e9:
        return f"{n / 1e9:.3f} G"
    return f"{n / 1e6:.2f} M"


@dataclass(kw_only=True)
class ListOptions:
    """What ``resnets list`` takes."""

    filter: Sequence[str] = option(list, help="glob patterns, e.g. 'resnet*' (with --weights also '*.tv2_in1k')",
                                   positional=True, nargs="*")
    family: Optional[str] = option(choices=FAMILIES, help="only the models of this family")
    weights: bool = option(False, help="list the named weights (MODEL.TAG, for --weights of every command) with "
                                       "their accuracy")
    json: bool = option(False, help="print JSON")


@dataclass(kw_only=True)
class InfoOptions:
    """What ``resnets info`` takes: a model, and the options of its layout that change the table."""

    model: str = required(help="model name (resnets list), or MODEL.TAG, a checkpoint of ours or a run directory: "
                               "the model in the layout of those weights", positional=True)
    input_size: Optional[int] = option(help="square input side (default: the model's own)", low=1,
                                       high=MAX_INPUT_SIDE)
    shortcut: Optional[str] = option(choices=SHORTCUT_OPTIONS, help="shortcut option A, B or C")
    variant: Optional[str] = option(choices=VARIANTS, help="v1 or v1.5 (ImageNet bottleneck networks)")
    num_classes: Optional[int] = option(help="classifier width", low=0)
    json: bool = option(False, help="print one JSON object")
