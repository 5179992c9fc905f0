"""Reading and writing checkpoints of every supported format.

Formats are detected from a file's first bytes, never from its name:

- ``safetensors``: our own files (with metadata: architecture, options, preprocessing,
  classes) and foreign ones such as timm's ``model.safetensors``;
- ``torch_zip``: ``torch.save`` since PyTorch 1.6 (torchvision ``.pth``, timm ``.pth`` /
  ``pytorch_model.bin``, training checkpoints);
- ``torch_legacy``: the pickle layout ``torch.save`` wrote before 1.6 (as the
  pytorch_resnet_cifar10 checkpoints are).

Every checkpoint is sized from its header before it is read (``sizing``: header length and
JSON depth, each tensor's and each zip member's bytes against the file and the limits, dtypes,
the classifier's width). Everything is read without executing code: safetensors holds
tensors only, and the torch formats go through ``torch.load(weights_only=True)``, which
refuses any object outside a small allow-list. Key layouts are then mapped onto ours
(torchvision's names): wrappers such as ``{"state_dict": ...}``, ``module.`` prefixes and
the ``linear`` head of pytorch_resnet_cifar10 are undone.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import struct
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence, TypeVar, Union

import torch
from torch import nn

from .._io import atomic_path, cache_root
from ..download import cache_entry, check_digest, expected_sha256, fetch
from ..errors import MissingFileError, UsageError
from ..models import Preprocessing, build_model, get_model_spec, list_models
from ..models.preprocessing import IMAGENET_MEAN, IMAGENET_STD
from .sizing import CheckpointError, check_classifier, check_json_depth, check_torch_archive, read_safetensors_header

FORMAT_NAME = "resnets"
FORMAT_VERSION = "1"
PathOrUrl = Union[str, os.PathLike]

# torch.save's legacy layout starts with a pickled magic number (protocol 2, LONG1 of 10 bytes)
_LEGACY_MAGIC = b"\x80\x02\x8a\x0a" + (0x1950A86A20F9469CFC6C).to_bytes(10, "little")
_RESERVED_METADATA = ("format", "format_version", "arch", "arch_kwargs", "preprocessing", "classes", "num_classes")
# keys of the dictionaries that training scripts wrap a state dict in, in order of preference
_WRAPPER_KEYS = ("state_dict", "model", "model_state_dict", "net", "module")
# a recognised foreign layout brings the preprocessing its project trained and evaluated with:
# pytorch_resnet_cifar10 (akamaster) normalises CIFAR-10 with ImageNet's mean/std, no resize (trainer.py)
LAYOUT_PREPROCESSING = {
    "pytorch_resnet_cifar10": Preprocessing((3, 32, 32), IMAGENET_MEAN, IMAGENET_STD, crop_pct=1.0),
}
# how a repository (config.json + weights, resnets.weights.hub) is named instead of a file: the Hub, a folder
REPOSITORY_PREFIXES = ("hf-hub:", "local-dir:")
# prefixes added by nn.DataParallel / DistributedDataParallel, torch.compile and Lightning
_STRIPPABLE_PREFIXES = ("module.", "_orig_mod.", "model.")
V = TypeVar("V")
# the dtypes a state dict of ours can hold: floating-point weights, integer counters (as sizing's for safetensors)
_LOADABLE_DTYPES = (torch.float64, torch.float32, torch.float16, torch.bfloat16, torch.int64, torch.int32,
                    torch.int16, torch.int8, torch.uint8, torch.bool)


class UnsafeCheckpointError(CheckpointError):
    """A checkpoint whose loading would need to run code (refused, nothing executed)."""


@dataclass
class CheckpointInfo:
    """What was read from a checkpoint and how it was mapped onto the model."""

    path: Path
    format: str  # "safetensors", "torch_zip" or "torch_legacy"
    layout: str  # "resnets", "torchvision", "pytorch_resnet_cifar10"
    metadata: dict = field(default_factory=dict)
    classes: Optional[list[str]] = None
    missing_keys: list[str] = field(default_factory=list)
    unexpected_keys: list[str] = field(default_factory=list)
    skipped_keys: list[str] = field(default_factory=list)
    # the named weights (MODEL.TAG) or the repository (hf-hub:ORG/NAME, local-dir:PATH) it was loaded by, if any
    source: Optional[str] = None

    @property
    def arch(self) -> Optional[str]:
        return self.metadata.get("arch")


# -- format detection and raw reading --------------------------------------------------------


def detect_format(path: PathOrUrl) -> str:
    """The checkpoint format of ``path`` from its content: "safetensors", "torch_zip" or
    "torch_legacy". Raises CheckpointError for anything else (including plain pickles,
    which are never unpickled)."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"checkpoint not found: {path}")
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(16)
    if head.startswith(b"PK\x03\x04"):
        return "torch_zip"
    if head.startswith(_LEGACY_MAGIC):
        return "torch_legacy"
    if len(head) >= 9:
        (header_len,) = struct.unpack("<Q", head[:8])
        if 2 <= header_len <= size - 8 and head[8:9] == b"{":
            return "safetensors"
        if head[8:9] == b"{":  # a safetensors file whose header length points past its end
            raise CheckpointError(f"{path}: a safetensors file whose header claims {header_len:,} bytes, but the "
                                  f"file has {size:,}: truncated or damaged; fetch or copy it again")
    if head[:1] == b"\x80":
        raise CheckpointError(f"{path}: a plain pickle, not a torch.save or safetensors checkpoint; "
                              "refusing to unpickle it")
    if path.suffix.lower() in (".onnx", ".xml"):
        kind = "an ONNX model" if path.suffix.lower() == ".onnx" else "an OpenVINO model"
        raise CheckpointError(f"{path}: {kind}, not a checkpoint of weights; weights are read from safetensors or "
                              "torch.save files (resnets export writes ONNX, it does not read it back)")
    raise CheckpointError(f"{path}: unknown checkpoint format (expected safetensors, or torch.save's zip or "
                          f"legacy layout; first bytes {head[:8]!r})")


def _torch_load(path: Path, fmt: str) -> Any:
    import pickle

    if path.suffix.lower() == ".safetensors":  # torch.load would hand it to safetensors by its name
        raise CheckpointError(f"{path}: a torch.save file ({fmt}), not safetensors despite its name; rename it to "
                              f"{path.with_suffix('.pth').name}")
    if fmt == "torch_zip":
        check_torch_archive(path)
    # timm's training checkpoints carry their argparse arguments; a Namespace only holds data
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        # torch's message goes on to suggest weights_only=False, which would run the file's code: name only
        # what it refused
        found = re.search(r"GLOBAL ([\w.]+)", str(error))
        why = f"a pickled {found.group(1)}" if found else "an object outside tensors and plain data"
        hint = ("; if it is a whole model saved with torch.save(model), save model.state_dict() instead"
                if found and "." in found.group(1) and found.group(1).split(".")[0] in ("torch", "torchvision",
                                                                                         "timm", "resnets") else "")
        raise UnsafeCheckpointError(
            f"{path}: refused to load, it contains objects that only code execution could build ({why}); "
            f"it is not loaded, and should not be unless you trust its source{hint}") from None
    except Exception as error:  # noqa: BLE001 - whatever a damaged file makes torch.load raise is the file's fault
        if fmt == "torch_zip" and not zipfile.is_zipfile(path):  # a zip cut short has no central directory
            raise CheckpointError(f"{path}: a torch.save archive without its end (no zip central directory): "
                                  f"truncated or damaged; fetch or copy it again") from None
        why = str(error).split(". This is an internal")[0]  # torch's own advice on corruption follows
        raise CheckpointError(f"{path}: cannot read this {fmt} checkpoint ({why}); it may be truncated or "
                              f"damaged: fetch or copy it again") from None


def _decode_metadata(raw: Optional[Mapping[str, str]], path: Path) -> dict:
    decoded = {}
    for key, value in (raw or {}).items():
        check_json_depth(value, f"{path}: metadata {key[:80]!r}")
        try:
            decoded[key] = json.loads(value)
        except (ValueError, TypeError):
            decoded[key] = value  # foreign files store plain strings, e.g. {"format": "pt"}
    return decoded


def read_metadata(path: PathOrUrl) -> dict:
    """The metadata of a safetensors checkpoint, JSON fields decoded (``arch``,
    ``arch_kwargs``, ``preprocessing``, ``classes``, ``num_classes`` and the user's own)."""
    path = Path(path)
    fmt = detect_format(path)
    if fmt != "safetensors":
        raise CheckpointError(f"{path}: metadata is only stored in safetensors files, this is {fmt}")
    return _decode_metadata(read_safetensors_header(path).metadata, path)


def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, Mapping) and bool(obj) and all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                                          for k, v in obj.items())


def _find_state_dict(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    if isinstance(obj, Mapping):
        if _is_state_dict(obj):
            return dict(obj)
        for key in _WRAPPER_KEYS:
            inner = obj.get(key)
            if _is_state_dict(inner):
                return dict(inner)
        keys = ", ".join(repr(k)[:80] for k in list(obj)[:10])
        raise CheckpointError(f"{path}: no state dict found; top-level keys are {keys} "
                              f"(looked for a dict of tensors or one under {', '.join(_WRAPPER_KEYS)})")
    raise CheckpointError(f"{path}: holds a {type(obj).__name__}, not a state dict")


def strip_prefixes(mapping: dict[str, V]) -> dict[str, V]:
    """``mapping`` without the key prefix that wrappers add to every key (``module.`` of DDP, ``model.``,
    ``_orig_mod.`` of torch.compile): tensors of a state dict, or their shapes read from a header."""
    for prefix in _STRIPPABLE_PREFIXES:
        if mapping and all(k.startswith(prefix) for k in mapping):
            mapping = {k[len(prefix):]: v for k, v in mapping.items()}
    return mapping


def _to_our_layout(state_dict: dict[str, torch.Tensor], path: Path) -> tuple[dict[str, torch.Tensor], str]:
    """Map foreign key names onto torchvision's (ours); returns the dict and the layout name."""
    state_dict = strip_prefixes(state_dict)
    layout = "torchvision"
    if "linear.weight" in state_dict and "fc.weight" not in state_dict:
        # pytorch_resnet_cifar10 names its classifier ``linear``
        state_dict = {("fc." + k[len("linear."):] if k.startswith("linear.") else k): v
                      for k, v in state_dict.items()}
        layout = "pytorch_resnet_cifar10"
    if "conv1.0.weight" in state_dict:
        raise CheckpointError(f"{path}: a deep-stem ResNet (three 3x3 convolutions, timm's resnet*d / *s "
                              "variants); resnets has only the original 7x7 stem")
    if any(k.startswith(("stem.", "stages.")) for k in state_dict):
        raise CheckpointError(f"{path}: a timm ResNetV2 / BiT layout (stem.*, stages.*), which resnets does "
                              "not implement; its pre-activation nets use torchvision-style names")
    return state_dict, layout


def checkpoint_cache_dir() -> Path:
    """Where downloaded checkpoints are cached: ``checkpoints/`` under the package's cache root."""
    return cache_root() / "checkpoints"


def resolve(path_or_url: PathOrUrl, *, sha256: Optional[str] = None, cache_dir: Optional[PathOrUrl] = None,
            offline: Optional[bool] = None, progress: bool = True) -> Path:
    """A local path for ``path_or_url``: URLs are downloaded into the cache first (once, verified)."""
    text = os.fspath(path_or_url)
    if re.match(r"^https?://", text):
        directory = Path(cache_dir).expanduser() if cache_dir is not None else checkpoint_cache_dir()
        return fetch(text, cache_entry(text, directory), sha256=sha256, offline=offline, progress=progress)
    if text.startswith(REPOSITORY_PREFIXES):
        raise UsageError(f"{text} names a repository, not a checkpoint file: load it with "
                         f"resnets.create_model({text!r})")
    path = Path(text).expanduser()
    if path.is_dir():
        raise UsageError(f"{path} is a directory; give the checkpoint file inside it")
    if not path.is_file():
        raise MissingFileError(f"checkpoint not found: {path}")
    if sha256 is not None:
        ok, why = check_digest(path, sha256=expected_sha256(text, sha256))
        if not ok:
            raise CheckpointError(f"{text}: {why}")
    return path


def load_checkpoint(path_or_url: PathOrUrl, *, sha256: Optional[str] = None, cache_dir: Optional[PathOrUrl] = None,
                    offline: Optional[bool] = None, progress: bool = True
                    ) -> tuple[dict[str, torch.Tensor], CheckpointInfo]:
    """Read a checkpoint of any supported format into a state dict with our key names,
    and what it says about itself (format, layout, metadata, class names)."""
    path = resolve(path_or_url, sha256=sha256, cache_dir=cache_dir, offline=offline, progress=progress)
    try:
        state_dict, fmt, metadata = _read_checkpoint(path)
    except CheckpointError as error:
        text = os.fspath(path_or_url)
        if re.match(r"^https?://", text) and expected_sha256(text, sha256) is None and path.is_file():
            # nothing vouches for a download without a hash (a server that closes early without announcing a
            # length looks complete): a copy that cannot be read is not kept, so the next try fetches it again
            path.unlink()
            raise CheckpointError(f"{error}; removed from the download cache, the next use fetches it again") \
                from None
        raise
    if metadata.get("format") == FORMAT_NAME:
        layout = "resnets"
    else:
        state_dict, layout = _to_our_layout(state_dict, path)
    classes = metadata.get("classes")
    if classes is not None and not (isinstance(classes, list) and all(isinstance(c, str) for c in classes)):
        raise CheckpointError(f"{path}: metadata 'classes' must be a list of strings")
    info = CheckpointInfo(path=path, format=fmt, layout=layout, metadata=metadata, classes=classes)
    return state_dict, info


def _read_checkpoint(path: Path) -> tuple[dict[str, torch.Tensor], str, dict]:
    """(state dict, format, metadata) of the checkpoint at ``path``, sized from its header before it is read
    (resnets.weights.sizing)."""
    fmt = detect_format(path)
    if fmt != "safetensors":
        state_dict = _find_state_dict(_torch_load(path, fmt), path)
        for key, value in state_dict.items():
            if value.dtype not in _LOADABLE_DTYPES:
                raise CheckpointError(f"{path}: {key[:120]} holds {value.dtype} values, which no network of resnets "
                                      f"keeps (weights are float16, bfloat16, float32 or float64, counters "
                                      f"integers); convert them to float32 first")
            if value.layout != torch.strided:
                raise CheckpointError(f"{path}: {key[:120]} is a {value.layout} tensor, not the dense weights of a "
                                      f"network")
        check_classifier(_classifier_shapes({k: tuple(v.shape) for k, v in state_dict.items()}), str(path))
        return state_dict, fmt, {}
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    header = read_safetensors_header(path)
    check_classifier(_classifier_shapes(header.shapes), str(path))
    metadata = _decode_metadata(header.metadata, path)
    try:
        state_dict = load_file(str(path), device="cpu")
    except SafetensorError as error:
        raise CheckpointError(f"{path}: cannot read this safetensors file: {error}") from None
    return state_dict, fmt, metadata


def _classifier_shapes(shapes: dict[str, tuple[int, ...]]) -> dict[str, tuple[int, ...]]:
    """The shapes under our names for the classifier: prefixes undone, pytorch_resnet_cifar10's ``linear``
    read as ``fc`` (as _to_our_layout maps them)."""
    shapes = strip_prefixes(shapes)
    if "fc.weight" not in shapes and "linear.weight" in shapes:
        shapes = {**shapes, "fc.weight": shapes["linear.weight"]}
    return shapes


# -- matching a state dict against a model -----------------------------------------------------


def _ignorable(key: str) -> bool:
    # old torchvision and timm files have no BN step counters; they do not affect inference
    return key.endswith("num_batches_tracked")


def _shapes(state_dict: Mapping[str, torch.Tensor]) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in state_dict.items() if not _ignorable(k)}


_SIGNATURES: dict[tuple[str, int, int], dict[str, tuple[int, ...]]] = {}


def guess_architecture(state_dict: Mapping[str, torch.Tensor]) -> list[str]:
    """The registered models whose parameter names and shapes a state dict matches exactly
    (built on the meta device, so nothing is allocated), residual nets first. Several can
    match: option-A shortcuts have no parameters, so resnet20 and plain20 look alike."""
    shapes = _shapes(state_dict)
    conv1 = shapes.get("conv1.weight")
    if conv1 is None or len(conv1) != 4:
        return []
    fc = shapes.get("fc.weight")
    num_classes = fc[0] if fc is not None and len(fc) == 2 else 0
    family = "imagenet" if conv1[-1] == 7 else "cifar"
    matches = []
    for name in list_models(family=family):
        key = (name, num_classes, conv1[1])
        if key not in _SIGNATURES:
            try:
                with torch.device("meta"):
                    model = build_model(name, num_classes=num_classes, in_chans=conv1[1])
                _SIGNATURES[key] = _shapes(model.state_dict())
            except (ValueError, TypeError):
                continue
        if _SIGNATURES[key] == shapes:
            matches.append(name)
    order = {"residual": 0, "preact": 1, "plain": 2}
    return sorted(matches, key=lambda n: order.get(get_model_spec(n).kind, 3))


def shortcut_option(state_dict: Mapping[str, torch.Tensor]) -> Optional[str]:
    """The shortcut option (2015 paper, section 3.3) that a state dict's projections show: ``"C"`` where
    a block that keeps its shape has one too, ``"B"`` where only the first block of a stage has one
    (torchvision's ImageNet nets; CIFAR nets trained with projections), None where none has one (option A
    and plain nets, which have no parameters to tell them apart)."""
    blocks = {int(m.group(1)) for m in map(re.compile(r"layer\d+\.(\d+)\.downsample\.").match, state_dict) if m}
    if not blocks:
        return None
    return "C" if max(blocks) > 0 else "B"


def describe_state_dict(state_dict: Mapping[str, torch.Tensor]) -> str:
    """A short description of what a state dict looks like: stem, blocks per stage, classes."""
    fc = state_dict.get("fc.weight")
    head = "no classifier" if fc is None else f"{fc.shape[0]} classes" if fc.dim() == 2 else \
        f"a classifier of shape {tuple(fc.shape)}"
    matches = guess_architecture(state_dict)
    if matches:
        return f"{' or '.join(matches)} with {head}"
    stages: dict[int, set[int]] = {}
    for key in state_dict:
        match = re.match(r"layer(\d+)\.(\d+)\.", key)
        if match:
            stages.setdefault(int(match.group(1)), set()).add(int(match.group(2)))
    conv1 = state_dict.get("conv1.weight")
    if conv1 is None and not stages:
        return f"not a ResNet (no conv1.weight and no layerN.M blocks; {len(state_dict)} tensor(s))"
    stem = "no conv1" if conv1 is None else f"{conv1.shape[-1]}x{conv1.shape[-1]} stem" if conv1.dim() == 4 else \
        f"conv1 of shape {tuple(conv1.shape)}"
    block = "bottleneck" if any(".conv3." in k for k in state_dict) else "basic"
    layers = tuple(len(stages[i]) for i in sorted(stages))
    return f"no registered model; a {stem}, {block} blocks {layers}, {head}"


def _format_keys(keys: Sequence[str], limit: int = 8) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys) - limit} more)" if len(keys) > limit else "")


def check_fit(model: nn.Module, state_dict: Mapping[str, torch.Tensor], *, strict: bool = True,
              exclude: Sequence[str] = (), source: str = "state dict",
              info: Optional[CheckpointInfo] = None) -> tuple[list[str], list[str], list[str]]:
    """The (missing, unexpected, skipped) keys of ``state_dict`` against ``model``, or the CheckpointError of
    load_state_dict naming every missing, unexpected and wrongly shaped key. ``model`` may be on the meta
    device: a network built there is compared with a file before the real one is allocated."""
    info = info or CheckpointInfo(path=Path(source), format="memory", layout="torchvision")
    target = model.state_dict()

    def excluded(key: str) -> bool:
        return any(key.startswith(prefix) for prefix in exclude)

    given = {k: v for k, v in state_dict.items() if not excluded(k)}
    skipped = sorted(k for k in state_dict if excluded(k))
    missing = sorted(k for k in target if k not in given and not excluded(k) and not _ignorable(k))
    # a BN step counter has nowhere to go in a model with frozen BN, and means nothing there
    unexpected = sorted(k for k in given if k not in target and not _ignorable(k))
    wrong_shape = sorted(f"{k}: file {tuple(v.shape)} vs model {tuple(target[k].shape)}"
                         for k, v in given.items() if k in target and tuple(v.shape) != tuple(target[k].shape))
    if wrong_shape or (strict and (missing or unexpected)):
        arch = getattr(model, "arch", None) or type(model).__name__
        lines = [f"{source} does not fit {arch} ({info.layout} layout, {info.format}):"]
        if missing:
            lines.append(f"  missing keys ({len(missing)}): {_format_keys(missing)}")
        if unexpected:
            lines.append(f"  unexpected keys ({len(unexpected)}): {_format_keys(unexpected)}")
        if wrong_shape:
            lines.append(f"  wrong shapes ({len(wrong_shape)}): {_format_keys(wrong_shape)}")
        lines.append(f"  the file looks like: {describe_state_dict(state_dict)}")
        raise CheckpointError("\n".join(lines))
    return missing, unexpected, skipped


def load_state_dict(model: nn.Module, state_dict: Mapping[str, torch.Tensor], *, strict: bool = True,
                    exclude: Sequence[str] = (), source: str = "state dict",
                    info: Optional[CheckpointInfo] = None) -> CheckpointInfo:
    """Copy ``state_dict`` into ``model``, naming every missing, unexpected and wrongly
    shaped key on a mismatch (shape mismatches are errors even with ``strict=False``).
    Keys starting with a prefix in ``exclude`` are skipped on both sides."""
    info = info or CheckpointInfo(path=Path(source), format="memory", layout="torchvision")
    missing, unexpected, skipped = check_fit(model, state_dict, strict=strict, exclude=exclude, source=source,
                                             info=info)
    target = model.state_dict()
    given = {k: v for k, v in state_dict.items() if not any(k.startswith(prefix) for prefix in exclude)}
    loadable = {k: v for k, v in given.items() if k in target}
    for key, value in loadable.items():
        if target[key].is_floating_point() and not value.is_floating_point():
            raise CheckpointError(f"{source}: {key} holds {value.dtype} values where a network keeps floating-point "
                                  f"weights; this file does not hold trained weights")
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise CheckpointError(f"{source}: {key} holds NaN or infinite values (a diverged or damaged training); "
                                  f"every output would be NaN, so the weights are refused")
    model.load_state_dict(loadable, strict=False)
    info.missing_keys, info.unexpected_keys, info.skipped_keys = missing, unexpected, skipped
    return info


def load_weights(model: nn.Module, path_or_url: PathOrUrl, *, strict: bool = True, exclude: Sequence[str] = (),
                 sha256: Optional[str] = None, cache_dir: Optional[PathOrUrl] = None, offline: Optional[bool] = None,
                 progress: bool = True) -> CheckpointInfo:
    """Load a checkpoint of any supported format (path or URL) into ``model``.

    Returns a CheckpointInfo (format, layout, metadata, class names, missing keys). The
    file's class names, where it has them, are also set as ``model.classes``.
    """
    state_dict, info = load_checkpoint(path_or_url, sha256=sha256, cache_dir=cache_dir, offline=offline,
                                       progress=progress)
    classifier = state_dict.get("fc.weight")
    if info.classes is not None and classifier is not None and classifier.ndim == 2 \
            and len(info.classes) != classifier.shape[0]:  # checked before the model is touched
        raise CheckpointError(f"{info.path}: names {len(info.classes)} classes for a classifier of "
                              f"{classifier.shape[0]} outputs; the file's class names do not fit its weights (a "
                              f"damaged or edited file)")
    load_state_dict(model, state_dict, strict=strict, exclude=exclude, source=str(info.path), info=info)
    if info.classes is not None and not any(k.startswith("fc.") for k in info.skipped_keys):
        model.classes = list(info.classes)
    apply_preprocessing(model, info)
    return info


def apply_preprocessing(model: nn.Module, info: CheckpointInfo, channels: Optional[int] = None) -> None:
    """The preprocessing a model was trained with travels with its weights and wins over the default:
    our files' recorded one, or that of a recognised foreign layout (LAYOUT_PREPROCESSING). The recorded
    one must be for ``channels`` input channels (default: the model's; a caller adapting the weights to
    other channels passes the file's and adapts the preprocessing after)."""
    if info.layout in LAYOUT_PREPROCESSING:
        model.preprocessing = LAYOUT_PREPROCESSING[info.layout]
        return
    stored = info.metadata.get("preprocessing") if info.layout == "resnets" else None
    if not stored:
        return
    try:
        preprocessing = Preprocessing.from_dict(stored)
        preprocessing.check()
    except (TypeError, AttributeError, ValueError) as error:
        raise CheckpointError(f"{info.path}: metadata 'preprocessing' is not valid: {error}") from None
    model_chans = channels or getattr(getattr(model, "preprocessing", None), "input_size", (None,))[0]
    if model_chans is not None and preprocessing.input_size[0] != model_chans:
        raise CheckpointError(f"{info.path}: metadata 'preprocessing' has input_size {preprocessing.input_size}, "
                              f"but the model takes {model_chans} channels")
    model.preprocessing = preprocessing


# -- writing ----------------------------------------------------------------------------------


def _json_arch_kwargs(kwargs: Mapping[str, Any]) -> dict:
    encodable = {}
    for key, value in kwargs.items():
        try:
            json.dumps(value)
        except TypeError:
            raise UsageError(f"save_weights: arch_kwargs[{key!r}] = {value!r} cannot be stored as JSON; "
                             "build the model with a named option (e.g. norm_layer='batchnorm')") from None
        encodable[key] = value
    return encodable


def save_weights(model: nn.Module, path: PathOrUrl, *, classes: Optional[Sequence[str]] = None,
                 metadata: Optional[Mapping[str, Any]] = None) -> None:
    """Write ``model``'s weights as a safetensors file with our metadata, atomically
    (``resnets._io.atomic_path``: a temporary file in the same directory, fsync, rename).

    Metadata: ``format``, ``format_version``, ``arch``, ``arch_kwargs``, ``preprocessing``,
    ``classes``, ``num_classes`` and the entries of ``metadata``; each value JSON-encoded.
    """
    from safetensors.torch import save_file

    path = Path(path)
    metadata = dict(metadata or {})
    clash = sorted(set(metadata) & set(_RESERVED_METADATA))
    if clash:
        raise UsageError(f"save_weights: metadata keys {clash} are reserved; pass classes= for class names")
    num_classes = getattr(model, "num_classes", None)
    if classes is None:
        classes = getattr(model, "classes", None)
    if classes is not None:
        classes = [str(c) for c in classes]
        if num_classes and len(classes) != num_classes:
            raise UsageError(f"save_weights: {len(classes)} class names for a model with {num_classes} classes")
    preprocessing = getattr(model, "preprocessing", None)
    fields = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "arch": getattr(model, "arch", None),
        "arch_kwargs": _json_arch_kwargs(getattr(model, "arch_kwargs", {}) or {}),
        "preprocessing": preprocessing.to_dict() if preprocessing is not None else None,
        "classes": classes,
        "num_classes": num_classes,
        **metadata,
    }
    try:
        encoded = {k: json.dumps(v) for k, v in fields.items()}
    except TypeError as error:
        raise UsageError(f"save_weights: metadata must be JSON-encodable: {error}") from None
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=encoded)


__all__ = [
    "REPOSITORY_PREFIXES", "CheckpointError", "CheckpointInfo", "UnsafeCheckpointError", "apply_preprocessing",
    "check_fit", "checkpoint_cache_dir", "describe_state_dict", "detect_format", "guess_architecture",
    "load_checkpoint", "load_state_dict", "load_weights", "read_metadata", "resolve", "save_weights",
]
