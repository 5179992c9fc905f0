"""What a careless or hostile command line gets: one line and exit code 2 before any work, and no
file of the user's overwritten or left half-written."""

from __future__ import annotations

import errno
import json
import os
import re

import pytest
import torch

import resnets
from resnets.data.sources import BadInputWarning
from resnets.errors import UsageError
from resnets.train import TrainOptions
from resnets.cli import main
from resnets.interpret import output_names


def _cli(capsys, *args: str) -> tuple[int, str, str]:
    try:
        code = main(list(args))
    except SystemExit as exit:  # argparse refuses a value itself (usage line, then one error line)
        code = exit.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _weights(tmp_path, name="w.safetensors", **tensors) -> str:
    model = resnets.create_model("resnet20")
    path = tmp_path / name
    resnets.save_weights(model, path)
    if tensors:
        from safetensors.torch import load_file, save_file
        state = {**load_file(str(path)), **tensors}
        save_file(state, str(path))
    return str(path)


@pytest.mark.parametrize("command, says", [
    (["predict", "resnet20", "--random-weights", "--batch-size", "-1", "x.jpg"], "--batch-size: must be at least 1"),
    (["predict", "resnet20", "--random-weights", "--batch-size", "0", "x.jpg"], "--batch-size: must be at least 1"),
    (["predict", "resnet20", "--top-k", "0", "x.jpg"], "--top-k: must be at least 1, got 0"),
    (["explain", "resnet20", "--random-weights", "--top-k", "0", "--out", "o", "x.jpg"], "--top-k: must be at least 1"),
    (["predict", "resnet20", "--random-weights", "--calibration-count", "0", "x.jpg"], "--calibration-count"),
    (["predict", "resnet20", "--random-weights", "--num-threads", "0", "x.jpg"], "--num-threads: must be at least 1"),
    (["serve", "resnet20", "--random-weights", "--max-accuracy-loss", "101"],
     "--max-accuracy-loss: must be at least 0 and at most 100, got 101"),
    (["serve", "resnet20", "--random-weights", "--port", "99999"], "--port: must be at least 0 and at most 65535"),
    (["serve", "resnet20", "--random-weights", "--max-concurrent", "0"], "--max-concurrent"),
    (["serve", "resnet20", "--random-weights", "--read-timeout", "0"], "--read-timeout: must be more than 0"),
    (["export", "resnet20", "--random-weights", "--format", "onnx", "--out", "m.onnx", "--tolerance", "-1"],
     "--tolerance: must be more than 0"),
    (["info", "resnet20", "--input-size", "-5"], "--input-size: must be at least 1"),
    (["info", "resnet50", "--input-size", "99999999999999999999"], "at most 4096"),
    (["eval", "resnet20", "--weights", "w", "--data", "d", "--num-workers", "-1"], "--num-workers"),
    (["features", "resnet20", "--data", "d", "--out", "f.npy", "--batch-size", "x"], "expected an integer, got 'x'"),
    (["train", "resnet20", "--lr", "0"], "--lr: must be more than 0, got 0"),
    (["train", "resnet20", "--seed", "-1"], "--seed: must be at least 0 and at most 9223372036854775807, got -1"),
    (["study", "gradients", "--seed", "99999999999999999999999", "--out", "s"], "--seed: must be at least 0"),
    (["train", "resnet20", "--epochs", "inf"], "--epochs: must be a finite number, got inf"),
    (["train", "resnet20", "--distill-alpha", "1.5"], "--distill-alpha: must be more than 0 and at most 1"),
    (["finetune", "resnet20", "--weights", "w", "--data", "d", "--head-lr-mult", "0"], "--head-lr-mult: must be more"),
    (["finetune", "resnet20", "--weights", "w", "--data", "d", "--image-size", "4"],
     "--image-size: must be at least 8"),
])
def test_numbers_out_of_range_are_refused_by_the_parser(tmp_path, capsys, monkeypatch, command, says):
    monkeypatch.chdir(tmp_path)
    code, out, err = _cli(capsys, *command)
    assert code == 2 and out == "" and says in err.strip().splitlines()[-1]
    assert list(tmp_path.iterdir()) == []


def _api_calls():
    from resnets.data import DataConfig, build_loaders
    from resnets.deploy import SessionConfig, export_model, load_images
    from resnets.interpret import explain_images
    model = resnets.create_model("resnet20")
    pre = model.preprocessing
    yield "ServerConfig(max_concurrent=0)", "max_concurrent must be at least 1, got 0", \
        lambda: _server_config(max_concurrent=0)
    yield "ServerConfig(port=99999)", "port must be at least 0 and at most 65535", lambda: _server_config(port=99999)
    yield "ServerConfig(read_timeout=nan)", "read_timeout must be a finite number, got nan", \
        lambda: _server_config(read_timeout=float("nan"))
    yield "ServerConfig(top_k=2.5)", "top_k must be an integer, got 2.5", lambda: _server_config(top_k=2.5)
    yield "SessionConfig(calibration_images=0)", "calibration_images must be at least 1", \
        lambda: SessionConfig(calibration_images=0)
    yield "SessionConfig(num_threads=True)", "num_threads must be an integer, got True", \
        lambda: SessionConfig(num_threads=True)
    yield "load_images(count=0)", "count must be at least 1, got 0", lambda: load_images("sample:cifar10", pre, count=0)
    yield "export_model(tolerance=-1)", "tolerance must be more than 0", \
        lambda: export_model(model, "never.onnx", "onnx", tolerance=-1)
    yield "explain_images(top_k=0)", "top_k must be at least 1, got 0", \
        lambda: explain_images(model, torch.zeros(1, 3, 32, 32), ["a"], "never", top_k=0)
    yield "TrainOptions(lr=inf)", "lr must be a finite number, got inf", \
        lambda: TrainOptions(model="resnet20", out="never", lr=float("inf"))
    yield "TrainOptions(batch_size=0)", "batch_size must be at least 1 and at most 1048576, got 0", \
        lambda: TrainOptions(model="resnet20", out="never", batch_size=0)
    yield "build_loaders(seed=-1)", "seed must be at least 0", lambda: build_loaders("sample:cifar10", seed=-1)
    yield "TrainOptions(seed=-1)", "seed must be at least 0", lambda: TrainOptions(model="resnet20", out="o", seed=-1)
    yield "build_loaders(image_size=-5)", "image_size must be at least 8 and at most 4096, got -5", \
        lambda: build_loaders("sample:cifar10", image_size=-5)
    yield "build_loaders(config=DataConfig(num_workers=-1))", "num_workers must be at least 0", \
        lambda: build_loaders("sample:cifar10", DataConfig(num_workers=-1))


def _server_config(**options):
    pytest.importorskip("fastapi")
    from resnets.deploy.server import ServerConfig
    return ServerConfig(**options)


def test_numbers_out_of_range_are_refused_by_the_python_api_too(tmp_path, monkeypatch):
    # the command line's argparse types refuse these first; a Python caller meets the same bounds
    monkeypatch.chdir(tmp_path)
    for call, says, run in _api_calls():
        with pytest.raises(UsageError) as caught:
            run()
        assert says in str(caught.value), call
    assert list(tmp_path.iterdir()) == []


def test_model_options_the_model_does_not_take_are_one_line(tmp_path, capsys):
    with pytest.raises(resnets.ResnetsError, match="resnet20 takes no option 'foo'"):
        resnets.create_model("resnet20", foo=1)
    with pytest.raises(resnets.ResnetsError, match="zero_init_residual must be true or false, got 'maybe'"):
        resnets.create_model("resnet20", zero_init_residual="maybe")
    for arg, says in (("num_classes=3", "set by the training itself, from the data's classes"),
                      ("features_only=true", "a backbone without a classifier cannot be trained on labels"),
                      ("foo=1", "takes no option 'foo'")):
        code, _, err = _cli(capsys, "train", "resnet20", "--data", "synthetic:32x32:4:64", "--val-size", "16",
                            "--batch-size", "16", "--iterations", "1", "--model-arg", arg,
                            "--out", str(tmp_path / "run"))
        assert code == 2 and err.count("\n") == 1 and says in err
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_paths_the_system_refuses_are_one_line(tmp_path, capsys):
    afile = tmp_path / "afile"
    afile.write_text("mine")
    # a file where the run directory goes; a folder under a file
    code, _, err = _cli(capsys, "train", "resnet20", "--data", "synthetic:32x32:4:64", "--iterations", "1",
                        "--val-size", "16", "--batch-size", "16", "--out", str(afile))
    assert code == 2 and err.count("\n") == 1 and str(afile) in err
    code, _, err = _cli(capsys, "export", "resnet20", "--random-weights", "--format", "torchscript",
                        "--out", str(afile / "m.pt"))
    assert code == 2 and err.splitlines()[-1].endswith(f"{afile} is a file where a directory is needed; choose "
                                                        f"another path")
    assert afile.read_text() == "mine"
    # figures: a name that is not .png, or a folder, is refused before the work
    code, _, err = _cli(capsys, "eval", "resnet20", "--weights", _weights(tmp_path), "--data",
                        "synthetic:32x32:10:8", "--confusion", str(tmp_path))
    assert code == 2 and "--confusion" in err and "expected the name of a .png file" in err
    code, _, err = _cli(capsys, "plot", str(tmp_path), "--out", str(tmp_path / "p.txt"))
    assert code == 2 and "expected the name of a .png file" in err
    # a place it cannot be written, found before the evaluation whose result it would lose
    code, out, err = _cli(capsys, "eval", "resnet20", "--weights", _weights(tmp_path), "--data",
                          "synthetic:32x32:10:8", "--confusion", str(afile / "sub" / "c.png"))
    assert code == 2 and out == "" and f"cannot write under {afile} (not a directory)" in err
    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)
    code, _, err = _cli(capsys, "predict", "resnet20", "--random-weights", str(fifo))
    assert code == 2 and "is not a regular file or a directory" in err
    code, _, err = _cli(capsys, "train", "resnet20", "--resume")
    assert code == 2 and "--resume needs --out" in err


def test_an_unknown_model_is_named_before_its_weights(capsys):
    for command in (["predict", "resnet21", "x.jpg"], ["predict", "resnet21", "--random-weights", "x.jpg"],
                    ["export", "resnet21", "--format", "onnx", "--out", "m.onnx"]):
        code, out, err = _cli(capsys, *command)
        assert code == 2 and out == "" and err.startswith(f"resnets {command[0]}: error: unknown model 'resnet21'"), err


def test_features_never_overwrite_named_weights(tmp_path, capsys, monkeypatch):
    # the shipped file of named weights is an input too (a copy stands in for the package's own here)
    from resnets.weights import named
    shipped = tmp_path / "files"
    shipped.mkdir()
    file = named.get_weights("resnet20.cifar10").file
    (shipped / file).write_bytes((named.FILES_DIR / file).read_bytes())
    monkeypatch.setattr(named, "FILES_DIR", shipped)
    before = (shipped / file).read_bytes()
    for weights in (["--weights", "cifar10"], []):  # named, and the default named weights
        code, _, err = _cli(capsys, "features", "resnet20", *weights, "--data", "synthetic:32x32:4:8",
                            "--out", str(shipped / file))
        assert code == 2 and "would overwrite" in err and (shipped / file).read_bytes() == before


def test_features_never_overwrite_the_weights_they_read(tmp_path, capsys):
    weights = _weights(tmp_path)
    before = open(weights, "rb").read()
    code, _, err = _cli(capsys, "features", "resnet20", "--weights", weights, "--data", "synthetic:32x32:4:8",
                        "--out", weights)
    assert code == 2 and "would overwrite" in err and open(weights, "rb").read() == before
    sidecar_clash = tmp_path / "w.json"
    sidecar_clash.write_text("{}")
    code, _, err = _cli(capsys, "features", "resnet20", "--weights", weights, "--data", str(sidecar_clash),
                        "--out", str(tmp_path / "w.npy"))
    assert code == 2 and "would overwrite" in err and sidecar_clash.read_text() == "{}"


def test_explanations_of_images_with_one_name_do_not_overwrite_each_other(tmp_path):
    paths = [tmp_path / "good.jpg", tmp_path / "good.png", tmp_path / "a" / "good.jpg", tmp_path / "b" / "x.jpg"]
    names = output_names(paths)
    assert len(set(names)) == len(paths)
    assert names[:2] == [f"{tmp_path.name}_good_jpg", f"{tmp_path.name}_good_png"]
    assert output_names([tmp_path / "x.jpg", tmp_path / "y.jpg"]) == ["x", "y"]  # plain stems where they differ
    roots = [tmp_path / "r1" / "c" / "a.jpg", tmp_path / "r2" / "c" / "a.jpg"]
    assert output_names(roots) == ["c_a_jpg", "c_a_jpg_2"]
    from resnets.interpret import explain_images
    with pytest.raises(UsageError, match="the name 'a' is given to more than one image"):
        explain_images(resnets.create_model("resnet20"), torch.zeros(2, 3, 32, 32), ["a", "a"], tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("tensor, says", [
    ({"conv1.weight": torch.full((16, 3, 3, 3), float("nan"))}, "conv1.weight holds NaN or infinite values"),
    ({"bn1.bias": torch.zeros(16, dtype=torch.int64)}, "bn1.bias holds torch.int64 values"),
    ({"conv1.weight": torch.zeros(7, 7)}, "conv1.weight: file (7, 7) vs model (16, 3, 3, 3)"),
])
def test_weights_no_network_could_use_are_refused(tmp_path, capsys, tensor, says):
    code, out, err = _cli(capsys, "eval", "resnet20", "--weights", _weights(tmp_path, **tensor),
                          "--data", "synthetic:32x32:10:8")
    assert code == 2 and out == "" and says in err


def test_a_safetensors_header_longer_than_its_file_is_named(tmp_path):
    path = tmp_path / "cut.safetensors"
    path.write_bytes((1000).to_bytes(8, "little") + b"{}")
    with pytest.raises(resnets.ResnetsError, match="header claims 1,000 bytes, but the file has 10"):
        resnets.create_model("resnet20", weights=str(path))


def test_a_hostile_pickle_is_refused_without_advice_to_run_it(tmp_path):
    class Payload:
        def __reduce__(self):
            return (os.system, ("echo owned",))

    path = tmp_path / "evil.pth"
    torch.save({"conv1.weight": Payload()}, path)
    with pytest.raises(resnets.ResnetsError) as error:
        resnets.create_model("resnet20", weights=str(path))
    message = str(error.value)
    assert "refused to load" in message and "system" in message and "weights_only" not in message


def test_checkpoints_cut_short_are_named_as_truncated(tmp_path):
    model = resnets.create_model("resnet20")
    whole = tmp_path / "whole.pth"
    torch.save(model.state_dict(), whole)
    resnets.save_weights(model, tmp_path / "whole.safetensors")
    data = whole.read_bytes()
    for cut in (100, 10_000, 60_000, len(data) - 100):  # torch.load raised OSError on some of these cuts
        (tmp_path / "cut.pth").write_bytes(data[:cut])
        with pytest.raises(UsageError, match="truncated or damaged; fetch or copy it again"):
            resnets.create_model("resnet20", weights=str(tmp_path / "cut.pth"))
    data = (tmp_path / "whole.safetensors").read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[:-1000])  # header intact, tensors cut
    with pytest.raises(UsageError, match=rf"describes {len(data):,} bytes, the file holds {len(data) - 1000:,}: "
                                         "truncated"):
        resnets.create_model("resnet20", weights=str(tmp_path / "cut.safetensors"))
    # a whole model pickled by torch.save(model) is refused with the way out
    torch.save(model, tmp_path / "model.pth")
    with pytest.raises(UsageError, match=r"a pickled resnets\.models.*save model\.state_dict\(\) instead"):
        resnets.create_model("resnet20", weights=str(tmp_path / "model.pth"))
    # an exported model given as weights
    (tmp_path / "m.onnx").write_bytes(b"\x08\x08\x12\x07pytorch")
    with pytest.raises(UsageError, match="an ONNX model, not a checkpoint of weights"):
        resnets.create_model("resnet20", weights=str(tmp_path / "m.onnx"))


def test_eval_normalisation_must_fit_the_channels_and_divide(tmp_path, capsys):
    weights = _weights(tmp_path)
    for mean, std, says in (("0,0,0,0", "1,1,1,1", "need 3 values each"), ("0,0,0", "0,0,0", "must be positive")):
        code, _, err = _cli(capsys, "eval", "resnet20", "--weights", weights, "--data", "synthetic:32x32:10:8",
                            "--mean", mean, "--std", std)
        assert code == 2 and says in err


def test_recipes_name_what_is_wrong_in_words(tmp_path, capsys):
    from resnets.train.recipe import RecipeError, load_recipe
    cases = [("optimizer = 5\n", "'optimizer' is a section"),
             ("iterations = 5\nmomentun = 0.9\n", "did you mean 'momentum'?"),
             ("iterations = 5\n[optimizer]\nlr = nan\n", "lr must be a finite number"),
             ("iterations = 5\nmilestones = [-1, \"a\"]\n", "must be a list of numbers"),
             ("iterations = 5\nval_size = -3\n", "val_size must be at least 0, got -3"),
             ("iterations = 5\nval_size = 1.5\n", "must be an integer (or left out)"),
             ("iterations = 5\n[optimizer]\nmomentum = 1.5\n", "momentum must be at least 0 and less than 1, got 1.5"),
             ("iterations = 50\nmilestones = [10, 100]\n", "milestone 100 lies at or beyond the end of the run (50 "),
             ("epochs = 3\nwarmup = 5\n", "warmup 5 takes the whole run (3 epochs)")]
    for text, says in cases:
        path = tmp_path / "r.toml"
        path.write_text(text)
        with pytest.raises(RecipeError, match=re.escape(says)):
            load_recipe(path)
    with pytest.raises(RecipeError, match="is a directory"):
        load_recipe(tmp_path)


def test_an_export_cut_short_by_a_full_disk_leaves_the_previous_file(tmp_path, capsys, monkeypatch):
    out = tmp_path / "m.pt"
    out.write_bytes(b"the previous export")

    def full(obj, f, *args, **kwargs):
        f.write(b"half")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(torch.jit, "save", full)
    code, _, err = _cli(capsys, "export", "resnet20", "--random-weights", "--format", "torchscript", "--out", str(out))
    assert code == 2 and err.count("\n") == 2 and "the disk is full" in err.splitlines()[-1]  # after the notice
    assert out.read_bytes() == b"the previous export" and sorted(p.name for p in tmp_path.iterdir()) == ["m.pt"]


def test_a_closed_pipe_ends_quietly(tmp_path):
    import subprocess
    import sys

    from cli_helpers import cli_env
    # the reader is gone before the command writes (`resnets list | head -1` on a long list)
    run = subprocess.run(f"{sys.executable} -m resnets list | true; echo ${{PIPESTATUS[0]}}", shell=True,
                         capture_output=True, text=True, env=cli_env(), cwd=tmp_path, executable="/bin/bash")
    assert run.stdout.strip() == "141" and run.stderr == ""


def test_resuming_a_finished_run_says_so(tmp_path, capsys):
    run = tmp_path / "run"
    args = ["train", "resnet20", "--data", "synthetic:32x32:4:64", "--val-size", "16", "--batch-size", "16",
            "--iterations", "2", "--evaluations", "1", "--amp", "off", "--no-progress", "--out", str(run)]
    assert _cli(capsys, *args)[0] == 0
    metrics = (run / "metrics.jsonl").read_text()
    code, _, err = _cli(capsys, *args, "--resume")
    assert code == 0 and "already finished at step 2: nothing left to train" in err
    assert (run / "metrics.jsonl").read_text() == metrics
    # the Python API gives the run's result, as when it ended, not an empty dict
    from resnets.train import train
    result = train(TrainOptions(model="resnet20", data="synthetic:32x32:4:64", val_size=16, batch_size=16,
                                iterations=2, evaluations=1, amp="off", progress=False, out=str(run), resume=True))
    assert result.to_dict() == json.loads(metrics.splitlines()[-1]) and result["step"] == 2 and "val_top1" in result
    code, _, err = _cli(capsys, *[a if a != "2" else "4" for a in args], "--resume")
    assert code == 2 and "iterations (recorded 2, given 4)" in err and json.loads(metrics.splitlines()[0])
    code, _, err = _cli(capsys, *args, "--resume", "--recipe", "modern")  # was resumed with paper-cifar's values
    assert code == 2 and "recipe_name (recorded 'paper-cifar', given 'modern')" in err
    # the pipeline is part of the run: the other one reads the images in another order
    assert json.loads((run / "config.json").read_text())["pipeline"] == "small"
    code, _, err = _cli(capsys, *args, "--resume", "--pipeline", "large")
    assert code == 2 and "pipeline (recorded 'small', given 'large')" in err
    assert _cli(capsys, *args, "--resume", "--pipeline", "small")[0] == 0


def test_a_network_for_other_channels_than_the_data_is_refused_before_anything_is_written(tmp_path, capsys):
    run = tmp_path / "run"
    code, _, err = _cli(capsys, "train", "resnet20", "--model-arg", "in_chans=1", "--data", "synthetic:32x32:4:64",
                        "--val-size", "16", "--batch-size", "16", "--iterations", "2", "--no-progress",
                        "--out", str(run))
    assert code == 2 and err.count("\n") == 1 and "takes 1-channel images" in err and "gives 3-channel" in err
    assert not run.exists()  # was a RuntimeError from conv2d, after config.json and sessions.jsonl were written
    code, _, err = _cli(capsys, "train", "resnet20", "--model-arg", "in_chans=1", "--data", "synthetic:1x32x32:4:64",
                        "--val-size", "16", "--batch-size", "16", "--iterations", "2", "--evaluations", "1",
                        "--amp", "off", "--no-progress", "--out", str(run))
    assert code == 0, err


def test_an_int8_export_leaves_only_its_file(tmp_path, capsys):
    out = tmp_path / "exports" / "m.onnx"
    code, stdout, _ = _cli(capsys, "export", "resnet20", "--weights", "cifar10", "--format", "onnx", "--precision",
                           "int8", "--calibration", "sample:cifar10", "--calibration-count", "32", "--out", str(out))
    assert code == 0 and "int8" in stdout
    assert [p.name for p in out.parent.iterdir()] == ["m.onnx"]  # no temporary or intermediate file beside it
    from resnets.deploy.export import read_onnx_metadata
    assert read_onnx_metadata(out)["precision"] == "int8"
    # calibration images with another precision would be read and left unused: refused before any work
    code, _, err = _cli(capsys, "export", "resnet20", "--weights", "cifar10", "--format", "onnx", "--calibration",
                        "sample:cifar10", "--out", str(tmp_path / "fp32.onnx"))
    assert code == 2 and err.count("\n") == 1 and "--calibration" in err and "precision 'int8' only" in err
    assert not (tmp_path / "fp32.onnx").exists()


def test_features_without_weights_use_the_default_ones_or_refuse(tmp_path, capsys):
    # as predict: embeddings of an untrained network mean nothing, so they are never given silently
    data = "synthetic:32x32:4:8"
    code, _, err = _cli(capsys, "features", "plain20", "--data", data, "--out", str(tmp_path / "p.npy"))
    assert code == 2 and err.count("\n") == 1 and "plain20 has no named weights" in err
    assert not (tmp_path / "p.npy").exists()
    code, _, err = _cli(capsys, "features", "resnet20", "--data", data, "--out", str(tmp_path / "d.npy"))
    assert code == 0 and "using resnet20.cifar10, the default weights" in err
    code, _, err = _cli(capsys, "features", "resnet20", "--random-weights", "--data", data,
                        "--out", str(tmp_path / "r.npy"))
    assert code == 0 and "using random weights" in err
    import numpy as np
    trained, random = np.load(tmp_path / "d.npy"), np.load(tmp_path / "r.npy")
    assert trained.shape == random.shape == (8, 64) and not np.allclose(trained, random)


def test_every_bounded_option_is_refused_by_its_flag_as_by_its_dataclass(capsys):
    # one declaration, two doors: the flag built from a field refuses a number just outside the field's
    # bounds with the same words as the dataclass's own check
    from resnets import studies
    from resnets._options import bounds, option_fields
    from resnets.deploy.server_config import ServerConfig
    from resnets.errors import range_problem
    from resnets.transfer import FinetuneOptions
    commands = {("train",): (TrainOptions, dict(model="resnet20", out="o")),
                ("finetune",): (FinetuneOptions, dict(model="resnet20", data="d", out="o", weights="w")),
                ("serve",): (ServerConfig, {}),
                ("study", "degradation"): (studies.DegradationConfig, dict(out="o", data="d")),
                ("study", "gradients"): (studies.GradientConfig, dict(out="o")),
                ("study", "responses"): (studies.ResponseConfig, dict(out="o", runs_from="r"))}
    checked = 0
    for command, (cls, needed) in commands.items():
        for f in option_fields(cls):
            declared = bounds(f)
            if declared is None:
                continue
            low, high, low_open, high_open = declared
            outside = low if low_open else low - 1
            flag = f.metadata.get("flag") or "--" + f.name.replace("_", "-")
            code, _, err = _cli(capsys, *command, flag, str(outside))
            assert code == 2, (command, flag)
            problem = range_problem(outside, low, high, low_open=low_open, high_open=high_open)
            assert err.splitlines()[-1].endswith(f"argument {flag}: {problem}, got {outside}"), (command, flag, err)
            with pytest.raises(UsageError) as caught:
                cls(**needed, **{f.name: outside})
            assert str(caught.value).startswith(f"{f.name} {problem}")
            checked += 1
    assert checked >= 20


def test_predict_skips_an_unreadable_file_found_in_a_folder_but_not_one_named(tmp_path, capsys):
    from PIL import Image
    folder = tmp_path / "photos"
    folder.mkdir()
    Image.new("RGB", (32, 32), (200, 30, 30)).save(folder / "good.png")
    (folder / "broken.jpg").write_bytes(b"not an image at all")
    code, out, err = _cli(capsys, "predict", "resnet20", "--random-weights", "--backend", "torch", "--json",
                          str(folder))
    answer = json.loads(out)
    assert code == 0 and [r["image"] for r in answer["results"]] == [str(folder / "good.png")]
    assert [s["image"] for s in answer["skipped"]] == [str(folder / "broken.jpg")]
    assert "warning: skipped" in err and "broken.jpg" in err
    # named by the user: an answer for it or one line and exit 2
    code, out, err = _cli(capsys, "predict", "resnet20", "--random-weights", str(folder / "good.png"),
                          str(folder / "broken.jpg"))
    assert code == 2 and out == ""
    assert err.strip().splitlines()[-1].endswith("broken.jpg: not a recognised image format")
    (folder / "good.png").unlink()
    code, out, err = _cli(capsys, "predict", "resnet20", "--random-weights", str(folder))
    assert code == 2 and out == "" and "none of the 1 images found" in err


def test_predict_says_which_runtime_it_chose_by_timing(tmp_path, capsys):
    from PIL import Image
    image = tmp_path / "x.png"
    Image.new("RGB", (32, 32), (200, 30, 30)).save(image)
    code, out, err = _cli(capsys, "predict", "resnet20", "--random-weights", "--json", str(image))
    chosen = json.loads(out)  # stdout stays one JSON document
    said = [line for line in err.splitlines() if "the fastest on the first batch" in line]
    assert code == 0 and len(said) == 1, err
    assert f"ran {chosen['backend']}/fp32," in said[0] and "torch/fp32" in said[0] and "onnxruntime/fp32" in said[0]
    code, _, err = _cli(capsys, "predict", "resnet20", "--random-weights", "--backend", "torch", str(image))
    assert code == 0 and "fastest" not in err  # nothing was chosen


def test_explain_export_and_calibration_read_image_folders_as_predict_does(tmp_path, capsys):
    pytest.importorskip("pytorch_grad_cam")
    from PIL import Image
    from resnets import deploy
    folder = tmp_path / "photos"
    folder.mkdir()
    for name, colour in (("a", (200, 30, 30)), ("c", (20, 200, 30))):
        Image.new("RGB", (32, 32), colour).save(folder / f"{name}.png")
    (folder / "b.jpg").write_bytes(b"not an image at all")
    out = tmp_path / "maps"
    code, stdout, err = _cli(capsys, "explain", "resnet20", "--random-weights", str(folder), "--out", str(out))
    assert code == 0, err
    assert sorted(p.name for p in out.iterdir()) == ["a.heatmap.npy", "a.json", "a.png", "c.heatmap.npy", "c.json",
                                                     "c.png"]  # names kept per file
    assert "wrote 2 explanations" in stdout and "warning: skipped" in err and "b.jpg" in err
    code, _, err = _cli(capsys, "explain", "resnet20", "--random-weights", str(folder / "b.jpg"), "--out", str(out))
    assert code == 2 and err.strip().splitlines()[-1].endswith("b.jpg: not a recognised image format")
    code, stdout, err = _cli(capsys, "export", "resnet20", "--random-weights", "--format", "torchscript",
                             "--out", str(tmp_path / "m.ts"), "--check-images", str(folder))
    assert code == 0 and "warning: skipped" in err and "b.jpg" in err and "wrote" in stdout
    preprocessing = resnets.create_model("resnet20").preprocessing
    with pytest.warns(BadInputWarning, match="b.jpg"):
        calibration = deploy.load_images(folder, preprocessing)
    assert calibration.images.shape == (2, 3, 32, 32)
    with pytest.raises(deploy.ImageDecodeError, match=r"b\.jpg: not a recognised"):  # the batch reader names it
        deploy.load_batch([folder / "a.png", folder / "b.jpg"], preprocessing)


def test_images_over_the_pixel_limit_are_named_in_our_words_not_pillows(tmp_path, capsys):
    import struct
    import zlib

    from resnets.deploy import ImageDecodeError, decode_image
    from resnets.deploy.images import MAX_PIXELS

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    # PNG headers of 144 and 900 million pixels, nothing behind them (Pillow warns past 89 million and refuses
    # past 179 million in its own words as it opens the file, before our check of the header could speak)
    for side, says in ((12000, "12000x12000 pixels is over the limit"), (30000, "900,000,000 pixels is over")):
        path = tmp_path / f"{side}.png"
        header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)  # 8-bit grayscale
        path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b""))
        with pytest.raises(ImageDecodeError, match=f"{side}.png: {says}") as raised:
            decode_image(path)
        assert "decompression bomb" not in str(raised.value) and f"{MAX_PIXELS}" in str(raised.value)
    code, _, err = _cli(capsys, "predict", "resnet20", "--weights", "cifar10", str(tmp_path / "30000.png"))
    assert code == 2 and err.count("\n") == 1 and "scale the image down first" in err and "bomb" not in err


def test_a_torch_export_is_written_without_torchs_warning_about_its_name(tmp_path, capfd):
    # the file is written beside its target and renamed; torch.export checks the written name's extension
    assert main(["export", "resnet20", "--random-weights", "--format", "torch.export",
                 "--out", str(tmp_path / "m.pt2")]) == 0
    err = capfd.readouterr().err
    assert "Expect archive file" not in err and sorted(p.name for p in tmp_path.iterdir()) == ["m.pt2"]


def test_session_flags_are_the_session_config():
    # predict's and serve's runtime flags are SessionConfig's fields: same defaults, same names, every one
    import dataclasses

    from resnets.cli import build_parser, options_from_args
    from resnets.deploy import SessionConfig
    for command in (["predict", "resnet20", "x.jpg"], ["serve", "resnet20"]):
        args = build_parser().parse_args(command)
        assert options_from_args(SessionConfig, args) == SessionConfig(), command
        given = build_parser().parse_args([*command[:2], "--backend", "torch", "--precision", "int8", "--compile",
                                           "--num-threads", "3", "--calibration-count", "64",
                                           "--max-accuracy-loss", "1.5", *command[2:]])
        config = options_from_args(SessionConfig, given)
        assert dataclasses.astuple(config) == dataclasses.astuple(dataclasses.replace(
            SessionConfig(), backend="torch", precision="int8", compile=True, num_threads=3, calibration_images=64,
            max_accuracy_loss=1.5))
