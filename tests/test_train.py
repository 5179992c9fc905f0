"""The training engine: recipes, exact resume, torchrun, real learning, bad input."""

import dataclasses
import hashlib
import io
import json
import math
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from cli_helpers import RESNETS, cli_env, run_cli, run_main
from resnets import create_model
from resnets.train import (
    Recipe,
    RecipeError,
    RunDirError,
    TrainingDiverged,
    TrainOptions,
    learning_rate,
    train,
)
from resnets.train.checkpoint import read_sessions
from resnets.train.recipe import list_recipes, load_recipe

SYNTHETIC = "synthetic:32x32:10:384"
SMALL_RUN = ["--data", SYNTHETIC, "--iterations", "24", "--batch-size", "32", "--evaluations", "12",
             "--val-size", "64", "--deterministic", "--no-progress"]


def tree_digest(path: Path) -> dict:
    return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(path.rglob("*")) if p.is_file()}


def test_shipped_recipes_match_the_papers():
    assert {"paper-cifar", "paper-imagenet", "modern"} <= set(list_recipes())
    cifar = load_recipe("paper-cifar")
    assert (cifar.iterations, cifar.batch_size, cifar.lr, cifar.momentum, cifar.weight_decay) == \
        (64000, 128, 0.1, 0.9, 1e-4)
    assert cifar.milestones == [32000, 48000] and cifar.gamma == 0.1 and cifar.val_size == 5000
    imagenet = load_recipe("paper-imagenet")
    assert (imagenet.epochs, imagenet.batch_size, imagenet.milestones,
            imagenet.weight_decay) == (90, 256, [30, 60], 1e-4)
    modern = load_recipe("modern")
    assert modern.schedule == "cosine" and modern.label_smoothing == 0.1 and modern.ema_decay > 0
    assert modern.no_weight_decay_on_norm_and_bias and modern.warmup > 0
    imagenette = load_recipe("imagenette")
    assert imagenette.train_image_size < imagenette.image_size
    # cifar-augment is cifar-cosine plus the two augmentations, nothing else
    cosine, augment = load_recipe("cifar-cosine"), load_recipe("cifar-augment")
    assert augment.trivial_augment and augment.random_erasing == 0.25 and not cosine.trivial_augment
    assert dataclasses.replace(augment, name=cosine.name, description=cosine.description, trivial_augment=False,
                               random_erasing=0.0) == cosine


def test_paper_cifar_learning_rate():
    recipe = load_recipe("paper-cifar")
    lr = [learning_rate(recipe, s, 64000, 1.0, depth=20) for s in (0, 399, 31999, 32000, 47999, 48000, 63999)]
    assert lr == pytest.approx([0.1, 0.1, 0.1, 0.01, 0.01, 0.001, 0.001])
    # ResNet-110: 0.01 for the first 400 iterations, then 0.1
    assert [learning_rate(recipe, s, 64000, 1.0, depth=110) for s in (0, 399, 400)] == pytest.approx([0.01, 0.01, 0.1])
    short = recipe.with_length(iterations=6400)
    assert short.milestones == [3200, 4800]
    cosine = Recipe(epochs=10, schedule="cosine", warmup=1, lr=1.0)
    values = [learning_rate(cosine, s, 100, 10.0) for s in range(100)]
    assert values[0] == pytest.approx(0.1) and values[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(values[10:], values[11:])) and values[-1] < 0.01


def test_recipe_errors_name_the_key(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("iterations = 10\n[optimizer]\nlearning_rate = 0.1\n")
    with pytest.raises(RecipeError, match="unknown key 'optimizer.learning_rate'"):
        load_recipe(bad)
    bad.write_text('iterations = 10\nlr = "fast"\n')
    with pytest.raises(RecipeError, match="'lr' must be a number"):
        load_recipe(bad)
    bad.write_text("epochs = 10\n[data]\ntrain_image_size = 100000\n")
    with pytest.raises(RecipeError, match="train_image_size must be at least 8 and at most 4096"):
        load_recipe(bad)
    bad.write_text("epochs = 10\n[data]\nrandom_erasing = 1.5\n")
    with pytest.raises(RecipeError, match="random_erasing must be at least 0 and at most 1, got 1.5"):
        load_recipe(bad)
    bad.write_text("epochs = 10\niterations = 10\n")
    with pytest.raises(RecipeError, match="exactly one"):
        load_recipe(bad)
    with pytest.raises(RecipeError, match="unknown recipe 'paper-cifra'"):
        load_recipe("paper-cifra")
    run_dir = tmp_path / "run"
    bad.write_text("iterations = 10\nbatch_size = 16.5\n")
    result = run_cli("train", "resnet20", "--data", SYNTHETIC, "--recipe", str(bad), "--out", str(run_dir))
    assert result.returncode == 2 and "'batch_size' must be an integer" in result.stderr
    assert not run_dir.exists()


def _weights(run_dir: Path) -> dict:
    return load_file(str(run_dir / "last.safetensors"))


@pytest.mark.slow
def test_resume_after_sigkill_is_bitwise_exact(tmp_path):
    def start(run_dir: Path) -> tuple[subprocess.Popen, float]:
        """The training process and the moment its run directory got config.json (written just before the
        first step): start-up, which a loaded machine stretches, is not counted in the window a kill aims at."""
        process = subprocess.Popen([*RESNETS, "train", "resnet20", *SMALL_RUN, "--out", str(run_dir)],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=cli_env())
        while not (run_dir / "config.json").exists() and process.poll() is None:
            time.sleep(0.005)
        return process, time.monotonic()

    reference = tmp_path / "reference"
    process, began = start(reference)
    assert process.wait(timeout=300) == 0
    training = time.monotonic() - began  # the steps, evaluations and checkpoints, and the exit

    rng = random.Random()
    killed_run = tmp_path / "killed"
    for attempt in range(8):
        if killed_run.exists():
            import shutil
            shutil.rmtree(killed_run)
        process, began = start(killed_run)
        # a random moment of the training, from its first steps to near its end
        time.sleep(max(0.0, began + rng.uniform(0.05, 0.8) * training - time.monotonic()))
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
            process.wait()
            pointer = killed_run / "last.json"
            # a kill after the final checkpoint (while the process was exiting) interrupted nothing: try again
            if not pointer.exists() or json.loads(pointer.read_text())["step"] < 24:
                break
        process.wait()
    else:
        pytest.fail("no kill landed while the run was training")
    assert process.returncode == -signal.SIGKILL
    killed_at = 0
    if (killed_run / "last.json").exists():
        killed_at = json.loads((killed_run / "last.json").read_text())["step"]
        assert killed_at < 24

    resumed = run_cli("train", "resnet20", *SMALL_RUN, "--out", str(killed_run), "--resume")
    assert resumed.returncode == 0, resumed.stderr
    expected, got = _weights(reference), _weights(killed_run)
    assert expected.keys() == got.keys()
    for key in expected:
        assert torch.equal(expected[key], got[key]), key
    rows = [json.loads(line) for line in (killed_run / "metrics.jsonl").read_text().splitlines()]
    reference_rows = [json.loads(line) for line in (reference / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [r["step"] for r in reference_rows]
    assert [r["train_loss"] for r in rows] == [r["train_loss"] for r in reference_rows]
    assert [r["val_loss"] for r in rows] == [r["val_loss"] for r in reference_rows]
    # each start and resume is logged with the step it started from
    (started,) = read_sessions(reference)
    assert started["from_step"] == 0 and started["compile"] is False and started["threads"] >= 1
    sessions = read_sessions(killed_run)
    assert sessions[0]["from_step"] == 0 and sessions[-1]["from_step"] == killed_at


@pytest.mark.slow
def test_two_processes_under_torchrun_match_one_process_with_two_micro_batches(tmp_path):
    common = ["--data", SYNTHETIC, "--iterations", "6", "--batch-size", "32", "--evaluations", "2",
              "--val-size", "64", "--no-progress", "--seed", "3"]
    single = tmp_path / "single"
    result = run_cli("train", "resnet20", *common, "--micro-batches", "2", "--out", str(single))
    assert result.returncode == 0, result.stderr
    distributed = tmp_path / "torchrun"
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         "-m", "resnets", "train", "resnet20", *common, "--keep-snapshots", "--out", str(distributed)],
        capture_output=True, text=True, timeout=300, env=cli_env())
    assert result.returncode == 0, result.stderr[-3000:]
    config = json.loads((distributed / "config.json").read_text())
    assert config["world_size"] == 2
    a, b = _weights(single), _weights(distributed)
    assert a.keys() == b.keys()
    for key in a:
        if key.endswith("num_batches_tracked"):
            continue
        torch.testing.assert_close(b[key], a[key], atol=1e-5, rtol=0, msg=key)
    # and the runs really trained: every parameter moved from the run's own initial weights (snapshot of step 0)
    assert sum(1 for line in (distributed / "metrics.jsonl").read_text().splitlines() if line) == 2
    initial = load_file(str(distributed / "snapshots" / "step-00000000.safetensors"))
    assert initial.keys() == b.keys()
    parameters = [name for name, _ in create_model("resnet20").named_parameters()]
    assert parameters and set(parameters) <= initial.keys()
    unmoved = [name for name in parameters if torch.equal(initial[name], b[name])]
    assert not unmoved, f"unchanged after 6 steps: {unmoved}"


@pytest.mark.slow
def test_loss_falls_on_real_images(tmp_path):
    # the CIFAR-10 sample shipped with the package: 2,000 real images
    result = train(TrainOptions(model="resnet20", out=tmp_path / "run", data="sample:cifar10", iterations=60,
                                batch_size=64, evaluations=3, val_size=400, progress=False,
                                log=io.StringIO()))
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["train_loss"] < rows[0]["train_loss"] - 0.15
    # 60 iterations leave validation accuracy noisy (16.8% with one thread, 22.3% with two):
    # require held-out loss below a uniform guess's ln(10) and accuracy over 2.5 standard
    # deviations of a guess's (10% of 400 images, 1.5 points) above chance
    assert rows[-1]["val_loss"] < math.log(10) - 0.1
    assert result["val_top1"] > 14.0
    assert result["val_n"] == 400


@pytest.mark.slow
def test_eval_reproduces_the_runs_validation_accuracy(tmp_path):
    run_dir = tmp_path / "run"
    assert run_cli("train", "resnet20", *SMALL_RUN, "--out", str(run_dir)).returncode == 0
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    last = rows[-1]
    png = tmp_path / "confusion.png"
    result = run_main("eval", "resnet20", "--weights", str(run_dir / "last.safetensors"), "--data", SYNTHETIC,
                     "--json", "--confusion", str(png), "--per-class")
    assert result.returncode == 0, result.stderr
    metrics = json.loads(result.stdout)
    assert {"top1", "top5", "loss", "n"} <= set(metrics)
    assert metrics["n"] == 64 == last["val_n"]
    assert metrics["top1"] == pytest.approx(last["val_top1"])
    assert metrics["loss"] == pytest.approx(last["val_loss"], rel=1e-5)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(metrics["per_class_accuracy"]) == 10
    through_onnx = run_main("eval", "resnet20", "--weights", str(run_dir / "last.safetensors"), "--data", SYNTHETIC,
                           "--json", "--backend", "onnxruntime")
    assert through_onnx.returncode == 0, through_onnx.stderr
    onnx_metrics = json.loads(through_onnx.stdout)
    assert onnx_metrics["backend"] == "onnxruntime" and onnx_metrics["n"] == 64
    # the session computes in fp32: it matches the plain model evaluated in fp32 (the default, like the
    # run's own evaluations, is bf16 where the CPU has it)
    fp32 = run_main("eval", "resnet20", "--weights", str(run_dir / "last.safetensors"), "--data", SYNTHETIC,
                   "--json", "--amp", "off")
    assert fp32.returncode == 0, fp32.stderr
    fp32_metrics = json.loads(fp32.stdout)
    assert fp32_metrics["amp"] == "off" and metrics["amp"] == json.loads((run_dir / "config.json").read_text())["amp"]
    assert abs(onnx_metrics["top1"] - fp32_metrics["top1"]) <= 100 / 64  # at most one borderline image differs
    assert onnx_metrics["loss"] == pytest.approx(fp32_metrics["loss"], rel=1e-3)
    plotted = run_main("plot", str(run_dir))
    assert plotted.returncode == 0, plotted.stderr
    assert (run_dir / "curves.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow
def test_run_dir_of_another_model_is_refused_and_kept(tmp_path):
    run_dir = tmp_path / "run"
    assert run_cli("train", "resnet20", *SMALL_RUN[:2], "--iterations", "2", "--batch-size", "32",
                   "--evaluations", "1", "--val-size", "64", "--out", str(run_dir)).returncode == 0
    before = tree_digest(run_dir)
    for args in (["plain20"], ["plain20", "--resume"], ["resnet20"]):
        result = run_main("train", *args, "--data", SYNTHETIC, "--out", str(run_dir))
        assert result.returncode == 2
        assert ("holds a run of 'resnet20'" in result.stderr) or ("pass --resume" in result.stderr)
    assert tree_digest(run_dir) == before


@pytest.mark.slow
def test_corrupt_checkpoint_on_resume_is_a_clear_error(tmp_path):
    run_dir = tmp_path / "run"
    args = ["--data", SYNTHETIC, "--iterations", "4", "--batch-size", "32", "--evaluations", "2", "--val-size", "64"]
    assert run_cli("train", "resnet20", *args, "--out", str(run_dir)).returncode == 0
    record = json.loads((run_dir / "last.json").read_text())
    state = run_dir / record["state"]
    state.write_bytes(state.read_bytes()[: len(state.read_bytes()) // 2])  # truncated
    before = tree_digest(run_dir)
    result = run_cli("train", "resnet20", *args, "--out", str(run_dir), "--resume")
    assert result.returncode == 2
    assert "corrupt" in result.stderr and record["state"] in result.stderr
    assert tree_digest(run_dir) == before


def test_missing_data_is_a_clear_error(tmp_path):
    result = run_cli("train", "resnet20", "--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "run"))
    assert result.returncode == 2 and "nowhere" in result.stderr and "not found" in result.stderr
    assert not (tmp_path / "run").exists()


def test_diverging_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    run_dir = tmp_path / "run"
    options = TrainOptions(model="resnet20", out=run_dir, data=SYNTHETIC, batch_size=32, val_size=64, iterations=20,
                           evaluations=20, lr=1e30, progress=False, log=io.StringIO())
    with pytest.raises(TrainingDiverged, match=r"became (nan|inf) at step (\d+).*last good checkpoint \(step \d+\)") \
            as caught:
        train(options)
    diverged_at = int(caught.value.args[0].split("at step ")[1].split(";")[0])
    record = json.loads((run_dir / "last.json").read_text())
    assert record["step"] < diverged_at
    assert f"(step {record['step']})" in str(caught.value)
    kept = load_file(str(run_dir / record["weights"]))
    assert all(torch.isfinite(v.float()).all() for v in kept.values())
    assert torch.equal(kept["fc.weight"], _weights(run_dir)["fc.weight"])


def test_resume_with_other_options_is_refused(tmp_path):
    run_dir = tmp_path / "run"
    common = dict(model="resnet20", out=run_dir, data=SYNTHETIC, batch_size=32, val_size=64, progress=False,
                  log=io.StringIO())
    train(TrainOptions(**common, iterations=2, evaluations=1))
    with pytest.raises(RunDirError, match="seed"):
        train(TrainOptions(**common, iterations=2, evaluations=1, resume=True, seed=5))


def test_progress_lines_say_how_long_is_left(tmp_path, monkeypatch):
    from resnets.train import progress

    # a clock that advances 1 s at each reading: the pace of a window is known whatever the machine
    clock = iter(range(10**6))
    monkeypatch.setattr(progress.time, "perf_counter", lambda: float(next(clock)))
    log = io.StringIO()
    train(TrainOptions(model="resnet20", out=tmp_path / "run", data=SYNTHETIC, batch_size=32, val_size=64,
                       iterations=6, evaluations=3, progress=False, log=log))
    lines = [line for line in log.getvalue().splitlines() if line.startswith("step ")]
    assert len(lines) == 3
    left = [int(line.rsplit("| ", 1)[1].removesuffix("s left")) for line in lines[:2]]
    # each window is 2 steps; 4 and then 2 steps remain: the second estimate is half the first
    assert left[0] > 0 and left[1] * 2 == pytest.approx(left[0], abs=2)
    assert lines[2].endswith("images/s")  # finished: nothing left to estimate
    assert [progress.format_duration(s) for s in (12, 270, 7500)] == ["12s", "4m30s", "2h05m"]


def test_compiled_training_asks_for_static_shapes(tmp_path, monkeypatch):
    """--compile-mode compiles the model with dynamic=False: every batch has one shape, and without it a
    second network trained in the same process got a dynamic-shape graph (seen on a GPU). torch.compile is
    replaced by a recorder here, so the test takes no compile time."""
    calls = []

    def recorder(module, **kwargs):
        calls.append(kwargs)
        return module

    monkeypatch.setattr(torch, "compile", recorder)
    train(TrainOptions(model="resnet20", out=tmp_path / "run", data=SYNTHETIC, iterations=2, batch_size=32,
                       evaluations=1, val_size=64, compile_mode="reduce-overhead", progress=False, log=io.StringIO()))
    assert calls == [dict(mode="reduce-overhead", dynamic=False)]
    assert read_sessions(tmp_path / "run")[0]["compile_mode"] == "reduce-overhead"
