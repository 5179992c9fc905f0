"""Model definitions: blocks, the ResNet class, the registry and the two families.

A leaf of the package: nothing here reads checkpoints or data.
"""

from . import cifar, imagenet  # noqa: F401  (registers the models)
from .blocks import BasicBlock, Bottleneck, PreActBasicBlock, PreActBottleneck, ZeroPadShortcut
from .cifar import cifar_resnet
from .layers import FrozenBatchNorm2d, freeze_batchnorm, get_norm_layer
from .preprocessing import CIFAR10_PREPROCESSING, IMAGENET_PREPROCESSING, Preprocessing
from .registry import ModelSpec, build_model, get_model_spec, import_models, list_models, register_model
from .resnet import ResNet, ResNetFeatures

__all__ = [
    "BasicBlock", "Bottleneck", "CIFAR10_PREPROCESSING", "FrozenBatchNorm2d", "IMAGENET_PREPROCESSING", "ModelSpec",
    "PreActBasicBlock", "PreActBottleneck", "Preprocessing", "ResNet", "ResNetFeatures", "ZeroPadShortcut",
    "build_model", "cifar_resnet", "freeze_batchnorm", "get_model_spec", "get_norm_layer", "import_models",
    "list_models", "register_model",
]
