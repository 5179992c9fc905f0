"""Are the explanations faithful? Hide 20 % of each image's pixels three ways and compare.

    python benchmarks/explain_faithfulness.py [--weights resnet20.cifar10] [--images 100]
        [--methods gradcam,gradcam++,scorecam] [--fraction 0.2]

For N images of the held-out validation split of ../shared/datasets/cifar10-jpeg-train.zip
(the 5,000 the training recipes carve out with seed 0), each method's heatmap ranks the pixels;
hiding (setting to the mean colour) the highest-ranked 20 % should lower the predicted class's
probability more than hiding the lowest-ranked 20 %, and more than hiding a scattered random
20 %. The baseline row is a heatmap of uniform noise, which ranks pixels at random (about 50 %
on the first comparison by construction). Printed per method: the share of images where hiding
the top pixels cost more than hiding the bottom ones, and than hiding random ones; the mean
probability drop of each; seconds taken.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

DATASET = ROOT.parent / "shared" / "datasets" / "cifar10-jpeg-train.zip"


def validation_batch(model, count: int, dataset: Path = DATASET, *, val_size: int = 5000, seed: int = 0):
    """``count`` images of the seeded, stratified validation split, preprocessed for ``model``: the first of a
    seeded shuffle of it (the split itself lists images class by class, so its first hundred are all airplanes)."""
    import torch

    from resnets.data import make_split, resolve_source
    from resnets.deploy.images import preprocess

    source = resolve_source(dataset)
    split = make_split(source.targets, val_size=val_size, seed=seed)
    order = torch.randperm(len(split.val_indices), generator=torch.Generator().manual_seed(seed))
    indices = [int(split.val_indices[int(i)]) for i in order[:count]]
    labels = [int(source.targets[i]) for i in indices]
    return torch.stack([preprocess(source.decode(i), model.preprocessing) for i in indices]), labels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet20")
    parser.add_argument("--weights", default="resnet20.cifar10", help="named weights or a checkpoint path")
    parser.add_argument("--images", type=int, default=100)
    parser.add_argument("--methods", default="gradcam,gradcam++,hirescam,layercam,eigencam,scorecam")
    parser.add_argument("--fraction", type=float, default=0.2)
    parser.add_argument("--data", default=str(DATASET))
    args = parser.parse_args()

    import torch

    import resnets
    from resnets.interpret import explain, faithfulness

    torch.manual_seed(0)
    model = resnets.create_model(args.model, weights=args.weights)
    batch, labels = validation_batch(model, args.images, Path(args.data))
    with torch.no_grad():
        accuracy = (model.eval()(batch).argmax(1) == torch.tensor(labels)).float().mean().item()
    print(f"{args.model} ({args.weights}), {len(batch)} validation images (top-1 {accuracy:.1%} on them), "
          f"{args.fraction:.0%} of the pixels hidden (set to the mean colour), torch threads "
          f"{torch.get_num_threads()}\n")
    print(f"{'method':<22} {'top < bottom':>12} {'top < random':>12} {'drop top':>9} {'drop bottom':>11} "
          f"{'drop random':>11} {'seconds':>8}")
    rows = [("noise map (baseline)", None)] + [(m, m) for m in args.methods.split(",")]
    for label, method in rows:
        start = time.perf_counter()
        if method is None:
            heatmaps = torch.rand(batch.shape[0], *batch.shape[2:], generator=torch.Generator().manual_seed(1))
        else:
            heatmaps = explain(model, batch, method=method)
        seconds = time.perf_counter() - start
        result = faithfulness(model, batch, heatmaps, fraction=args.fraction)
        drops = result.drops()
        print(f"{label:<22} {result.top_beats_bottom:>12.0%} {result.top_beats_random:>12.0%} {drops['top']:>9.3f} "
              f"{drops['bottom']:>11.3f} {drops['random']:>11.3f} {seconds:>8.1f}", flush=True)


if __name__ == "__main__":
    main()
