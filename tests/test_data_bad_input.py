"""Bad input: converted, skipped and named in a warning, or refused, never a crash inside a worker."""

import os

import numpy as np
import pytest
import torch

from data_helpers import encode, random_rgb, write_tree
from resnets.data import BadImageError, BadInputWarning, ImageLoader, build_loaders, decode_bytes, resolve_source

GOOD_PER_CLASS = 4


@pytest.fixture
def messy(tmp_path):
    """A tree with every kind of awkward file, plus 4 good images in each of classes a and b."""
    root = tmp_path / "messy"
    write_tree(root, {"a": GOOD_PER_CLASS, "b": GOOD_PER_CLASS}, size=(16, 16))
    rng = np.random.default_rng(1)
    rgb = random_rgb(rng, (16, 16))
    jpeg = encode(rgb, "JPEG")
    (root / "a" / "truncated.jpg").write_bytes(jpeg[: len(jpeg) // 3])
    (root / "a" / "empty.jpg").write_bytes(b"")
    (root / "a" / "notes.txt").write_text("not an image")
    (root / "b" / "fake.jpg").write_bytes(b"this is text with an image extension")
    # convertible: grayscale, CMYK, RGBA, 16-bit
    (root / "b" / "gray.png").write_bytes(encode(rgb, "PNG", mode="L"))
    (root / "b" / "cmyk.jpg").write_bytes(encode(rgb, "JPEG", mode="CMYK"))
    (root / "b" / "rgba.png").write_bytes(encode(rgb, "PNG", mode="RGBA"))
    sixteen = np.full((16, 16), 100 * 256 + 17, dtype=np.uint16)
    (root / "b" / "deep.png").write_bytes(encode(sixteen, "PNG"))
    return root


BAD = {"truncated.jpg", "empty.jpg", "notes.txt", "fake.jpg"}
CONVERTED = 4


def test_conversions_to_rgb_uint8():
    rng = np.random.default_rng(0)
    rgb = random_rgb(rng, (10, 12))
    gray = decode_bytes(encode(rgb, "PNG", mode="L"), "g.png")
    assert gray.shape == (3, 10, 12) and torch.equal(gray[0], gray[1])
    rgba = decode_bytes(encode(rgb, "PNG", mode="RGBA"), "a.png")
    assert torch.equal(rgba, torch.from_numpy(rgb).permute(2, 0, 1))  # alpha dropped, colours kept
    cmyk = decode_bytes(encode(rgb, "JPEG", mode="CMYK", quality=95), "c.jpg")
    assert cmyk.shape == (3, 10, 12) and (cmyk.float() - torch.from_numpy(rgb).permute(2, 0, 1)).abs().mean() < 20
    deep = decode_bytes(encode(np.full((4, 4), 100 * 256 + 17, dtype=np.uint16), "PNG"), "d.png")
    assert deep.dtype == torch.uint8 and deep.shape == (3, 4, 4) and int(deep[0, 0, 0]) == 100
    bmp = decode_bytes(encode(rgb, "BMP"), "x.bmp")  # not a torchvision format: read through Pillow
    assert torch.equal(bmp, torch.from_numpy(rgb).permute(2, 0, 1))
    for data, reason in ((b"", "zero-byte"), (b"plain text", "not an image"), (encode(rgb, "JPEG")[:100], "decode")):
        with pytest.raises(BadImageError, match=reason) as error:
            decode_bytes(data, "some/file.jpg")
        assert error.value.path == "some/file.jpg"


def test_small_pipeline_skips_and_names_bad_files(messy, tmp_path):
    with pytest.warns(BadInputWarning) as record:
        train, val, info = build_loaders(messy, pipeline="small", image_size=16, val_size=2, batch_size=4,
                                         cache_dir=tmp_path / "cache")
    text = " ".join(str(w.message) for w in record)
    for name in BAD:
        assert name in text  # every skipped file is named
    assert sorted(p.rsplit("/", 1)[-1] for p, _ in info.skipped) == sorted(BAD)
    assert info.train_size + info.val_size == 2 * GOOD_PER_CLASS + CONVERTED
    x, _ = next(iter(train))
    assert x.shape == (4, 3, 16, 16) and torch.isfinite(x).all()
    # from the cache, the same files are reported again
    with pytest.warns(BadInputWarning) as record:
        _, _, again = build_loaders(messy, pipeline="small", image_size=16, val_size=2, cache_dir=tmp_path / "cache")
    assert "truncated.jpg" in " ".join(str(w.message) for w in record)
    assert again.from_cache and len(again.skipped) == len(info.skipped)


def test_policy_error_refuses_with_the_file_named(messy, tmp_path):
    with pytest.raises(BadImageError, match="notes.txt|empty.jpg"):
        build_loaders(messy, pipeline="small", bad_input="error", cache_dir=tmp_path)
    # with only decode failures left, the decoder names the file
    for name in ("notes.txt", "empty.jpg"):
        (messy / "a" / name).unlink()
    with pytest.raises(BadImageError, match="truncated.jpg|fake.jpg"):
        build_loaders(messy, pipeline="small", bad_input="error", cache_dir=tmp_path)
    with pytest.raises(ValueError, match="bad_input"):
        build_loaders(messy, bad_input="ignore")


def test_large_pipeline_workers_never_crash(messy):
    with pytest.warns(BadInputWarning, match="notes.txt"):  # found without decoding
        source = resolve_source(messy)
    assert {p.rsplit("/", 1)[-1] for p, _ in source.skipped} == {"notes.txt", "empty.jpg"}
    options = dict(mean=(0.5,) * 3, std=(0.25,) * 3, batch_size=4, image_size=16, num_workers=2,
                   persistent_workers=False)
    loader = ImageLoader(source, np.arange(len(source)), **options)
    with pytest.warns(BadInputWarning) as record:
        batches = list(loader.epoch_batches(0))
    text = " ".join(str(w.message) for w in record)
    assert "truncated.jpg" in text and "fake.jpg" in text
    assert sum(len(y) for _, y in batches) == 2 * GOOD_PER_CLASS + CONVERTED
    assert {p.rsplit("/", 1)[-1] for p in loader.skipped} == {"truncated.jpg", "fake.jpg"}
    strict = ImageLoader(source, np.arange(len(source)), bad_input="error", **options)
    with pytest.raises(BadImageError, match="truncated.jpg|fake.jpg"):  # raised in the main process, clearly
        list(strict.epoch_batches(0))


def test_empty_class_folder(tmp_path):
    write_tree(tmp_path, {"a": 2, "c": 2})
    (tmp_path / "b").mkdir()
    with pytest.warns(BadInputWarning, match=r"\['b'\]"):
        source = resolve_source(tmp_path)
    assert source.classes == ["a", "b", "c"] and source.targets.tolist() == [0, 0, 2, 2]  # labels stay aligned
    with pytest.raises(ValueError, match=r"empty class folder.*\['b'\]"):
        resolve_source(tmp_path, bad_input="error")


def test_train_and_validation_classes_must_match(tmp_path):
    write_tree(tmp_path / "train", {"cat": 2, "dog": 2})
    write_tree(tmp_path / "val", {"cat": 1, "fox": 1}, seed=1)
    with pytest.raises(ValueError, match=r"classes differ: only in train: \['dog'\]; only in validation: \['fox'\]"):
        build_loaders(tmp_path, val_source=tmp_path, cache_dir=tmp_path / "cache")
    write_tree(tmp_path / "val", {"dog": 1}, seed=2)
    (tmp_path / "val" / "fox" / "000.png").unlink()
    (tmp_path / "val" / "fox").rmdir()
    _, val, info = build_loaders(tmp_path, val_source=tmp_path, cache_dir=tmp_path / "cache", batch_size=2)
    assert info.val_size == 2 and info.train_size == 4 and info.split["val_size"] == 0


def _skipped_names(source) -> dict:
    return {path.rsplit("/", 1)[-1]: reason for path, reason in source.skipped}


def test_symlink_loops_are_skipped_and_named(tmp_path):
    write_tree(tmp_path, {"a": 2, "b": 2}, size=(8, 8))
    os.symlink("..", tmp_path / "a" / "up")  # back to the data root
    os.symlink(".", tmp_path / "b" / "self")
    os.symlink("x2.png", tmp_path / "a" / "x1.png")  # two file links pointing at each other
    os.symlink("x1.png", tmp_path / "a" / "x2.png")
    with pytest.warns(BadInputWarning) as record:
        source = resolve_source(tmp_path)
    assert source.classes == ["a", "b"] and source.targets.tolist() == [0, 0, 1, 1]
    skipped = _skipped_names(source)
    assert skipped == {"up": "symlink loop: leads back to the data root", "self": "symlink loop: leads back to b",
                       "x1.png": "symlink loop", "x2.png": "symlink loop"}
    text = " ".join(str(w.message) for w in record)
    assert "skipped 4 file(s)" in text and all(f"{name} (symlink loop" in text for name in skipped)
    with pytest.raises(BadImageError, match="symlink loop"):
        resolve_source(tmp_path, bad_input="error")


def test_dangling_symlinks_are_skipped_and_named(tmp_path):
    write_tree(tmp_path, {"a": 2, "b": 2}, size=(8, 8))
    os.symlink(tmp_path / "nowhere.png", tmp_path / "a" / "gone.png")
    os.symlink(tmp_path / "no-folder", tmp_path / "c")  # a class folder whose target is gone
    with pytest.warns(BadInputWarning, match="gone.png"):
        source = resolve_source(tmp_path)
    assert source.classes == ["a", "b"] and len(source) == 4
    assert _skipped_names(source) == {"gone.png": f"dangling symlink to {tmp_path / 'nowhere.png'}",
                                      "c": f"dangling symlink to {tmp_path / 'no-folder'}"}
    assert all(source.decode(i).shape == (3, 8, 8) for i in range(len(source)))


def test_names_that_are_not_utf8_are_skipped_and_named(tmp_path):
    write_tree(tmp_path / "data", {"a": 2, "b": 2}, size=(8, 8))
    image = (tmp_path / "data" / "a" / "000.png").read_bytes()
    root = os.fsencode(tmp_path / "data")
    with open(root + b"/a/caf\xe9.png", "wb") as handle:  # Latin-1 é, as an old archive might hold
        handle.write(image)
    os.mkdir(root + b"/c\xff")
    with open(root + b"/c\xff/000.png", "wb") as handle:
        handle.write(image)
    with pytest.warns(BadInputWarning) as record:
        train, val, info = build_loaders(tmp_path / "data", pipeline="small", image_size=8, val_size=2,
                                         batch_size=2, cache_dir=tmp_path / "cache")
    assert info.train_size + info.val_size == 4 and info.classes == ["a", "b"]
    assert {p.rsplit("/", 1)[-1]: r for p, r in info.skipped} == {"caf\\xe9.png": "name is not valid UTF-8; rename it",
                                                                   "c\\xff": "name is not valid UTF-8; rename it"}
    text = " ".join(str(w.message) for w in record)
    assert "a/caf\\xe9.png (name is not valid UTF-8" in text and "c\\xff (name is not valid UTF-8" in text
    assert sum(len(y) for _, y in train) == info.train_size


def test_folder_linked_from_outside_is_followed_and_reported_once(tmp_path):
    root = tmp_path / "data"
    write_tree(root, {"a": 2, "b": 2}, size=(8, 8))
    write_tree(tmp_path / "elsewhere", {"c": 3}, size=(8, 8), seed=1)
    os.symlink(tmp_path / "elsewhere" / "c", root / "c")
    os.symlink(root / "a", root / "d")  # a link that stays inside the root is not reported
    with pytest.warns(BadInputWarning) as record:
        source = resolve_source(root)
    assert len(record) == 1  # once for the link, not once per image behind it
    assert str(record[0].message) == (f"{root}: followed 1 symlink(s) to folder(s) outside the data root: "
                                      f"{root / 'c'} -> {tmp_path / 'elsewhere' / 'c'}")
    assert source.classes == ["a", "b", "c", "d"] and source.targets.tolist() == [0, 0, 1, 1, 2, 2, 2, 3, 3]
    assert source.skipped == []
    assert torch.equal(source.decode(4), resolve_source(tmp_path / "elsewhere").decode(0))
