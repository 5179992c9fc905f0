"""The engine's rules a user meets: which checkpoint is "best", what a small validation split is told, a line a
minute off a terminal, runs that would average nothing, counts out of bounds, pointers out of their run."""

from __future__ import annotations

import io
import json

import pytest

from resnets.errors import UsageError
from resnets.train import Recipe, RecipeError, TrainOptions, train
from resnets.train.checkpoint import RunDirError, read_sessions
from resnets.train.engine import better
from resnets.train.progress import Progress
from resnets.weights import read_metadata

RUN = dict(model="resnet20", data="synthetic:8x8:10:96", batch_size=8, val_size=16, deterministic=True,
           progress=False, amp="off")


def test_best_breaks_ties_by_loss():
    best = dict(step=3, val_top1=100.0, val_loss=0.499)
    assert better(dict(val_top1=100.0, val_loss=0.085), best)  # the same top-1 at a lower loss: a better network
    assert not better(dict(val_top1=100.0, val_loss=0.6), best)
    assert not better(dict(val_top1=87.5, val_loss=0.01), best)  # top-1 first
    assert better(dict(val_top1=100.0, val_loss=0.7), dict(step=None, val_top1=100.0, val_loss=None))  # older runs
    assert better(dict(val_top1=1.0, val_loss=9.0), None)


def test_best_is_named_in_the_output_and_its_file(tmp_path):
    log = io.StringIO()
    result = train(TrainOptions(out=tmp_path / "run", iterations=12, evaluations=4, log=log, **RUN))
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    # the chosen evaluation: the highest top-1, the lowest loss among those
    top = max(r["val_top1"] for r in rows)
    chosen = min((r for r in rows if r["val_top1"] == top), key=lambda r: r["val_loss"])
    assert result.best == dict(step=chosen["step"], val_top1=chosen["val_top1"], val_loss=chosen["val_loss"])
    metadata = read_metadata(tmp_path / "run" / "best.safetensors")
    assert (metadata["step"], metadata["val_top1"], metadata["val_loss"]) == (chosen["step"], chosen["val_top1"],
                                                                              chosen["val_loss"])
    text = log.getvalue()
    assert f"best.safetensors: step {chosen['step']}, validation top-1 {chosen['val_top1']:.2f}%" in text
    # the small split is said to be small, with what one image weighs
    assert "the validation split holds 16 images, one image 6.2 points of accuracy" in text


def test_off_a_terminal_a_line_comes_at_least_every_minute(tmp_path, monkeypatch):
    monkeypatch.setattr(Progress, "line_every", 0.0)  # every step is a minute late
    log = io.StringIO()
    train(TrainOptions(out=tmp_path / "run", iterations=6, evaluations=1, log=log, **RUN))
    lines = [line for line in log.getvalue().splitlines() if line.startswith("step ")]
    assert [line.split()[1] for line in lines] == ["1/6", "2/6", "3/6", "4/6", "5/6", "6/6"]
    assert "images/s" in lines[0] and "left" in lines[0]


def test_a_shortened_averaging_run_that_would_average_nothing_is_refused(tmp_path):
    # cifar-swa averages at epoch ends from its start; 40 iterations of 8 on 80 images end before the first
    with pytest.raises(UsageError, match="would average nothing; give at least"):
        train(TrainOptions(out=tmp_path / "run", recipe="cifar-swa", iterations=5, **RUN))
    assert not (tmp_path / "run").exists()


def test_absurd_counts_are_refused_where_they_are_parsed(tmp_path):
    with pytest.raises(UsageError, match="iterations must be at least 1 and at most 100000000"):
        TrainOptions(model="resnet20", out=tmp_path, iterations=9223372036854775807)
    recipe = tmp_path / "r.toml"
    recipe.write_text("iterations = 9223372036854775807\n")
    with pytest.raises(RecipeError, match="iterations must be at least 1 and at most 100000000"):
        train(TrainOptions(model="resnet20", out=tmp_path / "run", recipe=str(recipe)))
    with pytest.raises(RecipeError, match="evaluations must be"):
        Recipe(iterations=10, evaluations=10**9)


def test_a_pointer_out_of_its_run_directory_is_refused(tmp_path):
    run = tmp_path / "run"
    train(TrainOptions(out=run, iterations=4, evaluations=2, **RUN))
    outside = tmp_path / "elsewhere.state.pt"
    outside.write_bytes(b"x")
    (run / "last.json").write_text(json.dumps({"step": 2, "weights": "../elsewhere.safetensors",
                                               "state": "../elsewhere.state.pt"}))
    sessions = read_sessions(run)
    with pytest.raises(RunDirError, match="not a file of checkpoints/ in"):
        train(TrainOptions(out=run, resume=True, iterations=4, evaluations=2, **RUN))
    assert read_sessions(run) == sessions  # a refused resume leaves no line in sessions.jsonl
