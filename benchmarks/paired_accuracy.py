"""Is one set of weights better than another on the same images, or within noise? Paired, image by image.

    python benchmarks/paired_accuracy.py resnet20 cifar10 RUN/last.safetensors \
        [--data ../shared/datasets/cifar10-jpeg-train.zip] [--split val] [--teacher-model resnet56 --teacher cifar10]

Both weights score the validation split recorded in the first one (fp32), one batch at a time. Printed: each
one's top-1, how many images only the first gets right and how many only the second, McNemar's statistic on
those two counts (the discordant pairs; chance alone moves their difference by about the square root of their
sum), and, with --teacher, how often each agrees with that network's prediction.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

DATASET = ROOT.parent / "shared" / "datasets" / "cifar10-jpeg-train.zip"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("first", help="weights (named tag, MODEL.TAG or a file): the baseline")
    parser.add_argument("second", help="weights compared with it")
    parser.add_argument("--data", default=str(DATASET))
    parser.add_argument("--split", default="val")
    parser.add_argument("--teacher-model", help="a third network whose predictions both are compared with")
    parser.add_argument("--teacher", help="its weights")
    args = parser.parse_args(argv)

    import torch

    import resnets
    from resnets.data.evaluation import build_eval_loader

    nets = [resnets.create_model(args.model, weights=w).eval() for w in (args.first, args.second)]
    if args.teacher_model:
        nets.append(resnets.create_model(args.teacher_model, weights=args.teacher).eval())
    pre = nets[0].preprocessing
    loader, _ = build_eval_loader(args.data, split=args.split, recorded_split=nets[0].checkpoint_info.metadata.get(
        "split"), mean=pre.mean, std=pre.std, preprocessing=pre)
    predictions, labels = [[] for _ in nets], []
    with torch.no_grad():
        for x, y in loader:
            for out, net in zip(predictions, nets):
                out.append(net(x).argmax(1))
            labels.append(y)
    y = torch.cat(labels)
    first, second, *teacher = [torch.cat(p) for p in predictions]
    right_a, right_b = first == y, second == y
    only_a, only_b = int((right_a & ~right_b).sum()), int((right_b & ~right_a).sum())
    mcnemar = (abs(only_a - only_b) - 1) ** 2 / (only_a + only_b) if only_a + only_b else 0.0
    print(f"{args.model} on {args.data} ({args.split}, n {len(y):,}, fp32)")
    print(f"  first  {args.first}: top-1 {100 * right_a.float().mean():.2f} %")
    print(f"  second {args.second}: top-1 {100 * right_b.float().mean():.2f} %")
    print(f"  right only with the first {only_a}, only with the second {only_b}; predictions differ on "
          f"{int((first != second).sum())}; chance scale sqrt({only_a + only_b}) = {math.sqrt(only_a + only_b):.1f} "
          f"images; McNemar chi-square {mcnemar:.2f} (3.84 is p 0.05)")
    if teacher:
        agree = [100 * (p == teacher[0]).float().mean() for p in (first, second)]
        print(f"  agreement with {args.teacher_model} {args.teacher}: first {agree[0]:.2f} %, second {agree[1]:.2f} %")
    return 0


if __name__ == "__main__":
    sys.exit(main())
