"""ResNet-50 training and inference throughput at 224 px: the resnets engine against a plain
eager loop around the same model, measured in the same run.

    python benchmarks/resnet50_throughput.py --device cuda --amp bf16 --batch-size 256 \
        --imagenette carry/imagenette-224-train.zip

Training: synthetic images held on the device (model speed) and, with --imagenette, real
JPEGs through the large-image pipeline (decoding included). Inference: images/s at
--batch-size in eval mode. A tiny CPU smoke run: ``--device cpu --batch-size 4 --steps 3
--image-size 64``.
"""

from __future__ import annotations

import argparse
import io
import os
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

import resnets
from resnets.train import TrainOptions, train
from resnets._precision import autocast_context


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def eager_baseline(args, device: torch.device, amp: str, channels_last: bool = False) -> float:
    """The plain loop: eager model, SGD, autocast as asked, one synthetic batch reused; ``channels_last``:
    model and batch in that layout, as a user who knows the hardware writes it."""
    model = resnets.create_model(args.model).to(device).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    x = torch.randn(args.batch_size, 3, args.image_size, args.image_size, device=device)
    if channels_last:
        model, x = model.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 1000, (args.batch_size,), device=device)
    for step in range(2 * args.steps):
        if step == args.steps:
            sync(device)
            start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        with autocast_context(device, amp):
            loss = F.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
    sync(device)
    return args.steps * args.batch_size / (time.perf_counter() - start)


def engine(args, data: str, pipeline: str) -> float:
    with tempfile.TemporaryDirectory() as out:
        row = train(TrainOptions(model=args.model, out=Path(out) / "run", data=data, recipe="paper-imagenet",
                                 device=args.device, iterations=2 * args.steps, batch_size=args.batch_size,
                                 evaluations=2, val_size=args.batch_size, amp=args.amp,
                                 channels_last=args.channels_last, compile=args.compile, pipeline=pipeline,
                                 num_workers=args.workers, progress=False, log=io.StringIO()))
    return row["images_per_sec"]


@torch.no_grad()
def inference(args, device: torch.device) -> float:
    model = resnets.create_model(args.model).to(device).eval()
    x = torch.randn(args.batch_size, 3, args.image_size, args.image_size, device=device)
    if args.channels_last:
        model, x = model.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
    net = torch.compile(model) if args.compile else model
    for step in range(2 * args.steps):
        if step == args.steps:
            sync(device)
            start = time.perf_counter()
        with autocast_context(device, args.amp):
            net(x)
    sync(device)
    return args.steps * args.batch_size / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="resnet50")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--steps", type=int, default=30, help="timed steps, after as many warm-up steps")
    parser.add_argument("--amp", default="bf16", choices=["bf16", "fp16", "off"])
    parser.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--imagenette", help="the Imagenette zip, for the real-data pipeline")
    parser.add_argument("--workers", type=int, default=min(16, os.cpu_count() or 1))
    args = parser.parse_args()
    device = torch.device(args.device)
    size = args.image_size
    rows = [("plain eager loop, fp32", eager_baseline(args, device, "off")),
            (f"plain eager loop, {args.amp}", eager_baseline(args, device, args.amp)),
            (f"plain eager loop, {args.amp}, channels-last",
             eager_baseline(args, device, args.amp, channels_last=True)),
            ("resnets engine, synthetic on device",
             engine(args, f"synthetic:{size}x{size}:1000:{4 * args.batch_size}", "small"))]
    if args.imagenette:
        rows.append(("resnets engine, Imagenette JPEGs", engine(args, args.imagenette, "large")))
    rows.append((f"inference, batch {args.batch_size}", inference(args, device)))
    print(f"\n| {args.model}, {size} px, batch {args.batch_size}, {args.amp}, {device} | images/s |")
    print("| --- | --- |")
    for name, value in rows:
        print(f"| {name} | {value:.0f} |")


if __name__ == "__main__":
    main()
