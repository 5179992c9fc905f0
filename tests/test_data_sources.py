"""Sources and splits: CIFAR pickles, folders, zips, synthetic data, the packaged sample."""

import json
import warnings
import zipfile

import numpy as np
import pytest
import torch

from data_helpers import write_cifar, write_tree, zip_tree
from resnets.data import (FileTreeSource, Split, SplitMismatchError, SyntheticSource, TensorSource, make_split,
                          resolve_source, sample_path)


@pytest.mark.parametrize("kind", ["cifar10", "cifar100"])
def test_cifar_pickles_archive_and_folder(tmp_path, kind):
    archive, expected = write_cifar(tmp_path, kind)
    for spec in (archive, tmp_path, next(p for p in tmp_path.iterdir() if p.is_dir())):
        for split in ("train", "test"):
            source = resolve_source(spec, split)
            images, labels = expected[split]
            assert isinstance(source, TensorSource)
            assert len(source.classes) == (10 if kind == "cifar10" else 100)
            assert source.classes[3] == ("c3" if kind == "cifar10" else "f3")
            assert np.array_equal(source.targets, labels)
            assert torch.equal(source.images_tensor(), torch.from_numpy(images))
            assert torch.equal(source.decode(7), torch.from_numpy(images[7]))
    # the fingerprint is of the content: archive and folder agree, train and test differ
    assert resolve_source(archive).fingerprint == resolve_source(tmp_path).fingerprint
    assert resolve_source(archive).fingerprint != resolve_source(archive, "test").fingerprint
    with pytest.raises(ValueError, match="'val'"):
        resolve_source(archive, "val")


def test_folder_flat_and_split_layouts(tmp_path):
    warnings.simplefilter("error")  # a clean tree warns about nothing
    written = write_tree(tmp_path / "flat", {"dog": 3, "cat": 2})
    source = resolve_source(tmp_path / "flat")
    assert isinstance(source, FileTreeSource) and source.kind == "folder"
    assert source.classes == ["cat", "dog"]  # sorted: labels follow folder names
    assert source.targets.tolist() == [0, 0, 1, 1, 1]
    assert torch.equal(source.decode(2), torch.from_numpy(written["dog/000.png"]).permute(2, 0, 1))
    with pytest.raises(ValueError, match="no split folders"):
        resolve_source(tmp_path / "flat", "val")

    write_tree(tmp_path / "split" / "train", {"a": 2, "b": 2}, seed=1)
    write_tree(tmp_path / "split" / "val", {"a": 1, "b": 1}, seed=2)
    assert len(resolve_source(tmp_path / "split", "train")) == 4
    assert len(resolve_source(tmp_path / "split", "val")) == 2
    with pytest.raises(ValueError, match="no 'test' folder"):
        resolve_source(tmp_path / "split", "test")


def test_zip_read_in_place_matches_folder(tmp_path):
    warnings.simplefilter("error")
    written = write_tree(tmp_path / "tree" / "train", {"x": 2, "y": 3})
    # a wrapping top folder, as a zip of a folder usually has
    archive = zip_tree(tmp_path / "tree", tmp_path / "data.zip", prefix="mydata/")
    source = resolve_source(archive)
    assert source.kind == "zip" and source.classes == ["x", "y"] and source.targets.tolist() == [0, 0, 1, 1, 1]
    assert torch.equal(source.decode(4), torch.from_numpy(written["y/002.png"]).permute(2, 0, 1))
    assert "data.zip:" in source.image_id(0)
    # changing one member's bytes changes the fingerprint (CRC-32 of each member)
    before = source.fingerprint
    write_tree(tmp_path / "tree" / "train", {"x": 1}, seed=9)
    assert resolve_source(zip_tree(tmp_path / "tree", tmp_path / "data2.zip", prefix="mydata/")).fingerprint != before


def test_folder_fingerprint_follows_content(tmp_path):
    write_tree(tmp_path, {"a": 2, "b": 2})
    first = resolve_source(tmp_path).fingerprint
    assert resolve_source(tmp_path).fingerprint == first
    write_tree(tmp_path, {"b": 3}, seed=5)  # one image more, others rewritten
    assert resolve_source(tmp_path).fingerprint != first


def test_synthetic_spec():
    source = resolve_source("synthetic:24x16:7:50")
    assert isinstance(source, SyntheticSource)
    assert len(source) == 50 and source.num_classes == 7 and source.image_size == (24, 16)
    image = source.decode(3)
    assert image.shape == (3, 24, 16) and image.dtype == torch.uint8
    assert torch.equal(image, resolve_source("synthetic:24x16:7:50").decode(3))  # reproducible
    assert not torch.equal(image, resolve_source("synthetic:24x16:7:50:1").decode(3))  # the seed matters
    assert torch.equal(source.images_tensor()[3], image)
    assert resolve_source("synthetic:1x8x8:2:4").decode(0).shape == (1, 8, 8)
    # classes differ in colour, so the data is learnable
    images = source.images_tensor().float()
    means = torch.stack([images[source.targets == c].mean((0, 2, 3)) for c in range(7)])
    assert (means.max(0).values - means.min(0).values).max() > 20
    for bad in ("synthetic:32:10:5", "synthetic:32x32:0:5", "synthetic:axb:1:1"):
        with pytest.raises(ValueError, match="synthetic"):
            resolve_source(bad)


def test_unknown_path_names_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        resolve_source(tmp_path / "nowhere")
    (tmp_path / "x.bin").write_bytes(b"12345")
    with pytest.raises(ValueError, match="x.bin"):
        resolve_source(tmp_path / "x.bin")


def test_packaged_sample():
    path = sample_path()
    assert path.stat().st_size < 4_000_000
    source = resolve_source("sample:cifar10")
    assert len(source) == 2000
    assert source.classes == ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    assert np.bincount(source.targets).tolist() == [200] * 10
    assert source.decode(0).shape == (3, 32, 32)
    with zipfile.ZipFile(path) as archive:
        assert all(n.startswith("train/") and n.endswith(".jpg") for n in archive.namelist())


# ------------------------------------------------------------------------------------------ splits


def test_split_cifar_default_is_stratified_45000_5000():
    targets = np.repeat(np.arange(10), 5000)
    split = make_split(targets, val_fraction=0.1, seed=0)
    assert (split.train_size, split.val_size) == (45000, 5000)
    assert np.bincount(targets[split.val_indices]).tolist() == [500] * 10
    assert np.intersect1d(split.train_indices, split.val_indices).size == 0
    assert np.array_equal(np.sort(np.concatenate([split.train_indices, split.val_indices])), np.arange(50000))
    again = make_split(targets, val_size=5000, seed=0)
    assert np.array_equal(again.val_indices, split.val_indices)  # deterministic
    other = make_split(targets, val_size=5000, seed=1)
    assert np.intersect1d(other.val_indices, split.val_indices).size < 1000  # the seed matters
    # the recorded order is a function of (seed, index) only: pinned so a change of algorithm is caught
    assert split.to_dict()["val_digest"] == make_split(targets, val_size=5000, seed=0).to_dict()["val_digest"]


def test_split_imbalanced_classes_sum_exactly():
    targets = np.array([0] * 7 + [1] * 13 + [2] * 80)
    split = make_split(targets, val_size=11, seed=3)
    counts = np.bincount(targets[split.val_indices], minlength=3)
    assert counts.sum() == 11 and counts[2] in (8, 9) and counts[0] in (0, 1) and counts[1] in (1, 2)
    unstratified = make_split(targets, val_size=11, seed=3, stratified=False)
    assert unstratified.val_size == 11
    with pytest.raises(ValueError, match="val_size"):
        make_split(targets, val_size=100)


def test_split_record_round_trip_and_refusal(tmp_path):
    source = resolve_source("synthetic:8x8:4:100")
    split = make_split(source.targets, val_size=20, seed=5, fingerprint=source.fingerprint)
    record = json.loads(json.dumps(split.to_dict()))
    again = Split.from_dict(record, source)
    assert np.array_equal(again.val_indices, split.val_indices)
    assert np.array_equal(again.train_indices, split.train_indices)
    with pytest.raises(SplitMismatchError, match="data changed"):
        Split.from_dict(record, resolve_source("synthetic:8x8:4:101"))
    with pytest.raises(SplitMismatchError, match="digest"):
        Split.from_dict(dict(record, val_digest="0" * 16), source)
    with pytest.raises(SplitMismatchError, match="lacks"):
        Split.from_dict({"seed": 1}, source)
