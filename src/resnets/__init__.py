"""resnets: the residual networks of He et al. (2015, 2016), exact and ready to use."""

from .deploy import InferenceSession
from .models import (FrozenBatchNorm2d, Preprocessing, ResNet, ResNetFeatures, cifar_resnet, create_model,
                     freeze_batchnorm, get_model_spec, import_models, list_models, register_model)
from .weights import CheckpointError, load_weights, read_metadata, save_weights

__version__ = "0.1.0"

__all__ = [
    "CheckpointError", "FrozenBatchNorm2d", "InferenceSession", "Preprocessing", "ResNet", "ResNetFeatures",
    "__version__", "cifar_resnet", "create_model", "freeze_batchnorm", "get_model_spec", "import_models",
    "list_models", "load_weights", "read_metadata", "register_model", "save_weights",
]
