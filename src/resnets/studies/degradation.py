"""The degradation study (paper section 4.2, Figure 6): plain and residual nets of several
depths trained under one recipe and budget, training error (thin) and validation error
(bold) against iterations.

Each network is one run of the training engine in ``OUT/runs/MODEL``; a run that already
finished is read back, one that was interrupted resumes from its last checkpoint, so
re-running the same command after a kill continues where it stopped.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence, Union

import torch

from .._options import check_bounds, option, required, same_as
from ..errors import UsageError
from ..factory import create_model
from ..models import ResNet, get_model_spec, list_models
from ..models.summary import network_depth
from ..train import RunDirError, TrainOptions, read_metrics, train
from ..data.pipeline import DataConfig
from ..train.recipe import Recipe
from ..train.checkpoint import last_checkpoint
from ._common import chance_error
from .report import fmt, markdown_table, pyplot, read_json, save_figure, write_csv, write_json, write_report

DEFAULT_MODELS = ("plain20", "plain56", "resnet20", "resnet56")
# the 2015 paper's CIFAR-10 experiment: Table 6's residual depths and Figure 6's plain ones (``--models paper``)
PAPER_MODELS = ("plain20", "plain32", "plain44", "plain56", "resnet20", "resnet32", "resnet44", "resnet56",
                "resnet110")
# Table 6 of He et al. (2015): test error (%) on CIFAR-10's 10,000 test images after 64k iterations (ResNet-110:
# the best of 5 runs; their mean was 6.61 +- 0.16)
PAPER_TEST_ERROR = {"resnet20": 8.75, "resnet32": 7.51, "resnet44": 7.17, "resnet56": 6.97, "resnet110": 6.43}


@dataclass(frozen=True)
class Budget:
    """How long each network trains: iterations of ``batch_size`` images, evaluated
    ``evaluations`` times on ``val_size`` held-out training images."""

    iterations: int
    evaluations: int
    val_size: int
    batch_size: int = 128
    description: str = ""
    # the recipe a study of this budget trains with unless told otherwise
    recipe: str = "paper-cifar-warmup"


BUDGETS = {
    # measured: 25 minutes for the four default nets on a 2-core CPU (3.0, 3.0, 7.5 and 11.4
    # minutes for plain20, resnet20, plain56 and resnet56, the last slowed by other work)
    "quick": Budget(iterations=500, evaluations=10, val_size=2000,
                    description="500 iterations of 128 (1.3 epochs of 48,000 images), schedule compressed "
                                "to the same shape"),
    # four times quick (5.7 epochs), the paper's 45k/5k split: about 90 minutes on a 2-core CPU
    "long": Budget(iterations=2000, evaluations=20, val_size=5000,
                   description="2,000 iterations of 128 (5.7 epochs of 45,000 images), schedule compressed "
                               "to the same shape"),
    # the paper: 64k iterations, lr / 10 at 32k and 48k, 45k/5k split (for a GPU)
    "paper": Budget(iterations=64000, evaluations=64, val_size=5000, recipe="paper-cifar",
                    description="the paper's full schedule: 64k iterations of 128, lr / 10 at 32k and 48k"),
}


@dataclass
class DegradationConfig:
    """One degradation study. ``iterations``, ``evaluations``, ``val_size`` and
    ``batch_size`` override the budget's values."""

    out: Path = required("study directory (re-run the same command to resume)", metavar="DIR")
    # no default: the budgets' validation sizes are made for CIFAR-10's 50,000 images
    data: str = required("data source, e.g. ../shared/datasets/cifar10-jpeg-train.zip or cifar10")
    models: Sequence[str] = option(DEFAULT_MODELS, help=f"models to train (default: {' '.join(DEFAULT_MODELS)}); "
                                                        f"paper: the paper's nine ({' '.join(PAPER_MODELS)})")
    budget: str = option("quick", choices=("quick", "long", "paper"),
                         help="quick: 500 iterations (25 min measured on a 2-core CPU); long: 2,000 iterations "
                              "(about 90 min there); paper: the full 64k-iteration schedule, for a GPU")
    # None: the budget's (paper-cifar-warmup for quick and long: at lr 0.1 from the first step
    # ResNet-56 can diverge and never recover in a short run; paper-cifar for the paper budget)
    recipe: Optional[str] = option(help="default: paper-cifar-warmup for the quick and long budgets, paper-cifar "
                                        "for the paper budget")
    iterations: Optional[int] = same_as(Recipe, "iterations", help="override the budget's iterations")
    evaluations: Optional[int] = same_as(Recipe, "evaluations", help="override the budget's evaluations")
    val_size: Optional[int] = same_as(Recipe, "val_size", help="override the budget's validation images")
    batch_size: Optional[int] = same_as(Recipe, "batch_size", help="override the budget's batch size")
    seed: int = same_as(DataConfig, "seed", 0, help="seed of the initialisations, the split and the data order")
    device: str = option("cpu", help="cpu or cuda")
    progress: Optional[bool] = option(False, help="progress bars")
    log: object = option(cli=False)
    # False: train nothing, draw the runs as they are on disk (a study still running elsewhere)
    fused: bool = option(True, help="train the networks one after the other instead of side by side in one "
                                    "process (each fused run is the run it would be alone; fused, the card of a "
                                    "GPU is kept busy)")
    train: bool = option(True, help="train nothing: draw the runs in --out as they are (e.g. while the study "
                                    "runs elsewhere)")

    def __post_init__(self) -> None:
        check_bounds(self)

    def resolved_budget(self) -> Budget:
        base = BUDGETS[self.budget]
        changes = {k: getattr(self, k) for k in ("iterations", "evaluations", "val_size", "batch_size")
                   if getattr(self, k) is not None}
        return dataclasses.replace(base, **changes) if changes else base


def check_models(models: Sequence[str]) -> list[str]:
    """The names, checked against the registry (the studies need CIFAR/ImageNet ResNet blocks)."""
    known = set(list_models())
    models = list(PAPER_MODELS) if list(models) == ["paper"] else list(models)
    if not models:
        raise UsageError("--models: give at least one model")
    unknown = [m for m in models if m not in known]
    if unknown:
        raise UsageError(f"--models: unknown model(s) {', '.join(unknown)}; see `resnets list`")
    if len(set(models)) != len(models):
        raise UsageError(f"--models: a model is listed twice in {models}")
    for model in models:
        with torch.device("meta"):  # the structure only, no memory
            built = create_model(model)
        if not isinstance(built, ResNet):
            # the studies walk stages and blocks, and count layers as the papers do
            raise UsageError(f"--models: {model} builds a {type(built).__name__}, not a resnets.ResNet; "
                             f"the studies need a network made of ResNet stages and blocks")
    return models


def _is_plain(model: str) -> bool:
    return get_model_spec(model).kind == "plain"


def _run_finished(run_dir: Path, iterations: int) -> bool:
    record = last_checkpoint(run_dir, verify=False) if run_dir.exists() else None
    return record is not None and record["step"] >= iterations


def _train_group(config: DegradationConfig, budget: Budget, recipe: str, out: Path, models: list[str],
                 timing: dict) -> None:
    """Train (or resume) ``models`` in one command: fused where there are several. ``timing`` gains the
    wall-clock seconds, summed over resumptions: each model's own where it trained alone, the group's under
    ``"+".join(models)`` where they trained together."""
    started = time.perf_counter()
    target = out / "runs" / models[0] if len(models) == 1 else out / "runs"
    try:
        train(TrainOptions(
            model=",".join(models), out=target, data=config.data, recipe=recipe,
            resume=any((out / "runs" / m / "config.json").exists() for m in models), device=config.device,
            iterations=budget.iterations, batch_size=budget.batch_size, evaluations=budget.evaluations,
            val_size=budget.val_size, seed=config.seed, keep_snapshots=True, progress=config.progress,
            log=config.log))
    except RunDirError as error:
        if not error.clashes:
            raise
        # the engine's words name its own flags (--resume, a run's --out); a study has others
        which = f"its run of {models[0]}" if len(models) == 1 else f"a run of {', '.join(models)}"
        where = f"runs/{models[0]}" if len(models) == 1 else "runs/MODEL"
        raise RunDirError(f"{out} holds a study begun with other settings; {which} differs in "
                          f"{'; '.join(error.clashes)}; re-run the study with the settings it was begun "
                          f"with ({where}/config.json) or give another --out") from None
    key = "+".join(models)
    timing[key] = timing.get(key, 0.0) + time.perf_counter() - started


def run_degradation(config: DegradationConfig) -> dict:
    """Train (or resume, or read back) every run, then write ``degradation.json``,
    ``degradation.csv``, ``degradation.png`` and ``README.md`` into ``config.out``."""
    models = check_models(config.models)
    budget = config.resolved_budget()
    recipe = config.recipe or budget.recipe
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    timing_path = out / "timing.json"
    timing = read_json(timing_path) if timing_path.exists() else {}

    todo = [m for m in models if config.train and not _run_finished(out / "runs" / m, budget.iterations)]
    # side by side in one process (each run as if alone), or one after the other
    for group in ([todo] if config.fused and len(todo) > 1 else [[m] for m in todo]):
        _train_group(config, budget, recipe, out, group, timing)
        write_json(timing_path, timing)
    runs = []
    for model in models:
        run_dir = out / "runs" / model
        rows = read_metrics(run_dir) if run_dir.exists() else []
        if not rows:
            continue  # only when not training: a run that has not reached its first evaluation
        runs.append(dict(
            model=model, kind="plain" if _is_plain(model) else "residual",
            depth=_depth_of(model), run_dir=str(Path("runs") / model),
            steps=[r["step"] for r in rows], lr=[r["lr"] for r in rows],
            train_error=[r["train_error"] for r in rows], val_error=[r.get("val_error") for r in rows],
            train_loss=[r["train_loss"] for r in rows], images_per_sec=[r.get("images_per_sec") for r in rows],
            train_seconds=timing.get(model), complete=rows[-1]["step"] >= budget.iterations,
            val_n=rows[-1].get("val_n"),
            chance_error=chance_error(run_dir)))
    if not runs:
        raise UsageError(f"--out {out}: no run has reached its first evaluation yet; nothing to draw")

    result = dict(study="degradation", data=config.data, recipe=recipe, budget=config.budget,
                  settings=dataclasses.asdict(dataclasses.replace(budget, recipe=recipe)), seed=config.seed,
                  device=config.device, runs=runs, timing=timing, paper_table=paper_table(runs))
    result["findings"] = findings(result)
    result["shortcut_gains"] = shortcut_gains(result)
    write_json(out / "degradation.json", result)
    write_csv(out / "degradation.csv", ["model", "kind", "depth", "step", "lr", "train_error", "val_error"],
              [(r["model"], r["kind"], r["depth"], s, lr, te, ve)
               for r in runs for s, lr, te, ve in zip(r["steps"], r["lr"], r["train_error"], r["val_error"])])
    plot_degradation(result, out / "degradation.png")
    _write_degradation_report(out, result)
    return result


def paper_table(runs: list[dict]) -> list[dict]:
    """Table 6 of the paper beside ours, for each residual depth trained: the paper's test error and our final
    and best validation error, with the number of validation images and the iterations reached."""
    table = []
    for r in runs:
        if r["model"] not in PAPER_TEST_ERROR or not r["steps"] or r["val_error"][-1] is None:
            continue
        table.append(dict(model=r["model"], depth=r["depth"], paper_test_error=PAPER_TEST_ERROR[r["model"]],
                          val_error=r["val_error"][-1], best_val_error=min(e for e in r["val_error"] if e is not None),
                          val_n=r.get("val_n"), iterations=r["steps"][-1], complete=r["complete"]))
    return table


def stalled(run: dict, margin: float = 2.0) -> bool:
    """Whether a run ended within ``margin`` points of chance: it did not train, and its
    curve says nothing about its depth except that this recipe failed it."""
    chance = run.get("chance_error")
    return bool(run["steps"]) and chance is not None and run["train_error"][-1] >= chance - margin


def _depth_of(model: str) -> int:
    with torch.device("meta"):
        return network_depth(create_model(model))


def _compare(first: dict, second: dict, first_name: str, second_name: str) -> Optional[dict]:
    """Two runs at the latest evaluation both reached (None if they share none): their
    models, that step, whether both finished, their errors and which of them stalled."""
    common = sorted(set(first["steps"]) & set(second["steps"]))
    if not common:
        return None
    step = common[-1]
    i, j = first["steps"].index(step), second["steps"].index(step)
    return {first_name: first["model"], second_name: second["model"], "step": step,
            "complete": first["complete"] and second["complete"],
            f"{first_name}_train_error": first["train_error"][i],
            f"{second_name}_train_error": second["train_error"][j],
            f"{first_name}_val_error": first["val_error"][i], f"{second_name}_val_error": second["val_error"][j],
            "stalled": [r["model"] for r in (first, second) if stalled(r)]}


def findings(result: dict) -> list[dict]:
    """For each kind (plain, residual), the deepest net against the shallowest at the latest
    evaluation both have reached: does the deeper one train worse? Computed from the
    numbers, never assumed; ``complete`` says whether both runs had finished."""
    out = []
    for kind in ("plain", "residual"):
        runs = sorted((r for r in result["runs"] if r["kind"] == kind and r["steps"]), key=lambda r: r["depth"])
        if len(runs) < 2 or runs[0]["depth"] == runs[-1]["depth"]:
            continue
        compared = _compare(runs[0], runs[-1], "shallow", "deep")
        if compared is not None:
            out.append(dict(kind=kind, **compared,
                            deeper_trains_worse=compared["deep_train_error"] > compared["shallow_train_error"]))
    return out


def shortcut_gains(result: dict) -> list[dict]:
    """At each depth trained both ways, the plain net against the residual one at the latest
    evaluation both reached: what the shortcuts change at equal depth and parameters."""
    out = []
    for depth in sorted({r["depth"] for r in result["runs"]}):
        pair = [next((r for r in result["runs"] if r["depth"] == depth and r["kind"] == kind and r["steps"]), None)
                for kind in ("plain", "residual")]
        compared = _compare(*pair, "plain", "residual") if all(pair) else None
        if compared is not None:
            out.append(dict(depth=depth, **compared))
    return out


def plot_degradation(result: dict, png: Union[str, Path]) -> dict[str, tuple[list[float], list[float]]]:
    """Figure 6's layout from a degradation result (the JSON): plain nets left, residual
    nets right, one colour per depth, training error thin and dashed, validation error bold.
    Returns the plotted lines by label."""
    plt = pyplot()
    kinds = [k for k in ("plain", "residual") if any(r["kind"] == k for r in result["runs"])]
    figure, axes = plt.subplots(1, len(kinds), figsize=(6 * len(kinds), 4.5), dpi=120, sharey=True, squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    depths = sorted({r["depth"] for r in result["runs"]})
    for axis, kind in zip(axes[0], kinds):
        for run in sorted((r for r in result["runs"] if r["kind"] == kind), key=lambda r: r["depth"]):
            color = colors[depths.index(run["depth"]) % len(colors)]
            axis.plot(run["steps"], run["train_error"], color=color, linewidth=0.9, linestyle="--",
                      label=f"{run['model']} train")
            val = [(s, e) for s, e in zip(run["steps"], run["val_error"]) if e is not None]
            if val:
                axis.plot([s for s, _ in val], [e for _, e in val], color=color, linewidth=2.2,
                          label=f"{run['model']} val")
        axis.set_title("plain networks" if kind == "plain" else "residual networks (ResNets)")
        axis.set_xlabel("iterations")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    axes[0][0].set_ylabel("error (%)")
    settings = result["settings"]
    figure.suptitle(f"{Path(result['data']).name}, recipe {result['recipe']}, {settings['iterations']} iterations "
                    f"of {settings['batch_size']}\ntraining error (dashed), validation error (bold)",
                    fontsize=9)
    return save_figure(figure, png)


def _paper_table_text(result: dict) -> str:
    rows = [(t["model"], t["depth"], fmt(t["paper_test_error"]), fmt(t["val_error"]), fmt(t["best_val_error"]),
             t["val_n"] or "-", t["iterations"] if t["complete"] else f"{t['iterations']} (in progress)")
            for t in result["paper_table"]]
    return ("Table 6 of the paper beside these runs. The paper's figure is the test error on CIFAR-10's 10,000 "
            "test images after 64k iterations; ours is the error on the images held out of the training set, "
            f"after the {result['budget']} budget's iterations: the two agree only at the paper budget, and then "
            "within the spread of a validation split of that size.\n\n" + markdown_table(
                ["model", "depth", "paper test error (%)", "final val error (%)", "best val error (%)",
                 "val images", "iterations"], rows))


def _fused_timing_text(result: dict) -> str:
    groups = [(key.replace("+", ", "), fmt(seconds / 60)) for key, seconds in result["timing"].items() if "+" in key]
    return ("Networks trained side by side in one process (each as it would be alone); wall-clock minutes of "
            "each group:\n\n" + "\n".join(f"- {names}: {minutes}" for names, minutes in groups))


def _write_degradation_report(out: Path, result: dict) -> None:
    settings = result["settings"]
    rows = []
    for r in result["runs"]:
        minutes = f"{r['train_seconds'] / 60:.1f}" if r.get("train_seconds") else "-"
        done = f"{r['steps'][-1]}" + ("" if r["complete"] else f" of {settings['iterations']} (in progress)")
        rows.append((r["model"], r["kind"], r["depth"], done,
                     fmt(r["train_error"][-1]) if r["steps"] else "-",
                     fmt(r["val_error"][-1]) if r["steps"] else "-",
                     fmt(min(e for e in r["val_error"] if e is not None)) if any(
                         e is not None for e in r["val_error"]) else "-", minutes))
    text = []
    for f in result["findings"]:
        verdict = ("the deeper net trains worse (degradation)" if f["deeper_trains_worse"]
                   else "the deeper net does not train worse")
        if f.get("stalled"):
            verdict = f"no evidence about depth: {' and '.join(f['stalled'])} did not train"
        when = "at the end of both runs" if f["complete"] else "(runs still in progress)"
        text.append(f"- {f['kind']}, iteration {f['step']} {when}: {f['deep']} {fmt(f['deep_train_error'])}% "
                    f"training error against {fmt(f['shallow_train_error'])}% for {f['shallow']}: {verdict}; "
                    f"validation error {fmt(f['deep_val_error'])}% against {fmt(f['shallow_val_error'])}%.")
    gains = []
    for g in result["shortcut_gains"]:
        when = "at the end of both runs" if g["complete"] else "(runs still in progress)"
        gains.append(f"- depth {g['depth']}, iteration {g['step']} {when}: {g['residual']} "
                     f"{fmt(g['residual_train_error'])}% training error against {fmt(g['plain_train_error'])}% for "
                     f"{g['plain']} ({fmt(g['plain_train_error'] - g['residual_train_error'])} points); validation "
                     f"error {fmt(g['residual_val_error'])}% against {fmt(g['plain_val_error'])}%"
                     + (f" ({' and '.join(g['stalled'])} did not train)." if g.get("stalled") else "."))
    failed = []
    for r in result["runs"]:
        if stalled(r):
            failed.append(f"- {r['model']} ended at {fmt(r['train_error'][-1])}% training error, within 2 points "
                          f"of chance ({fmt(r['chance_error'])}%): it did not train under this recipe. Its training "
                          f"loss averaged {fmt(r['train_loss'][0], 3)} over the first {r['steps'][0]} iterations "
                          f"and {fmt(r['train_loss'][-1], 3)} at the end.")
    write_report(out / "README.md", "Degradation: plain vs residual networks", [
        f"Data `{result['data']}`, recipe `{result['recipe']}` ({result['budget']} budget: "
        f"{settings['iterations']} iterations of {settings['batch_size']}, {settings['evaluations']} evaluations on "
        f"{settings['val_size']} held-out training images, learning-rate milestones scaled with the run "
        f"length), seed {result['seed']}, device {result['device']}.",
        "![training and validation error against iterations](degradation.png)",
        "Training error is averaged over the iterations since the previous evaluation (with augmentation); "
        "validation error is measured on the held-out images at each evaluation.",
        markdown_table(["model", "kind", "depth", "iterations", "final train error (%)", "final val error (%)",
                        "best val error (%)", "wall-clock minutes"], rows),
        *([_paper_table_text(result)] if result.get("paper_table") else []),
        *([_fused_timing_text(result)] if any("+" in key for key in result.get("timing", {})) else []),
        "Wall-clock minutes are those of this machine as it was when the runs trained, including any "
        "other work it was running at the time.",
        "Findings (deepest against shallowest of each kind, at the latest evaluation both reached):\n\n" + (
            "\n".join(text) if text else "- no kind has two depths to compare yet."),
        *(["Runs that did not train:\n\n" + "\n".join(failed)] if failed else []),
        "Shortcuts at equal depth (the same layers and parameters, option A shortcuts adding none):\n\n" + (
            "\n".join(gains) if gains else "- no depth was trained both plain and residual yet."),
        "Numbers: `degradation.json` (what the figure plots), `degradation.csv`; runs: `runs/MODEL/`.",
    ])
