"""Embeddings: a pretrained network's pooled features (or a stage's) for every image.

``extract_features`` runs a model over batches; ``FeatureLoader`` serves cached features to
the training engine with the same resume contract as the image loaders (the order of an
epoch is a function of (seed, epoch)); ``compute_features`` / ``save_features`` are the
``resnets features`` command: every image of a source, with file names and labels, written
as ``.npy`` (plus a JSON sidecar) or ``.safetensors``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Optional, Sequence, Union

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from ..data import resolve_source
from ..data.large import ImageLoader
from ..data.loaders import loader_for
from ..data.pipeline import DataConfig
from ..data.sources import mix_seed
from .._device import resolve_device
from .._io import atomic_path
from ..errors import UsageError
from ..factory import create_model
from ..weights.named import take_weights_name
from .._precision import resolve_channels_last
from ..pretrained import load_pretrained


def _stage_output(model: nn.Module, x: torch.Tensor, stage: int) -> torch.Tensor:
    """The feature map after stage ``stage`` (0: the stem's activation, as ``out_indices``)."""
    x = model.forward_stem(x)
    if stage == 0:
        return x
    if hasattr(model, "maxpool"):
        x = model.maxpool(x)
    for name in model.stage_names[:stage]:
        x = getattr(model, name)(x)
    if stage == len(model.stage_names) and model.preact:
        x = model.final_relu(model.final_bn(x))
    return x


def check_stage(model: nn.Module, stage: Optional[int]) -> None:
    if stage is None:
        return
    count = len(model.stage_names)
    if not 0 <= stage <= count:
        raise UsageError(f"--stage {stage}: {getattr(model, 'arch', 'this model')} has stages 1..{count} "
                         f"(0: the stem)")


@torch.no_grad()
def extract_features(model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
                     stage: Optional[int] = None, pool: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """(features, labels) over ``batches``, the model in eval mode (restored afterwards).

    ``stage=None``: the globally pooled features the classifier sees (``forward_head(...,
    pre_logits=True)``); ``stage=K``: stage K's feature map, average-pooled unless ``pool=False``.
    """
    check_stage(model, stage)
    was_training = model.training
    model.eval()
    features, labels = [], []
    try:
        for images, targets in batches:
            if stage is None:
                out = model.forward_head(model.forward_features(images), pre_logits=True)
            else:
                out = _stage_output(model, images, stage)
                if pool:
                    out = out.mean(dim=(2, 3))
            features.append(out.float().cpu())
            labels.append(targets.cpu())
    finally:
        model.train(was_training)
    if not features:
        raise UsageError("no images to compute features of")
    return torch.cat(features), torch.cat(labels).to(torch.int64)


class FeatureLoader:
    """Batches of (features, labels) held in memory, shuffled per epoch from (seed, epoch),
    so ``epoch_batches(epoch, start_batch)`` resumes exactly as the image loaders do."""

    def __init__(self, features: torch.Tensor, labels: torch.Tensor, *, batch_size: int, seed: int = 0,
                 shuffle: bool = True, device: Union[str, torch.device] = "cpu"):
        if len(features) != len(labels):
            raise UsageError(f"{len(features)} feature rows but {len(labels)} labels")
        self.features = features.to(device)
        self.labels = labels.to(device)
        self.batch_size = batch_size
        self.seed = seed
        self.shuffle = shuffle

    @property
    def num_samples(self) -> int:
        return len(self.features)

    def __len__(self) -> int:
        return math.ceil(len(self.features) / self.batch_size)

    def epoch_batches(self, epoch: int, start_batch: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = len(self.features)
        order = torch.randperm(n, generator=torch.Generator().manual_seed(mix_seed(self.seed, epoch, 11))) \
            if self.shuffle else torch.arange(n)
        order = order.to(self.features.device)
        for b in range(start_batch, len(self)):
            index = order[b * self.batch_size:(b + 1) * self.batch_size]
            yield self.features[index], self.labels[index]


def cached_feature_loaders(model: nn.Module, train_loader, val_loader, path: Path, *, batch_size: int,
                           seed: int) -> tuple[FeatureLoader, Optional[FeatureLoader]]:
    """Linear probe: the frozen backbone's pooled features of the training and validation
    images, computed once (kept in ``path``, reused when a run resumes) and served as loaders."""
    if path.is_file():
        tensors = load_file(str(path))
    else:
        train_x, train_y = extract_features(model, train_loader.epoch_batches(0))
        tensors = {"train_features": train_x, "train_labels": train_y}
        if val_loader is not None:
            tensors["val_features"], tensors["val_labels"] = extract_features(model, val_loader.epoch_batches(0))
        with atomic_path(path) as tmp:
            save_file(tensors, str(tmp))
    device = next(model.parameters()).device
    train = FeatureLoader(tensors["train_features"], tensors["train_labels"], batch_size=batch_size, seed=seed,
                          device=device)
    val = None
    if "val_features" in tensors:
        val = FeatureLoader(tensors["val_features"], tensors["val_labels"], batch_size=batch_size, shuffle=False,
                            device=device)
    return train, val


# -- the ``resnets features`` command -----------------------------------------------------------


@dataclass
class Features:
    """Embeddings of every image of a source, in the source's order (bad images left out)."""

    features: torch.Tensor  # float32 (N, D)
    labels: torch.Tensor  # int64 (N,)
    files: list[str]
    classes: list[str]
    model: str
    stage: Optional[int]

    def save(self, path: Union[str, Path]) -> list[Path]:
        """``.npy`` (features) + ``<path>.json`` (files, labels, classes), or one ``.safetensors``
        (features and labels as tensors, files and classes in its metadata). Returns the paths."""
        written = feature_paths(path)  # refuses any other name
        path = written[0]
        meta = dict(model=self.model, stage=self.stage, classes=self.classes, files=self.files)
        if path.suffix == ".npy":
            # both written before either is renamed: a failure leaves the previous pair, not a new .npy beside
            # an old .json (the .json, renamed first, is only ever newer than its .npy for an instant)
            with atomic_path(path) as tmp, atomic_path(written[1]) as tmp_json:
                with open(tmp, "wb") as f:
                    np.save(f, self.features.numpy())
                tmp_json.write_text(json.dumps({**meta, "labels": self.labels.tolist()}) + "\n")
        else:
            with atomic_path(path) as tmp:
                save_file({"features": self.features.contiguous(), "labels": self.labels},
                          str(tmp), metadata={k: json.dumps(v) for k, v in meta.items()})
        return written


def feature_paths(path: Union[str, Path], *, inputs: Sequence[Optional[str]] = ()) -> list[Path]:
    """The files :meth:`Features.save` writes for ``path``; refused, before any work, where the name is not
    .npy or .safetensors or where one of them is an existing input file (the weights, the data)."""
    path = Path(path)
    if path.suffix not in (".npy", ".safetensors"):
        raise UsageError(f"--out {path}: expected a .npy or .safetensors file name")
    written = [path, path.with_suffix(".json")] if path.suffix == ".npy" else [path]
    for given in inputs:
        if given and Path(given).is_file() and any(p.exists() and p.samefile(given) for p in written):
            raise UsageError(f"--out {path} would overwrite {given}, an input of this command; choose another name")
    return written


def load_features(path: Union[str, Path]) -> Features:
    """Read back what :meth:`Features.save` wrote."""
    path = Path(path)
    if path.suffix == ".npy":
        meta = json.loads(path.with_suffix(".json").read_text())
        features = torch.from_numpy(np.load(path, allow_pickle=False))
        labels = torch.tensor(meta["labels"], dtype=torch.int64)
    else:
        with safe_open(str(path), framework="pt") as f:
            meta = {k: json.loads(v) for k, v in (f.metadata() or {}).items()}
            features, labels = f.get_tensor("features"), f.get_tensor("labels")
    return Features(features, labels, meta["files"], meta["classes"], meta["model"], meta["stage"])


def compute_features(model: Union[str, nn.Module], data: str, *, weights: Optional[str] = None,
                     stage: Optional[int] = None, batch_size: int = 64, device: str = "cpu",
                     image_size: Optional[int] = None, num_workers: Optional[int] = None,
                     bad_input: str = "skip") -> Features:
    """Embeddings of every image of ``data`` (any ``--data`` source), preprocessed as the
    weights were trained (their recorded mean/std and input size), without augmentation,
    through the loader that evaluation builds for the same data (:func:`loader_for`)."""
    device = str(resolve_device(device))  # before loading anything
    if isinstance(model, str):
        model, weights = take_weights_name(model, weights)  # MODEL.TAG: the model with those weights
        net = load_pretrained(model, weights, image_size=image_size) if weights else None
        if net is None:
            net = create_model(model)
    else:
        net = model
    net.to(device)
    # the layout training uses here, for a network built here (a module given keeps its own)
    channels_last = isinstance(model, str) and resolve_channels_last(None, torch.device(device))
    if channels_last:
        net.to(memory_format=torch.channels_last)
    check_stage(net, stage)
    source = resolve_source(data, "train", bad_input=bad_input)
    if len(source) == 0:
        raise UsageError(f"{data}: no images")
    prep = net.preprocessing
    config = DataConfig(batch_size=batch_size, device=device, image_size=image_size, preprocessing=prep,
                        mean=tuple(prep.mean), std=tuple(prep.std), augment=False, num_workers=num_workers,
                        bad_input=bad_input, channels_last=channels_last)
    loader, rows = loader_for(source, config, train=False)
    batches = loader.epoch_batches(0)
    features, labels = extract_features(net, batches, stage=stage)
    if isinstance(loader, ImageLoader) and loader.skipped:
        # the large pipeline drops undecodable images from their batches, in order
        rows = np.asarray([i for i in rows if source.image_id(int(i)) not in loader.skipped], dtype=np.int64)
    files = [source.image_id(int(i)) for i in rows]
    return Features(features, labels, files, list(source.classes), 
                    getattr(net, "arch", None) or type(net).__name__, stage)
