"""Model definitions: blocks, the ResNet class, the registry and the two families."""

from . import cifar, imagenet  # noqa: F401  (registers the models)
from .blocks import BasicBlock, Bottleneck, PreActBasicBlock, PreActBottleneck, ZeroPadShortcut
from .cifar import cifar_resnet
from .layers import FrozenBatchNorm2d, freeze_batchnorm, get_norm_layer
from .registry import (Preprocessing, create_model, get_model_spec, import_models, list_models,
                       register_model)
from .resnet import ResNet, ResNetFeatures

__all__ = [
    "BasicBlock", "Bottleneck", "FrozenBatchNorm2d", "PreActBasicBlock", "PreActBottleneck", "Preprocessing",
    "ResNet", "ResNetFeatures", "ZeroPadShortcut", "cifar_resnet", "create_model", "freeze_batchnorm",
    "get_model_spec", "get_norm_layer", "import_models", "list_models", "register_model",
]
