"""``resnets eval``: trained weights (any supported format) scored on a data split, through
the plain model or an inference session (BN folded; ONNX Runtime, OpenVINO; fp32, bf16, int8).
Through a session at bf16 or int8 the result also holds the fp32 model's top-1 on the same
images and the share of identical top-1 predictions (``precision_check``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Sequence, Union

import numpy as np
import torch
from torch import nn

from .._device import resolve_device
from .._io import check_png_path, save_png
from .._precision import resolve_amp, resolve_channels_last, warn_if_emulated
from ..data.evaluation import build_eval_loader
from ..data.sources import resolve_source
from ..errors import UsageError
from ..factory import create_model
from ..scoring import Scores, evaluate
from .calibration import AccuracyCheck, compare_top1
from .session import InferenceSession, SessionConfig, check_finite


HELD_OUT_SPLITS = ("test", "val/", "valid/", "validation/")  # a source's own held-out part, in order of preference


def choose_split(recorded_split: Optional[dict], data) -> tuple[str, str, object]:
    """``split="auto"``: the recorded validation split when ``data`` is the data the weights were
    trained on (same fingerprint and size as the split recorded in them); otherwise (a test folder,
    a peer's checkpoint, our weights on new data) the source's own held-out split where it has one
    (CIFAR's test batch, ``root/test/``, else a ``root/val/`` folder as ImageNet's and Imagenette's
    layouts have), else every image. Returns the split, why, and the source."""
    source = resolve_source(data, "train")
    if recorded_split and recorded_split.get("fingerprint") == source.fingerprint \
            and recorded_split.get("num_samples") == len(source):
        return "val", "the weights were trained on this data", source
    why = "the weights record no training split" if not recorded_split else \
        "the data is not the files whose split the weights record"
    for split in HELD_OUT_SPLITS:
        try:
            return split, why, resolve_source(data, split.rstrip("/"))
        except (UsageError, FileNotFoundError):
            continue
    # every image: some may be pictures the weights were trained on (CIFAR-10's training images in other files)
    return "all", (f"{why}, and the data has no held-out split: every image is scored, and those the weights may "
                   f"have been trained on make it no held-out score"), source


@dataclass(kw_only=True)
class Evaluation(Scores):
    """What :func:`evaluate_checkpoint` (``resnets eval``) measures and on what: the scores, the split and why
    it was chosen, the precision computed in; ``to_dict()`` is ``resnets eval --json``'s object."""

    per_class_accuracy: Optional[dict] = None  # by class name, with ``per_class``
    amp: str
    channels_last: bool
    split: str
    split_reason: str
    num_classes: int
    data_classes: list
    backend: Optional[str] = None
    precision: Optional[str] = None
    precision_check: Optional[dict] = None
    refused: Optional[dict] = None
    confusion_png: Optional[str] = None


def evaluate_checkpoint(model_name: str, weights: str, data: str, *, split: str = "auto", batch_size: int = 256,
                        mean: Optional[Sequence[float]] = None, std: Optional[Sequence[float]] = None,
                        device: str = "cpu", confusion_png: Optional[str] = None, per_class: bool = False,
                        num_workers: Optional[int] = None, amp: str = "auto", backend: Optional[str] = None,
                        precision: Optional[str] = None, calibration: Optional[str] = None,
                        cache_exports: bool = False) -> Evaluation:
    """Evaluate a checkpoint (any supported format) on a split of a data source.

    Normalisation comes from ``mean``/``std``, else the checkpoint's recorded preprocessing,
    else the model's default. ``split="auto"`` (the default) is the recorded validation split when
    ``data`` is what the weights were trained on, else the source's own test split where it has one,
    else every image (:func:`choose_split`);
    ``"val"`` re-creates the validation split recorded in one of our checkpoints (or carves the
    default seeded split for other files); ``"all"`` is every image; another name is the
    source's own split of that name (``test``; ``"val/"`` is a folder named ``val``, as opposed to the
    carved split). The result says which in ``split``, ``split_reason`` and ``n``.

    ``backend`` or ``precision`` evaluates through an InferenceSession; ``calibration`` (a data
    source or folder, needed by int8 and auto) gives it the images to quantise and check on;
    ``cache_exports`` keeps its ONNX export for later calls (see ``export_cache``).

    Where the weights record class names, the data's classes are matched to them by name: a folder
    holding only some of them (``cat/``, ``ship/``) is scored against all of the weights' classes
    (``data_classes`` in the result lists the data's); a class the weights do not know is refused.
    """
    torch_device = resolve_device(device)  # before loading anything
    if confusion_png is not None:
        check_png_path(confusion_png, "--confusion")
    if precision is not None and backend is None:
        backend = "auto"
    precision = precision or "fp32"
    model = create_model(model_name, weights=weights)
    # the file's metadata (empty for foreign formats), already read by the loader; its
    # recorded preprocessing is already on the model
    metadata = model.checkpoint_info.metadata
    mean = tuple(mean) if mean is not None else tuple(model.preprocessing.mean)
    std = tuple(std) if std is not None else tuple(model.preprocessing.std)
    channels = model.preprocessing.input_size[0]
    if len(mean) != channels or len(std) != channels:
        raise UsageError(f"--mean and --std need {channels} values each (one per input channel of "
                         f"{model_name}), got {len(mean)} and {len(std)}")
    if not all(0 < v < float("inf") for v in std):
        raise UsageError(f"--std values must be positive, got {','.join(f'{v:g}' for v in std)}")
    amp = resolve_amp(amp, torch_device) if backend is None else "off"  # a session runs its own precision
    warn_if_emulated(amp, torch_device)
    # the layout training uses on this device (a session prepares its own)
    channels_last = backend is None and resolve_channels_last(None, torch_device)
    source: Union[str, object] = data
    reason = "asked for"
    if split == "auto":
        split, reason, source = choose_split(metadata.get("split"), data)
    loader, classes = build_eval_loader(source, split=split, recorded_split=metadata.get("split"),
                                        seed=int(metadata.get("seed") or 0), batch_size=batch_size,
                                        device=torch_device, mean=mean, std=std, preprocessing=model.preprocessing,
                                        num_workers=num_workers, channels_last=channels_last)
    # the names a checkpoint recorded are its training folders; named weights' display names
    # ("tench") are not compared with a data set's folder names ("n01440764")
    model_classes = model.checkpoint_info.classes
    data_classes, label_map = list(classes), None
    if model_classes is not None and list(model_classes) != data_classes:
        # a folder of some of the classes (a few test photos of cats and ships) is scored by name against all
        # of the weights' classes; a class the weights never saw has no right answer to score
        unknown = [c for c in data_classes if c not in model_classes]
        if unknown:
            raise UsageError(f"{data} ({split}) has {len(unknown)} class(es) that {weights} was not trained on: "
                             f"{unknown[:10]}{' ...' if len(unknown) > 10 else ''}; name its class folders as the "
                             f"weights' classes: {list(model_classes)}")
        classes = list(model_classes)
        label_map = torch.tensor([classes.index(c) for c in data_classes], device=torch_device)
    if model.num_classes != len(classes):
        raise UsageError(f"{weights} has {model.num_classes} outputs, but {data} ({split}) has {len(classes)} classes")
    model.to(torch_device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    predictor: Union[nn.Module, Callable] = model
    session = None
    if backend is not None:
        config = SessionConfig(backend=backend, precision=precision, device=str(torch_device),
                               cache_exports=cache_exports)
        session = InferenceSession(model, calibration=calibration, config=config)
        predictor = session.run
    batches = loader.epoch_batches(0)
    if label_map is not None:  # the data's class indices as the weights' indices
        batches = ((images, label_map[labels]) for images, labels in batches)
    if session is not None and session.config.precision != "fp32":
        predictor, batches, compared = _compared_with_fp32(session, model, batches)
    model.eval()  # evaluate() sets it for a module; the check below hands it a function
    scores = evaluate(_finite(predictor), batches, len(classes), amp=amp,
                      confusion=per_class or confusion_png is not None, device=torch_device)
    result = Evaluation(**{**scores.to_dict(), "per_class_accuracy": None}, amp=amp, channels_last=channels_last,
                        split=split, split_reason=reason, num_classes=len(classes), data_classes=data_classes)
    if session is not None:
        result.backend, result.precision = session.backend, session.precision
        if session.config.precision != "fp32":
            result.precision_check = compared().to_dict()
        if session.refused:
            result.refused = session.refused
    if per_class:
        result.per_class_accuracy = dict(zip(classes, scores.per_class_accuracy))
    if confusion_png is not None:
        write_confusion_png(scores.confusion, classes, confusion_png,
                            title=f"{model_name} on {data} ({split}), top-1 {scores.top1:.2f}%")
        result.confusion_png = str(confusion_png)
    return result


def _finite(predictor: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[torch.Tensor], torch.Tensor]:
    """``predictor`` refusing logits that are NaN or infinite (damaged weights) rather than scoring them."""
    def checked(images: torch.Tensor) -> torch.Tensor:
        return check_finite(predictor(images))
    return checked


def _compared_with_fp32(session: InferenceSession, model: nn.Module, batches):
    """A predictor and batches that also record fp32's and the session's top-1 classes and the
    labels, and a function giving the AccuracyCheck once the evaluation has run."""
    fp32, chosen, labels = [], [], []

    def predictor(images: torch.Tensor) -> torch.Tensor:
        logits = session.run(images)
        with torch.inference_mode():
            fp32.append(model(images).argmax(1).cpu())
        chosen.append(logits.argmax(1))
        return logits.to(images.device)

    def recorded():
        for images, targets in batches:
            labels.append(targets.cpu())
            yield images, targets

    def compared() -> AccuracyCheck:
        return compare_top1(session.precision, session.backend, torch.cat(fp32), torch.cat(chosen), torch.cat(labels))

    return predictor, recorded(), compared


def write_confusion_png(matrix: list, classes: Sequence[str], path: str, title: str = "") -> None:
    import matplotlib  # deferred: matplotlib costs a second to import and only figures need it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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
    save_png(figure, path)
    plt.close(figure)
