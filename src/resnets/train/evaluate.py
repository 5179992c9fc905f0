"""Evaluation: loss, top-1 / top-5 accuracy and the confusion matrix over a loader."""

from __future__ import annotations

import contextlib
from typing import Callable, Iterable, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn
from ..errors import UsageError


def autocast_context(device: torch.device, amp: str):
    """bf16 / fp16 autocast on ``device``, or nothing for ``amp="off"``."""
    if amp == "off":
        return contextlib.nullcontext()
    if amp not in ("bf16", "fp16"):
        raise UsageError(f"amp must be 'bf16', 'fp16' or 'off', got {amp!r}")
    dtype = torch.bfloat16 if amp == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


@torch.no_grad()
def evaluate(model: Union[nn.Module, Callable[[torch.Tensor], torch.Tensor]],
             batches: Iterable[tuple[torch.Tensor, torch.Tensor]], num_classes: int, *,
             amp: str = "off", confusion: bool = False, device: Optional[torch.device] = None) -> dict:
    """Mean cross-entropy, top-1 and top-5 accuracy (percent) and the image count.

    ``model`` is a module (put in eval mode for the duration) or any callable from a batch
    to logits, such as an InferenceSession's ``run``. ``confusion=True`` adds ``confusion``
    (rows: true class, columns: predicted) and ``per_class_accuracy`` (percent, None for a
    class with no image).
    """
    is_module = isinstance(model, nn.Module)
    was_training = model.training if is_module else False
    if is_module:
        model.eval()
    device = device or (next(model.parameters()).device if is_module else torch.device("cpu"))
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    top1 = torch.zeros((), dtype=torch.int64, device=device)
    top5 = torch.zeros((), dtype=torch.int64, device=device)
    matrix = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=device) if confusion else None
    count = 0
    k = min(5, num_classes)
    for images, labels in batches:
        with autocast_context(device, amp):
            logits = model(images)
        logits = logits.float().to(device)
        loss_sum += F.cross_entropy(logits, labels, reduction="sum").double()
        best = logits.topk(k, dim=1).indices
        hits = best == labels[:, None]
        top1 += hits[:, 0].sum()
        top5 += hits.any(dim=1).sum()
        count += len(labels)
        if matrix is not None:
            matrix += torch.bincount(labels * num_classes + best[:, 0], minlength=num_classes ** 2).view(
                num_classes, num_classes)
    if is_module:
        model.train(was_training)
    if count == 0:
        raise UsageError("evaluation got no images")
    result = dict(loss=loss_sum.item() / count, top1=100.0 * top1.item() / count,
                  top5=100.0 * top5.item() / count, n=count)
    if matrix is not None:
        rows = matrix.cpu()
        result["confusion"] = rows.tolist()
        totals = rows.sum(1)
        result["per_class_accuracy"] = [100.0 * rows[i, i].item() / totals[i].item() if totals[i] else None
                                        for i in range(num_classes)]
    return result


def evaluate_checkpoint(model_name: str, weights: str, data: str, *, split: str = "val", batch_size: int = 256,
                        mean: Optional[Sequence[float]] = None, std: Optional[Sequence[float]] = None,
                        device: str = "cpu", confusion_png: Optional[str] = None, per_class: bool = False,
                        num_workers: Optional[int] = None, amp: str = "off", backend: Optional[str] = None) -> dict:
    """Evaluate a checkpoint (any supported format) on a split of a data source.

    Normalisation comes from ``mean``/``std``, else the checkpoint's recorded preprocessing,
    else the model's default. ``split="val"`` re-creates the validation split recorded in
    one of our checkpoints (or the default seeded split for other files).
    """
    from ..data.evaluation import build_eval_loader
    from ..factory import create_model
    model = create_model(model_name, weights=weights)
    # the file's metadata (empty for foreign formats), already read by the loader; its
    # recorded preprocessing is already on the model
    metadata = model.checkpoint_info.metadata
    mean = tuple(mean) if mean is not None else tuple(model.preprocessing.mean)
    std = tuple(std) if std is not None else tuple(model.preprocessing.std)
    if len(mean) != len(std):
        raise UsageError(f"--mean has {len(mean)} values but --std has {len(std)}")
    torch_device = torch.device(device)
    loader, classes = build_eval_loader(data, split=split, recorded_split=metadata.get("split"),
                                        seed=int(metadata.get("seed") or 0), batch_size=batch_size,
                                        device=torch_device, mean=mean, std=std, preprocessing=model.preprocessing,
                                        num_workers=num_workers)
    model_classes = getattr(model, "classes", None)
    if model_classes is not None and list(model_classes) != list(classes):
        raise UsageError(f"{weights} was trained on classes {list(model_classes)}, but {data} ({split}) has "
                         f"{list(classes)}")
    if model.num_classes != len(classes):
        raise UsageError(f"{weights} has {model.num_classes} outputs, but {data} ({split}) has {len(classes)} classes")
    model.to(torch_device)
    predictor: Union[nn.Module, Callable] = model
    if backend is not None:
        from ..deploy import InferenceSession

        predictor = InferenceSession(model, backend=backend, device=device).run
    result = evaluate(predictor, loader.epoch_batches(0), len(classes), amp=amp,
                      confusion=per_class or confusion_png is not None, device=torch_device)
    if backend is not None:
        result["backend"] = predictor.__self__.backend
    if per_class:
        result["per_class_accuracy"] = dict(zip(classes, result["per_class_accuracy"]))
    else:
        result.pop("per_class_accuracy", None)
    if confusion_png is not None:
        write_confusion_png(result["confusion"], classes, confusion_png,
                            title=f"{model_name} on {data} ({split}), top-1 {result['top1']:.2f}%")
        result["confusion_png"] = str(confusion_png)
    return result


def write_confusion_png(matrix: list, classes: Sequence[str], path: str, title: str = "") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    counts = np.asarray(matrix, dtype=np.float64)
    rows = counts / np.maximum(counts.sum(1, keepdims=True), 1)
    size = max(4.0, 0.45 * len(classes) + 2)
    figure, axis = plt.subplots(figsize=(size, size), dpi=110)
    axis.imshow(rows, cmap="Blues", vmin=0, vmax=1)
    if len(classes) <= 30:
        axis.set_xticks(range(len(classes)), classes, rotation=90, fontsize=7)
        axis.set_yticks(range(len(classes)), classes, fontsize=7)
        for i in range(len(classes)):
            for j in range(len(classes)):
                if counts[i, j]:
                    axis.text(j, i, int(counts[i, j]), ha="center", va="center", fontsize=6,
                              color="white" if rows[i, j] > 0.5 else "black")
    axis.set_xlabel("predicted")
    axis.set_ylabel("true")
    axis.set_title(title, fontsize=9)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
