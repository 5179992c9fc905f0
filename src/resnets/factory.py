"""``create_model``: a registered architecture joined with weights.

The registry (``resnets.models``) builds networks and knows nothing of checkpoints; the
weights layer reads checkpoints and names published ones; this module, above both, builds
the network a checkpoint describes and loads it, adapting its first convolution and its
classifier where the model asked for differs from the weights.
"""

from __future__ import annotations

import fnmatch
import warnings
from typing import Optional, Sequence, Union

import torch
from torch import nn

from .errors import UsageError
from .models import build_model, get_model_spec
from .models import list_models as registry_list_models
from .weights import CheckpointError, apply_preprocessing, load_checkpoint, load_state_dict
from .weights.formats import PathOrUrl, check_fit, shortcut_option
from .weights.hub import is_repository, open_repository
from .weights.named import Weights, default_weights, find_weights, list_weights, split_weights_name


class WeightsAdaptedWarning(UserWarning):
    """Weights loaded into a model that differs from them: a new, untrained classifier, or a first
    convolution adapted to another number of input channels."""


def create_model(name: str, *, weights: Optional[PathOrUrl] = None, pretrained: bool = False,
                 features_only: bool = False, out_indices: Optional[Sequence[int]] = None,
                 sha256: Optional[str] = None, strict: bool = True, **kwargs) -> nn.Module:
    """Build a registered model by name, with weights if given.

    Keyword arguments go to the ResNet (``num_classes``, ``in_chans``, ``shortcut``,
    ``variant``, ``zero_init_residual``, ``norm_layer``, ...). ``features_only=True``
    returns a network giving the feature maps of ``out_indices`` (0: stem, k: stage k).

    ``name`` may carry the weights' tag, as timm names models (``"resnet56.cifar10"``): ``pretrained=True`` loads
    those weights; without it the network is built as those weights need (their class count and options, such as
    option-B shortcuts) and their preprocessing, its parameters freshly initialised.

    ``weights`` is a registered name, for this model a tag (``"tv2_in1k"``) or ``MODEL.TAG``
    (``"resnet50.tv2_in1k"``; see ``resnets.list_weights()``), else the path or URL of a
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
    if is_repository(name):
        if weights is not None or pretrained:
            raise UsageError(f"create_model({name!r}): the repository brings its weights; leave out weights= "
                             f"and pretrained=")
        repository = open_repository(name)
        name = repository.architecture
    else:
        name, tagged = split_weights_name(name)
        if tagged is not None:
            if weights is not None and weights not in (tagged.tag, tagged.name):
                raise UsageError(f"create_model({tagged.name!r}, weights={str(weights)!r}) names two sets of weights; "
                                 f"give the model as {name!r} with weights=, or {tagged.name!r} with pretrained=True")
            if weights is None and not pretrained:
                return _untrained(tagged, features_only=features_only, out_indices=out_indices, **kwargs)
            weights = tagged.name
        if is_repository(weights):
            repository = open_repository(weights)
            if repository.architecture != name:
                raise CheckpointError(f"{weights} holds {repository.architecture} weights, not {name}; use "
                                      f"create_model({weights!r}) or create_model({repository.architecture!r}, "
                                      f"weights=...)")
        elif weights is None:
            if pretrained:
                named = default_weights(name)
                if named is None:
                    raise UsageError(f"pretrained=True: no weights are registered for {name!r} (see "
                                     f"resnets.list_weights() or `resnets list --weights`); pass "
                                     f"weights=PATH_OR_URL of a checkpoint")
            else:
                return build_model(name, features_only=features_only, out_indices=out_indices, **kwargs)
        else:
            named = find_weights(name, weights)
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


__all__ = ["WeightsAdaptedWarning", "create_model", "list_models"]
