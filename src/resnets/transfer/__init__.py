"""Transfer learning: fine-tune a pretrained ResNet on one's own images, or take its embeddings.

    from resnets.transfer import FinetuneOptions, finetune, compute_features

    finetune(FinetuneOptions("resnet18", weights="resnet18.pth", data="my_images/", out="runs/ft",
                             strategy="linear-probe"))
    features = compute_features("resnet18", "my_images/", weights="runs/ft/best.safetensors")
    features.save("embeddings.npy")         # + embeddings.json: files, labels, classes
"""

from .backbone import Backbone, backbone
from .features import FeatureLoader, Features, compute_features, extract_features, load_features
from .finetune import STRATEGIES, FinetuneOptions, check_finetune_data, finetune, stage_groups, strategy_transfer
from .hook import Transfer
from .pretrained import load_pretrained

__all__ = ["Backbone", "FeatureLoader", "Features", "FinetuneOptions", "STRATEGIES", "check_finetune_data", "backbone", "compute_features",
           "extract_features", "finetune", "load_features", "load_pretrained", "stage_groups", "strategy_transfer",
           "Transfer"]
