"""Sources: the labelled image sets one ``--data`` string can name (see ``resnets.data.resolve``).

Every source knows its class names, its labels (without decoding an image) and a content
fingerprint; ``source.decode(i)`` returns image ``i`` as a uint8 RGB (or C-channel) tensor
(decoded by ``resnets.data.decode``, sized before it is decoded). The decoding, the bad-input
policy and the parser of the source string live in their own modules; their names are
importable from here too, as they always were.
"""

from __future__ import annotations

import errno
import hashlib
import os
import pickle
import stat
import tarfile
import warnings
import zipfile
import zlib
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np
import torch

from ..errors import MissingFileError, UsageError
from .decode import (_WARN_LIMIT, BAD_INPUT_POLICIES, IMAGE_EXTENSIONS, MAX_IMAGE_BYTES, MAX_IMAGE_PIXELS,
                     BadImageError, BadInputPolicy, BadInputWarning, FirstFrameWarning, bytes_problem, check_policy,
                     decode_bytes, pil_to_8bit, read_image_file, report_skipped)
from .download import cifar_archive
from .resolve import SYNTHETIC_SYNTAX, check_synthetic, parse_source

SPLIT_NAMES = ("train", "val", "valid", "validation", "test")


# ----------------------------------------------------------------------------------------------
# sources


class ImageSource:
    """A labelled set of images. Subclasses fill ``classes``, ``targets`` and ``fingerprint``."""

    kind: str = "images"
    name: str
    classes: list[str]
    targets: np.ndarray  # int64, one label per image, known without decoding
    fingerprint: str
    channels: int = 3
    #: (H, W) when every image is known to have it (CIFAR, synthetic); None when only decoding tells
    image_size: Optional[tuple[int, int]] = None
    #: files found but not usable (non-image extension, zero bytes), each (path, reason)
    skipped: list[tuple[str, str]]

    def __len__(self) -> int:
        return len(self.targets)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def image_id(self, index: int) -> str:
        return f"{self.name}[{index}]"

    def decode(self, index: int) -> torch.Tensor:
        raise NotImplementedError

    def images_tensor(self) -> Optional[torch.Tensor]:
        """All images as one uint8 NCHW tensor where the source holds them that way, else None."""
        return None

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({self.name!r}, images={len(self)}, classes={self.num_classes}, "
                f"fingerprint={self.fingerprint[:12]})")


class TensorSource(ImageSource):
    """Images already in memory as a uint8 NCHW tensor (CIFAR pickles, tests)."""

    kind = "tensor"

    def __init__(self, name: str, images: torch.Tensor, targets: Union[np.ndarray, Sequence[int]],
                 classes: Sequence[str], fingerprint: Optional[str] = None):
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise UsageError(f"{name}: images must be a uint8 NCHW tensor, got {images.dtype} {tuple(images.shape)}")
        self.name = name
        self.images = images
        self.targets = np.asarray(targets, dtype=np.int64)
        if len(self.targets) != len(images):
            raise UsageError(f"{name}: {len(images)} images but {len(self.targets)} labels")
        self.classes = list(classes)
        self.channels = images.shape[1]
        self.image_size = (images.shape[2], images.shape[3])
        self.skipped = []
        if fingerprint is None:
            digest = hashlib.sha256(images.contiguous().numpy().tobytes())
            digest.update(self.targets.tobytes())
            digest.update("\n".join(self.classes).encode())
            fingerprint = digest.hexdigest()
        self.fingerprint = fingerprint

    def decode(self, index: int) -> torch.Tensor:
        return self.images[index]

    def images_tensor(self) -> torch.Tensor:
        return self.images


_CIFAR = {
    "cifar10": dict(folder="cifar-10-batches-py", train=[f"data_batch_{i}" for i in range(1, 6)], test=["test_batch"],
                    meta="batches.meta", names=b"label_names", labels=b"labels"),
    "cifar100": dict(folder="cifar-100-python", train=["train"], test=["test"], meta="meta",
                     names=b"fine_label_names", labels=b"fine_labels"),
}


def _load_pickle(data: bytes, where: str) -> dict:
    try:
        return pickle.loads(data, encoding="bytes")
    except Exception as error:
        raise UsageError(f"{where}: not a CIFAR python pickle ({error})") from None


def load_cifar(path: Union[str, Path], split: str = "train") -> TensorSource:
    """CIFAR-10/100 from the official python archive (``.tar.gz``) or its extracted folder."""
    path = Path(path)
    if split not in ("train", "test"):
        raise UsageError(f"{path}: CIFAR has the splits 'train' and 'test', not {split!r}")
    files: dict[str, bytes] = {}
    if path.is_file():
        try:
            with tarfile.open(path, "r:*") as archive:
                for member in archive.getmembers():
                    if member.isfile():
                        files[member.name.rsplit("/", 1)[-1]] = archive.extractfile(member).read()
        except tarfile.TarError as error:
            raise UsageError(f"{path}: not a readable CIFAR tar archive ({error})") from None
    else:
        root = path
        for layout in _CIFAR.values():  # the archive's own top folder, or the folder itself
            if (path / layout["folder"]).is_dir():
                root = path / layout["folder"]
        files = {p.name: p.read_bytes() for p in root.iterdir() if p.is_file()}
    kind = "cifar100" if "fine_label_names" in str(files.get("meta", b"")) or "train" in files else "cifar10"
    layout = _CIFAR[kind]
    missing = [n for n in layout[split] + [layout["meta"]] if n not in files]
    if missing:
        raise UsageError(f"{path}: not a {kind} python archive; missing {', '.join(missing)}")
    classes = [n.decode() for n in _load_pickle(files[layout["meta"]], f"{path}/{layout['meta']}")[layout["names"]]]
    data, labels = [], []
    for name in layout[split]:
        batch = _load_pickle(files[name], f"{path}/{name}")
        data.append(np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
        labels.extend(batch[layout["labels"]])
    images = torch.from_numpy(np.concatenate(data))
    source = TensorSource(f"{path}:{split}", images, labels, classes)
    source.kind = kind
    return source


class FileTreeSource(ImageSource):
    """A class-per-folder tree, in a directory or inside a zip archive (read in place)."""

    kind = "folder"

    def __init__(self, name: str, root: str, files: list[str], targets: list[int], classes: list[str],
                 fingerprint: str, skipped: list[tuple[str, str]], zip_path: Optional[Path] = None,
                 channels: int = 3):
        self.name = name
        self.root = root
        self.files = files
        self.targets = np.asarray(targets, dtype=np.int64)
        self.classes = classes
        self.fingerprint = fingerprint
        self.skipped = skipped
        self.zip_path = zip_path
        self.channels = channels
        self.kind = "zip" if zip_path is not None else "folder"
        self._zip: Optional[zipfile.ZipFile] = None
        self._zip_pid = -1

    def image_id(self, index: int) -> str:
        if self.zip_path is not None:
            return f"{self.zip_path}:{self.files[index]}"
        return os.path.join(self.root, self.files[index])

    def read_bytes(self, index: int) -> bytes:
        """The file's bytes, its size checked first (``os.stat``; a zip member's declared size, which also
        bounds what decompressing it gives) against MAX_IMAGE_BYTES."""
        if self.zip_path is None:
            return read_image_file(os.path.join(self.root, self.files[index]), self.image_id(index))
        # one handle per process: a ZipFile shared across forked DataLoader workers is not safe
        if self._zip is None or self._zip_pid != os.getpid():
            self._zip = zipfile.ZipFile(self.zip_path)
            self._zip_pid = os.getpid()
        try:
            problem = bytes_problem(self._zip.getinfo(self.files[index]).file_size)
            if problem:
                raise BadImageError(self.image_id(index), problem)
            return self._zip.read(self.files[index])
        except (zipfile.BadZipFile, zlib.error, OSError, KeyError) as error:
            raise BadImageError(self.image_id(index), f"unreadable archive member ({error})") from None

    def decode(self, index: int) -> torch.Tensor:
        return decode_bytes(self.read_bytes(index), self.image_id(index), self.channels)

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_zip"], state["_zip_pid"] = None, -1
        return state


def _is_hidden(part: str) -> bool:
    return part.startswith(".") or part == "__MACOSX"


def _build_tree(name: str, entries: dict[str, tuple], split: str, bad_input: str,
                unusable: Optional[dict[str, str]] = None) -> tuple:
    """From ``{relative path: (size, stamp)}`` pick the split, classes and image files.

    Returns (prefix, files, targets, classes, fingerprint, skipped); ``stamp`` is the zip CRC
    (content) or the file's mtime (folders), so the fingerprint changes when an image does.
    ``unusable`` ({relative path: reason}, found while walking a folder) joins ``skipped`` where
    it lies in the chosen split.
    """
    paths = [p for p in entries if not any(_is_hidden(part) for part in p.split("/"))]
    tops = {p.split("/", 1)[0] for p in paths if "/" in p}
    prefix = ""
    # a zip of a folder often wraps everything in one top folder: look inside it
    if len(tops) == 1 and not (tops & set(SPLIT_NAMES)):
        (top,) = tops
        inner = {p.split("/", 2)[1] for p in paths if p.count("/") >= 2}
        if inner & set(SPLIT_NAMES):
            prefix = top + "/"
            tops = inner
    present = sorted(tops & set(SPLIT_NAMES))
    if present:
        if split not in present:
            raise UsageError(f"{name}: no {split!r} folder; found the splits {present}")
        prefix += split + "/"
    elif split != "train":
        raise UsageError(f"{name}: has no split folders (train/val/test), so it has no {split!r} split: all its "
                         "images are its train part (to score them: resnets eval --split all, or --split val for a "
                         "seeded validation part; to train: it is split for you)")
    skipped: list[tuple[str, str]] = []
    by_class: dict[str, list[str]] = {}
    for path in paths:
        if not path.startswith(prefix):
            continue
        rest = path[len(prefix):]
        if not rest:  # the split folder's own directory entry
            continue
        if rest.endswith("/"):  # a zip directory entry: a class folder that may be empty
            if rest.count("/") == 1:
                by_class.setdefault(rest[:-1], [])
            continue
        if "/" not in rest:
            skipped.append((path, "outside a class folder"))
            continue
        cls = rest.split("/", 1)[0]
        by_class.setdefault(cls, [])
        if os.path.splitext(rest)[1].lower() not in IMAGE_EXTENSIONS:
            skipped.append((path, "not an image file"))
        elif entries[path][0] == 0:
            skipped.append((path, "zero-byte file"))
        elif bytes_problem(entries[path][0]):  # a 10 GB file is refused from its size, never opened
            skipped.append((path, bytes_problem(entries[path][0])))
        else:
            by_class[cls].append(path)
    skipped += [(path, reason) for path, reason in (unusable or {}).items() if path.startswith(prefix)]
    classes = sorted(by_class)
    if not classes:
        where = f"under {prefix!r}" if prefix else "at its top level"
        raise UsageError(f"{name}: no class folders with images {where} "
                         "(expected root/<split>/<class>/<image> or root/<class>/<image>)")
    empty = [c for c in classes if not by_class[c]]
    if empty:
        if bad_input == "error":
            raise UsageError(f"{name}: empty class folder(s) {empty} (bad_input='error')")
        # kept in the class list so that label indices stay aligned with the folder names
        warnings.warn(f"{name}: class folder(s) {empty} contain no images; kept as classes with no samples",
                      BadInputWarning, stacklevel=3)
    files, targets = [], []
    digest = hashlib.sha256(f"{split}\n{chr(10).join(classes)}\n".encode())
    for label, cls in enumerate(classes):
        for path in sorted(by_class[cls]):
            files.append(path)
            targets.append(label)
            digest.update(f"{path}\0{entries[path][0]}\0{entries[path][1]}\n".encode())
    return prefix, files, targets, classes, digest.hexdigest(), skipped


def load_zip(path: Union[str, Path], split: str = "train", bad_input: str = "skip") -> FileTreeSource:
    """A zip archive of a class-per-folder tree, read in place."""
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as archive:
            entries = {info.filename: (info.file_size, info.CRC) for info in archive.infolist()}
    except zipfile.BadZipFile as error:
        raise UsageError(f"{path}: not a readable zip archive ({error})") from None
    _, files, targets, classes, fingerprint, skipped = _build_tree(str(path), entries, split, bad_input)
    skipped = [(f"{path}:{name}", reason) for name, reason in skipped]
    report_skipped(str(path), skipped, bad_input)
    return FileTreeSource(f"{path}:{split}", "", files, targets, classes, fingerprint, skipped, zip_path=path)


def load_folder(path: Union[str, Path], split: str = "train", bad_input: str = "skip") -> FileTreeSource:
    """A directory ``root/<split>/<class>/*`` or ``root/<class>/*``.

    The fingerprint covers names, sizes and modification times (reading every byte of an
    ImageNet-sized tree would take minutes); a zip's covers the members' CRC-32s.
    """
    path = Path(path)
    entries, unusable, outside = _scan_folder(path)
    prefix, files, targets, classes, fingerprint, skipped = _build_tree(str(path), entries, split, bad_input,
                                                                        unusable)
    skipped = [(os.path.join(path, name), reason) for name, reason in skipped]
    report_skipped(str(path), skipped, bad_input)
    outside = [(link, target) for link, target in outside if (link + "/").startswith(prefix)]
    if outside:
        # followed, since linking class folders in from elsewhere is common, but said once so that a
        # link nobody meant (to a home directory, a mounted disk) does not go unnoticed
        named = "; ".join(f"{os.path.join(path, link)} -> {target}" for link, target in outside[:_WARN_LIMIT])
        more = f"; and {len(outside) - _WARN_LIMIT} more" if len(outside) > _WARN_LIMIT else ""
        warnings.warn(f"{path}: followed {len(outside)} symlink(s) to folder(s) outside the data root: {named}{more}",
                      BadInputWarning, stacklevel=3)
    return FileTreeSource(f"{path}:{split}", str(path), files, targets, classes, fingerprint, skipped)


def _printable(name: str) -> str:
    """A file name as text; bytes that are not UTF-8 (kept by os as surrogates) shown as ``\\xe9``."""
    return os.fsencode(name).decode("utf-8", "backslashreplace")


def _scan_folder(root: Path) -> tuple[dict[str, tuple], dict[str, str], list[tuple[str, str]]]:
    """Walk ``root``, following symlinks, into ({relative path: (size, mtime)}, {relative path:
    why it cannot be used}, [(relative link, target)] for linked folders outside ``root``).

    Folders end in "/" (so that empty class folders stay visible). Dangling links, symlink loops,
    unreadable entries and names that are not UTF-8 are put aside, never raised: one odd entry
    must not stop a load of thousands.
    """
    real_root = os.path.realpath(root)
    entries: dict[str, tuple] = {}
    unusable: dict[str, str] = {}
    outside: list[tuple[str, str]] = []
    top = os.stat(root)
    # each folder's chain of (device, inode) back to the root: meeting one again is a loop
    pending = [("", os.fspath(root), {(top.st_dev, top.st_ino): ""})]
    while pending:
        rel, directory, ancestors = pending.pop()
        try:
            with os.scandir(directory) as listing:
                items = sorted(listing, key=lambda item: item.name)
        except OSError as error:
            if not rel:
                raise UsageError(f"{root}: cannot read the data folder ({error.strerror})") from None
            unusable[rel.rstrip("/")] = f"unreadable folder ({error.strerror})"
            continue
        for item in items:
            if _is_hidden(item.name):
                continue
            name = rel + item.name
            try:
                item.name.encode("utf-8")
            except UnicodeEncodeError:
                # kept out of class names, fingerprints and JSON records, which are all text
                unusable[rel + _printable(item.name)] = "name is not valid UTF-8; rename it"
                continue
            try:
                info = os.stat(item.path)  # follows symlinks
            except OSError as error:
                if error.errno == errno.ENOENT and item.is_symlink():
                    unusable[name] = f"dangling symlink to {os.readlink(item.path)}"
                elif error.errno == errno.ELOOP:
                    unusable[name] = "symlink loop"
                else:
                    unusable[name] = f"unreadable ({error.strerror})"
                continue
            if not stat.S_ISDIR(info.st_mode):
                entries[name] = (info.st_size, info.st_mtime_ns)
                continue
            identity = (info.st_dev, info.st_ino)
            if identity in ancestors:
                unusable[name] = f"symlink loop: leads back to {ancestors[identity] or 'the data root'}"
                continue
            if item.is_symlink():
                target = os.path.realpath(item.path)
                if os.path.commonpath([real_root, target]) != real_root:
                    outside.append((name, target))
            entries[name + "/"] = (0, 0)
            pending.append((name + "/", item.path, {**ancestors, identity: name}))
    return entries, unusable, outside


class SyntheticSource(ImageSource):
    """Reproducible random images whose class sets a colour bias, so that a model can learn them."""

    kind = "synthetic"

    def __init__(self, size: int, num_classes: int, image_size: tuple[int, int], channels: int = 3, seed: int = 0):
        check_synthetic(size, num_classes, tuple(image_size), channels, seed)
        self.name = f"synthetic:{channels}x{image_size[0]}x{image_size[1]}:{num_classes}:{size}:{seed}"
        self.seed = seed
        self.channels = channels
        self.image_size = tuple(image_size)
        self.classes = [f"class_{i}" for i in range(num_classes)]
        self.targets = np.arange(size, dtype=np.int64) % num_classes
        self.fingerprint = hashlib.sha256(self.name.encode()).hexdigest()
        self.skipped = []
        bias = torch.Generator().manual_seed(seed)
        self._bias = torch.randint(-60, 61, (num_classes, channels, 1, 1), generator=bias, dtype=torch.int16)

    def decode(self, index: int) -> torch.Tensor:
        if not 0 <= index < len(self):
            raise IndexError(index)
        generator = torch.Generator().manual_seed(mix_seed(self.seed, index))
        noise = torch.randint(0, 256, (self.channels, *self.image_size), generator=generator, dtype=torch.int16)
        return (noise // 2 + 64 + self._bias[self.targets[index]][0]).clamp_(0, 255).to(torch.uint8)

    def images_tensor(self) -> torch.Tensor:
        return torch.stack([self.decode(i) for i in range(len(self))])


def mix_seed(*values: int) -> int:
    """A 63-bit seed from several integers (splitmix64), stable across platforms and versions."""
    state = 0x9E3779B97F4A7C15
    for value in values:
        state = (state ^ (int(value) & 0xFFFFFFFFFFFFFFFF)) * 0xBF58476D1CE4E5B9 & 0xFFFFFFFFFFFFFFFF
        state = (state ^ (state >> 31)) * 0x94D049BB133111EB & 0xFFFFFFFFFFFFFFFF
        state ^= state >> 29
    return state & 0x7FFFFFFFFFFFFFFF


def sample_path(name: str = "cifar10") -> Path:
    """Path of a sample shipped with the package (``cifar10``: 200 CIFAR-10 training images a class)."""
    path = Path(__file__).with_name("samples") / f"{name}-sample.zip"
    if not path.is_file():
        raise MissingFileError(f"no packaged sample {name!r} (looked for {path})")
    return path


def resolve_source(spec: Union[str, Path, ImageSource], split: str = "train", *, bad_input: str = "skip",
                   cache_dir: Optional[Union[str, Path]] = None, download: bool = False) -> ImageSource:
    """Turn one ``--data`` string into an :class:`ImageSource` (the syntax: ``resnets.data.resolve``)."""
    check_policy(bad_input)
    if isinstance(spec, ImageSource):
        return spec
    parsed = parse_source(spec)
    if parsed.synthetic is not None:
        s = parsed.synthetic
        return SyntheticSource(s.size, s.classes, (s.height, s.width), s.channels, s.seed)
    if parsed.kind == "sample":
        return load_zip(sample_path(parsed.location), split, bad_input)
    if parsed.kind == "cifar":
        return load_cifar(cifar_archive(parsed.location, cache_dir=cache_dir, download=download), split)
    if parsed.kind == "cifar_file":
        return load_cifar(parsed.location, split)
    if parsed.kind == "zip":
        return load_zip(parsed.location, split, bad_input)
    return load_folder(parsed.location, split, bad_input)


# names that moved to resnets.data.decode and resnets.data.resolve, importable from here as before
__all__ = ["BAD_INPUT_POLICIES", "BadImageError", "BadInputPolicy", "BadInputWarning", "FileTreeSource",
           "FirstFrameWarning", "IMAGE_EXTENSIONS", "ImageSource", "MAX_IMAGE_BYTES", "MAX_IMAGE_PIXELS",
           "SPLIT_NAMES", "SYNTHETIC_SYNTAX", "SyntheticSource", "TensorSource", "check_policy", "decode_bytes",
           "load_cifar", "load_folder", "load_zip", "mix_seed", "pil_to_8bit", "read_image_file", "report_skipped",
           "resolve_source", "sample_path"]
