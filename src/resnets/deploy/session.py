"""Fast inference: a model prepared once (BN folded, channels_last), run at the precision
asked for by the fastest runtime on this machine, chosen by timing the first batch on each
candidate (see ``runtimes`` for what runs where)."""

from __future__ import annotations

import copy
import os
import statistics
import tempfile
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Union

import numpy as np
import torch
from torch import nn

from .._device import quiet_cuda_home_notice, resolve_device
from ..errors import OPTIONAL_EXTRAS, ResnetsError, UsageError, check_number
from ..factory import create_model
from ..weights import load_weights
from ..weights.named import take_weights_name
from .calibration import AccuracyCheck, Data, LabelledImages, compare_top1, load_images, top1_classes
from .classes import resolve_class_names
from .export import export_onnx
from .export_cache import cached_export
from ..models.fold import fold_batchnorm
from .images import check_image_size, decode_image, preprocess
from .runtimes import (CALIBRATION_IMAGES, PRECISIONS, RUNTIMES,
                       OnnxRuntimeRunner, OpenVINORunner, TorchRunner, missing_packages, openvino_computes_bf16,
                       quantize_onnxruntime, quantize_openvino, read_openvino, require_packages)
from .session_config import SessionConfig


@dataclass
class Prediction:
    label: int
    name: str
    probability: float

    def to_dict(self) -> dict:
        return {"label": self.label, "name": self.name, "probability": self.probability}


def check_finite(logits: torch.Tensor, names: Optional[list[str]] = None) -> torch.Tensor:
    """``logits``, or the ResnetsError saying the weights are damaged where any is NaN or infinite: finite
    weights can still compute NaN (a negative BatchNorm variance) or overflow (a weight of 1e38), and a
    probability of nan% is no answer. ``names``: the images of the batch's rows, for the message."""
    finite = torch.isfinite(logits)
    if bool(finite.all()):
        return logits
    rows = (~finite.reshape(len(logits), -1).all(1)).nonzero().flatten().tolist()
    what = "NaN" if bool(torch.isnan(logits).any()) else "infinity"
    first = f", the first {names[rows[0]]}" if names and rows[0] < len(names) else ""
    raise ResnetsError(f"the weights compute {what} on this input ({len(rows)} of {len(logits)} images{first}): "
                       f"they are damaged (e.g. a negative BatchNorm variance, an overflowing weight); use other "
                       f"weights, or retrain")


def _key(backend: str, precision: str) -> str:
    return f"{backend}/{precision}"


def _computes_fp32_instead(backend: str, precision: str) -> bool:
    """OpenVINO at bf16 on a CPU without bf16 units: it would take the hint and compute fp32."""
    return backend == "openvino" and precision == "bf16" and not openvino_computes_bf16()


EMULATED_BF16 = "this CPU has no bf16 units: PyTorch would emulate bf16, slower than fp32"


def _emulates_bf16(backend: str, precision: str) -> bool:
    """PyTorch at bf16 on a CPU without bf16 units: it emulates bf16, several times slower than fp32."""
    from .._precision import native_bf16

    return backend == "torch" and precision == "bf16" and not native_bf16(torch.device("cpu"))


# calibration images timed to choose the runtime at construction: a batch as predict's default
SELECTION_IMAGES = 16


class InferenceSession:
    """``InferenceSession("resnet50", weights="r50.safetensors", precision="bf16").run(batch)`` -> logits.

    ``model``: a network, a model's name (``MODEL.TAG`` brings its weights), or a checkpoint of ours or a run
    directory (``InferenceSession("runs/r20")``: the architecture its file records, with those weights).

    ``precision``: "fp32" (the default; logits within 1e-4 of the plain model), "bf16",
    "int8" (post-training static quantisation, activation ranges from ``calibration``) or
    "auto": the fastest precision whose top-1 on the calibration images is within
    ``max_accuracy_loss`` points of fp32 (the others are listed in ``self.refused``).
    ``backend="auto"`` times every runtime that computes the precision ("torch", "onnxruntime",
    "openvino" where installed) on the first batch and keeps the fastest: ``self.backend``,
    ``self.precision``, per-candidate median seconds in ``self.timings``: chosen at construction where there
    are calibration images (always with precision "auto"; timed on up to 16 of them), else on the first batch
    run (``self.backend`` is None until then). ``self.chosen_on`` says which.

    ``calibration``: a preprocessed batch, an (images, labels) pair, a data source string
    (``SOURCE[:SPLIT]``) or a folder; needed by "int8" and "auto". ``compile=True``
    ``torch.compile``s the PyTorch runner (about 1.4x its eager speed on an AMX CPU, on a par
    with OpenVINO; the first batch of each new size pays the compilation). Thread-safe:
    concurrent ``run`` calls are allowed.
    """

    def __init__(self, model: Union[str, nn.Module], weights: Optional[Union[str, os.PathLike]] = None, *,
                 backend: str = "auto", precision: str = "fp32", device: Union[str, torch.device, None] = "cpu",
                 calibration: Optional[Data] = None, compile: bool = False, config: Optional[SessionConfig] = None,
                 **model_kwargs):
        self.config = config or SessionConfig(backend=backend, precision=precision,
                                              device=str(resolve_device(device)), compile=compile)
        config = self.config
        if config.precision not in PRECISIONS:
            raise UsageError(f"precision must be one of {PRECISIONS}, got {config.precision!r}")
        if config.device != "cpu" and config.backend not in ("auto", "torch"):
            raise UsageError(f"backend {config.backend!r} runs on the CPU only; use backend='torch' "
                             f"for device {config.device!r}")
        if config.device != "cpu" and config.precision in ("int8", "auto"):
            raise UsageError(f"precision {config.precision!r} runs on the CPU only; use 'fp32' or 'bf16' "
                             f"on device {config.device!r}")
        if isinstance(model, str):
            model, weights = take_weights_name(model, weights or None)  # MODEL.TAG: the model with those weights
            model = create_model(model, weights=weights, **model_kwargs)
        elif weights is not None:
            load_weights(model, weights)
        self.model = model.eval()
        self.arch = getattr(model, "arch", None) or type(model).__name__
        self.preprocessing = model.preprocessing
        self.num_classes = int(getattr(model, "num_classes", 0))
        self.classes = resolve_class_names(self.num_classes, getattr(model, "classes", None))
        self.timings: dict[str, float] = {}
        self.checks: dict[str, AccuracyCheck] = {}  # precision="auto": each candidate's guard result
        self.refused: dict[str, str] = {}  # candidates the accuracy guard turned down, and why
        self.skipped: dict[str, str] = {}  # runtimes left out of backend="auto" because a package is missing
        self._lock = threading.Lock()
        if config.num_threads:
            torch.set_num_threads(config.num_threads)
        if config.compile and not torch.cuda.is_available():
            quiet_cuda_home_notice()
        self._prepared = fold_batchnorm(model) if config.fold_bn else copy.deepcopy(model).eval()
        self._workdir = tempfile.TemporaryDirectory(prefix="resnets-session-")
        self._onnx: Optional[Path] = None
        self._runners: dict[tuple[str, str], Callable[[torch.Tensor], torch.Tensor]] = {}
        self.backend: Optional[str] = None
        self.precision: Optional[str] = None

        needs_images = config.precision in ("int8", "auto")
        if needs_images and calibration is None:
            why = "quantisation" if config.precision == "int8" else "the accuracy check of bf16 and int8"
            raise UsageError(f"precision={config.precision!r} needs calibration images for {why}: calibration= "
                             "a preprocessed batch, a data source string or a folder (--calibration DATA)")
        self.calibration: Optional[LabelledImages] = None
        if calibration is not None:
            self.calibration = load_images(calibration, self.preprocessing,
                                           count=config.calibration_images).for_model(self.num_classes)
        self.candidates = self._candidates()
        if [backend for backend, _ in self.candidates] == ["torch"]:  # asked for; auto would time it against fp32
            from .._precision import warn_if_emulated

            warn_if_emulated(config.precision, torch.device(config.device))
        if config.precision == "auto":
            self._guard()
        # what was timed to choose the runtime: known at construction where there are calibration images
        # (always for precision="auto"), else the first batch run (backend stays None until then)
        self.chosen_on: Optional[str] = None
        if len(self.candidates) == 1:
            self.backend, self.precision = self.candidates[0]
            self._runner(self.backend, self.precision)
        elif self.calibration is not None:
            timed = self.calibration.images[:SELECTION_IMAGES].float()
            self.backend, self.precision = self._choose(timed)
            self.chosen_on = f"{len(timed)} calibration images"

    # -- candidates --------------------------------------------------------------------------

    def _candidates(self) -> list[tuple[str, str]]:
        config = self.config
        precisions = ("fp32", "bf16", "int8") if config.precision == "auto" else (config.precision,)
        candidates = []
        for precision in precisions:
            if config.device != "cpu":
                candidates.append(("torch", precision))
                continue
            if config.backend != "auto":
                if config.backend not in RUNTIMES[precision]:
                    if config.precision != "auto":
                        raise UsageError(f"backend {config.backend!r} does not run precision {precision!r}; "
                                         f"backends for {precision}: {', '.join(RUNTIMES[precision])}")
                    continue
                require_packages(config.backend, precision)  # one line naming the extra, when missing
                if _computes_fp32_instead(config.backend, precision):
                    if config.precision != "auto":
                        raise UsageError("backend 'openvino' computes bf16 only on CPUs with bf16 units "
                                         "(AVX512-BF16 or AMX); this one has none, so it would compute fp32: "
                                         "use precision 'fp32', or backend 'torch' (which emulates bf16, slowly)")
                    continue
                if config.precision == "auto" and _emulates_bf16(config.backend, precision):
                    self.skipped[_key(config.backend, precision)] = EMULATED_BF16
                    continue
                candidates.append((config.backend, precision))
                continue
            for backend in RUNTIMES[precision]:
                missing = missing_packages(backend, precision)
                if missing:
                    extras = sorted({OPTIONAL_EXTRAS[name.split(".")[0]] for name in missing})
                    self.skipped[_key(backend, precision)] = (f"{', '.join(missing)} not installed: "
                                                              f"pip install \"resnets[{','.join(extras)}]\"")
                elif _computes_fp32_instead(backend, precision):
                    self.skipped[_key(backend, precision)] = "this CPU has no bf16 units: OpenVINO would compute fp32"
                elif config.precision == "auto" and _emulates_bf16(backend, precision):
                    # bf16 asked for by name still runs (and warns); auto would check and time a certain loser
                    self.skipped[_key(backend, precision)] = EMULATED_BF16
                else:
                    candidates.append((backend, precision))
        if not candidates:
            raise UsageError(f"no runtime for precision {config.precision!r} is installed here: "
                             f"{'; '.join(self.skipped.values())}")
        return candidates

    def _guard(self) -> None:
        """precision="auto": drop each bf16/int8 candidate that loses more than max_accuracy_loss
        top-1 points against fp32 on the calibration images."""
        images, labels = self.calibration.images, self.calibration.labels
        reference = top1_classes(self._reference, images)
        kept = []
        for backend, precision in self.candidates:
            if precision != "fp32":
                check = compare_top1(precision, backend, reference,
                                     top1_classes(self._runner(backend, precision), images), labels)
                self.checks[_key(backend, precision)] = check
                if not check.passes(self.config.max_accuracy_loss):
                    lost = "changes top-1 on" if check.top1 is None else "loses"
                    amount = f"{check.loss:.2f}% of images" if check.top1 is None else f"{check.loss:.2f} points"
                    self.refused[_key(backend, precision)] = (
                        f"{precision} on {backend} {lost} {amount} against fp32 on the calibration images "
                        f"(over the limit of {self.config.max_accuracy_loss:g}): {check}")
                    warnings.warn(f"precision='auto' refuses {self.refused[_key(backend, precision)]}", stacklevel=3)
                    self._runners.pop((backend, precision), None)
                    continue
            kept.append((backend, precision))
        self.candidates = kept

    # -- runners -----------------------------------------------------------------------------

    def _reference(self, batch: torch.Tensor) -> torch.Tensor:
        """The plain model in fp32: what every precision is compared with."""
        with torch.inference_mode():
            return self.model(batch.to(self.config.device)).float().cpu()

    def _onnx_file(self) -> Path:
        if self._onnx is None:
            fp32 = copy.deepcopy(self._prepared).float().cpu().to(memory_format=torch.contiguous_format)
            if self.config.cache_exports:
                self._onnx = cached_export(fp32)
            else:
                self._onnx = export_onnx(fp32, Path(self._workdir.name) / "fp32.onnx")
        return self._onnx

    def _quantization_images(self) -> torch.Tensor:
        return self.calibration.images[:self.config.quantization_images]

    def _build(self, backend: str, precision: str) -> Callable[[torch.Tensor], torch.Tensor]:
        threads = self.config.num_threads
        if backend == "torch":
            model = self._prepared if precision == "fp32" else copy.deepcopy(self._prepared)
            return TorchRunner(model, precision, self.config.device, self.config.channels_last, self.config.compile)
        if backend == "onnxruntime":
            if precision == "int8":
                target = Path(self._workdir.name) / "int8.onnx"
                return OnnxRuntimeRunner(quantize_onnxruntime(self._onnx_file(), self._quantization_images(), target),
                                         threads)
            return OnnxRuntimeRunner(self._onnx_file(), threads)
        if precision == "int8":
            return OpenVINORunner(quantize_openvino(self._onnx_file(), self._quantization_images()), precision, threads)
        return OpenVINORunner(read_openvino(self._onnx_file()), precision, threads)

    def _runner(self, backend: str, precision: str) -> Callable[[torch.Tensor], torch.Tensor]:
        if (backend, precision) not in self._runners:
            self._runners[(backend, precision)] = self._build(backend, precision)
        return self._runners[(backend, precision)]

    def _choose(self, batch: torch.Tensor) -> tuple[str, str]:
        for candidate in self.candidates:
            self._runner(*candidate)(batch)  # warm-up, and builds the runner
        times: dict[tuple[str, str], list[float]] = {c: [] for c in self.candidates}
        # interleaved so that a burst of load elsewhere hurts every candidate alike; each timed call
        # follows an untimed one of the same runner, as in use (the first call after another runtime
        # ran pays for waking its threads and refilling caches, a large share of a small batch)
        for _ in range(self.config.selection_repeats):
            for candidate in self.candidates:
                self._runners[candidate](batch)
                start = time.perf_counter()
                self._runners[candidate](batch)
                times[candidate].append(time.perf_counter() - start)
        medians = {c: statistics.median(t) for c, t in times.items()}
        self.timings = {_key(*c): t for c, t in medians.items()}
        chosen = min(medians, key=medians.get)
        # the losers' runners hold a model copy each; only the chosen one runs from now on
        self._runners = {chosen: self._runners[chosen]}
        return chosen

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
                    self.backend, self.precision = self._choose(batch)
                    self.chosen_on = "the first batch"
        return self._runners[(self.backend, self.precision)](batch)

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
        check_number("top_k", top_k, 1)
        names = [self._name(item, index) for index, item in enumerate(images)] \
            if isinstance(images, (list, tuple)) else None
        probabilities = torch.softmax(check_finite(self.run(self.prepare(images)), names), dim=1)
        k = min(top_k, probabilities.shape[1])
        values, indices = probabilities.topk(k, dim=1)
        return [[Prediction(int(i), self.classes[int(i)], float(p)) for p, i in zip(row_v, row_i)]
                for row_v, row_i in zip(values, indices)]

    def check(self, data: Data, labels: Optional[torch.Tensor] = None, *,
              count: int = CALIBRATION_IMAGES) -> AccuracyCheck:
        """Top-1 of this session's precision against the plain fp32 model on ``data`` (labelled
        images: a data source string, a class-per-folder tree, or a batch with ``labels``), and
        the share of images whose top-1 class is the same. Unlabelled images give the share only."""
        given = (data, labels) if labels is not None else data
        images = load_images(given, self.preprocessing, count=count).for_model(self.num_classes)
        candidate = top1_classes(self.run, images.images)
        return compare_top1(self.precision, self.backend, top1_classes(self._reference, images.images), candidate,
                            images.labels)

    def metadata(self) -> dict:
        return {"arch": self.arch, "backend": self.backend, "precision": self.precision,
                "num_classes": self.num_classes, "preprocessing": self.preprocessing.to_dict(),
                "classes": self.classes, "timings_s": self.timings,
                "compiled": bool(self.config.compile and self.backend == "torch"),
                "accuracy_checks": {k: c.to_dict() for k, c in self.checks.items()}, "refused": self.refused,
                "skipped": self.skipped}
