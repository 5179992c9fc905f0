"""Transfer learning: fine-tune a pretrained ResNet on one's own images, take its embeddings, or use it as
the backbone of a torchvision detector or segmenter (``backbone``).

    from resnets.transfer import FinetuneOptions, backbone, compute_features, finetune

    finetune(FinetuneOptions("resnet18", weights="resnet18.pth", data="my_images/", out="runs/ft",
                             strategy="linear-probe"))
    features = compute_features("resnet18", "my_images/", weights="runs/ft/best.safetensors")
    features.save("embeddings.npy")         # + embeddings.json: files, labels, classes
    detector = torchvision.models.detection.FasterRCNN(backbone("resnet50", weights="tv2_in1k", fpn=True), 21)
"""

from .backbone import Backbone, backbone
from .features import FeatureLoader, Features, compute_features, extract_features, load_features
from .finetune import STRATEGIES, FinetuneOptions, check_finetune_data, finetune, stage_groups, strategy_transfer
from .hook import Transfer
from ..pretrained import load_pretrained

__all__ = ["Backbone", "FeatureLoader", "Features", "FinetuneOptions", "STRATEGIES", "backbone", "check_finetune_data",
           "compute_features", "extract_features", "finetune", "load_features", "load_pretrained", "stage_groups",
           "strategy_transfer", "Transfer"]
