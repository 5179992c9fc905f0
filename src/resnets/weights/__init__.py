"""Weights: reading and writing checkpoints of every supported format, without running code.

``formats`` detects and reads safetensors, torch.save (zip and legacy) files of ours,
torchvision's, timm's and pytorch_resnet_cifar10's, maps their keys onto ours and writes our
safetensors with metadata. URLs go through the package's one downloader (``resnets.download``).
``named`` registers published weights by name (``resnet50.tv2_in1k``), ``catalogue`` lists them (data);
``classes`` holds the
shipped class names; ``hub`` reads and writes repositories in the Hugging Face Hub's layout
(``hf-hub:ORG/NAME``, ``local-dir:PATH``: config.json + model.safetensors + a model card).
"""

from ..download import DownloadError, fetch
from .formats import (CheckpointError, CheckpointInfo, UnsafeCheckpointError, apply_preprocessing, checkpoint_cache_dir,
                      describe_state_dict, detect_format, guess_architecture, load_checkpoint, load_state_dict,
                      load_weights, read_metadata, resolve, save_weights)
from .hub import Repository, is_repository, open_repository, save_pretrained
from .named import Weights, WeightsMeta, default_weights, get_weights, list_weights, model_card, register_weights
from . import catalogue  # noqa: E402,F401 - registers the entries

__all__ = [
    "CheckpointError", "CheckpointInfo", "DownloadError", "Repository", "UnsafeCheckpointError", "Weights",
    "WeightsMeta", "is_repository", "open_repository", "save_pretrained",
    "apply_preprocessing", "checkpoint_cache_dir", "default_weights", "describe_state_dict", "detect_format", "fetch",
    "get_weights", "guess_architecture", "list_weights", "load_checkpoint", "load_state_dict", "load_weights",
    "model_card", "read_metadata", "register_weights", "resolve", "save_weights",
]
