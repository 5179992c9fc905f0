"""ONNX exports kept between sessions, keyed by what determines them.

An InferenceSession that runs on ONNX Runtime or OpenVINO first exports its prepared model
to ONNX, which takes seconds to a quarter of a minute; a command such as ``resnets predict``
pays that on every call. With the cache on (the CLI turns it on), the export is written once
to ``$RESNETS_CACHE/onnx/<key>.onnx`` and reused while the key matches: a digest of the
module's structure (its ``repr``), every tensor of its state (names, dtypes, shapes, bytes),
its preprocessing and class names, and the versions of torch and onnxscript that exported it.
Files are written atomically, so a killed process leaves no half file behind; the least
recently used files are removed beyond ``MAX_CACHE_BYTES``.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch
from torch import nn

from .._io import atomic_path, cache_root
from .export import export_onnx

# bump when the export itself changes (names, opset, metadata), so older files are not reused
FORMAT = 1
# the cache keeps at most this many bytes of exports; the least recently used go first
MAX_CACHE_BYTES = 2 * 1024 ** 3


def export_key(model: nn.Module) -> str:
    """A digest of everything that decides the ONNX export of ``model``."""
    import onnxscript

    digest = hashlib.sha256()
    preprocessing = getattr(model, "preprocessing", None)
    header = {"format": FORMAT, "torch": torch.__version__, "onnxscript": onnxscript.__version__,
              "structure": repr(model), "type": f"{type(model).__module__}.{type(model).__qualname__}",
              "preprocessing": preprocessing.to_dict() if preprocessing is not None else None,
              "classes": list(getattr(model, "classes", None) or [])}
    digest.update(json.dumps(header, sort_keys=True, default=str).encode())
    for name, tensor in model.state_dict().items():
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}".encode())
        flat = tensor.detach().cpu().contiguous().reshape(-1)  # 0-d tensors cannot be viewed as bytes
        digest.update(flat.view(torch.uint8).numpy().tobytes() if flat.numel() else b"")
    return digest.hexdigest()


def cache_dir() -> Path:
    return cache_root() / "onnx"


def cached_export(model: nn.Module) -> Path:
    """The ONNX file of ``model`` from the cache, exported into it first if it is not there."""
    path = cache_dir() / f"{export_key(model)}.onnx"
    if path.is_file():
        os.utime(path)  # recently used: kept longest
        return path
    with atomic_path(path) as tmp:
        export_onnx(model, tmp)
    prune()
    return path


def prune(limit: int = MAX_CACHE_BYTES) -> list[Path]:
    """Remove the least recently used exports until the cache holds at most ``limit`` bytes."""
    files = sorted((p for p in cache_dir().glob("*.onnx") if not p.name.startswith(".")),
                   key=lambda p: p.stat().st_mtime, reverse=True)
    removed, total = [], 0
    for path in files:
        total += path.stat().st_size
        if total > limit:
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed
