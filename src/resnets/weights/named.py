"""Named weights: ``MODEL.TAG`` names a published checkpoint, as in torchvision and timm.

This module is the registry mechanism: ``Weights`` (one entry: where its file is, its sha256, what it was
measured to do), ``register_weights`` and the look-ups. The entries themselves are data, in ``catalogue``.
``create_model(name, weights="tv2_in1k")`` and ``create_model(name, pretrained=True)`` resolve through here;
the file itself is read by ``formats``, downloaded and checked by the package's one downloader, after the
caches a user already has: torch.hub's (``$TORCH_HOME/hub/checkpoints``, where torchvision and
``torch.hub.load_state_dict_from_url`` put a file under its own name) and huggingface_hub's.

torchvision's names are accepted for the same files: its enums (``ResNet50_Weights.DEFAULT``), their names
(``"ResNet50_Weights.IMAGENET1K_V2"``) and, with a model, ``"DEFAULT"``, ``"IMAGENET1K_V1"`` and
``"IMAGENET1K_V2"``; ``Weights.meta`` is also a mapping with the keys torchvision documents (``categories``,
``num_params``, ``min_size``, ``recipe``, ``_metrics``, ``_ops``, ``_file_size``, ``_docs``).
"""

from __future__ import annotations

import collections.abc
import enum
import fnmatch
import json
import logging
import os
import re
import warnings
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence, Union

import torch

from ..download import cache_entry, check_digest, url_file_name
from ..errors import MissingFileError, ResnetsError, UsageError
from ..models import Preprocessing, build_model, get_model_spec
from .classes import class_names
from .formats import (FORMAT_NAME, REPOSITORY_PREFIXES, CheckpointError, PathOrUrl, checkpoint_cache_dir, read_metadata,
                      resolve)
from .hfcache import NotInRepository, has_huggingface_hub, hub_file, hub_url_parts, huggingface_hub

# where shipped weights live: ``Weights.file`` is relative to this folder
FILES_DIR = Path(__file__).resolve().parent / "files"
# which cache a file came from is said here, at INFO (the command line shows it)
log = logging.getLogger(__name__)

# torchvision's names of the data sets in ``meta["_metrics"]``
_METRICS_TITLES = {"imagenet1k": "ImageNet-1K", "cifar10": "CIFAR-10", "cifar100": "CIFAR-100",
                   "imagenette": "Imagenette"}


@dataclass(frozen=True)
class WeightsMeta(collections.abc.Mapping):
    """What a checkpoint was trained on and measured to do.

    Fields by attribute (``meta.top1``); as a mapping (``meta["categories"]``, ``"num_params" in meta``,
    ``meta.get(...)``) the same fields and the keys of torchvision's ``Weights.meta``: ``categories`` (the
    class names, a list), ``num_params``, ``min_size``, ``recipe``, ``_metrics``, ``_ops`` (billions of
    multiply-adds, what torchvision calls GFLOPS), ``_file_size`` (MiB) and ``_docs``."""

    dataset: str  # what it was trained and evaluated on: "imagenet1k", "cifar10", "imagenette"...
    preprocessing: Preprocessing  # the evaluation transform the accuracy was measured with
    top1: Optional[float] = None  # percent
    top5: Optional[float] = None  # percent, where published
    n: Optional[int] = None  # images the accuracy was measured on
    params: Optional[int] = None
    gmacs: Optional[float] = None  # billions of multiply-adds per image at the preprocessing's input size
    file_size_mb: Optional[float] = None  # MiB (2**20 bytes), as torchvision publishes it
    # a shipped list's name (resnets.weights.classes.DATASETS) or the names themselves
    classes: Union[str, tuple[str, ...]] = "imagenet1k"
    recipe: str = ""  # where the training recipe is described
    source: str = ""  # who published the weights
    license: str = ""

    @property
    def categories(self) -> list[str]:
        """The class names, by label index."""
        return class_names(self.classes) if isinstance(self.classes, str) else list(self.classes)

    def _torchvision_keys(self) -> dict[str, Any]:
        metrics = {k: v for k, v in (("acc@1", self.top1), ("acc@5", self.top5)) if v is not None}
        on = f" on {self.n:,} {_METRICS_TITLES.get(self.dataset, self.dataset)} images" if self.n else ""
        docs = f"Published by {self.source}" + (f"; top-1 {self.top1}%{on}" if self.top1 is not None else "") + \
            (f"; recipe: {self.recipe}" if self.recipe else "") + "."
        # a ResNet ends in adaptive average pooling: any input of at least a pixel goes through
        return {"categories": self.categories, "num_params": self.params, "min_size": (1, 1), "recipe": self.recipe,
                "_metrics": {_METRICS_TITLES.get(self.dataset, self.dataset): metrics}, "_ops": self.gmacs,
                "_file_size": self.file_size_mb, "_docs": docs}

    def __getitem__(self, key: str) -> Any:
        if key in _OWN_META_KEYS:
            return getattr(self, key)
        if key in _TORCHVISION_META_KEYS:
            return self._torchvision_keys()[key]
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        return iter((*_OWN_META_KEYS, *(k for k in _TORCHVISION_META_KEYS if k not in _OWN_META_KEYS)))

    def __len__(self) -> int:
        return len(set(_OWN_META_KEYS) | set(_TORCHVISION_META_KEYS))

    def to_dict(self) -> dict:
        return {"dataset": self.dataset, "top1": self.top1, "top5": self.top5, "n": self.n, "params": self.params,
                "gmacs": self.gmacs, "file_size_mb": self.file_size_mb, "recipe": self.recipe, "source": self.source,
                "license": self.license, "preprocessing": self.preprocessing.to_dict(),
                "classes": self.classes if isinstance(self.classes, str) else list(self.classes)}


_TORCHVISION_META_KEYS = ("categories", "num_params", "min_size", "recipe", "_metrics", "_ops", "_file_size", "_docs")
_OWN_META_KEYS = tuple(f.name for f in fields(WeightsMeta))


@dataclass(frozen=True)
class Located:
    """A checkpoint on this machine and where it came from: ``"package"`` (shipped inside it),
    ``"torch.hub"`` (``$TORCH_HOME/hub/checkpoints``), ``"huggingface_hub"`` (its cache) or ``"resnets"``
    (the package's download cache)."""

    path: Path
    cache: str
    downloaded: bool = False  # fetched just now, not found

    def describe(self) -> str:
        if self.cache == "package":
            return f"{self.path} (shipped inside the package)"
        where = {"resnets": "the resnets cache"}.get(self.cache, f"{self.cache}'s cache")
        return f"{self.path} ({'downloaded into' if self.downloaded else 'found in'} {where})"


@dataclass(frozen=True, kw_only=True)
class Weights:
    """One named checkpoint: ``name`` is ``MODEL.TAG`` (``resnet50.tv2_in1k``)."""

    name: str
    url: str = ""  # an http(s) URL ...
    file: str = ""  # ... or a file shipped in resnets/weights/files/ (exactly one of the two)
    sha256: Optional[str] = None  # whole, or a prefix of 8+ hex digits
    meta: WeightsMeta
    default: bool = False  # the model's weights for pretrained=True (else its first registered)
    # architecture options the weights were trained with, where not the model's own ({"shortcut": "B"}):
    # create_model builds them (a caller's keyword wins), and `resnets info` and the counts in meta are of them
    options: dict = field(default_factory=dict, hash=False)  # hashed without it: a dict has no hash
    torchvision: str = ""  # torchvision's name of the same file: "ResNet50_Weights.IMAGENET1K_V2"

    @property
    def model(self) -> str:
        return self.name.partition(".")[0]

    @property
    def tag(self) -> str:
        return self.name.partition(".")[2]

    @property
    def location(self) -> str:
        """The URL, or the shipped file's path."""
        return self.url or str(FILES_DIR / self.file)

    @property
    def shipped(self) -> bool:
        """Whether the file is inside the package (else it is downloaded once, on first use)."""
        return not self.url

    @property
    def classes(self) -> list[str]:
        """The class names, by label index."""
        return self.meta.categories

    @property
    def preprocessing(self) -> Preprocessing:
        return self.meta.preprocessing

    def transforms(self):
        """A torchvision transforms v2 pipeline: a PIL image or uint8 tensor -> the model's input."""
        return self.meta.preprocessing.transforms()

    def get_path(self, offline: Optional[bool] = None, *, cache_dir: Optional[PathOrUrl] = None,
                 progress: bool = True) -> Path:
        """The checkpoint on this machine, hash checked: a shipped file, or the URL downloaded into
        the downloader's cache once (``offline=True`` or ``RESNETS_OFFLINE=1``: the caches only). A copy already
        in torch.hub's cache (``torch.hub.get_dir()/checkpoints``, under the URL's file name, as torchvision
        downloads it) is used where its hash matches. A file on the Hugging Face Hub (timm's weights) goes
        through huggingface_hub's own cache where huggingface_hub is installed (``cache_dir`` does not apply),
        so that timm and resnets share one copy; without it, a copy in that cache is still used where its hash
        matches. Which cache the file came from is logged (``locate`` returns it)."""
        return self.locate(offline, cache_dir=cache_dir, progress=progress).path

    def locate(self, offline: Optional[bool] = None, *, cache_dir: Optional[PathOrUrl] = None,
               progress: bool = True) -> Located:
        """``get_path``, and which cache the file came from."""
        if not self.url:
            return Located(resolve(FILES_DIR / self.file, sha256=self.sha256), "package")
        on_the_hub = hub_url_parts(self.url)
        if on_the_hub is not None and has_huggingface_hub():
            located = self._from_huggingface_hub(*on_the_hub, offline=offline)
        else:
            located = self._download(offline, cache_dir=cache_dir, progress=progress)
        log.info("%s: %s", self.name, located.describe())
        return located

    def _from_huggingface_hub(self, repo_id: str, revision: str, filename: str, *,
                              offline: Optional[bool]) -> Located:
        cached = huggingface_hub().try_to_load_from_cache(repo_id, filename, revision=revision)
        try:
            path = hub_file(repo_id, filename, revision=revision, offline=offline, spec=f"the weights {self.name}",
                            whole_repository=False, elsewhere=f"download {self.url} and pass the file with "
                                                              f"--weights PATH (weights=PATH in Python)")
        except NotInRepository:
            raise MissingFileError(f"the weights {self.name}: the Hub's repository {repo_id} has no {filename} "
                                   f"(at revision {revision})") from None
        ok, why = check_digest(path, sha256=self.sha256)
        if not ok:
            raise CheckpointError(f"the weights {self.name}: {path} (huggingface_hub's cache): {why}; the "
                                  f"repository's file changed or the copy is damaged (`hf cache delete` removes "
                                  f"it, to be fetched again)")
        return Located(path, "huggingface_hub", downloaded=not isinstance(cached, str))

    def torch_hub_file(self) -> Optional[Path]:
        """Where torch.hub (``torch.hub.load_state_dict_from_url``, torchvision's weights) keeps this URL's file:
        ``torch.hub.get_dir()/checkpoints/<the URL's file name>``; None for a shipped file or one on the Hub."""
        if not self.url or hub_url_parts(self.url) is not None:
            return None
        return Path(torch.hub.get_dir()) / "checkpoints" / url_file_name(self.url)

    def _download(self, offline: Optional[bool], *, cache_dir: Optional[PathOrUrl], progress: bool) -> Located:
        """torch.hub's copy where it has the right hash, else the downloader's cache (fetched into it once)."""
        on_the_hub = hub_url_parts(self.url)
        if on_the_hub is not None:  # huggingface_hub is not installed, but its cache may hold the file
            copy = huggingface_cache_copy(*on_the_hub)
            if copy is not None and check_digest(copy, sha256=self.sha256)[0]:
                return Located(copy, "huggingface_hub")
        theirs = self.torch_hub_file()
        refused = ""
        if theirs is not None and theirs.is_file():
            ok, why = check_digest(theirs, sha256=self.sha256)
            if ok:
                return Located(theirs, "torch.hub")
            # not ours to delete: it is left as it is, and the file is fetched into our own cache
            refused = f"; {theirs} in torch.hub's cache is not used: {why}"
            warnings.warn(f"the weights {self.name}: {theirs} in torch.hub's cache does not match the published "
                          f"file ({why}); not used (delete it, or let torchvision fetch it again)", stacklevel=4)
        directory = Path(cache_dir).expanduser() if cache_dir is not None else checkpoint_cache_dir()
        before = cache_entry(self.url, directory).is_file()
        try:
            path = resolve(self.url, sha256=self.sha256, cache_dir=cache_dir, offline=offline, progress=progress)
        except MissingFileError:  # a URL is only missing when offline and not cached
            where = f"torch.hub's cache ({theirs.parent}) nor in " if theirs is not None else ""
            raise MissingFileError(
                f"offline: the weights {self.name} are not in {where}the resnets cache{refused}; "
                f"download {self.url} on a machine with network access and pass the file with --weights PATH "
                f"(weights=PATH in Python)") from None
        return Located(path, "resnets", downloaded=not before)


def huggingface_cache_copy(repo_id: str, revision: str, filename: str) -> Optional[Path]:
    """A Hub file in huggingface_hub's cache, read without huggingface_hub (its layout:
    ``models--ORG--NAME/snapshots/<the commit refs/REVISION names>/FILE`` under ``HF_HUB_CACHE``, else
    ``HF_HOME/hub``, else ``~/.cache/huggingface/hub``); None where it is not there."""
    if ".." in Path(revision).parts or ".." in Path(filename).parts:
        return None
    home = os.environ.get("HF_HOME") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "huggingface"
    root = Path(os.environ.get("HF_HUB_CACHE") or Path(home) / "hub").expanduser()
    repository = root / ("models--" + repo_id.replace("/", "--"))
    ref = repository / "refs" / revision
    commit = ref.read_text(encoding="utf-8").strip() if ref.is_file() else revision
    path = repository / "snapshots" / commit / filename
    return path if path.is_file() else None


_WEIGHTS: dict[str, Weights] = {}


def register_weights(weights: Weights) -> Weights:
    """Add an entry to the registry, after checking its name, location and hash."""
    model, dot, tag = weights.name.partition(".")
    if not dot or not re.fullmatch(r"[A-Za-z0-9_]+", tag):
        raise UsageError(f"weights name {weights.name!r}: expected MODEL.TAG, the tag of letters, digits and _")
    get_model_spec(model)  # an unknown model raises, naming close matches
    if weights.name in _WEIGHTS:
        raise UsageError(f"weights {weights.name!r} are already registered")
    if bool(weights.url) == bool(weights.file):
        raise UsageError(f"weights {weights.name!r}: give exactly one of url= and file=")
    if weights.url:
        if not re.match(r"^https?://", weights.url):
            raise UsageError(f"weights {weights.name!r}: url must be http(s), got {weights.url!r}")
        url_file_name(weights.url)  # the cache needs a file name
    if weights.sha256 is not None and not re.fullmatch(r"[0-9a-f]{8,64}", weights.sha256):
        raise UsageError(f"weights {weights.name!r}: sha256 must be 8 to 64 lower-case hex digits, "
                         f"got {weights.sha256!r}")
    if weights.file and weights.sha256 is None:
        raise UsageError(f"weights {weights.name!r}: a shipped file needs its sha256")
    if weights.torchvision and not re.fullmatch(r"[A-Za-z0-9_]+_Weights\.[A-Z0-9_]+", weights.torchvision):
        raise UsageError(f"weights {weights.name!r}: torchvision must be torchvision's name of the file, "
                         f"CLASS_Weights.MEMBER, got {weights.torchvision!r}")
    if not isinstance(weights.options, dict):
        raise UsageError(f"weights {weights.name!r}: options must be a dict of model options, got {weights.options!r}")
    if weights.options:
        try:
            with torch.device("meta"):  # the options must build the model; nothing is allocated
                build_model(model, **weights.options)
        except (TypeError, ValueError) as error:
            raise UsageError(f"weights {weights.name!r}: options {weights.options} do not build {model}: "
                             f"{str(error).splitlines()[0]}") from None
    _WEIGHTS[weights.name] = weights
    return weights


def list_weights(filter: Union[str, Sequence[str], None] = None) -> list[str]:
    """Registered ``MODEL.TAG`` names, models in natural order, each model's default first.
    ``filter``: glob pattern(s) matched against the name, the model or the tag (``"resnet50*"``,
    ``"*.tv2_in1k"``, ``"cifar10"``: the tag as ``--weights`` takes it)."""
    patterns = [filter] if isinstance(filter, str) else list(filter or [])
    names = [n for n in _WEIGHTS
             if not patterns or any(fnmatch.fnmatchcase(part, p) for p in patterns
                                    for part in (n, *n.split(".", 1)))]
    models = sorted({n.partition(".")[0] for n in names}, key=_natural_key)
    ordered = []
    for model in models:
        default = default_weights(model)
        own = [n for n in names if n.partition(".")[0] == model]
        ordered += sorted(own, key=lambda n: n != default.name)  # stable: registration order after the default
    return ordered


def _natural_key(name: str) -> tuple:
    return tuple(int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name))


def weights_for(model: str) -> list[Weights]:
    """The entries registered for ``model``, its default first."""
    return [_WEIGHTS[n] for n in list_weights() if n.partition(".")[0] == model]


def default_weights(model: str) -> Optional[Weights]:
    """The weights ``pretrained=True`` loads for ``model``: the entry marked default, else the first
    registered; None where none is registered."""
    own = [w for w in _WEIGHTS.values() if w.model == model]
    return next((w for w in own if w.default), own[0] if own else None)


# torchvision's names of a model's weights, given with the model: its default, or an enum member's name
TORCHVISION_DEFAULT = "DEFAULT"
_TORCHVISION_MEMBER = re.compile(r"IMAGENET1K_V\d+")


def torchvision_name(weights: Any) -> Optional[str]:
    """torchvision's name of a ``*_Weights`` enum member (``ResNet50_Weights.DEFAULT`` ->
    ``"ResNet50_Weights.IMAGENET1K_V2"``, the member it aliases); None for anything else. torchvision is not
    imported: an enum given is read by its class's name."""
    if isinstance(weights, enum.Enum) and type(weights).__name__.endswith("_Weights"):
        return f"{type(weights).__name__}.{weights.name}"
    return None


def _torchvision_entry(model: Optional[str], weights: Any) -> Optional[Weights]:
    """The entry of a name torchvision gives these weights: an enum member, its name as a string
    (``"ResNet50_Weights.IMAGENET1K_V2"``, ``"ResNet50_Weights.DEFAULT"``) or, for ``model``, ``"DEFAULT"`` and a
    member's name (``"IMAGENET1K_V1"``). None where ``weights`` is no such name; UsageError for a torchvision
    name that no entry has."""
    name = torchvision_name(weights)
    if name is None and not isinstance(weights, str):
        return None
    name = name or weights
    enum_class, dot, member = name.rpartition(".")
    if not dot:
        if not (member == TORCHVISION_DEFAULT or _TORCHVISION_MEMBER.fullmatch(member)):
            return None
        if model is None:
            raise UsageError(f"{member!r} names weights of a model: give the model too (get_weights({member!r}, "
                             f"model='resnet50'), create_model('resnet50', weights={member!r}), or torchvision's "
                             f"ResNet50_Weights.{member})")
        own = weights_for(model)
        if member == TORCHVISION_DEFAULT:
            if not own:
                raise UsageError(f"{model} has no named weights, so no DEFAULT ones; pass a checkpoint's path or "
                                 f"URL, or hf-hub:ORG/NAME")
            return own[0]
        found = next((w for w in own if w.torchvision.endswith("." + member)), None)
        if found is None:
            names = ", ".join(w.torchvision.rpartition(".")[2] for w in own if w.torchvision)
            raise UsageError(f"{model} has no torchvision weights {member}" +
                             (f"; torchvision's are {names}, or DEFAULT" if names else
                              f"; its named weights are {', '.join(w.tag for w in own) or 'none'}"))
        return found
    if not re.fullmatch(r"[A-Za-z0-9_]+_Weights", enum_class):
        return None
    of_class = [w for w in _WEIGHTS.values() if w.torchvision.partition(".")[0] == enum_class]
    if member == TORCHVISION_DEFAULT and of_class:
        return default_weights(of_class[0].model)
    found = next((w for w in of_class if w.torchvision == name), None)
    if found is None:
        raise UsageError(f"torchvision's weights {name} are not in the catalogue (see `resnets list --weights`); "
                         f"pass their URL as weights= instead")
    return found


def get_weights(name: Any, model: Optional[str] = None) -> Weights:
    """The entry ``name`` names: ``MODEL.TAG``; a bare ``MODEL`` (its default weights); a tag where it is one
    model's, or with ``model`` given (``get_weights("tv2_in1k", model="resnet50")``); torchvision's enums and
    names of the same files (``ResNet50_Weights.DEFAULT``, ``"ResNet50_Weights.IMAGENET1K_V2"``, and with
    ``model`` ``"DEFAULT"`` or ``"IMAGENET1K_V1"``). Anything else raises UsageError in one line."""
    found = _torchvision_entry(model, name)
    if found is not None:
        if model is not None and found.model != model:
            raise _other_model(found, model)
        return found
    if not isinstance(name, str):
        raise UsageError(f"weights must be a name (MODEL.TAG) or one of torchvision's *_Weights enums, "
                         f"got {type(name).__name__}")
    if name in _WEIGHTS:
        found = _WEIGHTS[name]
        if model is not None and found.model != model:
            raise _other_model(found, model)
        return found
    head, dot, _ = name.partition(".")
    if model is not None and not dot:
        found = _WEIGHTS.get(f"{model}.{name}")
        if found is not None:
            return found
    if not dot and model is None:
        found = default_weights(name)
        if found is not None:
            return found
        tagged = [w for w in _WEIGHTS.values() if w.tag == name]
        if len(tagged) == 1:
            return tagged[0]
        if tagged:
            models = ", ".join(w.model for w in tagged)
            raise UsageError(f"{name!r} is a tag of the weights of {len(tagged)} models ({models}): give MODEL.TAG "
                             f"(get_weights({tagged[0].name!r})) or the model (get_weights({name!r}, "
                             f"model={tagged[0].model!r}))")
    model = model or head
    known = ", ".join(w.tag for w in weights_for(model))
    hint = f"; {model} has {known}" if known else "; see resnets.list_weights() or `resnets list --weights`"
    raise UsageError(f"no weights named {name!r} are registered{hint}")


def _other_model(found: Weights, model: str) -> UsageError:
    return UsageError(f"{found.name} are weights of {found.model}, not {model}; load them as {found.model} "
                      f"(`resnets COMMAND {found.model} --weights {found.tag}`, "
                      f"create_model({found.model!r}, weights={found.name!r}))")


def split_weights_name(name: str) -> tuple[str, Optional[Weights]]:
    """A model named with its weights, as timm names them (``resnet56.cifar10``): the model and the entry. A model's
    own name, or a name whose model is unknown (for the caller to refuse), comes back as the model with None; a
    known model with a tag it has no weights of raises UsageError listing its tags."""
    model, dot, _ = name.partition(".")
    if not dot:
        return name, None
    try:
        get_model_spec(model)
    except UsageError:
        return model, None
    return model, get_weights(name)


# a training run's weights, in the order a run directory given as the model is read: the best validation
# top-1 first (what the run's summary tells users to predict with), else the final weights
RUN_WEIGHTS = ("best.safetensors", "last.safetensors")
CHECKPOINT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin", ".ckpt")


def checkpoint_model(spec: Any) -> Optional[tuple[str, Path]]:
    """A checkpoint where a model's name goes: (its architecture, the file). ``spec`` is a file of ours (our
    safetensors files record the architecture in their metadata) or a training run's directory (its
    ``best.safetensors``, else its ``last.safetensors``). None where ``spec`` is a model's name, ``MODEL.TAG``, a
    repository or a URL; a path that is missing, or a file that records no architecture, raises in one line."""
    if isinstance(spec, os.PathLike):
        spec = os.fspath(spec)
    if not isinstance(spec, str) or spec.startswith(REPOSITORY_PREFIXES) or re.match(r"^https?://", spec):
        return None
    path = Path(spec).expanduser()
    slash = "/" in spec or os.sep in spec
    if not slash and (spec in _WEIGHTS or _registered(spec.partition(".")[0])) and not path.is_file():
        return None
    if not (slash or path.exists() or path.suffix in CHECKPOINT_SUFFIXES):
        return None  # an unknown model's name, for the caller to name as such
    if path.is_dir():
        file = next((path / n for n in RUN_WEIGHTS if (path / n).is_file()), None)
        if file is None:
            raise MissingFileError(f"{path} is a folder without {' or '.join(RUN_WEIGHTS)}: give a training run's "
                                   f"directory, a checkpoint file, or a model's name (resnets list)")
    elif path.is_file():
        file = path
    else:
        raise MissingFileError(f"checkpoint not found: {path} (a model's name, MODEL.TAG, a checkpoint file or a "
                               f"run directory goes here)")
    try:
        metadata = read_metadata(file)
    except CheckpointError:  # not safetensors: no metadata
        metadata = {}
    except Exception as error:  # noqa: BLE001 - a damaged header, said in one line
        raise CheckpointError(f"{file}: cannot read its safetensors header ({str(error).splitlines()[0]}); "
                              f"fetch or copy it again") from None
    arch = metadata.get("arch") if metadata.get("format") == FORMAT_NAME else None
    if not isinstance(arch, str) or not arch:
        raise CheckpointError(f"{file} records no architecture (resnets' own safetensors files do): give the "
                              f"model's name with the file as its weights (`resnets COMMAND MODEL --weights {spec}`, "
                              f"create_model(MODEL, weights={spec!r}))")
    if not _registered(arch):
        raise CheckpointError(f"{file} records the architecture {arch[:60]!r}, which is not a registered model "
                              f"(resnets list; register your own with @resnets.register_model)")
    return arch, file


def _registered(model: str) -> bool:
    try:
        get_model_spec(model)
    except UsageError:
        return False
    return True


def take_weights_name(model: str, weights: Optional[PathOrUrl]) -> tuple[str, Optional[PathOrUrl]]:
    """Where ``model`` names what runs (a command's MODEL, ``InferenceSession``, ``backbone``, a teacher),
    ``MODEL.TAG`` is the model with those weights: returns (MODEL, TAG); a checkpoint or a run directory (see
    ``checkpoint_model``) is its architecture with that file; any other name comes back with ``weights``
    unchanged. ``weights`` naming others beside a tag or a checkpoint raises UsageError."""
    checkpoint = checkpoint_model(model)
    if checkpoint is not None:
        arch, file = checkpoint
        if weights is not None and str(weights) != str(file):
            raise UsageError(f"{model} is a checkpoint, and weights {str(weights)!r} others: give one of them")
        return arch, str(file)
    name, tagged = split_weights_name(model)
    if tagged is None:
        return model, weights
    if weights is not None and weights not in (tagged.tag, tagged.name):
        raise UsageError(f"{model} names its weights, and weights {str(weights)!r} others: give one of them")
    return name, tagged.tag


def weights_layout(name: str) -> tuple[str, dict]:
    """The model ``name`` names and the architecture options of its weights: ``MODEL.TAG`` -> (MODEL, the
    weights' options and class count); a checkpoint or run directory -> (its architecture, the options its file
    records); a model's name -> (it, {})."""
    checkpoint = checkpoint_model(name)
    if checkpoint is not None:
        arch, file = checkpoint
        metadata = read_metadata(file)
        options = dict(metadata.get("arch_kwargs") or {})
        if isinstance(metadata.get("num_classes"), int):
            options["num_classes"] = metadata["num_classes"]
        return arch, options
    model, tagged = split_weights_name(name)
    if tagged is None:
        return model, {}
    return model, {**tagged.options, "num_classes": len(tagged.classes)}


def find_weights(model: str, weights: Any) -> Optional[Weights]:
    """The entry that ``weights`` names for ``model``: a tag (``"tv2_in1k"``), ``MODEL.TAG``, or torchvision's
    enum or name of the same file (``ResNet50_Weights.DEFAULT``, ``"DEFAULT"``, ``"IMAGENET1K_V2"``).
    None when it names none, so that it is a path or URL; one that is neither a URL, nor a file,
    nor a registered name raises MissingFileError listing the model's tags."""
    found = _torchvision_entry(model, weights)
    if found is None and isinstance(weights, str):
        found = _WEIGHTS.get(weights) or _WEIGHTS.get(f"{model}.{weights}")
    if found is not None:
        if found.model != model:
            raise _other_model(found, model)
        return found
    if not isinstance(weights, str):
        return None
    if re.match(r"^https?://", weights) or Path(weights).expanduser().exists():
        return None
    tags = ", ".join(w.tag for w in weights_for(model))
    registered = f"registered weights of {model}: {tags}" if tags else f"no weights are registered for {model}"
    raise MissingFileError(f"checkpoint not found: {weights}, nor is it a registered name ({registered}; "
                           f"see `resnets list --weights`)")


def weights_tag(model: str, weights: PathOrUrl) -> PathOrUrl:
    """``weights`` as a run records it: the tag where it names registered weights of ``model`` (so that
    ``cifar10`` and ``resnet20.cifar10`` are the same), otherwise unchanged (a path, a URL, or a name that is
    neither, which is said in one line when the weights are loaded)."""
    try:
        found = find_weights(model, weights)
    except ResnetsError:
        return weights
    return found.tag if found is not None else weights


def model_card(name: str) -> dict:
    """The model card of shipped weights ``MODEL.TAG`` (data, split, recipe, command, length, time, machine,
    validation accuracy with n, sha256) as a dict."""
    weights = get_weights(name)
    if weights.url:
        raise UsageError(f"{weights.name} are published by {weights.meta.source}; their card is {weights.meta.recipe}")
    return json.loads((FILES_DIR / weights.file).with_suffix(".json").read_text(encoding="utf-8"))




__all__ = [
    "CHECKPOINT_SUFFIXES", "FILES_DIR", "Located", "RUN_WEIGHTS", "TORCHVISION_DEFAULT", "Weights", "WeightsMeta",
    "checkpoint_model", "default_weights", "find_weights", "get_weights", "huggingface_cache_copy", "list_weights",
    "model_card",
    "register_weights", "take_weights_name", "torchvision_name", "weights_for", "weights_layout", "weights_tag",
]
