"""Evaluation: loss, top-1 / top-5 accuracy and the confusion matrix over a loader."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Optional, Union

import torch
import torch.nn.functional as F
from torch import nn

from ._precision import autocast_context
from .errors import UsageError
from .results import Result


@dataclass
class Scores(Result):
    """What :func:`evaluate` measures: mean cross-entropy, top-1 and top-5 accuracy (percent) and the image
    count; with ``confusion=True`` the confusion matrix (rows: true class, columns: predicted) and each class's
    accuracy (percent, None for a class with no image)."""

    loss: float
    top1: float
    top5: float
    n: int
    confusion: Optional[list] = None
    per_class_accuracy: Optional[list] = None


@torch.no_grad()
def evaluate(model: Union[nn.Module, Callable[[torch.Tensor], torch.Tensor]],
             batches: Iterable[tuple[torch.Tensor, torch.Tensor]], num_classes: int, *,
             amp: str = "off", confusion: bool = False, device: Optional[torch.device] = None) -> Scores:
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
    result = Scores(loss=loss_sum.item() / count, top1=100.0 * top1.item() / count,
                    top5=100.0 * top5.item() / count, n=count)
    if matrix is not None:
        rows = matrix.cpu()
        totals = rows.sum(1)
        result.confusion = rows.tolist()
        result.per_class_accuracy = [100.0 * rows[i, i].item() / totals[i].item() if totals[i] else None
                                     for i in range(num_classes)]
    return result
