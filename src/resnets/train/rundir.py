"""Run directories: what a run is (``config.json``), and whether a directory may be used as asked.

A new run gets its record from the options, the recipe and the defaults; a resumed run must be
given the options it was started with (any that are given) and continues from its last
complete checkpoint. Files are written by ``checkpoint.py``; nothing is written here.
"""

from __future__ import annotations

import contextlib
import dataclasses
from pathlib import Path
from typing import Iterator, Optional

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no advisory locks, runs are not guarded
    fcntl = None

import torch

from .._io import sha256_file
from .checkpoint import RunDirError, last_checkpoint, read_config
from ..weights.named import default_weights, weights_tag
from .config import Distillation, RunConfig
from .options import TrainOptions
from .._precision import resolve_amp, resolve_channels_last
from .recipe import Recipe, load_recipe

DEFAULT_DATA = "sample:cifar10"
DEFAULT_RECIPE = "paper-cifar"
# without --data: the 2,000-image CIFAR-10 sample shipped with the package, 400 of them held out;
# without --recipe either, the paper's CIFAR recipe shortened to about a minute on two CPU cores
SAMPLE_DEFAULTS = dict(iterations=200, val_size=400, evaluations=10)
# what a --recipe of the user's keeps on the sample: its own length and evaluations
_RECIPE_OWN = ("iterations", "evaluations")


def resolve_run(options: TrainOptions, world_size: int, device: torch.device) -> tuple[RunConfig, Optional[dict]]:
    """The run's configuration and its last checkpoint, refusing a run directory that holds something else:
    defaults < recipe file < flags for a new run; the recorded configuration for a resumed one, with which every
    flag given must agree. Precision and memory layout are resolved for ``device`` when the run starts and kept,
    so a resumed run computes as it did. Nothing is written here."""
    out = Path(options.out)
    record = read_config(out) if out.exists() else None
    if record is not None and record.get("model") != options.model:
        raise RunDirError(f"{out} holds a run of {record.get('model')!r}, not {options.model!r}; "
                          f"choose another --out")
    if record is None and out.exists() and (out / "last.json").exists():
        raise RunDirError(f"{out} holds a checkpoint but no config.json; choose another --out")
    if record is not None and not options.resume:
        raise RunDirError(f"{out} already holds a run of {options.model}; pass --resume to continue it "
                          f"or choose another --out")
    if options.resume and record is None:
        raise RunDirError(f"--resume: {out} holds no run to resume (no config.json)")

    if record is not None:
        recorded = RunConfig.from_json(record, str(out / "config.json"))
        given = _settings(options, world_size, device, fill=False, recorded=recorded)
        recipe = build_recipe(options, base=record["recipe"])
        clashes = [clash for k, v in given.items() if v is not None
                   for clash in _differences(k, _as_recorded(getattr(recorded, k)), _as_recorded(v))]
        clashes += [clash for k, v in recipe.to_dict().items()
                    for clash in _differences(k, record["recipe"].get(k), v)]
        if clashes:
            raise RunDirError(f"--resume: {out} was started with other options: {'; '.join(clashes)}; resume with "
                              f"the run's own options (they are in its config.json) or start a new --out", clashes)
        return recorded, last_checkpoint(out)

    options = _with_sample_defaults(options)
    return RunConfig(model=options.model, recipe=build_recipe(options),
                     **_settings(options, world_size, device, fill=True)), None


def _settings(options: TrainOptions, world_size: int, device: torch.device, fill: bool,
              recorded: Optional[RunConfig] = None) -> dict:
    """The run's settings from the options besides the model and the recipe: with ``fill``, every one (the
    defaults where an option is not given), for a new run; without, only those given (the rest None), to be
    compared with a resumed run's record."""
    def given(value, default):
        return default if value is None and fill else value

    return dict(
        data=given(options.data, DEFAULT_DATA), seed=given(options.seed, 0),
        micro_batches=given(options.micro_batches, 1), world_size=world_size,
        model_kwargs=given(options.model_kwargs or None, {}),
        amp=resolve_amp(options.amp, device) if fill or options.amp != "auto" else None,
        channels_last=resolve_channels_last(options.channels_last, device) if fill else options.channels_last,
        transfer=options.hook.record() if options.hook is not None else None,
        distillation=distillation_config(options),
        # another --recipe is another run (its values would otherwise be silently the recorded ones)
        recipe_name=given(options.recipe, DEFAULT_RECIPE),
        # the pipeline chosen when the run started (runs of before it was recorded take any); a new run records
        # the one its data chooses
        **({} if fill else {"pipeline": options.pipeline if options.pipeline != "auto"
                            and recorded.pipeline is not None else None}))


def _as_recorded(value):
    """A setting as config.json holds it (the teacher as its mapping)."""
    return value.to_json() if isinstance(value, Distillation) else value


def _with_sample_defaults(options: TrainOptions) -> TrainOptions:
    """The sample, named or not, gets the sample's defaults (a shortened run) where the options leave them."""
    if options.data not in (None, DEFAULT_DATA):
        return options
    if options.epochs is not None:
        options = dataclasses.replace(options, iterations=None)
    return dataclasses.replace(options, **{k: v for k, v in SAMPLE_DEFAULTS.items()
                                           if getattr(options, k) is None and
                                           not (k == "iterations" and options.epochs is not None) and
                                           not (options.recipe is not None and k in _RECIPE_OWN)})


def _differences(key: str, recorded, given) -> list[str]:
    """``key (recorded R, given G)`` for each value that differs; in two dicts (a fine-tuning's
    transfer, a teacher's settings), only the entries that differ, as ``key.entry``."""
    if isinstance(recorded, dict) and isinstance(given, dict):
        return [clash for k in sorted(recorded.keys() | given.keys())
                for clash in _differences(f"{key}.{k}", recorded.get(k), given.get(k))]
    return [] if recorded == given else [f"{key} (recorded {_shown(recorded)}, given {_shown(given)})"]


def _shown(value):
    """A recorded or given value in words: floats to 6 significant digits (a milestone scaled with the run
    is 3200.0000000000005), the rest as Python writes it."""
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, list):
        return "[" + ", ".join(str(_shown(v)) for v in value) + "]"
    return repr(value)


def weights_digests(out: Path, config: RunConfig, resumed: bool, **models) -> dict:
    """The sha256 of each file a run starts from or distils from (``init_weights=``, ``teacher_weights=``: a
    model read from a file, or None), for config.json's ``weights_sha256``. A resumed run must read the same
    bytes: a name that now resolves to another file (named weights of a later package, a file overwritten
    since) would silently train on with other weights, and is refused in one line."""
    digests = {key: sha256_file(model.checkpoint_info.path) for key, model in models.items()
               if getattr(model, "checkpoint_info", None) is not None}
    recorded = config.weights_sha256  # runs of before it was recorded: what they read now
    changed = [key for key, digest in digests.items() if key in recorded and recorded[key] != digest]
    if resumed and changed:
        key = changed[0]
        verb, name = {"init_weights": ("started from", (config.transfer or {}).get("init_weights")),
                      "teacher_weights": ("distils from", config.distillation and config.distillation.weights)}[key]
        raise RunDirError(f"--resume: {out} {verb} {name}, which now holds other weights (sha256 "
                          f"{digests[key][:12]}..., the run read {recorded[key][:12]}...); resume it where those "
                          f"weights are or start a new --out",
                          [f"{key} (recorded sha256 {recorded[key]}, found {digests[key]})"])
    return {**recorded, **digests}


def distillation_config(options: TrainOptions) -> Optional[Distillation]:
    """The teacher and the loss's settings; None without --teacher. Without --teacher-weights the teacher's
    default named weights are recorded by tag, so a resume uses the same ones even where a later version of the
    package changes the model's default."""
    if options.teacher is None:
        return None
    weights = options.teacher_weights
    if weights is None:
        named = default_weights(options.teacher)
        weights = named.tag if named is not None else None  # None: the teacher refuses in one line when loaded
    else:  # named weights by tag, so that `cifar10` and `resnet56.cifar10` are one run
        weights = weights_tag(options.teacher, weights)
    return Distillation(options.teacher, weights,
                        **{k: v for k, v in dict(alpha=options.distill_alpha,
                                                 temperature=options.distill_temperature).items() if v is not None})


@contextlib.contextmanager
def run_lock(run_dir: Path) -> Iterator[None]:
    """Hold ``RUN_DIR/.lock`` for the whole run, so that a second training started on the same
    directory is refused instead of interleaving its files with the first's. The operating
    system releases the lock when the holder exits in any way (a kill included), so a lock
    left by a dead process never blocks. The empty file stays with the run; a refused run changes
    nothing, and a run that wrote nothing in a directory it created removes it."""
    if fcntl is None:
        yield
        return
    created = not run_dir.exists()
    run_dir.mkdir(parents=True, exist_ok=True)
    lock = run_dir / ".lock"
    handle = open(lock, "a+")
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunDirError(f"{run_dir} is in use by another training process; wait for it to end or choose "
                              f"another --out") from None
        try:
            yield
        finally:
            # a run refused before writing anything leaves no directory behind (removed while still locked)
            if created and [p.name for p in run_dir.iterdir()] == [".lock"]:
                lock.unlink()
                run_dir.rmdir()
    finally:
        handle.close()  # closing releases the lock


def build_recipe(options: TrainOptions, base: Optional[dict] = None) -> Recipe:
    recipe = Recipe(**base) if base is not None else load_recipe(options.recipe or DEFAULT_RECIPE)
    recipe = recipe.with_length(options.iterations, options.epochs)
    changes = {k: v for k, v in dict(batch_size=options.batch_size, lr=options.lr, evaluations=options.evaluations,
                                      val_size=options.val_size).items() if v is not None}
    return dataclasses.replace(recipe, **changes) if changes else recipe


__all__ = ["DEFAULT_DATA", "DEFAULT_RECIPE", "run_lock", "SAMPLE_DEFAULTS", "build_recipe", "distillation_config",
           "resolve_run"]
