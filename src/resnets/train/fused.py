"""Several independent trainings in one process on one device: seeds of one network, or networks of several
depths, side by side (``resnets train resnet20 --seeds 0,1,2,3,4``, ``resnets train resnet20,resnet32,resnet44``).

Each member is a whole run of its own, set up by :func:`~resnets.train.engine.setup` in its own directory
(``OUT/resnet20-seed0``, ``OUT/resnet32``, ...): its seed, data order, augmentation, optimiser state,
learning-rate schedule, checkpoints, ``metrics.jsonl`` and exact resume are those of the same run trained
alone, and its weights after any number of steps are the same, bit for bit (a test compares them). The loop
advances the members a step each in turn; on a GPU each member's steps go to a CUDA stream of its own, so the
kernels of one member's step overlap another's instead of leaving the card idle between launches (with
``--compile-mode reduce-overhead`` a member's step is one CUDA-graph replay). A member whose loss diverges
stops alone, keeping its last good checkpoint; the others go on. Ctrl-C checkpoints every member at the step
it finished; ``--resume`` (the same command) continues each from its own last checkpoint.
"""

from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch

from ..errors import UsageError
from .distributed import Distributed
from .engine import (Run, TrainingDiverged, TrainingInterrupted, TrainResult, after_step, announce, ctrl_c,
                     finish, interrupt, result_of, setup, train_step)
from .engine import train as train_one
from .options import TrainOptions
from .rundir import run_lock

MAX_MEMBERS = 64  # one process, one device: more is a typo, and each member holds its data on the device


def member_names(options: TrainOptions) -> list[tuple[str, int, str]]:
    """(model, seed, directory name) of each member: one per model and seed, models first."""
    models = [m.strip() for m in options.model.split(",")]
    if any(not m for m in models):
        raise UsageError(f"model list {options.model!r} has an empty name; give names separated by commas, "
                         f"e.g. resnet20,resnet32")
    seeds = list(options.seeds) if options.seeds is not None else [options.seed if options.seed is not None else 0]
    if len(set(models)) != len(models) or len(set(seeds)) != len(seeds):
        raise UsageError(f"each model and each seed may be named once, got models {models} and seeds {seeds}")
    if len(models) * len(seeds) > MAX_MEMBERS:
        raise UsageError(f"{len(models)} models x {len(seeds)} seeds make {len(models) * len(seeds)} members; "
                         f"one process trains at most {MAX_MEMBERS}")
    return [(m, s, m if options.seeds is None else f"{m}-seed{s}") for m in models for s in seeds]


def member_options(options: TrainOptions) -> list[TrainOptions]:
    """The options of each member: the same run, with its model, its seed and its directory under ``out``. On
    ``resume``, a member killed before its directory held a run starts afresh; the others continue."""
    out = Path(options.out)
    return [dataclasses.replace(options, model=model, seed=seed, seeds=None, out=out / name,
                                resume=options.resume and (out / name / "config.json").exists())
            for model, seed, name in member_names(options)]


@dataclass
class FusedResult:
    """What a fused training returns: each member's result, by its directory name."""

    out: Path
    members: dict  # name -> TrainResult

    @property
    def diverged(self) -> list[str]:
        return [name for name, result in self.members.items() if result.diverged]

    def to_dict(self) -> dict:
        return {name: {**result.to_dict(), **({"diverged": result.diverged} if result.diverged else {})}
                for name, result in self.members.items()}


def train(options: TrainOptions) -> "TrainResult | FusedResult":
    """Train (or resume) a run: one network (:func:`resnets.train.engine.train`), or several side by side where
    the options name several models or seeds (:func:`train_fused`)."""
    return train_fused(options) if options.fused else train_one(options)


def train_fused(options: TrainOptions) -> FusedResult:
    """Train (or resume) every member of ``options`` (several models, or ``seeds``) in this process."""
    members = member_options(options)
    dist = Distributed.from_environment(options.device)
    try:
        if dist.world_size > 1:
            raise UsageError("several models or seeds train in one process on one device; under torchrun, "
                             "train one model and seed per command")
        with contextlib.ExitStack() as locks:
            for member in members:
                locks.enter_context(run_lock(Path(member.out)))
            runs = [setup(member, dist) for member in members]
            results = fused_loop(runs)
    finally:
        dist.close()
    return FusedResult(Path(options.out), {Path(run.options.out).name: results[i] for i, run in enumerate(runs)})


def fused_loop(runs: list[Run]) -> dict[int, TrainResult]:
    """A step of each member in turn until every one has finished or diverged."""
    streams = [torch.cuda.Stream(run.device) if run.device.type == "cuda" else None for run in runs]
    active = {}
    results: dict[int, TrainResult] = {}
    with ctrl_c(True) as interrupted:
        for i, run in enumerate(runs):
            announce(run)
            run.model.train()
            active[i] = iter(run.batches())
        while active:
            for i in list(active):
                result = _advance(runs[i], active[i], streams[i])
                if result is not None:
                    results[i] = result
                    del active[i]
            if interrupted and active:
                _interrupt_all([runs[i] for i in active])
    return results


def _advance(run: Run, batches, stream: Optional["torch.cuda.Stream"]) -> Optional[TrainResult]:
    """One step of one member (on its own CUDA stream where it has one); its result once it has finished or
    diverged, else None."""
    context = torch.cuda.stream(stream) if stream is not None else contextlib.nullcontext()
    try:
        with context:
            if stream is not None:
                stream.wait_stream(torch.cuda.default_stream(run.device))
            batch = next(batches, None)
            if batch is None:
                return finish(run)
            train_step(run, *batch)
            after_step(run)
    except TrainingDiverged as error:
        run.progress.line(f"{run.out.name}: {error} The other members go on.")
        return result_of(run, diverged=str(error))
    return None


def _interrupt_all(runs: list[Run]) -> None:
    """Ctrl-C: every member still training checkpoints the step it finished, then the run stops."""
    for run in runs:
        with contextlib.suppress(TrainingInterrupted):
            interrupt(run)
    raise TrainingInterrupted(f"interrupted; each member's checkpoint is in {Path(runs[0].options.out).parent}: "
                              f"resume with --resume (the same command)")


__all__ = ["FusedResult", "MAX_MEMBERS", "member_names", "member_options", "train", "train_fused"]
