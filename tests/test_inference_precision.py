"""Inference at fp32, bf16 and int8 on PyTorch, ONNX Runtime and OpenVINO; the accuracy
guard; calibration data in its three forms; missing optional packages; ONNX metadata."""

from __future__ import annotations

import contextlib
import json
import sys
import zipfile

import pytest
import torch
from torch import nn

import resnets
from resnets.cli import main
from resnets.errors import UsageError
from resnets.deploy import (InferenceSession, MissingExtraError, SessionConfig, decode_image, export_model, load_images,
                            preprocess, read_onnx_metadata)
from resnets.deploy import session as session_module
from resnets.deploy.runtimes import openvino_computes_bf16, quantize_onnxruntime

from model_helpers import randomise_bn

TRAINED = "resnet20.cifar10"


def _model() -> nn.Module:
    return randomise_bn(resnets.create_model("resnet20")).eval()


def _real_images(shared_datasets, count: int = 96) -> torch.Tensor:
    """CIFAR-10 images from every class (every 500th file of the sorted zip), preprocessed for resnet20."""
    preprocessing = resnets.create_model("resnet20").preprocessing
    with zipfile.ZipFile(shared_datasets / "cifar10-jpeg-train.zip") as archive:
        names = [n for n in sorted(archive.namelist()) if n.endswith(".jpg")][::500][:count]
        return torch.stack([preprocess(decode_image(archive.read(n)), preprocessing) for n in names])


def _trained() -> nn.Module:
    try:
        resnets.get_weights(TRAINED)
    except UsageError:
        pytest.skip(f"trained weights {TRAINED!r} are not registered")
    return resnets.create_model("resnet20", weights=TRAINED).eval()


def test_compiled_torch_backend_matches_the_model_at_two_batch_sizes():
    model = _model()
    session = InferenceSession(model, backend="torch", compile=True)
    for batch_size in (4, 3):  # the second size recompiles with a symbolic batch dimension
        x = torch.randn(batch_size, 3, 32, 32)
        with torch.no_grad():
            expected = model(x)
        assert (session.run(x) - expected).abs().max().item() < 1e-4
    runner = session._runners[("torch", "fp32")]
    assert runner.compiled and runner._forward is not runner.model
    assert session.metadata()["compiled"] is True
    assert InferenceSession(model, backend="torch").metadata()["compiled"] is False


@pytest.mark.parametrize("backend", ["torch", "onnxruntime", "openvino", "auto"])
def test_fp32_matches_the_model(backend):
    model = _model()
    session = InferenceSession(model, backend=backend)
    x = torch.randn(6, 3, 32, 32)
    with torch.no_grad():
        expected = model(x)
    assert (session.run(x) - expected).abs().max().item() < 1e-4
    assert session.precision == "fp32" and session.backend in ("torch", "onnxruntime", "openvino")
    if backend == "auto":
        assert set(session.timings) == {"torch/fp32", "onnxruntime/fp32", "openvino/fp32"}
        assert f"{session.backend}/fp32" == min(session.timings, key=session.timings.get)
    with pytest.raises(UsageError, match=r"expects a batch of shape \(N, 3, 32, 32\)"):
        session.run(torch.randn(2, 3, 64, 64))


@pytest.mark.parametrize("units", [True, False])
def test_auto_leaves_out_bf16_that_pytorch_would_emulate(monkeypatch, units):
    from resnets import _precision as precision
    monkeypatch.setattr(precision, "native_bf16", lambda device: units)
    model = _model()
    session = InferenceSession(model, calibration=torch.randn(8, 3, 32, 32),
                               config=SessionConfig(backend="torch", precision="auto"))
    emulated = "torch/bf16" in session.skipped
    assert emulated is not units and (("torch", "bf16") in session.candidates) is units
    if emulated:
        assert "emulate bf16" in session.skipped["torch/bf16"] and session.precision == "fp32"
    with pytest.warns(UserWarning, match="bf16 is emulated here") if not units else contextlib.nullcontext():
        named = InferenceSession(model, config=SessionConfig(backend="torch", precision="bf16"))
    assert named.precision == "bf16"  # asked for by name it still runs


@pytest.mark.parametrize("backend,precision", [("torch", "bf16"), ("openvino", "bf16"),
                                               pytest.param("onnxruntime", "int8", marks=pytest.mark.slow),
                                               pytest.param("openvino", "int8", marks=pytest.mark.slow)])
def test_each_precision_runs_and_stays_close(shared_datasets, backend, precision):
    images = _real_images(shared_datasets)
    model = _model()
    calibration = images[:48] if precision == "int8" else None
    if (backend, precision) == ("openvino", "bf16") and not openvino_computes_bf16():
        # this CPU has no bf16 units: OpenVINO would take the hint and compute fp32, so it is refused
        with pytest.raises(UsageError, match="computes bf16 only on CPUs with bf16 units"):
            InferenceSession(model, backend=backend, precision=precision)
        with pytest.warns(UserWarning, match="bf16 is emulated here"):  # the one runtime left: torch's
            assert "openvino/bf16" in InferenceSession(model, precision="bf16").skipped
        return
    session = InferenceSession(model, backend=backend, precision=precision, calibration=calibration)
    assert (session.backend, session.precision) == (backend, precision)
    with torch.no_grad():
        expected = model(images[48:])
    got = session.run(images[48:])
    assert got.dtype == torch.float32 and got.shape == expected.shape
    assert not torch.allclose(got, expected, atol=1e-4)  # really computed at lower precision
    assert (got - expected).abs().mean().item() < 0.1 * expected.abs().mean().item()
    assert (got.argmax(1) == expected.argmax(1)).float().mean().item() >= 0.8


def test_precision_names_and_needs(shared_datasets):
    model = _model()
    with pytest.raises(UsageError, match="precision must be one of"):
        InferenceSession(model, precision="fp16")
    with pytest.raises(UsageError, match="needs calibration images"):
        InferenceSession(model, precision="int8")
    with pytest.raises(UsageError, match="needs calibration images"):
        InferenceSession(model, precision="auto")
    with pytest.raises(UsageError, match="does not run precision 'bf16'"):
        InferenceSession(model, backend="onnxruntime", precision="bf16")
    with pytest.raises(UsageError, match="now precision='int8'"):
        InferenceSession(model, backend="int8")


def test_calibration_from_a_batch_a_source_and_a_folder(shared_datasets, tmp_path):
    preprocessing = resnets.create_model("resnet20").preprocessing
    zip_path = shared_datasets / "cifar10-jpeg-train.zip"
    labelled = load_images(f"{zip_path}:train", preprocessing, count=40)
    assert labelled.images.shape == (40, 3, 32, 32) and labelled.labels is not None
    assert len(set(labelled.labels.tolist())) >= 5  # a seeded sample mixes the classes of a sorted source
    with zipfile.ZipFile(zip_path) as archive:
        for name in [n for n in sorted(archive.namelist()) if n.endswith(".jpg")][::5000]:
            folder = tmp_path / "tree" / name.split("/")[1]
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "a.jpg").write_bytes(archive.read(name))
            (tmp_path / "flat").mkdir(exist_ok=True)
            (tmp_path / "flat" / f"{name.split('/')[1]}.jpg").write_bytes(archive.read(name))
    tree = load_images(tmp_path / "tree", preprocessing)
    assert len(tree.images) == 10 and sorted(tree.labels.tolist()) == list(range(10))
    flat = load_images(tmp_path / "flat", preprocessing)
    assert len(flat.images) == 10 and flat.labels is None
    # the same image through a folder and through the zip is the same tensor
    assert torch.equal(tree.images[tree.labels.tolist().index(0)], flat.images[0])
    with pytest.raises(UsageError, match=r"shape \(N, 3, 32, 32\)"):
        load_images(torch.zeros(2, 3, 8, 8), preprocessing)


def test_calibration_from_a_split_folder_spelled_as_eval_spells_it(tmp_path):
    """``ROOT:val`` is the root's val/ folder (ImageNet's layout); ``ROOT:val/`` is the same, as eval names it."""
    from PIL import Image
    preprocessing = resnets.create_model("resnet20").preprocessing
    for split, count in (("train", 6), ("val", 3)):
        for i in range(count):
            folder = tmp_path / "root" / split / ("cat" if i % 2 else "dog")
            folder.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (32, 32), (40 * i, 9, 200 if split == "val" else 0)).save(folder / f"{i}.png")
    val = load_images(f"{tmp_path / 'root'}:val", preprocessing)
    assert len(val.images) == 3
    assert torch.equal(load_images(f"{tmp_path / 'root'}:val/", preprocessing).images, val.images)
    assert len(load_images(f"{tmp_path / 'root'}:train", preprocessing).images) == 6


def test_auto_refuses_a_broken_quantisation(shared_datasets, monkeypatch):
    images = _real_images(shared_datasets)
    model = _model()

    def broken(onnx_path, calibration, target):
        # activation ranges from images a hundred times too bright: real activations fall in a few steps
        return quantize_onnxruntime(onnx_path, calibration * 100, target)

    monkeypatch.setattr(session_module, "quantize_onnxruntime", broken)
    with pytest.warns(UserWarning, match="refuses int8 on onnxruntime"):
        session = InferenceSession(model, backend="onnxruntime", precision="auto", calibration=images)
    assert "onnxruntime/int8" in session.refused and "over the limit of 0.5" in session.refused["onnxruntime/int8"]
    check = session.checks["onnxruntime/int8"]
    assert check.top1 is None and check.agreement < 90  # unlabelled: the share of changed predictions is the loss
    assert session.candidates == [("onnxruntime", "fp32")] and session.precision == "fp32"
    labels = model(images).argmax(1)  # labels fp32 gets right: a labelled check reports top-1 points
    with pytest.warns(UserWarning, match="loses"):
        labelled = InferenceSession(model, backend="onnxruntime", precision="auto", calibration=(images, labels))
    assert labelled.checks["onnxruntime/int8"].fp32_top1 == 100.0
    assert labelled.checks["onnxruntime/int8"].loss > 10


def test_missing_openvino_names_the_extra_and_auto_falls_back(monkeypatch):
    monkeypatch.setitem(sys.modules, "openvino", None)  # import openvino now fails, as where it is not installed
    model = _model()
    with pytest.raises(MissingExtraError) as raised:
        InferenceSession(model, backend="openvino")
    assert str(raised.value) == ("backend 'openvino' at precision 'fp32' needs the optional module 'openvino', "
                                 "which is not installed: pip install \"resnets[openvino]\"")
    session = InferenceSession(model, precision="bf16")
    assert session.backend == "torch" and 'pip install "resnets[openvino]"' in session.skipped["openvino/bf16"]
    assert main(["predict", "resnet20", "--backend", "openvino", "nothing.jpg"]) == 2


def test_missing_onnxscript_names_the_extra_and_auto_falls_back(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "onnxscript", None)
    model = _model()
    session = InferenceSession(model)
    session.run(torch.randn(2, 3, 32, 32))
    assert session.candidates == [("torch", "fp32")] and session.backend == "torch"
    assert set(session.skipped) == {"onnxruntime/fp32", "openvino/fp32"}
    assert main(["export", "resnet20", "--random-weights", "--format", "onnx", "--out", str(tmp_path / "m.onnx")]) == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]  # after the line saying the weights are random
    assert error.startswith("resnets export: error:") and 'pip install "resnets[onnx]"' in error


def test_onnx_file_carries_its_metadata(tmp_path):
    model = resnets.create_model("resnet20")
    report = export_model(model, tmp_path / "r20.onnx", "onnx")
    metadata = read_onnx_metadata(report.path)
    assert metadata["arch"] == "resnet20" and metadata["precision"] == "fp32"
    from resnets.deploy import resolve_class_names
    names = resolve_class_names(10, getattr(model, "classes", None))
    assert metadata["class_names"] == names and len(names) == 10 and metadata["num_classes"] == 10
    assert metadata["mean"] == list(model.preprocessing.mean) and metadata["std"] == list(model.preprocessing.std)
    assert metadata["input_size"] == [3, 32, 32] and metadata["crop_pct"] == model.preprocessing.crop_pct
    assert metadata["resize_size"] == model.preprocessing.resize_size
    raw = read_onnx_metadata(report.path, raw=True)  # as stored: strings, JSON for the lists
    assert raw["input_size"] == "[3, 32, 32]" and raw["num_classes"] == "10"
    assert json.loads(raw["mean"]) == metadata["mean"]


@pytest.mark.slow
def test_bf16_export_takes_and_returns_float32(tmp_path):
    model = _model()
    report = export_model(model, tmp_path / "r20.pt2", "torch.export", precision="bf16")
    program = torch.export.load(str(report.path)).module()
    x = torch.randn(3, 3, 32, 32)
    assert program(x).dtype == torch.float32
    assert report.precision == "bf16" and 0 < max(report.max_abs_diff.values()) < 1.0
    with pytest.raises(UsageError, match="not 'bf16'"):
        export_model(model, tmp_path / "r20.onnx", "onnx", precision="bf16")


@pytest.mark.slow
@pytest.mark.parametrize("backend, precision", [("auto", "bf16"), ("onnxruntime", "int8"), ("openvino", "int8")])
def test_trained_weights_keep_their_accuracy(shared_datasets, backend, precision):
    # each INT8 runtime on its own (auto picks the faster one, which differs between machines): ONNX Runtime's
    # 8-bit weights lost 2.4 points on a CPU without VNNI, where its products saturate
    if backend == "openvino":
        pytest.importorskip("nncf")
    model = _trained()
    data = f"{shared_datasets / 'cifar10-jpeg-train.zip'}:train"
    session = InferenceSession(model, calibration=data if precision == "int8" else None,
                               config=SessionConfig(backend=backend, precision=precision))
    check = session.check(data, count=1000)
    assert check.images == 1000 and check.fp32_top1 > 70
    assert check.agreement >= 97 and abs(check.loss) <= 1.0


@pytest.mark.parametrize("machine, units, saturate", [
    ("x86_64", {}, True), ("x86_64", {"avx512_vnni": True}, False), ("x86_64", {"avx_vnni": True}, False),
    ("x86_64", {"amx_int8": True}, False), ("aarch64", {}, False)])
def test_int8_weights_lose_a_bit_only_where_the_cpu_saturates(monkeypatch, machine, units, saturate):
    import platform

    from resnets.deploy import runtimes
    monkeypatch.setattr(platform, "machine", lambda: machine)
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: {"avx2": True, **units})
    assert runtimes.int8_products_saturate() is saturate


@pytest.mark.slow
def test_auto_picks_a_reduced_precision_that_passes(shared_datasets):
    model = _trained()
    data = f"{shared_datasets / 'cifar10-jpeg-train.zip'}:train"
    # fewer images than the defaults (1,000 for the guard, 256 for the quantisers): the check here is that the
    # guard's verdicts decide the candidates and the fastest one left is chosen
    session = InferenceSession(model, calibration=data, config=SessionConfig(
        precision="auto", calibration_images=300, quantization_images=64))
    session.run(torch.zeros(16, 3, 32, 32))
    kept = {f"{b}/{p}" for b, p in session.candidates}
    assert all(check.passes() == (key in kept) for key, check in session.checks.items())
    assert f"{session.backend}/{session.precision}" == min(session.timings, key=session.timings.get)


SESSIONS_RELEASED_IN_CREATION_ORDER = """
import faulthandler, gc, signal, subprocess, sys
faulthandler.enable()                                  # gives the main thread a signal stack, as pytest does
signal.signal(signal.SIGCHLD, lambda *args: None)      # a Python handler, as torch's DataLoader installs
import numpy as np, openvino
from resnets.deploy.runtimes import OpenVINORunner
import torch

def tiny():
    image = openvino.opset13.parameter([1, 3, 8, 8], np.float32)
    return openvino.Model([openvino.opset13.relu(image)], [image])

first, second = OpenVINORunner(tiny(), "fp32"), OpenVINORunner(tiny(), "fp32")
first(torch.ones(1, 3, 8, 8)), second(torch.ones(1, 3, 8, 8))
del first; gc.collect()
del second; gc.collect()
for _ in range(3):
    subprocess.run([sys.executable, "-c", "pass"], check=True)   # each ending child signals this process
print("alive")
"""


def test_openvino_sessions_released_in_any_order_leave_signals_working():
    # OpenVINO swaps the thread's signal stack while compiling; released in creation order, its
    # Cores used to leave an unmapped one behind and the next SIGCHLD was a segmentation fault
    pytest.importorskip("openvino")
    import subprocess

    done = subprocess.run([sys.executable, "-c", SESSIONS_RELEASED_IN_CREATION_ORDER], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "alive", (done.returncode, done.stderr[-2000:])


def test_openvino_int8_keeps_a_commands_json_output_clean(tmp_path):
    pytest.importorskip("nncf")
    from PIL import Image

    from cli_helpers import run_main
    Image.new("RGB", (32, 32), (200, 30, 30)).save(tmp_path / "red.png")
    # NNCF draws its progress bars on stdout while it quantises: they were printed before the JSON
    done = run_main("predict", "resnet20", "--weights", "cifar10", "--precision", "int8", "--backend", "openvino",
                    "--calibration", "sample:cifar10", "--calibration-count", "64", "--json", str(tmp_path / "red.png"))
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)  # the whole of stdout is the JSON document
    assert result["backend"] == "openvino" and result["precision"] == "int8"
