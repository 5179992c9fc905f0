"""Training curves in the layout of the paper's figures: error against iterations, training
error thin and dashed, validation error bold."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence, Union

from .._io import check_png_path, save_png
from .._options import option, required
from .checkpoint import RunDirError, read_config, read_metrics


def run_labels(run_dirs: Sequence[Union[str, Path]]) -> list[str]:
    """A legend label per run: its model, and where two runs share a model, the run directory's name too
    (``resnet20 (r20-lr0.1)``), so that no two curves carry one label."""
    models = [(read_config(Path(r)) or {}).get("model") or Path(r).name for r in run_dirs]
    labels = [m if models.count(m) == 1 else f"{m} ({Path(r).name})" for m, r in zip(models, run_dirs)]
    # still alike (same model and directory name under different parents): the path relative to their common part
    if len(set(labels)) < len(labels):
        labels = [f"{m} ({r})" for m, r in zip(models, run_dirs)]
    return labels


@dataclass(kw_only=True)
class PlotOptions:
    """What ``resnets plot`` takes."""

    runs: Sequence[str] = required(help="run directories", positional=True, nargs="+")
    out: Optional[str] = option(help="PNG path (default: RUN_DIR/curves.png)")
    title: Optional[str] = option(help="the figure's title")


def plot_runs(run_dirs: Sequence[Union[str, Path]], out: Union[str, Path], *, title: Optional[str] = None,
              labels: Optional[Sequence[str]] = None) -> Path:
    """Draw one or more runs' ``metrics.jsonl`` into a PNG; returns its path."""
    out = check_png_path(out, "--out")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 4.5), dpi=120)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    labels = list(labels) if labels else run_labels(run_dirs)
    for index, run_dir in enumerate(run_dirs):
        run_dir = Path(run_dir)
        if not (run_dir / "metrics.jsonl").is_file():
            if (run_dir / "config.json").is_file():  # a run, started: its curves begin at its first evaluation
                raise RunDirError(f"{run_dir}: the run has not been evaluated yet (metrics.jsonl is written at its "
                                  f"first evaluation); plot it once it has, or train with more --evaluations")
            raise RunDirError(f"{run_dir}: no metrics.jsonl here; give the directory of a training run (--out of "
                              f"resnets train)")
        rows = read_metrics(run_dir)
        if not rows:
            raise RunDirError(f"{run_dir}: no metrics.jsonl lines to plot (the run has not been evaluated yet)")
        label = labels[index]
        color = colors[index % len(colors)]
        steps = [r["step"] for r in rows]
        axis.plot(steps, [r["train_error"] for r in rows], color=color, linewidth=0.9, linestyle="--",
                  label=f"{label} train")
        if any("val_error" in r for r in rows):
            val = [(r["step"], r["val_error"]) for r in rows if "val_error" in r]
            axis.plot([s for s, _ in val], [e for _, e in val], color=color, linewidth=2.2, label=f"{label} val")
    axis.set_xlabel("iterations")
    axis.set_ylabel("error (%)")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    axis.set_title(title or ", ".join(Path(r).name for r in run_dirs))
    figure.tight_layout()
    save_png(figure, out)
    plt.close(figure)
    return out
