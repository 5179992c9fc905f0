"""``create_model``: a registered architecture joined with weights.

The registry (``resnets.models``) builds networks and knows nothing of checkpoints; the
weights layer reads checkpoints and names published ones; this module, above both, builds
the network a checkpoint describes and loads it, adapting its first convolution and its
classifier where the model asked for differs from the weights.
"""

from __future__ import annotations

import fnmatch
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import torch
from torch import nn

from .errors import UsageError
from .models import build_model, get_model_spec
from .models import list_models as registry_list_models
from .weights import CheckpointError, apply_preprocessing, load_checkpoint, load_state_dict
from .weights.formats import check_fit, shortcut_option
from .weights.hub import is_repository, open_repository
from .weights.named import (Weights, checkpoint_model, default_weights, find_weights, list_weights, split_weights_name,
                            take_weights_name, torchvision_name)


class WeightsAdaptedWarning(UserWarning):
    """Weights loaded into a model that differs from them: a new, untrained classifier, or a first
    convolution adapted to another number of input channels."""


class NoDefaultWeights(UsageError):
    """Weights asked for by default (``pretrained=True``, a command without ``--weights``) for a model that has
    no named weights."""


@dataclass(frozen=True)
class WeightsChoice:
    """Which weights a model gets, and why (``choose_weights``)."""

    model: str  # the architecture, or the repository (hf-hub:..., local-dir:...) that brings its weights
    weights: Optional[str]  # a registered MODEL.TAG, a checkpoint's path or URL, a repository; None: see reason
    reason: str  # "given", "tagged" (MODEL.TAG), "checkpoint" (the model is a file or run directory),
    # "repository" (the model brings them), "default" (the model's default named weights), "untrained"
    named: Optional[Weights] = None  # the registered entry, where there is one (for "untrained": a tag's layout)

    def describe(self) -> str:
        """One line saying which weights run, for a command's output."""
        if self.reason == "default":
            return f"using {self.weights}, the default weights of {self.model} (--weights to choose others)"
        if self.reason == "untrained":
            return f"using random weights: {self.model} is untrained, its outputs mean nothing"
        if self.reason == "repository":
            return f"using {self.model} (the repository's weights)"
        if self.reason == "checkpoint":
            run = Path(self.weights).parent
            which = {"best.safetensors": ", the run's best validation weights",
                     "last.safetensors": ", the run's last weights"}.get(Path(self.weights).name, "")
            return f"using {self.weights}{which} ({self.model}, as the file records)" + \
                (f"; {run / 'last.safetensors'} holds its final ones" if which.startswith(", the run's best") else "")
        return f"using {self.weights}" + (f" ({self.named.meta.source})" if self.named is not None else "")


def choose_weights(model: str, weights: Any = None, *, pretrained: bool = False) -> WeightsChoice:
    """The one rule for which weights a model gets, for ``create_model`` and every command alike:

    1. weights given (``weights=``, ``--weights``): those;
    2. the model itself names them: ``MODEL.TAG`` (with ``pretrained=True``; without it, the network those
       weights need, freshly initialised), a checkpoint file or a training run's directory (its
       ``best.safetensors``, else ``last.safetensors``), or a repository (``hf-hub:``, ``local-dir:``);
    3. ``pretrained=True``: the model's default named weights (``resnets list --weights`` marks them), a
       one-line refusal where it has none;
    4. else none: fresh, untrained weights, as torchvision's ``resnet50()``.

    ``create_model(name)`` passes ``pretrained`` as given (default False: rule 4); the commands that run a
    model (predict, eval, export, explain, serve, features) pass ``pretrained=True`` unless
    ``--random-weights``, since an untrained network's answers mean nothing, and print ``describe()``."""
    if is_repository(model):
        if weights is not None:
            raise UsageError(f"{model} brings its weights; leave out weights (--weights)")
        return WeightsChoice(model, None, "repository")
    checkpoint = checkpoint_model(model)
    if checkpoint is not None:
        model, file = take_weights_name(model, weights if weights is None else str(weights))
        return WeightsChoice(model, file, "checkpoint")
    model, tagged = split_weights_name(model)
    if tagged is not None:
        if weights is not None and torchvision_name(weights) is None and weights in (tagged.tag, tagged.name):
            weights, pretrained = None, True  # said twice, the same
        if weights is not None:
            raise UsageError(f"{tagged.name} names its weights, and weights {str(weights)!r} others: give one of "
                             f"them")
        if not pretrained:
            return WeightsChoice(model, None, "untrained", named=tagged)
        return WeightsChoice(model, tagged.name, "tagged", named=tagged)
    if weights is not None:
        if is_repository(weights):
            return WeightsChoice(model, weights, "given")
        named = find_weights(model, weights)
        # a tag or name as given (a tag stays a tag in messages and records); torchvision's names of the file
        # (an enum, "DEFAULT") by the entry's name; a path or URL as it is
        given = str(weights) if named is None else weights if weights in (named.tag, named.name) else named.name
        return WeightsChoice(model, given, "given", named=named)
    if pretrained:
        named = default_weights(model)
        if named is None:
            raise NoDefaultWeights(f"{model} has no named weights (see resnets.list_weights() or `resnets list "
                                   f"--weights`); pass weights (--weights): a checkpoint's path or URL, or "
                                   f"hf-hub:ORG/NAME")
        return WeightsChoice(model, named.name, "default", named=named)
    return WeightsChoice(model, None, "untrained")


def create_model(name: Union[str, "os.PathLike[str]"], *, weights: Any = None, pretrained: bool = False,
                 features_only: bool = False, out_indices: Optional[Sequence[int]] = None,
                 sha256: Optional[str] = None, strict: bool = True, **kwargs) -> nn.Module:
    """Build a registered model by name, with weights if given.

    Which weights, by ``choose_weights`` (the rule the commands follow too): ``weights`` if given, else those
    ``name`` names (``MODEL.TAG`` with ``pretrained=True``, a checkpoint file or run directory, a repository), else
    with ``pretrained=True`` the model's default named weights, else none: ``create_model("resnet50")`` is freshly
    initialised, as torchvision's ``resnet50()``. (``resnets predict resnet50`` runs the default named weights:
    a command passes ``pretrained=True`` unless ``--random-weights``, and says which weights it used.)

    ``name`` may be a checkpoint instead of a model's name: one of our safetensors files (its metadata records the
    architecture, ``create_model("runs/x/last.safetensors")``) or a training run's directory
    (``create_model("runs/x")``: its ``best.safetensors``, the best validation top-1, else ``last.safetensors``).

    Keyword arguments go to the ResNet (``num_classes``, ``in_chans``, ``shortcut``,
    ``variant``, ``zero_init_residual``, ``norm_layer``, ...). ``features_only=True``
    returns a network giving the feature maps of ``out_indices`` (0: stem, k: stage k).

    ``name`` may carry the weights' tag, as timm names models (``"resnet56.cifar10"``): ``pretrained=True`` loads
    those weights; without it the network is built as those weights need (their class count and options, such as
    option-B shortcuts) and their preprocessing, its parameters freshly initialised.

    ``weights`` is a registered name, for this model a tag (``"tv2_in1k"``) or ``MODEL.TAG``
    (``"resnet50.tv2_in1k"``; see ``resnets.list_weights()``), torchvision's enum or name of the same file
    (``torchvision.models.ResNet50_Weights.DEFAULT``, ``"DEFAULT"``, ``"IMAGENET1K_V2"``), else the path or URL of a
    checkpoint of any supported format, or a repository: ``"hf-hub:ORG/NAME"`` (the Hugging Face Hub,
    through its cache; timm's repositories and those ``save_pretrained`` writes) or ``"local-dir:PATH"``
    (the same layout in a folder). ``name`` may itself be a repository, ``create_model("hf-hub:ORG/NAME")``:
    its config.json names the architecture. ``pretrained=True`` without ``weights`` loads the model's
    default named weights. Named weights and repositories bring their class names and preprocessing; our own
    files supply the architecture options. The classifier size comes from the weights unless
    ``num_classes`` is given: a different one starts fresh (fine-tuning), and an ``in_chans``
    other than the weights' adapts the first convolution (1 channel: the sum of the RGB filters;
    more: the RGB filters repeated, scaled by 3 / in_chans), each with a WeightsAdaptedWarning.
    """
    named = repository = None
    if is_repository(name) and (weights is not None or pretrained):
        raise UsageError(f"create_model({name!r}): the repository brings its weights; leave out weights= "
                         f"and pretrained=")
    tagged_name, tagged = split_weights_name(name) if isinstance(name, str) else (name, None)
    if tagged is not None and weights is not None and weights not in (tagged.tag, tagged.name):
        raise UsageError(f"create_model({tagged.name!r}, weights={str(weights)!r}) names two sets of weights; "
                         f"give the model as {tagged_name!r} with weights=, or {tagged.name!r} with pretrained=True")
    try:
        choice = choose_weights(name, weights, pretrained=pretrained)
    except NoDefaultWeights:
        raise UsageError(f"pretrained=True: no weights are registered for {name!r} (see resnets.list_weights() or "
                         f"`resnets list --weights`); pass weights=PATH_OR_URL of a checkpoint") from None
    if choice.reason == "untrained":
        if choice.named is not None:
            return _untrained(choice.named, features_only=features_only, out_indices=out_indices, **kwargs)
        return build_model(choice.model, features_only=features_only, out_indices=out_indices, **kwargs)
    if choice.reason == "repository":
        repository = open_repository(name)
        name = repository.architecture
    else:
        name, weights, named = choice.model, choice.weights, choice.named
        if is_repository(weights):
            repository = open_repository(weights)
            if repository.architecture != name:
                raise CheckpointError(f"{weights} holds {repository.architecture} weights, not {name}; use "
                                      f"create_model({weights!r}) or create_model({repository.architecture!r}, "
                                      f"weights=...)")
    if repository is not None:
        state_dict, info = repository.load(sha256=sha256)
    else:
        state_dict, info = load_checkpoint(named.get_path() if named else weights, sha256=sha256)
    if named is not None:
        info.source = named.name
    source = info.source or str(info.path)
    options: dict = {}
    if info.layout == "resnets":
        arch = info.metadata.get("arch")
        if arch and arch != name:
            raise CheckpointError(f"{info.path} holds {arch} weights, not {name}; load them as {arch} "
                                  f"(`resnets COMMAND {arch} --weights ...`, create_model({arch!r}, weights=...))")
        arch_kwargs = info.metadata.get("arch_kwargs") or {}
        if not isinstance(arch_kwargs, dict) or {"features_only", "out_indices"} & set(arch_kwargs):
            raise CheckpointError(f"{info.path}: metadata 'arch_kwargs' must be a JSON object of model options, "
                                  f"got {str(arch_kwargs)[:100]}")
        options.update(arch_kwargs)
    file_classes = int(state_dict["fc.weight"].shape[0]) if "fc.weight" in state_dict else 0
    options["num_classes"] = file_classes
    _check_class_names(named.classes if named else info.classes, file_classes, source)
    stem = state_dict.get("conv1.weight")
    file_chans = int(stem.shape[1]) if stem is not None and stem.dim() == 4 else 3  # else the shape check names it
    if file_chans != 3:
        options["in_chans"] = file_chans
    if info.layout == "resnets":
        _check_file_options(name, options, state_dict, info)
    elif get_model_spec(name).kind != "plain":
        # another project's file records no options, but its projections show the shortcut it was trained
        # with: CIFAR nets with 1x1 projections (option B) are common, our CIFAR default is option A
        shortcut = shortcut_option(state_dict)
        if shortcut is not None:
            options["shortcut"] = shortcut
    if named is not None:
        options.update(named.options)
    options.update(kwargs)
    in_chans = options.get("in_chans", 3)
    if in_chans != file_chans:
        state_dict = {**state_dict, "conv1.weight": _adapt_first_conv(state_dict["conv1.weight"], in_chans, source)}
        how = "the sum of its RGB filters" if in_chans == 1 else f"its RGB filters repeated, scaled by 3/{in_chans}"
        warnings.warn(f"{source}: conv1 adapted from {file_chans} input channels to in_chans={in_chans} ({how})",
                      WeightsAdaptedWarning, stacklevel=2)
    exclude: tuple[str, ...] = ()
    head = dict(features_only=True, out_indices=out_indices) if features_only else {}
    if features_only:
        options.pop("num_classes", None)
    with torch.device("meta"):  # every shape compared with the file's before anything is allocated
        probe = build_model(name, **head, **options)
    if features_only:
        # a feature extractor keeps the stages up to its last index; the rest of the file is unused
        present = {k.split(".")[0] for k in probe.state_dict()}
        exclude = tuple(sorted({k.split(".")[0] + "." for k in state_dict} - {p + "." for p in present}))
    else:
        if options["num_classes"] != file_classes:
            exclude = ("fc.",)
            if options["num_classes"] > 0:
                warnings.warn(f"{source}: its {file_classes}-class classifier is replaced by a new, untrained one "
                              f"of num_classes={options['num_classes']}", WeightsAdaptedWarning, stacklevel=2)
    check_fit(probe, state_dict, strict=strict, exclude=exclude, source=source, info=info)
    model = build_model(name, **head, **options)
    load_state_dict(model, state_dict, strict=strict, exclude=exclude, source=source, info=info)
    if not exclude:
        # named weights' display names ("tench") win; the file's own (its training folders, "n01440764") stay in
        # checkpoint_info, which evaluation compares with a data set's folders
        classes = named.classes if named else info.classes
        if classes is not None:
            model.classes = list(classes)
    apply_preprocessing(model, info, channels=file_chans)
    if named is not None:
        model.preprocessing = named.preprocessing
    elif repository is not None and repository.layout == "timm" and repository.preprocessing is not None:
        model.preprocessing = repository.preprocessing
    model.preprocessing = model.preprocessing.for_channels(in_chans)
    model.checkpoint_info = info
    return model


def _untrained(weights: Weights, *, features_only: bool, out_indices: Optional[Sequence[int]], **kwargs) -> nn.Module:
    """The network ``weights`` are for, freshly initialised: their options and class count, their preprocessing."""
    options = {**weights.options, "num_classes": len(weights.classes), **kwargs}
    if features_only:
        options.pop("num_classes")
    model = build_model(weights.model, features_only=features_only, out_indices=out_indices, **options)
    model.preprocessing = weights.preprocessing.for_channels(options.get("in_chans", 3))
    return model


def list_models(filter: Union[str, Sequence[str], None] = None, exclude: Union[str, Sequence[str], None] = None,
                family: Optional[str] = None, pretrained: bool = False,
                include_tags: Optional[bool] = None) -> list[str]:
    """Registered model names, sorted, filtered by glob pattern(s) and family, as timm's ``list_models``.
    ``pretrained=True`` keeps the models with named weights; ``include_tags`` (by default as ``pretrained``)
    lists each of their weights as ``MODEL.TAG`` instead (the default weights first), the patterns matching the
    whole name or the model's."""
    names = registry_list_models(filter=None, exclude=exclude, family=family)
    if include_tags is None:
        include_tags = pretrained
    patterns = [filter] if isinstance(filter, str) else list(filter or [])

    def wanted(*names: str) -> bool:
        return not patterns or any(fnmatch.fnmatchcase(n, p) for p in patterns for n in names)

    if include_tags:
        return [w for w in list_weights() if w.partition(".")[0] in names and wanted(w, w.partition(".")[0])]
    with_weights = {w.partition(".")[0] for w in list_weights()} if pretrained else None
    return [n for n in names if wanted(n) and (with_weights is None or n in with_weights)]


def _check_file_options(name: str, options: dict, state_dict: dict, info) -> None:
    """The architecture options a file's metadata gives (``arch_kwargs``) against the registered
    builder and the file's own tensors, on the meta device: a hostile or corrupt file (a width of
    40000) is refused in one line before anything is allocated from it."""
    shown = {k: v for k, v in (info.metadata.get("arch_kwargs") or {}).items()}
    try:
        with torch.device("meta"):
            probe = build_model(name, **options)
    except Exception as error:  # noqa: BLE001 - any failure to build means the metadata is unusable
        raise CheckpointError(f"{info.path}: metadata 'arch_kwargs' {str(shown)[:200]} does not build {name}: "
                              f"{str(error).splitlines()[0] if str(error) else type(error).__name__}") from None
    described = {k: tuple(v.shape) for k, v in probe.state_dict().items() if not k.endswith("num_batches_tracked")}
    head = f"{info.path}: metadata 'arch_kwargs' {str(shown)[:200]}"
    for key, shape in described.items():
        given = state_dict.get(key)
        if given is None:
            raise CheckpointError(f"{head} describes {key}, which the file lacks")
        if tuple(given.shape) != shape:
            raise CheckpointError(f"{head} describes {key} of shape {shape}, but the file's tensor is "
                                  f"{tuple(given.shape)}")


def _check_class_names(classes: Optional[Sequence[str]], file_classes: int, source: str) -> None:
    """Refuse class names that cannot be the classifier's (one line, before the network is built): 1 or 1000
    names for a 10-way head would label every prediction wrongly, or fail on the first of the classes past
    the list's end."""
    if classes is not None and file_classes and len(classes) != file_classes:
        raise CheckpointError(f"{source}: {len(classes)} class name(s) for a classifier of {file_classes} outputs "
                              f"(fc.weight); the names (metadata 'classes') must be one per output, in order")


def _adapt_first_conv(weight: torch.Tensor, in_chans: int, source: str) -> torch.Tensor:
    """RGB filters (out, 3, k, k) for ``in_chans`` input channels, as timm adapts them."""
    if weight.dim() != 4 or weight.shape[1] != 3:
        raise CheckpointError(f"{source}: conv1.weight has shape {tuple(weight.shape)}; only RGB (3-channel) "
                              f"weights can be adapted to in_chans={in_chans}")
    weight = weight.float()
    if in_chans == 1:
        return weight.sum(dim=1, keepdim=True)  # a gray image is R = G = B, so its filter is their sum
    repeats = -(-in_chans // 3)
    # shares of 3/in_chans keep the response's size (exactly, for gray input and in_chans a multiple of 3)
    return weight.repeat(1, repeats, 1, 1)[:, :in_chans] * (3 / in_chans)


__all__ = ["NoDefaultWeights", "WeightsAdaptedWarning", "WeightsChoice", "choose_weights", "create_model",
           "list_models"]
