"""What a careless or hostile user runs into: one clear line instead of a traceback or a silent
wrong answer, and nothing lost when a run is cut short."""

from __future__ import annotations

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
    assert "every image" in err and "7 images" in err and "(all, 7 images)" in out
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
