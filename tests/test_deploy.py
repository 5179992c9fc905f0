"""BN folding, export round trips, inference sessions, INT8, images, class names, CLI."""

from __future__ import annotations

import dataclasses
import io
import json

import numpy as np
import pytest
import torch
from torch import nn

import resnets
from resnets.cli import main
from resnets.deploy import (ImageDecodeError, class_names, decode_image, export_model, fold_batchnorm, load_batch,
                            preprocess, resolve_class_names)
from resnets.deploy.export import compare_exported


def _calibrated(model: nn.Module, size: int, images: torch.Tensor = None) -> nn.Module:
    # realistic BN statistics: a few train-mode passes (on random data unless images are given), then eval
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(8, 3, size, size) if images is None else images)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.3, 0.3)
    return model.eval()


FAMILIES = [("resnet18", 64), ("resnet20", 32), ("preact_resnet18", 64)]


def _small(name: str, size: int) -> nn.Module:
    """A registered model, or a small CIFAR bottleneck net ("bottleneck29", "preact_bottleneck29")."""
    if name.endswith("bottleneck29"):
        return resnets.cifar_resnet(29, bottleneck=True, preact=name.startswith("preact"))
    model = resnets.create_model(name, num_classes=10)
    # export and check at a small input size to keep the test fast
    model.preprocessing = dataclasses.replace(model.preprocessing, input_size=(3, size, size))
    return model


@pytest.mark.parametrize("name,size", FAMILIES + [("bottleneck29", 32), ("preact_bottleneck29", 32)])
def test_fold_batchnorm_is_exact(name, size):
    model = _calibrated(_small(name, size), size)
    folded = fold_batchnorm(model)
    x = torch.randn(4, 3, size, size)
    with torch.no_grad():
        expected, got = model(x), folded(x)
    assert (got - expected).abs().max().item() < 1e-4 * max(1.0, expected.abs().max().item())
    convs_with_bias = sum(isinstance(m, nn.Conv2d) and m.bias is not None for m in folded.modules())
    assert convs_with_bias == folded.folded_batchnorms > 0
    bns_left = sum(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    if folded.preact:
        # pre-activation BNs act on block inputs (sums), which no convolution precedes
        assert bns_left > 0
    else:
        assert bns_left == 0
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())  # the original is untouched


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["onnx", "torch.export", "torchscript"])
@pytest.mark.parametrize("name,size", FAMILIES)
def test_export_round_trip(tmp_path, name, size, fmt):
    model = _calibrated(_small(name, size), size)
    ending = {"onnx": ".onnx", "torch.export": ".pt2", "torchscript": ".pt"}[fmt]
    report = export_model(model, tmp_path / f"{name}{ending}", fmt)
    assert report.ok and set(report.max_abs_diff) == {"random batch 1", "random batch 5"}
    assert max(report.max_abs_diff.values()) < 1e-4
    if fmt == "onnx":
        # a third batch size, checked again from the file alone
        diffs = compare_exported(model, report.path, fmt, {"batch 3": torch.randn(3, 3, size, size)})
        assert diffs["batch 3"] < 1e-4


@pytest.mark.slow
def test_export_fails_beyond_tolerance(tmp_path):
    model = _calibrated(resnets.create_model("resnet20"), 32)
    with pytest.raises(ValueError, match="differs from PyTorch"):
        export_model(model, tmp_path / "r20.onnx", "onnx", tolerance=1e-12)  # ONNX Runtime differs by ~1e-6


def test_class_names_ship_with_the_package():
    imagenet = class_names("imagenet1k")
    assert len(imagenet) == 1000 and len(set(imagenet)) == 1000
    assert imagenet[0] == "tench" and imagenet[1] == "goldfish" and imagenet[999] == "toilet tissue"
    assert imagenet[207] == "golden retriever" and imagenet[281] == "tabby"
    assert class_names("cifar10")[3] == "cat" and len(class_names("cifar100")) == 100
    assert class_names("cifar100")[99] == "worm"
    # a checkpoint's own names win; unknown sizes fall back to indices
    assert resolve_class_names(10, ["a"] * 10) == ["a"] * 10
    assert resolve_class_names(3) == ["0", "1", "2"]


def test_imagenet_names_match_torchvision_metadata():
    from torchvision.models import ResNet50_Weights

    assert class_names("imagenet1k") == ResNet50_Weights.IMAGENET1K_V2.meta["categories"]


def _jpeg(size=(40, 30), color=(200, 30, 30)) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


def test_decode_and_preprocess():
    image = decode_image(_jpeg((40, 30)))
    assert image.shape == (3, 30, 40) and image.dtype == torch.uint8
    assert abs(int(image[0, 15, 20]) - 200) <= 3
    preprocessing = resnets.create_model("resnet18").preprocessing
    x = preprocess(image, preprocessing)
    assert x.shape == (3, 224, 224)
    expected_red = (200 / 255 - 0.485) / 0.229
    assert abs(x[0, 112, 112].item() - expected_red) < 0.05
    with pytest.raises(ImageDecodeError, match="upload.jpg: cannot decode"):
        decode_image(_jpeg()[:200], source="upload.jpg")
    with pytest.raises(ImageDecodeError, match="not a recognised image"):
        decode_image(b"hello world", source="x")


def test_a_16_bit_image_is_read_as_the_training_data_reads_it():
    # Pillow's convert("RGB") clips 16-bit values to white: 30,000 (about 117 of 255) must not become 255
    from PIL import Image

    from resnets.data import decode_bytes

    buffer = io.BytesIO()
    Image.fromarray(np.full((8, 8), 30_000, dtype=np.uint16)).save(buffer, format="PNG")
    image = decode_image(buffer.getvalue())
    assert image.shape == (3, 8, 8) and image.unique().tolist() == [30_000 >> 8]
    assert torch.equal(image, decode_bytes(buffer.getvalue(), "g16.png"))


def _png(size) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", size, (90, 160, 30)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_aspect_ratio_and_size_limits(tmp_path, capsys):
    preprocessing = resnets.create_model("resnet18").preprocessing
    with pytest.raises(ImageDecodeError, match=r"strip.png: 1x20000 pixels has an aspect ratio of 20000:1, "
                                               r"over the limit of 20:1"):
        decode_image(_png((1, 20_000)), source="strip.png")
    # a tensor handed straight to preprocess is checked before the resize, which would take 4 GB
    with pytest.raises(ImageDecodeError, match="aspect ratio of 20000:1"):
        preprocess(torch.zeros(3, 1, 20_000, dtype=torch.uint8), preprocessing)
    with pytest.raises(ImageDecodeError, match="8000x8001 pixels is over the limit of 64000000 pixels"):
        preprocess(torch.zeros(1, 1, 1, dtype=torch.uint8).expand(3, 8001, 8000), preprocessing)  # no memory
    assert preprocess(decode_image(_png((10, 200))), preprocessing).shape == (3, 224, 224)  # 20:1 is allowed
    (tmp_path / "strip.png").write_bytes(_png((20_000, 1)))
    assert main(["predict", "resnet20", str(tmp_path / "strip.png"), "--backend", "torch", "--random-weights"]) == 2
    note, err = capsys.readouterr().err.split("\n", 1)  # "using random weights: ..." first
    assert "random weights" in note
    assert err.count("\n") == 1 and "strip.png: 20000x1 pixels has an aspect ratio" in err and "20:1" in err


@pytest.mark.slow
def test_predict_and_export_commands(tmp_path, capsys):
    model = _calibrated(resnets.create_model("resnet20"), 32)
    classes = [f"kind{i}" for i in range(10)]
    resnets.save_weights(model, tmp_path / "r20.safetensors", classes=classes)
    images = tmp_path / "images"
    (images / "sub").mkdir(parents=True)
    (images / "a.jpg").write_bytes(_jpeg((32, 32), (10, 200, 10)))
    (images / "sub" / "b.png").write_bytes(_jpeg((48, 32), (10, 10, 200)))  # content decides, not suffix
    assert main(["predict", "resnet20", str(images), "--weights", str(tmp_path / "r20.safetensors"),
                 "--top-k", "3", "--json", "--backend", "torch"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [r["image"].split("/")[-1] for r in out["results"]] == ["a.jpg", "b.png"]
    batch = load_batch([images / "a.jpg"], model.preprocessing)
    with torch.no_grad():
        probabilities = torch.softmax(model(batch), 1)[0]
    top = out["results"][0]["predictions"]
    assert len(top) == 3 and top[0]["name"] == classes[int(probabilities.argmax())]
    assert abs(top[0]["probability"] - probabilities.max().item()) < 1e-5

    out_file = tmp_path / "r20.onnx"
    assert main(["export", "resnet20", "--weights", str(tmp_path / "r20.safetensors"), "--format", "onnx",
                 "--out", str(out_file), "--check-images", str(images)]) == 0
    text = capsys.readouterr().out
    assert "real images (2)" in text and out_file.is_file()

    assert main(["predict", "resnet20", str(tmp_path / "missing")]) == 2
    assert "no such image or directory" in capsys.readouterr().err
