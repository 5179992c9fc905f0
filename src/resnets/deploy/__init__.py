"""Deployment: BN folding, export (ONNX, torch.export, TorchScript), inference sessions at
fp32 / bf16 / int8 on PyTorch, ONNX Runtime or OpenVINO, the accuracy guard, class names,
image decoding for prediction, and the HTTP server (``resnets.deploy.server``).

Names are loaded on first use: image decoding pulls in torchvision, export pulls in ONNX.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_exports

_EXPORTS = {
    "class_names": "classes", "resolve_class_names": "classes",
    "AccuracyCheck": "calibration", "load_images": "calibration",
    "ExportReport": "export", "check_export_options": "export", "check_export_path": "export",
    "export_model": "export", "export_onnx": "export", "export_program": "export",
    "export_torchscript": "export", "read_onnx_metadata": "export",
    "evaluate_checkpoint": "evaluate", "write_confusion_png": "evaluate",
    "fold_batchnorm": ".models.fold", "fuse_conv_bn": ".models.fold",  # in models: training folds too
    "ImageDecodeError": "images", "decode_image": "images", "find_images": "images", "load_batch": "images",
    "preprocess": "images", "ReadImages": "images", "read_images": "images", "report_multi_frames": "images",
    "InferenceSession": "session", "Prediction": "session", "SessionConfig": "session",
    "ServerConfig": "server_config",
    "MissingExtraError": "optional",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, globals(), _EXPORTS)

if TYPE_CHECKING:
    from .calibration import AccuracyCheck, load_images
    from .classes import class_names, resolve_class_names
    from .evaluate import evaluate_checkpoint, write_confusion_png
    from .export import (ExportReport, check_export_options, check_export_path, export_model, export_onnx,
                         export_program, export_torchscript, read_onnx_metadata)
    from ..models.fold import fold_batchnorm, fuse_conv_bn
    from .optional import MissingExtraError
    from .images import (ImageDecodeError, ReadImages, decode_image, find_images, load_batch, preprocess,
                         read_images, report_multi_frames)
    from .server_config import ServerConfig
    from .session import InferenceSession, Prediction, SessionConfig
