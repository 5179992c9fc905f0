"""The distillation teacher's forward pass: the trained model as loaded (its BatchNorms in eval mode,
the baseline) against the teacher resnets builds from it (BatchNorms folded into the convolutions),
both in channels-last, in the same run, interleaved, with the largest logit difference between them.

    python benchmarks/teacher_forward.py                       # resnet56.cifar10, batch 128
    python benchmarks/teacher_forward.py --weights resnet20.cifar10 --repeats 7
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import resnets
from resnets.train.distill import Teacher


def images_per_s(forward, x: torch.Tensor, calls: int) -> float:
    with torch.no_grad():
        forward(x)  # warm-up
        start = time.perf_counter()
        for _ in range(calls):
            forward(x)
    return calls * len(x) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", default="resnet56.cifar10", help="named weights MODEL.TAG")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--calls", type=int, default=8, help="timed forward passes per round")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    named = resnets.get_weights(args.weights)
    model = resnets.create_model(named.model, weights=named.tag).eval().requires_grad_(False)
    prep = model.preprocessing
    teacher = Teacher(model, prep.mean, prep.std).to(torch.device("cpu"), channels_last=True)
    model = model.to(memory_format=torch.channels_last)
    x = torch.randn(args.batch_size, *prep.input_size).contiguous(memory_format=torch.channels_last)
    print(f"{named.name}, batch {args.batch_size}, {torch.get_num_threads()} threads, torch {torch.__version__}, "
          f"{time.strftime('%Y-%m-%d %H:%M')}")
    rounds: dict[str, list[float]] = {"baseline: the model as loaded (BatchNorms)": [],
                                      "resnets Teacher (BatchNorms folded)": []}
    for _ in range(args.repeats):
        rounds["baseline: the model as loaded (BatchNorms)"].append(images_per_s(model, x, args.calls))
        rounds["resnets Teacher (BatchNorms folded)"].append(images_per_s(teacher, x, args.calls))
    with torch.no_grad():
        difference = (model(x) - teacher(x)).abs().max().item()
    base = statistics.median(rounds["baseline: the model as loaded (BatchNorms)"])
    print(f"\n| {named.model} forward, batch {args.batch_size} | images/s (median of {args.repeats}) | vs baseline |")
    print("| --- | --- | --- |")
    for name, values in rounds.items():
        print(f"| {name} | {statistics.median(values):.0f} | {statistics.median(values) / base:.2f}x |")
    print(f"\nlargest logit difference: {difference:.2e}")


if __name__ == "__main__":
    main()
