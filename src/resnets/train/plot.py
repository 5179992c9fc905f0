"""Training curves in the layout of the paper's figures: error against iterations, training
error thin and dashed, validation error bold."""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence, Union

from .checkpoint import RunDirError, read_config, read_metrics


def plot_runs(run_dirs: Sequence[Union[str, Path]], out: Union[str, Path], *, title: Optional[str] = None,
              labels: Optional[Sequence[str]] = None) -> Path:
    """Draw one or more runs' ``metrics.jsonl`` into a PNG; returns its path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 4.5), dpi=120)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for index, run_dir in enumerate(run_dirs):
        run_dir = Path(run_dir)
        rows = read_metrics(run_dir)
        if not rows:
            raise RunDirError(f"{run_dir}: no metrics.jsonl lines to plot")
        config = read_config(run_dir) or {}
        label = labels[index] if labels else config.get("model", run_dir.name)
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
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out)
    plt.close(figure)
    return out
