"""resnets: the residual networks of He et al. (2015, 2016), exact and ready to use.

The public names are loaded on first use (PEP 562), so that ``import resnets`` and
``resnets --help`` cost little beyond ``import torch``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._lazy import lazy_exports

__version__ = "0.1.0"

# public name -> the module that defines it
_EXPORTS = {
    "create_model": "factory",
    "list_models": "factory",
    "WeightsAdaptedWarning": "factory",
    "InferenceSession": "deploy.session",
    "explain": "interpret",
    "backbone": "transfer.backbone",
    "faithfulness": "interpret",
    "ResnetsError": "errors",
    "CheckpointError": "weights.formats",
    "load_weights": "weights.formats",
    "read_metadata": "weights.formats",
    "save_weights": "weights.formats",
    "save_pretrained": "weights.hub",
    **{name: "weights.named" for name in (
        "Weights", "WeightsMeta", "default_weights", "get_weights", "list_weights", "model_card",
        "register_weights")},
    **{name: "models" for name in (
        "FrozenBatchNorm2d", "Preprocessing", "ResNet", "ResNetFeatures", "build_model", "cifar_resnet",
        "freeze_batchnorm", "get_model_spec", "import_models", "register_model")},
}

__all__ = sorted([*_EXPORTS, "__version__"])


__getattr__, __dir__ = lazy_exports(__name__, globals(), _EXPORTS)

if TYPE_CHECKING:  # for type checkers and IDEs: the same names, imported eagerly
    from .deploy.session import InferenceSession
    from .errors import ResnetsError
    from .factory import WeightsAdaptedWarning, create_model, list_models
    from .interpret import explain, faithfulness
    from .models import (FrozenBatchNorm2d, Preprocessing, ResNet, ResNetFeatures, build_model, cifar_resnet,
                         freeze_batchnorm, get_model_spec, import_models, register_model)
    from .transfer.backbone import backbone
    from .weights.formats import CheckpointError, load_weights, read_metadata, save_weights
    from .weights.hub import save_pretrained
    from .weights.named import (Weights, WeightsMeta, default_weights, get_weights, list_weights, model_card,
                                register_weights)
