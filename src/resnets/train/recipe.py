"""Training recipes: data files (TOML) describing the optimiser, schedule and regularisation.

Shipped recipes live in ``resnets/recipes/*.toml`` and are named by their file stem
(``paper-cifar``, ``paper-imagenet``, ``modern``); a path to a user's own file works too.
Keys may be grouped in tables (``[optimizer]``, ``[schedule]``, ...) for readability; every
key must be a field of :class:`Recipe`, with the field's type.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import sys
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Optional, Union

from .._options import check_bounds, option, same_as
from ..data.pipeline import DataConfig
from ..errors import UsageError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

RECIPE_DIR = Path(__file__).resolve().parent.parent / "recipes"
SECTIONS = ("optimizer", "schedule", "regularization", "averaging", "data", "evaluation")


class RecipeError(UsageError):
    """A recipe file that cannot be trusted: unknown key, wrong type, inconsistent values."""


# a run's length and counts, bounded where they are declared: 10^8 iterations is some 200x ImageNet's 90 epochs
# at batch 256; beyond, a typo (or an attack) would only be found when the kernel kills the process
MAX_ITERATIONS = 10**8
MAX_EPOCHS = 10**5
MAX_EVALUATIONS = 10**5
SCHEDULES = ("step", "cosine", "constant")
WARMUP_MODES = ("linear", "constant")


@dataclass
class Recipe:
    """How a network is trained: every knob of the optimiser, the schedule, the regularisation, the weight
    averaging, the data and the evaluations, each declared once here with its bounds and choices. The
    command line's flags and the data layer's options that take the same knob are declared ``same_as`` these.
    Recipe files group the keys in sections (:data:`SECTIONS`)."""

    name: str = "custom"
    description: str = ""
    # length: exactly one of the two; milestones and warm-up are in the same unit
    iterations: Optional[int] = option(help="run length in iterations (the schedule is scaled)", low=1,
                                       high=MAX_ITERATIONS)
    epochs: Optional[float] = option(help="run length in epochs (the schedule is scaled)", low=0, low_open=True,
                                     high=MAX_EPOCHS)
    batch_size: int = same_as(DataConfig, "batch_size", 128)
    # optimizer: SGD with momentum, as both papers
    lr: float = option(0.1, help="peak learning rate", low=0, low_open=True)
    momentum: float = option(0.9, low=0, high=1, high_open=True)
    nesterov: bool = False
    weight_decay: float = option(1e-4, low=0)
    no_weight_decay_on_norm_and_bias: bool = False
    # schedule: "step" (divide by 1/gamma at each milestone), "cosine" or "constant"
    schedule: str = option("step", choices=SCHEDULES)
    milestones: list = field(default_factory=list)
    gamma: float = option(0.1, low=0, low_open=True)
    min_lr: float = option(0.0, low=0)
    # warm-up: "linear" from 0 to lr, or "constant" at warmup_lr (the paper's ResNet-110 trick);
    # only for models of at least warmup_min_depth layers
    warmup: float = option(0.0, low=0)
    warmup_mode: str = option("linear", choices=WARMUP_MODES)
    warmup_lr: float = option(0.01, low=0)
    warmup_min_depth: int = option(0, low=0)
    # regularization
    label_smoothing: float = option(0.0, low=0, high=1, high_open=True)
    mixup: float = option(0.0, low=0)  # Beta(alpha, alpha); 0: off
    cutmix: float = option(0.0, low=0)
    # exponential moving average of the weights (and BatchNorm statistics); 0: off
    ema_decay: float = option(0.0, low=0, high=1, high_open=True)
    # stochastic weight averaging (Izmailov et al., 2018): from swa_start (in the run's unit) on, the weights at
    # the end of every epoch are averaged with equal weights, at a constant swa_lr (left out: the schedule's);
    # the average's BatchNorm statistics are recomputed over swa_bn_batches training batches before it is
    # evaluated and saved. The average is what the evaluations score and last/best.safetensors hold.
    swa_start: Optional[float] = option(low=0)
    swa_lr: Optional[float] = option(low=0)
    swa_bn_batches: int = option(50, low=1, high=MAX_EVALUATIONS)
    # data
    val_size: Optional[int] = same_as(DataConfig, "val_size")
    val_fraction: float = same_as(DataConfig, "val_fraction", 0.1)
    augment: bool = True
    trivial_augment: bool = False
    random_erasing: float = same_as(DataConfig, "random_erasing", 0.0)
    # input side (large pipeline): ``image_size`` for evaluation and the trained model's preprocessing
    # (default: the model's), ``train_image_size`` for the training crops (default: ``image_size``). Training
    # below the test size is the "FixRes" effect: random-resized crops enlarge objects, so a smaller training
    # crop matches the test's apparent object size, and each step is cheaper.
    image_size: Optional[int] = same_as(DataConfig, "image_size")
    train_image_size: Optional[int] = same_as(DataConfig, "train_image_size")
    # evaluation: evenly spaced over the run, each followed by a checkpoint
    evaluations: int = option(32, help="evaluations (and checkpoints) over the run", low=1, high=MAX_EVALUATIONS)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """The bounds and choices of each field (declared with it), then the rules between fields."""
        try:
            check_bounds(self)
        except UsageError as error:
            raise RecipeError(f"recipe {self.name!r}: {error}") from None
        if (self.iterations is None) == (self.epochs is None):
            raise RecipeError(f"recipe {self.name!r}: give exactly one of 'iterations' and 'epochs'")
        length = self.length
        if list(self.milestones) != sorted(self.milestones) or any(m <= 0 for m in self.milestones):
            raise RecipeError(f"recipe {self.name!r}: milestones must be positive and increasing, "
                              f"got {self.milestones}")
        unit = "iterations" if self.iterations is not None else "epochs"
        late = [m for m in self.milestones if m >= length]
        if late:  # a schedule that never happens is a recipe written for another length
            raise RecipeError(f"recipe {self.name!r}: milestone {late[0]:g} lies at or beyond the end of the run "
                              f"({length:g} {unit}); milestones are in the run's unit and must fall inside it")
        if self.swa_start is not None:
            if not 0 <= self.swa_start < length:
                raise RecipeError(f"recipe {self.name!r}: swa_start {self.swa_start:g} must lie in [0, {length:g}) "
                                  f"{unit}: averaging starts inside the run, in the run's unit")
            if self.ema_decay > 0:
                raise RecipeError(f"recipe {self.name!r}: ema_decay and swa_start are two ways of averaging the "
                                  f"weights; keep one")
        if self.swa_lr is not None and self.swa_start is None:
            raise RecipeError(f"recipe {self.name!r}: swa_lr needs swa_start and must not be negative, got "
                              f"{self.swa_lr}")
        if self.warmup >= length:
            raise RecipeError(f"recipe {self.name!r}: warmup {self.warmup:g} takes the whole run ({length:g} "
                              f"{unit}) or more; it is in the run's unit and must be shorter")
        unfinite = [f.name for f in fields(self) if isinstance(getattr(self, f.name), float)
                    and not math.isfinite(getattr(self, f.name))]
        if unfinite:
            raise RecipeError(f"recipe {self.name!r}: {unfinite[0]} must be a finite number, got "
                              f"{getattr(self, unfinite[0])}")

    @property
    def length(self) -> float:
        return self.iterations if self.iterations is not None else self.epochs

    def with_length(self, iterations: Optional[int] = None, epochs: Optional[float] = None) -> "Recipe":
        """A copy running for another length. Milestones and warm-up keep their place
        relative to the run when the unit stays; switching unit rescales them as fractions."""
        if iterations is None and epochs is None:
            return self
        if iterations is not None and epochs is not None:
            raise RecipeError("give --iterations or --epochs, not both")
        new_length = iterations if iterations is not None else epochs
        scale = new_length / self.length
        return dataclasses.replace(
            self, iterations=iterations, epochs=epochs,
            milestones=[m * scale for m in self.milestones],
            swa_start=None if self.swa_start is None else self.swa_start * scale,
            # the deep-net warm-up is a fixed number of iterations in the paper; it keeps its
            # length unless it would take more than a tenth of the shorter run
            warmup=min(self.warmup, 0.1 * new_length) if self.warmup_mode == "constant" else self.warmup * scale)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


_WORDS = {"str": "a string", "bool": "true or false", "int": "an integer", "float": "a number",
          "list": "a list of numbers"}


def _described(annotation: str) -> str:
    """A field's annotation in words: 'Optional[int]' -> 'an integer (or left out)'."""
    if annotation.startswith("Optional["):
        return _WORDS[annotation[len("Optional["):-1]] + " (or left out)"
    return _WORDS[annotation]


def _type_ok(value: Any, annotation: str) -> bool:
    """Check a TOML value against a field's annotation (as written in the dataclass)."""
    number = (int, float)
    checks = {
        "str": lambda v: isinstance(v, str),
        "bool": lambda v: isinstance(v, bool),
        "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
        "float": lambda v: isinstance(v, number) and not isinstance(v, bool),
        "list": lambda v: isinstance(v, list) and all(isinstance(x, number) and not isinstance(x, bool) for x in v),
    }
    optional = annotation.startswith("Optional[")
    base = annotation[len("Optional["):-1] if optional else annotation
    if value is None:
        return optional
    return checks[base](value)


def recipe_from_dict(data: dict, source: str = "recipe") -> Recipe:
    """Build a Recipe from a (possibly sectioned) mapping, naming any unknown key or wrong type."""
    flat: dict[str, Any] = {}
    known = {f.name: f for f in fields(Recipe)}
    for key, value in data.items():
        if key in SECTIONS and isinstance(value, dict):
            for inner, inner_value in value.items():
                flat[inner] = (f"{key}.{inner}", inner_value)
        else:
            flat[key] = (key, value)
    values = {}
    for key, (where, value) in flat.items():
        if key in SECTIONS and key not in known:  # a section name given a value instead of a table of keys
            raise RecipeError(f"{source}: {key!r} is a section, [{key}] followed by its keys, not a value "
                              f"({value!r})")
        if key not in known:
            close = difflib.get_close_matches(key, list(known), n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise RecipeError(f"{source}: unknown key {where!r}; {hint}known keys: {', '.join(sorted(known))} "
                              f"(top level or in the sections {', '.join(SECTIONS)})")
        annotation = str(known[key].type)
        if not _type_ok(value, annotation):
            raise RecipeError(f"{source}: {where!r} must be {_described(annotation)}, got {value!r}")
        values[key] = float(value) if annotation in ("float", "Optional[float]") and value is not None else value
    try:
        return Recipe(**values)
    except RecipeError as error:
        raise RecipeError(f"{source}: {error}") from None


def list_recipes() -> list[str]:
    return sorted(p.stem for p in RECIPE_DIR.glob("*.toml"))


def load_recipe(name_or_path: Union[str, Path]) -> Recipe:
    """A shipped recipe by name, or a TOML file by path."""
    path = Path(name_or_path)
    if not path.suffix and not path.exists():
        path = RECIPE_DIR / f"{name_or_path}.toml"
        if not path.exists():
            raise RecipeError(f"unknown recipe {name_or_path!r}; shipped recipes: {', '.join(list_recipes())}, "
                              f"or give a path to a .toml file")
    if not path.is_file():
        raise RecipeError(f"recipe file {path} {'is a directory' if path.is_dir() else 'not found'}; give the "
                          f"path of a .toml file or a shipped recipe's name")
    try:
        data = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise RecipeError(f"{path}: not valid TOML: {error}") from None
    data.setdefault("name", path.stem)
    return recipe_from_dict(data, str(path))


def learning_rate(recipe: Recipe, step: int, total_steps: int, steps_per_unit: float, depth: int = 0) -> float:
    """The learning rate of optimizer step ``step`` (0-based): a pure function of the step,
    so a resumed run needs no scheduler state."""
    if recipe.swa_lr is not None and step >= swa_start_step(recipe, steps_per_unit):
        return recipe.swa_lr
    warmup_steps = recipe.warmup * steps_per_unit
    if warmup_steps > 0 and step < warmup_steps and depth >= recipe.warmup_min_depth:
        if recipe.warmup_mode == "constant":
            return recipe.warmup_lr
        return recipe.lr * min(1.0, (step + 1) / warmup_steps)  # a warm-up shorter than a step never overshoots
    if recipe.schedule == "constant":
        return recipe.lr
    if recipe.schedule == "step":
        passed = sum(1 for m in recipe.milestones if step >= m * steps_per_unit)
        return recipe.lr * recipe.gamma ** passed
    # cosine from the end of the warm-up to the end of the run
    start = warmup_steps if depth >= recipe.warmup_min_depth else 0
    progress = min(1.0, max(0.0, (step - start) / max(1.0, total_steps - start)))
    return recipe.min_lr + 0.5 * (recipe.lr - recipe.min_lr) * (1 + math.cos(math.pi * progress))


def swa_start_step(recipe: Recipe, steps_per_unit: float) -> Optional[float]:
    """The step from which a recipe averages its weights (and runs at ``swa_lr``); None: no averaging."""
    return None if recipe.swa_start is None else recipe.swa_start * steps_per_unit
