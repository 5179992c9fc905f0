"""Transfer learning on real images: pretrain on five CIFAR-10 classes, fine-tune on the other five.

    python benchmarks/transfer_experiment.py [--work runs/transfer] [--pretrain-iterations 2000]

1. Split the CIFAR-10 JPEG zip (../shared/datasets/cifar10-jpeg-train.zip) by class:
   ``pretrain.zip`` holds every training image of airplane, automobile, bird, cat and deer
   (25,000); ``small.zip`` holds 300 seeded images a class of dog, frog, horse, ship and truck.
2. Pretrain resnet20 on ``pretrain.zip`` with the paper's CIFAR recipe, shortened.
3. On ``small.zip`` carve a stratified held-out set of 200 images a class (1,000), leaving
   100 labelled images a class (500) for training, and train four ways on the same split and
   budget: linear probe, full fine-tuning, gradual unfreezing (all from the pretrained weights)
   and training from scratch.
4. Print one table: held-out accuracy of each, with the pretraining run's own accuracy.

Every stage resumes: a finished run directory is read back instead of trained again.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import zipfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

PRETRAIN_CLASSES = ("airplane", "automobile", "bird", "cat", "deer")
TRANSFER_CLASSES = ("dog", "frog", "horse", "ship", "truck")


def split_zip(source: Path, out: Path, classes: tuple[str, ...], per_class: int | None, seed: int) -> Path:
    """Copy the members of ``classes`` (all, or ``per_class`` seeded ones a class) into a new zip."""
    if out.exists():
        return out
    rng = np.random.default_rng(seed)
    with zipfile.ZipFile(source) as archive:
        names = [n for n in archive.namelist() if not n.endswith("/")]
        tmp = out.with_suffix(".tmp")
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as target:
            for cls in classes:
                members = sorted(n for n in names if n.split("/")[-2] == cls)
                if per_class is not None:
                    members = sorted(rng.choice(members, size=per_class, replace=False).tolist())
                for name in members:
                    target.writestr(f"train/{cls}/{name.rsplit('/', 1)[1]}", archive.read(name))
        tmp.rename(out)
    return out


def finished(run: Path) -> dict | None:
    from resnets.train import read_metrics

    if not (run / "config.json").exists():
        return None
    rows = read_metrics(run)
    config = json.loads((run / "config.json").read_text())
    total = config["recipe"].get("iterations")
    return rows[-1] if rows and total is not None and rows[-1]["step"] >= total else None


def pretrain(work: Path, data: Path, iterations: int) -> dict:
    from resnets.train import TrainOptions, train

    run = work / "pretrain"
    done = finished(run)
    if done is not None:
        return done
    options = TrainOptions(model="resnet20", out=run, data=str(data), recipe="paper-cifar", iterations=iterations,
                           val_size=1000, evaluations=4, seed=0, progress=False, resume=run.exists())
    return train(options)


def transfer_runs(work: Path, small: Path, pretrained: Path, seed: int, iterations: int | None) -> dict[str, dict]:
    """The four ways of training on the small set: same split (seeded), same recipe and length."""
    from resnets.train import TrainOptions, train
    from resnets.transfer import FinetuneOptions, finetune

    common = dict(data=str(small), val_size=1000, seed=seed, evaluations=5, progress=False, iterations=iterations)
    results = {}
    for name in ("linear-probe", "full", "gradual"):
        run = work / f"seed{seed}" / name
        results[name] = finished(run) or finetune(FinetuneOptions(
            "resnet20", weights=str(pretrained), out=run, strategy=name, resume=run.exists(), **common))
    for lr in (0.01, 0.1):
        run = work / f"seed{seed}" / f"scratch-lr{lr}"
        results[f"scratch-lr{lr}"] = finished(run) or train(TrainOptions(
            model="resnet20", out=run, recipe="finetune", lr=lr, resume=run.exists(), **common))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", default=str(ROOT.parent / "shared" / "datasets" / "cifar10-jpeg-train.zip"))
    parser.add_argument("--work", default=str(ROOT / "runs" / "transfer"))
    parser.add_argument("--pretrain-iterations", type=int, default=2000)
    parser.add_argument("--stage", choices=["pretrain", "all"], default="all")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="one split and run per seed")
    # 500 training images make 7 batches of 64 an epoch: 210 iterations are the finetune recipe's 30 epochs
    parser.add_argument("--iterations", type=int, default=210, help="length of each run on the small set")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(2)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    source = Path(args.source)
    start = time.perf_counter()
    pretrain_zip = split_zip(source, work / "pretrain.zip", PRETRAIN_CLASSES, None, seed=0)
    small_zip = split_zip(source, work / "small.zip", TRANSFER_CLASSES, 300, seed=1)
    print(f"data ready in {time.perf_counter() - start:.1f} s: {pretrain_zip}, {small_zip}", flush=True)
    result = pretrain(work, pretrain_zip, args.pretrain_iterations)
    print(f"pretraining: held-out top-1 {result.get('val_top1', float('nan')):.2f}% "
          f"({time.perf_counter() - start:.0f} s so far)", flush=True)
    if args.stage == "pretrain":
        return
    pretrained = work / "pretrain" / "last.safetensors"
    table = {}
    for seed in args.seeds:
        table[seed] = transfer_runs(work, small_zip, pretrained, seed, args.iterations)
        print(f"seed {seed}: " + ", ".join(f"{k} {v['val_top1']:.1f}%" for k, v in table[seed].items())
              + f" ({time.perf_counter() - start:.0f} s so far)", flush=True)
    names = list(next(iter(table.values())))
    length = next(iter(table.values()))["full"]["step"]
    print(f"\nresnet20, pretrained on {', '.join(PRETRAIN_CLASSES)} ({result['step']} iterations, "
          f"held-out top-1 {result['val_top1']:.2f}% on 1,000 images of those classes)")
    print(f"transfer to {', '.join(TRANSFER_CLASSES)}: 100 labelled images a class, {length} iterations of 64, "
          f"held-out top-1 on 200 images a class (1,000), at the end of the run\n")
    print("| training | " + " | ".join(f"seed {s}" for s in args.seeds) + " | mean |")
    print("| --- | " + " | ".join("---" for _ in args.seeds) + " | --- |")
    for name in names:
        values = [table[s][name]["val_top1"] for s in args.seeds]
        print(f"| {name} | " + " | ".join(f"{v:.1f}%" for v in values) + f" | {np.mean(values):.1f}% |")
    (work / "results.json").write_text(json.dumps({str(k): v for k, v in table.items()}, indent=2))


if __name__ == "__main__":
    main()
