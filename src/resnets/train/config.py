"""A run's configuration, typed: what ``config.json`` records, read back into the class that wrote it.

:class:`RunConfig` is resolved once per run (``rundir.resolve_run``: defaults < recipe file < flags, and on
resume the recorded configuration, with which any flag given must agree), written as ``config.json``
(:meth:`RunConfig.to_json`, the file's shape unchanged since runs first recorded it) and read back with
:meth:`RunConfig.from_json`, which also reads the records of older runs (keys added since take the value those
runs computed with).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Optional

from .._options import check_bounds, option
from ..errors import UsageError
from .checkpoint import RunDirError
from .distill import DEFAULT_ALPHA, DEFAULT_TEMPERATURE
from .recipe import Recipe, RecipeError


@dataclass(frozen=True)
class Distillation:
    """The teacher of a distilled run and the loss's settings."""

    teacher: str
    weights: Optional[str] = None  # named weights by tag, a file, a URL or hf-hub:; None: refused when loaded
    alpha: float = option(DEFAULT_ALPHA, help="weight of the teacher's soft target in the loss (default 0.5)",
                          low=0, low_open=True, high=1)
    temperature: float = option(DEFAULT_TEMPERATURE, help="softmax temperature of the soft targets (default 4)",
                                low=0, low_open=True)

    def __post_init__(self) -> None:
        check_bounds(self)

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class RunConfig:
    """Everything that decides what a run computes, in sections: the model, the data, the recipe (optimiser,
    schedule, regularisation, averaging, evaluations), the processes and precision, and the variations (a
    warm start or fine-tuning, distillation). Fields the data fixes when it is first read (``split``,
    ``pipeline``, ``classes``) and the digests of the files the run reads are None until then."""

    model: str
    data: str
    recipe: Recipe
    recipe_name: str
    seed: int = 0
    micro_batches: int = 1
    world_size: int = 1
    model_kwargs: dict = field(default_factory=dict)
    amp: str = "off"
    channels_last: bool = False
    transfer: Optional[dict] = None  # a TrainHook's record (warm start, fine-tuning)
    distillation: Optional[Distillation] = None
    split: Optional[dict] = None
    pipeline: Optional[str] = None  # None: a run of before the pipeline was recorded (either reads its data)
    classes: Optional[list] = None
    weights_sha256: dict = field(default_factory=dict)

    @property
    def averages(self) -> bool:
        """Whether the recipe keeps averaged weights (EMA or SWA)."""
        return self.recipe.swa_start is not None or self.recipe.ema_decay > 0

    def to_json(self) -> dict:
        """config.json's mapping: the recipe and the teacher as plain mappings, fields not yet known left out."""
        record = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        record["recipe"] = self.recipe.to_dict()
        record["distillation"] = self.distillation.to_json() if self.distillation is not None else None
        for key in ("split", "pipeline", "classes"):
            if record[key] is None:
                del record[key]
        return record

    @classmethod
    def from_json(cls, record: dict, source: str = "config.json") -> "RunConfig":
        """A recorded configuration, of today's runs or older ones; a record that cannot be one is refused
        naming the file and the key."""
        if not isinstance(record, dict):
            raise RunDirError(f"{source}: expected a JSON object, got {type(record).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        missing = [key for key in ("model", "data", "recipe") if key not in record]
        if missing:
            raise RunDirError(f"{source}: no {missing[0]!r}; the run directory cannot be resumed")
        values = {key: value for key, value in record.items() if key in known}
        try:
            values["recipe"] = Recipe(**record["recipe"])
            if record.get("distillation") is not None:
                values["distillation"] = Distillation(**record["distillation"])
        except (TypeError, RecipeError, UsageError) as error:
            raise RunDirError(f"{source}: its recipe or teacher cannot be read ({error}); the run directory "
                              f"cannot be resumed") from None
        values.setdefault("recipe_name", values["recipe"].name)
        values["model_kwargs"] = dict(values.get("model_kwargs") or {})
        values["weights_sha256"] = dict(values.get("weights_sha256") or {})
        return cls(**values)


__all__ = ["Distillation", "RunConfig"]
