"""What a careless or hostile user runs into: one clear line instead of a traceback or a silent
wrong answer, and nothing lost when a run is cut short."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

import resnets
from data_helpers import write_tree
from resnets.cli import main
from resnets.data.sources import resolve_source
from resnets.data.splits import make_split
from resnets.weights import save_weights


def _cli(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# -- eval: which images are scored ---------------------------------------------------------------


def _trained_on(folder: Path, path: Path) -> Path:
    """resnet20 weights (random) whose metadata records a 6-image validation split of ``folder``, as training
    writes it."""
    source = resolve_source(str(folder))
    split = make_split(source.targets, val_size=6, seed=0, fingerprint=source.fingerprint)
    model = resnets.create_model("resnet20", num_classes=len(source.classes))
    save_weights(model, path, classes=list(source.classes), metadata={"split": split.to_dict(), "seed": 0})
    return path


def test_eval_scores_the_recorded_split_only_on_the_training_data(tmp_path, capsys):
    train_folder, test_folder = tmp_path / "train", tmp_path / "test"
    write_tree(train_folder, {"a": 12, "b": 12}, size=(16, 16), seed=0)
    write_tree(test_folder, {"a": 4, "b": 3}, size=(16, 16), seed=1)
    weights = _trained_on(train_folder, tmp_path / "w.safetensors")
    base = ["eval", "resnet20", "--weights", str(weights), "--batch-size", "64", "--amp", "off"]

    code, out, err = _cli(capsys, *base, "--data", str(train_folder), "--json")
    assert code == 0 and json.loads(out)["n"] == 6 and json.loads(out)["split"] == "val"
    # other data (a test folder): every image, not a random tenth, and not "the data changed"
    code, out, err = _cli(capsys, *base, "--data", str(test_folder))
    assert code == 0, err
    assert f"evaluating on every image of the train part of {test_folder}: 7 images" in err
    assert "(all, 7 images, fp32)" in out
    # forced either way
    code, out, err = _cli(capsys, *base, "--data", str(train_folder), "--split", "all", "--json")
    assert code == 0 and json.loads(out)["n"] == 24
    code, out, err = _cli(capsys, *base, "--data", str(test_folder), "--split", "val")
    assert code == 2 and "the data changed" in err and err.count("\n") == 1


def test_eval_of_foreign_weights_scores_every_image(tmp_path, capsys):
    folder = tmp_path / "test"
    write_tree(folder, {f"c{i}": 1 for i in range(10)}, size=(16, 16))
    weights = tmp_path / "peer.pth"
    import torch
    torch.save(resnets.create_model("resnet20").state_dict(), weights)  # no metadata, no recorded split
    code, out, err = _cli(capsys, "eval", "resnet20", "--weights", str(weights), "--data", str(folder), "--json")
    assert code == 0 and json.loads(out)["n"] == 10 and json.loads(out)["split"] == "all"
    # a source with its own test split: that, not its training images
    write_tree(tmp_path / "split" / "train", {f"c{i}": 2 for i in range(10)}, size=(16, 16))
    write_tree(tmp_path / "split" / "test", {f"c{i}": 1 for i in range(10)}, size=(16, 16), seed=5)
    code, out, err = _cli(capsys, "eval", "resnet20", "--weights", str(weights), "--data", str(tmp_path / "split"))
    assert code == 0 and "its 'test' split" in err and "(test, 10 images, " in out
    precision = "bf16 autocast" if resnets._precision.native_bf16(torch.device("cpu")) else "fp32"
    assert f"images, {precision}): top-1" in out  # the precision that the default --amp auto chose, said
    # a folder without split folders has no test split: the way to score it is named
    code, out, err = _cli(capsys, "eval", "resnet20", "--weights", str(weights), "--data", str(folder),
                          "--split", "test")
    assert code == 2 and "has no 'test' split" in err and "--split all" in err


def test_eval_of_foreign_weights_scores_a_val_folder(tmp_path, capsys):
    # ImageNet's and Imagenette's layout: train/ and val/, no test/
    import torch
    weights = tmp_path / "peer.pth"
    torch.save(resnets.create_model("resnet20", num_classes=3).state_dict(), weights)
    write_tree(tmp_path / "data" / "train", {f"c{i}": 5 for i in range(3)}, size=(16, 16))
    write_tree(tmp_path / "data" / "val", {f"c{i}": 2 for i in range(3)}, size=(16, 16), seed=5)
    base = ["eval", "resnet20", "--weights", str(weights), "--data", str(tmp_path / "data"), "--amp", "off"]
    code, out, err = _cli(capsys, *base)
    assert code == 0 and "evaluating on its val/ folder" in err and "(val/, 6 images, fp32)" in out
    # named: val/ is the folder, val the seeded tenth carved out of train/
    code, out, err = _cli(capsys, *base, "--split", "val/", "--json")
    assert code == 0 and json.loads(out)["n"] == 6 and json.loads(out)["split"] == "val/"
    code, out, err = _cli(capsys, *base, "--split", "val", "--json")
    assert code == 0 and json.loads(out)["n"] == 2 and json.loads(out)["split"] == "val"  # a tenth of 15, stratified
    # a test/ folder wins over val/
    write_tree(tmp_path / "data" / "test", {f"c{i}": 1 for i in range(3)}, size=(16, 16), seed=6)
    code, out, err = _cli(capsys, *base, "--json")
    assert code == 0 and json.loads(out)["split"] == "test" and json.loads(out)["n"] == 3


# -- predict / export / serve never answer with an untrained network silently ----------------------


@pytest.fixture
def _registry(monkeypatch, tmp_path):
    from resnets.weights import named
    saved = dict(named._WEIGHTS)
    monkeypatch.setattr(named, "FILES_DIR", tmp_path / "files")
    yield named
    named._WEIGHTS.clear()
    named._WEIGHTS.update(saved)


def test_without_weights_the_default_named_weights_or_a_refusal(_registry, tmp_path, capsys):
    from PIL import Image

    from resnets.models import CIFAR10_PREPROCESSING
    from resnets.weights.named import Weights, WeightsMeta
    image = tmp_path / "x.png"
    Image.new("RGB", (32, 32), (200, 30, 30)).save(image)
    # resnet20 without named weights (any shipped ones set aside): refused in one line, naming both ways out
    for name in [n for n in _registry._WEIGHTS if n.startswith("resnet20.")]:
        del _registry._WEIGHTS[name]
    for args in (["predict", "resnet20", str(image)],
                 ["export", "resnet20", "--format", "onnx", "--out", str(tmp_path / "m.onnx")]):
        code, out, err = _cli(capsys, *args)
        assert code == 2 and out == "" and err.count("\n") == 1
        assert "no named weights" in err and "--weights" in err and "--random-weights" in err
    assert not (tmp_path / "m.onnx").exists()
    code, out, err = _cli(capsys, "predict", "resnet20", str(image), "--random-weights", "--backend", "torch")
    assert code == 0 and "random weights" in err and "mean nothing" in err
    # a model with a default: used, and said
    path = tmp_path / "files" / "r20.safetensors"
    path.parent.mkdir()
    classes = [f"kind{i}" for i in range(10)]
    save_weights(resnets.create_model("resnet20"), path, classes=classes)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    _registry.register_weights(Weights(name="resnet20.mine", file=path.name, sha256=digest, meta=WeightsMeta(
        dataset="cifar10", preprocessing=CIFAR10_PREPROCESSING, classes=tuple(classes))))
    code, out, err = _cli(capsys, "predict", "resnet20", str(image), "--backend", "torch", "--json")
    assert code == 0 and "using resnet20.mine, the default weights of resnet20" in err
    assert json.loads(out)["results"][0]["predictions"][0]["name"].startswith("kind")


# -- a safetensors file's metadata is checked before anything is allocated from it -----------------


def _with_metadata(path: Path, **changes) -> Path:
    from safetensors import safe_open
    from safetensors.torch import save_file
    with safe_open(str(path), framework="pt") as f:
        metadata = {**f.metadata(), **{k: json.dumps(v) for k, v in changes.items()}}
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    out = path.with_name(f"{path.stem}-{len(list(path.parent.glob('*')))}.safetensors")
    save_file(tensors, str(out), metadata=metadata)
    return out


_CAPPED = """
import resource, runpy, sys
resource.setrlimit(resource.RLIMIT_AS, (int(sys.argv.pop(1)), resource.RLIM_INFINITY))
sys.argv[0] = "resnets"
runpy.run_module("resnets", run_name="__main__")
"""


@pytest.mark.slow
def test_a_40000_wide_network_in_the_metadata_is_refused_before_allocation(tmp_path):
    """A subprocess with its address space capped at 6 GB: before the check, the 1.4 TB of a bottleneck net with
    width_per_group 40000 ended in an allocation failure's traceback (or, uncapped, the OOM killer)."""
    import subprocess
    import sys

    from PIL import Image

    from cli_helpers import cli_env
    good = tmp_path / "r164.safetensors"
    save_weights(resnets.create_model("preact_resnet164"), good)
    bad = _with_metadata(good, arch_kwargs={"width_per_group": 40000})
    Image.new("RGB", (32, 32)).save(tmp_path / "x.png")
    run = subprocess.run([sys.executable, "-c", _CAPPED, str(6 * 2**30), "predict", "preact_resnet164",
                          "--weights", str(bad), str(tmp_path / "x.png"), "--backend", "torch"],
                         capture_output=True, text=True, timeout=120, env=cli_env())
    assert run.returncode == 2, run.stderr[-2000:]
    assert run.stderr.count("\n") == 1 and "metadata 'arch_kwargs'" in run.stderr
    assert "layer1.0.conv1.weight of shape (10000, 16, 1, 1), but the file's tensor is (16, 16, 1, 1)" in run.stderr


@pytest.mark.parametrize("field, value, named", [
    ("arch_kwargs", {"no_such_option": 1}, "does not build resnet20"),
    ("arch_kwargs", {"shortcut": "B"}, "describes layer2.0.downsample.0.weight, which the file lacks"),
    ("arch_kwargs", [1, 2], "must be a JSON object"),
    ("preprocessing", {"input_size": [3, 100000, 100000], "mean": [0.5] * 3, "std": [0.2] * 3},
     "over the limit of 4096"),
    ("preprocessing", {"input_size": [3, 32, 32], "mean": [0.5] * 3, "std": [0.2] * 3, "crop_pct": 1e-5},
     "resizes to 3200000 pixels"),
    ("preprocessing", {"input_size": [3, 32, 32], "mean": [0.5] * 2, "std": [0.2] * 3}, "mean must be 3"),
    ("preprocessing", {"input_size": [1, 32, 32], "mean": [0.5], "std": [0.2]}, "the model takes 3 channels"),
])
def test_hostile_metadata_is_one_line_naming_the_field(tmp_path, field, value, named):
    from resnets.weights import CheckpointError
    good = tmp_path / "r20.safetensors"
    save_weights(resnets.create_model("resnet20"), good)
    bad = _with_metadata(good, **{field: value})
    with pytest.raises(CheckpointError) as error:
        resnets.create_model("resnet20", weights=bad)
    message = str(error.value)
    assert "\n" not in message and f"metadata '{field}'" in message and named in message


# -- one line instead of a traceback ------------------------------------------------------------------


@pytest.mark.parametrize("device, says", [("cuda", "no CUDA GPU is available"), ("gpu", "--device cuda"),
                                          ("cuda:7", None), ("tpu", "not a device")])
@pytest.mark.parametrize("command", [
    ["eval", "resnet20", "--weights", "w.pth", "--data", "sample:cifar10"],
    ["features", "resnet20", "--data", "sample:cifar10", "--out", "f.npy"],
    ["study", "gradients", "--depths", "20", "--out", "study"],
    ["train", "resnet20", "--data", "sample:cifar10", "--iterations", "1", "--out", "run"],
    ["predict", "resnet20", "--random-weights", "x.jpg"],
    ["serve", "resnet20", "--random-weights", "--port", "0"],
])
def test_a_device_this_machine_lacks_is_one_line(tmp_path, capsys, monkeypatch, command, device, says):
    import torch
    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU")
    monkeypatch.chdir(tmp_path)
    torch.save(resnets.create_model("resnet20").state_dict(), tmp_path / "w.pth")
    code, out, err = _cli(capsys, *command, "--device", device)
    assert code == 2 and out == "" and err.count("\n") == 1 and f"--device {device}" in err
    assert says is None or says in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.pth"]  # nothing started


def test_the_python_api_checks_the_device_too():
    import torch

    from resnets.errors import UsageError
    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU")
    with pytest.raises(UsageError, match="no CUDA GPU is available"):
        resnets.deploy.InferenceSession("resnet20", device="cuda")
    with pytest.raises(UsageError, match="--device gpu"):
        resnets.deploy.evaluate_checkpoint("resnet20", "w.pth", "sample:cifar10", device="gpu")


# -- Ctrl-C, and a full disk, during training ----------------------------------------------------------

SYNTHETIC = "synthetic:32x32:4:96"


@pytest.mark.slow
def test_ctrl_c_during_training_checkpoints_the_step_and_resume_finishes(tmp_path):
    """A real process and a real SIGINT: one line, exit 130, and a checkpoint the same command resumes from."""
    import signal
    import subprocess

    from cli_helpers import RESNETS, cli_env, run_cli
    from resnets.train.checkpoint import last_checkpoint, load_checkpoint_state
    run_dir = tmp_path / "run"
    command = ["train", "resnet20", "--data", SYNTHETIC, "--iterations", "40", "--evaluations", "1", "--amp", "off",
               "--batch-size", "8", "--val-size", "16", "--no-progress", "--out", str(run_dir)]
    process = subprocess.Popen([*RESNETS, *command], stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                               env=cli_env())
    try:
        started = process.stderr.readline()
        assert started.startswith("training resnet20"), started
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=120)
    finally:
        process.kill()
    assert process.returncode == 130, err
    # one line for the interruption (beside the notice that 16 validation images are few to choose best by)
    said = [line for line in err.splitlines() if not line.startswith("the validation split holds")]
    assert len(said) == 1 and "Traceback" not in err
    step = int(err.split("interrupted at step ")[1].split(" ")[0])
    assert 1 <= step < 40 and "resume with --resume" in err
    record = last_checkpoint(run_dir)
    assert record["step"] == step
    load_checkpoint_state(run_dir, record)  # complete and consistent
    done = run_cli(*command, "--resume")
    assert done.returncode == 0, done.stderr
    assert f"resuming at step {step}" in done.stderr and last_checkpoint(run_dir)["step"] == 40


def _disk_full_at(step: int, real_save):
    """torch.save that, for the state of ``step``, writes part of the file and fails as a full disk does."""
    import errno
    import os

    def save(obj, path, *args, **kwargs):
        if isinstance(obj, dict) and obj.get("step") == step:
            Path(path).write_bytes(b"PK\x03\x04" + b"\0" * 100)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        return real_save(obj, path, *args, **kwargs)
    return save


@pytest.mark.slow
def test_a_full_disk_during_a_checkpoint_keeps_the_previous_one(tmp_path, monkeypatch, capsys):
    import torch

    from resnets.errors import DiskFullError
    from resnets.train import TrainOptions, train
    from resnets.train.checkpoint import last_checkpoint
    run_dir = tmp_path / "run"
    options = dict(model="resnet20", out=run_dir, data=SYNTHETIC, iterations=4, evaluations=2, batch_size=8,
                   val_size=16, progress=False, amp="off")
    monkeypatch.setattr(torch, "save", _disk_full_at(4, torch.save))
    with pytest.raises(DiskFullError) as error:
        train(TrainOptions(**options))
    message = str(error.value)
    assert "\n" not in message and "step-00000004.state.pt: the disk is full" in message
    monkeypatch.undo()
    assert last_checkpoint(run_dir)["step"] == 2
    names = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
    assert names == ["step-00000002.safetensors", "step-00000002.state.pt"]  # no half of step 4, no .tmp
    assert not list(run_dir.rglob("*.tmp"))
    train(TrainOptions(**options, resume=True))
    assert last_checkpoint(run_dir)["step"] == 4


@pytest.mark.slow
def test_leftovers_of_a_killed_write_are_removed_when_a_run_resumes(tmp_path, capsys):
    from resnets.train import TrainOptions, train
    from resnets.train.checkpoint import last_checkpoint
    run_dir = tmp_path / "run"
    options = dict(model="resnet20", out=run_dir, data=SYNTHETIC, iterations=4, evaluations=2, batch_size=8,
                   val_size=16, progress=False, amp="off")
    train(TrainOptions(**options))
    folder = run_dir / "checkpoints"
    leftovers = [folder / ".step-00000004.state.pt.x1y2.tmp", run_dir / ".last.json.abc.tmp",
                 folder / "step-00000003.safetensors", folder / "step-00000001.state.pt"]
    for path in leftovers:
        path.write_bytes(b"")
    folder.joinpath("step-00000003.safetensors").write_bytes(b"half a file")
    train(TrainOptions(**options, resume=True))
    assert "removed 4 leftover file(s)" in capsys.readouterr().err
    assert not any(p.exists() for p in leftovers)
    record = last_checkpoint(run_dir)
    assert sorted(p.name for p in folder.iterdir()) == [Path(record["weights"]).name, Path(record["state"]).name]


# -- a missing optional dependency names the extra that installs it ----------------------------------

_WITHOUT = """
import runpy, sys
for name in sys.argv.pop(1).split(","):
    sys.modules[name] = None  # as if not installed: importing it raises ModuleNotFoundError
sys.argv[0] = "resnets"
runpy.run_module("resnets", run_name="__main__")
"""


def test_serve_without_fastapi_names_the_serve_extra(tmp_path, capsys, monkeypatch):
    import sys
    weights = tmp_path / "r20.safetensors"
    save_weights(resnets.create_model("resnet20"), weights)
    monkeypatch.delitem(sys.modules, "resnets.deploy.server", raising=False)
    monkeypatch.setitem(sys.modules, "fastapi", None)
    code, out, err = _cli(capsys, "serve", "resnet20", "--weights", str(weights), "--port", "0")
    assert code == 2 and err.count("\n") == 1
    assert "'fastapi', which is not installed" in err and 'pip install "resnets[serve]"' in err


@pytest.mark.slow
def test_export_without_onnxscript_names_the_onnx_extra(tmp_path):
    import subprocess
    import sys

    from cli_helpers import cli_env
    weights = tmp_path / "r20.safetensors"
    save_weights(resnets.create_model("resnet20"), weights)
    run = subprocess.run([sys.executable, "-c", _WITHOUT, "onnxscript", "export", "resnet20", "--weights", str(weights),
                          "--format", "onnx", "--out", str(tmp_path / "m.onnx")],
                         capture_output=True, text=True, timeout=300, env=cli_env())
    assert run.returncode == 2, run.stderr[-2000:]
    assert run.stderr.count("\n") == 1 and "pip install" in run.stderr and "resnets[onnx]" in run.stderr
    assert not (tmp_path / "m.onnx").exists()


# -- InferenceSession.predict takes images as a user has them ---------------------------------------------


def test_predict_takes_paths_pil_images_and_uint8_tensors(tmp_path):
    import torch
    from PIL import Image

    from resnets.deploy import InferenceSession, decode_image, load_batch
    from resnets.errors import UsageError
    session = InferenceSession("resnet20", backend="torch")
    paths = []
    for i, color in enumerate([(200, 30, 30), (10, 180, 90)]):
        image = Image.fromarray(torch.randint(0, 256, (40, 48, 3), generator=torch.Generator().manual_seed(i),
                                              dtype=torch.uint8).numpy()) if i else Image.new("RGB", (36, 30), color)
        image.save(tmp_path / f"{i}.png")
        paths.append(tmp_path / f"{i}.png")
    expected = session.predict(load_batch(paths, session.preprocessing), top_k=3)
    assert session.predict([str(p) for p in paths], top_k=3) == expected
    assert session.predict([Image.open(p) for p in paths], top_k=3) == expected
    assert session.predict([decode_image(p) for p in paths], top_k=3) == expected
    alone = session.predict(str(paths[1]), top_k=3)  # one image, not a list (a batch of 1: other kernels)
    assert [p.label for p in alone[0]] == [p.label for p in expected[1]]
    assert [p.probability for p in alone[0]] == pytest.approx([p.probability for p in expected[1]], abs=1e-5)
    with pytest.raises(UsageError, match="no such image file: nope.jpg"):
        session.predict(["nope.jpg"])
    with pytest.raises(UsageError, match="top_k must be at least 1"):
        session.predict(paths, top_k=0)


def test_warnings_on_the_command_line_are_one_line_each(tmp_path, capsys):
    module = tmp_path / "mine.py"
    module.write_text('import warnings\nwarnings.warn("this module is\\n  experimental", FutureWarning)\n')
    code, out, err = _cli(capsys, "study", "table", "--import", str(module), "--models", "resnet20",
                          "--out", str(tmp_path / "table"))
    assert code == 0
    assert err == "resnets study: warning: this module is experimental (FutureWarning)\n"


def test_a_pytorch_resnet_cifar10_checkpoint_brings_its_own_imagenet_normalisation(tmp_path, capsys):
    """That project trains and tests CIFAR-10 with ImageNet's mean/std (its trainer.py), not CIFAR's."""
    import torch

    from model_helpers import randomise_bn
    from resnets.models.preprocessing import CIFAR10_MEAN, CIFAR10_STD, IMAGENET_MEAN, IMAGENET_STD
    ours = randomise_bn(resnets.create_model("resnet20"))
    theirs = {"module." + k.replace("fc.", "linear."): v for k, v in ours.state_dict().items()
              if not k.endswith("num_batches_tracked")}
    torch.save({"state_dict": theirs, "best_prec1": 91.7}, tmp_path / "resnet20-12fca82f.th")
    model = resnets.create_model("resnet20", weights=str(tmp_path / "resnet20-12fca82f.th"))
    assert model.checkpoint_info.layout == "pytorch_resnet_cifar10"
    assert model.preprocessing.mean == IMAGENET_MEAN and model.preprocessing.std == IMAGENET_STD
    assert model.preprocessing.input_size == (3, 32, 32) and model.preprocessing.crop_pct == 1.0
    # eval normalises as that project does
    folder = tmp_path / "test"
    write_tree(folder, {f"c{i}": 1 for i in range(10)}, size=(32, 32))
    images = torch.stack([resnets.deploy.decode_image(p) for p in sorted(folder.rglob("*.png"))]).float() / 255
    normalised = (images - torch.tensor(IMAGENET_MEAN)[:, None, None]) / torch.tensor(IMAGENET_STD)[:, None, None]
    with torch.no_grad():
        logits = model.eval()(normalised)
        cifar = (images - torch.tensor(CIFAR10_MEAN)[:, None, None]) / torch.tensor(CIFAR10_STD)[:, None, None]
        assert not torch.allclose(model(cifar), logits, atol=1e-3)  # the normalisation shows in the outputs
    code, out, err = _cli(capsys, "eval", "resnet20", "--weights", str(tmp_path / "resnet20-12fca82f.th"),
                          "--data", str(folder), "--amp", "off", "--json")
    expected = torch.nn.functional.cross_entropy(logits, torch.arange(10)).item()
    assert code == 0 and json.loads(out)["loss"] == pytest.approx(expected, rel=1e-4)


# -- recipes and the README's own commands ---------------------------------------------------------------


def test_a_custom_recipe_keeps_its_iterations_without_data(tmp_path):
    import torch

    from resnets.train import TrainOptions
    from resnets.train.rundir import resolve_run
    recipe = tmp_path / "mine.toml"
    recipe.write_text("iterations = 30\nevaluations = 3\nbatch_size = 16\nlr = 0.05\n")
    record, _ = resolve_run(TrainOptions(model="resnet20", out=tmp_path / "run", recipe=str(recipe)), 1,
                            torch.device("cpu"))
    assert record.recipe.iterations == 30 and record.recipe.evaluations == 3
    assert record.recipe.val_size == 400 and record.data == "sample:cifar10"  # the sample's hold-out
    # without --recipe, the paper's recipe shortened for the sample, as before
    record, _ = resolve_run(TrainOptions(model="resnet20", out=tmp_path / "run2"), 1, torch.device("cpu"))
    assert record.recipe.iterations == 200 and record.recipe.evaluations == 10
    # naming the sample is the same run as leaving --data out (the paper recipe's 5,000-image hold-out
    # would not fit its 2,000 images)
    named, _ = resolve_run(TrainOptions(model="resnet20", out=tmp_path / "run3", data="sample:cifar10"), 1,
                           torch.device("cpu"))
    assert named == record


@pytest.mark.slow
def test_the_readme_gradual_freeze_bn_finetune_command_runs(tmp_path, capsys, monkeypatch):
    """README: resnets finetune resnet18 --weights resnet18-f37072fd.pth --data defects/ --out runs/gradual
    --strategy gradual --freeze-bn (a torchvision-layout file here, and a short run)."""
    import torch
    monkeypatch.chdir(tmp_path)
    torch.save(resnets.create_model("resnet18").state_dict(), "resnet18-f37072fd.pth")
    write_tree(tmp_path / "defects" / "train", {"scratch": 6, "dent": 6, "ok": 6}, size=(40, 40))
    code, out, err = _cli(capsys, "finetune", "resnet18", "--weights", "resnet18-f37072fd.pth", "--data", "defects/",
                          "--out", "runs/gradual", "--strategy", "gradual", "--freeze-bn", "--iterations", "6",
                          "--batch-size", "6", "--val-size", "3", "--image-size", "32", "--amp", "off")
    assert code == 0, err
    assert "finished fine-tuning resnet18 (gradual)" in out and (tmp_path / "runs/gradual/best.safetensors").is_file()


# -- smaller things --------------------------------------------------------------------------------------


def test_written_files_get_the_umask_permissions_like_any_other_file(tmp_path):
    import os
    import stat

    from resnets._io import atomic_write_text
    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "config.json", "{}")
        (tmp_path / "plain.txt").write_text("")
        save_weights(resnets.create_model("resnet20"), tmp_path / "w.safetensors")
    finally:
        os.umask(old)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in tmp_path.iterdir()}
    assert modes == {"config.json": 0o644, "plain.txt": 0o644, "w.safetensors": 0o644}  # never world-writable


def test_info_says_variant_only_for_bottleneck_nets(capsys):
    code, out, _ = _cli(capsys, "info", "resnet18")
    assert code == 0 and "depth 18, shortcut B\n" in out and "v1.5" not in out
    code, out, _ = _cli(capsys, "info", "resnet50", "--json")
    assert json.loads(out)["variant"] == "v1.5"


def test_train_help_lists_every_shipped_recipe(capsys):
    from resnets.train import list_recipes
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split()).replace("- ", "-")  # argparse may wrap after a hyphen
    assert len(list_recipes()) >= 6 and all(name in text for name in list_recipes())


@pytest.mark.parametrize("fmt, out, says", [("onnx", "x.pt", "end in .onnx, not '.pt' (the ending of torchscript"),
                                            ("torchscript", "x.onnx", "end in .pt or .pth"),
                                            ("onnx", "model", "not 'nothing'")])
def test_export_refuses_an_extension_that_does_not_match_the_format(tmp_path, capsys, fmt, out, says):
    code, stdout, err = _cli(capsys, "export", "resnet20", "--random-weights", "--format", fmt, "--out",
                             str(tmp_path / out))
    assert code == 2 and says in err and err.count("\n") == 1 and not (tmp_path / out).exists()


def test_plot_labels_two_runs_of_one_model_apart(tmp_path):
    from resnets.train.plot import plot_runs, run_labels
    runs = []
    for name, model in (("r20-lr0.1", "resnet20"), ("r20-lr0.01", "resnet20"), ("p20", "plain20")):
        run = tmp_path / name
        run.mkdir()
        (run / "config.json").write_text(json.dumps({"model": model}))
        (run / "metrics.jsonl").write_text(json.dumps({"step": 10, "train_error": 50.0, "val_error": 55.0}) + "\n")
        runs.append(run)
    assert run_labels(runs) == ["resnet20 (r20-lr0.1)", "resnet20 (r20-lr0.01)", "plain20"]
    assert plot_runs(runs, tmp_path / "curves.png").stat().st_size > 1000


def test_images_decode_the_same_without_torchvision_decoders(tmp_path, monkeypatch):
    """torchvision 0.29 deprecates its image decoders: without them, Pillow gives the same pixels."""
    import sys

    import numpy as np

    from data_helpers import encode
    from resnets.data.sources import decode_bytes
    rng = np.random.default_rng(0)
    blobs = [encode(rng.integers(0, 256, (24, 20, 3), dtype=np.uint8), fmt) for fmt in ("JPEG", "PNG")]
    with_torchvision = [decode_bytes(b, "x") for b in blobs]
    monkeypatch.setitem(sys.modules, "torchvision.io", None)
    for blob, expected in zip(blobs, with_torchvision):
        assert (decode_bytes(blob, "x") == expected).all()


def test_a_metrics_line_torn_by_a_kill_is_dropped_on_resume(tmp_path):
    from resnets.train import RunDirError, read_metrics
    from resnets.train.checkpoint import append_metrics, truncate_metrics
    for step in (10, 20, 30):
        append_metrics(tmp_path, {"step": step, "val_top1": step / 100})
    path = tmp_path / "metrics.jsonl"
    with open(path, "a") as f:  # the kill came in the middle of the line of step 40
        f.write('{"step": 40, "val_to')
    assert [r["step"] for r in read_metrics(tmp_path)] == [10, 20, 30]
    truncate_metrics(tmp_path, 30)  # resuming from the checkpoint of step 30: the torn line must go
    append_metrics(tmp_path, {"step": 40, "val_top1": 0.4})
    assert [r["step"] for r in read_metrics(tmp_path)] == [10, 20, 30, 40]
    # a broken line anywhere but at a torn end is not a kill's doing: refused, naming the line
    path.write_text('{"step": 10}\n{"step": 2\n{"step": 30}\n')
    with pytest.raises(RunDirError, match="metrics.jsonl, line 2: not valid JSON"):
        read_metrics(tmp_path)
    path.write_text('{"step": 10}\n{"step": 2\n')  # the last line, but complete with its newline
    with pytest.raises(RunDirError, match="line 2"):
        read_metrics(tmp_path)
