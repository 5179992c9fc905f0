"""Checkpoint reading and writing: every format written for real in the test, then loaded."""

from __future__ import annotations

import argparse
import builtins
import dataclasses
import functools
import hashlib
import http.server
import json
import pickle
import shutil
import threading
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

import resnets
from model_helpers import randomise_bn
from resnets.download import DownloadError
from resnets.weights.formats import shortcut_option
from resnets.weights import (CheckpointError, UnsafeCheckpointError, detect_format, guess_architecture, resolve,
                             load_weights, read_metadata, save_weights)


def _same_outputs(a: nn.Module, b: nn.Module, size: int) -> float:
    a.eval()
    b.eval()
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        return (a(x) - b(x)).abs().max().item()


# -- our own format ---------------------------------------------------------------------------


def test_save_and_create_model_round_trip(tmp_path):
    model = randomise_bn(resnets.create_model("resnet20", num_classes=7, shortcut="B"))
    classes = [f"class{i}" for i in range(7)]
    path = tmp_path / "run" / "r20.safetensors"
    save_weights(model, path, classes=classes, metadata={"epoch": 12, "top1": 91.5})
    assert [p.name for p in path.parent.iterdir()] == ["r20.safetensors"]  # no temporary file left
    meta = read_metadata(path)
    assert meta["format"] == "resnets" and meta["arch"] == "resnet20"
    assert meta["arch_kwargs"] == {"num_classes": 7, "shortcut": "B"}
    assert meta["num_classes"] == 7 and meta["classes"] == classes
    assert meta["preprocessing"]["input_size"] == [3, 32, 32]
    assert meta["epoch"] == 12 and meta["top1"] == 91.5

    # architecture options and head size come from the file
    loaded = resnets.create_model("resnet20", weights=str(path))
    assert loaded.num_classes == 7 and loaded.shortcut == "B" and loaded.classes == classes
    assert _same_outputs(model, loaded, 32) == 0.0

    assert loaded.preprocessing == model.preprocessing

    # the preprocessing a model was trained with travels with it
    model.preprocessing = dataclasses.replace(model.preprocessing, input_size=(3, 40, 40), crop_pct=0.8)
    save_weights(model, tmp_path / "r20_40px.safetensors")
    assert resnets.create_model("resnet20", weights=str(tmp_path / "r20_40px.safetensors")).preprocessing \
        == model.preprocessing

    # a different head size: the backbone loads, the head starts fresh
    finetune = resnets.create_model("resnet20", weights=str(path), num_classes=3)
    assert finetune.fc.out_features == 3 and finetune.classes is None
    assert torch.equal(finetune.layer3[2].conv2.weight, model.layer3[2].conv2.weight)

    features = resnets.create_model("resnet20", weights=str(path), features_only=True, out_indices=(1, 2))
    assert torch.equal(features.layer2[0].conv1.weight, model.layer2[0].conv1.weight)

    with pytest.raises(CheckpointError, match="holds resnet20 weights, not resnet32"):
        resnets.create_model("resnet32", weights=str(path))


def test_save_refuses_reserved_metadata_and_wrong_class_count(tmp_path):
    model = resnets.create_model("resnet20")
    with pytest.raises(ValueError, match="reserved"):
        save_weights(model, tmp_path / "a.safetensors", metadata={"arch": "x"})
    with pytest.raises(ValueError, match="3 class names for a model with 10 classes"):
        save_weights(model, tmp_path / "a.safetensors", classes=["a", "b", "c"])
    assert not list(tmp_path.iterdir())


def test_format_is_detected_from_content_not_name(tmp_path):
    model = resnets.create_model("resnet20")
    save_weights(model, tmp_path / "looks_like.pth")
    torch.save(model.state_dict(), tmp_path / "looks_like.safetensors")
    torch.save(model.state_dict(), tmp_path / "legacy.bin", _use_new_zipfile_serialization=False)
    assert detect_format(tmp_path / "looks_like.pth") == "safetensors"
    assert detect_format(tmp_path / "looks_like.safetensors") == "torch_zip"
    assert detect_format(tmp_path / "legacy.bin") == "torch_legacy"
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="junk.pth: unknown checkpoint format"):
        load_weights(model, tmp_path / "junk.pth")


# -- torchvision ------------------------------------------------------------------------------


@pytest.mark.parametrize("legacy", [False, True])
def test_torchvision_resnet18(tmp_path, legacy):
    reference = randomise_bn(torchvision.models.resnet18())
    state = reference.state_dict()
    if legacy:
        # torchvision's original 2017 files predate num_batches_tracked and the zip layout
        state = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    path = tmp_path / "resnet18-f37072fd.pth"
    torch.save(state, path, _use_new_zipfile_serialization=not legacy)
    model = resnets.create_model("resnet18", weights=str(path))
    assert model.checkpoint_info.format == ("torch_legacy" if legacy else "torch_zip")
    assert _same_outputs(reference, model, 64) == 0.0


def test_torchvision_resnext50(tmp_path):
    reference = randomise_bn(torchvision.models.resnext50_32x4d(num_classes=10))
    torch.save(reference.state_dict(), tmp_path / "resnext.pth")
    model = resnets.create_model("resnext50_32x4d", weights=str(tmp_path / "resnext.pth"))
    assert model.num_classes == 10
    assert _same_outputs(reference, model, 64) < 1e-5


def test_torchvision_wide_resnet_key_names_match(tmp_path):
    # same names and shapes as torchvision's wide_resnet50_2 (built on meta: no memory needed)
    with torch.device("meta"):
        theirs = {k: tuple(v.shape) for k, v in torchvision.models.wide_resnet50_2().state_dict().items()}
        ours = {k: tuple(v.shape) for k, v in resnets.create_model("wide_resnet50_2").state_dict().items()}
    assert theirs == ours


# -- timm -------------------------------------------------------------------------------------


def _timm_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    # timm's ResNet uses torchvision's names; its published files drop the BN step counters
    return {k: v.clone() for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}


def test_timm_safetensors_bin_and_training_checkpoint(tmp_path):
    from safetensors.torch import save_file

    reference = randomise_bn(resnets.create_model("resnet34", num_classes=5))
    state = _timm_state_dict(reference)
    save_file(state, tmp_path / "model.safetensors", metadata={"format": "pt"})
    torch.save(state, tmp_path / "pytorch_model.bin")
    # timm's train.py writes epoch, arch, state_dict, state_dict_ema and its argparse arguments
    torch.save({"epoch": 99, "arch": "resnet34", "state_dict": state, "optimizer": {"state": {}, "param_groups": []},
                "version": 2, "args": argparse.Namespace(lr=0.1, model="resnet34"),
                "state_dict_ema": state}, tmp_path / "model_best.pth.tar")
    for name in ("model.safetensors", "pytorch_model.bin", "model_best.pth.tar"):
        model = resnets.create_model("resnet34", weights=str(tmp_path / name))
        assert model.num_classes == 5
        assert _same_outputs(reference, model, 64) == 0.0, name


def test_timm_deep_stem_is_named(tmp_path):
    state = _timm_state_dict(resnets.create_model("resnet18"))
    state["conv1.0.weight"] = state.pop("conv1.weight")
    torch.save(state, tmp_path / "resnet18d.pth")
    with pytest.raises(CheckpointError, match="deep-stem"):
        resnets.create_model("resnet18", weights=str(tmp_path / "resnet18d.pth"))


# -- pytorch_resnet_cifar10 -------------------------------------------------------------------


class _ReferenceCifarBlock(nn.Module):
    """The block of the public pytorch_resnet_cifar10 project, written from its description:
    option A pads planes // 4 zero channels on each side of a stride-2 subsample."""

    def __init__(self, in_planes: int, planes: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.pad = planes // 4 if (stride != 1 or in_planes != planes) else 0

    def forward(self, x):
        out = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        shortcut = F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad, self.pad)) if self.pad else x
        return F.relu(out + shortcut)


class _ReferenceCifarResNet(nn.Module):
    def __init__(self, n: int, num_classes: int = 10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        widths, layers, in_planes = (16, 32, 64), [], 16
        for index, width in enumerate(widths):
            blocks = []
            for i in range(n):
                blocks.append(_ReferenceCifarBlock(in_planes, width, 2 if (index > 0 and i == 0) else 1))
                in_planes = width
            layers.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = layers
        self.linear = nn.Linear(64, num_classes)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        return self.linear(F.adaptive_avg_pool2d(out, 1).flatten(1))


def _cifar10_checkpoint(reference: nn.Module, path: Path) -> None:
    # nn.DataParallel's module. prefix, no num_batches_tracked (PyTorch 0.3 era), legacy pickle
    state = {"module." + k: v for k, v in reference.state_dict().items() if not k.endswith("num_batches_tracked")}
    torch.save({"state_dict": state, "best_prec1": 91.73}, path, _use_new_zipfile_serialization=False)


@pytest.mark.parametrize("name,n", [("resnet20", 3), ("resnet32", 5)])
def test_pytorch_resnet_cifar10_checkpoint(tmp_path, name, n):
    reference = randomise_bn(_ReferenceCifarResNet(n))
    path = tmp_path / f"{name}-12fca82f.th"
    _cifar10_checkpoint(reference, path)
    model = resnets.create_model(name, weights=str(path))
    assert model.checkpoint_info.layout == "pytorch_resnet_cifar10"
    assert model.checkpoint_info.format == "torch_legacy"
    assert _same_outputs(reference, model, 32) < 1e-5


def _projection_cifar_resnet(n: int, num_classes: int, every_block: bool) -> nn.Module:
    """A CIFAR ResNet of torchvision's blocks with 1x1 projection shortcuts, as the torch.hub CIFAR models
    publish them: where the shape changes (option B), or on every block (option C)."""
    blocks, inplanes = [], 16
    for planes, stride in ((16, 1), (32, 2), (64, 2)):
        stage = []
        for i in range(n):
            downsample = None
            if every_block or (i == 0 and (stride != 1 or inplanes != planes)):
                downsample = nn.Sequential(nn.Conv2d(inplanes, planes, 1, stride if i == 0 else 1, bias=False),
                                           nn.BatchNorm2d(planes))
            stage.append(torchvision.models.resnet.BasicBlock(inplanes, planes, stride if i == 0 else 1, downsample))
            inplanes = planes
        blocks.append(nn.Sequential(*stage))
    model = nn.Sequential()
    model.conv1, model.bn1, model.relu = nn.Conv2d(3, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU()
    model.layer1, model.layer2, model.layer3 = blocks
    model.avgpool, model.flatten, model.fc = nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, num_classes)
    return randomise_bn(model)


@pytest.mark.parametrize("every_block,option", [(False, "B"), (True, "C")])
def test_cifar_files_with_projection_shortcuts_build_them(tmp_path, every_block, option):
    # our CIFAR nets default to option A (no parameters); a file's projections say which option it was trained with
    reference = _projection_cifar_resnet(3, 100, every_block)
    path = tmp_path / "cifar100_resnet20-0123abcd.pt"
    torch.save(reference.state_dict(), path)
    model = resnets.create_model("resnet20", weights=str(path))
    assert model.shortcut == option and model.num_classes == 100
    assert _same_outputs(reference, model, 32) < 1e-5
    assert shortcut_option(reference.state_dict()) == option
    assert shortcut_option(resnets.create_model("resnet20").state_dict()) is None  # option A: nothing to see
    # the option travels on in the files we write; a caller's own option still wins (and is refused here)
    save_weights(model, tmp_path / "again.safetensors")
    assert resnets.create_model("resnet20", weights=str(tmp_path / "again.safetensors")).shortcut == option
    with pytest.raises(CheckpointError, match="unexpected keys"):
        resnets.create_model("resnet20", weights=str(path), shortcut="A")


# -- safety and errors ------------------------------------------------------------------------


class _Payload:
    """Unpickling this would create a file: proof that code ran."""

    def __init__(self, target: Path):
        self.target = target

    def __reduce__(self):
        return (builtins.open, (str(self.target), "w"))


@pytest.mark.parametrize("layout", ["zip", "legacy", "plain_pickle"])
def test_malicious_pickle_is_refused_without_running(tmp_path, layout):
    target = tmp_path / "pwned"
    state = resnets.create_model("resnet20").state_dict()
    path = tmp_path / "evil.pth"
    if layout == "plain_pickle":
        path.write_bytes(pickle.dumps({"state_dict": state, "x": _Payload(target)}))
    else:
        torch.save({"state_dict": state, "x": _Payload(target)}, path,
                   _use_new_zipfile_serialization=layout == "zip")
    with pytest.raises(CheckpointError, match="evil.pth"):
        resnets.create_model("resnet20", weights=str(path))
    if layout != "plain_pickle":
        with pytest.raises(UnsafeCheckpointError, match="refused to load"):
            load_weights(resnets.create_model("resnet20"), path)
    assert not target.exists()


def test_mismatch_names_keys_and_the_architecture_it_looks_like(tmp_path):
    source = resnets.create_model("resnet20", num_classes=100)
    save_weights(source, tmp_path / "r20.safetensors")
    state = dict(source.state_dict())
    state["extra.weight"] = torch.zeros(1)
    torch.save(state, tmp_path / "r20.pth")
    target = resnets.create_model("resnet32", num_classes=10)
    with pytest.raises(CheckpointError) as caught:
        load_weights(target, tmp_path / "r20.pth")
    message = str(caught.value)
    assert "missing keys (60)" in message and "layer1.3.bn1.bias" in message
    assert "unexpected keys (1): extra.weight" in message
    assert "fc.weight: file (100, 64) vs model (10, 64)" in message
    assert "no registered model" in message  # the extra key fits nothing registered
    state.pop("extra.weight")
    assert guess_architecture(state) == ["resnet20", "plain20"]  # option A has no parameters
    with pytest.raises(CheckpointError, match="looks like: resnet20 or plain20 with 100 classes"):
        load_weights(resnets.create_model("resnet32", num_classes=100), tmp_path / "r20.safetensors")
    # shape mismatches fail even when missing and unexpected keys are tolerated
    with pytest.raises(CheckpointError, match="wrong shapes"):
        load_weights(resnets.create_model("resnet20", num_classes=10), tmp_path / "r20.safetensors", strict=False)
    info = load_weights(resnets.create_model("resnet32", num_classes=100), tmp_path / "r20.safetensors",
                        strict=False)
    assert "layer1.3.conv1.weight" in info.missing_keys


# -- URLs -------------------------------------------------------------------------------------


@pytest.fixture
def loopback_server(tmp_path):
    served = tmp_path / "served"
    served.mkdir()
    handler = functools.partial(_QuietHandler, directory=str(served))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield served, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    requests_seen = 0

    def log_message(self, *args):
        pass

    def do_GET(self):
        _QuietHandler.requests_seen += 1
        super().do_GET()


def test_url_download_with_hash_prefix_cache_and_offline(tmp_path, loopback_server):
    served, base = loopback_server
    model = randomise_bn(resnets.create_model("resnet20"))
    save_weights(model, served / "tmp.safetensors")
    digest = hashlib.sha256((served / "tmp.safetensors").read_bytes()).hexdigest()
    good = f"resnet20-{digest[:8]}.safetensors"
    shutil.copy(served / "tmp.safetensors", served / good)
    shutil.copy(served / "tmp.safetensors", served / "resnet20-deadbeef.safetensors")
    cache = tmp_path / "cache"

    path = resolve(f"{base}/{good}", cache_dir=cache, progress=False)
    # keyed by the URL: a folder per URL, the file under its own name
    assert path.name == good and path.parent.parent == cache
    assert hashlib.sha256(path.read_bytes()).hexdigest() == digest
    before = _QuietHandler.requests_seen
    assert resolve(f"{base}/{good}", cache_dir=cache, offline=True) == path  # cache only
    assert _QuietHandler.requests_seen == before

    with pytest.raises(DownloadError, match="does not match the expected deadbeef"):
        resolve(f"{base}/resnet20-deadbeef.safetensors", cache_dir=cache, progress=False)
    assert sorted(p.name for p in cache.rglob("*") if p.is_file()) == [good]  # nothing half-written left behind

    with pytest.raises(DownloadError, match="does not match"):
        resolve(f"{base}/tmp.safetensors", cache_dir=cache, sha256="0" * 64, progress=False)
    assert resolve(f"{base}/tmp.safetensors", cache_dir=cache, sha256=digest, progress=False).is_file()

    with pytest.raises(DownloadError, match="missing.pth: download failed .*404.*give the file.s path instead"):
        resolve(f"{base}/missing.pth", cache_dir=cache, progress=False)
    with pytest.raises(FileNotFoundError, match="offline mode"):
        resolve(f"{base}/other.pth", cache_dir=cache, offline=True)


def test_create_model_from_url(tmp_path, loopback_server, monkeypatch):
    served, base = loopback_server
    model = randomise_bn(resnets.create_model("resnet20"))
    save_weights(model, served / "r20.safetensors", classes=[str(i) for i in range(10)])
    monkeypatch.setenv("RESNETS_CACHE", str(tmp_path / "env_cache"))
    loaded = resnets.create_model("resnet20", weights=f"{base}/r20.safetensors")
    assert len(list((tmp_path / "env_cache" / "checkpoints").glob("*/r20.safetensors"))) == 1
    assert _same_outputs(model, loaded, 32) == 0.0
    assert json.loads(json.dumps(loaded.classes)) == [str(i) for i in range(10)]
