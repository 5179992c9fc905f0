"""Fast inference: a model prepared once (BN folded, channels_last), run by the fastest
backend on this machine, chosen by timing the first batch on each candidate."""

from __future__ import annotations

import os
import statistics
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

import numpy as np
import torch
from torch import nn

from .._device import resolve_device
from ..errors import UsageError
from ..factory import create_model
from ..weights import load_weights
from .classes import resolve_class_names
from .export import export_onnx, onnx_session
from .fold import fold_batchnorm
from .images import check_image_size, decode_image, preprocess
from .quantize import quantize_onnx

BACKENDS = ("auto", "torch", "onnxruntime", "int8")


@dataclass
class SessionConfig:
    """How an InferenceSession prepares and runs its model."""

    backend: str = "auto"
    device: str = "cpu"
    fold_bn: bool = True
    channels_last: bool = True
    num_threads: Optional[int] = None
    # timed runs per backend when choosing (after one warm-up run)
    selection_repeats: int = 3


@dataclass
class Prediction:
    label: int
    name: str
    probability: float

    def to_dict(self) -> dict:
        return {"label": self.label, "name": self.name, "probability": self.probability}


class InferenceSession:
    """``InferenceSession("resnet50", weights="r50.safetensors").run(batch)`` -> logits.

    ``backend="auto"`` times "torch" (eager, BN folded, channels_last) and "onnxruntime" on
    the first batch and keeps the faster (``self.backend``, timings in ``self.timings``).
    ``backend="int8"`` needs ``calibration`` images (a preprocessed batch) for ONNX
    Runtime's static quantisation. Thread-safe: concurrent ``run`` calls are allowed.
    """

    def __init__(self, model: Union[str, nn.Module], weights: Optional[Union[str, os.PathLike]] = None, *,
                 backend: str = "auto", device: Union[str, torch.device, None] = "cpu",
                 calibration: Optional[torch.Tensor] = None,
                 config: Optional[SessionConfig] = None, **model_kwargs):
        self.config = config or SessionConfig(backend=backend, device=str(resolve_device(device)))
        if self.config.backend not in BACKENDS:
            raise UsageError(f"backend must be one of {BACKENDS}, got {self.config.backend!r}")
        if self.config.device != "cpu" and self.config.backend not in ("auto", "torch"):
            raise UsageError(f"backend {self.config.backend!r} runs on the CPU only; use backend='torch' "
                             f"for device {self.config.device!r}")
        if isinstance(model, str):
            model = create_model(model, weights=weights, **model_kwargs) if weights else create_model(model,
                                                                                                      **model_kwargs)
        elif weights is not None:
            load_weights(model, weights)
        self.model = model.eval()
        self.arch = getattr(model, "arch", None) or type(model).__name__
        self.preprocessing = model.preprocessing
        self.num_classes = int(getattr(model, "num_classes", 0))
        self.classes = resolve_class_names(self.num_classes, getattr(model, "classes", None))
        self.timings: dict[str, float] = {}
        self._lock = threading.Lock()
        if self.config.num_threads:
            torch.set_num_threads(self.config.num_threads)
        self._prepared = fold_batchnorm(model) if self.config.fold_bn else model
        self._prepared = self._prepared.to(self.config.device)
        if self.config.channels_last:
            self._prepared = self._prepared.to(memory_format=torch.channels_last)
        self._runners: dict[str, object] = {}
        self.backend: Optional[str] = None
        if self.config.backend == "int8":
            if calibration is None:
                raise UsageError("backend='int8' needs calibration images (a preprocessed batch)")
            self._runners["int8"] = quantize_onnx(self._prepared, calibration)
            self.backend = "int8"
        elif self.config.backend != "auto" or self.config.device != "cpu":
            self.backend = "torch" if self.config.backend == "auto" else self.config.backend

    # -- backends ----------------------------------------------------------------------------

    def _runner(self, backend: str):
        if backend not in self._runners:
            if backend == "torch":
                self._runners[backend] = self._run_torch
            elif backend == "onnxruntime":
                with tempfile.TemporaryDirectory() as tmp:
                    path = export_onnx(self._prepared.to(memory_format=torch.contiguous_format), Path(tmp) / "m.onnx")
                    self._runners[backend] = onnx_session(path, self.config.num_threads)
                if self.config.channels_last:
                    self._prepared = self._prepared.to(memory_format=torch.channels_last)
            else:
                raise UsageError(f"unknown backend {backend!r}")
        return self._runners[backend]

    def _run_torch(self, batch: torch.Tensor) -> torch.Tensor:
        x = batch.to(self.config.device)
        if self.config.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            return self._prepared(x).float().cpu()

    def _run_with(self, backend: str, batch: torch.Tensor) -> torch.Tensor:
        runner = self._runner(backend)
        if backend == "torch":
            return runner(batch)
        array = np.ascontiguousarray(batch.detach().cpu().numpy(), dtype=np.float32)
        (logits,) = runner.run(None, {"input": array})
        return torch.from_numpy(logits)

    def _choose_backend(self, batch: torch.Tensor) -> str:
        candidates = ("torch", "onnxruntime")
        for backend in candidates:
            self._run_with(backend, batch)  # warm-up, and builds the runner
        times: dict[str, list[float]] = {b: [] for b in candidates}
        # interleaved so that a burst of load elsewhere hurts every candidate alike
        for _ in range(self.config.selection_repeats):
            for backend in candidates:
                start = time.perf_counter()
                self._run_with(backend, batch)
                times[backend].append(time.perf_counter() - start)
        self.timings = {b: statistics.median(t) for b, t in times.items()}
        return min(self.timings, key=self.timings.get)

    # -- public ------------------------------------------------------------------------------

    def run(self, batch: Union[torch.Tensor, np.ndarray]) -> torch.Tensor:
        """Logits (N, num_classes) as a float32 CPU tensor for a preprocessed (N, C, H, W) batch."""
        if isinstance(batch, np.ndarray):
            batch = torch.from_numpy(batch)
        if batch.dim() != 4 or batch.shape[1:] != torch.Size(self.preprocessing.input_size):
            expected = (*self.preprocessing.input_size,)
            raise UsageError(f"run() expects a batch of shape (N, {expected[0]}, {expected[1]}, {expected[2]}), "
                             f"got {tuple(batch.shape)}")
        batch = batch.float()
        if self.backend is None:
            with self._lock:
                if self.backend is None:
                    self.backend = self._choose_backend(batch)
        return self._run_with(self.backend, batch)

    def prepare(self, images) -> torch.Tensor:
        """A preprocessed (N, C, H, W) batch from image files (paths), encoded bytes, PIL images or uint8
        (C, H, W) tensors, one or a list of them; a float (N, C, H, W) batch is taken as preprocessed already."""
        if isinstance(images, np.ndarray):
            images = torch.from_numpy(images)
        if isinstance(images, torch.Tensor) and images.dim() == 4 and images.is_floating_point():
            return images
        if isinstance(images, torch.Tensor) and images.dim() == 4:
            images = list(images)
        elif not isinstance(images, (list, tuple)):
            images = [images]
        if not images:
            raise UsageError("predict() was given no images")
        return torch.stack([preprocess(self._image(item, index), self.preprocessing, source=self._name(item, index))
                            for index, item in enumerate(images)])

    @staticmethod
    def _name(item, index: int) -> str:
        return os.fspath(item) if isinstance(item, (str, os.PathLike)) else f"image {index}"

    def _image(self, item, index: int) -> torch.Tensor:
        from PIL import Image

        if isinstance(item, (str, os.PathLike, bytes, bytearray)):
            if isinstance(item, (str, os.PathLike)) and not Path(item).is_file():
                raise UsageError(f"predict(): no such image file: {os.fspath(item)}")
            return decode_image(bytes(item) if isinstance(item, bytearray) else item, source=self._name(item, index))
        if isinstance(item, Image.Image):
            check_image_size(item.width, item.height, self._name(item, index))
            return torch.from_numpy(np.asarray(item.convert("RGB"), dtype=np.uint8).copy()).permute(2, 0, 1)
        if isinstance(item, torch.Tensor) and item.dim() == 3 and item.dtype == torch.uint8:
            return item
        what = f"a {item.dtype} tensor of shape {tuple(item.shape)}" if isinstance(item, torch.Tensor) \
            else type(item).__name__
        raise UsageError(f"predict(): {self._name(item, index)} is {what}; give image paths, bytes, PIL images, "
                         f"uint8 (C, H, W) tensors, or a preprocessed float (N, C, H, W) batch")

    def predict(self, images, top_k: int = 5) -> list[list[Prediction]]:
        """The ``top_k`` classes with softmax probabilities for each image: paths, encoded bytes, PIL images,
        uint8 (C, H, W) tensors (one or a list), or a preprocessed float (N, C, H, W) batch (see ``prepare``)."""
        if not isinstance(top_k, int) or top_k < 1:
            raise UsageError(f"top_k must be a positive integer, got {top_k!r}")
        probabilities = torch.softmax(self.run(self.prepare(images)), dim=1)
        k = min(top_k, probabilities.shape[1])
        values, indices = probabilities.topk(k, dim=1)
        return [[Prediction(int(i), self.classes[int(i)], float(p)) for p, i in zip(row_v, row_i)]
                for row_v, row_i in zip(values, indices)]

    def metadata(self) -> dict:
        return {"arch": self.arch, "backend": self.backend, "num_classes": self.num_classes,
                "preprocessing": self.preprocessing.to_dict(), "classes": self.classes,
                "timings_s": self.timings}
