"""The training engine in two parts, each read top to bottom: :func:`setup` (the configuration, data, model,
optimiser and resumed state: a :class:`Run`) and :func:`run_loop` (the steps, evaluations and checkpoints).

``train(TrainOptions(...))`` sets up the run, resuming from the run directory's last checkpoint where asked,
and runs SGD steps (:func:`train_step`); every ``length /
evaluations`` steps it evaluates on the validation split, appends a line to
``metrics.jsonl`` and writes a checkpoint. The same code runs in one process or in N under
``torchrun`` (DistributedDataParallel; NCCL on GPUs, gloo on CPU); only rank 0 writes.
Variations (fine-tuning) plug in through a :class:`~resnets.train.hooks.TrainHook`.

Exact resume: the learning rate is a function of the step, the data order and augmentation
of a batch are functions of (seed, epoch, batch index), mixup draws are functions of
(seed, step), and the optimiser, the averaged weights (EMA or SWA) and the metric accumulators are
saved with the weights.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import math
import os
import signal
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .._device import quiet_cuda_home_notice
from ..data import build_loaders
from ..errors import ResnetsError, UsageError
from ..results import Result
from ..factory import create_model
from ..models import get_model_spec
from ..models.summary import network_depth
from .averaging import WeightAverage
from .checkpoint import (append_metrics, append_session, clean_run_dir, keep_snapshot, last_checkpoint,
                         load_checkpoint_state, read_metrics, save_best, save_checkpoint, save_initial_snapshot,
                         save_last, truncate_metrics, write_config)
from .distributed import Distributed
from ..scoring import evaluate
from .hooks import TrainHook, under_prefix
from .config import RunConfig
from .distill import class_notice, distillation_loss, load_teacher, split_notice
from .options import TrainOptions
from .._precision import autocast_context, warn_if_emulated
from .progress import Meter, Progress, format_duration
from .recipe import Recipe, learning_rate, swa_start_step
from .rundir import resolve_run, run_lock, weights_digests
from .warmstart import WarmStart


# a validation split smaller than this is said to be too small to choose best.safetensors by
SMALL_VALIDATION = 100


class TrainingDiverged(ResnetsError, RuntimeError):
    """The loss became NaN or infinite."""

    exit_code = 3


class TrainingInterrupted(ResnetsError):
    """Ctrl-C (SIGINT): the step in progress was finished and checkpointed; ``--resume`` continues it."""

    exit_code = 130  # 128 + SIGINT, as a shell reports a process stopped by Ctrl-C


@dataclass
class TrainResult(Result):
    """What :func:`train` returns: the last evaluation's figures (None where the run had no validation split)
    and where the weights are. Its mapping (``result["val_top1"]``, ``to_dict()``) is the metrics line as it was
    written to ``metrics.jsonl``."""

    out: Path
    step: int
    total_steps: int
    metrics: dict = field(default_factory=dict)  # the last metrics.jsonl line
    best: Optional[dict] = None  # step, val_top1, val_loss of best.safetensors
    diverged: Optional[str] = None  # a member of a fused run that stopped alone: why
    main: bool = True  # False in the processes of a distributed run other than rank 0, which report nothing

    @property
    def val_top1(self) -> Optional[float]:
        return self.metrics.get("val_top1")

    @property
    def val_loss(self) -> Optional[float]:
        return self.metrics.get("val_loss")

    def __bool__(self) -> bool:  # a process other than rank 0 has nothing to report
        return bool(self.metrics)

    def to_dict(self) -> dict:
        return dict(self.metrics)


def train(options: TrainOptions) -> TrainResult:
    """Train (or resume) a run; returns its last evaluation."""
    dist = Distributed.from_environment(options.device)
    try:
        # one training per run directory: rank 0 holds its lock for the whole run
        with run_lock(Path(options.out)) if dist.is_main else contextlib.nullcontext():
            run = setup(options, dist)
            return run_loop(run)
    finally:
        dist.close()


@dataclass
class Run:
    """One training run, set up: what the loop reads and advances (``step``, ``best``, ``last_eval``)."""

    options: TrainOptions
    config: RunConfig
    dist: Distributed
    hook: TrainHook
    recipe: Recipe
    model: nn.Module  # the parameters the optimiser steps and checkpoints hold
    net: nn.Module  # what a step calls: the model, wrapped (DDP) and compiled, or the part trained on features
    trained: nn.Module  # the model, or the part of it trained on cached features
    teacher: Any
    initial: Optional[nn.Module]
    optimizer: torch.optim.Optimizer
    scaler: Any
    average: Optional[WeightAverage]
    train_loader: Any
    val_loader: Any
    info: Any
    total_steps: int
    steps_per_epoch: int
    steps_per_unit: float
    eval_interval: int
    depth: int
    metadata: dict
    step: int = 0
    best: Optional[dict] = None
    last_eval: dict = field(default_factory=dict)
    leftovers: list = field(default_factory=list)
    progress: Any = None
    writer: Any = None
    meter: Any = None
    lr: float = 0.0

    @property
    def out(self) -> Path:
        return Path(self.options.out)

    @property
    def device(self) -> torch.device:
        return self.dist.device

    def batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The training batches from the run's step to its end: epoch by epoch, from the batch it stopped at."""
        while self.step < self.total_steps:
            epoch, batch_index = divmod(self.step, self.steps_per_epoch)
            for batch in self.train_loader.epoch_batches(epoch, start_batch=batch_index):
                yield batch
                if self.step >= self.total_steps:
                    return


def setup(options: TrainOptions, dist: Distributed) -> Run:
    """Everything a run needs before its first step, read top to bottom: the configuration (resolved, or
    the recorded one on resume), the data, the model, the optimiser, the resumed state and the run directory.
    Every refusal comes before the first write."""
    config, checkpoint = resolve_run(options, dist.world_size, dist.device)
    hook = _hook(options, config)
    warn_if_emulated(config.amp, dist.device)  # asked for, or recorded by a run started on other hardware
    writer_class = _tensorboard_writer() if options.tensorboard else None
    recipe = config.recipe
    _set_determinism(options.deterministic, dist.device)
    if recipe.batch_size % (dist.world_size * config.micro_batches):
        raise UsageError(f"batch size {recipe.batch_size} must divide evenly over {dist.world_size} processes "
                         f"x {config.micro_batches} micro-batches")

    # the starting model (a hook's, e.g. pretrained), whose preprocessing the data pipeline follows
    initial = hook.initial_model(options.model, config.model_kwargs)
    train_loader, val_loader, info = _data(options, config, dist, hook, initial)
    # a resume reads its images as it did (the pipelines differ)
    config = dataclasses.replace(config, split=info.split, classes=list(info.classes), pipeline=info.pipeline)
    steps_per_epoch = len(train_loader)
    if steps_per_epoch == 0:
        raise UsageError(f"{config.data}: {info.train_size} training images make no batch of "
                         f"{recipe.batch_size // dist.world_size}")
    total_steps = recipe.iterations if recipe.iterations is not None else int(round(recipe.epochs * steps_per_epoch))
    steps_per_unit = 1.0 if recipe.iterations is not None else float(steps_per_epoch)
    _check_averaging(recipe, total_steps, steps_per_epoch, steps_per_unit)

    model = _model(options, config, dist, hook, initial, info, total_steps)
    teacher = None
    if config.distillation is not None:
        d = config.distillation
        teacher = load_teacher(d.teacher, d.weights, num_classes=info.num_classes, channels=info.channels,
                               mean=info.mean, std=info.std, classes=info.classes).to(dist.device,
                                                                                     config.channels_last)
    config = dataclasses.replace(config, weights_sha256=weights_digests(
        Path(options.out), config, checkpoint is not None, init_weights=initial, teacher_weights=teacher))
    # on CUDA the fused kernel: one launch per parameter group instead of several per step
    optimizer = torch.optim.SGD(_param_groups(model, recipe, hook.lr_multipliers()), lr=recipe.lr,
                                momentum=recipe.momentum, nesterov=recipe.nesterov,
                                fused=True if dist.device.type == "cuda" else None)
    scaler = torch.amp.GradScaler(dist.device.type, enabled=config.amp == "fp16")
    average = WeightAverage.from_recipe(model, recipe, steps_per_epoch=steps_per_epoch, steps_per_unit=steps_per_unit)
    depth = network_depth(model)
    metadata = dict(run=str(options.out), recipe=config.recipe_name, data=config.data, split=info.split,
                    seed=config.seed, depth=depth, **hook.checkpoint_metadata())
    if config.distillation is not None:
        metadata["distilled_from"] = config.distillation.to_json()
    run = Run(options=options, config=config, dist=dist, hook=hook, recipe=recipe, model=model, net=model,
              trained=model, teacher=teacher, initial=initial, optimizer=optimizer, scaler=scaler, average=average,
              train_loader=train_loader, val_loader=val_loader, info=info, total_steps=total_steps,
              steps_per_epoch=steps_per_epoch, steps_per_unit=steps_per_unit,
              eval_interval=max(1, total_steps // recipe.evaluations), depth=depth, metadata=metadata)
    if checkpoint is not None:
        _restore(run, checkpoint)
    if dist.is_main:
        _prepare_run_dir(run, checkpoint)
    run.writer = writer_class(str(run.out / "tensorboard")) if writer_class is not None and dist.is_main else None
    run.train_loader, run.val_loader, run.trained = hook.loaders(model, train_loader, val_loader, run_dir=run.out,
                                                                 batch_size=recipe.batch_size, seed=config.seed)
    run.net = _compiled(run)
    run.progress = Progress(total_steps, run.step, options.progress, options.log, silent=not dist.is_main)
    # a finished run, resumed, trains nothing: its result is its last evaluation, as when it ended
    if run.step >= total_steps and dist.is_main:
        run.last_eval = (read_metrics(run.out) or [{}])[-1]
    run.meter = Meter(dist.device)
    return run


def _hook(options: TrainOptions, config: RunConfig) -> TrainHook:
    """The run's variation: the options', else the recorded warm start, else none; refused where it cannot
    combine with the recipe (a linear probe trains on cached features, not images)."""
    hook = options.hook or TrainHook()
    recorded = WarmStart.from_record(config.transfer) if options.hook is None else None
    if recorded is not None:
        hook = recorded  # resumed without --init-weights: the recorded one
    if config.distillation is not None and not hook.feeds_images():
        raise UsageError("distillation needs the images themselves, and this run trains on cached features "
                         "(a linear probe); leave out --teacher or train more than the classifier")
    if config.averages and not hook.feeds_images():
        raise UsageError("averaged weights (ema_decay, swa_start) are whole networks scored on images, and this run "
                         "trains a classifier on cached features (a linear probe); use a recipe without them")
    return hook


def _set_determinism(deterministic: bool, device: torch.device) -> None:
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
    elif device.type == "cuda":
        torch.backends.cudnn.benchmark = True


def _data(options: TrainOptions, config: RunConfig, dist: Distributed, hook: TrainHook,
          initial: Optional[nn.Module]):
    """The training and validation loaders (each process takes its share of every global batch; rank 0
    evaluates the whole validation split) and the data's record."""
    spec = get_model_spec(options.model)
    if initial is not None:
        preprocessing = initial.preprocessing
    else:
        with torch.device("meta"):
            preprocessing = create_model(options.model).preprocessing
    recipe = config.recipe
    data_options = dict(
        seed=config.seed, device=dist.device, val_size=recipe.val_size, val_fraction=recipe.val_fraction,
        augment=recipe.augment, drop_last=True, trivial_augment=recipe.trivial_augment,
        random_erasing=recipe.random_erasing, image_size=recipe.image_size,
        train_image_size=recipe.train_image_size, channels_last=config.channels_last,
        num_workers=options.num_workers, cache_dir=options.cache_dir,
        pipeline=config.pipeline or options.pipeline, split=config.split,
        # CIFAR-family nets normalise with the training set's own statistics (the paper's mean subtraction);
        # pretrained weights with the statistics they were trained with
        preprocessing=preprocessing if spec.family == "imagenet" or initial is not None else None)
    data_options.update(hook.data_options())
    train_loader, val_loader, info = build_loaders(config.data, batch_size=recipe.batch_size // dist.world_size,
                                                   rank=dist.rank, world_size=dist.world_size, **data_options)
    if dist.world_size > 1 and dist.is_main:
        # rank 0 evaluates the whole validation split, unsharded
        _, val_loader, _ = build_loaders(config.data, batch_size=recipe.batch_size, rank=0, world_size=1,
                                         **{**data_options, "split": info.split})
    if info.num_classes < 2:
        raise UsageError(f"{config.data}: found {info.num_classes} class; training needs at least two")
    return train_loader, val_loader, info


def _check_averaging(recipe: Recipe, total_steps: int, steps_per_epoch: int, steps_per_unit: float) -> None:
    """Refuse a run that would average no weights: SWA averages at epoch ends after ``swa_start``, and a run
    shortened below the first of them would silently end with the plain weights."""
    start = swa_start_step(recipe, steps_per_unit)
    if start is None:
        return
    first = (math.floor(start / steps_per_epoch) + 1) * steps_per_epoch  # the first epoch end after the start
    if first > total_steps:
        raise UsageError(f"recipe {recipe.name!r}: weight averaging starts at step {start:.0f} and averages at the "
                         f"end of each epoch ({steps_per_epoch} steps), and the run ends at step {total_steps} "
                         f"before the first: it would average nothing; give at least {first} iterations or "
                         f"{first / steps_per_epoch:g} epochs")


def _model(options: TrainOptions, config: RunConfig, dist: Distributed, hook: TrainHook,
           initial: Optional[nn.Module], info, total_steps: int) -> nn.Module:
    """The network: initialised from the seed (He et al. 2015), or the hook's, adapted to the data's classes,
    carrying the data's preprocessing, on the device."""
    torch.manual_seed(config.seed)
    model = initial if initial is not None else create_model(options.model, num_classes=info.num_classes,
                                                             **config.model_kwargs)
    _check_input_channels(model, options.model, info.channels, config.data)
    model = hook.setup(model, num_classes=info.num_classes, total_steps=total_steps, world_size=dist.world_size,
                       classes=list(info.classes))
    model.preprocessing = dataclasses.replace(model.preprocessing, mean=tuple(info.mean), std=tuple(info.std),
                                              input_size=(info.channels, *info.image_size))
    model.classes = list(info.classes)
    if options.sync_bn and dist.world_size > 1:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    model.to(dist.device)
    if config.channels_last:
        model.to(memory_format=torch.channels_last)
    return model


def _restore(run: Run, checkpoint: dict) -> None:
    """Resume: weights, optimiser, averaged weights, RNG state and the best so far of the last complete
    checkpoint."""
    weights, state = load_checkpoint_state(run.out, checkpoint)
    run.model.load_state_dict(weights)
    run.optimizer.load_state_dict(state["optimizer"])
    run.scaler.load_state_dict(state["scaler"])
    if run.average is not None:
        run.average.load_state_dict(state["ema"])
    run.step = state["step"]
    # runs of before best.safetensors was chosen by loss too recorded only its top-1
    run.best = state.get("best") or (None if state.get("best_top1") is None else
                                     dict(step=None, val_top1=state["best_top1"], val_loss=None))
    torch.set_rng_state(state["torch_rng"])


def _prepare_run_dir(run: Run, checkpoint: Optional[dict]) -> None:
    """Rank 0's writes before the first step: leftovers of a killed write removed, the configuration, this
    session's line, the metrics cut back to the checkpoint."""
    out = run.out
    out.mkdir(parents=True, exist_ok=True)
    run.leftovers = clean_run_dir(out)  # half-written files of a killed or disk-full run; the lock is ours
    write_config(out, run.config.to_json())
    append_session(out, _session_record(run.options, run.dist, run.step))
    if checkpoint is not None:
        truncate_metrics(out, run.step)
        if run.options.keep_snapshots:  # a kill may have landed between the checkpoint and its snapshot
            keep_snapshot(out, out / checkpoint["weights"])
    if run.options.keep_snapshots and run.step == 0:
        save_initial_snapshot(out, run.model, classes=list(run.info.classes), metadata=run.metadata)


def _compiled(run: Run) -> nn.Module:
    """What a step calls: the trained module, wrapped for DDP, compiled where asked."""
    options = run.options
    net = run.dist.wrap(run.trained) if run.trained is run.model else run.trained
    if options.compile or options.compile_mode:
        if run.device.type == "cpu":
            quiet_cuda_home_notice()
        # every training batch has one shape (drop_last): static kernels, and no dynamic-shape graph where one
        # process trains several networks (torch.compile marks dimensions dynamic once a function sees a second
        # shape; a second network in one process did so on a GPU)
        net = torch.compile(net, mode=options.compile_mode, dynamic=False)
        if run.teacher is not None:
            run.teacher.compile(options.compile_mode)
    return net


def _session_record(options: TrainOptions, dist: Distributed, start_step: int) -> dict:
    """What sessions.jsonl keeps of this start or resume: the settings that may change between the
    sessions of one run without changing what it computes in principle (compilation, threads, versions)."""
    from .. import __version__

    return dict(started=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                from_step=start_step, compile=bool(options.compile or options.compile_mode),
                compile_mode=options.compile_mode, threads=torch.get_num_threads(), world_size=dist.world_size,
                device=dist.device.type, torch=torch.__version__, resnets=__version__)


def _check_input_channels(model: nn.Module, name: str, channels: int, data: str) -> None:
    """Refuse, before anything is written, a network whose first convolution takes another number of
    channels than the data's images have (``--model-arg in_chans=1`` on RGB images)."""
    first = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    if first is not None and first.in_channels != channels:
        raise UsageError(f"{name} takes {first.in_channels}-channel images (in_chans={first.in_channels}) but "
                         f"{data} gives {channels}-channel images; use in_chans={channels} or other data")


@contextlib.contextmanager
def ctrl_c(catch: bool) -> Iterator[list]:
    """While the steps run: Ctrl-C (SIGINT) only noted in the list this yields, so that the step in progress
    finishes and is checkpointed; a second one stops at once. Only where ``catch`` (one process, the main
    thread: under torchrun the ranks would not agree on the step)."""
    interrupted: list[int] = []

    def on_interrupt(signum, frame):
        if interrupted:
            raise KeyboardInterrupt
        interrupted.append(signum)

    catch = catch and threading.current_thread() is threading.main_thread()
    previous_handler = signal.signal(signal.SIGINT, on_interrupt) if catch else None
    try:
        yield interrupted
    finally:
        if catch:
            signal.signal(signal.SIGINT, previous_handler)


def run_loop(run: Run) -> TrainResult:
    """The training loop: a step per batch until the run's end, an evaluation and checkpoint every
    ``eval_interval`` steps; Ctrl-C checkpoints the step in progress and stops (:func:`ctrl_c`)."""
    with ctrl_c(run.dist.world_size == 1) as interrupted:
        announce(run)
        run.model.train()
        for images, labels in run.batches():
            train_step(run, images, labels)
            after_step(run)
            if interrupted and run.step < run.total_steps:  # at the last step, the run is complete anyway
                interrupt(run)
    return finish(run)


def announce(run: Run) -> None:
    """The run's first lines: what trains on what, and the notices of its data and teacher."""
    info, recipe, config, teacher = run.info, run.recipe, run.config, run.teacher
    d = config.distillation
    start = run.step
    run.progress.line(
        f"training {run.options.model} ({run.depth} layers) on {info.source}: {info.train_size} train / "
        f"{info.val_size} val images, {info.num_classes} classes, {run.total_steps} iterations of "
        f"{recipe.batch_size} on {run.dist.world_size} x {run.device} in "
        f"{'fp32' if config.amp == 'off' else config.amp}" + (", channels-last" if config.channels_last else "")
        + (f", distilling from {d.teacher} ({d.weights or 'default weights'}, alpha {d.alpha:g}, "
           f"T {d.temperature:g})" if teacher else "")
        + (f", already finished at step {start}: nothing left to train" if start >= run.total_steps
           else f", resuming at step {start}" if start else ""))
    notices = (split_notice(teacher.model, info.split), class_notice(teacher, info.classes)) if teacher else ()
    if run.initial is not None:
        notices += (split_notice(run.initial, info.split, "the network it starts from"),)
    if run.val_loader is not None and 0 < info.val_size < SMALL_VALIDATION:
        notices += (f"the validation split holds {info.val_size} images, one image {100 / info.val_size:.2g} points "
                    f"of accuracy: best.safetensors is chosen on them (top-1, ties by loss) and may be no better "
                    f"than last.safetensors; hold out more images (--val-size) to choose by",)
    for notice in notices:
        if notice:
            run.progress.line(notice)
    if run.leftovers:
        run.progress.line(f"removed {len(run.leftovers)} leftover file(s) of an interrupted write: "
                          f"{', '.join(p.name for p in run.leftovers[:4])}{', ...' if len(run.leftovers) > 4 else ''}")


def train_step(run: Run, images: torch.Tensor, labels: torch.Tensor) -> None:
    """One optimiser step on one global batch (this process's share of it), in micro-batches where asked."""
    recipe, model, micro_batches = run.recipe, run.model, run.config.micro_batches
    run.lr = learning_rate(recipe, run.step, run.total_steps, run.steps_per_unit, run.depth)
    for group in run.optimizer.param_groups:
        group["lr"] = run.lr * group.get("lr_mult", 1.0)
    run.hook.before_step(model, run.step)
    targets = labels
    if recipe.mixup > 0 or recipe.cutmix > 0:
        images, targets = _mix(images, labels, run.info.num_classes, recipe, run.config.seed, run.step)
    run.optimizer.zero_grad(set_to_none=True)
    for part in range(micro_batches):
        # strided parts: exactly the images process ``part`` would get under torchrun
        x, t, y = images[part::micro_batches], targets[part::micro_batches], labels[part::micro_batches]
        with _bn_statistics_frozen(model, part > 0), run.dist.no_sync_unless(run.net, part == micro_batches - 1), \
                autocast_context(run.device, run.config.amp):
            logits = run.net(x)
            teacher_logits = run.teacher(x) if run.teacher is not None else None
        if run.teacher is None:
            loss = F.cross_entropy(logits.float(), t, label_smoothing=recipe.label_smoothing)
        else:
            d = run.config.distillation
            loss = distillation_loss(logits.float(), teacher_logits.float(), t, alpha=d.alpha,
                                     temperature=d.temperature, label_smoothing=recipe.label_smoothing)
        run.scaler.scale(loss / micro_batches).backward()
        run.meter.add(loss, logits, y)
    run.scaler.step(run.optimizer)
    run.scaler.update()
    run.step += 1
    if run.average is not None:
        run.average.update(model, run.step)
    if run.options.on_step is not None:
        run.options.on_step(run.step, model)
    run.meter.step_done(len(labels) * run.dist.world_size)


def after_step(run: Run) -> None:
    """The checks of a step: the loss (every step on a CPU, every few on a GPU, where reading it forces a sync),
    the progress shown, and at the evaluation steps an evaluation and a checkpoint."""
    step, meter = run.step, run.meter
    evaluate_now = step % run.eval_interval == 0 or step == run.total_steps
    check_every = 1 if run.device.type == "cpu" else 25
    if step % check_every == 0 or evaluate_now:
        loss_sum, correct, steps, seen = meter.flush(run.dist.sum)
        if not math.isfinite(loss_sum):
            run.progress.close()
            _diverged(run.out, step, steps, loss_sum)
        run.progress.update(steps, loss=f"{loss_sum / seen:.3f}", acc=f"{100.0 * correct / seen:.1f}%",
                            lr=f"{run.lr:.3g}", img_s=f"{meter.images_per_sec:.0f}")
        if not evaluate_now and run.progress.due():  # off a terminal: a line at least every minute
            run.progress.line(f"step {step}/{run.total_steps} lr {run.lr:.4g} train loss {meter.loss / meter.seen:.4f}"
                              f" | {meter.images_per_sec:.0f} images/s | "
                              f"{format_duration(meter.seconds_left(run.total_steps - step))} left")
    if evaluate_now:
        evaluation(run)


def evaluation(run: Run) -> None:
    """Evaluate, append the metrics line and checkpoint (rank 0), then start a new window of counters."""
    step, meter, epoch = run.step, run.meter, (run.step - 1) // run.steps_per_epoch
    row = dict(step=step, epoch=round(step / run.steps_per_epoch, 3), lr=run.lr,
               train_loss=meter.loss / meter.seen, train_error=100.0 - 100.0 * meter.correct / meter.seen,
               images_per_sec=round(meter.images_per_sec, 1))
    if run.dist.is_main:
        # the averaged weights where the recipe keeps them (SWA's with fresh BatchNorm statistics)
        average = run.average
        evaluated = run.model if average is None or not average.ready else average.module(
            run.train_loader.side_batches(epoch), autocast_context(run.device, run.config.amp))
        row = _evaluate_and_save(run, row, evaluated)
        run.progress.line(_format_row(row, run.total_steps, meter.seconds_left(run.total_steps - step), run.best))
        if run.writer is not None:
            for key, value in row.items():
                if isinstance(value, (int, float)) and key != "step":
                    run.writer.add_scalar(key, value, step)
    run.dist.barrier()
    run.last_eval = row
    meter.start_window()


def interrupt(run: Run) -> None:
    """Ctrl-C: checkpoint the step just finished (an evaluation step already was) and stop."""
    if run.step % run.eval_interval and run.dist.is_main:
        # last.safetensors stays the last evaluation's averaged weights where the run averages
        save_checkpoint(run.out, run.model, _training_state(run), step=run.step, classes=list(run.info.classes),
                        metadata=run.metadata, link_last=run.average is None)
    run.progress.close()
    raise TrainingInterrupted(f"interrupted at step {run.step} of {run.total_steps}; its checkpoint is in "
                              f"{run.out}: resume with --resume (the same command)")


def finish(run: Run) -> TrainResult:
    run.progress.close()
    if run.writer is not None:
        run.writer.close()
    if run.best is not None and run.best.get("step") is not None and run.dist.is_main and run.val_loader is not None:
        run.progress.line(f"best.safetensors: step {run.best['step']}, validation top-1 {run.best['val_top1']:.2f}% "
                          f"loss {run.best['val_loss']:.4f}; last.safetensors: step {run.last_eval.get('step')}")
    return result_of(run)


def result_of(run: Run, diverged: Optional[str] = None) -> TrainResult:
    """Where a run stands, as :func:`train` returns it (``diverged``: why a fused run's member stopped)."""
    return TrainResult(out=run.out, step=run.step, total_steps=run.total_steps, metrics=dict(run.last_eval),
                       best=run.best, diverged=diverged, main=run.dist.is_main)


def _training_state(run: Run) -> dict:
    """What a checkpoint keeps beside the weights for an exact resume (the averaged weights under "ema", the
    key of the runs that could only keep an EMA), and the best evaluation so far."""
    average = run.average
    return dict(optimizer=run.optimizer.state_dict(), scaler=run.scaler.state_dict(),
                ema=average.state_dict() if average is not None else None, torch_rng=torch.get_rng_state(),
                best=run.best, best_top1=run.best["val_top1"] if run.best else None)


def _tensorboard_writer():
    try:
        from torch.utils.tensorboard import SummaryWriter  # optional: only --tensorboard needs it
    except ImportError:
        raise UsageError("--tensorboard needs the tensorboard package: pip install tensorboard") from None
    return SummaryWriter


def _param_groups(model: nn.Module, recipe: Recipe, lr_mult: Optional[dict] = None) -> list[dict]:
    """SGD groups by weight decay (none on norm layers and biases where the recipe says so) and by
    learning-rate multiplier (``{module prefix: multiplier}``; each group carries its ``lr_mult``)."""
    groups: dict[tuple[float, float], list] = {}
    for module_name, module in model.named_modules():
        is_norm = isinstance(module, (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm))
        for name, p in module.named_parameters(recurse=False):
            if not p.requires_grad:
                continue
            no_decay = recipe.no_weight_decay_on_norm_and_bias and (is_norm or name == "bias")
            mult = next((float(m) for prefix, m in (lr_mult or {}).items()
                         if under_prefix(f"{module_name}.{name}" if module_name else name, [prefix])), 1.0)
            groups.setdefault((0.0 if no_decay else recipe.weight_decay, mult), []).append(p)
    return [{"params": params, "weight_decay": decay, "lr_mult": mult} for (decay, mult), params in groups.items()]


def _mix(images: torch.Tensor, labels: torch.Tensor, num_classes: int, recipe: Recipe, seed: int, step: int,
         ) -> tuple[torch.Tensor, torch.Tensor]:
    """Mixup or CutMix (chosen at random when both are on), drawn from (seed, step)."""
    rng = np.random.default_rng([seed, step, 7])
    targets = F.one_hot(labels, num_classes).to(images.dtype)
    use_cutmix = recipe.cutmix > 0 and (recipe.mixup == 0 or rng.random() < 0.5)
    alpha = recipe.cutmix if use_cutmix else recipe.mixup
    lam = float(rng.beta(alpha, alpha))
    perm = torch.from_numpy(rng.permutation(len(labels))).to(labels.device)
    if use_cutmix:
        h, w = images.shape[2:]
        cut_h, cut_w = int(h * math.sqrt(1 - lam)), int(w * math.sqrt(1 - lam))
        cy, cx = int(rng.integers(h)), int(rng.integers(w))
        y0, y1 = max(cy - cut_h // 2, 0), min(cy + cut_h // 2, h)
        x0, x1 = max(cx - cut_w // 2, 0), min(cx + cut_w // 2, w)
        images = images.clone()
        images[:, :, y0:y1, x0:x1] = images[perm][:, :, y0:y1, x0:x1]
        lam = 1 - (y1 - y0) * (x1 - x0) / (h * w)
    else:
        images = images * lam + images[perm] * (1 - lam)
    return images, targets * lam + targets[perm] * (1 - lam)


def _format_row(row: dict, total_steps: int, seconds_left: float, best: Optional[dict] = None) -> str:
    text = (f"step {row['step']}/{total_steps} lr {row['lr']:.4g} train loss {row['train_loss']:.4f} "
            f"error {row['train_error']:.2f}%")
    if "val_top1" in row:
        text += f" | val loss {row['val_loss']:.4f} error {row['val_error']:.2f}% top-1 {row['val_top1']:.2f}%"
        if best is not None and best.get("step") is not None:
            text += " | best" if best["step"] == row["step"] else f" | best step {best['step']}"
    text += f" | {row['images_per_sec']:.0f} images/s"
    # at the pace of the last window, its evaluation included (the first one also pays for compilation)
    return text + (f" | {format_duration(seconds_left)} left" if row["step"] < total_steps else "")


def better(score: dict, best: Optional[dict]) -> bool:
    """Whether an evaluation beats the best so far: a higher validation top-1, or the same top-1 at a lower
    loss (on a small split many evaluations tie on top-1, and the first of them is rarely the best network). A
    best of an older run that recorded no loss loses every tie."""
    if best is None or score["val_top1"] > best["val_top1"]:
        return True
    return score["val_top1"] == best["val_top1"] and (best.get("val_loss") is None
                                                     or score["val_loss"] < best["val_loss"])


def _evaluate_and_save(run: Run, row: dict, evaluated: nn.Module) -> dict:
    """Evaluate ``evaluated`` (the model, or its averaged weights) on the validation split, append the
    metrics line, write the checkpoint (the model's own weights) and ``last.safetensors`` (the evaluated
    weights), and ``best.safetensors`` when the evaluation is :func:`better` than the best so far (with no
    validation split, the latest weights). Rank 0 only. When the steps run through a part of the model
    (``trained``, on cached features), that part is what is evaluated."""
    out, model, info = run.out, run.model, run.info
    metadata = {**run.metadata, "averaged": run.average.describe()} if evaluated is not model else run.metadata
    if run.val_loader is not None:
        net = evaluated if run.trained is model else run.trained
        result = evaluate(net, run.val_loader.epoch_batches(0), info.num_classes, amp=run.config.amp)
        row.update(val_loss=result.loss, val_top1=result.top1, val_top5=result.top5, val_error=100.0 - result.top1,
                   val_n=result.n)
    append_metrics(out, row)
    classes = list(info.classes)
    improved = "val_top1" not in row or better(row, run.best)
    if improved and "val_top1" in row:
        run.best = dict(step=row["step"], val_top1=row["val_top1"], val_loss=row["val_loss"])
    # the checkpoint first: a kill between the two leaves best.safetensors one step behind, never ahead
    weights = save_checkpoint(out, model, _training_state(run), step=row["step"], classes=classes,
                              metadata=run.metadata, link_last=evaluated is model)
    if evaluated is not model:  # the weights the metrics line describes
        save_last(out, evaluated, classes=classes, metadata={**metadata, "step": row["step"]})
    if run.options.keep_snapshots:
        keep_snapshot(out, weights)
    if improved:
        save_best(out, evaluated, classes=classes, metadata={**metadata, "step": row["step"],
                                                              "val_top1": row.get("val_top1"),
                                                              "val_loss": row.get("val_loss")})
    return row


def _diverged(out: Path, step: int, window: int, value: float) -> None:
    record = last_checkpoint(out, verify=False) if out.exists() else None
    kept = (f"the last good checkpoint (step {record['step']}) is kept in {out}" if record
            else "no checkpoint had been written yet")
    where = f"step {step}" if window == 1 else f"steps {step - window + 1}-{step}"
    raise TrainingDiverged(f"the training loss became {value} at {where}; stopping. {kept}. "
                           f"Try a lower --lr or the recipe's warm-up.")


@contextlib.contextmanager
def _bn_statistics_frozen(model: nn.Module, frozen: bool):
    """Normalise with batch statistics but leave the running statistics alone.

    Micro-batches after the first do this, so that running statistics move once per step,
    from the first micro-batch, as DistributedDataParallel's buffers (broadcast from rank 0) do.
    """
    if not frozen:
        yield
        return
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    for m in norms:
        m.track_running_stats = False
    try:
        yield
    finally:
        for m in norms:
            m.track_running_stats = True
