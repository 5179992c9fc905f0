"""Exporting to ONNX, torch.export (.pt2) and TorchScript, with a check against PyTorch.

An ONNX file carries what a user needs to feed it in ``metadata_props``: the architecture,
class names, mean, std, input size, resize/crop and precision (:func:`read_onnx_metadata`).
Precisions: fp32 in every format; int8 as ONNX (ONNX Runtime's static quantiser, QDQ);
bf16 as torch.export or TorchScript (float32 in and out, bfloat16 inside).
"""

from __future__ import annotations

import copy
import io
import json
import os
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import numpy as np
import torch
from torch import nn

from .._io import atomic_path
from ..errors import UsageError, check_choice, check_number
from .classes import resolve_class_names
from ..models.fold import fold_batchnorm
from .optional import require
from .runtimes import onnx_session, quantize_onnxruntime

FORMATS = ("onnx", "torch.export", "torchscript")
# the precisions each format is written in
EXPORT_PRECISIONS = {"onnx": ("fp32", "int8"), "torch.export": ("fp32", "bf16"), "torchscript": ("fp32", "bf16")}
TOLERANCE = 1e-4


@dataclass
class ExportReport:
    """Where the export went and how far it is from PyTorch on each check input."""

    path: Path
    format: str
    max_abs_diff: dict[str, float] = field(default_factory=dict)
    tolerance: float = TOLERANCE
    precision: str = "fp32"
    # bf16 / int8: percent of images of each check input whose top-1 class is the fp32 model's
    agreement: dict[str, float] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """fp32 files are held to the tolerance; bf16 and int8 ones are reported, not held."""
        return self.precision != "fp32" or all(d <= self.tolerance for d in self.max_abs_diff.values())


def _sample_input(model: nn.Module, batch: int) -> torch.Tensor:
    channels, height, width = model.preprocessing.input_size
    return torch.randn(batch, channels, height, width)


def model_metadata(model: nn.Module, precision: str = "fp32") -> dict[str, str]:
    """What an exported file records about its model (ONNX metadata_props: string values, JSON where structured)."""
    preprocessing = model.preprocessing
    num_classes = int(getattr(model, "num_classes", 0))
    return {"producer": "resnets", "arch": str(getattr(model, "arch", None) or type(model).__name__),
            "num_classes": str(num_classes),
            "class_names": json.dumps(resolve_class_names(num_classes, getattr(model, "classes", None))),
            "mean": json.dumps(list(preprocessing.mean)), "std": json.dumps(list(preprocessing.std)),
            "input_size": json.dumps(list(preprocessing.input_size)),
            "resize_size": str(preprocessing.resize_size), "crop_pct": str(preprocessing.crop_pct),
            "interpolation": str(preprocessing.interpolation), "precision": precision}


def write_onnx_metadata(path: Union[str, os.PathLike], metadata: dict[str, str]) -> None:
    """Set ``metadata`` as the ONNX file's metadata_props (replacing keys of the same name)."""
    onnx = require("onnx", "ONNX export")
    proto = onnx.load(str(path))
    kept = [entry for entry in proto.metadata_props if entry.key not in metadata]
    del proto.metadata_props[:]
    proto.metadata_props.extend(kept)
    for key, value in metadata.items():
        proto.metadata_props.add(key=key, value=value)
    onnx.save(proto, str(path))


# how read_onnx_metadata turns the strings model_metadata wrote back into values
_DECODE = {"num_classes": int, "class_names": json.loads, "mean": json.loads, "std": json.loads,
           "input_size": json.loads, "crop_pct": float,
           "resize_size": lambda text: None if text == "None" else int(text)}


def read_onnx_metadata(path: Union[str, os.PathLike], raw: bool = False) -> dict[str, Any]:
    """An ONNX file's metadata_props as a dict: the values resnets writes decoded (``class_names``,
    ``mean``, ``std`` and ``input_size`` as lists, ``num_classes`` and ``resize_size`` as int or None,
    ``crop_pct`` as float), other keys as the strings they are; ``raw=True``: every value as stored."""
    onnx = require("onnx", "reading ONNX metadata")
    props = {entry.key: entry.value for entry in onnx.load(str(path), load_external_data=False).metadata_props}
    if raw or props.get("producer") != "resnets":  # another producer's keys may mean other things
        return props
    decoded: dict[str, Any] = {}
    for key, value in props.items():
        try:
            decoded[key] = _DECODE[key](value) if key in _DECODE else value
        except ValueError:  # edited by hand: left as it is
            decoded[key] = value
    return decoded


def export_onnx(model: nn.Module, path: Union[str, os.PathLike], *, opset: Optional[int] = None,
                metadata: bool = True) -> Path:
    """Write ``model`` as ONNX with a dynamic batch dimension (input "input", output "logits"),
    and, with ``metadata``, its preprocessing and class names in metadata_props."""
    require("onnxscript", "ONNX export")
    require("onnx", "ONNX export")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter reports its internal steps as warnings
        program = torch.onnx.export(model, (_sample_input(model, 2),), input_names=["input"], output_names=["logits"],
                                    dynamic_shapes={"x": {0: torch.export.Dim("batch")}}, dynamo=True,
                                    opset_version=opset, verbose=False, external_data=False)
    program.save(str(path), external_data=False)
    if metadata and hasattr(model, "preprocessing"):
        write_onnx_metadata(path, model_metadata(model))
    return path


def export_program(model: nn.Module, path: Union[str, os.PathLike]) -> Path:
    """Write ``model`` as a torch.export program (``.pt2``, any batch size; load it with
    ``torch.export.load(path).module()``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.export.export(model.eval(), (_sample_input(model, 2),),
                                      dynamic_shapes={"x": {0: torch.export.Dim("batch")}})
    # in memory first: torch.export's own file writer aborts the process on a full disk; Python's write raises
    buffer = io.BytesIO()
    torch.export.save(program, buffer)
    path.write_bytes(buffer.getbuffer())
    return path


class BFloat16Model(nn.Module):
    """``model`` in bfloat16 behind a float32 interface: what a bf16 file takes and returns."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model.to(torch.bfloat16)
        self.preprocessing = model.preprocessing

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x.to(torch.bfloat16)).float()


def export_torchscript(model: nn.Module, path: Union[str, os.PathLike]) -> Path:
    """Write ``model`` as a traced, frozen TorchScript module (any batch size: the network
    has no data-dependent control flow, so a trace records all of it)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TorchScript's deprecation notices; it is still what users ask for
        scripted = torch.jit.freeze(torch.jit.trace(model.eval(), _sample_input(model, 2)))
    buffer = io.BytesIO()  # TorchScript's own file writer aborts the process on a full disk; Python's raises
    torch.jit.save(scripted, buffer)
    path.write_bytes(buffer.getbuffer())
    return path


def quantize_onnx(model: nn.Module, calibration: torch.Tensor, path: Union[str, os.PathLike]) -> Path:
    """Write ``model`` as an INT8 ONNX file: ONNX Runtime's static quantisation (QDQ,
    per-channel weights, activation ranges calibrated on ``calibration``, a preprocessed batch)."""
    if calibration.dim() != 4 or len(calibration) == 0:
        raise UsageError(f"calibration must be a non-empty (N, C, H, W) batch, got shape {tuple(calibration.shape)}")
    model = copy.deepcopy(model).float().to(memory_format=torch.contiguous_format).eval()
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = export_onnx(model, Path(tmp) / "fp32.onnx", metadata=False)
        return quantize_onnxruntime(fp32, calibration, path)


def compare_exported(model: nn.Module, path: Union[str, os.PathLike], fmt: str,
                     inputs: dict[str, torch.Tensor]) -> dict[str, float]:
    """Max absolute difference between ``model`` and the exported file on each named input
    (ONNX through ONNX Runtime, TorchScript through torch.jit.load)."""
    model = model.eval()
    diffs = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        runner = _load_exported(path, fmt)
    for name, x in inputs.items():
        expected, got = _outputs(model, runner, fmt, x)
        diffs[name] = float(np.abs(got - expected).max())
    return diffs


# file name endings of each format: a file's name should say what it holds
EXTENSIONS = {"onnx": (".onnx",), "torch.export": (".pt2",), "torchscript": (".pt", ".pth", ".ts", ".torchscript")}


def check_export_options(fmt: str, precision: str, calibration: bool) -> None:
    """Refuse, before any work, a format and precision that do not go together, int8 without
    calibration images, and calibration images that a precision other than int8 would leave unused."""
    check_choice("format", fmt, FORMATS)
    if precision not in EXPORT_PRECISIONS[fmt]:
        raise UsageError(f"format {fmt!r} is written in precision {' or '.join(EXPORT_PRECISIONS[fmt])}, not "
                         f"{precision!r} (int8: --format onnx; bf16: --format torch.export or torchscript)")
    if precision == "int8" and not calibration:
        raise UsageError("precision 'int8' needs calibration images (--calibration DATA)")
    if precision != "int8" and calibration:
        raise UsageError(f"calibration images are for precision 'int8' only (they set its activation ranges); "
                         f"add --precision int8 or leave out --calibration (precision is {precision!r})")


def check_export_path(path: Union[str, os.PathLike], fmt: str, *,
                      inputs: Sequence[Optional[Union[str, os.PathLike]]] = ()) -> None:
    """Refuse an output name whose extension does not match the format (ONNX written into ``x.pt``), and one
    that is an existing input file of the export (``inputs``: the weights), which the export would replace."""
    check_choice("format", fmt, FORMATS)
    if Path(path).is_dir():
        raise UsageError(f"--out {os.fspath(path)} is a directory; give the name of the {fmt} file to write")
    for given in inputs:
        if given and Path(path).exists() and Path(given).is_file() and os.path.samefile(path, given):
            raise UsageError(f"--out {os.fspath(path)} is the weights file this export reads ({os.fspath(given)}); "
                             f"the export would replace it: choose another --out")
    suffix = Path(path).suffix.lower()
    if suffix not in EXTENSIONS[fmt]:
        other = next((f for f, endings in EXTENSIONS.items() if suffix in endings), None)
        hint = f" (the ending of {other} files)" if other else ""
        article = "an" if fmt[0] in "aeiou" else "a"
        raise UsageError(f"--out {os.fspath(path)}: {article} {fmt} file should end in {' or '.join(EXTENSIONS[fmt])}, "
                         f"not {suffix or 'nothing'!r}{hint}")
def _load_exported(path: Union[str, os.PathLike], fmt: str):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        if fmt == "onnx":
            return onnx_session(path)
        if fmt == "torch.export":
            return torch.export.load(str(path)).module()
        return torch.jit.load(str(path))


def _outputs(model: nn.Module, runner, fmt: str, x: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    with torch.no_grad():
        expected = model(x).numpy()
        if fmt == "onnx":
            (got,) = runner.run(None, {"input": x.numpy()})
        else:
            got = runner(x).float().numpy()
    return expected, got


def export_model(model: nn.Module, path: Union[str, os.PathLike], fmt: str, *,
                 real_inputs: Optional[torch.Tensor] = None, tolerance: float = TOLERANCE, precision: str = "fp32",
                 calibration: Optional[torch.Tensor] = None) -> ExportReport:
    """Export and check: random inputs at two batch sizes (the batch is dynamic) and, where
    given, real preprocessed images. An fp32 file beyond ``tolerance`` on any input raises
    UsageError naming the worst, and is not kept: the file is written beside ``path``, checked there and
    renamed onto it only when it passes, so a failed check (or a full disk) leaves the previous file
    as it was; a bf16 or int8 file reports its differences and top-1 agreement with fp32.
    ``precision="int8"`` (ONNX) needs ``calibration``, a preprocessed batch of real images."""
    check_number("tolerance", tolerance, 0, low_open=True, integer=False)
    check_export_options(fmt, precision, calibration is not None)
    check_export_path(path, fmt)
    model = model.eval()
    path = Path(path)
    inputs = {"random batch 1": _sample_input(model, 1), "random batch 5": _sample_input(model, 5)}
    if real_inputs is not None and len(real_inputs):
        inputs[f"real images ({len(real_inputs)})"] = real_inputs
    write = {"onnx": export_onnx, "torch.export": export_program, "torchscript": export_torchscript}[fmt]
    with atomic_path(path, keep_suffix=True) as partial:
        if precision == "int8":
            quantize_onnx(fold_batchnorm(model), calibration, partial)
            write_onnx_metadata(partial, model_metadata(model, precision))
        elif precision == "bf16":
            write(BFloat16Model(fold_batchnorm(copy.deepcopy(model))), partial)
        else:
            write(model, partial)
        if precision == "fp32":
            report = ExportReport(path, fmt, compare_exported(model, partial, fmt, inputs), tolerance)
        else:
            report = ExportReport(path, fmt, tolerance=tolerance, precision=precision)
            runner = _load_exported(partial, fmt)
            for name, x in inputs.items():
                expected, got = _outputs(model, runner, fmt, x)
                report.max_abs_diff[name] = float(np.abs(got - expected).max())
                report.agreement[name] = float((expected.argmax(1) == got.argmax(1)).mean() * 100)
            del runner  # ONNX Runtime's session holds the file open
        if not report.ok:  # raised inside: the checked file is removed, the previous one never replaced
            worst = max(report.max_abs_diff, key=report.max_abs_diff.get)
            kept = f"the previous {path.name} is unchanged" if path.exists() else f"{path.name} was not written"
            raise UsageError(f"{path}: exported {fmt} differs from PyTorch by {report.max_abs_diff[worst]:.3g} on "
                             f"{worst} (tolerance {tolerance:g}); {kept}")
    return report


def onnx_bytes(model: nn.Module) -> bytes:
    """The ONNX export of ``model`` in memory (for sessions that never need the file)."""
    with tempfile.TemporaryDirectory() as tmp:
        return export_onnx(model, Path(tmp) / "model.onnx").read_bytes()
