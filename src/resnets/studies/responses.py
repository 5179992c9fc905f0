"""Layer responses (paper section 4.2, Figure 7): the standard deviation of each residual
function's output F(x), after its last batch norm and before the addition, for trained
plain and residual networks, by layer index and sorted by magnitude.

The trained weights are those of a degradation study's runs (``OUT/runs/MODEL``), and the
images are the validation images of each run's own split, normalised as it was trained.
The standard deviation is taken over every element of F(x) (images, channels, positions)
with batch norm in evaluation mode, as the network is used after training.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence, Union

import torch

from ..data import build_loaders
from .._options import check_bounds, option, required, same_as
from ..data.pipeline import DataConfig
from ..errors import UsageError
from ..factory import create_model
from ..models import get_model_spec
from ..models.summary import network_depth
from ..train import read_metrics
from ..train.checkpoint import read_config
from ._common import blocks, chance_error
from .degradation import stalled
from .report import fmt, markdown_table, pyplot, save_figure, write_csv, write_json, write_report


@dataclass
class ResponseConfig:
    """Responses of the trained runs of the degradation study in ``runs_from``
    (all of them, or ``models``), on up to ``images`` validation images."""

    out: Path = required("study directory", metavar="DIR")
    runs_from: Path = required("a degradation study directory", flag="--from", metavar="DIR")
    models: Optional[Sequence[str]] = option(help="which of its runs (default: all)")
    images: int = option(1000, low=2, help="validation images to measure on")
    batch_size: int = same_as(DataConfig, "batch_size", 250)
    device: str = option("cpu", help="cpu or cuda")

    def __post_init__(self) -> None:
        check_bounds(self)


@torch.no_grad()
def response_stds(model: torch.nn.Module, batches) -> list[float]:
    """Per block, the std of ``block.residual_function(x)`` over all the images in ``batches``."""
    model.eval()
    named = blocks(model)
    sums = torch.zeros(len(named), dtype=torch.float64)
    squares = torch.zeros(len(named), dtype=torch.float64)
    counts = torch.zeros(len(named), dtype=torch.float64)

    def record(index: int, block, inputs) -> None:
        # F(x) again from the block's own input: the value the shortcut is added to (eq. (1))
        response = block.residual_function(inputs[0]).double()
        sums[index] += response.sum()
        squares[index] += (response * response).sum()
        counts[index] += response.numel()

    handles = [block.register_forward_pre_hook(lambda b, inputs, i=i: record(i, b, inputs))
               for i, (_, block) in enumerate(named)]
    try:
        for images, _ in batches:
            model(images)
    finally:
        for handle in handles:
            handle.remove()
    mean = sums / counts
    variance = (squares / counts - mean * mean).clamp_min(0) * counts / (counts - 1).clamp_min(1)
    return variance.sqrt().tolist()


def _validation_batches(run_dir: Path, model: torch.nn.Module, images: int, batch_size: int, device: str):
    config = read_config(run_dir)
    if config is None:
        raise UsageError(f"{run_dir}: no config.json; not a training run")
    preprocessing = model.preprocessing
    _, val_loader, _ = build_loaders(config["data"], batch_size=batch_size, seed=config["seed"],
                                     split=config.get("split"), augment=False, device=device,
                                     mean=preprocessing.mean, std=preprocessing.std)
    if val_loader is None:
        raise UsageError(f"{run_dir}: the run has no validation split to measure responses on")
    taken, batches = 0, []
    for x, y in val_loader.epoch_batches(0):
        if taken >= images:
            break
        x, y = x[:images - taken], y[:images - taken]
        batches.append((x, y))
        taken += len(y)
    return batches, taken


def run_responses(config: ResponseConfig) -> dict:
    """Measure every trained run, then write ``responses.json``, ``responses.csv``,
    ``responses.png`` and ``README.md`` into ``config.out``."""
    runs = Path(config.runs_from) / "runs"
    available = sorted(p.parent.name for p in runs.glob("*/last.safetensors"))
    if not available:
        raise UsageError(f"--from {config.runs_from}: no trained runs (runs/MODEL/last.safetensors); "
                         f"run `resnets study degradation --out {config.runs_from}` first")
    models = list(config.models) if config.models else available
    missing = [m for m in models if m not in available]
    if missing:
        raise UsageError(f"--models: no trained run of {', '.join(missing)} in {runs} (found: {', '.join(available)})")
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    entries = []
    for name in models:
        run_dir = runs / name
        model = create_model(name, weights=str(run_dir / "last.safetensors")).to(config.device)
        batches, count = _validation_batches(run_dir, model, config.images, config.batch_size, config.device)
        stds = response_stds(model, batches)
        rows = read_metrics(run_dir)
        chance = chance_error(run_dir)
        entries.append(dict(model=name, kind=get_model_spec(name).kind, depth=network_depth(model),
                            trained_steps=rows[-1]["step"] if rows else 0, images=count,
                            train_error=rows[-1]["train_error"] if rows else None, chance_error=chance,
                            trained=bool(rows) and not stalled(dict(steps=[r["step"] for r in rows],
                                                                    train_error=[r["train_error"] for r in rows],
                                                                    chance_error=chance)),
                            layer=list(range(1, len(stds) + 1)), std=stds, std_sorted=sorted(stds, reverse=True)))
    result = dict(study="responses", runs_from=str(config.runs_from), models=entries)
    write_json(out / "responses.json", result)
    write_csv(out / "responses.csv", ["model", "kind", "layer", "std", "rank", "std_sorted"],
              [(e["model"], e["kind"], i, s, i, t) for e in entries
               for i, s, t in zip(e["layer"], e["std"], e["std_sorted"])])
    plot_responses(result, out / "responses.png")
    rows = [(e["model"], e["kind"], e["depth"], e["trained_steps"], e["images"], fmt(sum(e["std"]) / len(e["std"]), 3),
             fmt(max(e["std"]), 3), fmt(min(e["std"]), 3)) for e in entries]
    write_report(out / "README.md", "Layer responses: std of each residual function's output", [
        f"Trained runs from `{config.runs_from}`; responses F(x) after each block's last batch norm and before "
        f"the addition (for plain nets: the same point, where no shortcut is added), batch norm in evaluation "
        f"mode, on the runs' own validation images.",
        "![std of layer responses, by layer and sorted](responses.png)",
        markdown_table(["model", "kind", "depth", "trained iterations", "images", "mean std", "max std", "min std"],
                       rows),
        "The paper (Figure 7) finds ResNets' responses generally smaller than plain nets', and smaller the "
        "deeper the ResNet. Here (mean std over the layers):\n\n" + "\n".join(
            f"- {c}" for c in comparisons(entries)),
        "Numbers: `responses.json` (what the figure plots), `responses.csv`.",
    ])
    return result


def comparisons(entries: Sequence[dict]) -> list[str]:
    """Sentences comparing mean response std, plain against residual at each depth and
    shallow against deep ResNets, computed from the measured numbers."""
    mean = {e["model"]: sum(e["std"]) / len(e["std"]) for e in entries}
    entry = {e["model"]: e for e in entries}
    by_depth: dict[int, dict[str, str]] = {}
    for e in entries:
        by_depth.setdefault(e["depth"], {})[e["kind"]] = e["model"]

    def untrained(*models: str) -> list[str]:
        # a run that ended near chance (or never evaluated) says nothing about trained responses
        return [f"{m} did not train (train error {entry[m]['train_error']:.1f} %, chance "
                f"{entry[m]['chance_error']:.0f} %)" if entry[m].get("train_error") is not None and
                entry[m].get("chance_error") is not None else f"{m} has no evaluation"
                for m in models if not entry[m].get("trained", True)]

    lines = []
    for _depth_key, kinds in sorted(by_depth.items()):
        if "plain" in kinds and "residual" in kinds:
            plain, residual = kinds["plain"], kinds["residual"]
            reasons = untrained(plain, residual)
            if reasons:
                lines.append(f"{residual} and {plain} not compared: {'; '.join(reasons)}")
                continue
            relation = "smaller than" if mean[residual] < mean[plain] else "not smaller than"
            lines.append(f"{residual} {mean[residual]:.3f} is {relation} {plain} {mean[plain]:.3f}")
    residuals = sorted((e for e in entries if e["kind"] == "residual"), key=lambda e: e["depth"])
    if len(residuals) >= 2:
        shallow, deep = residuals[0]["model"], residuals[-1]["model"]
        reasons = untrained(shallow, deep)
        if reasons:
            lines.append(f"{deep} and {shallow} not compared: {'; '.join(reasons)}")
        else:
            relation = "smaller than" if mean[deep] < mean[shallow] else "not smaller than"
            lines.append(f"the deeper {deep} {mean[deep]:.3f} is {relation} {shallow} {mean[shallow]:.3f}")
    return lines or ["no plain/residual pair or two ResNet depths to compare"]


def plot_responses(result: dict, png: Union[str, Path]) -> dict[str, tuple[list[float], list[float]]]:
    """Figure 7's layout from a responses result (the JSON): top, std by layer index; bottom,
    sorted by magnitude. Plain nets dashed, residual nets solid, one colour per depth.
    Returns the plotted lines by label."""
    plt = pyplot()
    figure, (top, bottom) = plt.subplots(2, 1, figsize=(8, 7), dpi=120)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    depths = sorted({e["depth"] for e in result["models"]})
    for e in result["models"]:
        style = dict(color=colors[depths.index(e["depth"]) % len(colors)],
                     linestyle="--" if e["kind"] == "plain" else "-", linewidth=1.3, marker=".", markersize=3)
        top.plot(e["layer"], e["std"], label=e["model"], **style)
        bottom.plot(e["layer"], e["std_sorted"], label=f"{e['model']} sorted", **style)
    top.set_xlabel("layer index (block, from the input)")
    bottom.set_xlabel("layer index (sorted by magnitude)")
    for axis in (top, bottom):
        axis.set_ylabel("std of F(x)")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    top.set_title("standard deviation of each residual function's output (after its last BN)", fontsize=10)
    return save_figure(figure, png)
