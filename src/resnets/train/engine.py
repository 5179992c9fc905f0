"""The training loop: one function, read top to bottom.

``train(TrainOptions(...))`` builds the data, the model and the optimiser, resumes from the
run directory's last checkpoint where asked, and runs SGD steps; every ``length /
evaluations`` steps it evaluates on the validation split, appends a line to
``metrics.jsonl`` and writes a checkpoint. The same code runs in one process or in N under
``torchrun`` (DistributedDataParallel; NCCL on GPUs, gloo on CPU); only rank 0 writes.

Exact resume: the learning rate is a function of the step, the data order and augmentation
of a batch are functions of (seed, epoch, batch index), mixup draws are functions of
(seed, step), and the optimiser, EMA and metric accumulators are saved with the weights.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ResnetsError, UsageError
from ..models import create_model, freeze_batchnorm, get_model_spec
from ..models.summary import _depth
from .checkpoint import (RunDirError, append_metrics, keep_snapshot, last_checkpoint, load_checkpoint_state,
                         read_config, save_best, save_checkpoint, save_initial_snapshot, truncate_metrics,
                         write_config)
from .distributed import Distributed
from .evaluate import autocast_context, evaluate
from .recipe import Recipe, learning_rate, load_recipe

DEFAULT_DATA = "sample:cifar10"
DEFAULT_RECIPE = "paper-cifar"
# without --data: the paper's CIFAR recipe, shortened to about a minute on two CPU cores,
# on the 2,000-image CIFAR-10 sample shipped with the package
SAMPLE_DEFAULTS = dict(iterations=200, val_size=400, evaluations=10)


class TrainingDiverged(ResnetsError, RuntimeError):
    exit_code = 3

    """The loss became NaN or infinite."""


@dataclass
class TrainOptions:
    """Everything ``resnets train`` takes. Options left as None come from the recorded run
    when resuming, else from the defaults."""

    model: str
    out: Path
    data: Optional[str] = None
    recipe: Optional[str] = None
    resume: bool = False
    device: str = "cpu"
    iterations: Optional[int] = None
    epochs: Optional[float] = None
    batch_size: Optional[int] = None
    lr: Optional[float] = None
    seed: Optional[int] = None
    evaluations: Optional[int] = None
    val_size: Optional[int] = None
    amp: str = "off"
    channels_last: bool = False
    compile: bool = False
    compile_mode: Optional[str] = None  # torch.compile mode; "reduce-overhead" uses CUDA graphs
    pipeline: str = "auto"  # data pipeline: "auto", "small" (on-device tensors) or "large" (DataLoader workers)
    deterministic: bool = False
    micro_batches: Optional[int] = None
    sync_bn: bool = False
    model_kwargs: dict = field(default_factory=dict)
    num_workers: Optional[int] = None
    cache_dir: Optional[str] = None
    tensorboard: bool = False
    # keep the weights of every evaluation in RUN_DIR/snapshots/step-N.safetensors (a hard link to
    # the checkpoint's weights, so no extra write), for studies of how a network changes as it trains
    keep_snapshots: bool = False
    progress: Optional[bool] = None  # None: a bar only on a terminal and outside CI
    log: Any = None  # where progress lines go (default: stderr)
    # fine-tuning (None: a plain run from scratch; recorded in config.json, taken from it on resume)
    transfer: Optional["Transfer"] = None
    on_step: Optional[Callable[[int, nn.Module], None]] = None  # called after each optimiser step (not recorded)


@dataclass
class Transfer:
    """Start from pretrained weights and choose which parameters train, when and how fast.

    Prefixes name modules of the state dict (``fc``, ``layer4``, ``conv1``...). A parameter
    trains from step 0 if it matches ``trainable`` (None: every parameter), or from
    ``fraction x run length`` for each ``[fraction, [prefixes]]`` of ``unfreeze``. A BatchNorm
    whose parameters are all frozen at a step normalises with its running statistics and
    leaves them alone, so a frozen module is frozen entirely.
    """

    init_weights: Optional[str] = None  # checkpoint of any supported format; its classifier is replaced
    trainable: Optional[list] = None
    unfreeze: list = field(default_factory=list)
    lr_mult: dict = field(default_factory=dict)  # {prefix: learning-rate multiplier}, e.g. {"fc": 10.0}
    freeze_bn: bool = False  # every BatchNorm becomes FrozenBatchNorm2d: pretrained statistics and affine kept
    cache_features: bool = False  # only the classifier trains: pooled features computed once, no augmentation
    image_size: Optional[int] = None  # input side (default: the pretrained weights' own)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# what identifies a run: a resumed run must match the record on each of these
RUN_KEYS = ("model", "data", "recipe", "seed", "micro_batches", "world_size", "model_kwargs", "transfer")


def _resolve_run(options: TrainOptions, dist: Distributed) -> tuple[dict, Optional[dict]]:
    """The run's record (config.json) and its last checkpoint, refusing a run directory that
    holds something else. Nothing is written here."""
    out = Path(options.out)
    recorded = read_config(out) if out.exists() else None
    if recorded is not None and recorded.get("model") != options.model:
        raise RunDirError(f"{out} holds a run of {recorded.get('model')!r}, not {options.model!r}; "
                          f"choose another --out")
    if recorded is None and out.exists() and (out / "last.json").exists():
        raise RunDirError(f"{out} holds a checkpoint but no config.json; choose another --out")
    if recorded is not None and not options.resume:
        raise RunDirError(f"{out} already holds a run of {options.model}; pass --resume to continue it "
                          f"or choose another --out")
    if options.resume and recorded is None:
        raise RunDirError(f"--resume: {out} holds no run to resume (no config.json)")

    if recorded is not None:
        given = {"data": options.data, "seed": options.seed, "micro_batches": options.micro_batches,
                 "world_size": dist.world_size, "model_kwargs": options.model_kwargs or None,
                 "transfer": options.transfer.to_dict() if options.transfer is not None else None}
        clashes = [f"{k} (recorded {recorded.get(k)!r}, given {v!r})" for k, v in given.items()
                   if v is not None and recorded.get(k) != v]
        recipe = _build_recipe(options, base=recorded["recipe"])
        if recipe.to_dict() != recorded["recipe"]:
            clashes.append("recipe options (iterations, epochs, batch size, lr, evaluations, val size)")
        if clashes:
            raise RunDirError(f"--resume: {out} was started with other options: {'; '.join(clashes)}")
        return recorded, last_checkpoint(out)

    if options.data is None:
        if options.epochs is not None:
            options = dataclasses.replace(options, iterations=None)
        options = dataclasses.replace(options, **{k: v for k, v in SAMPLE_DEFAULTS.items()
                                                  if getattr(options, k) is None and
                                                  not (k == "iterations" and options.epochs is not None)})
    recipe = _build_recipe(options)
    record = dict(model=options.model, data=options.data or DEFAULT_DATA, recipe=recipe.to_dict(),
                  recipe_name=options.recipe or DEFAULT_RECIPE, seed=options.seed if options.seed is not None else 0,
                  micro_batches=options.micro_batches or 1, world_size=dist.world_size,
                  model_kwargs=options.model_kwargs or {},
                  transfer=options.transfer.to_dict() if options.transfer is not None else None)
    return record, None


def _build_recipe(options: TrainOptions, base: Optional[dict] = None) -> Recipe:
    recipe = Recipe(**base) if base is not None else load_recipe(options.recipe or DEFAULT_RECIPE)
    recipe = recipe.with_length(options.iterations, options.epochs)
    changes = {k: v for k, v in dict(batch_size=options.batch_size, lr=options.lr, evaluations=options.evaluations,
                                      val_size=options.val_size).items() if v is not None}
    return dataclasses.replace(recipe, **changes) if changes else recipe


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
                         if _matches(f"{module_name}.{name}" if module_name else name, [prefix])), 1.0)
            groups.setdefault((0.0 if no_decay else recipe.weight_decay, mult), []).append(p)
    if recipe.no_weight_decay_on_norm_and_bias:
        # both groups even where one is empty, as earlier runs' optimiser states have them
        for decay in (recipe.weight_decay, 0.0):
            groups.setdefault((decay, 1.0), [])
    return [{"params": params, "weight_decay": decay, "lr_mult": mult} for (decay, mult), params in groups.items()]


def _matches(name: str, prefixes: list) -> bool:
    return any(name == prefix or name.startswith(prefix + ".") for prefix in prefixes)


def _training_starts(model: nn.Module, transfer: Transfer, total_steps: int) -> dict[str, Optional[int]]:
    """The step from which each parameter trains (None: never), from ``trainable`` and ``unfreeze``."""
    names = [name for name, _ in model.named_parameters()]
    schedule = [(0, transfer.trainable)] if transfer.trainable is not None else [(0, [""])]
    schedule += [(int(fraction * total_steps), prefixes) for fraction, prefixes in transfer.unfreeze]
    for _, prefixes in schedule:
        unknown = [p for p in prefixes if p and not any(_matches(n, [p]) for n in names)]
        if unknown:
            top = list(dict.fromkeys(n.split(".")[0] for n in names))
            raise UsageError(f"no parameters under {unknown} in {getattr(model, 'arch', 'the model')}; "
                             f"its modules are {top}")
    starts: dict[str, Optional[int]] = {}
    for name in names:
        steps = [step for step, prefixes in schedule if "" in prefixes or _matches(name, prefixes)]
        starts[name] = min(steps) if steps else None
    return starts


def _freeze_for_step(model: nn.Module, starts: dict[str, Optional[int]], step: int) -> None:
    """Set which parameters train at ``step``. A BatchNorm whose parameters are all frozen is put
    in eval mode, so that it neither normalises with batch statistics nor updates its own."""
    for name, p in model.named_parameters():
        p.requires_grad_(starts[name] is not None and step >= starts[name])
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            params = list(module.parameters(recurse=False))
            module.train(model.training and not (params and not any(p.requires_grad for p in params)))


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


class _Progress:
    """A tqdm bar on a terminal; plain lines at each evaluation elsewhere (and under CI)."""

    def __init__(self, total: int, initial: int, enabled: Optional[bool], stream, silent: bool = False):
        self.stream = stream or sys.stderr
        self.silent = silent  # processes other than rank 0 say nothing
        if enabled is None:
            enabled = self.stream.isatty() and not os.environ.get("CI")
        self.bar = None
        if enabled and not silent:
            from tqdm import tqdm
            self.bar = tqdm(total=total, initial=initial, unit="it", file=self.stream, dynamic_ncols=True)

    def update(self, steps: int, **postfix: str) -> None:
        if self.bar is not None:
            self.bar.update(steps)
            if postfix:
                self.bar.set_postfix(postfix, refresh=False)

    def line(self, text: str) -> None:
        if self.silent:
            return
        if self.bar is not None:
            self.bar.write(text, file=self.stream)
        else:
            print(text, file=self.stream, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def train(options: TrainOptions) -> dict:
    """Train (or resume) a run; returns the last evaluation's metrics."""
    dist = Distributed.from_environment(options.device)
    try:
        return _train(options, dist)
    finally:
        dist.close()


def _train(options: TrainOptions, dist: Distributed) -> dict:
    from ..data import build_loaders

    out = Path(options.out)
    device = dist.device
    record, checkpoint = _resolve_run(options, dist)
    if options.tensorboard:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise UsageError("--tensorboard needs the tensorboard package: pip install tensorboard") from None
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

    transfer = Transfer(**record["transfer"]) if record.get("transfer") else None
    caching = transfer is not None and transfer.cache_features
    if transfer is not None and dist.world_size > 1 and (caching or transfer.unfreeze):
        raise UsageError("a linear probe on cached features and gradual unfreezing run in one process, "
                         "not under torchrun")

    # data: each process takes its share of every global batch
    spec = get_model_spec(options.model)
    pretrained = None
    if transfer is not None and transfer.init_weights:
        from ..transfer.pretrained import load_pretrained

        pretrained = load_pretrained(options.model, transfer.init_weights, image_size=transfer.image_size,
                                     **record["model_kwargs"])
        preprocessing = pretrained.preprocessing
    else:
        with torch.device("meta"):
            preprocessing = create_model(options.model).preprocessing
    data_options = dict(
        seed=seed, device=device, val_size=recipe.val_size, val_fraction=recipe.val_fraction,
        # cached features are computed once, so a linear probe sees every image unaugmented
        augment=recipe.augment and not caching, drop_last=not caching,
        trivial_augment=recipe.trivial_augment, random_erasing=recipe.random_erasing,
        channels_last=options.channels_last, num_workers=options.num_workers, cache_dir=options.cache_dir,
        pipeline=options.pipeline,
        split=record.get("split"),
        # CIFAR-family nets normalise with the training set's own statistics (the paper's mean subtraction);
        # pretrained weights with the statistics they were trained with
        preprocessing=preprocessing if spec.family == "imagenet" or pretrained is not None else None)
    train_loader, val_loader, info = build_loaders(record["data"], batch_size=recipe.batch_size // dist.world_size,
                                                   rank=dist.rank, world_size=dist.world_size, **data_options)
    if dist.world_size > 1 and dist.is_main:
        # rank 0 evaluates the whole validation split, unsharded
        _, val_loader, _ = build_loaders(record["data"], batch_size=recipe.batch_size, rank=0, world_size=1,
                                         **{**data_options, "split": info.split})
    if info.num_classes < 2:
        raise UsageError(f"{record['data']}: found {info.num_classes} class; training needs at least two")
    record["split"] = info.split
    record["classes"] = info.classes
    steps_per_epoch = len(train_loader)
    if steps_per_epoch == 0:
        raise UsageError(f"{record['data']}: {info.train_size} training images make no batch of "
                         f"{recipe.batch_size // dist.world_size}")
    total_steps = recipe.iterations if recipe.iterations is not None else int(round(recipe.epochs * steps_per_epoch))
    steps_per_unit = 1.0 if recipe.iterations is not None else float(steps_per_epoch)
    eval_interval = max(1, total_steps // recipe.evaluations)

    # model, initialised from the seed (He et al. 2015), or pretrained with a fresh head for these classes
    torch.manual_seed(seed)
    if pretrained is not None:
        model = pretrained
        model.reset_classifier(info.num_classes)
        if "num_classes" in model.arch_kwargs:  # the file's head size would otherwise be recorded
            model.arch_kwargs = {**model.arch_kwargs, "num_classes": info.num_classes}
    else:
        model = create_model(options.model, num_classes=info.num_classes, **record["model_kwargs"])
    if transfer is not None and transfer.freeze_bn:
        model = freeze_batchnorm(model)
    model.preprocessing = dataclasses.replace(model.preprocessing, mean=tuple(info.mean), std=tuple(info.std),
                                              input_size=(info.channels, *info.image_size))
    model.classes = list(info.classes)
    depth = _depth(model)
    if options.sync_bn and dist.world_size > 1:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    model.to(device)
    if options.channels_last:
        model.to(memory_format=torch.channels_last)
    starts = _training_starts(model, transfer, total_steps) if transfer is not None else None
    if starts is not None:
        # the optimiser holds every parameter that trains at some step; frozen ones have no gradient
        for name, p in model.named_parameters():
            p.requires_grad_(starts[name] is not None)
    optimizer = torch.optim.SGD(_param_groups(model, recipe, transfer.lr_mult if transfer else None),
                                lr=recipe.lr, momentum=recipe.momentum,
                                nesterov=recipe.nesterov)
    scaler = torch.amp.GradScaler(device.type, enabled=options.amp == "fp16")
    ema = copy.deepcopy(model).eval().requires_grad_(False) if recipe.ema_decay > 0 else None

    start_step, best_top1 = 0, -math.inf
    if checkpoint is not None:
        weights, state = load_checkpoint_state(out, checkpoint)
        model.load_state_dict(weights)
        optimizer.load_state_dict(state["optimizer"])
        scaler.load_state_dict(state["scaler"])
        if ema is not None:
            ema.load_state_dict(state["ema"])
        start_step, best_top1 = state["step"], state["best_top1"]
        torch.set_rng_state(state["torch_rng"])
    if dist.is_main:
        out.mkdir(parents=True, exist_ok=True)
        write_config(out, record)
        if checkpoint is not None:
            truncate_metrics(out, start_step)
            if options.keep_snapshots:  # a kill may have landed between the checkpoint and its snapshot
                keep_snapshot(out, out / checkpoint["weights"])
    writer = None
    if options.tensorboard and dist.is_main:
        writer = SummaryWriter(str(out / "tensorboard"))

    if caching:
        from ..transfer.features import cached_feature_loaders

        # linear probe: the frozen backbone runs once; the steps train the classifier on its features
        train_loader, val_loader = cached_feature_loaders(model, train_loader, val_loader, out / "features.safetensors",
                                                          batch_size=recipe.batch_size, seed=seed)
    net = dist.wrap(model) if not caching else model.fc
    if options.compile or options.compile_mode:
        net = torch.compile(net, mode=options.compile_mode)
    metadata = dict(run=str(out), recipe=record["recipe_name"], data=record["data"], split=info.split,
                    seed=seed, depth=depth)
    if pretrained is not None:
        metadata["pretrained"] = transfer.init_weights
    if options.keep_snapshots and dist.is_main and start_step == 0:
        save_initial_snapshot(out, model, classes=list(info.classes), metadata=metadata)
    progress = _Progress(total_steps, start_step, options.progress, options.log, silent=not dist.is_main)
    progress.line(f"training {options.model} ({depth} layers) on {info.source}: {info.train_size} train / "
                  f"{info.val_size} val images, {info.num_classes} classes, {total_steps} iterations of "
                  f"{recipe.batch_size} on {dist.world_size} x {device}"
                  + (f", resuming at step {start_step}" if start_step else ""))

    step = start_step
    last_eval: dict = {}
    # on a GPU, reading the loss forces a sync: check it every few steps instead of every step
    check_every = 1 if device.type == "cpu" else 25
    pending_loss = torch.zeros((), dtype=torch.float64, device=device)  # sum of loss x images
    pending_correct = torch.zeros((), dtype=torch.float64, device=device)
    pending_steps, pending_seen = 0, 0
    totals = dict(loss=0.0, correct=0.0, seen=0)  # since the last evaluation
    step_time, step_images = 0.0, 0
    model.train()
    tick = time.perf_counter()  # step times include fetching the batch, so images/s is end to end
    while step < total_steps:
        epoch, batch_index = divmod(step, steps_per_epoch)
        for images, labels in train_loader.epoch_batches(epoch, start_batch=batch_index):
            lr = learning_rate(recipe, step, total_steps, steps_per_unit, depth)
            for group in optimizer.param_groups:
                group["lr"] = lr * group.get("lr_mult", 1.0)
            if starts is not None:
                _freeze_for_step(model, starts, step)
            targets = labels
            if recipe.mixup > 0 or recipe.cutmix > 0:
                images, targets = _mix(images, labels, info.num_classes, recipe, seed, step)
            optimizer.zero_grad(set_to_none=True)
            for part in range(micro_batches):
                # strided parts: exactly the images process ``part`` would get under torchrun
                x, t, y = images[part::micro_batches], targets[part::micro_batches], labels[part::micro_batches]
                with _bn_statistics_frozen(model, part > 0), dist.no_sync_unless(net, part == micro_batches - 1), \
                        autocast_context(device, options.amp):
                    logits = net(x)
                loss = F.cross_entropy(logits.float(), t, label_smoothing=recipe.label_smoothing)
                scaler.scale(loss / micro_batches).backward()
                pending_loss += loss.detach().double() * len(y)
                pending_correct += (logits.detach().argmax(1) == y).sum()
            scaler.step(optimizer)
            scaler.update()
            if ema is not None:
                _update_ema(ema, model, recipe.ema_decay)
            step += 1
            if options.on_step is not None:
                options.on_step(step, model)
            pending_steps += 1
            pending_seen += len(labels) * dist.world_size
            now = time.perf_counter()
            step_time += now - tick
            tick = now
            step_images += len(labels) * dist.world_size
            evaluate_now = step % eval_interval == 0 or step == total_steps
            if step % check_every == 0 or evaluate_now:
                loss_sum, correct = dist.sum(pending_loss).item(), dist.sum(pending_correct).item()
                if not math.isfinite(loss_sum):
                    progress.close()
                    _diverged(out, step, pending_steps, loss_sum)
                totals["loss"] += loss_sum
                totals["correct"] += correct
                totals["seen"] += pending_seen
                progress.update(pending_steps, loss=f"{loss_sum / pending_seen:.3f}",
                                acc=f"{100.0 * correct / pending_seen:.1f}%", lr=f"{lr:.3g}",
                                img_s=f"{step_images / max(step_time, 1e-9):.0f}")
                pending_loss.zero_()
                pending_correct.zero_()
                pending_steps, pending_seen = 0, 0
            if evaluate_now:
                row = dict(step=step, epoch=round(step / steps_per_epoch, 3), lr=lr,
                           train_loss=totals["loss"] / totals["seen"],
                           train_error=100.0 - 100.0 * totals["correct"] / totals["seen"],
                           images_per_sec=round(step_images / max(step_time, 1e-9), 1))
                if dist.is_main:
                    row, best_top1 = _evaluate_and_save(
                        out, row, model, ema, val_loader, info, options, best_top1, metadata, caching,
                        state=dict(optimizer=optimizer.state_dict(), scaler=scaler.state_dict(),
                                   ema=ema.state_dict() if ema is not None else None,
                                   torch_rng=torch.get_rng_state()))
                    progress.line(_format_row(row, total_steps))
                    if writer is not None:
                        for key, value in row.items():
                            if isinstance(value, (int, float)) and key != "step":
                                writer.add_scalar(key, value, step)
                dist.barrier()
                last_eval = row
                totals = dict(loss=0.0, correct=0.0, seen=0)
                step_time, step_images = 0.0, 0
                tick = time.perf_counter()
            if step >= total_steps:
                break
    progress.close()
    if writer is not None:
        writer.close()
    return last_eval


def _format_row(row: dict, total_steps: int) -> str:
    text = (f"step {row['step']}/{total_steps} lr {row['lr']:.4g} train loss {row['train_loss']:.4f} "
            f"error {row['train_error']:.2f}%")
    if "val_top1" in row:
        text += f" | val loss {row['val_loss']:.4f} error {row['val_error']:.2f}% top-1 {row['val_top1']:.2f}%"
    return text + f" | {row['images_per_sec']:.0f} images/s"


def _evaluate_and_save(out: Path, row: dict, model: nn.Module, ema: Optional[nn.Module], val_loader, info,
                       options: TrainOptions, best_top1: float, metadata: dict, on_features: bool,
                       state: dict) -> tuple[dict, float]:
    """Evaluate on the validation split, append the metrics line, write the checkpoint
    (and ``best.safetensors`` when the validation accuracy improved). Rank 0 only.
    ``on_features``: the validation loader yields cached features, for the classifier alone."""
    evaluated = ema if ema is not None else model
    if val_loader is not None:
        result = evaluate(evaluated.fc if on_features else evaluated, val_loader.epoch_batches(0), info.num_classes,
                          amp=options.amp)
        row.update(val_loss=result["loss"], val_top1=result["top1"], val_top5=result["top5"],
                   val_error=100.0 - result["top1"], val_n=result["n"])
    append_metrics(out, row)
    classes = list(info.classes)
    score = row.get("val_top1", -row["train_loss"])
    improved = score > best_top1
    best_top1 = max(best_top1, score)
    # the checkpoint first: a kill between the two leaves best.safetensors one step behind, never ahead
    weights = save_checkpoint(out, model, {**state, "best_top1": best_top1}, step=row["step"], classes=classes,
                              metadata=metadata)
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


@torch.no_grad()
def _update_ema(ema: nn.Module, model: nn.Module, decay: float) -> None:
    for e, p in zip(ema.parameters(), model.parameters()):
        e.lerp_(p, 1.0 - decay)
    for e, b in zip(ema.buffers(), model.buffers()):
        e.copy_(b)
