"""The README's explanation figure and its faithfulness numbers.

    python docs/explain/make_figure.py [--weights resnet20.cifar10] [--images 8] [--check 100]

Writes, next to this script, ``explanations.png`` (``--images`` held-out validation
images of ../shared/datasets/cifar10-jpeg-train.zip, each under its Grad-CAM and Grad-CAM++ maps,
the prediction in the title) and ``README.md`` (the faithfulness of each method on ``--check``
validation images, the same seeded shuffle: hiding the highest- versus lowest-ranked 20 % of pixels, and
versus a scattered random 20 %).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

METHODS = ("gradcam", "gradcam++")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet20")
    parser.add_argument("--weights", default="resnet20.cifar10")
    parser.add_argument("--images", type=int, default=8, help="images in the figure")
    parser.add_argument("--check", type=int, default=100, help="images the faithfulness is measured on")
    parser.add_argument("--out", default=str(HERE))
    args = parser.parse_args()

    import torch
    from explain_faithfulness import validation_batch

    import resnets
    from resnets.interpret import _pyplot, draw_overlay, explain, faithfulness, unnormalize

    out = Path(args.out)
    model = resnets.create_model(args.model, weights=args.weights)
    batch, labels = validation_batch(model, max(args.images, args.check))
    with torch.no_grad():
        probabilities = model.eval()(batch).softmax(1)
    names = model.classes or [str(i) for i in range(probabilities.shape[1])]
    maps = {m: explain(model, batch, method=m) for m in METHODS}
    checks = {m: faithfulness(model, batch[:args.check], maps[m][:args.check]) for m in METHODS}

    plt = _pyplot()
    shown = args.images
    figure, axes = plt.subplots(1 + len(METHODS), shown, figsize=(1.6 * shown, 1.75 * (1 + len(METHODS))), dpi=120)
    mean, std = model.preprocessing.mean, model.preprocessing.std
    for i in range(shown):
        p, k = probabilities[i].max(0)
        axes[0, i].imshow(unnormalize(batch[i], mean, std))
        axes[0, i].set_title(f"{names[labels[i]]}\n→ {names[int(k)]} {float(p):.0%}", fontsize=7)
        axes[0, i].axis("off")
        for row, method in enumerate(METHODS, start=1):
            check = checks[method]
            detail = (f"{check.whole[i]:.2f}→{check.top[i]:.2f} / {check.bottom[i]:.2f}" if i < args.check else "")
            draw_overlay(axes[row, i], unnormalize(batch[i], mean, std), maps[method][i], f"{method}\n{detail}")
            axes[row, i].title.set_fontsize(6)
    figure.suptitle(f"{args.model} ({args.weights}): label → prediction; maps with p(predicted), "
                    f"p with the top / bottom 20 % hidden", fontsize=8)
    figure.tight_layout()
    figure.savefig(out / "explanations.png")
    plt.close(figure)

    lines = [
        "# Explanations of a trained resnet20",
        "",
        f"Made by `python docs/explain/make_figure.py --weights {args.weights}`: {shown} images of the",
        "held-out validation split in a seeded shuffle (5,000 images carved from cifar10-jpeg-train.zip with seed 0,",
        "as the training recipes do), each with its Grad-CAM and Grad-CAM++ map for the predicted class.",
        "",
        "![explanations](explanations.png)",
        "",
        f"Faithfulness on {args.check} validation images (the same shuffle, about as many of each class): the",
        "share of images whose predicted class lost more probability when the 20 % of pixels a map ranks highest",
        "were hidden (set to the mean colour) than when the lowest-ranked 20 % were, or a scattered random 20 %;",
        "and the mean probability drops.",
        "",
        "| method | top < bottom | top < random | drop top | drop bottom | drop random |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for method, check in checks.items():
        drops = check.drops()
        lines.append(f"| {method} | {check.top_beats_bottom:.0%} | {check.top_beats_random:.0%} | {drops['top']:.3f} "
                     f"| {drops['bottom']:.3f} | {drops['random']:.3f} |")
    lines += ["", "On 32-pixel images a scattered 20 % acts as strong noise and costs more than hiding one compact",
              "region, so the random comparison is the harder one; `benchmarks/explain_faithfulness.py` measures",
              "more methods against a noise-map baseline.", ""]
    (out / "README.md").write_text("\n".join(lines))
    print("\n".join(lines[-7 - len(checks):]))


if __name__ == "__main__":
    main()
