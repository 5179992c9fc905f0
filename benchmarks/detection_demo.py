"""Does a resnets backbone learn to detect? Faster R-CNN on generated scenes, scored by mAP.

    python benchmarks/detection_demo.py [--weights CHECKPOINT] [--steps 400] [--batch 4]
        [--size 224] [--fpn-channels 128] [--eval-images 200] [--model resnet18] [--out results.json]

The scenes are made reproducibly from the data this project has: one to three CIFAR-10 images
(../shared/datasets/cifar10-jpeg-train.zip), each scaled to a random 32..96-pixel box of slightly
varied aspect ratio, pasted onto an Imagenette image (imagenette-224-train.zip) at known random
places; the label is the CIFAR-10 class. Scene i of a split depends only on (seed, split, i).
Training and held-out scenes draw on disjoint objects and disjoint backgrounds (a seeded 90/10
split of each archive), so the evaluation is on images, objects and backgrounds never trained on.

torchvision's FasterRCNN is trained on ``resnets.backbone(MODEL, weights, fpn=True)`` (frozen BN
and the stem plus layer1 frozen when weights are given; trainable BN and every stage trained when
not) with SGD for ``--steps`` steps of ``--batch`` scenes, then scored on ``--eval-images``
held-out scenes with torchmetrics' MeanAveragePrecision (COCO mAP@[.5:.95] and mAP@50). The
baseline row is the same detector before training (its heads random), scored the same way.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import sys
import time
import zipfile
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

DATASETS = ROOT.parent / "shared" / "datasets"
CIFAR_ZIP = DATASETS / "cifar10-jpeg-train.zip"
BACKGROUND_ZIP = DATASETS / "imagenette-224-train.zip"
SPLITS = {"train": 0, "test": 1}
HELD_OUT = 0.1  # share of each archive's images kept for the held-out scenes
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")


class SceneGenerator:
    """Scenes of CIFAR-10 objects on Imagenette backgrounds with their boxes and labels.

    ``scene(split, index)`` returns ``(image, boxes, labels)``: a uint8 array (size, size, 3), float
    boxes (N, 4) as x1, y1, x2, y2 in pixels, and labels (N,) in 1..10 (0 is torchvision's background).
    """

    def __init__(self, cifar_zip: Path = CIFAR_ZIP, background_zip: Path = BACKGROUND_ZIP, *, size: int = 224,
                 seed: int = 0, min_side: int = 32, max_side: int = 96, max_objects: int = 3):
        self.size, self.seed = size, seed
        self.min_side, self.max_side, self.max_objects = min_side, min(max_side, size), max_objects
        self.cifar = zipfile.ZipFile(cifar_zip)
        self.backgrounds = zipfile.ZipFile(background_zip)
        cifar_names = sorted(n for n in self.cifar.namelist() if n.lower().endswith(IMAGE_EXTENSIONS))
        self.classes = sorted({n.split("/")[-2] for n in cifar_names})
        background_names = sorted(n for n in self.backgrounds.namelist() if n.lower().endswith(IMAGE_EXTENSIONS))
        self.objects = self._split(cifar_names, seed)
        self.scenery = self._split(background_names, seed + 1)

    @staticmethod
    def _split(names: list[str], seed: int) -> dict[str, list[str]]:
        order = np.random.default_rng(seed).permutation(len(names))
        cut = len(names) - int(round(len(names) * HELD_OUT))
        return {"train": [names[i] for i in order[:cut]], "test": [names[i] for i in order[cut:]]}

    def _read(self, archive: zipfile.ZipFile, name: str) -> Image.Image:
        return Image.open(io.BytesIO(archive.read(name))).convert("RGB")

    def scene(self, split: str, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        rng = np.random.default_rng([self.seed, SPLITS[split], index])
        objects, scenery = self.objects[split], self.scenery[split]
        canvas = self._read(self.backgrounds, scenery[rng.integers(len(scenery))])
        canvas = canvas.resize((self.size, self.size), Image.BILINEAR)
        boxes: list[list[float]] = []
        labels: list[int] = []
        for _ in range(int(rng.integers(1, self.max_objects + 1))):
            name = objects[rng.integers(len(objects))]
            for _attempt in range(20):  # a place that overlaps the boxes already pasted little
                side = rng.uniform(self.min_side, self.max_side)
                aspect = math.exp(rng.uniform(-0.3, 0.3))
                w = int(round(min(self.size, side * math.sqrt(aspect))))
                h = int(round(min(self.size, side / math.sqrt(aspect))))
                x, y = int(rng.integers(0, self.size - w + 1)), int(rng.integers(0, self.size - h + 1))
                box = [x, y, x + w, y + h]
                if all(_iou(box, other) < 0.2 for other in boxes):
                    break
            else:
                continue
            canvas.paste(self._read(self.cifar, name).resize((w, h), Image.BILINEAR), (x, y))
            boxes.append([float(v) for v in box])
            labels.append(self.classes.index(name.split("/")[-2]) + 1)
        return (np.asarray(canvas, dtype=np.uint8).copy(), np.asarray(boxes, dtype=np.float32).reshape(-1, 4),
                np.asarray(labels, dtype=np.int64))

    def batch(self, split: str, indices):
        """Tensors for torchvision's detectors: images (3, H, W) in [0, 1] and target dicts."""
        import torch

        images, targets = [], []
        for index in indices:
            image, boxes, labels = self.scene(split, int(index))
            images.append(torch.from_numpy(image).permute(2, 0, 1).float().div(255))
            targets.append({"boxes": torch.from_numpy(boxes), "labels": torch.from_numpy(labels)})
        return images, targets


def _iou(a, b) -> float:
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    inter = max(w, 0) * max(h, 0)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union else 0.0


def build_detector(model_name: str, weights, num_classes: int, size: int, fpn_channels: int = 128):
    """torchvision's FasterRCNN on a resnets FPN backbone, sized for ``size``-pixel scenes (a pyramid of
    128 channels rather than torchvision's 256, and 64 sampled boxes an image rather than 512: the heads
    cost more than a ResNet-18 on a CPU)."""
    from torchvision.models.detection import FasterRCNN

    import resnets

    if weights:
        backbone = resnets.backbone(model_name, weights=weights, fpn=True, trainable_stages=3,
                                    fpn_channels=fpn_channels)
    else:  # no statistics to freeze: trainable BN, every stage trained
        backbone = resnets.backbone(model_name, fpn=True, trainable_stages=5, norm="batchnorm",
                                    fpn_channels=fpn_channels)
    preprocessing = backbone.preprocessing
    return FasterRCNN(backbone, num_classes=num_classes + 1, min_size=size, max_size=size,
                      image_mean=list(preprocessing.mean), image_std=list(preprocessing.std),
                      rpn_pre_nms_top_n_train=1000, rpn_post_nms_top_n_train=500,
                      rpn_pre_nms_top_n_test=500, rpn_post_nms_top_n_test=300, box_batch_size_per_image=64)


@lru_cache(maxsize=None)
def _metric_class():
    from torchmetrics.detection import MeanAveragePrecision

    return MeanAveragePrecision


def evaluate(detector, generator: SceneGenerator, count: int, batch: int = 8) -> dict[str, float]:
    """COCO mAP and mAP@50 of ``detector`` on the first ``count`` held-out scenes."""
    import torch

    metric = _metric_class()(box_format="xyxy", iou_type="bbox", backend="pycocotools")
    detector.eval()
    with torch.inference_mode():
        for start in range(0, count, batch):
            images, targets = generator.batch("test", range(start, min(start + batch, count)))
            metric.update(detector(images), targets)
    scores = metric.compute()
    return {"map": float(scores["map"]), "map_50": float(scores["map_50"]), "map_75": float(scores["map_75"]),
            "mar_100": float(scores["mar_100"])}


def train(detector, generator: SceneGenerator, steps: int, batch: int, lr: float, log_every: int = 25,
          seed: int = 0) -> list[float]:
    """SGD with momentum, linear warm-up then cosine decay; scene indices seeded, never repeated."""
    import torch

    torch.manual_seed(seed)
    params = [p for p in detector.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=1e-4)
    warmup = max(1, min(50, steps // 5))
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: (s + 1) / warmup if s < warmup else
                                                 0.5 * (1 + math.cos(math.pi * (s - warmup) / max(1, steps - warmup))))
    detector.train()
    losses, started = [], time.perf_counter()
    for step in range(steps):
        images, targets = generator.batch("train", range(step * batch, (step + 1) * batch))
        loss_parts = detector(images, targets)
        loss = sum(loss_parts.values())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        losses.append(float(loss.detach()))
        if log_every and ((step + 1) % log_every == 0 or step == 0):
            parts = " ".join(f"{k.removeprefix('loss_')} {float(v.detach()):.3f}" for k, v in loss_parts.items())
            print(f"step {step + 1}/{steps} loss {np.mean(losses[-log_every:]):.3f} ({parts}) "
                  f"{time.perf_counter() - started:.0f}s", flush=True)
    return losses


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--weights", default=None, help="named weights or a checkpoint to start the backbone from")
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--fpn-channels", type=int, default=128)
    parser.add_argument("--eval-images", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data", default=str(DATASETS), help="folder holding the two zips")
    parser.add_argument("--out", default=None, help="write the figures as JSON here")
    args = parser.parse_args()

    import torch

    data = Path(args.data)
    for archive in (data / CIFAR_ZIP.name, data / BACKGROUND_ZIP.name):
        if not archive.is_file():
            sys.exit(f"{archive}: not found; --data names the folder holding {CIFAR_ZIP.name} and "
                     f"{BACKGROUND_ZIP.name}")
    torch.manual_seed(args.seed)
    generator = SceneGenerator(data / CIFAR_ZIP.name, data / BACKGROUND_ZIP.name, size=args.size, seed=args.seed)
    detector = build_detector(args.model, args.weights, len(generator.classes), args.size, args.fpn_channels)
    print(f"Faster R-CNN on resnets.backbone({args.model!r}, weights={args.weights!r}, fpn=True, "
          f"fpn_channels={args.fpn_channels}); "
          f"{args.steps} steps of {args.batch} scenes of {args.size} px; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads", flush=True)

    started = time.perf_counter()
    before = evaluate(detector, generator, args.eval_images)
    print(f"before training: {before} ({time.perf_counter() - started:.0f}s)", flush=True)
    started = time.perf_counter()
    losses = train(detector, generator, args.steps, args.batch, args.lr, seed=args.seed)
    train_seconds = time.perf_counter() - started
    started = time.perf_counter()
    after = evaluate(detector, generator, args.eval_images)
    eval_seconds = time.perf_counter() - started

    print(f"\n{args.eval_images} held-out scenes, torchmetrics MeanAveragePrecision (pycocotools)")
    print("| detector | mAP@[.5:.95] | mAP@50 | mAP@75 | mAR@100 |")
    print("| --- | --- | --- | --- | --- |")
    for label, scores in (("before training (baseline)", before), (f"after {args.steps} steps", after)):
        print(f"| {label} | {scores['map']:.3f} | {scores['map_50']:.3f} | {scores['map_75']:.3f} | "
              f"{scores['mar_100']:.3f} |")
    print(f"training {train_seconds / 60:.1f} min ({train_seconds / args.steps:.2f} s/step), "
          f"evaluation {eval_seconds:.0f} s; first/last 25-step mean loss "
          f"{np.mean(losses[:25]):.3f} / {np.mean(losses[-25:]):.3f}")
    if args.out:
        Path(args.out).write_text(json.dumps({"args": vars(args), "before": before, "after": after,
                                              "train_seconds": train_seconds, "losses": losses}, indent=1))


if __name__ == "__main__":
    main()
