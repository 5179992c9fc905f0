"""Gradient flow (paper section 4.1 and Figure 1's motivation): the norm of the gradient at
every layer of plain and residual networks, at initialisation (and, given a degradation
study, for its trained weights), against the layer's depth on a log scale.

Two quantities per network, averaged over a few batches of real images, with batch
normalisation in training mode as during SGD:

- weight gradients: ‖dL/dW‖ of each convolution of the main path and of the classifier;
- activation gradients: ‖dL/dx‖ at the input image, the stem's output and each block's
  output, the signal back-propagation carries down the network. In a residual block the
  shortcut adds the identity to the block's Jacobian (dx_{l+1}/dx_l = 1 + dF/dx_l, from
  y = F(x) + x, eq. (1)), which is what keeps this signal at the classifier's scale.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence, Union

import torch
import torch.nn.functional as F

from .._options import check_bounds, option, required, same_as
from ..data.pipeline import DataConfig
from ..errors import UsageError
from ..factory import create_model
from ..models import get_model_spec, list_models
from ..models.summary import network_depth
from ..train.checkpoint import list_snapshots
from ._common import block_layers, blocks, image_batches, weighted_layers
from .degradation import check_models
from .report import markdown_table, pyplot, save_figure, write_csv, write_json, write_report

DEFAULT_DEPTHS = (20, 56, 110)


@dataclass
class GradientConfig:
    """A gradient-flow study. ``models`` (any registered ResNets) replaces the
    plain/residual pairs built from ``depths``; ``trained_from`` names a degradation study
    directory whose trained runs are measured too."""

    out: Path = required("study directory", metavar="DIR")
    depths: Sequence[int] = option(DEFAULT_DEPTHS, low=1, help="CIFAR depths; plainD and resnetD each (default: "
                                                                f"{' '.join(map(str, DEFAULT_DEPTHS))})")
    models: Optional[Sequence[str]] = option(help="any registered models instead of --depths")
    data: str = option("sample:cifar10", help="images to take the gradients on")
    batch_size: int = same_as(DataConfig, "batch_size", 128)
    batches: int = option(2, low=1, help="batches to average over")
    seed: int = same_as(DataConfig, "seed", 0)
    device: str = option("cpu", help="cpu or cuda")
    trained_from: Optional[Path] = option(help="a degradation study directory: also measure its trained runs",
                                          metavar="DIR")

    def __post_init__(self) -> None:
        check_bounds(self)


def models_for_depths(depths: Sequence[int]) -> list[str]:
    """plainD and resnetD for each depth, where registered (there is no plain1202)."""
    known = set(list_models())
    models = []
    for depth in depths:
        found = [name for name in (f"plain{depth}", f"resnet{depth}") if name in known]
        if not found or get_model_spec(found[-1]).family != "cifar":
            raise UsageError(f"--depths: no CIFAR network of depth {depth}; CIFAR depths are 6n+2 such as "
                             f"20, 32, 44, 56, 110 (1202 for ResNets only)")
        models += found
    return models


def measure(model: torch.nn.Module, batches: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> dict:
    """Mean gradient norms over ``batches``: weights per weighted layer, activations at the
    input, the stem's output and every block's output. Batch norm is in training mode."""
    model.train()
    layers = weighted_layers(model)
    named_blocks = blocks(model)
    weight_norms = torch.zeros(len(layers), dtype=torch.float64)
    activation_norms = torch.zeros(len(named_blocks) + 2, dtype=torch.float64)
    for images, labels in batches:
        captured: list[Optional[torch.Tensor]] = [None] * (len(named_blocks) + 1)

        def keep(index: int, tensor: torch.Tensor, captured: list = captured) -> None:
            tensor.retain_grad()
            captured[index] = tensor

        # the stem's output is the first block's input; then every block's output
        handles = [named_blocks[0][1].register_forward_pre_hook(lambda _m, inputs: keep(0, inputs[0]))]
        handles += [block.register_forward_hook(lambda _m, _i, output, index=i + 1: keep(index, output))
                    for i, (_, block) in enumerate(named_blocks)]
        images = images.detach().clone().requires_grad_(True)
        model.zero_grad(set_to_none=True)
        try:
            loss = F.cross_entropy(model(images), labels)
            loss.backward()
        finally:
            for handle in handles:
                handle.remove()
        for i, (_, layer) in enumerate(layers):
            weight_norms[i] += layer.weight.grad.double().norm()
        activation_norms[0] += images.grad.double().norm()
        for i, tensor in enumerate(captured):
            activation_norms[i + 1] += tensor.grad.double().norm()
    model.zero_grad(set_to_none=True)
    n = len(batches)
    # each measurement's position in weighted layers from the input: the stem is layer 1,
    # a block's output sits after its last convolution
    ends, total = [], 1
    for _, block in named_blocks:
        total += block_layers(block)
        ends.append(total)
    return dict(
        weight_layers=[name for name, _ in layers], weight_depth=list(range(1, len(layers) + 1)),
        weight_grad_norm=(weight_norms / n).tolist(),
        activation_points=["input", "stem", *[name for name, _ in named_blocks]],
        activation_depth=[0, 1, *ends],
        activation_grad_norm=(activation_norms / n).tolist())


def _entry(name: str, model: torch.nn.Module, batches, when: str) -> dict:
    result = measure(model, batches)
    grads = result["activation_grad_norm"]
    weights = result["weight_grad_norm"]
    return dict(model=name, kind=get_model_spec(name).kind, depth=network_depth(model), when=when, **result,
                # how the signal changes from the top of the network to the bottom
                input_over_last_block=grads[0] / grads[-1], first_conv_over_classifier=weights[0] / weights[-1])


def run_gradients(config: GradientConfig) -> dict:
    """Measure every model at initialisation (and trained, where asked), then write
    ``gradients.json``, ``gradients.csv``, ``gradients-init.png`` (and
    ``gradients-trained.png``) and ``README.md`` into ``config.out``."""
    models = check_models(config.models) if config.models else models_for_depths(config.depths)
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    batches, num_classes = image_batches(config.data, config.batch_size, config.batches, config.seed,
                                         config.device)
    entries = []
    for name in models:
        torch.manual_seed(config.seed)  # the same initialisation as a training run with this seed
        model = create_model(name, num_classes=num_classes).to(config.device)
        entries.append(_entry(name, model, batches, "init"))
    if config.trained_from is not None:
        runs = Path(config.trained_from) / "runs"
        found = sorted(p.parent.name for p in runs.glob("*/last.safetensors"))
        if not found:
            raise UsageError(f"--trained-from {config.trained_from}: no runs/MODEL/last.safetensors there")
        for name in found:
            model = create_model(name, weights=str(runs / name / "last.safetensors")).to(config.device)
            entries.append(_entry(name, model, batches, "trained"))
            # during training: the weights the run kept at each evaluation (degradation studies keep them)
            for step, path in list_snapshots(runs / name):
                model = create_model(name, weights=str(path)).to(config.device)
                entries.append({**_entry(name, model, batches, "training"), "step": step})

    result = dict(study="gradients", data=config.data, batch_size=config.batch_size, batches=config.batches,
                  seed=config.seed, models=entries)
    write_json(out / "gradients.json", result)
    write_csv(out / "gradients.csv", ["model", "when", "quantity", "position", "depth", "grad_norm"],
              [(e["model"], when_label(e), q, p, d, v) for e in entries for q, names, depths, values in (
                  ("weight", e["weight_layers"], e["weight_depth"], e["weight_grad_norm"]),
                  ("activation", e["activation_points"], e["activation_depth"], e["activation_grad_norm"]))
               for p, d, v in zip(names, depths, values)])
    plot_gradients(result, out / "gradients-init.png", when="init")
    if any(e["when"] == "trained" for e in entries):
        plot_gradients(result, out / "gradients-trained.png", when="trained")
    if any(e["when"] == "training" for e in entries):
        plot_gradients_during_training(result, out / "gradients-training.png")
    _write_gradients_report(out, result)
    return result


def plot_gradients(result: dict, png: Union[str, Path], when: str = "init",
                   ) -> dict[str, tuple[list[float], list[float]]]:
    """Rows: weight gradients, activation gradients; columns: plain, residual; log scale,
    one colour per depth. Draws the entries of ``result`` (the JSON) measured ``when``;
    returns the plotted lines by label."""
    plt = pyplot()
    entries = [e for e in result["models"] if e["when"] == when]
    if not entries:
        raise UsageError(f"no gradient measurements {when!r} to plot")
    kinds = [k for k in ("plain", "residual") if any(e["kind"] == k for e in entries)]
    figure, axes = plt.subplots(2, len(kinds), figsize=(6 * len(kinds), 8), dpi=120, sharey="row", squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    depths = sorted({e["depth"] for e in entries})
    for column, kind in enumerate(kinds):
        for e in sorted((e for e in entries if e["kind"] == kind), key=lambda e: e["depth"]):
            color = colors[depths.index(e["depth"]) % len(colors)]
            axes[0][column].plot(e["weight_depth"], e["weight_grad_norm"], color=color, marker=".", markersize=3,
                                 linewidth=1.2, label=f"{e['model']} weights")
            axes[1][column].plot(e["activation_depth"], e["activation_grad_norm"], color=color, marker=".",
                                 markersize=3, linewidth=1.2, label=f"{e['model']} activations")
        title = "plain networks" if kind == "plain" else "residual networks"
        axes[0][column].set_title(f"{title}: ‖dL/dW‖ per layer")
        axes[1][column].set_title(f"{title}: ‖dL/dx‖ at input, stem, block outputs")
        for row in (0, 1):
            axes[row][column].set_yscale("log")
            axes[row][column].set_xlabel("layer (from the input)")
            axes[row][column].grid(alpha=0.3, which="both")
            axes[row][column].legend(fontsize=8)
    axes[0][0].set_ylabel("gradient norm")
    axes[1][0].set_ylabel("gradient norm")
    figure.suptitle(f"gradient norms {'at initialisation' if when == 'init' else 'after training'}, "
                    f"{result['data']}, batch {result['batch_size']}, mean of {result['batches']} batches, "
                    f"BN in training mode", fontsize=9)
    return save_figure(figure, png)


def when_label(entry: dict) -> str:
    """"init", "trained" or "step N" (a snapshot kept during training)."""
    return f"step {entry['step']}" if entry["when"] == "training" else entry["when"]


def training_curves(result: dict) -> dict[str, dict[str, list]]:
    """For each model measured during training: the steps and, at each, the two ratios of
    the report (input / last block activation gradients, first conv / classifier weight
    gradients), in step order."""
    curves: dict[str, dict[str, list]] = {}
    for e in sorted((e for e in result["models"] if e["when"] == "training"), key=lambda e: e["step"]):
        curve = curves.setdefault(e["model"], dict(kind=e["kind"], depth=e["depth"], steps=[], input_over_last_block=[],
                                                   first_conv_over_classifier=[]))
        curve["steps"].append(e["step"])
        curve["input_over_last_block"].append(e["input_over_last_block"])
        curve["first_conv_over_classifier"].append(e["first_conv_over_classifier"])
    return curves


def plot_gradients_during_training(result: dict, png: Union[str, Path]) -> dict[str, tuple[list[float], list[float]]]:
    """How the gradient's growth or decay through the network changes as the nets train: the
    two ratios against the iteration of each kept snapshot, log scale, one colour per depth,
    plain dashed and residual solid. Returns the plotted lines by label."""
    plt = pyplot()
    curves = training_curves(result)
    if not curves:
        raise UsageError("no gradient measurements during training to plot")
    figure, axes = plt.subplots(1, 2, figsize=(12, 4.5), dpi=120)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    depths = sorted({c["depth"] for c in curves.values()})
    for name, curve in sorted(curves.items(), key=lambda item: (item[1]["kind"], item[1]["depth"])):
        style = dict(color=colors[depths.index(curve["depth"]) % len(colors)], marker=".",
                     linestyle="--" if curve["kind"] == "plain" else "-", linewidth=1.5)
        axes[0].plot(curve["steps"], curve["input_over_last_block"], label=f"{name} activations", **style)
        axes[1].plot(curve["steps"], curve["first_conv_over_classifier"], label=f"{name} weights", **style)
    axes[0].set_title("‖dL/dx‖ at the input / at the last block's output")
    axes[1].set_title("‖dL/dW‖ of the first convolution / of the classifier")
    for axis in axes:
        axis.set_yscale("log")
        axis.axhline(1.0, color="black", linewidth=0.6)
        axis.set_xlabel("iteration of the degradation study's runs")
        axis.grid(alpha=0.3, which="both")
        axis.legend(fontsize=8)
    axes[0].set_ylabel("ratio (1: no growth or decay)")
    figure.suptitle(f"gradient growth through the network during training, {result['data']}, batch "
                    f"{result['batch_size']}, mean of {result['batches']} batches, BN in training mode", fontsize=9)
    return save_figure(figure, png)


def _write_gradients_report(out: Path, result: dict) -> None:
    rows = [(e["model"], when_label(e), e["depth"], f"{e['activation_grad_norm'][-1]:.3g}",
             f"{e['activation_grad_norm'][0]:.3g}", f"{e['input_over_last_block']:.3g}",
             f"{e['weight_grad_norm'][-1]:.3g}", f"{e['weight_grad_norm'][0]:.3g}",
             f"{e['first_conv_over_classifier']:.3g}") for e in result["models"]]
    figures = ["![gradient norms at initialisation](gradients-init.png)"]
    if (out / "gradients-trained.png").exists() and any(e["when"] == "trained" for e in result["models"]):
        figures.append("![gradient norms after training](gradients-trained.png)")
    if (out / "gradients-training.png").exists() and any(e["when"] == "training" for e in result["models"]):
        figures.append("![gradient growth during training](gradients-training.png)")
    write_report(out / "README.md", "Gradient flow: plain vs residual networks", [
        f"Data `{result['data']}`, {result['batches']} batch(es) of {result['batch_size']} images, batch "
        f"normalisation in training mode (as during SGD), cross-entropy loss, seed {result['seed']}.",
        *figures,
        markdown_table(["model", "weights", "depth", "‖dL/dx‖ last block", "‖dL/dx‖ input", "input / last block",
                        "‖dL/dW‖ classifier", "‖dL/dW‖ first conv", "first conv / classifier"], rows),
        "A ratio far above 1 means the gradient grows on its way down (explodes), far below 1 that it "
        "vanishes; the figure shows where along the depth it happens. Here, from the last block to the "
        "input:\n\n" + "\n".join(
            f"- {e['model']} ({when_label(e)}): {'grows' if e['input_over_last_block'] > 1 else 'shrinks'} by a factor "
            f"of {max(e['input_over_last_block'], 1 / e['input_over_last_block']):.3g}"
            for e in result["models"] if e["when"] != "training"),
        "Numbers: `gradients.json` (what the figures plot), `gradients.csv`.",
    ])
