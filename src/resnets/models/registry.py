"""The model registry: names, builders and each model's default preprocessing.

A leaf of the package: it builds networks and knows nothing of checkpoints; ``resnets.factory``
joins it with the weights.
"""

from __future__ import annotations

import difflib
import fnmatch
import hashlib
import importlib
import importlib.util
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Optional, Sequence, Union

from torch import nn

from ..errors import MissingFileError, UsageError
from .preprocessing import Preprocessing


@dataclass(frozen=True)
class ModelSpec:
    name: str
    builder: Callable[..., nn.Module]
    family: str  # "imagenet" or "cifar"
    kind: str  # "residual", "plain" or "preact"
    preprocessing: Preprocessing
    description: str


_MODELS: dict[str, ModelSpec] = {}


def register_model(family: str, kind: str, preprocessing: Preprocessing) -> Callable:
    """Decorator registering a builder ``f(**kwargs) -> nn.Module`` under its own name."""

    def decorate(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        name = builder.__name__
        if name in _MODELS:
            raise UsageError(f"model {name!r} is already registered")
        doc = (builder.__doc__ or "").strip().splitlines()
        _MODELS[name] = ModelSpec(name, builder, family, kind, preprocessing, doc[0] if doc else "")
        return builder

    return decorate


def import_models(source: str) -> list[str]:
    """Import a module that registers models of its own (``@register_model``): a dotted module
    name importable from ``sys.path``, or the path of a ``.py`` file. Returns the names it added,
    so that the studies and the engine can be run on a researcher's own architectures."""
    before = set(_MODELS)
    path = Path(source)
    if source.endswith(".py"):
        if not path.is_file():
            raise MissingFileError(f"--import {source}: no such file")
        # one module per file, imported once per process (its models register once)
        module_name = "resnets_user_models_" + hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:12]
        if module_name not in sys.modules:
            spec = importlib.util.spec_from_file_location(module_name, path)
            if spec is None or spec.loader is None:
                raise UsageError(f"--import {source}: not a Python module")
            module = importlib.util.module_from_spec(spec)
            sys.modules[module_name] = module
            try:
                spec.loader.exec_module(module)
            except BaseException:
                del sys.modules[module_name]
                raise
    else:
        try:
            importlib.import_module(source)
        except ModuleNotFoundError as error:
            raise UsageError(f"--import {source}: no module of that name ({error}); give a module on "
                             f"sys.path or the path of a .py file") from None
    return sorted(set(_MODELS) - before, key=_natural_key)


def list_models(filter: Union[str, Sequence[str], None] = None, exclude: Union[str, Sequence[str], None] = None,
                family: Optional[str] = None) -> list[str]:
    """Registered model names, sorted, optionally filtered by glob pattern(s) and family."""

    def patterns(value: Union[str, Sequence[str], None]) -> list[str]:
        return [value] if isinstance(value, str) else list(value or [])

    names: Iterable[str] = _MODELS
    if filter:
        names = [n for n in names if any(fnmatch.fnmatchcase(n, p) for p in patterns(filter))]
    if exclude:
        names = [n for n in names if not any(fnmatch.fnmatchcase(n, p) for p in patterns(exclude))]
    if family:
        names = [n for n in names if _MODELS[n].family == family]
    return sorted(names, key=_natural_key)


def _natural_key(name: str) -> tuple:
    return tuple(int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name))


def get_model_spec(name: str) -> ModelSpec:
    try:
        return _MODELS[name]
    except KeyError:
        close = difflib.get_close_matches(name, list(_MODELS), n=3)
        hint = (f"; did you mean {', '.join(close)}?" if close
                else "; see `resnets list` (resnets.list_models() in Python)")
        raise UsageError(f"unknown model {name!r}{hint}") from None


def build_model(name: str, *, features_only: bool = False, out_indices: Optional[Sequence[int]] = None,
                **kwargs) -> nn.Module:
    """Build a registered model by name, with freshly initialised weights.

    Keyword arguments go to the ResNet (``num_classes``, ``in_chans``, ``shortcut``,
    ``variant``, ``zero_init_residual``, ``norm_layer``, ...). ``features_only=True``
    returns a network giving the feature maps of ``out_indices`` (0: stem, k: stage k).
    Loading weights is ``resnets.create_model(name, weights=...)``.
    """
    spec = get_model_spec(name)
    if out_indices is not None and not features_only:
        raise UsageError("out_indices is only used with features_only=True")
    if features_only:
        kwargs["features_only"] = True
        kwargs["out_indices"] = out_indices
    try:
        model = spec.builder(**kwargs)
    except TypeError as error:  # a keyword the builder does not take or sets itself: the caller's option, not a bug
        text = str(error)
        fixed = re.search(r"multiple values for (?:keyword )?argument '(\w+)'", text)
        if fixed is not None and fixed.group(1) in kwargs:
            # resnet20 is cifar_resnet(depth=20, ...): the name already says what depth=56 would change
            key = fixed.group(1)
            raise UsageError(f"{name} sets {key!r} itself (the name says it), so the option {key}="
                             f"{str(kwargs[key])[:40]} cannot be given; leave it out, or choose the model with the "
                             f"{key} you want (`resnets list`)") from None
        wrong = re.search(r"unexpected keyword argument '(\w+)'", text)
        if wrong is None or wrong.group(1) not in kwargs:
            raise
        raise UsageError(f"{name} takes no option {wrong.group(1)!r}; its options are the keyword arguments of "
                         f"the ResNet class (num_classes, in_chans, shortcut, zero_init_residual, ...)") from None
    model.arch = name
    model.arch_kwargs = {k: v for k, v in kwargs.items() if k not in ("features_only", "out_indices")}
    model.preprocessing = spec.preprocessing.for_channels(kwargs.get("in_chans", 3))
    return model
