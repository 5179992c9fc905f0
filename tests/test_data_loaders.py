"""The two pipelines: augmentation, normalisation, resume contract, sharding, cache, build_loaders."""


import numpy as np
import pytest
import torch

from data_helpers import write_tree
from resnets.data import (DeviceLoader, DeviceLoaderConfig, ImageLoader, SplitMismatchError, build_loaders,
                          decode_to_tensor, resolve_source)
from resnets.errors import UsageError

MEAN, STD = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)


def _denormalise(x: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(MEAN).view(1, 3, 1, 1)
    std = torch.tensor(STD).view(1, 3, 1, 1)
    return (x * std + mean) * 255


def _images(n=40, size=8, seed=0):
    generator = torch.Generator().manual_seed(seed)
    # values in 1..255 so that zero padding is distinguishable from image content
    return torch.randint(1, 256, (n, 3, size, size), generator=generator, dtype=torch.uint8), torch.arange(n) % 4


def test_eval_batches_are_exact_normalised_images():
    images, labels = _images()
    loader = DeviceLoader(images, labels, mean=MEAN, std=STD, batch_size=16, shuffle=False, augment=False)
    batches = list(loader.epoch_batches(0))
    assert [len(x) for x, _ in batches] == [16, 16, 8]  # eval keeps every image
    x = torch.cat([b[0] for b in batches])
    y = torch.cat([b[1] for b in batches])
    assert x.dtype == torch.float32 and y.dtype == torch.int64
    assert torch.allclose(_denormalise(x), images.float(), atol=1e-3)
    assert torch.equal(y, labels)


def _recover(original: torch.Tensor, out: torch.Tensor, pad: int = 4):
    """The (dy, dx, flip) that turns ``original`` into ``out``, or None."""
    padded = torch.nn.functional.pad(original, (pad,) * 4)
    size = original.shape[-1]
    for flip in (False, True):
        for dy in range(2 * pad + 1):
            for dx in range(2 * pad + 1):
                crop = padded[:, dy:dy + size, dx:dx + size]
                if flip:
                    crop = crop.flip(-1)
                if torch.equal(crop, out):
                    return dy, dx, flip
    return None


def test_augmentation_is_pad_crop_flip_and_varies():
    images, labels = _images(n=64)
    loader = DeviceLoader(images, labels, mean=MEAN, std=STD, batch_size=32, seed=3, drop_last=True)
    seen, flips = set(), 0
    for epoch in range(2):
        for x, y in loader.epoch_batches(epoch):
            assert x.shape == (32, 3, 8, 8) and x.dtype == torch.float32
            restored = _denormalise(x).round().to(torch.uint8)
            for out, label in zip(restored, y):
                # the label tells which image it is only modulo 4: find the source by trying each candidate
                matches = [_recover(images[i], out) for i in range(int(label), 64, 4)]
                found = [m for m in matches if m is not None]
                assert found, "an augmented image is not a padded crop (or its flip) of any input"
                dy, dx, flip = found[0]
                seen.add((dy, dx))
                flips += flip
    assert len(seen) > 30  # of 81 offsets, many are used
    assert 40 < flips < 88  # about half of 128 are flipped
    # padding shows as zeros at the borders of some crops: value range is [normalised 0, normalised 255]
    x = torch.cat([x for x, _ in loader.epoch_batches(0)])
    low = (torch.tensor(0.0) - torch.tensor(MEAN)) / torch.tensor(STD)
    assert torch.isclose(x.amin((0, 2, 3)), low, atol=1e-4).all()


def test_resume_contract_and_seeding():
    images, labels = _images(n=100)
    make = lambda seed: DeviceLoader(images, labels, mean=MEAN, std=STD, batch_size=16, seed=seed)
    loader = make(7)
    full = list(loader.epoch_batches(2))
    assert len(full) == len(loader) == 7
    tail = list(make(7).epoch_batches(2, start_batch=4))  # a fresh loader, as after a restart
    assert len(tail) == 3
    for (a, la), (b, lb) in zip(full[4:], tail):
        assert torch.equal(a, b) and torch.equal(la, lb)
    again = list(loader.epoch_batches(2))
    assert all(torch.equal(a, b) for (a, _), (b, _) in zip(full, again))
    other_epoch = list(loader.epoch_batches(3))
    assert not torch.equal(full[0][1], other_epoch[0][1])
    other_seed = list(make(8).epoch_batches(2))
    assert not torch.equal(full[0][1], other_seed[0][1])
    # one epoch visits every image once
    order = torch.cat([y for _, y in DeviceLoader(images, torch.arange(100), mean=MEAN, std=STD, batch_size=16,
                                                   seed=7).epoch_batches(2)])
    assert sorted(order.tolist()) == list(range(100))
    with pytest.raises(ValueError, match="start_batch"):
        next(loader.epoch_batches(0, start_batch=99))


def test_sharding_drop_last_channels_last_dtype():
    images, _ = _images(n=50)
    ids = torch.arange(50)
    shards = [torch.cat([y for _, y in DeviceLoader(images, ids, mean=MEAN, std=STD, batch_size=8, seed=1, rank=r,
                                                      world_size=3).epoch_batches(0)]) for r in range(3)]
    assert [len(s) for s in shards] == [17, 17, 17]  # padded to equal shares
    assert set(torch.cat(shards).tolist()) == set(range(50))
    loader = DeviceLoader(images, ids, mean=MEAN, std=STD, batch_size=8, drop_last=True, channels_last=True,
                          dtype=torch.bfloat16)
    batches = list(loader)
    assert len(batches) == len(loader) == 6
    x = batches[0][0]
    assert x.dtype == torch.bfloat16 and x.is_contiguous(memory_format=torch.channels_last)
    with pytest.raises(TypeError, match="unknown DeviceLoader option"):
        DeviceLoader(images, ids, mean=MEAN, std=STD, batchsize=8)
    for options, says in ((dict(batch_size=0), "batch_size must be at least 1 and at most 1048576, got 0"),
                          (dict(random_erasing=1.5), "random_erasing must be at least 0 and at most 1, got 1.5"),
                          (dict(pad=-1), "pad must be at least 0"), (dict(batch_size=2.5), "must be an integer"),
                          (dict(rank=3, world_size=3), "rank 3 out of range for world_size 3")):
        with pytest.raises(UsageError, match=says):
            DeviceLoader(images, ids, mean=MEAN, std=STD, **options)
    # keyword options apply to a copy: a config shared by two loaders is not changed by either
    shared = DeviceLoaderConfig(batch_size=10)
    DeviceLoader(images, ids, mean=MEAN, std=STD, config=shared, shuffle=False, batch_size=25)
    assert shared.shuffle and shared.batch_size == 10


@pytest.mark.parametrize("rank, world_size", [(2, 2), (1, 1), (5, 3)])
def test_a_rank_outside_the_world_is_refused_alike_by_both_pipelines_and_the_config(rank, world_size):
    from resnets.data import DataConfig
    from resnets.data.large import ResumableSampler
    says = f"rank {rank} out of range for world_size {world_size}: give a rank from 0 to {world_size - 1}"
    images, ids = torch.zeros(4, 3, 8, 8, dtype=torch.uint8), torch.arange(4)
    for build in (lambda: DataConfig(rank=rank, world_size=world_size).check(),
                  lambda: DeviceLoader(images, ids, mean=MEAN, std=STD, rank=rank, world_size=world_size),
                  lambda: ResumableSampler(4, rank=rank, world_size=world_size)):
        with pytest.raises(UsageError) as caught:
            build()
        assert str(caught.value) == says


def test_random_erasing_erases_one_box_of_a_crop_and_keeps_the_rest():
    images, labels = _images(n=400, size=32)
    options = dict(mean=MEAN, std=STD, batch_size=100, seed=4)
    plain = torch.cat([x for x, _ in DeviceLoader(images, labels, **options).epoch_batches(1)])
    erased = torch.cat([x for x, _ in DeviceLoader(images, labels, random_erasing=0.5, **options).epoch_batches(1)])
    # the box is drawn after the crops: outside it every pixel is the un-erased loader's
    changed = (plain != erased).any(1)  # (N, H, W)
    assert torch.equal(erased.masked_fill(changed[:, None], 0), erased)
    assert torch.equal(plain.masked_fill(changed[:, None], 0), erased)
    hit = changed.flatten(1).any(1)
    assert 0.4 < hit.float().mean() < 0.6  # p = 0.5
    for mask in changed[hit]:
        rows, cols = mask.any(1).nonzero()[:, 0], mask.any(0).nonzero()[:, 0]
        height, width = len(rows), len(cols)
        # one solid rectangle (an input pixel equal to the mean could hide a cell of it, never a row)
        assert rows[-1] - rows[0] + 1 == height and cols[-1] - cols[0] + 1 == width
        assert mask.sum() >= 0.95 * height * width
        assert 0.02 * 1024 * 0.8 <= height * width <= 0.33 * 1024 * 1.2 and height < 32 and width < 32
        assert 0.3 / 1.6 <= height / width <= 3.3 * 1.6
    with pytest.raises(UsageError, match="random_erasing"):
        DeviceLoader(images, labels, random_erasing=1.5, **options)


def test_trivial_augment_and_erasing_keep_the_resume_contract():
    images, labels = _images(n=96, size=32)
    make = lambda: DeviceLoader(images, labels, mean=MEAN, std=STD, batch_size=16, seed=2, trivial_augment=True,
                                random_erasing=0.5)
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    full = list(make().epoch_batches(3))
    assert torch.equal(torch.rand(3), expected_next)  # the global generator is left as it was
    tail = list(make().epoch_batches(3, start_batch=4))
    assert all(torch.equal(a, b) and torch.equal(la, lb) for (a, la), (b, lb) in zip(full[4:], tail))
    # TrivialAugment changes most images (its identity op and a few no-op magnitudes leave some alone)
    crops = list(DeviceLoader(images, labels, mean=MEAN, std=STD, batch_size=16, seed=2,
                              random_erasing=0.5).epoch_batches(3))
    differs = torch.cat([(a != b).flatten(1).any(1) for (a, _), (b, _) in zip(full, crops)])
    assert differs.float().mean() > 0.7
    assert not torch.equal(full[0][0], list(make().epoch_batches(4))[0][0])


def test_build_loaders_passes_augmentation_options_to_the_small_pipeline(tmp_path):
    train, val, info = build_loaders("synthetic:16x16:5:200", batch_size=32, seed=1, val_size=50, cache_dir=tmp_path,
                                     trivial_augment=True, random_erasing=0.25)
    assert info.pipeline == "small"
    assert train.config.trivial_augment and train.config.random_erasing == 0.25
    assert not val.config.augment and not val.config.trivial_augment and val.config.random_erasing == 0


def test_decode_cache_hit_miss_and_invalidation(tmp_path):
    written = write_tree(tmp_path / "data", {"a": 3, "b": 3}, size=(12, 12))
    source = resolve_source(tmp_path / "data")
    cache = tmp_path / "cache"
    first = decode_to_tensor(source, cache_dir=cache)
    assert not first.from_cache and first.cache_path.is_file()
    assert torch.equal(first.images[0], torch.from_numpy(written["a/000.png"]).permute(2, 0, 1))
    second = decode_to_tensor(resolve_source(tmp_path / "data"), cache_dir=cache)
    assert second.from_cache and torch.equal(second.images, first.images)
    assert [p.name for p in (cache / "decoded").iterdir()] == [first.cache_path.name]  # no temporary files left
    write_tree(tmp_path / "data", {"a": 1}, size=(12, 12), seed=4)  # new content for a/000.png
    third = decode_to_tensor(resolve_source(tmp_path / "data"), cache_dir=cache)
    assert not third.from_cache and not torch.equal(third.images[0], first.images[0])
    # a corrupt cache file is rebuilt, not trusted
    third.cache_path.write_bytes(b"garbage")
    assert not decode_to_tensor(resolve_source(tmp_path / "data"), cache_dir=cache).from_cache


def test_build_loaders_small_auto_and_split_record(tmp_path):
    train, val, info = build_loaders("synthetic:16x16:5:200", batch_size=32, seed=1, val_size=50,
                                     cache_dir=tmp_path)
    assert info.pipeline == "small" and isinstance(train, DeviceLoader)
    assert (info.train_size, info.val_size, info.num_classes) == (150, 50, 5)
    assert np.bincount(val.labels.numpy()).tolist() == [10] * 5
    assert len(train) == 150 // 32  # drop_last for training
    x, y = next(iter(train))
    assert x.shape == (32, 3, 16, 16)
    # measured per-channel statistics make the un-augmented data zero-mean, unit-std
    xv = torch.cat([x for x, _ in val])
    assert xv.mean().abs() < 0.15 and (xv.std() - 1).abs() < 0.15
    record = info.to_dict()
    _, val2, info2 = build_loaders("synthetic:16x16:5:200", batch_size=32, seed=99, split=record["split"],
                                   cache_dir=tmp_path)
    assert torch.equal(val2.labels, val.labels) and info2.split == info.split
    with pytest.raises(SplitMismatchError):
        build_loaders("synthetic:16x16:5:201", split=record["split"], cache_dir=tmp_path)
    with pytest.raises(TypeError, match="unknown option"):
        build_loaders("synthetic:16x16:5:200", batchsize=3)


def test_build_loaders_large_pipeline(tmp_path):
    write_tree(tmp_path / "big", {"a": 10, "b": 10}, size=(80, 96))
    train, val, info = build_loaders(tmp_path / "big", batch_size=4, val_size=4, image_size=48, num_workers=0,
                                     cache_dir=tmp_path)
    assert info.pipeline == "large" and isinstance(train, ImageLoader)
    assert (info.train_size, info.val_size) == (16, 4)
    batches = list(train.epoch_batches(0))
    assert len(batches) == 4 and batches[0][0].shape == (4, 3, 48, 48)
    tail = list(train.epoch_batches(0, start_batch=2))
    assert all(torch.equal(a, b) and torch.equal(la, lb) for (a, la), (b, lb) in zip(batches[2:], tail))
    assert not torch.equal(batches[0][0], next(train.epoch_batches(1))[0])
    v1 = torch.cat([x for x, _ in val])
    v2 = torch.cat([x for x, _ in val])
    assert v1.shape == (4, 3, 48, 48) and torch.equal(v1, v2)  # evaluation is deterministic
    # the preprocessing of a model sets the size and statistics
    from resnets import create_model

    model = create_model("resnet18", num_classes=2)
    _, _, info = build_loaders(tmp_path / "big", preprocessing=model.preprocessing, num_workers=0,
                               cache_dir=tmp_path, val_size=4)
    assert info.image_size == (224, 224) and info.mean == (0.485, 0.456, 0.406)
    # forcing the small pipeline on the same data resizes every image to one size
    _, _, info = build_loaders(tmp_path / "big", pipeline="small", image_size=32, val_size=4, cache_dir=tmp_path)
    assert info.pipeline == "small" and info.image_size == (32, 32) and info.resized == 20


def test_training_crops_smaller_than_the_evaluation_size(tmp_path):
    write_tree(tmp_path / "big", {"a": 10, "b": 10}, size=(80, 96))
    train, val, info = build_loaders(tmp_path / "big", batch_size=4, val_size=4, image_size=48, train_image_size=32,
                                     num_workers=0, cache_dir=tmp_path)
    assert next(train.epoch_batches(0))[0].shape == (4, 3, 32, 32)
    assert next(iter(val))[0].shape == (4, 3, 48, 48) and info.image_size == (48, 48)
    with pytest.raises(UsageError, match="needs the large pipeline"):
        build_loaders(tmp_path / "big", pipeline="small", image_size=48, train_image_size=32, val_size=4,
                      cache_dir=tmp_path)


def test_large_pipeline_workers_resume_and_shards(tmp_path):
    write_tree(tmp_path / "big", {"a": 12, "b": 12}, size=(40, 40))
    source = resolve_source(tmp_path / "big")
    options = dict(mean=MEAN, std=STD, seed=5, batch_size=4, image_size=32, trivial_augment=True,
                   random_erasing=0.5)
    with_workers = ImageLoader(source, np.arange(24), num_workers=2, **options)
    inline = ImageLoader(source, np.arange(24), num_workers=0, **options)
    a = list(with_workers.epoch_batches(1))
    b = list(inline.epoch_batches(1, start_batch=3))
    # the same crops whatever the number of workers, and resumable mid-epoch
    assert all(torch.equal(x, y) for (x, _), (y, _) in zip(a[3:], b))
    shards = [ImageLoader(source, np.arange(24), num_workers=0, rank=r, world_size=2, **options) for r in range(2)]
    labels = [torch.cat([y for _, y in s.epoch_batches(0)]) for s in shards]
    assert len(labels[0]) == len(labels[1]) == 12
    order = [shard.sampler.order(0) for shard in shards]
    assert {i for part in order for i, _ in part} == set(range(24))


def test_large_pipeline_without_a_model_size_keeps_the_images_size(tmp_path):
    """A CIFAR-family net trained from scratch gives no input size: the large pipeline, like the small one,
    trains at the images' own size and evaluates them whole (it used to upsample them to 224 px)."""
    write_tree(tmp_path / "tiny", {"a": 12, "b": 12}, size=(32, 32))
    train, val, info = build_loaders(tmp_path / "tiny", pipeline="large", batch_size=4, val_size=4, num_workers=0,
                                     cache_dir=tmp_path)
    assert info.pipeline == "large" and info.image_size == (32, 32)
    assert next(train.epoch_batches(0))[0].shape == (4, 3, 32, 32)
    images = torch.cat([x for x, _ in val])
    assert images.shape == (4, 3, 32, 32)
    # evaluation is the whole image, normalised: the small pipeline's evaluation batches, up to its statistics
    _, small_val, small = build_loaders(tmp_path / "tiny", pipeline="small", batch_size=4, val_size=4,
                                        cache_dir=tmp_path, mean=info.mean, std=info.std)
    assert small.split == info.split
    torch.testing.assert_close(images, torch.cat([x for x, _ in small_val]), atol=1e-5, rtol=0)
