"""The catalogue of named weights: the published checkpoints ``MODEL.TAG`` names, as data.

The registry mechanism (``Weights``, ``register_weights``, the look-ups) is ``named``; this module only
says which entries exist. Each says where its file is (a URL, or a file shipped in
``resnets/weights/files/``), its sha256 (whole, or the 8+ hex digit prefix torchvision puts in its
file names) and what it was measured to do (``WeightsMeta``).

Sources, checked when the entries were written:

- torchvision: the ``*_Weights`` enums of torchvision 0.29 (URL, acc@1/acc@5 on the 50,000
  ImageNet validation images, num_params, GFLOPS, file size in MiB, recipe, resize and crop) and
  https://pytorch.org/vision/stable/models.html. Their multiply-adds are what torchvision calls
  GFLOPS. BSD-3-Clause.
- timm: ``timm/models/resnet.py`` (preprocessing of each tag) and ``results/results-imagenet.csv``
  (top-1/top-5 at 224 pixels) of huggingface/pytorch-image-models; the sha256 from each file's
  "Git LFS Details" on the Hugging Face Hub. Apache-2.0.
- pytorch-cifar-models (github.com/chenyaofo/pytorch-cifar-models): its README's model zoo (URL with the
  hash prefix, top-1/top-5 on the 10,000 CIFAR test images, parameters, multiply-adds), ``resnet.py``
  (option B projections) and its training code's CIFAR configuration (mean, std). BSD-3-Clause.
- our own: each file in ``files/`` with its model card (``MODEL-TAG.json`` beside it).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Optional

from ..models import Preprocessing
from ..models.preprocessing import IMAGENET_MEAN, IMAGENET_STD
from .named import FILES_DIR, Weights, WeightsMeta, register_weights

# torchvision's evaluation transform: resize 256 (V1) or 232 (V2 recipe), center crop 224, bilinear
TORCHVISION_V1 = Preprocessing((3, 224, 224), IMAGENET_MEAN, IMAGENET_STD, "bilinear", crop_pct=224 / 256)
TORCHVISION_V2 = Preprocessing((3, 224, 224), IMAGENET_MEAN, IMAGENET_STD, "bilinear", crop_pct=224 / 232)
# timm's "ResNet strikes back" tags: crop_pct 0.95, bicubic; timm resizes to floor(224 / 0.95) = 235
TIMM_RSB = Preprocessing((3, 224, 224), IMAGENET_MEAN, IMAGENET_STD, "bicubic", crop_pct=224 / 235)
TIMM_RA = Preprocessing((3, 224, 224), IMAGENET_MEAN, IMAGENET_STD, "bicubic", crop_pct=224 / 256)

_TV_RECIPE_V1 = "https://github.com/pytorch/vision/tree/main/references/classification#resnet"
_TV_RECIPE_NEW = "https://github.com/pytorch/vision/issues/3995#new-recipe"
_TV_RECIPE_FIXRES = "https://github.com/pytorch/vision/issues/3995#new-recipe-with-fixres"
_TIMM_RSB_RECIPE = "https://arxiv.org/abs/2110.00476"


# torchvision's enum class of each model's weights
_TORCHVISION_ENUMS = {"resnet18": "ResNet18_Weights", "resnet34": "ResNet34_Weights", "resnet50": "ResNet50_Weights",
                      "resnet101": "ResNet101_Weights", "resnet152": "ResNet152_Weights",
                      "resnext50_32x4d": "ResNeXt50_32X4D_Weights", "resnext101_32x8d": "ResNeXt101_32X8D_Weights",
                      "resnext101_64x4d": "ResNeXt101_64X4D_Weights", "wide_resnet50_2": "Wide_ResNet50_2_Weights",
                      "wide_resnet101_2": "Wide_ResNet101_2_Weights"}


def _torchvision(model: str, version: int, file: str, top1: float, top5: float, params: int, gmacs: float,
                 size_mb: float, recipe: str, *, sha256: Optional[str] = None, default: bool = False) -> Weights:
    """torchvision's IMAGENET1K_V<version> weights of ``model``; the hash is the prefix in ``file``."""
    if sha256 is None:
        sha256 = re.search(r"-([0-9a-f]{8,})\.pth$", file).group(1)
    v2 = version == 2 or model == "resnext101_64x4d"  # trained with the new recipe, evaluated at 232
    return Weights(name=f"{model}.tv{'2' if version == 2 else ''}_in1k",
                   url=f"https://download.pytorch.org/models/{file}", sha256=sha256, default=default,
                   torchvision=f"{_TORCHVISION_ENUMS[model]}.IMAGENET1K_V{version}",
                   meta=WeightsMeta(dataset="imagenet1k", preprocessing=TORCHVISION_V2 if v2 else TORCHVISION_V1,
                                    top1=top1, top5=top5, n=50_000, params=params, gmacs=gmacs, file_size_mb=size_mb,
                                    classes="imagenet1k", recipe=recipe,
                                    source=f"torchvision ({model}, IMAGENET1K_V{version})", license="BSD-3-Clause"))


def _timm(name: str, sha256: str, top1: float, top5: float, params: int, gmacs: float,
          preprocessing: Preprocessing, recipe: str) -> Weights:
    """A timm tag whose file is ``model.safetensors`` of the Hub repository ``timm/<name>``."""
    return Weights(name=name, url=f"https://huggingface.co/timm/{name}/resolve/main/model.safetensors",
                   sha256=sha256,
                   meta=WeightsMeta(dataset="imagenet1k", preprocessing=preprocessing, top1=top1, top5=top5,
                                    n=50_000, params=params, gmacs=gmacs, classes="imagenet1k", recipe=recipe,
                                    source=f"timm (huggingface.co/timm/{name})", license="Apache-2.0"))


TORCHVISION = (
    # torchvision's DEFAULT for resnet18/34 is V1 (no V2 exists); marked, so that our resnet18.imagenette,
    # registered earlier, does not become the default by order
    _torchvision("resnet18", 1, "resnet18-f37072fd.pth", 69.758, 89.078, 11_689_512, 1.814, 44.661, _TV_RECIPE_V1,
                 default=True),
    _torchvision("resnet34", 1, "resnet34-b627a593.pth", 73.314, 91.420, 21_797_672, 3.664, 83.275, _TV_RECIPE_V1,
                 default=True),
    # the whole sha256 of resnet50-0676ba61.pth (102,530,333 bytes = 97.781 MiB), from a Git LFS pointer of it
    _torchvision("resnet50", 1, "resnet50-0676ba61.pth", 76.130, 92.862, 25_557_032, 4.089, 97.781, _TV_RECIPE_V1,
                 sha256="0676ba61b6795bbe1773cffd859882e5e297624d384b6993f7c9e683e722fb8a"),
    _torchvision("resnet50", 2, "resnet50-11ad3fa6.pth", 80.858, 95.434, 25_557_032, 4.089, 97.790,
                 "https://github.com/pytorch/vision/issues/3995#issuecomment-1013906621", default=True),
    _torchvision("resnet101", 1, "resnet101-63fe2227.pth", 77.374, 93.546, 44_549_160, 7.801, 170.511,
                 _TV_RECIPE_V1),
    _torchvision("resnet101", 2, "resnet101-cd907fc2.pth", 81.886, 95.780, 44_549_160, 7.801, 170.530,
                 _TV_RECIPE_NEW, default=True),
    _torchvision("resnet152", 1, "resnet152-394f9c45.pth", 78.312, 94.046, 60_192_808, 11.514, 230.434,
                 _TV_RECIPE_V1),
    _torchvision("resnet152", 2, "resnet152-f82ba261.pth", 82.284, 96.002, 60_192_808, 11.514, 230.474,
                 _TV_RECIPE_NEW, default=True),
    _torchvision("resnext50_32x4d", 1, "resnext50_32x4d-7cdf4587.pth", 77.618, 93.698, 25_028_904, 4.230, 95.789,
                 "https://github.com/pytorch/vision/tree/main/references/classification#resnext"),
    _torchvision("resnext50_32x4d", 2, "resnext50_32x4d-1a0047aa.pth", 81.198, 95.340, 25_028_904, 4.230, 95.833,
                 _TV_RECIPE_NEW, default=True),
    _torchvision("resnext101_32x8d", 1, "resnext101_32x8d-8ba56ff5.pth", 79.312, 94.526, 88_791_336, 16.414,
                 339.586, "https://github.com/pytorch/vision/tree/main/references/classification#resnext"),
    _torchvision("resnext101_32x8d", 2, "resnext101_32x8d-110c445d.pth", 82.834, 96.228, 88_791_336, 16.414,
                 339.673, _TV_RECIPE_FIXRES, default=True),
    # torchvision's only weights of this model: V1 by name, the new recipe and resize 232 in fact
    _torchvision("resnext101_64x4d", 1, "resnext101_64x4d-173b62eb.pth", 83.246, 96.454, 83_455_272, 15.460,
                 319.318, "https://github.com/pytorch/vision/pull/5935"),
    # the V1 wide nets are stored in half precision (about 2 bytes a parameter)
    _torchvision("wide_resnet50_2", 1, "wide_resnet50_2-95faca4d.pth", 78.468, 94.086, 68_883_240, 11.398, 131.820,
                 "https://github.com/pytorch/vision/pull/912#issue-445437439"),
    _torchvision("wide_resnet50_2", 2, "wide_resnet50_2-9ba9bcbe.pth", 81.602, 95.758, 68_883_240, 11.398, 263.124,
                 _TV_RECIPE_FIXRES, default=True),
    _torchvision("wide_resnet101_2", 1, "wide_resnet101_2-32ee1156.pth", 78.848, 94.284, 126_886_696, 22.753,
                 242.896, "https://github.com/pytorch/vision/pull/912#issue-445437439"),
    _torchvision("wide_resnet101_2", 2, "wide_resnet101_2-d733dc28.pth", 82.510, 96.020, 126_886_696, 22.753,
                 484.747, _TV_RECIPE_NEW, default=True),
)

# top-1/top-5 at 224 pixels, timm's default evaluation (timm also reports them at 288, its test size)
TIMM = (
    _timm("resnet50.a1_in1k", "773525d5821de224f8f30c33377b7a795d7863e08522698200d3217d3f2a41bb", 80.382, 94.598,
          25_557_032, 4.089, TIMM_RSB, _TIMM_RSB_RECIPE + " (A1)"),
    _timm("resnet50.a2_in1k", "f531f9aca4dde1b89e9a465c5b9e3b916a2d1b20a216acf3b9473d1e1212ecf6", 79.828, 94.560,
          25_557_032, 4.089, TIMM_RSB, _TIMM_RSB_RECIPE + " (A2)"),
    _timm("resnet50.d_in1k", "d8ed291891c8ee5777f68136665a4eee2f9ddeb2a9bc88acf4b1676b3bbebf55", 79.904, 94.666,
          25_557_032, 4.089, TIMM_RSB, "https://github.com/huggingface/pytorch-image-models (D recipe)"),
    _timm("resnet50.b1k_in1k", "cd64707e0ef72aa0526ac6d46fba6495ad2088717adb47a62a0b526eb3cd3480", 79.564, 94.622,
          25_557_032, 4.089, TIMM_RSB, "https://github.com/huggingface/pytorch-image-models (B1K recipe)"),
    _timm("resnet50.ra_in1k", "c49195c94e4fe19545a332e706f998d836f63b5d9892cc54526df3ee9b92ba18", 78.820, 94.314,
          25_557_032, 4.089, TIMM_RA, "https://github.com/huggingface/pytorch-image-models (RandAugment)"),
    _timm("resnet101.a1_in1k", "1ba5b660e7c175b3c27c557fc7dc8b2815be830c516815b0155f61b403f27380", 81.494, 95.164,
          44_549_160, 7.801, TIMM_RSB, _TIMM_RSB_RECIPE + " (A1)"),
)


# pytorch-cifar-models (github.com/chenyaofo/pytorch-cifar-models, the torch.hub source of CIFAR ResNets): option B
# shortcuts (1x1 projections, which create_model reads from the file), trained on the lossless CIFAR training set,
# top-1/top-5 published on its 10,000 test images; evaluated on the 32-pixel image as it is, normalised as its
# training code's configuration (github.com/chenyaofo/image-classification-codebase, conf/cifar10[0].conf) says
PCM_CIFAR10 = Preprocessing((3, 32, 32), (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010), "bilinear", crop_pct=1.0)
PCM_CIFAR100 = Preprocessing((3, 32, 32), (0.5070, 0.4865, 0.4409), (0.2673, 0.2564, 0.2761), "bilinear",
                             crop_pct=1.0)
_PCM_RELEASES = "https://github.com/chenyaofo/pytorch-cifar-models/releases/download/resnet/"


def _pytorch_cifar_models(model: str, dataset: str, file: str, top1: float, top5: float, params: int,
                          gmacs: float) -> Weights:
    """A CIFAR ResNet of pytorch-cifar-models; the hash is the prefix in ``file``, as torch.hub names files."""
    preprocessing = PCM_CIFAR10 if dataset == "cifar10" else PCM_CIFAR100
    return Weights(name=f"{model}.chenyaofo_{dataset}", url=_PCM_RELEASES + file, options={"shortcut": "B"},
                   sha256=re.search(r"-([0-9a-f]{8,})\.pt$", file).group(1),
                   meta=WeightsMeta(dataset=dataset, preprocessing=preprocessing,
                                    top1=top1, top5=top5, n=10_000, params=params, gmacs=gmacs, classes=dataset,
                                    recipe="https://github.com/chenyaofo/pytorch-cifar-models#implementation-details "
                                           "(200 epochs, batch 256, lr 0.1 nesterov, wd 1e-4 ... option B shortcuts)",
                                    source="pytorch-cifar-models (github.com/chenyaofo/pytorch-cifar-models)",
                                    license="BSD-3-Clause"))


PYTORCH_CIFAR_MODELS = (
    _pytorch_cifar_models("resnet20", "cifar10", "cifar10_resnet20-4118986f.pt", 92.60, 99.81, 272_474, 0.04081),
    _pytorch_cifar_models("resnet32", "cifar10", "cifar10_resnet32-ef93fc4d.pt", 93.53, 99.77, 466_906, 0.06912),
    _pytorch_cifar_models("resnet44", "cifar10", "cifar10_resnet44-2a3cabcb.pt", 94.01, 99.77, 661_338, 0.09744),
    _pytorch_cifar_models("resnet56", "cifar10", "cifar10_resnet56-187c023a.pt", 94.37, 99.83, 855_770, 0.12575),
    _pytorch_cifar_models("resnet20", "cifar100", "cifar100_resnet20-23dac2f1.pt", 68.83, 91.01, 278_324, 0.04082),
    _pytorch_cifar_models("resnet32", "cifar100", "cifar100_resnet32-84213ce6.pt", 70.16, 90.89, 472_756, 0.06913),
    _pytorch_cifar_models("resnet44", "cifar100", "cifar100_resnet44-ffe32858.pt", 71.63, 91.58, 667_188, 0.09744),
    _pytorch_cifar_models("resnet56", "cifar100", "cifar100_resnet56-f2eff4c8.pt", 72.63, 91.94, 861_620, 0.12575),
)


def _shipped(card_path: Path) -> Weights:
    """The entry of a weights file shipped in ``files/``, from its model card (``MODEL-TAG.json`` beside it,
    written with the file: what it was trained on, how, for how long, where, and its measured accuracy)."""
    card = json.loads(card_path.read_text(encoding="utf-8"))
    classes, preprocessing = card["classes"], Preprocessing.from_dict(card["preprocessing"])
    return Weights(name=card["name"], file=card["file"], sha256=card["sha256"], default=card["default"],
                   meta=WeightsMeta(dataset=card["dataset"], preprocessing=preprocessing,
                                    top1=card["val"]["top1"], top5=card["val"].get("top5"), n=card["val"]["n"],
                                    params=card["params"], gmacs=card["gmacs"],
                                    file_size_mb=round(card["file_size_bytes"] / 2**20, 3),
                                    classes=classes if isinstance(classes, str) else tuple(classes),
                                    recipe=f"resnets recipe {card['training']['recipe_name']}", source="resnets",
                                    license=card["license"]))


# our own weights: each file in files/ with its card, in name order
SHIPPED: tuple[Weights, ...] = tuple(_shipped(path) for path in sorted(FILES_DIR.glob("*.json")))

for _entry in (*SHIPPED, *TORCHVISION, *TIMM, *PYTORCH_CIFAR_MODELS):
    register_weights(_entry)


__all__ = ["PCM_CIFAR10", "PCM_CIFAR100", "PYTORCH_CIFAR_MODELS", "SHIPPED", "TIMM", "TIMM_RA", "TIMM_RSB",
           "TORCHVISION", "TORCHVISION_V1", "TORCHVISION_V2"]
