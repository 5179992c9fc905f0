"""ONNX exports kept between sessions: reused while the model is the same, redone when it is not,
written atomically, the least recently used pruned."""

import os

import pytest
import torch

import resnets
from cli_helpers import run_main
from resnets.deploy import InferenceSession, SessionConfig
from resnets.deploy import export_cache

from model_helpers import randomise_bn

pytest.importorskip("onnxscript")


@pytest.fixture
def exports(tmp_path, monkeypatch):
    """The cache in a temporary RESNETS_CACHE, and a list of every export actually made."""
    monkeypatch.setenv("RESNETS_CACHE", str(tmp_path / "cache"))
    made = []
    real = export_cache.export_onnx

    def counting(model, path, **kwargs):
        made.append(path)
        return real(model, path, **kwargs)

    monkeypatch.setattr(export_cache, "export_onnx", counting)
    return made


def _session(model):
    return InferenceSession(model, config=SessionConfig(backend="onnxruntime", cache_exports=True))


def test_a_second_session_of_the_same_model_reuses_the_export(exports):
    model = randomise_bn(resnets.create_model("resnet20")).eval()
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        expected = model(x)
    first = _session(model)
    assert (first.run(x) - expected).abs().max().item() < 1e-4
    second = _session(model)
    assert (second.run(x) - expected).abs().max().item() < 1e-4
    assert len(exports) == 1
    files = sorted(export_cache.cache_dir().iterdir())
    assert [p.suffix for p in files] == [".onnx"] and first._onnx == second._onnx == files[0]


def test_other_weights_or_structure_get_their_own_export(exports):
    model = randomise_bn(resnets.create_model("resnet20")).eval()
    _session(model).run(torch.randn(2, 3, 32, 32))
    changed = resnets.create_model("resnet20").eval()
    changed.load_state_dict(model.state_dict())
    with torch.no_grad():
        changed.fc.bias[0] += 1.0  # one number differs
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = changed(x)
    assert (_session(changed).run(x) - expected).abs().max().item() < 1e-4
    option_b = randomise_bn(resnets.create_model("resnet20", shortcut="B")).eval()
    _session(option_b).run(x)
    assert len(exports) == 3 and len(list(export_cache.cache_dir().glob("*.onnx"))) == 3
    assert export_cache.export_key(model) != export_cache.export_key(changed)


def test_a_failed_export_leaves_nothing_and_prune_drops_the_least_recently_used(exports, monkeypatch):
    def broken(model, path, **kwargs):
        open(path, "wb").write(b"half a file")
        raise RuntimeError("exporter crashed")

    monkeypatch.setattr(export_cache, "export_onnx", broken)
    with pytest.raises(RuntimeError, match="exporter crashed"):
        export_cache.cached_export(resnets.create_model("resnet20").eval())
    assert list(export_cache.cache_dir().iterdir()) == []

    directory = export_cache.cache_dir()
    for age, name in enumerate(["new", "middle", "old"]):
        path = directory / f"{name}.onnx"
        path.write_bytes(b"x" * 100)
        os.utime(path, (1_000_000 - age * 1000, 1_000_000 - age * 1000))
    removed = export_cache.prune(limit=250)
    assert [p.name for p in removed] == ["old.onnx"]
    assert sorted(p.name for p in directory.iterdir()) == ["middle.onnx", "new.onnx"]


def test_predict_command_exports_once_across_calls(exports, tmp_path):
    weights = tmp_path / "r20.safetensors"
    resnets.save_weights(randomise_bn(resnets.create_model("resnet20")), weights)
    image = tmp_path / "x.png"
    from PIL import Image

    Image.new("RGB", (32, 32), (120, 30, 200)).save(image)
    outputs = []
    for _ in range(2):
        done = run_main("predict", "resnet20", "--weights", str(weights), "--backend", "onnxruntime", "--json",
                        str(image))
        assert done.returncode == 0, done.stderr
        outputs.append(done.stdout)
    assert outputs[0] == outputs[1]
    assert len(exports) == 1
