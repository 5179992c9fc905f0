"""Weights: reading and writing checkpoints of every supported format, without running code.

``formats`` detects and reads safetensors, torch.save (zip and legacy) files of ours,
torchvision's, timm's and pytorch_resnet_cifar10's, maps their keys onto ours and writes our
safetensors with metadata. URLs go through the package's one downloader (``resnets.download``).
``named`` registers published weights by name (``resnet50.tv2_in1k``); ``classes`` holds the
shipped class names.
"""

from ..download import DownloadError, fetch
from .formats import (CheckpointError, CheckpointInfo, UnsafeCheckpointError, apply_preprocessing, checkpoint_cache_dir,
                      describe_state_dict, detect_format, guess_architecture, load_checkpoint, load_state_dict,
                      load_weights, read_metadata, resolve, save_weights)
from .named import Weights, WeightsMeta, default_weights, get_weights, list_weights, model_card, register_weights

__all__ = [
    "CheckpointError", "CheckpointInfo", "DownloadError", "UnsafeCheckpointError", "Weights", "WeightsMeta",
    "apply_preprocessing", "checkpoint_cache_dir", "default_weights", "describe_state_dict", "detect_format", "fetch",
    "get_weights", "guess_architecture", "list_weights", "load_checkpoint", "load_state_dict", "load_weights",
    "model_card", "read_metadata", "register_weights", "resolve", "save_weights",
]
