"""Data-layer throughput on the real CIFAR-10 and Imagenette zips (../shared/datasets).

Prints, all measured in this one run:

1. images/s of the small-image pipeline (DeviceLoader: pad 4 + random 32x32 crop + flip +
   normalisation on whole batches) against the same augmentation as torchvision per-sample
   transforms in a DataLoader with workers, in two variants: images already decoded in memory
   (as torchvision.datasets.CIFAR10 holds them) and JPEG decoding per sample from the zip
   (as ImageFolder does);
2. the same with the optional augmentations, random erasing (p 0.5) and TrivialAugmentWide,
   against torchvision's RandomErasing / TrivialAugmentWide added to the in-memory baseline;
3. the share of a resnet20 training step (batch 128, CPU, eager, SGD) that data loading takes;
4. images/s of the large-image pipeline (ImageLoader, RandomResizedCrop 224 + flip) on the
   Imagenette zip, per worker.

    python benchmarks/data_throughput.py [--datasets ../shared/datasets] [--quick]
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
import zipfile
from pathlib import Path

import numpy as np
import torch

from resnets import create_model
from resnets.data import DeviceLoader, ImageLoader, build_loaders, resolve_source

ROOT = Path(__file__).resolve().parents[1]


def small_pipeline_rate(loader, epochs: int, first_epoch: int = 0) -> float:
    rates = []
    for epoch in range(first_epoch, first_epoch + epochs):
        start, count = time.perf_counter(), 0
        for images, _ in loader.epoch_batches(epoch):
            count += len(images)
        rates.append(count / (time.perf_counter() - start))
    return max(rates)


class InMemoryCifar(torch.utils.data.Dataset):
    """Decoded uint8 HWC arrays, one PIL image per item: what torchvision.datasets.CIFAR10 does."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform):
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self):
        return len(self.images)

    def __getitem__(self, index):
        from PIL import Image

        return self.transform(Image.fromarray(self.images[index])), int(self.labels[index])


class ZipJpegs(torch.utils.data.Dataset):
    """Per-sample JPEG decoding from the zip, as ImageFolder does from a folder."""

    def __init__(self, path: Path, names: list, labels: np.ndarray, transform):
        self.path, self.names, self.labels, self.transform = path, names, labels, transform
        self.archive = None

    def __len__(self):
        return len(self.names)

    def __getitem__(self, index):
        from PIL import Image

        if self.archive is None:
            self.archive = zipfile.ZipFile(self.path)
        image = Image.open(io.BytesIO(self.archive.read(self.names[index]))).convert("RGB")
        return self.transform(image), int(self.labels[index])


def baseline_rate(dataset, batch_size: int, workers: int, limit: int) -> float:
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=workers,
                                         drop_last=True, persistent_workers=False)
    iterator = iter(loader)
    next(iterator)  # worker start-up is not throughput
    start, count = time.perf_counter(), 0
    for images, _ in iterator:
        count += len(images)
        if count >= limit:
            break
    return count / (time.perf_counter() - start)


def resnet20_step_seconds(steps: int, batch_size: int = 128) -> float:
    model = create_model("resnet20", num_classes=10)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    x = torch.randn(batch_size, 3, 32, 32)
    y = torch.randint(0, 10, (batch_size,))
    times = []
    for i in range(steps + 2):
        start = time.perf_counter()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if i >= 2:  # the first steps allocate
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def measured_training_share(train, steps: int) -> tuple[float, float]:
    """Run real resnet20 steps fed by the loader; returns (data seconds, step seconds) per batch (medians)."""
    model = create_model("resnet20", num_classes=10)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    batches = train.epoch_batches(0)
    data_times, step_times = [], []
    for _ in range(steps):
        start = time.perf_counter()
        images, labels = next(batches)
        middle = time.perf_counter()
        loss = torch.nn.functional.cross_entropy(model(images), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        data_times.append(middle - start)
        step_times.append(time.perf_counter() - middle)
    return statistics.median(data_times[2:]), statistics.median(step_times[2:])


def large_pipeline_rate(path: Path, workers: int, images: int, batch_size: int = 32) -> float:
    source = resolve_source(path)
    loader = ImageLoader(source, np.arange(len(source)), mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225),
                         batch_size=batch_size, num_workers=workers, image_size=224, persistent_workers=False)
    batches = loader.epoch_batches(0)
    next(batches)  # worker start-up
    start, count = time.perf_counter(), 0
    for x, _ in batches:
        count += len(x)
        if count >= images:
            break
    return count / (time.perf_counter() - start)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", type=Path, default=ROOT.parent / "shared" / "datasets")
    parser.add_argument("--quick", action="store_true", help="fewer images and steps")
    args = parser.parse_args()
    cifar = args.datasets / "cifar10-jpeg-train.zip"
    imagenette = args.datasets / "imagenette-224-train.zip"
    if not cifar.is_file():
        print(f"CIFAR-10 zip not found at {cifar}", file=sys.stderr)
        return 1
    warnings.simplefilter("ignore", DeprecationWarning)
    limit = 2560 if args.quick else 10240
    print(f"machine: {platform.node()} {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"torch {torch.__version__}, threads {torch.get_num_threads()}")
    print(f"date: {time.strftime('%Y-%m-%d %H:%M')}; load average at start: {os.getloadavg()[0]:.2f}")

    # 1. small-image pipeline vs per-sample torchvision transforms
    with tempfile.TemporaryDirectory() as cache:
        start = time.perf_counter()
        train, _, info = build_loaders(cifar, batch_size=128, seed=0, cache_dir=cache)
        first = time.perf_counter() - start
        start = time.perf_counter()
        train, _, info = build_loaders(cifar, batch_size=128, seed=0, cache_dir=cache)
        cached = time.perf_counter() - start
    from torchvision import transforms

    augment = transforms.Compose([transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip(),
                                  transforms.ToTensor(), transforms.Normalize(info.mean, info.std)])
    images = train.images.permute(0, 2, 3, 1).contiguous().numpy()
    labels = train.labels.numpy()
    workers = min(2, os.cpu_count() or 1)
    source = resolve_source(cifar)
    # other work shares this machine: interleave the rounds so that a busy spell hits every pipeline alike
    rounds = 2 if args.quick else 3
    ours, in_memory, per_jpeg = [], [], []
    for round_ in range(rounds):
        ours.append(small_pipeline_rate(train, epochs=1, first_epoch=round_))
        in_memory.append(baseline_rate(InMemoryCifar(images, labels, augment), 128, workers, limit))
        per_jpeg.append(baseline_rate(ZipJpegs(cifar, source.files, source.targets, augment), 128, workers, limit))
    print("rounds (images/s): ours " + ", ".join(f"{r:,.0f}" for r in ours)
          + "; in-memory baseline " + ", ".join(f"{r:,.0f}" for r in in_memory)
          + "; per-JPEG baseline " + ", ".join(f"{r:,.0f}" for r in per_jpeg))
    ours, in_memory, per_jpeg = (statistics.median(r) for r in (ours, in_memory, per_jpeg))

    print("\n## small-image pipeline, CIFAR-10 zip (45,000 training images, batch 128)")
    print(f"decode once into the cache: {first:.1f} s; later builds from the cache: {cached:.1f} s")
    print("medians of the rounds:")
    print("| pipeline | images/s | vs baseline |\n| --- | --- | --- |")
    print(f"| torchvision per-sample transforms, DataLoader {workers} workers, decoded in memory | "
          f"{in_memory:,.0f} | 1.0x |")
    print(f"| torchvision per-sample transforms, DataLoader {workers} workers, JPEG decoded per sample | "
          f"{per_jpeg:,.0f} | {per_jpeg / in_memory:.2f}x |")
    print(f"| resnets DeviceLoader (whole-batch, on device) | {ours:,.0f} | {ours / in_memory:.1f}x |")

    # 2. the optional augmentations, ours against the same torchvision ops per sample (in memory)
    print("\n## optional augmentations, same data and batch (median of the rounds)")
    print("| augmentation | torchvision per sample, in memory | resnets DeviceLoader | ratio |")
    print("| --- | --- | --- | --- |")
    extra = {"random erasing p 0.5": (dict(random_erasing=0.5), [transforms.RandomErasing(p=0.5, value=0)], []),
             "TrivialAugmentWide": (dict(trivial_augment=True), [], [transforms.TrivialAugmentWide()])}
    for name, (options, after, before) in extra.items():
        loader = DeviceLoader(train.images, train.labels, mean=info.mean, std=info.std, batch_size=128, seed=0,
                              drop_last=True, **options)
        theirs = transforms.Compose([transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip(), *before,
                                     transforms.ToTensor(), transforms.Normalize(info.mean, info.std), *after])
        rates_ours, rates_theirs = [], []
        for round_ in range(rounds):
            rates_ours.append(small_pipeline_rate(loader, epochs=1, first_epoch=round_))
            rates_theirs.append(baseline_rate(InMemoryCifar(images, labels, theirs), 128, workers, limit))
        a, b = statistics.median(rates_ours), statistics.median(rates_theirs)
        print(f"| {name} | {b:,.0f} | {a:,.0f} | {a / b:.1f}x |")

    # 3. share of a resnet20 step
    steps = 10 if args.quick else 30
    data_s, step_s = measured_training_share(train, steps)
    isolated = resnet20_step_seconds(steps)
    print("\n## data share of a resnet20 training step (batch 128, CPU, eager, SGD)")
    print(f"training step (fed by the loader): {step_s * 1e3:.0f} ms ({128 / step_s:.0f} images/s); "
          f"isolated step: {isolated * 1e3:.0f} ms")
    print(f"data per batch in the loop: {data_s * 1e3:.2f} ms -> {100 * data_s / (data_s + step_s):.2f}% of a step")
    print(f"data per batch from throughput: {128 / ours * 1e3:.2f} ms -> "
          f"{100 * (128 / ours) / (128 / ours + isolated):.2f}% of a step")

    # 4. large-image pipeline per worker
    if imagenette.is_file():
        print("\n## large-image pipeline, Imagenette zip (224 px JPEG, RandomResizedCrop 224 + flip, batch 32)")
        print("| workers | images/s | images/s per worker |\n| --- | --- | --- |")
        for count in (1, 2):
            rate = large_pipeline_rate(imagenette, count, 320 if args.quick else 960)
            print(f"| {count} | {rate:,.0f} | {rate / count:,.0f} |")
    else:
        print(f"\n(Imagenette zip not found at {imagenette}; large-image pipeline not measured)")
    print(f"\nload average at end: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
