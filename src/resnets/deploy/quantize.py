"""INT8 inference: ONNX Runtime static quantisation, calibrated on the user's images."""

from __future__ import annotations

import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from torch import nn

from ..errors import UsageError
from .export import export_onnx, onnx_session


class _BatchReader:
    """Feeds calibration images to the quantiser a few at a time."""

    def __init__(self, images: np.ndarray, batch_size: int = 8):
        self._batches = iter([images[i:i + batch_size] for i in range(0, len(images), batch_size)])

    def get_next(self) -> Optional[dict]:
        batch = next(self._batches, None)
        return None if batch is None else {"input": batch}


def quantize_onnx(model: nn.Module, calibration: torch.Tensor, *, path: Optional[Path] = None,
                  num_threads: Optional[int] = None):
    """An ONNX Runtime session running ``model`` in INT8 (QDQ format, per-channel weights,
    activation ranges calibrated on ``calibration``, a preprocessed image batch). Writes the
    quantised model to ``path`` when given."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if calibration.dim() != 4 or len(calibration) == 0:
        raise UsageError(f"calibration must be a non-empty (N, C, H, W) batch, got shape {tuple(calibration.shape)}")
    model = model.to(memory_format=torch.contiguous_format).eval()
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = export_onnx(model, Path(tmp) / "fp32.onnx")
        prepared = Path(tmp) / "prepared.onnx"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # folds constants and infers shapes so that every convolution gets quantised
            quant_pre_process(str(fp32), str(prepared), skip_symbolic_shape=True)
            target = Path(path) if path is not None else Path(tmp) / "int8.onnx"
            quantize_static(str(prepared), str(target), _BatchReader(calibration.float().numpy()),
                            quant_format=QuantFormat.QDQ, per_channel=True, activation_type=QuantType.QUInt8,
                            weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.MinMax)
        return onnx_session(target, num_threads)


@dataclass
class AccuracyChange:
    """INT8 against fp32 on a labelled set: top-1 of each and how often they agree."""

    images: int
    fp32_top1: float
    int8_top1: float
    agreement: float  # fraction of images with the same top-1 class

    @property
    def change(self) -> float:
        return self.int8_top1 - self.fp32_top1


def accuracy_change(fp32_session, int8_session, images: torch.Tensor, labels: torch.Tensor,
                    batch_size: int = 32) -> AccuracyChange:
    """Top-1 of two InferenceSessions on the same labelled images."""
    fp32_pred, int8_pred = [], []
    for start in range(0, len(images), batch_size):
        batch = images[start:start + batch_size]
        fp32_pred.append(fp32_session.run(batch).argmax(1))
        int8_pred.append(int8_session.run(batch).argmax(1))
    a, b = torch.cat(fp32_pred), torch.cat(int8_pred)
    labels = labels.to(a.dtype)
    return AccuracyChange(len(labels), float((a == labels).float().mean()), float((b == labels).float().mean()),
                          float((a == b).float().mean()))
