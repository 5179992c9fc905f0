"""The data layer on the real CIFAR-10 and Imagenette zips from ../shared/datasets (skipped where absent)."""

import numpy as np
import torch

from resnets.data import build_loaders, resolve_source


def test_cifar10_zip_default_split(shared_datasets):
    source = resolve_source(shared_datasets / "cifar10-jpeg-train.zip")
    assert len(source) == 50000 and source.classes[0] == "airplane" and source.classes[-1] == "truck"
    assert np.bincount(source.targets).tolist() == [5000] * 10  # labels without decoding
    image = source.decode(0)
    assert image.shape == (3, 32, 32) and image.dtype == torch.uint8 and image.float().std() > 10


def test_imagenette_zip_large_pipeline(shared_datasets):
    train, val, info = build_loaders(shared_datasets / "imagenette-224-train.zip", batch_size=8, val_size=100,
                                     num_workers=0)
    assert info.pipeline == "large" and len(info.classes) == 10 and info.classes[0] == "n01440764"
    assert (info.train_size, info.val_size) == (9369, 100)
    x, y = next(train.epoch_batches(0))
    assert x.shape == (8, 3, 224, 224) and y.dtype == torch.int64
    assert -2.2 < x.min() < -1.5 and 2.0 < x.max() < 2.7  # ImageNet-normalised pixel range


def test_sample_builds_small_pipeline(tmp_path):
    train, val, info = build_loaders("sample:cifar10", batch_size=100, cache_dir=tmp_path)
    assert info.pipeline == "small" and (info.train_size, info.val_size) == (1800, 200)
    assert np.bincount(val.labels.numpy()).tolist() == [20] * 10
    # CIFAR-10 per-channel statistics, measured on the sample's training part
    assert np.allclose(info.mean, (0.49, 0.48, 0.45), atol=0.03)
