"""Named weights (MODEL.TAG): the registry's entries, resolving names to files through the one
downloader (a loopback server, never the internet), and adapting weights to in_chans / num_classes."""

from __future__ import annotations

import hashlib
import io
import json
import re
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

import resnets
from model_helpers import CountingHandler, randomise_bn, served_state_dict
from resnets.cli import main
from resnets.deploy import decode_image, preprocess
from resnets.download import DownloadError, cache_entry
from resnets.errors import MissingFileError, UsageError
from resnets.models import CIFAR10_PREPROCESSING
from resnets.models.summary import summarize
from resnets.weights import CheckpointError, catalogue, named, save_weights
from resnets.weights.classes import class_names
from resnets.weights.named import Weights, WeightsMeta

# every ResNet, ResNeXt and Wide ResNet torchvision publishes, V1 and V2
TORCHVISION_NAMES = [
    "resnet18.tv_in1k", "resnet34.tv_in1k", "resnet50.tv_in1k", "resnet50.tv2_in1k", "resnet101.tv_in1k",
    "resnet101.tv2_in1k", "resnet152.tv_in1k", "resnet152.tv2_in1k", "resnext50_32x4d.tv_in1k",
    "resnext50_32x4d.tv2_in1k", "resnext101_32x8d.tv_in1k", "resnext101_32x8d.tv2_in1k", "resnext101_64x4d.tv_in1k",
    "wide_resnet50_2.tv_in1k", "wide_resnet50_2.tv2_in1k", "wide_resnet101_2.tv_in1k", "wide_resnet101_2.tv2_in1k",
]

# pytorch-cifar-models' CIFAR-10 and CIFAR-100 ResNets
CIFAR_NAMES = [f"resnet{depth}.chenyaofo_{data}" for data in ("cifar10", "cifar100") for depth in (20, 32, 44, 56)]


@pytest.fixture(autouse=True)
def _registry_restored(monkeypatch, tmp_path):
    """Each test may register entries of its own; the registry and the cache are its alone. The weights
    shipped in the package are left out, so that these tests see only the entries they register
    (tests/test_shipped_weights.py covers those)."""
    saved = dict(named._WEIGHTS)
    for weights in catalogue.SHIPPED:
        named._WEIGHTS.pop(weights.name)
    monkeypatch.setenv("RESNETS_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("RESNETS_OFFLINE", raising=False)
    yield
    named._WEIGHTS.clear()
    named._WEIGHTS.update(saved)


def _cli(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _cifar_meta() -> WeightsMeta:
    return WeightsMeta(dataset="cifar10", preprocessing=CIFAR10_PREPROCESSING, top1=91.0, n=10_000,
                       classes="cifar10", source="this test", license="none")


# -- the registered entries -------------------------------------------------------------------


def test_every_registered_entry_is_well_formed():
    names = resnets.list_weights()
    assert [n for n in TORCHVISION_NAMES if n not in names] == []
    assert [n for n in CIFAR_NAMES if n not in names] == []
    assert len(names) == len(set(names)) >= 31
    macs = {}
    for name in names:
        w = resnets.get_weights(name)
        assert w.name == name and w.model in resnets.list_models() and re.fullmatch(r"[a-z0-9_]+", w.tag)
        assert w.url.startswith("https://") and not w.file
        assert w.sha256 is not None and re.fullmatch(r"[0-9a-f]{8,64}", w.sha256), name
        in_name = re.search(r"-([0-9a-f]{8,})\.pth?$", w.url)
        if in_name:  # torchvision's and torch.hub's file names carry the hash's prefix
            assert w.sha256.startswith(in_name.group(1)), name
        # the published parameter and multiply-add counts are those of our architecture with the weights' options
        key = (w.model, tuple(sorted(w.options.items())), len(w.classes))
        if key not in macs:
            summary = summarize(w.model, num_classes=len(w.classes), **w.options)
            macs[key] = (summary["params"], summary["macs"])
        assert w.meta.params == macs[key][0], name
        assert abs(w.meta.gmacs - macs[key][1] / 1e9) < 6e-4, name
        if w.meta.dataset != "imagenet1k":
            continue
        p = w.preprocessing
        assert p.input_size == (3, 224, 224) and len(p.mean) == len(p.std) == 3, name
        assert p.mean == (0.485, 0.456, 0.406) and p.std == (0.229, 0.224, 0.225)
        assert p.interpolation in ("bilinear", "bicubic") and 0.85 <= p.crop_pct <= 1.0
        m = w.meta
        assert m.dataset == "imagenet1k" and m.n == 50_000 and len(w.classes) == 1000
        assert 65.0 < m.top1 < 90.0 and m.top1 < m.top5 < 100.0, name
        assert m.recipe.startswith("https://") and m.source and m.license in ("BSD-3-Clause", "Apache-2.0")
        if m.file_size_mb is not None:  # float32, or float16 for torchvision's V1 wide nets
            assert 1.9 < m.file_size_mb * 2**20 / m.params < 4.3, name
    # torchvision's evaluation transforms: V1 resize 256, V2 (and resnext101_64x4d) resize 232, crop 224, bilinear
    for name in TORCHVISION_NAMES:
        p = resnets.get_weights(name).preprocessing
        new_recipe = ".tv2_" in name or name.startswith("resnext101_64x4d")
        assert (p.resize_size, p.interpolation) == (232 if new_recipe else 256, "bilinear"), name
    assert resnets.get_weights("resnet50.a1_in1k").preprocessing.resize_size == 235  # timm: floor(224 / 0.95)
    assert resnets.get_weights("resnet50.a1_in1k").preprocessing.interpolation == "bicubic"
    # pytorch-cifar-models: option B nets, scored on the 10,000 test images at 32 pixels as they are
    for name in CIFAR_NAMES:
        w = resnets.get_weights(name)
        dataset = name.rpartition("_")[2]
        assert w.options == {"shortcut": "B"} and w.meta.dataset == dataset and w.meta.n == 10_000, name
        assert len({w, w}) == 1  # entries stay hashable (sets, caches) with their options
        assert len(w.classes) == (10 if dataset == "cifar10" else 100) and w.meta.license == "BSD-3-Clause"
        assert 60 < w.meta.top1 < 95 and w.meta.top1 < w.meta.top5 < 100, name
        p = w.preprocessing
        assert p.input_size == (3, 32, 32) and p.resize_size == 32 and p.crop_pct == 1.0, name
    assert resnets.get_weights("resnet20.chenyaofo_cifar100").preprocessing.mean == (0.5070, 0.4865, 0.4409)
    assert resnets.get_weights("resnet50.tv_in1k").meta.top1 == 76.13
    assert resnets.get_weights("resnet50.tv2_in1k").meta.top1 == 80.858
    # one default per model, torchvision's own choice; a bare model name is its default
    assert resnets.default_weights("resnet50").name == "resnet50.tv2_in1k"
    assert resnets.get_weights("resnet18").name == "resnet18.tv_in1k"
    assert resnets.default_weights("resnet110") is None
    assert resnets.list_weights("*.tv2_in1k") == [n for n in TORCHVISION_NAMES if ".tv2_" in n]
    assert resnets.list_weights("resnet50")[0] == "resnet50.tv2_in1k"  # the default first


def test_names_that_do_not_fit_are_refused_with_the_known_tags():
    with pytest.raises(MissingFileError, match="registered weights of resnet50: tv2_in1k, tv_in1k, a1_in1k"):
        resnets.create_model("resnet50", weights="tv3_in1k")
    with pytest.raises(UsageError, match="resnet50.tv_in1k are weights of resnet50, not resnet18"):
        resnets.create_model("resnet18", weights="resnet50.tv_in1k")
    with pytest.raises(UsageError, match="no weights named 'resnet50.nope' are registered; resnet50 has tv2_in1k"):
        resnets.get_weights("resnet50.nope")
    with pytest.raises(UsageError, match="no weights are registered for 'resnet110'"):
        resnets.create_model("resnet110", pretrained=True)
    meta = _cifar_meta()
    for bad, why in [(dict(name="resnet20"), "MODEL.TAG"), (dict(name="resnet21.x", url="https://h/f.pth"), "resnet20"),
                     (dict(name="resnet20.x"), "exactly one of url= and file="),
                     (dict(name="resnet20.x", url="https://h/f.pth", file="f.pth"), "exactly one"),
                     (dict(name="resnet20.x", url="ftp://h/f.pth"), "http"),
                     (dict(name="resnet20.x", url="https://h/f.pth", sha256="xyz"), "hex digits"),
                     (dict(name="resnet20.x", file="f.safetensors"), "needs its sha256"),
                     (dict(name="resnet50.tv_in1k", url="https://h/f.pth"), "already registered"),
                     (dict(name="resnet20.x", url="https://h/f.pth", options={"shortcut": "D"}),
                      r"options \{'shortcut': 'D'\} do not build resnet20: shortcut must be one of"),
                     (dict(name="resnet20.x", url="https://h/f.pth", options={"widht": 2}), "do not build resnet20"),
                     (dict(name="resnet20.x", url="https://h/f.pth", options=[("shortcut", "B")]), "must be a dict")]:
        with pytest.raises(UsageError, match=why):
            resnets.register_weights(Weights(meta=meta, **bad))


# -- fetching through the downloader ------------------------------------------------------------


@pytest.fixture
def served(tmp_path):
    """A loopback HTTP server over a folder, and a resnet20 saved there the way torchvision saves
    (torch.save of a state dict, the sha256 prefix in the name)."""
    with served_state_dict(tmp_path / "served") as (model, url, digest, _):
        yield model, url, digest


def _outputs(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(x)


def test_a_named_url_is_downloaded_verified_and_cached_once(served, tmp_path):
    model, url, digest = served
    resnets.register_weights(Weights(name="resnet20.test_c10", url=url, sha256=digest, meta=_cifar_meta(),
                                     default=True))
    loaded = resnets.create_model("resnet20", weights="test_c10")
    cached = cache_entry(url, tmp_path / "cache" / "checkpoints")
    assert cached.is_file() and hashlib.sha256(cached.read_bytes()).hexdigest() == digest
    assert len(CountingHandler.requests) == 1
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(_outputs(model, x), _outputs(loaded, x))
    assert loaded.classes == class_names("cifar10") and loaded.preprocessing == CIFAR10_PREPROCESSING
    # the whole name, pretrained=True (it is resnet20's default here) and get_path: no new request
    again = resnets.create_model("resnet20", weights="resnet20.test_c10")
    default = resnets.create_model("resnet20", pretrained=True)
    assert resnets.get_weights("resnet20.test_c10").get_path(offline=True) == cached
    assert len(CountingHandler.requests) == 1
    assert torch.equal(_outputs(again, x), _outputs(default, x))


def test_a_wrong_hash_is_refused_and_nothing_cached(served, tmp_path):
    _, url, digest = served
    wrong = ("0" if digest[0] != "0" else "1") + digest[1:]
    resnets.register_weights(Weights(name="resnet20.test_c10", url=url, sha256=wrong, meta=_cifar_meta()))
    with pytest.raises(DownloadError, match=f"does not match the expected {wrong}"):
        resnets.create_model("resnet20", weights="test_c10")
    assert len(CountingHandler.requests) == 1
    cache = tmp_path / "cache"
    assert [p for p in cache.rglob("*") if p.is_file()] == []  # no file, no half-written temporary


@pytest.mark.parametrize("command", ["predict", "export"])
def test_offline_and_not_cached_is_one_line_naming_the_url(served, tmp_path, monkeypatch, capsys, command):
    _, url, digest = served
    resnets.register_weights(Weights(name="resnet20.test_c10", url=url, sha256=digest, meta=_cifar_meta()))
    monkeypatch.setenv("RESNETS_OFFLINE", "1")
    with pytest.raises(MissingFileError) as error:
        resnets.get_weights("resnet20.test_c10").get_path()
    message = str(error.value)
    assert "\n" not in message and url in message and "--weights PATH" in message
    image = tmp_path / "gray.png"
    _gray_image(40, 30).save(image)
    args = {"predict": ["predict", "resnet20", str(image)],
            "export": ["export", "resnet20", "--format", "onnx", "--out", str(tmp_path / "m.onnx")]}[command]
    code, out, err = _cli(capsys, *args, "--weights", "test_c10")
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and url in err and "--weights PATH" in err
    assert CountingHandler.requests == []  # offline never touched the network


def test_a_shipped_file_is_found_in_the_package_folder_and_hash_checked(tmp_path, monkeypatch):
    monkeypatch.setattr(named, "FILES_DIR", tmp_path / "files")
    model = randomise_bn(resnets.create_model("resnet20")).eval()
    path = tmp_path / "files" / "resnet20-test.safetensors"
    path.parent.mkdir()
    save_weights(model, path, classes=[f"c{i}" for i in range(10)])
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    resnets.register_weights(Weights(name="resnet20.shipped", file=path.name, sha256=digest, meta=_cifar_meta()))
    loaded = resnets.create_model("resnet20", weights="shipped")
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(_outputs(model, x), _outputs(loaded, x))
    # the entry's display names win; the file's own (its training folders) stay for comparing with data
    assert loaded.classes == class_names("cifar10")
    assert loaded.checkpoint_info.classes == [f"c{i}" for i in range(10)]
    assert resnets.get_weights("resnet20.shipped").location == str(path)
    path.write_bytes(path.read_bytes() + b"\0")
    with pytest.raises(CheckpointError, match=f"does not match the expected {digest}"):
        resnets.create_model("resnet20", weights="shipped")


# -- adapting weights to the model asked for ----------------------------------------------------


@pytest.fixture
def rgb_file(tmp_path) -> tuple[nn.Module, Path]:
    model = randomise_bn(resnets.create_model("resnet20")).eval()
    path = tmp_path / "r20.pth"
    torch.save(model.state_dict(), path)
    return model, path


@pytest.mark.parametrize("in_chans", [1, 6])
def test_in_chans_adapts_conv1_and_matches_rgb_on_gray(rgb_file, in_chans):
    rgb, path = rgb_file
    adapted = f"conv1 adapted from 3 input channels to in_chans={in_chans}"
    with pytest.warns(resnets.WeightsAdaptedWarning, match=adapted):
        adapted = resnets.create_model("resnet20", weights=str(path), in_chans=in_chans)
    gray = torch.rand(4, 1, 32, 32)
    expected = _outputs(rgb, gray.expand(-1, 3, -1, -1))
    assert torch.allclose(_outputs(adapted, gray.expand(-1, in_chans, -1, -1)), expected, atol=1e-5, rtol=1e-4)
    assert not torch.allclose(expected, _outputs(rgb, torch.rand(4, 3, 32, 32)), atol=1e-3)  # the inputs matter
    assert adapted.preprocessing.input_size == (in_chans, 32, 32) and len(adapted.preprocessing.mean) == in_chans


def test_in_chans_two_runs_and_a_gray_file_builds_a_gray_model(rgb_file, tmp_path):
    _, path = rgb_file
    with pytest.warns(resnets.WeightsAdaptedWarning):
        two = resnets.create_model("resnet20", weights=str(path), in_chans=2)
    assert _outputs(two, torch.rand(1, 2, 32, 32)).shape == (1, 10)
    with pytest.warns(resnets.WeightsAdaptedWarning):
        gray = resnets.create_model("resnet20", weights=str(path), in_chans=1)
    torch.save(gray.state_dict(), tmp_path / "gray.pth")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the file's own channel count: nothing adapted
        again = resnets.create_model("resnet20", weights=str(tmp_path / "gray.pth"))
    assert again.conv1.in_channels == 1


def test_another_num_classes_gets_a_fresh_head_and_a_notice(rgb_file):
    rgb, path = rgb_file
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the file's own head size: no notice
        same = resnets.create_model("resnet20", weights=str(path), num_classes=10)
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(_outputs(same, x), _outputs(rgb, x))
    with pytest.warns(resnets.WeightsAdaptedWarning,
                      match="10-class classifier is replaced by a new, untrained one of num_classes=5") as record:
        five = resnets.create_model("resnet20", weights=str(path), num_classes=5)
    assert len(record) == 1 and "\n" not in str(record[0].message)
    assert five.fc.weight.shape == (5, 64) and five.classes is None
    with torch.no_grad():  # the body is loaded
        assert torch.equal(five.eval().forward_features(x), rgb.forward_features(x))
    assert not torch.equal(five.fc.weight, rgb.fc.weight[:5])  # the head is not


def test_a_new_head_drops_the_old_class_names(served):
    _, url, digest = served
    resnets.register_weights(Weights(name="resnet20.test_c10", url=url, sha256=digest, meta=_cifar_meta(),
                                     default=True))
    with pytest.warns(resnets.WeightsAdaptedWarning, match="resnet20.test_c10: its 10-class classifier"):
        model = resnets.create_model("resnet20", pretrained=True, num_classes=3)
    assert model.classes is None
    named_model = resnets.create_model("resnet20", pretrained=True)
    named_model.reset_classifier(4)
    assert named_model.classes is None


# -- preprocessing -------------------------------------------------------------------------------


def _gray_image(width: int, height: int):
    from PIL import Image

    return Image.new("RGB", (width, height), (128, 128, 128))


@pytest.mark.parametrize("name", ["resnet50.tv_in1k", "resnet50.tv2_in1k", "resnet50.a1_in1k"])
def test_transforms_equal_the_model_preprocessing(name):
    from PIL import Image

    weights = resnets.get_weights(name)
    generator = torch.Generator().manual_seed(0)
    pixels = torch.randint(0, 256, (300, 451, 3), dtype=torch.uint8, generator=generator)
    image = Image.fromarray(pixels.numpy())
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    expected = preprocess(decode_image(buffer.getvalue()), weights.preprocessing)
    out = weights.transforms()(image)
    assert type(out) is torch.Tensor and out.dtype == torch.float32 and out.shape == (3, 224, 224)
    assert torch.allclose(out, expected, atol=1e-5)
    assert torch.allclose(weights.transforms()(pixels.permute(2, 0, 1)), expected, atol=1e-5)  # uint8 tensor
    # normalised with ImageNet's statistics: a uniform gray image gives (128/255 - mean) / std
    gray = weights.transforms()(_gray_image(500, 400))
    mean, std = torch.tensor(weights.preprocessing.mean), torch.tensor(weights.preprocessing.std)
    assert torch.allclose(gray.mean(dim=(1, 2)), (128 / 255 - mean) / std, atol=1e-5)


def test_transforms_resize_as_published():
    # a centered square of side s in a 464-pixel image: after resize r and crop 224 it spans s * r / 464
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (464, 464), (0, 0, 0))
    ImageDraw.Draw(image).rectangle((132, 132, 331, 331), fill=(255, 255, 255))  # 200 pixels
    for name, resize in [("resnet50.tv_in1k", 256), ("resnet50.tv2_in1k", 232)]:
        out = resnets.get_weights(name).transforms()(image)
        bright = (out[0] > 0).float().mean(dim=0)  # fraction of bright pixels in each column
        width = int((bright > 0.2).sum())
        assert abs(width - 200 * resize / 464) <= 2, (name, width)


# -- the command line ----------------------------------------------------------------------------


def test_cli_lists_the_named_weights(capsys):
    code, out, _ = _cli(capsys, "list", "--weights")
    assert code == 0
    header, *rows, legend = out.splitlines()  # a header naming the columns, a legend of the FILE column
    assert header.split() == ["NAME", "TOP-1", "TOP-5", "IMAGES", "DATA", "FILE", "SOURCE"]
    assert legend.startswith("FILE: package = inside the installed package")
    lines = {line.split()[0]: line for line in rows}
    # the file column: the published weights are downloaded (tests/test_newcomer.py: ours ship in the package)
    assert lines["resnet50.tv2_in1k"].split()[8] == "download"
    assert [n for n in TORCHVISION_NAMES if n not in lines] == []
    assert "80.86" in lines["resnet50.tv2_in1k"] and "95.43" in lines["resnet50.tv2_in1k"]
    assert "n 50,000" in lines["resnet50.tv2_in1k"] and "n 10,000" in lines["resnet56.chenyaofo_cifar10"]
    assert "imagenet1k" in lines["resnet18.tv_in1k"] and "(default)" in lines["resnet50.tv2_in1k"]
    code, out, _ = _cli(capsys, "list", "--weights", "*.tv2_in1k", "--json")
    records = json.loads(out)
    assert [r["name"] for r in records] == [n for n in TORCHVISION_NAMES if ".tv2_" in n]
    first = records[0]
    assert first["top1"] == 80.858 and first["n"] == 50_000 and first["default"] is True
    assert first["preprocessing"]["crop_pct"] == pytest.approx(224 / 232)
    code, out, _ = _cli(capsys, "list", "--weights", "--family", "cifar")
    assert code == 0 and sorted(line.split()[0] for line in out.splitlines()[1:-1]) == sorted(CIFAR_NAMES)
    code, out, err = _cli(capsys, "list", "--weights", "plain*")
    assert code == 0 and out == "" and err.startswith("no named weights match")  # said, off the listing
    # a tag alone, as --weights takes it
    code, out, _ = _cli(capsys, "list", "--weights", "tv2_in1k", "--json")
    assert [r["name"] for r in json.loads(out)] == [n for n in TORCHVISION_NAMES if ".tv2_" in n]
    code, out, err = _cli(capsys, "list", "resnet5")
    assert code == 0 and out == "" and err == "no models match resnet5 (resnets list shows them all)\n"


def test_cli_info_shows_the_weights_of_a_model(capsys):
    code, out, _ = _cli(capsys, "info", "resnet50")
    assert code == 0 and "resnet50.tv2_in1k" in out and "resnet50.a1_in1k" in out and "80.86" in out
    code, out, _ = _cli(capsys, "info", "resnet50", "--json")
    record = json.loads(out)
    assert record["params"] == 25_557_032 and [w["tag"] for w in record["weights"]][:2] == ["tv2_in1k", "tv_in1k"]
    code, out, _ = _cli(capsys, "info", "resnet110")
    assert code == 0 and "none registered" in out
    # weights are of the registered layout or of their own options: where that is not the layout shown, it is said
    code, out, _ = _cli(capsys, "info", "resnet50", "--variant", "v1")
    lines = [line for line in out.splitlines() if "resnet50.tv2_in1k" in line]
    assert code == 0 and len(lines) == 1 and lines[0].endswith("[weights of the layout --variant v1.5]")
    code, out, _ = _cli(capsys, "info", "resnet50", "--variant", "v1.5")
    assert code == 0 and "weights of the layout" not in out and "resnet50.tv2_in1k" in out
    code, out, _ = _cli(capsys, "info", "resnet56")
    line = next(line for line in out.splitlines() if "resnet56.chenyaofo_cifar10 " in line)
    assert line.endswith("[weights of the layout --shortcut B]") and "94.37" in line
    code, out, _ = _cli(capsys, "info", "resnet56", "--shortcut", "B")
    assert "weights of the layout" not in out
    code, out, _ = _cli(capsys, "info", "resnet56", "--json")
    record = next(w for w in json.loads(out)["weights"] if w["tag"] == "chenyaofo_cifar100")
    assert record["options"] == {"shortcut": "B"} and record["params"] == 861_620 and record["n"] == 10_000


def test_eval_scores_named_weights_whose_display_names_differ_from_the_folders(served):
    # ImageNet's named weights say "tench" where an ImageNet folder says "n01440764": not a mismatch
    _, url, digest = served
    meta = WeightsMeta(dataset="cifar10", preprocessing=CIFAR10_PREPROCESSING,
                       classes=tuple(f"label{i}" for i in range(10)))
    resnets.register_weights(Weights(name="resnet20.test_c10", url=url, sha256=digest, meta=meta))
    result = resnets.deploy.evaluate_checkpoint("resnet20", "test_c10", "sample:cifar10", split="all", batch_size=500)
    assert result["n"] == 2000 and 0.0 <= result["top1"] <= 100.0


def test_every_weights_flag_takes_a_name(served, tmp_path, capsys):
    _, url, digest = served
    resnets.register_weights(Weights(name="resnet20.test_c10", url=url, sha256=digest, meta=_cifar_meta()))
    image = tmp_path / "gray.png"
    _gray_image(40, 30).save(image)
    code, out, _ = _cli(capsys, "predict", "resnet20", str(image), "--weights", "test_c10", "--backend", "torch",
                        "--json")
    assert code == 0 and json.loads(out)["results"][0]["predictions"][0]["name"] in class_names("cifar10")
    commands = [
        ["export", "resnet20", "--weights", "resnet20.test_c10", "--format", "torchscript", "--out",
         str(tmp_path / "m.pt")],
        ["features", "resnet20", "--weights", "test_c10", "--data", "synthetic:32x32:4:16", "--out",
         str(tmp_path / "f.npy")],
        ["eval", "resnet20", "--weights", "test_c10", "--data", "synthetic:32x32:10:40", "--split", "all"],
        ["finetune", "resnet20", "--weights", "test_c10", "--data", "synthetic:32x32:4:64", "--out",
         str(tmp_path / "ft"), "--iterations", "2", "--batch-size", "16", "--evaluations", "1", "--val-size", "16",
         "--no-progress"],
    ]
    for args in commands:
        code, _, err = _cli(capsys, *args)
        assert code == 0, (args[0], err)
    assert len(CountingHandler.requests) == 1  # downloaded once, then read from the cache
    assert resnets.read_metadata(tmp_path / "ft" / "last.safetensors")["pretrained"] == "test_c10"


def test_named_weights_of_another_layout_build_it(served, tmp_path):
    # an entry like pytorch-cifar-models' (options={"shortcut": "B"}), served as torch.hub serves their files
    _, url, _ = served
    reference = randomise_bn(resnets.create_model("resnet20", shortcut="B", num_classes=100)).eval()
    buffer = io.BytesIO()
    torch.save(reference.state_dict(), buffer)
    digest = hashlib.sha256(buffer.getvalue()).hexdigest()
    name = f"cifar100_resnet20-{digest[:8]}.pt"
    (tmp_path / "served" / name).write_bytes(buffer.getvalue())
    meta = WeightsMeta(dataset="cifar100", preprocessing=CIFAR10_PREPROCESSING, classes="cifar100", n=10_000)
    resnets.register_weights(Weights(name="resnet20.test_c100", url=url.rsplit("/", 1)[0] + "/" + name,
                                     sha256=digest[:8], meta=meta, options={"shortcut": "B"}))
    model = resnets.create_model("resnet20", weights="test_c100")
    x = torch.randn(2, 3, 32, 32)
    assert model.shortcut == "B" and torch.equal(_outputs(reference, x), _outputs(model, x))
    assert model.classes == class_names("cifar100")
    with pytest.raises(CheckpointError, match="unexpected keys"):  # a caller's option wins over the entry's
        resnets.create_model("resnet20", weights="test_c100", shortcut="A")


# -- MODEL.TAG as a model's name, as timm names models ------------------------------------------


def _register_b_layout(tmp_path, served) -> nn.Module:
    """resnet20.test_b100: an option-B, 100-class entry (as pytorch-cifar-models'), served on the loopback."""
    _, url, _ = served
    reference = randomise_bn(resnets.create_model("resnet20", shortcut="B", num_classes=100)).eval()
    buffer = io.BytesIO()
    torch.save(reference.state_dict(), buffer)
    digest = hashlib.sha256(buffer.getvalue()).hexdigest()
    (tmp_path / "served" / "b100.pt").write_bytes(buffer.getvalue())
    meta = WeightsMeta(dataset="cifar100", preprocessing=CIFAR10_PREPROCESSING, classes="cifar100")
    resnets.register_weights(Weights(name="resnet20.test_b100", url=url.rsplit("/", 1)[0] + "/b100.pt",
                                     sha256=digest, meta=meta, options={"shortcut": "B"}))
    return reference


def test_a_model_named_with_its_weights_loads_them_with_pretrained(served, tmp_path):
    reference = _register_b_layout(tmp_path, served)
    x = torch.randn(2, 3, 32, 32)
    model = resnets.create_model("resnet20.test_b100", pretrained=True)
    assert torch.equal(_outputs(model, x), _outputs(reference, x)) and model.classes == class_names("cifar100")
    same = resnets.create_model("resnet20.test_b100", weights="test_b100")  # said twice, the same: accepted
    assert torch.equal(_outputs(same, x), _outputs(reference, x))
    # without pretrained (timm's meaning): the network those weights need, freshly initialised, nothing fetched
    CountingHandler.requests = []
    fresh = resnets.create_model("resnet20.test_b100")
    assert (fresh.shortcut, fresh.num_classes, fresh.checkpoint_info) == ("B", 100, None)
    assert fresh.preprocessing == CIFAR10_PREPROCESSING and not CountingHandler.requests
    assert not torch.equal(_outputs(fresh, x), _outputs(reference, x))
    backbone = resnets.create_model("resnet20.test_b100", features_only=True, out_indices=(1, 3))
    assert [f.shape[1] for f in backbone(x)] == [16, 64] and backbone.shortcut == "B"
    # a caller's options still win, as with weights=
    assert resnets.create_model("resnet20.test_b100", num_classes=3).num_classes == 3


def test_a_model_named_with_weights_refuses_other_weights_and_unknown_tags(served, tmp_path):
    _register_b_layout(tmp_path, served)
    with pytest.raises(UsageError, match="names two sets of weights"):
        resnets.create_model("resnet20.test_b100", weights=str(tmp_path / "other.pth"))
    with pytest.raises(UsageError, match="names two sets of weights"):
        resnets.create_model("resnet20.test_b100", weights="hf-hub:org/name")
    with pytest.raises(UsageError, match=r"no weights named 'resnet20.nope'.*resnet20 has .*test_b100"):
        resnets.create_model("resnet20.nope")
    with pytest.raises(UsageError, match="unknown model 'resnet21'"):  # the model is named first
        resnets.create_model("resnet21.test_b100")


def test_list_models_with_pretrained_as_timm(served, tmp_path):
    _register_b_layout(tmp_path, served)
    resnets.register_weights(Weights(name="resnet56.test_c10", url="http://127.0.0.1:9/x.pth", meta=_cifar_meta()))
    ours = [n for n in resnets.list_models("resnet*", pretrained=True) if ".test_" in n]
    assert ours == ["resnet20.test_b100", "resnet56.test_c10"]
    assert {"resnet20", "resnet56"} <= set(resnets.list_models(pretrained=True, include_tags=False))
    assert "resnet110" not in resnets.list_models(pretrained=True, include_tags=False)  # none registered
    assert "resnet20.test_b100" in resnets.list_models("resnet20", pretrained=True)  # the model's name matches
    assert resnets.list_models("*.test_c10", pretrained=True) == ["resnet56.test_c10"]
    assert "resnet32" in resnets.list_models("resnet*") and "plain20" not in resnets.list_models("resnet*")


def test_cli_takes_model_tag_wherever_it_takes_a_model(served, tmp_path, capsys):
    reference = _register_b_layout(tmp_path, served)
    image = tmp_path / "gray.png"
    _gray_image(40, 30).save(image)
    code, out, err = _cli(capsys, "predict", "resnet20.test_b100", str(image), "--backend", "torch", "--json")
    assert code == 0, err
    tagged = json.loads(out)["results"][0]["predictions"]
    code, out, _ = _cli(capsys, "predict", "resnet20", "--weights", "test_b100", str(image), "--backend", "torch",
                        "--json")
    assert tagged == json.loads(out)["results"][0]["predictions"] and tagged[0]["name"] in class_names("cifar100")
    # eval: --weights is no longer required (the default weights, or those of MODEL.TAG)
    code, out, err = _cli(capsys, "eval", "resnet20.test_b100", "--data", "synthetic:32x32:100:200", "--split", "all",
                          "--json")
    assert code == 0, err
    # info shows the layout of those weights (option B: 1x1 projections, more parameters than option A)
    code, out, _ = _cli(capsys, "info", "resnet20.test_b100", "--json")
    assert json.loads(out)["params"] == sum(p.numel() for p in reference.parameters())
    # finetune starts from them; its run records the weights by tag
    code, _, err = _cli(capsys, "finetune", "resnet20.test_b100", "--data", "synthetic:32x32:4:64", "--out",
                        str(tmp_path / "ft"), "--iterations", "2", "--batch-size", "16", "--evaluations", "1",
                        "--val-size", "16", "--no-progress")
    assert code == 0, err
    record = resnets.read_metadata(tmp_path / "ft" / "last.safetensors")
    assert record["pretrained"] == "test_b100" and record["arch"] == "resnet20"


@pytest.mark.parametrize("args, message", [
    (["predict", "resnet20.test_b100", "--weights", "other.pth", "x.png"], "names its weights, and weights"),
    (["predict", "resnet20.test_b100", "--random-weights", "x.png"], "leave out --random-weights"),
    (["train", "resnet20.test_b100"], "give the model as resnet20 --model-arg shortcut=B; to start from"),
    (["finetune", "resnet20", "--data", "synthetic:32x32:4:64"], "fine-tuning starts from pretrained weights"),
    (["train", "resnet20", "--teacher", "resnet20.test_b100", "--teacher-weights", "x"], "give one of them"),
    (["predict", "resnet20.nope", "x.png"], "no weights named 'resnet20.nope' are registered; resnet20 has"),
])
def test_cli_model_tag_mistakes_are_one_line(served, tmp_path, capsys, args, message):
    _register_b_layout(tmp_path, served)
    code, out, err = _cli(capsys, *args)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1 and not out


def test_a_teacher_named_with_its_weights(served, tmp_path):
    _register_b_layout(tmp_path, served)
    options = resnets.train.TrainOptions(model="resnet20", out=tmp_path / "run", teacher="resnet20.test_b100")
    assert (options.teacher, options.teacher_weights) == ("resnet20", "test_b100")


def test_apis_that_run_a_model_take_model_tag_as_the_model_with_its_weights(served, tmp_path):
    reference = _register_b_layout(tmp_path, served)
    x = torch.randn(2, 3, 32, 32)
    session = resnets.InferenceSession("resnet20.test_b100", backend="torch")
    assert torch.equal(_outputs(session.model, x), _outputs(reference, x))
    with pytest.raises(UsageError, match="names its weights, and weights 'other.pth' others"):
        resnets.InferenceSession("resnet20.test_b100", weights="other.pth", backend="torch")
    body = resnets.backbone("resnet20.test_b100", out_indices=(3,)).eval()
    with torch.no_grad():
        torch.testing.assert_close(body(x)["0"], reference.forward_features(x), rtol=1e-4, atol=1e-4)  # frozen BN
    tagged = resnets.transfer.compute_features("resnet20.test_b100", "synthetic:32x32:4:8", num_workers=0)
    named = resnets.transfer.compute_features("resnet20", "synthetic:32x32:4:8", weights="test_b100", num_workers=0)
    assert tagged.features.shape == (8, 64) and torch.equal(torch.as_tensor(tagged.features),
                                                            torch.as_tensor(named.features))


def test_eval_without_weights_takes_the_default_or_says_what_to_give(capsys):
    code, _, err = _cli(capsys, "eval", "resnet110", "--data", "synthetic:32x32:10:20")
    assert code == 2 and "resnet110 has no named weights; pass --weights" in err
    assert "--random-weights" not in err  # eval has no such option
