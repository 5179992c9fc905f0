"""Model repositories in the Hugging Face Hub's layout: ``config.json`` + ``model.safetensors`` (+ ``README.md``).

``hf-hub:ORG/NAME`` (or ``hf-hub:ORG/NAME@REVISION``) names a repository on the Hub, fetched with
``huggingface_hub`` (the optional ``hub`` extra) into its own cache (``HF_HUB_CACHE``, by default
``~/.cache/huggingface/hub``); offline (``HF_HUB_OFFLINE=1`` or ``RESNETS_OFFLINE=1``) only that cache is read.
``local-dir:PATH`` names the same layout in a folder on disk (no ``huggingface_hub`` needed).

Two kinds of repository are read:

- timm's: ``config.json`` with ``architecture``, ``num_classes``, ``label_names`` and ``pretrained_cfg``
  (``input_size``, ``mean``, ``std``, ``interpolation``, ``crop_pct``); timm names a ResNet's tensors as
  torchvision and we do, so the weights go through the checkpoint readers of ``formats`` unchanged;
- ours, written by :func:`save_pretrained`: the same keys (so that timm's tools can read the config), a
  ``resnets`` entry with our architecture options, and weights carrying our safetensors metadata.

Nothing is executed and nothing is allocated from unchecked numbers: the config is JSON read field by field
(its architecture must be one we build, its class count must be a count), and it is compared with the weights
file's header (the classifier's rows, the first convolution's channels) before any tensor is read.
"""

from __future__ import annotations

import json
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import torch
from torch import nn

from .._io import atomic_write_text
from ..download import check_digest, expected_sha256
from ..errors import MissingFileError, UsageError
from ..models import Preprocessing, ResNet, build_model, get_model_spec
from ..models.preprocessing import DEFAULT_CROP_PCT, DEFAULT_INTERPOLATION
from .formats import (FORMAT_NAME, FORMAT_VERSION, REPOSITORY_PREFIXES, CheckpointError,
                      CheckpointInfo, detect_format, load_checkpoint, save_weights, strip_prefixes)
from .classes import class_names
from .hfcache import NotCached, NotInRepository, hub_file, hub_offline, huggingface_hub
from .named import Weights, get_weights, model_card

HUB_PREFIX, LOCAL_PREFIX = REPOSITORY_PREFIXES
CONFIG_FILE = "config.json"
CARD_FILE = "README.md"
# the line that tells save_pretrained a README.md is its own card (rewritten) and not a user's (kept)
CARD_MARK = "<!-- model card written by resnets.save_pretrained -->"
# the weights file of a repository, in order of preference (timm's older repositories have only the second)
WEIGHTS_FILES = ("model.safetensors", "pytorch_model.bin")
# a config is a few kilobytes (ImageNet-21k's label names, the largest, under 1 MiB): larger is refused unread
MAX_CONFIG_BYTES = 8 << 20
# timm's reconstruction arguments that change nothing at inference (dropout rates)
_INFERENCE_NEUTRAL_ARGS = ("drop_rate", "drop_path_rate", "drop_block_rate")
_REPO_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*")


@dataclass(frozen=True)
class Repository:
    """A repository found on disk (in the Hub's cache or a local folder), its config read and checked."""

    spec: str  # as given: hf-hub:ORG/NAME[@REVISION] or local-dir:PATH
    directory: Path  # the folder holding the files (a snapshot of the Hub's cache, or the local folder)
    weights_file: Path
    layout: str  # "resnets" (written by save_pretrained) or "timm"
    architecture: str  # a registered model name
    num_classes: int
    in_chans: int
    classes: Optional[list[str]]
    preprocessing: Optional[Preprocessing]
    config: dict

    def load(self, *, sha256: Optional[str] = None) -> tuple[dict[str, torch.Tensor], CheckpointInfo]:
        """The weights as a state dict with our names, and what the files say about them (the config's class
        names for a timm repository; our own metadata for ours). ``sha256`` (whole, or a prefix of 8+ hex
        digits) is checked against the weights file first."""
        if sha256 is not None:
            ok, why = check_digest(self.weights_file, sha256=expected_sha256(self.spec, sha256))
            if not ok:
                raise CheckpointError(f"{self.spec}: {self.weights_file.name}: {why}")
        _check_weights_header(self)
        state_dict, info = load_checkpoint(self.weights_file)
        _check_state_dict(self, state_dict)
        if self.layout == "resnets":
            if info.layout != "resnets":
                raise CheckpointError(f"{self.spec}: config.json says the weights were written by resnets, but "
                                      f"{self.weights_file.name} carries no resnets metadata")
            if info.arch != self.architecture:
                raise CheckpointError(f"{self.spec}: config.json says {self.architecture}, but "
                                      f"{self.weights_file.name} holds {info.arch} weights")
        else:
            info.layout = "timm"
            info.classes = self.classes
        info.source = self.spec
        return state_dict, info


def is_repository(spec: Any) -> bool:
    """Whether ``spec`` names a repository (``hf-hub:ORG/NAME`` or ``local-dir:PATH``) rather than a file."""
    return isinstance(spec, str) and spec.startswith(REPOSITORY_PREFIXES)


def open_repository(spec: str, *, offline: Optional[bool] = None) -> Repository:
    """Find the repository ``spec`` names (downloading it into the Hub's cache unless offline) and read its
    config.json. Raises MissingFileError (one line: what is missing and how to get it) or CheckpointError
    (a config that cannot be used) before any weights are read."""
    if spec.startswith(LOCAL_PREFIX):
        directory = Path(spec[len(LOCAL_PREFIX):]).expanduser()
        if not directory.is_dir():
            raise MissingFileError(f"{spec}: no such folder; local-dir: takes a folder holding config.json and "
                                   f"model.safetensors (as resnets.save_pretrained writes them)")
        config_path = directory / CONFIG_FILE
        if not config_path.is_file():
            raise MissingFileError(f"{spec}: the folder has no {CONFIG_FILE}; local-dir: takes a folder as "
                                   f"resnets.save_pretrained writes it (config.json + model.safetensors)")
        weights_file = next((directory / n for n in WEIGHTS_FILES if (directory / n).is_file()), None)
        if weights_file is None:
            raise MissingFileError(f"{spec}: the folder has no weights file ({' or '.join(WEIGHTS_FILES)})")
    elif spec.startswith(HUB_PREFIX):
        config_path, weights_file = _download(spec, offline)
        directory = config_path.parent
    else:
        raise UsageError(f"{spec!r} is not a repository: expected hf-hub:ORG/NAME or local-dir:PATH")
    return _read_config(spec, directory, config_path, weights_file)


# -- the Hub ------------------------------------------------------------------------------------


def parse_hub_spec(spec: str) -> tuple[str, Optional[str]]:
    """``hf-hub:ORG/NAME[@REVISION]`` -> (``ORG/NAME``, revision or None)."""
    repo_id, _, revision = spec[len(HUB_PREFIX):].partition("@")
    if not _REPO_ID.fullmatch(repo_id) or (_ and not revision):
        raise UsageError(f"{spec!r}: expected hf-hub:ORG/NAME or hf-hub:ORG/NAME@REVISION "
                         f"(e.g. hf-hub:timm/resnet50.a1_in1k)")
    return repo_id, revision or None


def _download(spec: str, offline: Optional[bool]) -> tuple[Path, Path]:
    """config.json and the weights file of a Hub repository, from huggingface_hub's cache (fetched into it first
    unless offline): ``hf_hub_download`` writes and reads that cache, so whatever ``hf download`` or
    ``snapshot_download`` put there is found."""
    repo_id, revision = parse_hub_spec(spec)

    def fetch(filename: str) -> Path:
        return hub_file(repo_id, filename, revision=revision, offline=offline, spec=spec)

    try:
        config_path = fetch(CONFIG_FILE)
    except NotInRepository:
        raise CheckpointError(f"{spec}: the repository has no {CONFIG_FILE}; resnets reads repositories laid out "
                              f"as timm's and as resnets.save_pretrained writes them") from None
    not_cached: Optional[NotCached] = None
    for filename in WEIGHTS_FILES:
        try:
            return config_path, fetch(filename)
        except NotInRepository:
            continue
        except NotCached as error:  # only the cache could be read, and it lacks this file: it may hold the next
            not_cached = not_cached or error
    if not_cached is not None:
        raise not_cached
    raise CheckpointError(f"{spec}: the repository has no weights file ({' or '.join(WEIGHTS_FILES)})")


# -- reading and checking -----------------------------------------------------------------------


def _read_config(spec: str, directory: Path, config_path: Path, weights_file: Path) -> Repository:
    size = config_path.stat().st_size
    if size > MAX_CONFIG_BYTES:
        raise CheckpointError(f"{spec}: {CONFIG_FILE} is {size} bytes, over the limit of {MAX_CONFIG_BYTES} "
                              f"(MAX_CONFIG_BYTES); a model's config is a few kilobytes")
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CheckpointError(f"{spec}: {CONFIG_FILE} is not JSON: {error}") from None
    if not isinstance(config, dict):
        raise CheckpointError(f"{spec}: {CONFIG_FILE} must hold a JSON object, not {type(config).__name__}")

    def bad(key: str, expected: str) -> CheckpointError:
        return CheckpointError(f"{spec}: {CONFIG_FILE} '{key}' must be {expected}, got {str(config.get(key))[:80]}")

    architecture = config.get("architecture")
    if not isinstance(architecture, str) or not architecture:
        raise bad("architecture", "the name of a model (e.g. resnet50)")
    # timm writes the bare name; a name with its pretrained tag (resnet50.a1_in1k) names the same network
    architecture = architecture.partition(".")[0]
    try:
        get_model_spec(architecture)
    except UsageError as error:
        raise CheckpointError(f"{spec}: {CONFIG_FILE} architecture {architecture!r} is not a network resnets builds "
                              f"({str(error).partition('; ')[2] or 'see resnets.list_models()'})") from None
    num_classes = config.get("num_classes")
    if type(num_classes) is not int or num_classes < 0:
        raise bad("num_classes", "a count (an integer, 0 for no classifier)")
    model_args = config.get("model_args") or {}
    if not isinstance(model_args, dict):
        raise bad("model_args", "a JSON object")
    # timm writes the pooling at the top and (save_for_hf since 1.0) among the model's arguments too
    for pool in (config.get("global_pool", "avg"), model_args.get("global_pool", "avg")):
        if pool != "avg":
            raise CheckpointError(f"{spec}: {CONFIG_FILE} global_pool {str(pool)[:40]!r}: resnets networks end in "
                                  f"average pooling only")
    own = config.get("resnets")
    if own is not None and not (isinstance(own, dict) and own.get("format") == FORMAT_NAME):
        raise bad("resnets", f'an object with "format": "{FORMAT_NAME}"')
    # ours repeat the layout options of the weights' metadata (which builds the network) for timm to refuse
    layout = own.get("arch_kwargs") if own is not None else None
    layout = layout if isinstance(layout, dict) else {}
    unknown = sorted(k for k in set(model_args) - {"num_classes", "in_chans", "global_pool", *_INFERENCE_NEUTRAL_ARGS}
                     if k not in layout or layout[k] != model_args[k])
    if unknown:
        raise CheckpointError(f"{spec}: {CONFIG_FILE} model_args {unknown} describe a network other than the "
                              f"plain {architecture} that resnets builds")
    if model_args.get("num_classes", num_classes) != num_classes:
        raise CheckpointError(f"{spec}: {CONFIG_FILE} says num_classes {num_classes} and model_args num_classes "
                              f"{str(model_args['num_classes'])[:40]}")
    pretrained_cfg = config.get("pretrained_cfg") or {}
    if not isinstance(pretrained_cfg, dict):
        raise bad("pretrained_cfg", "a JSON object")
    preprocessing = _preprocessing(spec, pretrained_cfg)
    in_chans = model_args.get("in_chans", preprocessing.input_size[0] if preprocessing else 3)
    if type(in_chans) is not int or not 1 <= in_chans <= 64:
        raise CheckpointError(f"{spec}: {CONFIG_FILE} in_chans must be 1 to 64, got {str(in_chans)[:40]}")
    if preprocessing is not None and preprocessing.input_size[0] != in_chans:
        raise CheckpointError(f"{spec}: {CONFIG_FILE} model_args in_chans {in_chans} and pretrained_cfg input_size "
                              f"{list(preprocessing.input_size)} disagree")
    classes = _label_names(spec, config.get("label_names"), num_classes)
    if classes is None and num_classes == 1000 and str(pretrained_cfg.get("tag", "")).endswith("in1k"):
        # timm's configs name the dataset in the tag (a1_in1k, in21k_ft_in1k) but often leave label_names out
        classes = class_names("imagenet1k")
    return Repository(spec=spec, directory=directory, weights_file=weights_file,
                      layout="resnets" if own is not None else "timm", architecture=architecture,
                      num_classes=num_classes, in_chans=in_chans, classes=classes, preprocessing=preprocessing,
                      config=config)


def _preprocessing(spec: str, cfg: dict) -> Optional[Preprocessing]:
    """timm's ``pretrained_cfg`` as a Preprocessing (None where it gives no input size), checked."""
    if "input_size" not in cfg:
        return None
    crop_mode = cfg.get("crop_mode", "center")
    if crop_mode != "center":
        warnings.warn(f"{spec}: pretrained_cfg crop_mode {str(crop_mode)[:40]!r} is read as 'center' (resnets "
                      f"resizes the shorter side, then center-crops)", UserWarning, stacklevel=4)
    fields = {"input_size": cfg["input_size"], "mean": cfg.get("mean"), "std": cfg.get("std"),
              "interpolation": cfg.get("interpolation") or DEFAULT_INTERPOLATION,
              "crop_pct": cfg.get("crop_pct", DEFAULT_CROP_PCT)}
    try:
        preprocessing = Preprocessing.from_dict(fields)
        preprocessing.check()
    except (TypeError, ValueError) as error:
        raise CheckpointError(f"{spec}: {CONFIG_FILE} pretrained_cfg cannot be used: {error}") from None
    return preprocessing


def _label_names(spec: str, names: Any, num_classes: int) -> Optional[list[str]]:
    """timm's ``label_names``: a list, or an object from label index to name; one string per class."""
    if names is None or names == [] or names == {}:
        return None
    if isinstance(names, dict):
        if set(names) != {str(i) for i in range(len(names))}:
            raise CheckpointError(f"{spec}: {CONFIG_FILE} label_names as an object must map every index "
                                  f"0..{num_classes - 1} (as a string) to a name")
        names = [names[str(i)] for i in range(len(names))]
    if not (isinstance(names, list) and all(isinstance(n, str) for n in names)):
        raise CheckpointError(f"{spec}: {CONFIG_FILE} label_names must be a list of strings (one per class)")
    if len(names) != num_classes:
        raise CheckpointError(f"{spec}: {CONFIG_FILE} has {len(names)} label_names for num_classes {num_classes}")
    return list(names)


def _check_shapes(repository: Repository, shapes: dict[str, tuple[int, ...]]) -> None:
    """The config's class count and input channels against the weights' own tensors."""
    name = repository.weights_file.name
    fc = shapes.get("fc.weight")
    file_classes = fc[0] if fc else 0
    if file_classes != repository.num_classes:
        raise CheckpointError(f"{repository.spec}: {CONFIG_FILE} says num_classes {repository.num_classes}, but "
                              f"{name} has a {file_classes}-class classifier (fc.weight {fc})")
    conv1 = shapes.get("conv1.weight")
    if conv1 is None or len(conv1) != 4:
        raise CheckpointError(f"{repository.spec}: {name} has no conv1.weight of 4 dimensions; not a ResNet in "
                              f"timm's or torchvision's naming")
    if conv1[1] != repository.in_chans:
        raise CheckpointError(f"{repository.spec}: {CONFIG_FILE} says {repository.in_chans} input channels, but "
                              f"{name}'s conv1.weight takes {conv1[1]}")


def _check_weights_header(repository: Repository) -> None:
    """For a safetensors file, the config against the tensors' shapes in its header, before any is read."""
    path = repository.weights_file
    if detect_format(path) != "safetensors":
        return  # torch.save files are checked after reading (weights_only), before any network is built
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            shapes = {key: tuple(f.get_slice(key).get_shape()) for key in f.keys()}
    except SafetensorError as error:
        raise CheckpointError(f"{repository.spec}: cannot read {path.name}: {error}") from None
    _check_shapes(repository, strip_prefixes(shapes))  # as the readers undo them


def _check_state_dict(repository: Repository, state_dict: dict[str, torch.Tensor]) -> None:
    _check_shapes(repository, {k: tuple(v.shape) for k, v in state_dict.items()})


# -- writing ------------------------------------------------------------------------------------


def save_pretrained(model: nn.Module, directory: Union[str, os.PathLike], *, repo_id: Optional[str] = None,
                    classes: Optional[Sequence[str]] = None) -> Path:
    """Write ``model`` as a repository folder: ``model.safetensors`` (our metadata), ``config.json`` (timm's keys
    and ours) and ``README.md`` (a model card), each atomically. The folder is ready for
    ``huggingface_hub.upload_folder(repo_id=..., folder_path=directory)`` and loads back with
    ``create_model("local-dir:DIRECTORY")`` or, once uploaded, ``create_model("hf-hub:ORG/NAME")``.

    A ``README.md`` already in the folder that save_pretrained did not write is kept (with a warning), as
    huggingface_hub keeps one; its own earlier card is rewritten. ``repo_id`` (``ORG/NAME``) is only written
    into the card's examples. The card carries the metadata of the
    named weights the model was created with (dataset, accuracy, recipe, license), where it was.
    """
    if not isinstance(model, ResNet) or not getattr(model, "arch", None):
        raise UsageError("save_pretrained takes a network built by resnets.create_model (a ResNet with its "
                         "registered architecture), not a feature extractor or another module")
    if repo_id is not None and not _REPO_ID.fullmatch(repo_id):
        raise UsageError(f"save_pretrained: repo_id must be ORG/NAME, got {repo_id!r}")
    directory = Path(directory).expanduser()
    if directory.exists() and not directory.is_dir():
        raise UsageError(f"save_pretrained: {directory} is a file; give a folder (it is created if missing)")
    hub = huggingface_hub()  # before anything is written: the card needs it
    named = _named_weights(getattr(model, "checkpoint_info", None))
    source = named.name if named else None
    directory.mkdir(parents=True, exist_ok=True)
    # the config last: a folder whose writing was cut short has no config, or its previous, complete files
    save_weights(model, directory / WEIGHTS_FILES[0], classes=classes,
                 metadata={"weights": source} if source else None)
    classes = [str(c) for c in classes] if classes is not None else getattr(model, "classes", None)
    config = _config(model, classes, source)
    card = directory / CARD_FILE
    if card.is_file() and CARD_MARK not in card.read_text(errors="replace"):
        # a card the user wrote (as huggingface_hub's save_pretrained, an existing one is not replaced)
        warnings.warn(f"{card} was not written by save_pretrained: kept as it is (delete it for a generated "
                      f"card)", stacklevel=2)
    else:
        atomic_write_text(card, _card(hub, model, config, named, repo_id))
    atomic_write_text(directory / CONFIG_FILE, json.dumps(config, indent=2) + "\n")
    return directory


def _named_weights(info: Optional[CheckpointInfo]) -> Optional[Weights]:
    """The registered weights a model was created with: by name, or through a repository of ours that recorded
    the name (never a path or a repository, which would say nothing once uploaded)."""
    source = getattr(info, "source", None)
    if is_repository(source):
        source = info.metadata.get("weights")
    if not isinstance(source, str):
        return None
    try:
        return get_weights(source)
    except UsageError:
        return None


# architecture options that leave the network timm builds under the same name unchanged (initialisation only)
_INIT_ONLY_ARGS = ("zero_init_residual",)


def _layout_args(model: ResNet) -> dict:
    """``model_args`` for the config: the class and channel counts, and every option by which the network differs
    from the one registered under its name (``variant="v1"``, ``shortcut="C"``). timm passes model_args to its
    builder, which refuses an option it does not know: a layout timm builds differently is refused there, not
    loaded into another function (its tensors have the same shapes)."""
    args = {"num_classes": model.num_classes, "in_chans": model.conv1.in_channels}
    with torch.device("meta"):
        registered = build_model(model.arch)
    for key, value in model.arch_kwargs.items():
        if key in args or key in _INIT_ONLY_ARGS or getattr(registered, key, object()) == value:
            continue
        args[key] = value
    return args


def _config(model: ResNet, classes: Optional[Sequence[str]], source: Optional[str]) -> dict:
    preprocessing = model.preprocessing
    config: dict = {"architecture": model.arch, "num_classes": model.num_classes,
                    "num_features": model.num_features, "global_pool": "avg",
                    "model_args": _layout_args(model)}
    if classes:
        config["label_names"] = list(classes)
    if preprocessing is not None:
        config["pretrained_cfg"] = {k: list(v) if isinstance(v, tuple) else v for k, v in model.pretrained_cfg.items()}
    config["resnets"] = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION,
                         "arch_kwargs": dict(model.arch_kwargs), "weights": source}
    return config


def _card(hub, model: ResNet, config: dict, named: Optional[Weights], repo_id: Optional[str]) -> str:
    """README.md: the Hub's YAML metadata (library, task, license, data set, accuracy) and what a user needs."""
    meta = named.meta if named else None
    where = repo_id or "ORG/NAME"
    name = repo_id.split("/")[1] if repo_id else f"{model.arch}{f'.{named.tag}' if named else ''}"
    results = []
    if meta is not None and meta.top1 is not None:
        results.append(hub.EvalResult(task_type="image-classification", dataset_type=meta.dataset,
                                      dataset_name=meta.dataset, metric_type="accuracy", metric_name="top-1",
                                      metric_value=meta.top1))
    data = hub.ModelCardData(library_name="resnets", pipeline_tag="image-classification",
                             tags=["image-classification", "resnet", "resnets"],
                             license=meta.license.lower() if meta and meta.license else None,
                             datasets=[meta.dataset] if meta else None, model_name=name if results else None,
                             eval_results=results or None)
    params = sum(p.numel() for p in model.parameters())
    lines = [f"# {name}", "",
             f"A {model.arch} ({params:,} parameters, {model.num_classes} classes) of the `resnets` library: the "
             f"residual networks of He et al. (2015, 2016).",
             "", "## Use", "", "```python", "import resnets", "",
             f'model = resnets.create_model("hf-hub:{where}")  # or "local-dir:PATH" for a downloaded copy',
             "model.eval()", "```", "", "```bash",
             f"resnets predict {model.arch} --weights hf-hub:{where} IMAGE.jpg", "```", ""]
    pre = model.preprocessing
    if pre is not None:
        lines += ["## Preprocessing", "",
                  f"Resize the shorter side to {pre.resize_size} ({pre.interpolation}), center-crop "
                  f"{pre.input_size[1]}x{pre.input_size[2]}, scale to [0, 1], normalise with mean "
                  f"{list(pre.mean)} and std {list(pre.std)} (`model.preprocessing.transforms()` does this).", ""]
    if meta is not None:
        lines += ["## Weights", "", f"- name: `{named.name}`", f"- trained on: {meta.dataset}"]
        if meta.top1 is not None:
            top5 = f", top-5 {meta.top5:.2f}%" if meta.top5 is not None else ""
            on = f" on {meta.n:,} images" if meta.n else ""
            lines.append(f"- accuracy: top-1 {meta.top1:.2f}%{top5}{on}")
        lines += [f"- {label}: {value}" for label, value in
                  (("recipe", meta.recipe), ("source", meta.source), ("license", meta.license)) if value]
        if not named.url:
            training = model_card(named.name).get("training", {})
            for label, key in (("training data", "data"), ("command", "command"), ("machine", "machine")):
                if training.get(key):
                    lines.append(f"- {label}: `{training[key]}`" if key == "command" else
                                 f"- {label}: {training[key]}")
        lines.append("")
    if config.get("label_names"):
        shown = ", ".join(config["label_names"][:10])
        more = f", ... ({len(config['label_names']) - 10} more)" if len(config["label_names"]) > 10 else ""
        lines += ["## Classes", "", f"{shown}{more} (all in `config.json`, `label_names`).", ""]
    lines += ["## Files", "",
              "- `model.safetensors`: the weights, in torchvision's and timm's tensor names, with resnets' metadata",
              "- `config.json`: architecture, classes and preprocessing in timm's keys, resnets' options under "
              "`resnets`", ""]
    return str(hub.ModelCard(f"---\n{data.to_yaml()}\n---\n{CARD_MARK}\n\n" + "\n".join(lines)))


__all__ = ["CARD_FILE", "CONFIG_FILE", "HUB_PREFIX", "LOCAL_PREFIX", "MAX_CONFIG_BYTES", "Repository",
           "WEIGHTS_FILES", "hub_offline", "is_repository", "open_repository", "parse_hub_spec", "save_pretrained"]
