"""Builders of small on-disk datasets for the data-layer tests."""

from __future__ import annotations

import io
import pickle
import tarfile
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image


def encode(array: np.ndarray, fmt: str = "PNG", mode: str | None = None, **kwargs) -> bytes:
    image = Image.fromarray(array)
    if mode:
        image = image.convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


def random_rgb(rng: np.random.Generator, size=(32, 32)) -> np.ndarray:
    return rng.integers(0, 256, (*size, 3), dtype=np.uint8)


def write_tree(root: Path, per_class: dict[str, int], size=(32, 32), seed: int = 0, fmt: str = "PNG") -> dict:
    """root/<class>/<i>.png with random RGB images; returns {relative path: array}."""
    rng = np.random.default_rng(seed)
    written = {}
    for cls, count in per_class.items():
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            array = random_rgb(rng, size)
            name = f"{cls}/{i:03d}.{'png' if fmt == 'PNG' else 'jpg'}"
            (root / name).write_bytes(encode(array, fmt))
            written[name] = array
    return written


def zip_tree(root: Path, archive: Path, prefix: str = "") -> Path:
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as out:
        for path in sorted(root.rglob("*")):
            name = prefix + path.relative_to(root).as_posix()
            if path.is_dir():
                out.writestr(name + "/", b"")
            else:
                out.write(path, name)
    return archive


def write_cifar(directory: Path, kind: str = "cifar10", per_batch: int = 20, seed: int = 0) -> tuple[Path, dict]:
    """A miniature official CIFAR python archive (same file names and pickle keys)."""
    rng = np.random.default_rng(seed)
    if kind == "cifar10":
        folder, classes = "cifar-10-batches-py", [f"c{i}" for i in range(10)]
        batches = {f"data_batch_{i}": "train" for i in range(1, 6)} | {"test_batch": "test"}
        meta_name, meta = "batches.meta", {b"label_names": [c.encode() for c in classes]}
        label_key = b"labels"
    else:
        folder, classes = "cifar-100-python", [f"f{i}" for i in range(100)]
        batches = {"train": "train", "test": "test"}
        meta_name = "meta"
        meta = {b"fine_label_names": [c.encode() for c in classes], b"coarse_label_names": [b"x"] * 20}
        label_key = b"fine_labels"
    root = directory / folder
    root.mkdir(parents=True)
    (root / meta_name).write_bytes(pickle.dumps(meta))
    expected = {"train": ([], []), "test": ([], [])}
    for name, split in batches.items():
        data = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
        labels = rng.integers(0, len(classes), per_batch).tolist()
        (root / name).write_bytes(pickle.dumps({b"data": data, label_key: labels, b"batch_label": name.encode()}))
        expected[split][0].append(data.reshape(-1, 3, 32, 32))
        expected[split][1].extend(labels)
    archive = directory / f"{'cifar-10' if kind == 'cifar10' else 'cifar-100'}-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(root, arcname=folder)
    expected = {k: (np.concatenate(v[0]), np.array(v[1])) for k, v in expected.items()}
    return archive, expected
