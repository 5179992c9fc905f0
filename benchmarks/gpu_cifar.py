"""CIFAR-10 with the paper's recipe (or any recipe) on a GPU: wall-clock time, training
images/s and validation accuracy for each model.

    python benchmarks/gpu_cifar.py --data carry/cifar10-jpeg-train.zip --device cuda \
        --models resnet20,resnet56,resnet110 --recipe paper-cifar --amp bf16 --channels-last --compile

For each model two runs go through the training engine: one on all 50,000 training images
(no validation split: the timed run) and one on the paper's 45k/5k split (the validation
accuracy). A tiny CPU smoke run: ``--device cpu --iterations 4 --models resnet20``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from resnets.train import TrainOptions, train


def run(model: str, args: argparse.Namespace, val_size: int, out: Path) -> tuple[dict, float]:
    start = time.perf_counter()
    row = train(TrainOptions(model=model, out=out, data=args.data, recipe=args.recipe, device=args.device,
                             iterations=args.iterations, epochs=args.epochs, val_size=val_size, amp=args.amp,
                             channels_last=args.channels_last, compile=args.compile,
                             compile_mode=args.compile_mode, evaluations=args.evaluations, progress=False))
    return row, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True)
    parser.add_argument("--models", default="resnet20,resnet56,resnet110")
    parser.add_argument("--recipe", default="paper-cifar")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--iterations", type=int)
    parser.add_argument("--epochs", type=float)
    parser.add_argument("--evaluations", type=int, default=8)
    parser.add_argument("--amp", default="bf16", choices=["bf16", "fp16", "off"])
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--compile-mode")
    parser.add_argument("--skip-timed", action="store_true", help="only the 45k/5k validation runs")
    parser.add_argument("--out", default="runs/gpu-cifar")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()

    results = []
    for model in args.models.split(","):
        entry = {"model": model, "recipe": args.recipe}
        if not args.skip_timed:
            row, seconds = run(model, args, 0, Path(args.out) / f"{model}-full-{time.strftime('%H%M%S')}")
            entry.update(full_seconds=round(seconds, 1), full_images_per_sec=row["images_per_sec"],
                         full_train_error=row["train_error"])
        row, seconds = run(model, args, 5000, Path(args.out) / f"{model}-45k-{time.strftime('%H%M%S')}")
        entry.update(split_seconds=round(seconds, 1), val_top1=row.get("val_top1"), val_n=row.get("val_n"))
        results.append(entry)
        print(json.dumps(entry), flush=True)
    print("\n| model | recipe | 50k run: time (s) | images/s | 45k/5k run: val accuracy (%) | time (s) |")
    print("| --- | --- | --- | --- | --- | --- |")
    for e in results:
        print(f"| {e['model']} | {e['recipe']} | {e.get('full_seconds', '-')} | {e.get('full_images_per_sec', '-')} | "
              f"{e['val_top1']:.2f} | {e['split_seconds']} |")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
