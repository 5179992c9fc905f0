"""The training loop: one function, read top to bottom.

``train(TrainOptions(...))`` builds the data, the model and the optimiser, resumes from the
run directory's last checkpoint where asked, and runs SGD steps; every ``length /
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
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..data import build_loaders
from ..errors import ResnetsError, UsageError
from ..factory import create_model
from ..models import get_model_spec
from ..models.summary import network_depth
from .averaging import WeightAverage
from .checkpoint import (append_metrics, append_session, clean_run_dir, keep_snapshot, last_checkpoint,
                         load_checkpoint_state, read_metrics, save_best, save_checkpoint, save_initial_snapshot,
                         save_last, truncate_metrics, write_config)
from .distributed import Distributed
from .evaluate import evaluate
from .hooks import TrainHook
from .options import TrainOptions
from .distill import class_notice, distillation_loss, load_teacher, split_notice
from .precision import autocast_context, warn_if_emulated
from .progress import Meter, Progress, format_duration
from .recipe import Recipe, learning_rate
from .rundir import resolve_run, run_lock, weights_digests
from .warmstart import WarmStart


class TrainingDiverged(ResnetsError, RuntimeError):
    """The loss became NaN or infinite."""

    exit_code = 3


class TrainingInterrupted(ResnetsError):
    """Ctrl-C (SIGINT): the step in progress was finished and checkpointed; ``--resume`` continues it."""

    exit_code = 130  # 128 + SIGINT, as a shell reports a process stopped by Ctrl-C


def train(options: TrainOptions) -> dict:
    """Train (or resume) a run; returns the last evaluation's metrics."""
    dist = Distributed.from_environment(options.device)
    try:
        # one training per run directory: rank 0 holds its lock for the whole run
        with run_lock(Path(options.out)) if dist.is_main else contextlib.nullcontext():
            return _train(options, dist)
    finally:
        dist.close()


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


def _train(options: TrainOptions, dist: Distributed) -> dict:
    out = Path(options.out)
    device = dist.device
    hook = options.hook or TrainHook()
    record, checkpoint = resolve_run(options, dist.world_size, device)
    recorded = WarmStart.from_record(record.get("transfer")) if options.hook is None else None
    if recorded is not None:
        hook = recorded  # resumed without --init-weights: the recorded one
    if record.get("distillation") is not None and not hook.feeds_images():
        raise UsageError("distillation needs the images themselves, and this run trains on cached features "
                         "(a linear probe); leave out --teacher or train more than the classifier")
    if (record["recipe"].get("swa_start") is not None or record["recipe"].get("ema_decay", 0) > 0) \
            and not hook.feeds_images():
        raise UsageError("averaged weights (ema_decay, swa_start) are whole networks scored on images, and this run "
                         "trains a classifier on cached features (a linear probe); use a recipe without them")
    amp, channels_last = record["amp"], record["channels_last"]
    warn_if_emulated(amp, device)  # asked for, or recorded by a run started on other hardware
    writer_class = _tensorboard_writer() if options.tensorboard else None
    recipe = Recipe(**record["recipe"])
    seed = record["seed"]
    micro_batches = record["micro_batches"]
    if options.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
    elif device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    if recipe.batch_size % (dist.world_size * micro_batches):
        raise UsageError(f"batch size {recipe.batch_size} must divide evenly over {dist.world_size} processes "
                         f"x {micro_batches} micro-batches")

    # the starting model (a hook's, e.g. pretrained), whose preprocessing the data pipeline follows
    spec = get_model_spec(options.model)
    initial = hook.initial_model(options.model, record["model_kwargs"])
    if initial is not None:
        preprocessing = initial.preprocessing
    else:
        with torch.device("meta"):
            preprocessing = create_model(options.model).preprocessing

    # data: each process takes its share of every global batch
    data_options = dict(
        seed=seed, device=device, val_size=recipe.val_size, val_fraction=recipe.val_fraction,
        augment=recipe.augment, drop_last=True, trivial_augment=recipe.trivial_augment,
        random_erasing=recipe.random_erasing, image_size=recipe.image_size,
        train_image_size=recipe.train_image_size, channels_last=channels_last, num_workers=options.num_workers,
        cache_dir=options.cache_dir, pipeline=record.get("pipeline") or options.pipeline, split=record.get("split"),
        # CIFAR-family nets normalise with the training set's own statistics (the paper's mean subtraction);
        # pretrained weights with the statistics they were trained with
        preprocessing=preprocessing if spec.family == "imagenet" or initial is not None else None)
    data_options.update(hook.data_options())
    train_loader, val_loader, info = build_loaders(record["data"], batch_size=recipe.batch_size // dist.world_size,
                                                   rank=dist.rank, world_size=dist.world_size, **data_options)
    if dist.world_size > 1 and dist.is_main:
        # rank 0 evaluates the whole validation split, unsharded
        _, val_loader, _ = build_loaders(record["data"], batch_size=recipe.batch_size, rank=0, world_size=1,
                                         **{**data_options, "split": info.split})
    if info.num_classes < 2:
        raise UsageError(f"{record['data']}: found {info.num_classes} class; training needs at least two")
    record["split"] = info.split
    record["pipeline"] = info.pipeline  # a resumed run reads its images as it did (the pipelines differ in order)
    record["classes"] = info.classes
    steps_per_epoch = len(train_loader)
    if steps_per_epoch == 0:
        raise UsageError(f"{record['data']}: {info.train_size} training images make no batch of "
                         f"{recipe.batch_size // dist.world_size}")
    total_steps = recipe.iterations if recipe.iterations is not None else int(round(recipe.epochs * steps_per_epoch))
    steps_per_unit = 1.0 if recipe.iterations is not None else float(steps_per_epoch)
    eval_interval = max(1, total_steps // recipe.evaluations)

    # model: initialised from the seed (He et al. 2015), or the hook's, adapted to these classes
    torch.manual_seed(seed)
    model = initial if initial is not None else create_model(options.model, num_classes=info.num_classes,
                                                             **record["model_kwargs"])
    _check_input_channels(model, options.model, info.channels, record["data"])
    model = hook.setup(model, num_classes=info.num_classes, total_steps=total_steps, world_size=dist.world_size,
                       classes=list(info.classes))
    model.preprocessing = dataclasses.replace(model.preprocessing, mean=tuple(info.mean), std=tuple(info.std),
                                              input_size=(info.channels, *info.image_size))
    model.classes = list(info.classes)
    depth = network_depth(model)
    if options.sync_bn and dist.world_size > 1:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    distillation = record.get("distillation")
    teacher = None
    if distillation is not None:
        teacher = load_teacher(distillation["teacher"], distillation["weights"], num_classes=info.num_classes,
                               channels=info.channels, mean=info.mean, std=info.std,
                               classes=info.classes).to(device, channels_last)
    record["weights_sha256"] = weights_digests(out, record, checkpoint is not None, init_weights=initial,
                                               teacher_weights=teacher)
    # on CUDA the fused kernel: one launch per parameter group instead of several per step
    optimizer = torch.optim.SGD(_param_groups(model, recipe, hook.lr_multipliers()), lr=recipe.lr,
                                momentum=recipe.momentum, nesterov=recipe.nesterov,
                                fused=True if device.type == "cuda" else None)
    scaler = torch.amp.GradScaler(device.type, enabled=amp == "fp16")
    average = WeightAverage.from_recipe(model, recipe, steps_per_epoch=steps_per_epoch, steps_per_unit=steps_per_unit)

    # resume: weights, optimiser, averaged weights and RNG state of the last complete checkpoint
    start_step, best_top1 = 0, None
    if checkpoint is not None:
        weights, state = load_checkpoint_state(out, checkpoint)
        model.load_state_dict(weights)
        optimizer.load_state_dict(state["optimizer"])
        scaler.load_state_dict(state["scaler"])
        if average is not None:
            average.load_state_dict(state["ema"])
        start_step, best_top1 = state["step"], state["best_top1"]
        torch.set_rng_state(state["torch_rng"])
    leftovers: list = []
    if dist.is_main:
        out.mkdir(parents=True, exist_ok=True)
        leftovers = clean_run_dir(out)  # half-written files of a killed or disk-full run; the lock is ours
        write_config(out, record)
        append_session(out, _session_record(options, dist, start_step))
        if checkpoint is not None:
            truncate_metrics(out, start_step)
            if options.keep_snapshots:  # a kill may have landed between the checkpoint and its snapshot
                keep_snapshot(out, out / checkpoint["weights"])
    writer = writer_class(str(out / "tensorboard")) if writer_class is not None and dist.is_main else None

    train_loader, val_loader, trained = hook.loaders(model, train_loader, val_loader, run_dir=out,
                                                     batch_size=recipe.batch_size, seed=seed)
    net = dist.wrap(trained) if trained is model else trained
    if options.compile or options.compile_mode:
        # every training batch has one shape (drop_last): static kernels, and no dynamic-shape graph where one
        # process trains several networks (torch.compile marks dimensions dynamic once a function sees a second
        # shape; a second network in one process did so on a GPU)
        net = torch.compile(net, mode=options.compile_mode, dynamic=False)
        if teacher is not None:
            teacher.compile(options.compile_mode)
    metadata = dict(run=str(out), recipe=record["recipe_name"], data=record["data"], split=info.split,
                    seed=seed, depth=depth, **hook.checkpoint_metadata())
    if distillation is not None:
        metadata["distilled_from"] = dict(distillation)
    if options.keep_snapshots and dist.is_main and start_step == 0:
        save_initial_snapshot(out, model, classes=list(info.classes), metadata=metadata)
    progress = Progress(total_steps, start_step, options.progress, options.log, silent=not dist.is_main)
    step = start_step
    # a finished run, resumed, trains nothing: its result is its last evaluation, as when it ended
    last_eval: dict = (read_metrics(out) or [{}])[-1] if start_step >= total_steps and dist.is_main else {}
    # on a GPU, reading the loss forces a sync: check it every few steps instead of every step
    check_every = 1 if device.type == "cpu" else 25
    meter = Meter(device)
    model.train()
    # Ctrl-C finishes the step in progress, checkpoints it and stops (a second one stops at once). One
    # process only: under torchrun the ranks would not agree on the step.
    interrupted: list[int] = []

    def on_interrupt(signum, frame):
        if interrupted:
            raise KeyboardInterrupt
        interrupted.append(signum)

    catch = dist.world_size == 1 and threading.current_thread() is threading.main_thread()
    previous_handler = signal.signal(signal.SIGINT, on_interrupt) if catch else None
    try:
        progress.line(f"training {options.model} ({depth} layers) on {info.source}: {info.train_size} train / "
                      f"{info.val_size} val images, {info.num_classes} classes, {total_steps} iterations of "
                      f"{recipe.batch_size} on {dist.world_size} x {device} in {'fp32' if amp == 'off' else amp}"
                      + (", channels-last" if channels_last else "")
                      + (f", distilling from {distillation['teacher']} ({distillation['weights'] or 'default weights'}"
                         f", alpha {distillation['alpha']:g}, T {distillation['temperature']:g})" if teacher else "")
                      + (f", already finished at step {start_step}: nothing left to train" if start_step >= total_steps
                         else f", resuming at step {start_step}" if start_step else ""))
        notices = (split_notice(teacher.model, info.split), class_notice(teacher, info.classes)) if teacher else ()
        if initial is not None:
            notices += (split_notice(initial, info.split, "the network it starts from"),)
        for notice in notices:
            if notice:
                progress.line(notice)
        if leftovers:
            progress.line(f"removed {len(leftovers)} leftover file(s) of an interrupted write: "
                          f"{', '.join(p.name for p in leftovers[:4])}{', ...' if len(leftovers) > 4 else ''}")
        while step < total_steps:
            epoch, batch_index = divmod(step, steps_per_epoch)
            for images, labels in train_loader.epoch_batches(epoch, start_batch=batch_index):
                lr = learning_rate(recipe, step, total_steps, steps_per_unit, depth)
                for group in optimizer.param_groups:
                    group["lr"] = lr * group.get("lr_mult", 1.0)
                hook.before_step(model, step)
                targets = labels
                if recipe.mixup > 0 or recipe.cutmix > 0:
                    images, targets = _mix(images, labels, info.num_classes, recipe, seed, step)
                optimizer.zero_grad(set_to_none=True)
                for part in range(micro_batches):
                    # strided parts: exactly the images process ``part`` would get under torchrun
                    x, t, y = images[part::micro_batches], targets[part::micro_batches], labels[part::micro_batches]
                    with _bn_statistics_frozen(model, part > 0), dist.no_sync_unless(net, part == micro_batches - 1), \
                            autocast_context(device, amp):
                        logits = net(x)
                        teacher_logits = teacher(x) if teacher is not None else None
                    if teacher is None:
                        loss = F.cross_entropy(logits.float(), t, label_smoothing=recipe.label_smoothing)
                    else:
                        loss = distillation_loss(logits.float(), teacher_logits.float(), t,
                                                 alpha=distillation["alpha"], temperature=distillation["temperature"],
                                                 label_smoothing=recipe.label_smoothing)
                    scaler.scale(loss / micro_batches).backward()
                    meter.add(loss, logits, y)
                scaler.step(optimizer)
                scaler.update()
                step += 1
                if average is not None:
                    average.update(model, step)
                if options.on_step is not None:
                    options.on_step(step, model)
                meter.step_done(len(labels) * dist.world_size)
                evaluate_now = step % eval_interval == 0 or step == total_steps
                if step % check_every == 0 or evaluate_now:
                    loss_sum, correct, steps, seen = meter.flush(dist.sum)
                    if not math.isfinite(loss_sum):
                        progress.close()
                        _diverged(out, step, steps, loss_sum)
                    progress.update(steps, loss=f"{loss_sum / seen:.3f}", acc=f"{100.0 * correct / seen:.1f}%",
                                    lr=f"{lr:.3g}", img_s=f"{meter.images_per_sec:.0f}")
                if evaluate_now:
                    row = dict(step=step, epoch=round(step / steps_per_epoch, 3), lr=lr,
                               train_loss=meter.loss / meter.seen,
                               train_error=100.0 - 100.0 * meter.correct / meter.seen,
                               images_per_sec=round(meter.images_per_sec, 1))
                    if dist.is_main:
                        # the averaged weights where the recipe keeps them (SWA's with fresh BatchNorm statistics)
                        evaluated = model if average is None or not average.ready else average.module(
                            train_loader.side_batches(epoch), autocast_context(device, amp))
                        row, best_top1 = _evaluate_and_save(
                            out, row, model, evaluated, trained, val_loader, info, options, amp, best_top1,
                            {**metadata, "averaged": average.describe()} if evaluated is not model else metadata,
                            state=_training_state(optimizer, scaler, average), metadata_raw=metadata)
                        progress.line(_format_row(row, total_steps, meter.seconds_left(total_steps - step)))
                        if writer is not None:
                            for key, value in row.items():
                                if isinstance(value, (int, float)) and key != "step":
                                    writer.add_scalar(key, value, step)
                    dist.barrier()
                    last_eval = row
                    meter.start_window()
                if interrupted and step < total_steps:  # at the last step, the run is complete anyway
                    if not evaluate_now and dist.is_main:  # an evaluation step was just checkpointed
                        # last.safetensors stays the last evaluation's averaged weights where the run averages
                        save_checkpoint(out, model, {**_training_state(optimizer, scaler, average),
                                                     "best_top1": best_top1},
                                        step=step, classes=list(info.classes), metadata=metadata,
                                        link_last=average is None)
                    progress.close()
                    raise TrainingInterrupted(f"interrupted at step {step} of {total_steps}; its checkpoint is in "
                                              f"{out}: resume with --resume (the same command)")
                if step >= total_steps:
                    break
    finally:
        if catch:
            signal.signal(signal.SIGINT, previous_handler)
    progress.close()
    if writer is not None:
        writer.close()
    return last_eval


def _training_state(optimizer, scaler, average: Optional[WeightAverage]) -> dict:
    """What a checkpoint keeps beside the weights for an exact resume (the averaged weights under "ema", the
    key of the runs that could only keep an EMA)."""
    return dict(optimizer=optimizer.state_dict(), scaler=scaler.state_dict(),
                ema=average.state_dict() if average is not None else None, torch_rng=torch.get_rng_state())


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


def under_prefix(name: str, prefixes: list) -> bool:
    """Whether a parameter or module name lies under one of the module ``prefixes``."""
    return any(name == prefix or name.startswith(prefix + ".") for prefix in prefixes)


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


def _format_row(row: dict, total_steps: int, seconds_left: float) -> str:
    text = (f"step {row['step']}/{total_steps} lr {row['lr']:.4g} train loss {row['train_loss']:.4f} "
            f"error {row['train_error']:.2f}%")
    if "val_top1" in row:
        text += f" | val loss {row['val_loss']:.4f} error {row['val_error']:.2f}% top-1 {row['val_top1']:.2f}%"
    text += f" | {row['images_per_sec']:.0f} images/s"
    # at the pace of the last window, its evaluation included (the first one also pays for compilation)
    return text + (f" | {format_duration(seconds_left)} left" if row["step"] < total_steps else "")


def _evaluate_and_save(out: Path, row: dict, model: nn.Module, evaluated: nn.Module, trained: nn.Module,
                       val_loader, info, options: TrainOptions, amp: str, best_top1: Optional[float], metadata: dict,
                       state: dict, metadata_raw: dict) -> tuple[dict, Optional[float]]:
    """Evaluate ``evaluated`` (the model, or its averaged weights) on the validation split, append the
    metrics line, write the checkpoint (the model's own weights, ``metadata_raw``) and
    ``last.safetensors`` (the evaluated weights, ``metadata``), and ``best.safetensors`` when the
    validation accuracy improved (with no validation split, the latest weights). Rank 0 only. When the
    steps run through a part of the model (``trained``, on cached features), that part is what is
    evaluated."""
    if val_loader is not None:
        net = evaluated if trained is model else trained
        result = evaluate(net, val_loader.epoch_batches(0), info.num_classes, amp=amp)
        row.update(val_loss=result["loss"], val_top1=result["top1"], val_top5=result["top5"],
                   val_error=100.0 - result["top1"], val_n=result["n"])
    append_metrics(out, row)
    classes = list(info.classes)
    score = row.get("val_top1")
    improved = score is None or best_top1 is None or score > best_top1
    if score is not None:
        best_top1 = score if best_top1 is None else max(best_top1, score)
    # the checkpoint first: a kill between the two leaves best.safetensors one step behind, never ahead
    weights = save_checkpoint(out, model, {**state, "best_top1": best_top1}, step=row["step"], classes=classes,
                              metadata=metadata_raw, link_last=evaluated is model)
    if evaluated is not model:  # the weights the metrics line describes
        save_last(out, evaluated, classes=classes, metadata={**metadata, "step": row["step"]})
    if options.keep_snapshots:
        keep_snapshot(out, weights)
    if improved:
        save_best(out, evaluated, classes=classes, metadata={**metadata, "step": row["step"],
                                                              "val_top1": row.get("val_top1")})
    return row, best_top1


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
