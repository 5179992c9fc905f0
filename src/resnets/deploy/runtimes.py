"""The runtimes an InferenceSession runs on, each at the precisions it computes well.

=============  ====================================================================
torch          the BN-folded model, channels_last; bf16 as bfloat16 weights and activations;
               optionally torch.compile'd (inductor, weights frozen into the graph)
onnxruntime    the ONNX export; int8 by ONNX Runtime's static quantiser (QDQ)
openvino       the ONNX export read by OpenVINO; bf16 by its inference precision hint,
               int8 by NNCF's post-training quantisation (needs ``resnets[openvino]``)
=============  ====================================================================

Each runner is a callable: a float32 (N, C, H, W) CPU batch in, float32 logits out.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import io
import logging
import os
import platform
import sys
import threading
import warnings
from pathlib import Path
from typing import Optional, Union

import numpy as np
import torch
from torch import nn

from .._device import cpu_units
from .optional import available, require

PRECISIONS = ("fp32", "bf16", "int8", "auto")
BACKENDS = ("auto", "torch", "onnxruntime", "openvino")
# precision="auto" refuses a candidate losing more top-1 than this (percentage points) against fp32
MAX_ACCURACY_LOSS = 0.5
# images a data source is sampled down to for calibration and for the guard: at 1000 images one
# changed prediction moves top-1 by 0.1 points, fine enough for a 0.5-point guard
CALIBRATION_IMAGES = 1000
# of those, how many the quantisers see (activation ranges settle long before)
QUANTIZATION_IMAGES = 256

# the runtimes that compute each precision, in the order backend="auto" lists them
RUNTIMES = {"fp32": ("torch", "onnxruntime", "openvino"), "bf16": ("torch", "openvino"),
            "int8": ("onnxruntime", "openvino")}
# what each (runtime, precision) needs installed beyond torch
PACKAGES = {"onnxruntime": ("onnxscript", "onnxruntime"), "openvino": ("onnxscript", "openvino")}
INT8_PACKAGES = {"openvino": ("nncf",)}


def missing_packages(runtime: str, precision: str) -> list[str]:
    """The optional packages a runtime needs at a precision that do not import here."""
    needed = PACKAGES.get(runtime, ()) + (INT8_PACKAGES.get(runtime, ()) if precision == "int8" else ())
    return [name for name in needed if not available(name)]


def require_packages(runtime: str, precision: str) -> None:
    """A one-line error naming the extra to install when a runtime's packages are missing."""
    for name in PACKAGES.get(runtime, ()) + (INT8_PACKAGES.get(runtime, ()) if precision == "int8" else ()):
        require(name, f"backend {runtime!r} at precision {precision!r}")


def onnx_session(path: Union[str, os.PathLike], num_threads: Optional[int] = None):
    """An ONNX Runtime CPU session with every graph optimisation on."""
    onnxruntime = require("onnxruntime", "backend 'onnxruntime'")

    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = num_threads or torch.get_num_threads()
    # idle worker threads sleep instead of spinning, leaving the cores to the rest of the process
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


class TorchRunner:
    """The prepared (BN-folded) model in PyTorch, fp32 or bf16, optionally channels_last.

    ``compile=True``: ``torch.compile`` with the inductor backend and the weights frozen into the
    graph as constants (what lets inductor hand convolutions to oneDNN with pre-packed weights).
    The first call compiles (seconds to a minute), a second batch size once more (then shapes
    are symbolic); later calls run the compiled code."""

    def __init__(self, model: nn.Module, precision: str, device: str = "cpu", channels_last: bool = True,
                 compile: bool = False):
        self.dtype = torch.bfloat16 if precision == "bf16" else torch.float32
        self.device = device
        self.channels_last = channels_last
        self.model = model.to(device=device, dtype=self.dtype)
        if channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.compiled = compile
        self._forward = torch.compile(self.model, options={"freezing": True}) if compile else self.model

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        x = batch.to(self.device, self.dtype)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            return self._forward(x).float().cpu()


class OnnxRuntimeRunner:
    """An ONNX file (fp32, or INT8 in QDQ form) run by ONNX Runtime on the CPU."""

    def __init__(self, path: Union[str, os.PathLike], num_threads: Optional[int] = None):
        self.session = onnx_session(path, num_threads)

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        array = np.ascontiguousarray(batch.detach().cpu().numpy(), dtype=np.float32)
        (logits,) = self.session.run(None, {"input": array})
        return torch.from_numpy(logits)


# OpenVINO's names for our precisions (INFERENCE_PRECISION_HINT); int8 models keep the CPU's
# default for the layers that stay in floating point (bf16 where the CPU has it)
OPENVINO_PRECISION = {"fp32": "f32", "bf16": "bf16", "int8": None}


def openvino_config(precision: str, hint: str = "LATENCY", num_threads: Optional[int] = None) -> dict:
    """compile_model properties: the precision, a performance hint ("LATENCY": all cores on
    one request, what a synchronous call wants; "THROUGHPUT": several streams for parallel
    requests), and the thread count."""
    config = {"PERFORMANCE_HINT": hint}
    if OPENVINO_PRECISION[precision] is not None:
        config["INFERENCE_PRECISION_HINT"] = OPENVINO_PRECISION[precision]
    if num_threads:
        config["INFERENCE_NUM_THREADS"] = int(num_threads)
    return config


class _SignalStack(ctypes.Structure):
    _fields_ = [("ss_sp", ctypes.c_void_p), ("ss_flags", ctypes.c_int), ("ss_size", ctypes.c_size_t)]


@contextlib.contextmanager
def signal_stack_kept():
    """Run the block, then give the calling thread back the alternate signal stack it had.

    OpenVINO's CPU plugin installs a signal stack of its own when it compiles a model and puts
    back the one it found when the compiled model and its Core go; released in another order
    than created (two sessions, or NNCF's own Core), the thread is left with a stack that has
    been unmapped, and the next signal handled in Python (a child process ending, with torch's
    DataLoader handler installed) kills the process with a segmentation fault. Restoring the
    previous stack after each compilation keeps every stack OpenVINO records a live one.
    Linux only (a no-op elsewhere)."""
    if not sys.platform.startswith("linux"):
        yield
        return
    libc = ctypes.CDLL(None, use_errno=True)
    before = _SignalStack()
    saved = libc.sigaltstack(None, ctypes.byref(before)) == 0
    try:
        yield
    finally:
        if saved:
            libc.sigaltstack(ctypes.byref(before), None)


@functools.lru_cache(maxsize=1)
def openvino_computes_bf16() -> bool:
    """Whether OpenVINO's CPU plugin computes bf16 on this CPU (its BF16 capability: AVX512-BF16 or
    AMX); elsewhere it takes a bf16 hint and computes fp32."""
    openvino = require("openvino", "backend 'openvino'")
    with signal_stack_kept():
        return "BF16" in openvino.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


class OpenVINORunner:
    """An OpenVINO model compiled for the CPU; one infer request per calling thread."""

    def __init__(self, model, precision: str, num_threads: Optional[int] = None, hint: str = "LATENCY"):
        openvino = require("openvino", "backend 'openvino'")
        with signal_stack_kept():
            self.compiled = openvino.Core().compile_model(model, "CPU", openvino_config(precision, hint, num_threads))
        self._local = threading.local()

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        request = getattr(self._local, "request", None)
        if request is None:
            with signal_stack_kept():
                request = self._local.request = self.compiled.create_infer_request()
        array = np.ascontiguousarray(batch.detach().cpu().numpy(), dtype=np.float32)
        request.infer({0: array})
        return torch.from_numpy(request.get_output_tensor(0).data.copy())


def read_openvino(onnx_path: Union[str, os.PathLike]):
    """The OpenVINO model of an ONNX file (batch dimension left dynamic)."""
    openvino = require("openvino", "backend 'openvino'")
    return openvino.Core().read_model(str(onnx_path))


def quantize_openvino(onnx_path: Union[str, os.PathLike], calibration: torch.Tensor, batch_size: int = 8):
    """An INT8 OpenVINO model: NNCF's post-training static quantisation of the ONNX file,
    activation ranges from ``calibration`` (a preprocessed batch)."""
    nncf = require("nncf", "INT8 on backend 'openvino'")
    from nncf.common.logging import nncf_logger

    model = read_openvino(onnx_path)
    images = calibration.float().numpy()
    batches = [images[i:i + batch_size] for i in range(0, len(images), batch_size)]
    # NNCF draws its progress bars and logs its INFO lines on stdout, where they would corrupt a command's
    # output (`predict --json`): the bars are dropped and its logger says only warnings while it works
    level = nncf_logger.level
    nncf_logger.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings(), signal_stack_kept(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            return nncf.quantize(model, nncf.Dataset(batches), subset_size=len(batches),
                                 preset=nncf.QuantizationPreset.PERFORMANCE)
    finally:
        nncf_logger.setLevel(level)


def int8_products_saturate() -> bool:
    """Whether this CPU's INT8 convolutions can saturate: an x86 CPU without VNNI (AVX-VNNI, AVX512-VNNI) or
    AMX-INT8 adds pairs of uint8 x int8 products in 16 bits (``vpmaddubsw``), which overflow with 8-bit weights.
    ONNX Runtime's and OpenVINO's documented remedy is weights in 7 bits."""
    if platform.machine().lower() not in ("x86_64", "amd64", "i386", "i686", "x86"):
        return False  # Arm's int8 dot products accumulate in 32 bits
    units = cpu_units()
    return not any(units.get(unit) for unit in ("avx_vnni", "avx512_vnni", "amx_int8"))


def quantize_onnxruntime(onnx_path: Union[str, os.PathLike], calibration: torch.Tensor,
                         target: Union[str, os.PathLike]) -> Path:
    """ONNX Runtime's static quantisation (QDQ, per-channel INT8 weights, UINT8 activations
    calibrated on ``calibration``) of an fp32 ONNX file, written to ``target``. On a CPU whose INT8
    products saturate (:func:`int8_products_saturate`) the weights use 7 of their 8 bits (``reduce_range``):
    on an AVX2-only CPU resnet20.cifar10 lost 2.4 points of top-1 with 8-bit weights, 0.4 with 7."""
    quantization = require("onnxruntime.quantization", "INT8 on backend 'onnxruntime'")
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader:
        def __init__(self, images: np.ndarray, batch_size: int = 8):
            self._batches = iter([images[i:i + batch_size] for i in range(0, len(images), batch_size)])

        def get_next(self) -> Optional[dict]:
            batch = next(self._batches, None)
            return None if batch is None else {"input": batch}

    target = Path(target)
    prepared = target.with_name(target.stem + ".prepared.onnx")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # folds constants and infers shapes so that every convolution gets quantised
        quant_pre_process(str(onnx_path), str(prepared), skip_symbolic_shape=True)
        quantization.quantize_static(str(prepared), str(target), Reader(calibration.float().numpy()),
                                     quant_format=quantization.QuantFormat.QDQ, per_channel=True,
                                     activation_type=quantization.QuantType.QUInt8,
                                     weight_type=quantization.QuantType.QInt8,
                                     calibrate_method=quantization.CalibrationMethod.MinMax,
                                     reduce_range=int8_products_saturate())
    prepared.unlink(missing_ok=True)
    return target
