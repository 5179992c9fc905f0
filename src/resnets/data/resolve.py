"""Resolution: what one ``--data`` string names, parsed and bounded before anything is read or allocated.

:func:`parse_source` understands

* ``cifar10`` / ``cifar100``: the official python archives, looked up in the cache directory
  (``download=True`` fetches them, md5-verified);
* a path to ``cifar-10-python.tar.gz`` / ``cifar-100-python.tar.gz`` or their extracted folders;
* a class-per-folder image tree, ``root/<split>/<class>/*`` or ``root/<class>/*``;
* a zip archive of such a tree, read in place (members are opened directly, never extracted);
* ``synthetic:[C x]HxW:CLASSES:SIZE[:SEED]``, e.g. ``synthetic:32x32:10:5000`` or
  ``synthetic:3x224x224:1000:512:7``;
* ``sample:cifar10``, the 2,000-image CIFAR-10 sample shipped inside the package.

and says which it is (a :class:`SourceSpec`); ``resnets.data.sources.resolve_source`` builds the source.
A synthetic set's numbers are bounded here (:func:`check_synthetic`), so that a typo'd count is one line,
not an allocation of gigabytes.
"""

from __future__ import annotations

import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional, Union

from ..errors import MissingFileError, UsageError
from .decode import MAX_IMAGE_PIXELS
from .download import CIFAR_ARCHIVES

SYNTHETIC_SYNTAX = ("synthetic:[C x]HxW:CLASSES:SIZE[:SEED], e.g. synthetic:32x32:10:5000 or "
                    "synthetic:3x224x224:1000:512:7")
_SYNTHETIC = re.compile(r"^synthetic:(?:(\d+)x)?(\d+)x(\d+):(\d+):(\d+)(?::(\d+))?$")

# a synthetic set's bounds. Its labels are held (8 bytes an image), its images made one at a time (each must
# fit, as a decoded image must) or, in the small pipeline, all at once: ten million images is eight times
# ImageNet's training set; 256 GiB of pixels holds an ImageNet-sized set at 224 px (193 GB)
MAX_SYNTHETIC_IMAGES = 10_000_000
MAX_SYNTHETIC_CLASSES = 100_000
MAX_SYNTHETIC_SIDE = 16_384
MAX_SYNTHETIC_CHANNELS = 4
MAX_SYNTHETIC_BYTES = 256 * 2**30
_MAX_SEED = 2**63 - 1


@dataclass(frozen=True)
class SyntheticSpec:
    """The numbers of a ``synthetic:`` string, bounded."""

    channels: int
    height: int
    width: int
    classes: int
    size: int
    seed: int = 0


@dataclass(frozen=True)
class SourceSpec:
    """What a data source string names: ``kind`` and where (a path, a CIFAR name or a sample's name)."""

    kind: Literal["synthetic", "sample", "cifar", "cifar_file", "zip", "folder"]
    location: str
    synthetic: Optional[SyntheticSpec] = None


def check_synthetic(size: int, num_classes: int, image_size: tuple[int, int], channels: int = 3,
                    seed: int = 0) -> None:
    """Refuse (UsageError, one line naming the number and its bound) a synthetic set that could not be made:
    counts, sides, channels and the total bytes of its pixels, before anything is allocated."""
    height, width = image_size
    for what, value, high in (("images", size, MAX_SYNTHETIC_IMAGES), ("classes", num_classes, MAX_SYNTHETIC_CLASSES),
                              ("height", height, MAX_SYNTHETIC_SIDE), ("width", width, MAX_SYNTHETIC_SIDE),
                              ("channels", channels, MAX_SYNTHETIC_CHANNELS), ("seed", seed, _MAX_SEED)):
        low = 0 if what == "seed" else 1
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            bound = "MAX_SYNTHETIC_" + what.upper() if what != "seed" else "2**63 - 1"
            shown = f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else repr(value)
            raise UsageError(f"synthetic data: {what} must be an integer from {low} to {high:,} ({bound}), got "
                             f"{shown}; syntax: {SYNTHETIC_SYNTAX}")
    if height * width > MAX_IMAGE_PIXELS:
        raise UsageError(f"synthetic data: images of {height}x{width} are over the limit of {MAX_IMAGE_PIXELS:,} "
                         f"pixels (resnets.data.decode.MAX_IMAGE_PIXELS)")
    total = size * channels * height * width
    if total > MAX_SYNTHETIC_BYTES:
        raise UsageError(f"synthetic data: {size:,} images of {channels}x{height}x{width} are {total / 2**30:,.1f} "
                         f"GiB, over the limit of {MAX_SYNTHETIC_BYTES // 2**30} GiB (MAX_SYNTHETIC_BYTES); "
                         f"ask for fewer or smaller images")


def parse_synthetic(text: str) -> SyntheticSpec:
    """The numbers of ``synthetic:[C x]HxW:CLASSES:SIZE[:SEED]``, bounded (:func:`check_synthetic`)."""
    match = _SYNTHETIC.match(text)
    if not match:
        raise UsageError(f"bad synthetic data spec {text!r}; expected {SYNTHETIC_SYNTAX}")
    # a number longer than any bound is said as such, not converted (int() refuses 4,300 digits)
    for part in match.groups():
        if part is not None and len(part) > len(str(_MAX_SEED)):
            raise UsageError(f"synthetic data: {part[:20]}... ({len(part):,} digits) is over every bound; "
                             f"syntax: {SYNTHETIC_SYNTAX}")
    channels, height, width, classes, size, seed = (None if part is None else int(part) for part in match.groups())
    spec = SyntheticSpec(3 if channels is None else channels, height, width, classes, size, seed or 0)
    check_synthetic(spec.size, spec.classes, (spec.height, spec.width), spec.channels, spec.seed)
    return spec


def _looks_like_cifar_folder(path: Path) -> bool:
    names = {p.name for p in path.iterdir()}
    markers = {"batches.meta", "meta", "cifar-10-batches-py", "cifar-100-python"}
    return bool(names & markers) and ("data_batch_1" in names or "train" in names and (path / "train").is_file()
                                      or bool(names & {"cifar-10-batches-py", "cifar-100-python"}))


def parse_source(spec: Union[str, Path]) -> SourceSpec:
    """Which kind of source ``spec`` names (see the module docstring); an unknown path, file type or a
    synthetic string out of bounds raises a one-line error."""
    text = str(spec)
    if text.startswith("synthetic"):
        return SourceSpec("synthetic", text, parse_synthetic(text))
    if text.startswith("sample:"):
        return SourceSpec("sample", text.split(":", 1)[1])
    if text in CIFAR_ARCHIVES:
        return SourceSpec("cifar", text)
    path = Path(text).expanduser()
    if not path.exists():
        raise MissingFileError(f"data source {text!r} not found: expected an existing path, 'cifar10', 'cifar100', "
                                f"'sample:cifar10' or {SYNTHETIC_SYNTAX}")
    if path.is_file():
        if path.name.endswith((".tar.gz", ".tgz", ".tar")):
            return SourceSpec("cifar_file", str(path))
        if zipfile.is_zipfile(path):
            return SourceSpec("zip", str(path))
        raise UsageError(f"{path}: unknown data file type (expected a .zip of class folders or a CIFAR .tar.gz)")
    if _looks_like_cifar_folder(path):
        return SourceSpec("cifar_file", str(path))
    return SourceSpec("folder", str(path))


__all__ = ["MAX_SYNTHETIC_BYTES", "MAX_SYNTHETIC_CHANNELS", "MAX_SYNTHETIC_CLASSES", "MAX_SYNTHETIC_IMAGES",
           "MAX_SYNTHETIC_SIDE", "SYNTHETIC_SYNTAX", "SourceSpec", "SyntheticSpec", "check_synthetic",
           "parse_source", "parse_synthetic"]
