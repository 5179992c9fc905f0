"""Deterministic, seeded, stratified train/validation splits that a run can record and re-create.

The order inside each class comes from a splitmix64 hash of (seed, index) rather than from a
library RNG, so a recorded split re-creates identically on any platform and any numpy/torch
version. ``Split.to_dict()`` is a small JSON-able record (seed, sizes, source fingerprint and a
digest of the validation indices); ``Split.from_dict(record, source)`` rebuilds it and refuses
when the data changed.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np

from ..errors import UsageError
from .sources import ImageSource

_MASK = np.uint64(0xFFFFFFFFFFFFFFFF)


def _splitmix64(values: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):  # uint64 arithmetic wraps on purpose
        z = values.astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def seeded_order(indices: np.ndarray, seed: int) -> np.ndarray:
    """``indices`` in a pseudo-random order that depends only on (seed, index)."""
    with np.errstate(over="ignore"):
        keys = _splitmix64(indices.astype(np.uint64) ^ _splitmix64(np.array([seed], dtype=np.uint64)))
    return indices[np.argsort(keys, kind="stable")]


class SplitMismatchError(UsageError):
    """A recorded split does not match the data it is applied to."""


def _digest(indices: np.ndarray) -> str:
    return hashlib.sha256(np.asarray(indices, dtype="<i8").tobytes()).hexdigest()[:16]


@dataclass
class Split:
    """Which images of a source train and which validate."""

    num_samples: int
    val_size: int
    seed: int = 0
    stratified: bool = True
    fingerprint: str = ""
    train_indices: np.ndarray = field(default=None, repr=False)
    val_indices: np.ndarray = field(default=None, repr=False)

    @property
    def train_size(self) -> int:
        return self.num_samples - self.val_size

    def to_dict(self) -> dict:
        return dict(version=1, num_samples=self.num_samples, val_size=self.val_size, seed=self.seed,
                    stratified=self.stratified, fingerprint=self.fingerprint, val_digest=_digest(self.val_indices))

    @classmethod
    def from_dict(cls, record: dict, source: ImageSource) -> "Split":
        """Re-create a recorded split on ``source``; raises :class:`SplitMismatchError` if the data changed."""
        missing = {"num_samples", "val_size", "seed", "stratified", "fingerprint", "val_digest"} - set(record)
        if missing:
            raise SplitMismatchError(f"split record lacks {sorted(missing)}; got keys {sorted(record)}")
        if record["fingerprint"] != source.fingerprint or record["num_samples"] != len(source):
            raise SplitMismatchError(
                f"the data changed since the split was recorded: {source.name} has fingerprint "
                f"{source.fingerprint[:16]} and {len(source)} images, the record {record['fingerprint'][:16]} "
                f"and {record['num_samples']}")
        split = make_split(source.targets, val_size=record["val_size"], seed=record["seed"],
                           stratified=record["stratified"], fingerprint=source.fingerprint)
        if _digest(split.val_indices) != record["val_digest"]:
            raise SplitMismatchError(f"re-created validation indices differ from the record (digest "
                                     f"{_digest(split.val_indices)} != {record['val_digest']})")
        return split


def _class_quotas(counts: np.ndarray, val_size: int) -> np.ndarray:
    # largest-remainder apportionment: each class gives val_size * n_c / n images, rounded so they sum exactly
    exact = counts * val_size / counts.sum()
    quotas = np.floor(exact).astype(np.int64)
    remainder = val_size - quotas.sum()
    order = np.lexsort((np.arange(len(counts)), -(exact - quotas)))
    quotas[order[:remainder]] += 1
    return quotas


def make_split(targets: Sequence[int], *, val_size: Optional[int] = None, val_fraction: Optional[float] = None,
               seed: int = 0, stratified: bool = True, fingerprint: str = "") -> Split:
    """Carve ``val_size`` images (or ``val_fraction`` of them) out of a labelled set.

    Stratified: every class gives its share (CIFAR-10 at val_size=5000: 500 a class).
    """
    targets = np.asarray(targets, dtype=np.int64)
    n = len(targets)
    if val_size is None:
        if val_fraction is None:
            raise UsageError("make_split needs val_size or val_fraction")
        if not 0 <= val_fraction < 1:
            raise UsageError(f"val_fraction must be in [0, 1), got {val_fraction}")
        val_size = int(round(n * val_fraction))
    if not 0 <= val_size < n:
        raise UsageError(f"val_size must be in [0, {n}) for {n} images, got {val_size}: pass a smaller --val-size")
    indices = np.arange(n, dtype=np.int64)
    if stratified and val_size > 0:
        classes = np.unique(targets)
        counts = np.array([(targets == c).sum() for c in classes])
        quotas = _class_quotas(counts, val_size)
        val = [seeded_order(indices[targets == c], seed)[:q] for c, q in zip(classes, quotas)]
        val_indices = np.sort(np.concatenate(val))
    else:
        val_indices = np.sort(seeded_order(indices, seed)[:val_size])
    mask = np.ones(n, dtype=bool)
    mask[val_indices] = False
    return Split(n, val_size, seed, stratified, fingerprint, indices[mask], val_indices)
