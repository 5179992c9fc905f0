"""What the commands write and print when something goes wrong: a failed write (a full disk, a failed check,
an output naming its own input) leaves the old file as it was, in one line; damaged weights and hostile class
names are refused or shown escaped, never printed as answers or obeyed by the terminal."""

from __future__ import annotations

import errno
import json
import os
import re
import pathlib
import resource
import subprocess

import pytest
import torch

import resnets
from resnets._io import atomic_path
from resnets.errors import DiskFullError

from cli_helpers import RESNETS, cli_env, run_main

PREVIOUS = b"the previous file, which must survive"


def _state_dict_file(tmp_path, name="w.pth") -> pathlib.Path:
    path = tmp_path / name
    torch.save(resnets.create_model("resnet20").state_dict(), path)
    return path


def _only_line(stderr: str) -> str:
    # leaving out the weights notice and warnings (torch.jit.save's deprecation)
    lines = [line for line in stderr.splitlines() if not line.startswith("using ") and ": warning: " not in line]
    assert len(lines) == 1, stderr
    return lines[0]


# -- export: its own weights, its tolerance ------------------------------------------------------


def test_export_refuses_an_out_that_is_its_own_weights_by_any_name(tmp_path):
    weights = _state_dict_file(tmp_path)
    before = weights.read_bytes()
    (tmp_path / "link.pth").symlink_to(weights)
    os.link(weights, tmp_path / "hard.pth")
    for out in (weights, tmp_path / "link.pth", tmp_path / "hard.pth", tmp_path / "." / "w.pth"):
        done = run_main("export", "resnet20", "--weights", str(weights), "--format", "torchscript", "--out", str(out))
        assert done.returncode == 2, done.stderr
        assert "the weights file this export reads" in _only_line(done.stderr) and "choose another --out" in done.stderr
        assert weights.read_bytes() == before  # was overwritten by the TorchScript file, exit 0
    done = run_main("export", "resnet20", "--weights", str(weights), "--format", "torchscript",
                    "--out", str(tmp_path / "m.pt"))
    assert done.returncode == 0 and (tmp_path / "m.pt").is_file()


def test_an_export_failing_its_tolerance_leaves_the_previous_file_and_no_temporary(tmp_path):
    pytest.importorskip("onnxruntime")
    out = tmp_path / "m.onnx"
    out.write_bytes(PREVIOUS)
    # ONNX Runtime differs from PyTorch by about 1e-6: a tolerance of 1e-12 fails the check
    done = run_main("export", "resnet20", "--random-weights", "--format", "onnx", "--out", str(out),
                    "--tolerance", "1e-12")
    assert done.returncode == 2
    line = _only_line(done.stderr)
    assert "differs from PyTorch" in line and "the previous m.onnx is unchanged" in line
    assert out.read_bytes() == PREVIOUS  # was replaced by the failing export
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]


# -- a full disk, injected ------------------------------------------------------------------------


def _fails_half_way(monkeypatch, code=errno.ENOSPC):
    """Path.write_bytes writing half its bytes and then failing as a full disk does (the file object's write)."""
    real = pathlib.Path.write_bytes

    def write_bytes(self, data):
        real(self, bytes(memoryview(data)[: len(data) // 2]))
        raise OSError(code, os.strerror(code), str(self))

    monkeypatch.setattr(pathlib.Path, "write_bytes", write_bytes)


@pytest.mark.parametrize("fmt, name", [("torch.export", "m.pt2"), ("torchscript", "m.pt")])
def test_export_onto_a_full_disk_injected_is_one_line_and_the_old_file_intact(tmp_path, monkeypatch, fmt, name):
    out = tmp_path / name
    out.write_bytes(PREVIOUS)
    _fails_half_way(monkeypatch)
    done = run_main("export", "resnet20", "--random-weights", "--format", fmt, "--out", str(out))
    monkeypatch.undo()
    assert done.returncode == 2
    assert f"{out}: the disk is full" in _only_line(done.stderr) and f"the previous {name}" in done.stderr
    assert out.read_bytes() == PREVIOUS and sorted(p.name for p in tmp_path.iterdir()) == [name]


def test_the_atomic_writer_keeps_the_old_file_on_any_failure_and_names_efbig(tmp_path, monkeypatch):
    target = tmp_path / "f.bin"
    target.write_bytes(PREVIOUS)
    for code, says in ((errno.ENOSPC, "the disk is full"), (errno.EDQUOT, "the disk is full"),
                       (errno.EFBIG, "file-size limit (ulimit -f)")):
        _fails_half_way(monkeypatch, code)
        with pytest.raises(DiskFullError, match=r"f\.bin: .*" + re.escape(says)):
            with atomic_path(target) as tmp:
                tmp.write_bytes(b"new content" * 1000)
        monkeypatch.undo()
        assert target.read_bytes() == PREVIOUS and [p.name for p in tmp_path.iterdir()] == ["f.bin"]
    with pytest.raises(KeyError):  # a bug inside stays itself; the old file stays too
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"new")
            raise KeyError("bug")
    assert target.read_bytes() == PREVIOUS and [p.name for p in tmp_path.iterdir()] == ["f.bin"]


def test_features_pair_is_replaced_together_or_not_at_all(tmp_path, monkeypatch):
    from resnets.transfer.features import Features, load_features

    features = Features(torch.randn(4, 8), torch.tensor([0, 1, 0, 1]), ["a", "b", "c", "d"], ["x", "y"],
                        "resnet20", None)
    features.save(tmp_path / "e.npy")
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    real = pathlib.Path.write_text

    def full(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self))

    monkeypatch.setattr(pathlib.Path, "write_text", full)  # the .json fails after the .npy was written
    other = Features(torch.randn(2, 8), torch.tensor([1, 1]), ["e", "f"], ["x", "y"], "resnet20", None)
    with pytest.raises(DiskFullError, match="e.json: the disk is full"):
        other.save(tmp_path / "e.npy")
    monkeypatch.setattr(pathlib.Path, "write_text", real)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before  # not a new .npy beside the old .json
    assert load_features(tmp_path / "e.npy").files == ["a", "b", "c", "d"]


# -- a full disk and a file-size limit, for real ------------------------------------------------


@pytest.fixture
def small_disk(tmp_path):
    """A 1 MiB tmpfs (root only; skipped where it cannot be mounted), holding a 700 KB previous file."""
    mount = tmp_path / "disk"
    mount.mkdir()
    tried = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True)
    if tried.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {tried.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=False)


@pytest.mark.slow
def test_export_and_save_weights_onto_a_real_full_disk_keep_the_old_file(small_disk):
    # a torch.export file: its C++ writer aborted the process (134) with a stack dump on a full disk
    out = small_disk / "m.pt2"
    previous = os.urandom(700_000)
    out.write_bytes(previous)
    done = subprocess.run([*RESNETS, "export", "resnet20", "--random-weights", "--format", "torch.export",
                           "--out", str(out)], capture_output=True, text=True, env=cli_env(), timeout=300)
    assert done.returncode == 2, done.stderr[-2000:]
    assert f"{out}: the disk is full" in _only_line(done.stderr)
    assert out.read_bytes() == previous and [p.name for p in small_disk.iterdir()] == ["m.pt2"]
    for fmt, name in (("torchscript", "m.pt2.ts"), ("onnx", "m.onnx")):
        if fmt == "onnx" and not resnets.errors.available("onnxscript"):
            continue
        done = run_main("export", "resnet20", "--random-weights", "--format", fmt, "--out", str(small_disk / name))
        assert done.returncode == 2 and "the disk is full" in _only_line(done.stderr), done.stderr
        assert [p.name for p in small_disk.iterdir()] == ["m.pt2"]
    # a checkpoint (safetensors' own writer) over an existing file on the same disk
    with pytest.raises(DiskFullError, match="m.pt2: the disk is full"):
        resnets.save_weights(resnets.create_model("resnet20"), out)
    assert out.read_bytes() == previous and [p.name for p in small_disk.iterdir()] == ["m.pt2"]


def test_a_file_size_limit_is_one_line_with_the_old_file_intact(tmp_path):
    out = tmp_path / "m.pt"
    out.write_bytes(PREVIOUS)

    def limit():  # 200 KB: the TorchScript file of resnet20 is about 1.1 MB
        resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))

    done = subprocess.run([*RESNETS, "export", "resnet20", "--random-weights", "--format", "torchscript",
                           "--out", str(out)], capture_output=True, text=True, env=cli_env(), timeout=300,
                          preexec_fn=limit)
    assert done.returncode == 2, done.stderr[-2000:]
    assert "file-size limit (ulimit -f)" in _only_line(done.stderr)
    assert out.read_bytes() == PREVIOUS and [p.name for p in tmp_path.iterdir()] == ["m.pt"]


# -- damaged weights, hostile class names ----------------------------------------------------------


def _png(path, color=(200, 30, 30)):
    from PIL import Image

    Image.new("RGB", (32, 32), color).save(path)
    return path


def _damaged_weights(tmp_path, classes=None) -> pathlib.Path:
    """Finite weights that compute NaN: a negative BatchNorm variance (all values finite, so loading accepts them)."""
    model = resnets.create_model("resnet20", num_classes=len(classes) if classes else 10)
    with torch.no_grad():
        model.layer1[0].bn1.running_var.fill_(-1.0)
    path = tmp_path / "damaged.safetensors"
    resnets.save_weights(model, path, classes=classes)
    return path


def test_predict_and_eval_refuse_weights_that_compute_nan(tmp_path):
    weights = _damaged_weights(tmp_path, classes=["cat", "dog"])
    image = _png(tmp_path / "x.png")
    done = run_main("predict", "resnet20", "--weights", str(weights), str(image), "--backend", "torch")
    assert done.returncode == 2 and "nan" not in done.stdout.lower()  # printed "nan%" for every class, exit 0
    line = _only_line(done.stderr)
    assert "the weights compute NaN on this input" in line and "damaged" in line and "BatchNorm" in line
    data = tmp_path / "data"
    for name in ("cat", "dog"):
        (data / name).mkdir(parents=True)
        for i in range(2):
            _png(data / name / f"{i}.png", (60 * i, 120, 200))
    done = run_main("eval", "resnet20", "--weights", str(weights), "--data", str(data), "--split", "all",
                    "--amp", "off")
    assert done.returncode == 2 and "loss nan" not in done.stdout  # printed "loss nan", exit 0
    assert "the weights compute NaN" in done.stderr.splitlines()[-1]
    session = resnets.deploy.InferenceSession("resnet20", weights=str(weights), backend="torch")
    with pytest.raises(resnets.errors.ResnetsError, match=r"compute NaN on this input \(1 of 1 images, the first"):
        session.predict([str(image)])


def test_class_names_with_terminal_escapes_are_printed_escaped(tmp_path):
    hostile = "\x1b]0;owned\x07\x1b[2J" + "cat\r\nPASSED"
    classes = [hostile] + [f"kind{i}" for i in range(1, 10)]
    model = resnets.create_model("resnet20")
    path = tmp_path / "w.safetensors"
    resnets.save_weights(model, path, classes=classes)
    image = _png(tmp_path / "x.png")
    done = run_main("predict", "resnet20", "--weights", str(path), str(image), "--top-k", "10", "--backend", "torch")
    assert done.returncode == 0, done.stderr
    assert "\x1b" not in done.stdout and "\r" not in done.stdout and "\x07" not in done.stdout
    assert r"\x1b]0;owned\x07\x1b[2Jcat\r\nPASSED" in done.stdout  # shown, as a repr shows it
    assert "kind3" in done.stdout and done.stdout.count("\n") == 11  # one line per class, none injected
    done = run_main("predict", "resnet20", "--weights", str(path), str(image), "--json", "--backend", "torch")
    names = {p["name"] for result in json.loads(done.stdout)["results"] for p in result["predictions"]}
    assert "\x1b" not in done.stdout and hostile in names  # JSON escapes it itself, and gives it back exactly
    data = tmp_path / "data"
    for i, name in enumerate(classes[:2]):
        folder = data / name.replace("/", "_")
        folder.mkdir(parents=True)
        _png(folder / "0.png", (100 * i, 50, 50))
    done = run_main("eval", "resnet20", "--weights", str(path), "--data", str(data), "--split", "all", "--amp", "off",
                    "--per-class")
    assert done.returncode == 0, done.stderr
    assert "\x1b" not in done.stdout + done.stderr and r"\x1b]0;owned" in done.stdout
    assert r"\x1b]0;owned" in done.stderr  # "the data has 2 of the weights' 10 classes (...)"
