"""CPU inference throughput: torchvision eager against each InferenceSession backend.

Every configuration is measured in the same run, interleaved (one timed call of each
variant per round, median over rounds), so that load elsewhere on the machine hurts all
alike. All variants share one set of weights and one batch of real images (Imagenette,
224 px); outputs are compared with the torchvision model's.

    python benchmarks/cpu_inference.py                       # resnet18, resnet50; batch 1, 16
    python benchmarks/cpu_inference.py --models resnet18 --batch-sizes 16 --repeats 7

INT8 (ONNX Runtime static quantisation, calibrated on real images) is reported with its
accuracy change on real, labelled images. No pretrained weights are available offline, so
the labelled check uses a model whose classifier is fitted here: the network's BN statistics
are calibrated on Imagenette images and a linear classifier is fitted on pooled features of
training images (``--probe-train``), then fp32 and INT8 top-1 are measured on held-out images.
"""

from __future__ import annotations

import argparse
import platform
import random
import statistics
import sys
import time
import zipfile
from pathlib import Path

import torch
import torchvision
from torch import nn

import resnets
from resnets.deploy import InferenceSession, decode_image, preprocess
from resnets.deploy.quantize import accuracy_change

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_IMAGES = ROOT.parent / "shared" / "datasets" / "imagenette-224-train.zip"


def load_imagenette(path: Path, count: int, offset: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Preprocessed images ``offset .. offset + count`` of a fixed shuffle of the Imagenette
    zip (so disjoint ranges are disjoint sets, all classes mixed) and their class index (0..9)."""
    preprocessing = resnets.create_model("resnet18").preprocessing
    with zipfile.ZipFile(path) as archive:
        names = sorted(n for n in archive.namelist() if n.lower().endswith((".jpeg", ".jpg")))
        synsets = sorted({n.split("/")[1] for n in names})
        random.Random(0).shuffle(names)
        chosen = names[offset:offset + count]
        images = torch.stack([preprocess(decode_image(archive.read(n), source=n), preprocessing) for n in chosen])
    labels = torch.tensor([synsets.index(n.split("/")[1]) for n in chosen])
    return images, labels


def time_interleaved(functions: dict, repeats: int) -> dict[str, float]:
    """Median seconds per call of each function, measured round-robin after one warm-up."""
    for function in functions.values():
        function()
    times = {name: [] for name in functions}
    for _ in range(repeats):
        for name, function in functions.items():
            start = time.perf_counter()
            function()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def calibrate_bn(model: nn.Module, images: torch.Tensor) -> None:
    model.train()
    with torch.no_grad():
        for start in range(0, len(images), 32):
            model(images[start:start + 32])
    model.eval()


def fit_linear_probe(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, classes: int) -> None:
    """Replace the classifier with a 10-way linear layer fitted (full-batch LBFGS) on pooled features."""
    with torch.no_grad():
        features = torch.cat([model.forward_head(model.forward_features(images[i:i + 32]), pre_logits=True)
                              for i in range(0, len(images), 32)])
    mean, std = features.mean(0), features.std(0) + 1e-6
    linear = nn.Linear(features.shape[1], classes)
    optimizer = torch.optim.LBFGS(linear.parameters(), max_iter=200)
    normalized = (features - mean) / std

    def closure():
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(linear(normalized), labels) + 1e-3 * linear.weight.pow(2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    # fold the feature standardisation into the layer
    fc = nn.Linear(features.shape[1], classes)
    with torch.no_grad():
        fc.weight.copy_(linear.weight / std)
        fc.bias.copy_(linear.bias - (linear.weight * mean / std).sum(1))
    model.fc = fc
    model.num_classes = classes


def speed(args: argparse.Namespace, images: torch.Tensor) -> list[dict]:
    rows = []
    for name in args.models:
        reference = getattr(torchvision.models, name)().eval()
        calibrate_bn(reference, images[:32])  # realistic activations for the output comparison
        ours = resnets.create_model(name)
        ours.load_state_dict(reference.state_dict())
        ours.eval()
        sessions = {backend: InferenceSession(ours, backend=backend) for backend in ("torch", "onnxruntime")}
        default = InferenceSession(ours)  # backend="auto": what predict / serve / eval use
        int8 = None
        if args.int8:
            int8 = InferenceSession(ours, backend="int8", calibration=images[:args.calibration])
        for batch_size in args.batch_sizes:
            x = images[:batch_size]
            default.backend = None  # choose again for this batch size, as a fresh session would
            default.run(x)
            with torch.inference_mode():
                expected = reference(x)
            variants = {"torchvision eager": lambda: reference(x)}
            variants.update({f"ours {b}": (lambda s=s: s.run(x)) for b, s in sessions.items()})
            variants[f"ours default (auto: {default.backend})"] = lambda: default.run(x)
            if int8 is not None:
                variants["ours int8"] = lambda: int8.run(x)
            with torch.inference_mode():
                seconds = time_interleaved(variants, args.repeats)
            outputs = {"ours torch": sessions["torch"].run(x), "ours onnxruntime": sessions["onnxruntime"].run(x),
                       f"ours default (auto: {default.backend})": default.run(x)}
            if int8 is not None:
                outputs["ours int8"] = int8.run(x)
            base = seconds["torchvision eager"]
            for variant, s in seconds.items():
                diff = 0.0 if variant == "torchvision eager" else (outputs[variant] - expected).abs().max().item()
                rows.append(dict(model=name, batch=batch_size, variant=variant, images_per_s=batch_size / s,
                                 speedup=base / s, max_abs_diff=diff))
    return rows


def int8_accuracy(args: argparse.Namespace) -> dict:
    train, train_labels = load_imagenette(args.images, args.probe_train, offset=0)
    test, test_labels = load_imagenette(args.images, args.probe_test, offset=args.probe_train)
    model = resnets.create_model(args.accuracy_model).eval()
    calibrate_bn(model, train[:256])
    fit_linear_probe(model, train, train_labels, 10)
    fp32 = InferenceSession(model, backend="onnxruntime")
    int8 = InferenceSession(model, backend="int8", calibration=train[:args.calibration])
    change = accuracy_change(fp32, int8, test, test_labels)
    return dict(model=args.accuracy_model, train=len(train), test=change.images, fp32=change.fp32_top1,
                int8=change.int8_top1, change=change.change, agreement=change.agreement)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=lambda s: s.split(","), default=["resnet18", "resnet50"])
    parser.add_argument("--batch-sizes", type=lambda s: [int(v) for v in s.split(",")], default=[1, 16])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--images", type=Path, default=DEFAULT_IMAGES)
    parser.add_argument("--no-int8", dest="int8", action="store_false")
    parser.add_argument("--calibration", type=int, default=64, help="images for INT8 calibration")
    parser.add_argument("--accuracy-model", default="resnet18")
    parser.add_argument("--probe-train", type=int, default=600)
    parser.add_argument("--probe-test", type=int, default=300)
    args = parser.parse_args(argv)
    if not args.images.is_file():
        print(f"real images not found: {args.images}", file=sys.stderr)
        return 2

    print(f"# CPU inference, {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
          f"torch {torch.__version__}, {time.strftime('%Y-%m-%d')}")
    # the speed images come from the end of the shuffle, apart from the probe's training and test images
    images, _ = load_imagenette(args.images, max(max(args.batch_sizes), args.calibration, 32), offset=-200)
    rows = speed(args, images)
    print("\n| model | batch | variant | images/s | vs torchvision eager | max abs diff |")
    print("| --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['model']} | {r['batch']} | {r['variant']} | {r['images_per_s']:.1f} | {r['speedup']:.2f}x | "
              f"{r['max_abs_diff']:.2e} |")
    if args.int8:
        a = int8_accuracy(args)
        print(f"\nINT8 accuracy on real images ({a['model']}, BN calibrated and linear classifier fitted on "
              f"{a['train']} Imagenette images, evaluated on {a['test']} others):")
        print(f"fp32 top-1 {a['fp32']:.2%}, int8 top-1 {a['int8']:.2%}, change {a['change'] * 100:+.2f} points, "
              f"top-1 agreement {a['agreement']:.2%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
