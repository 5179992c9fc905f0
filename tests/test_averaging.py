"""Averaged weights (EMA and SWA) and warm starts from trained weights (train --init-weights)."""

import io
import itertools
import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

import resnets
from resnets.cli import main
from resnets.data import build_loaders
from resnets.deploy import evaluate_checkpoint
from resnets.errors import UsageError
from resnets.train import RecipeError, TrainOptions, learning_rate, read_metrics, train
from resnets.train.recipe import load_recipe, recipe_from_dict

DATA = "synthetic:32x32:4:96"  # 96 images of 4 classes: 64 train (2 batches of 32 an epoch), 32 val
COMMON = dict(data=DATA, batch_size=32, val_size=32, amp="off", deterministic=True, progress=False)


def write_recipe(path: Path, **averaging) -> Path:
    lines = ['epochs = 4', 'batch_size = 32', 'lr = 0.05', 'schedule = "constant"', 'weight_decay = 5e-4',
             'evaluations = 4', "[averaging]"] + [f"{k} = {v}" for k, v in averaging.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def metadata(path: Path) -> dict:
    with safe_open(str(path), "pt") as f:
        return {k: json.loads(v) for k, v in f.metadata().items()}


def is_statistic(key: str) -> bool:
    return key.endswith(("running_mean", "running_var", "num_batches_tracked"))


def test_swa_averages_the_epoch_end_weights_and_recomputes_their_batchnorm_statistics(tmp_path):
    recipe = write_recipe(tmp_path / "swa.toml", swa_start=1, swa_bn_batches=1)
    out = tmp_path / "run"
    train(TrainOptions(model="resnet20", out=out, recipe=str(recipe), keep_snapshots=True, **COMMON))
    # the raw weights at the end of each epoch (steps 2, 4, 6, 8); averaging starts after epoch 1
    snapshots = {step: load_file(str(out / "snapshots" / f"step-{step:08d}.safetensors")) for step in (2, 4, 6, 8)}
    averaged = load_file(str(out / "last.safetensors"))
    raw_last = snapshots[8]
    for key, value in averaged.items():
        if is_statistic(key):
            continue
        expected = sum(snapshots[step][key] for step in (4, 6, 8)) / 3
        torch.testing.assert_close(value, expected, rtol=1e-5, atol=1e-6)
    assert any(not torch.equal(averaged[k], raw_last[k]) for k in averaged if not is_statistic(k))
    # BatchNorm statistics: those of the averaged weights on the first training batch of the last epoch
    # (update_bn's cumulative average), not the raw network's running ones
    model = resnets.create_model("resnet20", weights=str(out / "last.safetensors"))
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None
    train_loader, _, _ = build_loaders(DATA, batch_size=32, seed=0, device=torch.device("cpu"), val_size=32,
                                       augment=True, drop_last=True, channels_last=True)
    model.to(memory_format=torch.channels_last).train()
    with torch.no_grad():
        for images, _ in itertools.islice(train_loader.epoch_batches(3), 1):
            model(images)
    recomputed = model.state_dict()
    for key in (k for k in averaged if k.endswith(("running_mean", "running_var"))):
        torch.testing.assert_close(averaged[key], recomputed[key], rtol=1e-4, atol=1e-5)
        assert not torch.allclose(averaged[key], raw_last[key])
    meta = metadata(out / "last.safetensors")
    assert meta["averaged"] == {"kind": "swa", "averaged": 3, "start": 1.0, "lr": None, "bn_batches": 1}
    # the metrics line scores the weights in last.safetensors
    row = read_metrics(out)[-1]
    scored = evaluate_checkpoint("resnet20", str(out / "last.safetensors"), DATA, split="val", amp="off")
    assert scored["n"] == row["val_n"] == 32
    assert scored["loss"] == pytest.approx(row["val_loss"], rel=1e-5)


def test_ema_keeps_batchnorm_statistics_with_its_weights_and_is_what_last_holds(tmp_path):
    recipe = write_recipe(tmp_path / "ema.toml", ema_decay=0.5)
    out = tmp_path / "run"
    train(TrainOptions(model="resnet20", out=out, recipe=str(recipe), **COMMON))
    last = load_file(str(out / "last.safetensors"))
    raw = load_file(str(out / "checkpoints" / "step-00000008.safetensors"))
    assert metadata(out / "last.safetensors")["averaged"] == {"kind": "ema", "decay": 0.5}
    assert "averaged" not in metadata(out / "checkpoints" / "step-00000008.safetensors")
    for key in (k for k in last if k.endswith("running_var")):
        assert not torch.equal(last[key], raw[key])  # averaged, not copied from the last step
    row = read_metrics(out)[-1]
    scored = evaluate_checkpoint("resnet20", str(out / "last.safetensors"), DATA, split="val", amp="off")
    assert scored["loss"] == pytest.approx(row["val_loss"], rel=1e-5)


def test_a_warm_start_keeps_every_weight_and_resumes_exactly_without_its_flag(tmp_path):
    """train --init-weights: step 0 is the file's network, classifier included; a run cut after a checkpoint
    and resumed without --init-weights (taken from the record) ends bitwise where the uncut run ends."""
    start = tmp_path / "start"
    train(TrainOptions(model="resnet20", out=start, iterations=4, evaluations=1, **COMMON))
    weights = start / "last.safetensors"
    recipe = write_recipe(tmp_path / "swa.toml", swa_start=0, swa_lr=0.02, swa_bn_batches=2)
    common = dict(model="resnet20", recipe=str(recipe), **COMMON)
    whole = tmp_path / "whole"
    train(TrainOptions(out=whole, init_weights=str(weights), keep_snapshots=True, **common))
    initial = load_file(str(whole / "snapshots" / "step-00000000.safetensors"))
    assert all(torch.equal(initial[k], v) for k, v in load_file(str(weights)).items())
    assert json.loads((whole / "config.json").read_text())["transfer"]["init_weights"] == str(weights)
    assert [r["lr"] for r in read_metrics(whole)] == [0.02] * 4

    def stop(step, model):
        if step == 5:  # after the checkpoint of step 4, with two epochs averaged
            raise KeyboardInterrupt

    cut = tmp_path / "cut"
    with pytest.raises(KeyboardInterrupt):
        train(TrainOptions(out=cut, init_weights=str(weights), on_step=stop, **common))
    train(TrainOptions(out=cut, resume=True, **common))
    for name in ("last.safetensors", "checkpoints/step-00000008.safetensors"):
        a, b = load_file(str(whole / name)), load_file(str(cut / name))
        assert all(torch.equal(a[k], b[k]) for k in a), name
    assert [r["val_loss"] for r in read_metrics(whole)] == [r["val_loss"] for r in read_metrics(cut)]


def test_a_warm_start_on_other_classes_replaces_the_classifier_with_a_notice(tmp_path):
    torch.manual_seed(0)
    model = resnets.create_model("resnet20", num_classes=3)
    model.classes = ["a", "b", "c"]
    weights = tmp_path / "three.safetensors"
    resnets.save_weights(model, weights)
    with pytest.warns(UserWarning, match=r"does not score the data's 4 classes.*new, untrained one"):
        train(TrainOptions(model="resnet20", out=tmp_path / "run", iterations=1, evaluations=1,
                           init_weights=str(weights), keep_snapshots=True, **COMMON))
    initial = load_file(str(tmp_path / "run" / "snapshots" / "step-00000000.safetensors"))
    assert initial["fc.weight"].shape == (4, 64)
    assert torch.equal(initial["conv1.weight"], model.conv1.weight.detach())


def test_swa_recipes_are_checked_and_set_the_learning_rate():
    base = dict(epochs=10, schedule="cosine", lr=0.1)
    with pytest.raises(RecipeError, match="swa_start 10 must lie in"):
        recipe_from_dict({**base, "swa_start": 10})
    with pytest.raises(RecipeError, match="keep one"):
        recipe_from_dict({**base, "swa_start": 5, "ema_decay": 0.99})
    with pytest.raises(RecipeError, match="swa_lr needs swa_start"):
        recipe_from_dict({**base, "swa_lr": 0.01})
    with pytest.raises(RecipeError, match="swa_bn_batches must be at least 1"):
        recipe_from_dict({**base, "swa_start": 5, "swa_bn_batches": 0})
    recipe = recipe_from_dict({**base, "swa_start": 5, "swa_lr": 0.01})
    # 10 steps an epoch: the cosine until step 50, then the constant averaging rate
    assert learning_rate(recipe, 49, 100, 10.0) > 0.05 and learning_rate(recipe, 50, 100, 10.0) == 0.01
    assert recipe.with_length(epochs=20).swa_start == 10  # it keeps its place in the run, as milestones do
    shipped = load_recipe("cifar-swa")
    assert shipped.swa_start == 1 and shipped.schedule == "constant" and shipped.ema_decay == 0


def test_swa_on_a_linear_probe_is_refused_in_one_line(tmp_path, capsys):
    model = resnets.create_model("resnet20", num_classes=4)
    weights = tmp_path / "w.safetensors"
    resnets.save_weights(model, weights)
    recipe = write_recipe(tmp_path / "swa.toml", swa_start=1)
    code = main(["finetune", "resnet20", "--weights", str(weights), "--data", DATA, "--out", str(tmp_path / "run"),
                 "--strategy", "linear-probe", "--recipe", str(recipe), "--val-size", "32", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and "averaged weights (ema_decay, swa_start) are whole networks" in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()


def test_init_weights_and_a_fine_tuning_hook_do_not_combine(tmp_path):
    from resnets.transfer.hook import Transfer

    with pytest.raises(UsageError, match="does not combine"):
        TrainOptions(model="resnet20", out=tmp_path / "run", init_weights="x.safetensors",
                     hook=Transfer(init_weights="y.safetensors"), log=io.StringIO())


def test_side_batches_leave_an_epoch_of_the_large_pipeline_alone():
    """SWA's BatchNorm batches come from ``side_batches``: in the large pipeline the training's DataLoader
    (persistent workers, a shared sampler) would be reset by a second iteration in the middle of an epoch.
    An epoch interrupted by side batches yields exactly the batches of an uninterrupted one."""
    train_loader, _, _ = build_loaders(DATA, batch_size=16, seed=0, device=torch.device("cpu"), val_size=32,
                                       augment=True, drop_last=True, pipeline="large", num_workers=1)
    whole = [labels.clone() for _, labels in train_loader.epoch_batches(1)]
    interrupted = []
    for index, (_, labels) in enumerate(train_loader.epoch_batches(1)):
        interrupted.append(labels.clone())
        if index == 1:
            side = [labels for _, labels in train_loader.side_batches(1)]
            assert all(torch.equal(a, b) for a, b in zip(side, whole)) and len(side) == len(whole)
    assert len(interrupted) == len(whole) == 4
    assert all(torch.equal(a, b) for a, b in zip(interrupted, whole))
