"""Deployment: BN folding, export (ONNX, TorchScript), inference sessions, class names,
image decoding for prediction, and the HTTP server (``resnets.deploy.server``)."""

from .classes import class_names, resolve_class_names
from .export import ExportReport, export_model, export_onnx, export_torchscript
from .fold import fold_batchnorm, fuse_conv_bn
from .images import ImageDecodeError, decode_image, find_images, load_batch, preprocess
from .session import InferenceSession, Prediction, SessionConfig

__all__ = [
    "ExportReport", "ImageDecodeError", "InferenceSession", "Prediction", "SessionConfig", "class_names",
    "decode_image", "export_model", "export_onnx", "export_torchscript", "find_images", "fold_batchnorm",
    "fuse_conv_bn", "load_batch", "preprocess", "resolve_class_names",
]
