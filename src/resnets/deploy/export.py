"""Exporting to ONNX and TorchScript, with a check against PyTorch."""

from __future__ import annotations

import os
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Union

import numpy as np
import torch
from torch import nn

from ..errors import UsageError

FORMATS = ("onnx", "torchscript")
TOLERANCE = 1e-4


@dataclass
class ExportReport:
    """Where the export went and how far it is from PyTorch on each check input."""

    path: Path
    format: str
    max_abs_diff: dict[str, float] = field(default_factory=dict)
    tolerance: float = TOLERANCE

    @property
    def ok(self) -> bool:
        return all(d <= self.tolerance for d in self.max_abs_diff.values())


def _sample_input(model: nn.Module, batch: int) -> torch.Tensor:
    channels, height, width = model.preprocessing.input_size
    return torch.randn(batch, channels, height, width)


def export_onnx(model: nn.Module, path: Union[str, os.PathLike], *, opset: Optional[int] = None) -> Path:
    """Write ``model`` as ONNX with a dynamic batch dimension (input "input", output "logits")."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter reports its internal steps as warnings
        program = torch.onnx.export(model, (_sample_input(model, 2),), input_names=["input"], output_names=["logits"],
                                    dynamic_shapes={"x": {0: torch.export.Dim("batch")}}, dynamo=True,
                                    opset_version=opset, verbose=False, external_data=False)
    program.save(str(path), external_data=False)
    return path


def export_torchscript(model: nn.Module, path: Union[str, os.PathLike]) -> Path:
    """Write ``model`` as a traced, frozen TorchScript module (any batch size: the network
    has no data-dependent control flow, so a trace records all of it)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TorchScript's deprecation notices; it is still what users ask for
        scripted = torch.jit.freeze(torch.jit.trace(model.eval(), _sample_input(model, 2)))
    scripted.save(str(path))
    return path


def onnx_session(path: Union[str, os.PathLike], num_threads: Optional[int] = None):
    """An ONNX Runtime CPU session with every graph optimisation on."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = num_threads or torch.get_num_threads()
    # idle worker threads sleep instead of spinning, leaving the cores to the rest of the process
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def compare_exported(model: nn.Module, path: Union[str, os.PathLike], fmt: str,
                     inputs: dict[str, torch.Tensor]) -> dict[str, float]:
    """Max absolute difference between ``model`` and the exported file on each named input
    (ONNX through ONNX Runtime, TorchScript through torch.jit.load)."""
    model = model.eval()
    diffs = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        runner = onnx_session(path) if fmt == "onnx" else torch.jit.load(str(path))
    for name, x in inputs.items():
        with torch.no_grad():
            expected = model(x).numpy()
            if fmt == "onnx":
                (got,) = runner.run(None, {"input": x.numpy()})
            else:
                got = runner(x).numpy()
        diffs[name] = float(np.abs(got - expected).max())
    return diffs


# file name endings of each format: a file's name should say what it holds
EXTENSIONS = {"onnx": (".onnx",), "torchscript": (".pt", ".pth", ".ts", ".torchscript")}


def check_export_path(path: Union[str, os.PathLike], fmt: str) -> None:
    """Refuse an output name whose extension does not match the format (ONNX written into ``x.pt``)."""
    if fmt not in FORMATS:
        raise UsageError(f"format must be one of {FORMATS}, got {fmt!r}")
    suffix = Path(path).suffix.lower()
    if suffix not in EXTENSIONS[fmt]:
        other = next((f for f, endings in EXTENSIONS.items() if suffix in endings), None)
        hint = f" (the ending of {other} files)" if other else ""
        raise UsageError(f"--out {os.fspath(path)}: a {fmt} file should end in {' or '.join(EXTENSIONS[fmt])}, "
                         f"not {suffix or 'nothing'!r}{hint}")


def export_model(model: nn.Module, path: Union[str, os.PathLike], fmt: str, *,
                 real_inputs: Optional[torch.Tensor] = None, tolerance: float = TOLERANCE) -> ExportReport:
    """Export and check: random inputs at two batch sizes (the batch is dynamic) and, where
    given, real preprocessed images. Raises ValueError naming the worst input beyond
    ``tolerance``; the file is kept for inspection."""
    check_export_path(path, fmt)
    path = export_onnx(model, path) if fmt == "onnx" else export_torchscript(model, path)
    inputs = {"random batch 1": _sample_input(model, 1), "random batch 5": _sample_input(model, 5)}
    if real_inputs is not None and len(real_inputs):
        inputs[f"real images ({len(real_inputs)})"] = real_inputs
    report = ExportReport(path, fmt, compare_exported(model, path, fmt, inputs), tolerance)
    if not report.ok:
        worst = max(report.max_abs_diff, key=report.max_abs_diff.get)
        raise UsageError(f"{path}: exported {fmt} differs from PyTorch by {report.max_abs_diff[worst]:.3g} on "
                         f"{worst} (tolerance {tolerance:g})")
    return report


def onnx_bytes(model: nn.Module) -> bytes:
    """The ONNX export of ``model`` in memory (for sessions that never need the file)."""
    with tempfile.TemporaryDirectory() as tmp:
        return export_onnx(model, Path(tmp) / "model.onnx").read_bytes()
