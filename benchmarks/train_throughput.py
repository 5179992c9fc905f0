"""Training throughput, end to end including data: the resnets engine with its defaults
(``--amp auto``: bf16 where the CPU or GPU computes bf16 natively, else fp32; channels-last) against
a plain eager fp32 PyTorch loop fed by a torchvision DataLoader with per-sample transforms (the
baseline), and the same loop in channels-last, with bf16 autocast where the CPU has bf16 units,
written by hand (the strongest plain-PyTorch peer), in the same run. Target: the engine's default
at least 2.5x the baseline.

    python benchmarks/train_throughput.py                      # resnet20, batch 128, CIFAR-10
    python benchmarks/train_throughput.py --model resnet56 --iterations 20

Both sides train the same architecture on the same decoded CIFAR-10 images (from
../shared/datasets/cifar10-jpeg-train.zip, else the sample shipped with the package) with the
same augmentation (pad 4 + random crop + flip, normalisation) and SGD. Each side runs
2 x ITERATIONS steps and is timed over the second half, so start-up and warm-up are
excluded; sides alternate for --repeats rounds and the median is reported.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

import resnets
from resnets.data import build_loaders
from resnets.train import TrainOptions, train
from resnets._precision import native_bf16, resolve_amp, resolve_channels_last

SHARED_ZIP = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "cifar10-jpeg-train.zip"


class InMemoryImages(Dataset):
    """Decoded images in memory handed out as PIL images, as torchvision.datasets.CIFAR10 does."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform):
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int):
        return self.transform(Image.fromarray(self.images[index])), int(self.labels[index])


def baseline(model_name: str, images: np.ndarray, labels: np.ndarray, mean, std, batch_size: int, iterations: int,
             workers: int, bf16: bool = False, channels_last: bool = False) -> float:
    """A plain eager loop: DataLoader workers doing per-sample torchvision transforms; ``bf16`` and
    ``channels_last``: with bf16 autocast and in channels-last, as a user who knows the CPU would write it."""
    transform = transforms.Compose([transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip(),
                                    transforms.ToTensor(), transforms.Normalize(mean, std)])
    loader = DataLoader(InMemoryImages(images, labels, transform), batch_size=batch_size, shuffle=True,
                        num_workers=workers, drop_last=True, persistent_workers=workers > 0)
    torch.manual_seed(0)
    model = resnets.create_model(model_name, num_classes=10).train()
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    steps, start = 0, None
    while steps < 2 * iterations:
        for x, y in loader:
            optimizer.zero_grad(set_to_none=True)
            if channels_last:
                x = x.to(memory_format=torch.channels_last)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                logits = model(x)
            F.cross_entropy(logits.float(), y).backward()
            optimizer.step()
            steps += 1
            if steps == iterations:
                start = time.perf_counter()
            if steps == 2 * iterations:
                break
    return iterations * batch_size / (time.perf_counter() - start)


def ours(model_name: str, data: str, batch_size: int, iterations: int, **flags) -> float:
    """The resnets engine; its reported images/s over the second half of the run."""
    with tempfile.TemporaryDirectory() as run_dir:
        row = train(TrainOptions(model=model_name, out=Path(run_dir) / "run", data=data, iterations=2 * iterations,
                                 batch_size=batch_size, evaluations=2, val_size=500, progress=False,
                                 log=io.StringIO(), **flags))
    return row["images_per_sec"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="resnet20")
    parser.add_argument("--data", default=str(SHARED_ZIP) if SHARED_ZIP.exists() else "sample:cifar10")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--iterations", type=int, default=30, help="timed steps (after as many warm-up steps)")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers of the baseline")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--compile", action="store_true", help="also measure the engine with torch.compile")
    args = parser.parse_args()

    # the same decoded images for both sides (decoded once, then from the cache)
    train_loader, _, info = build_loaders(args.data, batch_size=args.batch_size, val_size=500, seed=0)
    images = train_loader.images.permute(0, 2, 3, 1).contiguous().numpy()
    labels = train_loader.labels.numpy()
    print(f"data: {info.source}, {len(images)} training images; model {args.model}, batch {args.batch_size}, "
          f"{torch.get_num_threads()} threads, {os.cpu_count()} cores")

    amp = resolve_amp("auto", torch.device("cpu"))
    layout = ", channels-last" if resolve_channels_last(None, torch.device("cpu")) else ""
    variants = {f"resnets engine, default ({'fp32' if amp == 'off' else amp}{layout})": {},
                "resnets engine, fp32, contiguous": {"amp": "off", "channels_last": False}}
    if args.compile:
        variants["resnets engine, default + torch.compile"] = {"compile": True}
    base_name = "baseline: eager fp32 loop + DataLoader"
    peer_bf16 = native_bf16(torch.device("cpu"))  # emulated bf16 is slower than fp32: no user would pick it
    peer_name = f"peer: eager {'bf16' if peer_bf16 else 'fp32'} + channels-last loop + DataLoader"
    results: dict[str, list[float]] = {base_name: [], peer_name: [], **{k: [] for k in variants}}
    for round_index in range(args.repeats):
        results[base_name].append(
            baseline(args.model, images, labels, info.mean, info.std, args.batch_size, args.iterations, args.workers))
        results[peer_name].append(
            baseline(args.model, images, labels, info.mean, info.std, args.batch_size, args.iterations, args.workers,
                     bf16=peer_bf16, channels_last=True))
        for name, flags in variants.items():
            results[name].append(ours(args.model, args.data, args.batch_size, args.iterations, **flags))
        print(f"round {round_index + 1}: " + ", ".join(f"{k} {v[-1]:.0f}" for k, v in results.items()), flush=True)

    base = statistics.median(results[base_name])
    print(f"\n| {args.model}, batch {args.batch_size} | images/s (median of {args.repeats}) | vs baseline |")
    print("| --- | --- | --- |")
    for name, values in results.items():
        value = statistics.median(values)
        print(f"| {name} | {value:.0f} | {value / base:.2f}x |")


if __name__ == "__main__":
    main()
