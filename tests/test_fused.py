"""Several trainings in one process: each member ends as it would alone, resumes exactly, and diverges alone."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
from cli_helpers import RESNETS, cli_env, run_cli
from safetensors.torch import load_file

from resnets.errors import UsageError
from resnets.train import FusedResult, TrainOptions, train
from resnets.train.fused import member_names

SYNTHETIC = "synthetic:8x8:10:256"
RUN = dict(data=SYNTHETIC, iterations=200, batch_size=16, evaluations=4, val_size=32, deterministic=True,
           progress=False)
RUN_FLAGS = ["--data", SYNTHETIC, "--batch-size", "16", "--evaluations", "4",
             "--val-size", "32", "--deterministic", "--no-progress"]


def _same_weights(a: Path, b: Path) -> None:
    expected, got = load_file(str(a / "last.safetensors")), load_file(str(b / "last.safetensors"))
    assert expected.keys() == got.keys()
    for key in expected:
        assert torch.equal(expected[key], got[key]), key


def _metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_fused_members_end_as_separate_runs(tmp_path):
    """Two depths x two seeds, 200 steps: every member's weights and metrics are those of its run alone."""
    torch.manual_seed(123)  # the process's generator before the run: members must not depend on it
    result = train(TrainOptions(model="resnet20,resnet32", seeds="0,1", out=tmp_path / "fused", **RUN))
    assert isinstance(result, FusedResult) and not result.diverged
    assert sorted(result.members) == ["resnet20-seed0", "resnet20-seed1", "resnet32-seed0", "resnet32-seed1"]
    for name, member in result.members.items():
        model, seed = name.rsplit("-seed", 1)
        alone = train(TrainOptions(model=model, seed=int(seed), out=tmp_path / f"alone-{name}", **RUN))
        _same_weights(tmp_path / f"alone-{name}", tmp_path / "fused" / name)
        assert member.to_dict() == _metrics(tmp_path / "fused" / name)[-1] and alone["step"] == member["step"]
        fused_rows, alone_rows = _metrics(tmp_path / "fused" / name), _metrics(tmp_path / f"alone-{name}")
        for key in ("step", "train_loss", "val_loss", "val_top1"):
            assert [r[key] for r in fused_rows] == [r[key] for r in alone_rows], (name, key)
        config = json.loads((tmp_path / "fused" / name / "config.json").read_text())
        assert (config["model"], config["seed"]) == (model, int(seed))


@pytest.mark.slow
def test_a_killed_fused_run_resumes_bitwise(tmp_path):
    flags = ["resnet20", "--seeds", "0,1", *RUN_FLAGS, "--iterations", "120"]  # checkpoints at 30, 60, 90, 120

    def start(out: Path) -> tuple[subprocess.Popen, float]:
        """The process and the moment the last member's config.json appeared (its setup done, the steps next)."""
        process = subprocess.Popen([*RESNETS, "train", *flags, "--out", str(out)], stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL, env=cli_env())
        while not (out / "resnet20-seed1" / "config.json").exists() and process.poll() is None:
            time.sleep(0.005)
        return process, time.monotonic()

    reference = tmp_path / "reference"
    process, began = start(reference)
    assert process.wait(timeout=300) == 0
    training = time.monotonic() - began
    killed = tmp_path / "killed"
    for fraction in (0.5, 0.3, 0.7, 0.15, 0.6, 0.4):
        process, began = start(killed)
        time.sleep(max(0.0, began + fraction * training - time.monotonic()))
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
            process.wait()
            steps = [json.loads(p.read_text())["step"] for p in killed.glob("*/last.json")]
            if min(steps or [0]) < 120:
                break
        process.wait()
        subprocess.run(["rm", "-rf", str(killed)], check=True)
    else:
        pytest.fail("no kill landed while the fused run was training")
    resumed = run_cli("train", *flags, "--out", str(killed), "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert "finished resnet20-seed0" in resumed.stdout and "finished resnet20-seed1" in resumed.stdout
    for name in ("resnet20-seed0", "resnet20-seed1"):
        _same_weights(reference / name, killed / name)
        assert [r["val_loss"] for r in _metrics(killed / name)] == [r["val_loss"] for r in _metrics(reference / name)]


def test_a_member_that_diverges_stops_alone(tmp_path):
    """A member whose loss becomes NaN keeps its last good checkpoint and stops; the other finishes, and the
    command says which diverged (exit code 3)."""
    seen: list = []

    def poison(step, model):  # the second member's network (the members step in turn) at its step 30
        if not any(model is m for m in seen):
            seen.append(model)
        if step == 30 and model is seen[-1] and len(seen) == 2:
            with torch.no_grad():
                model.fc.weight.fill_(float("nan"))

    result = train(TrainOptions(model="resnet20", seeds="0,1", out=tmp_path / "fused",
                                **{**RUN, "iterations": 60, "evaluations": 3}, on_step=poison))
    assert result.diverged == ["resnet20-seed1"]
    assert result.members["resnet20-seed0"]["step"] == 60 and not result.members["resnet20-seed0"].diverged
    assert "became nan" in result.members["resnet20-seed1"].diverged
    assert json.loads((tmp_path / "fused" / "resnet20-seed1" / "last.json").read_text())["step"] == 20
    assert json.loads((tmp_path / "fused" / "resnet20-seed0" / "last.json").read_text())["step"] == 60


def test_member_names_and_refusals(tmp_path):
    names = member_names(TrainOptions(model="resnet20,resnet32", out=tmp_path))
    assert names == [("resnet20", 0, "resnet20"), ("resnet32", 0, "resnet32")]
    assert member_names(TrainOptions(model="resnet20", seeds="3,4", out=tmp_path)) == [
        ("resnet20", 3, "resnet20-seed3"), ("resnet20", 4, "resnet20-seed4")]
    for kwargs, says in ((dict(seeds="0,x"), "seeds must be integers"), (dict(seeds="0,1", seed=2), "not both"),
                         (dict(seeds="-1"), "seeds must be integers from 0")):
        with pytest.raises(UsageError, match=says):
            TrainOptions(model="resnet20", out=tmp_path, **kwargs)
    with pytest.raises(UsageError, match="named once"):
        member_names(TrainOptions(model="resnet20,resnet20", out=tmp_path))
    result = run_cli("train", "resnet20,resnet9x", "--data", SYNTHETIC, "--out", str(tmp_path / "bad"))
    assert result.returncode == 2 and "resnet9x" in result.stderr.splitlines()[-1]
    assert not (tmp_path / "bad" / "resnet20" / "metrics.jsonl").exists()
