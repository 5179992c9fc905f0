"""Images sized before they are decoded, multi-frame and float images, and counts bounded where
they are parsed: each refusal is one line naming what was wrong, never a traceback or an allocation
the input chose; and a fuzz test over the image decoder."""

from __future__ import annotations

import io
import json
import time
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import resnets
from resnets.data import build_loaders, decode, resolve_source
from resnets.data.decode import BadImageError, FirstFrameWarning, decode_bytes
from resnets.deploy.calibration import load_images
from resnets.deploy.images import ImageDecodeError, decode_image, read_images
from resnets.errors import UsageError
from resnets.weights import CheckpointError, save_weights

from cli_helpers import run_main

TEN_GB = 10 * 10**9


def _png(value: int, size=(8, 8)) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((*size, 3), value, np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


def _frames(fmt: str, values=(40, 200, 120), size=(8, 8)) -> bytes:
    """A multi-frame image (GIF, APNG, multi-page TIFF) whose frames are flat grays of ``values``."""
    frames = [Image.fromarray(np.full((*size, 3), v, np.uint8)) for v in values]
    buffer = io.BytesIO()
    frames[0].save(buffer, fmt, save_all=True, append_images=frames[1:])
    return buffer.getvalue()


def _float_tiff(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array.astype(np.float32)).save(buffer, "TIFF")
    return buffer.getvalue()


def _sparse(path: Path, size: int = TEN_GB) -> Path:
    with open(path, "wb") as handle:
        handle.truncate(size)  # no block written: the file's size says 10 GB, the disk holds nothing
    return path


def _first_frame_warnings(caught) -> list[str]:
    return [str(w.message) for w in caught if issubclass(w.category, FirstFrameWarning)]


# ----------------------------------------------------------------------------------------------
# a 10 GB file named .jpg


def test_a_10_gb_jpg_named_to_predict_is_one_line_without_reading_it(tmp_path):
    big = _sparse(tmp_path / "big.jpg")
    start = time.perf_counter()
    result = run_main("predict", "resnet20", "--random-weights", "--backend", "torch", str(big))
    assert result.returncode == 2, result.stderr
    line = result.stderr.strip().splitlines()[-1]
    assert "big.jpg" in line and "10.0 GB is over the limit of 256 MiB" in line and "Traceback" not in result.stderr
    assert time.perf_counter() - start < 30
    with pytest.raises(ImageDecodeError, match="over the limit"):
        decode_image(big)


def test_a_10_gb_jpg_in_a_folder_to_predict_is_skipped_and_named(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "good.png").write_bytes(_png(90))
    _sparse(folder / "big.jpg")
    result = run_main("predict", "resnet20", "--random-weights", "--backend", "torch", "--json", str(folder))
    assert result.returncode == 0, result.stderr
    record = json.loads(result.stdout)
    assert [Path(r["image"]).name for r in record["results"]] == ["good.png"]
    assert [Path(r["image"]).name for r in record["skipped"]] == ["big.jpg"]
    assert "10.0 GB is over the limit of 256 MiB" in record["skipped"][0]["error"]


def test_a_10_gb_file_in_a_data_folder_is_skipped_from_its_size(tmp_path):
    root = tmp_path / "data"
    for cls, value in (("a", 30), ("b", 220)):
        (root / cls).mkdir(parents=True)
        for i in range(3):
            (root / cls / f"{i}.png").write_bytes(_png(value + i))
    _sparse(root / "a" / "huge.jpg")
    with pytest.warns(UserWarning, match=r"huge\.jpg \(10\.0 GB is over the limit"):
        source = resolve_source(root)
    assert len(source) == 6 and not any("huge" in f for f in source.files)
    with pytest.raises(BadImageError, match="huge.jpg"):
        resolve_source(root, bad_input="error")
    # a file that grew past the limit after the folder was read is refused when it is read, still by its size
    _sparse(root / "b" / "0.png")
    with pytest.raises(BadImageError, match=r"0\.png: 10\.0 GB is over the limit"):
        source.decode(source.files.index("b/0.png"))


def test_a_zip_member_over_the_limit_is_refused_from_its_declared_size(tmp_path, monkeypatch):
    monkeypatch.setattr(decode, "MAX_IMAGE_BYTES", 4096)  # a small limit: a real member can be over it
    archive = tmp_path / "set.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as handle:
        for cls in ("a", "b"):
            handle.writestr(f"{cls}/small.png", _png(50))
        handle.writestr("a/large.bmp", b"BM" + bytes(8192))
    with pytest.warns(UserWarning, match=r"large\.bmp \(8\.2 kB is over the limit"):
        source = resolve_source(archive)
    assert sorted(source.files) == ["a/small.png", "b/small.png"]


# ----------------------------------------------------------------------------------------------
# multi-frame images: the first frame, said once with the count


def _tree_with_animations(root: Path) -> Path:
    for cls, value in (("a", 10), ("b", 250)):
        (root / cls).mkdir(parents=True)
        for i in range(3):
            (root / cls / f"still{i}.png").write_bytes(_png(value, (16, 16)))
    (root / "a" / "moving.gif").write_bytes(_frames("GIF", (40, 200, 120), (16, 16)))
    (root / "b" / "moving.png").write_bytes(_frames("PNG", (60, 180), (16, 16)))
    (root / "b" / "pages.tiff").write_bytes(_frames("TIFF", (90, 10, 10, 10), (16, 16)))
    return root


def test_decode_takes_the_first_frame_of_gif_apng_and_tiff():
    decode.take_first_frames()
    for fmt, first in (("GIF", 40), ("PNG", 60), ("TIFF", 90)):
        image = decode_bytes(_frames(fmt, (first, 200, 120)), f"x.{fmt.lower()}")
        assert image.shape == (3, 8, 8) and image.dtype == torch.uint8
        assert abs(int(image.float().mean()) - first) <= 2  # GIF's palette may move a gray by a step
    assert decode.take_first_frames() == ["x.gif", "x.png", "x.tiff"]
    decode_bytes(_png(5), "still.png")
    assert decode.take_first_frames() == []


def test_animated_images_in_a_data_folder_train_and_eval_with_one_notice(tmp_path):
    root = _tree_with_animations(tmp_path / "data")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train, val, info = build_loaders(str(root), batch_size=4, val_size=0, use_cache=False, augment=False,
                                         pipeline="small")
    notices = _first_frame_warnings(caught)
    assert len(notices) == 1 and "took the first frame of 3 multi-frame image(s)" in notices[0]
    assert info.train_size == 9 and train.images.shape[1:] == (3, 16, 16)
    # the GIF's row is its first frame, not the frames stacked (which failed: "expand ... [3, 3, 16, 16]")
    source = resolve_source(root)
    row = int(np.flatnonzero(np.array(source.files) == "a/moving.gif")[0])
    assert abs(int(train.images[row].float().mean()) - 40) <= 2

    # the large pipeline (DataLoader workers) says so once a pass as well
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train, _, _ = build_loaders(str(root), batch_size=4, val_size=0, pipeline="large", num_workers=0,
                                    image_size=16, use_cache=False, drop_last=False)
        assert sum(len(labels) for _, labels in train.epoch_batches(0)) == 9
        for _ in train.epoch_batches(1):  # a second pass: nothing new to say
            pass
    notices = _first_frame_warnings(caught)
    assert len(notices) == 1 and "3 multi-frame" in notices[0]


def test_eval_on_a_folder_with_an_animated_gif(tmp_path):
    root = _tree_with_animations(tmp_path / "data")
    weights = tmp_path / "two.safetensors"
    save_weights(resnets.create_model("resnet20", num_classes=2), weights)
    result = run_main("eval", "resnet20", "--weights", str(weights), "--data", str(root), "--split", "all", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["n"] == 9  # every image scored, the animated ones by their first frame
    assert result.stderr.count("took the first frame of 3 multi-frame image(s)") == 1


def test_int8_calibration_images_from_a_folder_with_animations(tmp_path):
    root = _tree_with_animations(tmp_path / "data")
    preprocessing = resnets.create_model("resnet20").preprocessing
    with pytest.warns(FirstFrameWarning, match="3 multi-frame"):
        labelled = load_images(str(root), preprocessing, count=100)
    assert labelled.images.shape == (9, 3, 32, 32) and labelled.labels is not None
    flat = tmp_path / "flat"
    flat.mkdir()
    (flat / "moving.gif").write_bytes(_frames("GIF"))
    (flat / "still.png").write_bytes(_png(3))
    with pytest.warns(FirstFrameWarning, match=r"1 multi-frame image\(s\).*moving\.gif"):
        labelled = load_images(str(flat), preprocessing, count=10)
    assert labelled.images.shape == (2, 3, 32, 32)
    read = read_images([flat / "moving.gif"], preprocessing)
    assert read.first_frame == [flat / "moving.gif"]


# ----------------------------------------------------------------------------------------------
# 16-bit and float TIFF


def test_float_tiff_in_0_1_is_scaled_not_black():
    ramp = np.linspace(0, 1, 64, dtype=np.float32).reshape(8, 8)
    data = _float_tiff(ramp)
    expected = torch.from_numpy(np.rint(ramp * 255).astype(np.uint8))
    image = decode_bytes(data, "ramp.tif")
    assert image.shape == (3, 8, 8) and (image == expected).all()  # gray: the same in every channel
    assert (decode_image(data) == expected).all()  # predict reads it the same way
    assert int(decode_bytes(_float_tiff(np.full((4, 4), 0.5)), "half.tif").max()) == 128


@pytest.mark.parametrize("values, said", [(np.full((4, 4), 200.0), "from 200 to 200"),
                                          (np.array([[-1.0, 0.5]]), "from -1 to 0.5"),
                                          (np.array([[np.nan, 0.5]]), "not finite")])
def test_float_tiff_outside_0_1_is_refused_by_its_range(values, said):
    data = _float_tiff(values)
    with pytest.raises(BadImageError, match=f"depth.tif: .*32-bit float pixels .*{said}.*only floats in"):
        decode_bytes(data, "depth.tif")
    with pytest.raises(ImageDecodeError, match=said):
        decode_image(data, source="depth.tif")


def test_16_and_32_bit_integer_tiffs_keep_their_top_byte():
    deep = (np.arange(64, dtype=np.uint16).reshape(8, 8) * 1000).astype(np.uint16)
    for array in (deep, deep.astype(np.int32)):
        buffer = io.BytesIO()
        Image.fromarray(array).save(buffer, "TIFF")
        image = decode_bytes(buffer.getvalue(), "deep.tif")
        assert (image[0] == torch.from_numpy((deep >> 8).astype(np.uint8))).all()
    buffer = io.BytesIO()
    Image.fromarray(np.array([[0, 70000]], dtype=np.int32)).save(buffer, "TIFF")
    with pytest.raises(BadImageError, match="outside 0..65535"):
        decode_bytes(buffer.getvalue(), "wide.tif")


def test_a_header_over_the_pixel_limit_is_refused_before_decoding():
    buffer = io.BytesIO()
    Image.new("L", (9000, 9000)).save(buffer, "PNG")  # 81 M pixels, a few kB of zeros compressed
    start = time.perf_counter()
    with pytest.raises(BadImageError, match="9000x9000 pixels is over the limit of 64,000,000"):
        decode_bytes(buffer.getvalue(), "wide.png")
    assert time.perf_counter() - start < 1


# ----------------------------------------------------------------------------------------------
# counts bounded where they are parsed


@pytest.mark.parametrize("spec, said", [
    ("synthetic:32x32:10:1000000000", "images must be an integer from 1 to 10,000,000"),
    ("synthetic:32x32:1000000:10", "classes must be an integer from 1 to 100,000"),
    ("synthetic:3x100000x8:10:10", "height must be an integer from 1 to 16,384"),
    ("synthetic:9x32x32:10:10", "channels must be an integer from 1 to 4"),
    ("synthetic:3x8000x8000:10:2000000", "are 357,627.9 GiB, over the limit of 256 GiB"),
    ("synthetic:32x32:10:" + "9" * 5000, "(5,000 digits) is over every bound"),
    ("synthetic:32x32:0:5", "classes must be an integer from 1"),
])
def test_synthetic_counts_are_refused_before_allocating(spec, said):
    start = time.perf_counter()
    with pytest.raises(UsageError, match=said.replace("(", r"\(").replace(")", r"\)")) as error:
        resolve_source(spec)
    assert "\n" not in str(error.value) and time.perf_counter() - start < 1


def test_synthetic_source_built_in_python_is_bounded_the_same_way():
    from resnets.data import SyntheticSource

    with pytest.raises(UsageError, match="images must be an integer from 1 to 10,000,000"):
        SyntheticSource(10**9, 10, (32, 32))
    assert len(resolve_source("synthetic:32x32:10:5000")) == 5000


def test_synthetic_billion_images_on_the_command_line_is_one_line():
    result = run_main("train", "resnet20", "--data", "synthetic:32x32:10:1000000000", "--iterations", "1")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "images must be an integer from 1 to 10,000,000" in result.stderr.strip().splitlines()[-1]


@pytest.mark.parametrize("name, key, value", [("resnet20", "depth", 56), ("plain20", "plain", False),
                                              ("resnet50", "stem", "cifar"), ("resnet50", "layers", [1, 1, 1, 1])])
def test_an_option_the_model_name_fixes_is_refused_naming_the_key(name, key, value):
    with pytest.raises(UsageError, match=f"{name} sets '{key}' itself"):
        resnets.create_model(name, **{key: value})


def test_model_arg_depth_for_a_cifar_net_on_the_command_line(tmp_path):
    result = run_main("train", "resnet20", "--model-arg", "depth=56", "--data", "synthetic:32x32:10:8",
                      "--val-size", "0", "--batch-size", "4", "--iterations", "1", "--out", str(tmp_path / "run"))
    assert result.returncode == 2, result.stderr
    line = result.stderr.strip().splitlines()[-1]
    assert "resnet20 sets 'depth' itself" in line and "Traceback" not in result.stderr


def _weights_with_class_names(path: Path, names) -> Path:
    from safetensors import safe_open
    from safetensors.torch import save_file

    save_weights(resnets.create_model("resnet20"), path)
    with safe_open(str(path), "pt") as handle:
        metadata, tensors = handle.metadata(), {k: handle.get_tensor(k) for k in handle.keys()}
    save_file(tensors, str(path), metadata={**metadata, "classes": json.dumps(list(names))})
    return path


@pytest.mark.parametrize("count", [1, 1000])
def test_class_names_that_are_not_one_per_output_are_refused(tmp_path, count):
    path = _weights_with_class_names(tmp_path / "w.safetensors", [f"c{i}" for i in range(count)])
    with pytest.raises(CheckpointError, match=f"{count} class name\\(s\\) for a classifier of 10 outputs"):
        resnets.create_model("resnet20", weights=path)


def test_class_names_one_per_output_are_kept(tmp_path):
    names = [f"c{i}" for i in range(10)]
    path = _weights_with_class_names(tmp_path / "w.safetensors", names)
    assert resnets.create_model("resnet20", weights=path).classes == names
    # a new classifier (fine-tuning) drops the file's names, which were for the old one
    assert getattr(resnets.create_model("resnet20", weights=path, num_classes=3), "classes", None) is None


# ----------------------------------------------------------------------------------------------
# the decoder, fuzzed (scripts/fuzz_images.py runs the same search for longer)


def test_decoder_fuzz_any_bytes_give_an_image_or_a_resnets_error():
    pytest.importorskip("hypothesis")
    import importlib.util

    spec = importlib.util.spec_from_file_location("fuzz_images", Path(__file__).parents[1] / "scripts" /
                                                  "fuzz_images.py")
    fuzz = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fuzz)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Pillow's notes on odd TIFF tags
        seconds = fuzz.run(400, 150, derandomize=True)
    assert seconds < 60


def test_a_png_failing_its_checksum_is_named_not_a_crash(tmp_path):
    """torchvision 0.29's PNG decoder dies of a segmentation fault on it, so the check runs in a child."""
    import struct
    import subprocess
    import sys

    data = bytearray(_png(77))
    at = data.index(b"IDAT")
    length = struct.unpack(">I", data[at - 4:at])[0]
    data[at + 4 + length - 1] ^= 0xFF  # the zlib stream's adler-32: "incorrect data check"
    (tmp_path / "bad.png").write_bytes(bytes(data))
    code = ("import sys; from pathlib import Path; from resnets.data.decode import decode_bytes, BadImageError\n"
            "try: decode_bytes(Path(sys.argv[1]).read_bytes(), 'bad.png')\n"
            "except BadImageError as error: print(error)\n")
    child = subprocess.run([sys.executable, "-c", code, str(tmp_path / "bad.png")], capture_output=True, text=True,
                           timeout=120)
    assert child.returncode == 0, child.stderr[-500:]
    assert child.stdout.startswith("bad.png: cannot decode")


def test_a_strip_in_a_data_folder_is_skipped_from_its_header(tmp_path):
    """Evaluation resizes the shorter side: a 1x40000 strip would become 292 x 11.7 million pixels."""
    root = tmp_path / "data"
    for cls in ("a", "b"):
        (root / cls).mkdir(parents=True)
        (root / cls / "ok.png").write_bytes(_png(60, (16, 16)))
    buffer = io.BytesIO()
    Image.new("RGB", (40000, 1)).save(buffer, "PNG")
    (root / "a" / "strip.png").write_bytes(buffer.getvalue())
    with pytest.raises(BadImageError, match=r"strip\.png: 40000x1 pixels has an aspect ratio of 40000:1, over the "
                                            r"limit of 20:1"):
        decode_bytes(buffer.getvalue(), str(root / "a" / "strip.png"))
    with pytest.warns(UserWarning, match="strip.png"):
        train, _, info = build_loaders(str(root), batch_size=2, val_size=0, pipeline="large", num_workers=0,
                                       image_size=16, use_cache=False, drop_last=False, augment=False)
        assert sum(len(labels) for _, labels in train.epoch_batches(0)) == 2


def test_the_first_frame_notice_is_said_again_from_the_decoded_cache(tmp_path):
    root = _tree_with_animations(tmp_path / "data")
    for from_cache in (False, True):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            _, _, info = build_loaders(str(root), batch_size=4, val_size=0, augment=False, pipeline="small",
                                       cache_dir=tmp_path / "cache")
        assert info.from_cache is from_cache
        notices = _first_frame_warnings(caught)
        assert len(notices) == 1 and "3 multi-frame" in notices[0] and "moving.gif" in notices[0]


@pytest.mark.parametrize("count", [1, 1000])
def test_load_weights_refuses_class_names_that_are_not_one_per_output(tmp_path, count):
    from resnets.weights import load_weights

    path = _weights_with_class_names(tmp_path / "w.safetensors", [f"c{i}" for i in range(count)])
    model = resnets.create_model("resnet20")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(CheckpointError, match=f"names {count} classes for a classifier of 10 outputs"):
        load_weights(model, path)
    assert getattr(model, "classes", None) is None  # the model is left as it was
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_predict_says_the_first_frame_notice_once_for_the_run(tmp_path):
    folder = tmp_path / "animated"
    folder.mkdir()
    for i in range(3):
        (folder / f"{i}.gif").write_bytes(_frames("GIF"))
    result = run_main("predict", "resnet20", "--random-weights", "--backend", "torch", "--batch-size", "1",
                      "--json", str(folder))
    assert result.returncode == 0, result.stderr
    assert len(json.loads(result.stdout)["results"]) == 3
    notices = [line for line in result.stderr.splitlines() if "took the first frame" in line]
    assert len(notices) == 1 and "of 3 multi-frame image(s)" in notices[0], result.stderr
