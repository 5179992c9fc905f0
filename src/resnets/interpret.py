"""Explanations: which pixels a classifier's decision rests on, and whether the map is faithful.

``explain`` computes class activation maps with the maintained ``grad-cam`` package
(``pip install "resnets[explain]"``; Grad-CAM, Grad-CAM++, Score-CAM, ...) at the layer each of
our families should be explained at: the last feature map before global pooling, i.e. the
output of the last block (post-activation nets: basic, bottleneck, CIFAR, plain) or of the
final BN-ReLU (pre-activation nets, whose last block's output is not yet normalised).

``faithfulness`` checks a map instead of trusting it: hiding (setting to the mean colour) the
pixels the map ranks highest should lower the target class's probability more than hiding the
lowest-ranked ones, and more than hiding the same number of scattered random pixels.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np
import torch
from torch import nn

from ._io import atomic_path, atomic_write_text, save_png
from .errors import UsageError, check_number, require

# method name -> the class of pytorch_grad_cam that computes it
METHODS = {
    "gradcam": "GradCAM",
    "gradcam++": "GradCAMPlusPlus",
    "hirescam": "HiResCAM",
    "xgradcam": "XGradCAM",
    "layercam": "LayerCAM",
    "eigencam": "EigenCAM",
    "eigengradcam": "EigenGradCAM",
    "scorecam": "ScoreCAM",
    "ablationcam": "AblationCAM",
}
DEFAULT_FRACTION = 0.2  # the share of pixels hidden by the faithfulness check


def _grad_cam():
    return require("pytorch_grad_cam", "an explanation")  # deferred: the optional 'explain' extra (grad-cam)


def target_layer(model: nn.Module) -> nn.Module:
    """The module whose output ``explain`` attributes: the feature map global pooling reads.

    Post-activation networks (basic, bottleneck, CIFAR, plain): the last block of the last
    stage, whose output is already BN-ReLU'd. Pre-activation networks: ``final_relu``, since
    their last block adds an un-normalised residual and the 2016 paper's final BN-ReLU follows.
    """
    stages = getattr(model, "stage_names", None)
    if not stages or not hasattr(model, "fc"):
        raise UsageError(f"explain: {type(model).__name__} is not a resnets classifier (a features_only model or "
                         f"another network); pass target_layer= the module whose feature map to explain")
    if getattr(model, "preact", False):
        return model.final_relu
    return getattr(model, stages[-1])[-1]


def _check_batch(batch: torch.Tensor) -> None:
    if not isinstance(batch, torch.Tensor) or batch.dim() != 4:
        shape = tuple(batch.shape) if isinstance(batch, torch.Tensor) else type(batch).__name__
        raise UsageError(f"explain: batch must be a preprocessed (N, C, H, W) tensor, got {shape}")


def _targets(model: nn.Module, batch: torch.Tensor, targets: Union[None, int, Sequence[int], torch.Tensor]
             ) -> list[int]:
    if targets is None:
        with torch.no_grad():
            return model(batch).argmax(1).tolist()
    if isinstance(targets, int):
        targets = [targets] * len(batch)
    targets = [int(t) for t in (targets.tolist() if isinstance(targets, torch.Tensor) else targets)]
    if len(targets) != len(batch):
        raise UsageError(f"explain: {len(targets)} targets for {len(batch)} images")
    num_classes = getattr(model, "num_classes", None)
    bad = [t for t in targets if t < 0 or (num_classes and t >= num_classes)]
    if bad:
        raise UsageError(f"explain: target classes {bad} are outside 0..{(num_classes or 1) - 1}")
    return targets


def explain(model: nn.Module, batch: torch.Tensor, targets: Union[None, int, Sequence[int], torch.Tensor] = None,
            method: str = "gradcam", *, layer: Optional[nn.Module] = None) -> torch.Tensor:
    """One heatmap per image at the input's resolution, (N, H, W) in [0, 1], higher = more
    important for the target class.

    ``batch`` is preprocessed as the model expects (``model.preprocessing``). ``targets``: a class
    per image (or one for all); None explains each image's predicted class. ``method`` is one of
    METHODS (``gradcam``, ``gradcam++``, ``scorecam``, ...); ``layer`` overrides the target layer
    (default: :func:`target_layer`). The model is evaluated in eval mode and left as it was.
    """
    if method not in METHODS:
        raise UsageError(f"explain: unknown method {method!r}; choose one of {', '.join(METHODS)}")
    _check_batch(batch)
    cam_library = _grad_cam()
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    layer = layer if layer is not None else target_layer(model)
    was_training = model.training
    model.eval()
    try:
        classes = _targets(model, batch, targets)
        # the gradient methods need a graph even where the weights are frozen
        inputs = batch.detach().clone().requires_grad_(True)
        with getattr(cam_library, METHODS[method])(model=model, target_layers=[layer]) as cam:
            maps = cam(input_tensor=inputs, targets=[ClassifierOutputTarget(c) for c in classes])
    finally:
        model.train(was_training)
    return torch.from_numpy(np.ascontiguousarray(maps, dtype=np.float32))


@dataclass
class Faithfulness:
    """The target class's probability on each image, whole and with ``fraction`` of its pixels hidden:
    the highest-ranked (``top``), the lowest-ranked (``bottom``) or scattered random ones (``random``)."""

    targets: list[int]
    whole: list[float]
    top: list[float]
    bottom: list[float]
    random: list[float]
    fraction: float

    @property
    def top_beats_bottom(self) -> float:
        """Share of images whose probability fell more with the top pixels hidden than with the bottom ones."""
        return float(np.mean(np.asarray(self.top) < np.asarray(self.bottom)))

    @property
    def top_beats_random(self) -> float:
        """Share of images whose probability fell more with the top pixels hidden than with random ones."""
        return float(np.mean(np.asarray(self.top) < np.asarray(self.random)))

    def drops(self) -> dict[str, float]:
        """Mean fall of the target probability for each way of hiding."""
        whole = np.asarray(self.whole)
        return {name: float(np.mean(whole - np.asarray(getattr(self, name)))) for name in ("top", "bottom", "random")}

    def to_dict(self) -> dict:
        return {"fraction": self.fraction, "images": len(self.whole), "top_beats_bottom": self.top_beats_bottom,
                "top_beats_random": self.top_beats_random, "mean_drop": self.drops(), "targets": self.targets,
                "whole": self.whole, "top": self.top, "bottom": self.bottom, "random": self.random}


def hide_masks(heatmaps: torch.Tensor, fraction: float = DEFAULT_FRACTION, *, seed: int = 0
               ) -> dict[str, torch.Tensor]:
    """Boolean (N, H, W) masks of the ``fraction`` of pixels ranked highest (``top``) and lowest
    (``bottom``) by each heatmap, and of as many pixels drawn at random (``random``). Ties are
    broken at random, so that a flat region of a map is not hidden in reading order."""
    if not 0 < fraction < 1:
        raise UsageError(f"faithfulness: fraction must be in (0, 1), got {fraction}")
    n, height, width = heatmaps.shape
    pixels = height * width
    count = max(1, int(round(fraction * pixels)))
    generator = torch.Generator().manual_seed(seed)
    masks = {name: torch.zeros(n, pixels, dtype=torch.bool) for name in ("top", "bottom", "random")}
    for i, heat in enumerate(heatmaps.reshape(n, pixels).float().cpu()):
        shuffle = torch.randperm(pixels, generator=generator)
        order = shuffle[torch.argsort(heat[shuffle], stable=True)]  # ascending, ties in random order
        masks["bottom"][i, order[:count]] = True
        masks["top"][i, order[-count:]] = True
        masks["random"][i, torch.randperm(pixels, generator=generator)[:count]] = True
    return {name: mask.reshape(n, height, width) for name, mask in masks.items()}


def faithfulness(model: nn.Module, batch: torch.Tensor, heatmaps: torch.Tensor,
                 targets: Union[None, int, Sequence[int], torch.Tensor] = None, *,
                 fraction: float = DEFAULT_FRACTION, seed: int = 0) -> Faithfulness:
    """How the target class's probability changes when the pixels a heatmap ranks highest, lowest,
    or at random are hidden, ``fraction`` of them each time.

    Hidden pixels are set to the mean colour, which in a batch normalised by the model's
    preprocessing is 0 in every channel. ``targets`` default to the predicted classes.
    """
    _check_batch(batch)
    if tuple(heatmaps.shape) != (batch.shape[0], *batch.shape[2:]):
        raise UsageError(f"faithfulness: heatmaps of shape {tuple(heatmaps.shape)} do not match the batch "
                         f"{tuple(batch.shape)}; expected {(batch.shape[0], *batch.shape[2:])}")
    was_training = model.training
    model.eval()
    try:
        classes = _targets(model, batch, targets)
        index = torch.arange(len(batch))
        masks = hide_masks(heatmaps, fraction, seed=seed)
        with torch.no_grad():
            def probability(images: torch.Tensor) -> list[float]:
                return model(images).float().softmax(1)[index, classes].tolist()

            whole = probability(batch)
            hidden = {name: probability(batch.masked_fill(mask[:, None].to(batch.device), 0.0))
                      for name, mask in masks.items()}
    finally:
        model.train(was_training)
    return Faithfulness(targets=classes, whole=whole, fraction=fraction, **hidden)


# -- figures -------------------------------------------------------------------------------------


def unnormalize(image: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """A normalised (C, H, W) tensor back to an (H, W, C) array in [0, 1] for display."""
    mean_t = torch.tensor(mean, dtype=torch.float32)[:, None, None]
    std_t = torch.tensor(std, dtype=torch.float32)[:, None, None]
    pixels = (image.detach().float().cpu() * std_t + mean_t).clamp(0, 1)
    return pixels.permute(1, 2, 0).numpy()


def draw_overlay(axis, image: np.ndarray, heatmap: torch.Tensor, title: str = "", alpha: float = 0.5) -> None:
    """The image with the heatmap over it (jet colours, ``alpha``) on a matplotlib axis."""
    axis.imshow(image if image.shape[-1] == 3 else image[..., 0], cmap=None if image.shape[-1] == 3 else "gray")
    axis.imshow(heatmap.cpu().numpy(), cmap="jet", alpha=alpha, vmin=0.0, vmax=1.0)
    axis.set_title(title, fontsize=8)
    axis.axis("off")


def _pyplot():
    import matplotlib  # deferred: matplotlib costs a second to import and only figures need it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _class_name(model: nn.Module, index: int) -> str:
    classes = getattr(model, "classes", None)
    return classes[index] if classes and index < len(classes) else str(index)


def output_names(paths: Sequence[Path]) -> list[str]:
    """One distinct output name per image: its stem, with its folder's name where stems repeat, and its
    extension (then a number) where that still repeats (a.jpg and a.png; the same name under two roots)."""
    names = [p.stem for p in paths]
    if len(set(names)) != len(names):
        names = [f"{p.parent.name}_{p.stem}" for p in paths]
    if len(set(names)) != len(names):
        names = [f"{name}_{p.suffix.lstrip('.')}" for name, p in zip(names, paths)]
    seen: dict[str, int] = {}
    unique = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        unique.append(name if seen[name] == 1 else f"{name}_{seen[name]}")
    return unique


HEATMAP_SUFFIX = ".heatmap.npy"


def explain_images(model: nn.Module, batch: torch.Tensor, names: Sequence[str], out: Union[str, Path], *,
                   method: str = "gradcam", top_k: int = 3, targets=None,
                   fraction: float = DEFAULT_FRACTION) -> list[dict]:
    """Explain a batch and write, for each image, ``NAME.png`` (the image under its heatmap, the
    top classes in the title), ``NAME.heatmap.npy`` (the heatmap's numbers at input resolution, float32 in
    [0, 1]) and ``NAME.json`` (predictions, target, faithfulness, and the .npy file's name under
    ``heatmap``). Returns the JSON records."""
    if len(names) != len(batch):
        raise UsageError(f"explain_images: {len(names)} names for {len(batch)} images")
    repeated = sorted({name for name in names if list(names).count(name) > 1})
    if repeated:  # one image's figure would replace another's
        raise UsageError(f"explain_images: the name {repeated[0]!r} is given to more than one image; "
                         f"output_names(paths) gives distinct ones")
    check_number("top_k", top_k, 1)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    heatmaps = explain(model, batch, targets, method)
    check = faithfulness(model, batch, heatmaps, targets, fraction=fraction)
    with torch.no_grad():
        was_training = model.training
        probabilities = model.eval()(batch).float().softmax(1)
        model.train(was_training)
    preprocessing = model.preprocessing
    plt = _pyplot()
    records = []
    for i, name in enumerate(names):
        values, indices = probabilities[i].topk(min(top_k, probabilities.shape[1]))
        top = [{"index": int(k), "name": _class_name(model, int(k)), "probability": float(p)}
               for p, k in zip(values, indices)]
        title = ", ".join(f"{t['name']} {t['probability']:.0%}" for t in top)
        figure, axis = plt.subplots(figsize=(3.2, 3.4), dpi=100)
        draw_overlay(axis, unnormalize(batch[i], preprocessing.mean, preprocessing.std), heatmaps[i],
                     f"{title}\n{method} for {_class_name(model, check.targets[i])}")
        figure.tight_layout()
        save_png(figure, out / f"{name}.png")
        plt.close(figure)
        record = {"image": name, "method": method, "target": {"index": check.targets[i],
                                                               "name": _class_name(model, check.targets[i])},
                  "predictions": top,
                  "faithfulness": {"fraction": fraction, "whole": check.whole[i], "top_hidden": check.top[i],
                                   "bottom_hidden": check.bottom[i], "random_hidden": check.random[i]},
                  # the map's numbers beside the record, as .npy (float32, input resolution): a few kilobytes of
                  # JSON instead of hundreds; np.load(out / record["heatmap"]) reads it
                  "heatmap": f"{name}{HEATMAP_SUFFIX}", "heatmap_shape": list(heatmaps[i].shape)}
        with atomic_path(out / f"{name}{HEATMAP_SUFFIX}", keep_suffix=True) as tmp:
            np.save(tmp, heatmaps[i].float().numpy())
        atomic_write_text(out / f"{name}.json", json.dumps(record))
        records.append(record)
    return records


__all__ = ["DEFAULT_FRACTION", "Faithfulness", "HEATMAP_SUFFIX", "METHODS", "draw_overlay", "explain", "explain_images",
           "faithfulness", "hide_masks", "target_layer", "unnormalize"]
