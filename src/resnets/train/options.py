"""What a training run takes, said once: the ``resnets train`` flags are built from these fields
(their metadata: ``resnets._options``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

from torch import nn

from ..data.pipeline import PIPELINES, DataConfig
from .._options import MAX_SEED, check_bounds, option, option_fields, required, same_as
from ..errors import UsageError
from ..weights.named import split_weights_name, take_weights_name, weights_tag
from .hooks import TrainHook
from .._precision import AMP_CHOICES, AutocastOption
from .config import Distillation
from .recipe import Recipe, list_recipes
from .warmstart import WarmStart

COMPILE_MODES = ("default", "reduce-overhead", "max-autotune")


@dataclass
class TrainOptions:
    """Everything ``resnets train`` takes. Options left as None come from the recorded run
    when resuming, else from the recipe and the defaults."""

    model: str = required(help="model name (resnets list)", positional=True)
    out: Path = required(help="run directory (default: runs/MODEL-TIMESTAMP)", cli_default="runs/{model}-{time}")
    data: Optional[str] = option(help="data source (default: a small CIFAR-10 sample shipped with the package)")
    recipe: Optional[str] = option(help=f"a shipped recipe ({', '.join(list_recipes())}; default paper-cifar) "
                                        f"or a TOML file of your own")
    resume: bool = option(False, help="continue the run in --out from its last checkpoint")
    device: str = option("cpu", help="cpu or cuda")
    iterations: Optional[int] = same_as(Recipe, "iterations", group="length")
    epochs: Optional[float] = same_as(Recipe, "epochs", group="length")
    batch_size: Optional[int] = same_as(Recipe, "batch_size")
    lr: Optional[float] = same_as(Recipe, "lr")
    seed: Optional[int] = same_as(DataConfig, "seed", help="seed of the initialisation, the split and the data order "
                                                           "(default 0)")
    # several trainings in one process (resnets.train.fused): one member per seed, and per model where ``model``
    # names several (resnet20,resnet32)
    seeds: Optional[str] = option(help="train one member per seed, side by side in one process (e.g. 0,1,2,3,4): "
                                       "each in OUT/MODEL-seedS, as if trained alone", metavar="S,S,...")
    evaluations: Optional[int] = same_as(Recipe, "evaluations")
    val_size: Optional[int] = same_as(Recipe, "val_size")
    amp: str = same_as(AutocastOption, "amp", "auto")
    channels_last: Optional[bool] = option(help="channels-last memory format (default: where faster: on CUDA and "
                                                "on CPUs)")
    compile: bool = option(False, help="torch.compile the model")
    compile_mode: Optional[str] = option(help="torch.compile mode (implies --compile); reduce-overhead replays "
                                              "CUDA graphs", choices=COMPILE_MODES)
    pipeline: str = same_as(DataConfig, "pipeline", "auto")
    deterministic: bool = option(False, help="deterministic algorithms (bitwise resume)")
    micro_batches: Optional[int] = option(help="split each batch into N parts with averaged gradients", low=1)
    sync_bn: bool = option(False, help="SyncBatchNorm across processes")
    model_kwargs: dict = option(dict, help="model option, e.g. shortcut=B or zero_init_residual=true (repeatable)",
                                flag="--model-arg")
    num_workers: Optional[int] = same_as(DataConfig, "num_workers")
    cache_dir: Optional[str] = option(help="cache for decoded datasets (default ~/.cache/resnets)")
    # a warm start (timm's --initial-checkpoint): every weight from a trained network, the classifier too where
    # its classes are the data's; the recipe then runs from its first step (e.g. SWA from trained weights)
    init_weights: Optional[str] = option(help="start from these weights instead of fresh ones: named (cifar10), a "
                                              "file, a URL or hf-hub:ORG/NAME; the classifier is kept where its "
                                              "classes are the data's (to adapt weights to new classes: resnets "
                                              "finetune)")
    # knowledge distillation: a trained teacher's softened predictions as a second target
    teacher: Optional[str] = option(help="distil from this trained model (e.g. resnet56), its weights from "
                                         "--teacher-weights")
    teacher_weights: Optional[str] = option(help="the teacher's weights: named (cifar10), a file, a URL or hf-hub: "
                                                 "(default: its default named weights)")
    distill_alpha: Optional[float] = same_as(Distillation, "alpha")
    distill_temperature: Optional[float] = same_as(Distillation, "temperature")
    tensorboard: bool = option(False, help="also write TensorBoard logs")
    # the weights of every evaluation in RUN_DIR/snapshots/step-N.safetensors (a hard link to the
    # checkpoint's weights, so no extra write), for studies of how a network changes as it trains
    keep_snapshots: bool = option(False, help="keep the weights of every evaluation (and of step 0) in "
                                               "RUN_DIR/snapshots/")
    progress: Optional[bool] = option(help="progress bar (default: on a terminal, outside CI)")
    log: Any = option(cli=False)  # where progress lines go (default: stderr)
    # a variation of training (fine-tuning is one): recorded in config.json, must match on resume
    hook: Optional[TrainHook] = option(cli=False)
    on_step: Optional[Callable[[int, nn.Module], None]] = option(cli=False)  # after each optimiser step

    def __post_init__(self) -> None:
        # wrong values are refused here, before anything is read or written
        self.out = Path(self.out)
        self.seeds = _seed_list(self.seeds)
        if self.seeds is not None and self.seed is not None:
            raise UsageError("give --seed or --seeds, not both")
        if self.iterations is not None and self.epochs is not None:
            raise UsageError("give --iterations or --epochs, not both")
        check_bounds(self)
        why = {"num_classes": "set by the training itself, from the data's classes",
               "features_only": "a backbone without a classifier cannot be trained on labels; train the "
                                "classifier network and build the backbone from its weights afterwards",
               "out_indices": "a backbone option (features_only); training trains the whole classifier network"}
        taken = sorted(why.keys() & set(self.model_kwargs or {}))
        if taken:
            raise UsageError(f"--model-arg {taken[0]}: {why[taken[0]]}")
        if not self.fused:  # a fused run's members are checked as each is built (resnets.train.fused)
            self._take_weights_name()
        if self.teacher is not None:  # a teacher named with its weights (resnet56.cifar10)
            self.teacher, self.teacher_weights = take_weights_name(self.teacher, self.teacher_weights)
        if self.teacher is None and any(v is not None for v in (self.teacher_weights, self.distill_alpha,
                                                                 self.distill_temperature)):
            raise UsageError("--teacher-weights, --distill-alpha and --distill-temperature need --teacher MODEL")
        if self.init_weights is not None and not isinstance(self.hook, WarmStart):  # once (replace() re-runs this)
            if self.hook is not None:
                raise UsageError("init_weights is a warm start of its own; it does not combine with another "
                                 "training hook (fine-tuning takes --weights)")
            # named weights by tag, so that a resume with `cifar10` or `resnet56.cifar10` is the same run
            self.hook = WarmStart(str(weights_tag(self.model, self.init_weights)))

    @property
    def fused(self) -> bool:
        """Whether these options train several members (seeds or models) in one process."""
        return self.seeds is not None or "," in self.model

    def _take_weights_name(self) -> None:
        """A model named with weights (``resnet56.cifar10``): training starts from fresh parameters, so it is
        refused, saying how to train that layout or to start from those weights."""
        model, tagged = split_weights_name(self.model)
        if tagged is None:
            return
        layout = "".join(f" --model-arg {k}={v}" for k, v in tagged.options.items())
        raise UsageError(f"{self.model} names trained weights, and training starts from fresh ones: give the model "
                         f"as {model}{layout}; to start from {tagged.name}, fine-tune: resnets finetune {model} "
                         f"--weights {tagged.tag}")


def _seed_list(seeds) -> Optional[tuple]:
    """``"0,1,2"`` (or a sequence of integers) as a tuple of seeds, each in the seeds' bounds."""
    if seeds is None:
        return None
    items = seeds.split(",") if isinstance(seeds, str) else list(seeds)
    try:
        values = tuple(int(item) for item in items if not isinstance(item, bool))
    except (TypeError, ValueError):
        raise UsageError(f"seeds must be integers separated by commas (e.g. 0,1,2), got {seeds!r}") from None
    if len(values) != len(items) or not values or any(not 0 <= v <= MAX_SEED for v in values):
        raise UsageError(f"seeds must be integers from 0 to {MAX_SEED} separated by commas (e.g. 0,1,2), "
                         f"got {seeds!r}")
    return values


__all__ = ["AMP_CHOICES", "COMPILE_MODES", "PIPELINES", "TrainOptions", "option", "option_fields", "required"]
