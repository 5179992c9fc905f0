"""The studies end to end on tiny budgets: files written, plotted numbers equal to the JSON,
an interrupted degradation study resumed, measurements checked against direct computation."""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path

import pytest
import torch

from resnets import create_model
from resnets.cli import main
from resnets.studies import (DegradationConfig, GradientConfig, ResponseConfig, plot_degradation, plot_gradients,
                             plot_responses, run_degradation, run_gradients, run_responses, run_table)
from resnets.studies.gradients import plot_gradients_during_training
from resnets.studies.responses import response_stds

DATA = "synthetic:32x32:10:256"
TINY = dict(models=("plain20", "resnet20"), data=DATA, iterations=4, evaluations=2, val_size=32, batch_size=16)


@pytest.fixture(scope="module")
def degradation_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("degradation")
    torch.manual_seed(0)
    run_degradation(DegradationConfig(out=out, **TINY))
    return out


def _same_lines(plotted: dict, expected: dict) -> None:
    assert set(plotted) == set(expected)
    for label, (x, y) in expected.items():
        assert plotted[label][0] == pytest.approx(x, abs=0, rel=1e-12), label
        assert plotted[label][1] == pytest.approx(y, abs=0, rel=1e-12), label


@pytest.mark.slow
def test_degradation_writes_its_files_and_plots_the_json(degradation_dir: Path, tmp_path: Path):
    for name in ("degradation.json", "degradation.csv", "degradation.png", "README.md"):
        assert (degradation_dir / name).is_file(), name
    result = json.loads((degradation_dir / "degradation.json").read_text())
    assert [r["model"] for r in result["runs"]] == ["plain20", "resnet20"]
    assert result["recipe"] == "paper-cifar-warmup"  # the quick budget's
    config = json.loads((degradation_dir / "runs/resnet20/config.json").read_text())
    assert config["recipe_name"] == "paper-cifar-warmup"
    assert [r["kind"] for r in result["runs"]] == ["plain", "residual"]
    expected = {}
    for run in result["runs"]:
        # the JSON holds exactly the engine's metrics
        metrics = [json.loads(line) for line in (degradation_dir / run["run_dir"] / "metrics.jsonl").read_text()
                   .splitlines()]
        assert run["steps"] == [m["step"] for m in metrics] == [2, 4]
        assert run["train_error"] == [m["train_error"] for m in metrics]
        assert run["val_error"] == [m["val_error"] for m in metrics]
        expected[f"{run['model']} train"] = (run["steps"], run["train_error"])
        expected[f"{run['model']} val"] = (run["steps"], run["val_error"])
    _same_lines(plot_degradation(result, tmp_path / "again.png"), expected)
    with open(degradation_dir / "degradation.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4 and float(rows[0]["train_error"]) == result["runs"][0]["train_error"][0]
    report = (degradation_dir / "README.md").read_text()
    assert "degradation.png" in report and "plain20" in report
    # one depth trained both ways: the shortcut's effect at equal depth, from the same numbers
    gain, = result["shortcut_gains"]
    assert (gain["depth"], gain["step"], gain["complete"]) == (20, 4, True)
    assert gain["plain_train_error"] == result["runs"][0]["train_error"][-1]
    assert gain["residual_train_error"] == result["runs"][1]["train_error"][-1]
    assert "depth 20, iteration 4 at the end of both runs: resnet20" in report
    assert [r["chance_error"] for r in result["runs"]] == [90.0, 90.0]  # 10 synthetic classes


@pytest.mark.slow
def test_interrupted_degradation_study_resumes(tmp_path: Path, monkeypatch):
    """Trained one after the other (fused, each run resumes as tests/test_fused.py shows)."""
    import resnets.studies.degradation as degradation
    import resnets.train.engine as engine

    real_evaluate = engine._evaluate_and_save
    calls = []

    def interrupt_resnet20_after_first_evaluation(run, row, *args, **kwargs):
        result = real_evaluate(run, row, *args, **kwargs)
        if run.out.name == "resnet20" and row["step"] == 2:
            raise KeyboardInterrupt  # as if killed right after the step-2 checkpoint
        return result

    monkeypatch.setattr(engine, "_evaluate_and_save", interrupt_resnet20_after_first_evaluation)
    with pytest.raises(KeyboardInterrupt):
        run_degradation(DegradationConfig(out=tmp_path, **TINY, fused=False))
    plain_metrics = (tmp_path / "runs/plain20/metrics.jsonl").read_text()
    plain_weights = (tmp_path / "runs/plain20/last.safetensors").read_bytes()
    first_line = (tmp_path / "runs/resnet20/metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in first_line] == [2]

    monkeypatch.setattr(engine, "_evaluate_and_save", real_evaluate)
    # drawing without training shows the interrupted run as in progress and draws no conclusion from it
    partial = run_degradation(DegradationConfig(out=tmp_path, train=False, **TINY, fused=False))
    assert [(r["model"], r["complete"], r["steps"]) for r in partial["runs"]] == [
        ("plain20", True, [2, 4]), ("resnet20", False, [2])]
    assert "2 of 4 (in progress)" in (tmp_path / "README.md").read_text()
    assert partial["findings"] == []  # one depth of each kind: nothing to compare
    assert (tmp_path / "runs/resnet20/metrics.jsonl").read_text().splitlines() == first_line
    # the same study directory with another setting: named in the study's words, not the engine's flags
    from resnets.train import RunDirError
    with pytest.raises(RunDirError) as raised:
        run_degradation(DegradationConfig(out=tmp_path, **{**TINY, "batch_size": 8}, fused=False))
    message = str(raised.value)
    assert "its run of resnet20 differs in batch_size (recorded 16, given 8)" in message, message
    assert "--resume" not in message and "another --out" in message
    real_train = degradation.train  # the study's own reference to the engine
    monkeypatch.setattr(degradation, "train", lambda options: calls.append(options) or real_train(options))
    log = io.StringIO()
    result = run_degradation(DegradationConfig(out=tmp_path, log=log, **TINY, fused=False))
    # the finished plain20 run is not trained again; resnet20 continues from step 2
    assert [c.model for c in calls] == ["resnet20"] and calls[0].resume
    assert "resuming at step 2" in log.getvalue()
    assert (tmp_path / "runs/plain20/metrics.jsonl").read_text() == plain_metrics
    assert (tmp_path / "runs/plain20/last.safetensors").read_bytes() == plain_weights
    lines = (tmp_path / "runs/resnet20/metrics.jsonl").read_text().splitlines()
    assert lines[0] == first_line[0] and [json.loads(line)["step"] for line in lines] == [2, 4]
    assert [r["steps"] for r in result["runs"]] == [[2, 4], [2, 4]]
    # the weights of every evaluation are kept across the interruption, step 0 included
    from resnets.train.checkpoint import list_snapshots

    for model in ("plain20", "resnet20"):
        assert [step for step, _ in list_snapshots(tmp_path / "runs" / model)] == [0, 2, 4], model
    assert (tmp_path / "runs/resnet20/snapshots/step-00000004.safetensors").read_bytes() == (
        tmp_path / "runs/resnet20/last.safetensors").read_bytes()

    # a third call finds everything finished and trains nothing
    calls.clear()
    run_degradation(DegradationConfig(out=tmp_path, **TINY, fused=False))
    assert calls == []


@pytest.mark.slow
def test_gradients_at_init_plot_the_json_and_show_the_shortcut_effect(tmp_path: Path):
    run_gradients(GradientConfig(out=tmp_path, depths=(20, 56), data=DATA, batch_size=16, batches=1))
    for name in ("gradients.json", "gradients.csv", "gradients-init.png", "README.md"):
        assert (tmp_path / name).is_file(), name
    saved = json.loads((tmp_path / "gradients.json").read_text())
    assert [e["model"] for e in saved["models"]] == ["plain20", "resnet20", "plain56", "resnet56"]
    expected = {}
    for e in saved["models"]:
        assert len(e["weight_grad_norm"]) == e["depth"]  # every conv of the main path and the classifier
        assert len(e["activation_grad_norm"]) == 2 + (e["depth"] - 2) // 2  # input, stem, each block
        assert e["activation_depth"][-1] == e["depth"] - 1
        expected[f"{e['model']} weights"] = (e["weight_depth"], e["weight_grad_norm"])
        expected[f"{e['model']} activations"] = (e["activation_depth"], e["activation_grad_norm"])
    _same_lines(plot_gradients(saved, tmp_path / "again.png"), expected)
    ratio = {e["model"]: e["input_over_last_block"] for e in saved["models"]}
    # without shortcuts the gradient's scale changes by orders of magnitude across 56 layers
    assert ratio["plain56"] > 20 * ratio["resnet56"]
    assert ratio["plain56"] > ratio["plain20"]

    # the classifier's weight gradient, computed directly, is the plotted last point
    torch.manual_seed(0)  # the study's seed: the same initialisation
    model = create_model("resnet20", num_classes=10).train()
    from resnets.studies._common import image_batches

    (images, labels), = image_batches(DATA, 16, 1, 0)[0]
    torch.nn.functional.cross_entropy(model(images), labels).backward()
    resnet20 = saved["models"][1]
    assert resnet20["weight_grad_norm"][-1] == pytest.approx(model.fc.weight.grad.norm().item(), rel=1e-5)
    assert resnet20["weight_grad_norm"][0] == pytest.approx(model.conv1.weight.grad.norm().item(), rel=1e-5)


@pytest.mark.slow
def test_gradients_of_trained_runs(degradation_dir: Path, tmp_path: Path):
    result = run_gradients(GradientConfig(out=tmp_path, depths=(20,), data=DATA, batch_size=16, batches=1,
                                          trained_from=degradation_dir))
    # at initialisation, the trained weights, and every snapshot the degradation runs kept (steps 0, 2, 4)
    assert [(e["model"], e["when"], e.get("step")) for e in result["models"]] == [
        ("plain20", "init", None), ("resnet20", "init", None),
        ("plain20", "trained", None), ("plain20", "training", 0), ("plain20", "training", 2),
        ("plain20", "training", 4),
        ("resnet20", "trained", None), ("resnet20", "training", 0), ("resnet20", "training", 2),
        ("resnet20", "training", 4)]
    for name in ("gradients-trained.png", "gradients-training.png"):
        assert (tmp_path / name).is_file(), name
    by_key = {(e["model"], e["when"], e.get("step")): e for e in result["models"]}
    for model in ("plain20", "resnet20"):
        # the last snapshot is the run's final weights, measured on the same batches
        assert by_key[(model, "training", 4)]["weight_grad_norm"] == by_key[(model, "trained", None)][
            "weight_grad_norm"]
        # training moved the weights: the step-2 gradients differ from those at step 0
        assert by_key[(model, "training", 2)]["weight_grad_norm"] != by_key[(model, "training", 0)][
            "weight_grad_norm"]
    # the step-0 snapshot is the run's own initialisation, before any update
    first = degradation_dir / "runs/resnet20/snapshots/step-00000000.safetensors"
    snapshot = create_model("resnet20", weights=str(first))
    config = json.loads((degradation_dir / "runs/resnet20/config.json").read_text())
    torch.manual_seed(config["seed"])
    fresh = create_model("resnet20", num_classes=10)
    assert all(torch.equal(a, b) for a, b in zip(snapshot.state_dict().values(), fresh.state_dict().values()))

    # the during-training figure plots the JSON's ratios against the snapshots' steps
    saved = json.loads((tmp_path / "gradients.json").read_text())
    expected = {}
    for model in ("plain20", "resnet20"):
        entries = [e for e in saved["models"] if e["model"] == model and e["when"] == "training"]
        steps = [e["step"] for e in entries]
        expected[f"{model} activations"] = (steps, [e["input_over_last_block"] for e in entries])
        expected[f"{model} weights"] = (steps, [e["first_conv_over_classifier"] for e in entries])
    _same_lines(plot_gradients_during_training(saved, tmp_path / "again.png"), expected)
    rows = list(csv.DictReader(open(tmp_path / "gradients.csv")))
    assert {r["when"] for r in rows} == {"init", "trained", "step 0", "step 2", "step 4"}


@pytest.mark.slow
def test_responses_of_trained_runs(degradation_dir: Path, tmp_path: Path):
    run_responses(ResponseConfig(out=tmp_path, runs_from=degradation_dir, images=24, batch_size=10))
    for name in ("responses.json", "responses.csv", "responses.png", "README.md"):
        assert (tmp_path / name).is_file(), name
    saved = json.loads((tmp_path / "responses.json").read_text())
    expected = {}
    for e in saved["models"]:
        assert e["images"] == 24 and len(e["std"]) == 9  # resnet20 / plain20: 9 blocks
        assert e["std_sorted"] == sorted(e["std"], reverse=True)
        expected[e["model"]] = (e["layer"], e["std"])
        expected[f"{e['model']} sorted"] = (e["layer"], e["std_sorted"])
    _same_lines(plot_responses(saved, tmp_path / "again.png"), expected)

    # the first block's std computed by hand: stem, then F(x) = bn2(conv2(relu(bn1(conv1(x)))))
    model = create_model("resnet20", weights=str(degradation_dir / "runs/resnet20/last.safetensors")).eval()
    images = torch.randn(12, 3, 32, 32)
    with torch.no_grad():
        response = model.layer1[0].residual_function(model.forward_stem(images))
    assert response_stds(model, [(images, None)])[0] == pytest.approx(response.double().std().item(), rel=1e-6)


def test_table_of_any_models(tmp_path: Path):
    table = run_table(["resnet20", "plain20", "resnet56"], tmp_path)
    text = (tmp_path / "table.md").read_text()
    assert "| resnet20 | 20 |" in text and "269,722" in text and "853,018" in text
    # option A shortcuts have no parameters: plain20 and resnet20 have the same count
    params = {s["name"]: s["params"] for s in table["models"]}
    assert params["plain20"] == params["resnet20"] == 269_722
    assert json.loads((tmp_path / "table.json").read_text())["models"][2]["params"] == 853_018


@pytest.mark.slow
def test_cli_study_commands_and_bad_arguments(tmp_path: Path, degradation_dir: Path, capsys):
    assert main(["study", "table", "--models", "resnet32", "--out", str(tmp_path / "t")]) == 0
    assert "464,154" in capsys.readouterr().out
    assert main(["study", "degradation", "--models", "plain20", "nosuch", "--data", DATA,
                 "--out", str(tmp_path / "d")]) == 2
    assert "--models" in capsys.readouterr().err
    assert main(["study", "gradients", "--depths", "21", "--out", str(tmp_path / "g")]) == 2
    assert "--depths" in capsys.readouterr().err
    assert main(["study", "responses", "--from", str(tmp_path / "empty"), "--out", str(tmp_path / "r")]) == 2
    assert "--from" in capsys.readouterr().err
    with pytest.raises(SystemExit) as refused:  # the parser's own refusal: usage and one error line
        main(["study", "degradation", "--iterations", "0", "--data", DATA, "--out", str(tmp_path / "d")])
    assert refused.value.code == 2 and "--iterations: must be at least 1" in capsys.readouterr().err
    assert not (tmp_path / "d").exists()
    # the CLI over a finished study reads it back without training
    copy = tmp_path / "copy"
    shutil.copytree(degradation_dir, copy)
    args = ["study", "degradation", "--models", "plain20", "resnet20", "--data", DATA, "--iterations", "4",
            "--evaluations", "2", "--val-size", "32", "--batch-size", "16", "--out", str(copy)]
    assert main(args) == 0
    assert "report:" in capsys.readouterr().out


def test_budgets_and_overrides(tmp_path: Path):
    quick = DegradationConfig(out=tmp_path, data=DATA).resolved_budget()
    paper = DegradationConfig(out=tmp_path, data=DATA, budget="paper").resolved_budget()
    assert (quick.iterations, quick.batch_size) == (500, 128)
    long = DegradationConfig(out=tmp_path, data=DATA, budget="long").resolved_budget()
    assert (long.iterations, long.val_size, long.batch_size) == (2000, 5000, 128)
    # the short budgets warm up (ResNet-56 can diverge at lr 0.1 from the first step), the paper's does not
    assert (quick.recipe, long.recipe, paper.recipe) == ("paper-cifar-warmup", "paper-cifar-warmup", "paper-cifar")
    assert (paper.iterations, paper.val_size, paper.batch_size) == (64000, 5000, 128)  # the paper's schedule
    assert DegradationConfig(out=tmp_path, data=DATA, iterations=7, val_size=0).resolved_budget().iterations == 7
    with pytest.raises(ValueError, match="budget must be one of quick, long, paper, got 'slow'"):
        DegradationConfig(out=tmp_path, data=DATA, budget="slow")
    with pytest.raises(ValueError, match="batch_size must be at least 1 and at most 1048576, got 0"):
        DegradationConfig(out=tmp_path, data=DATA, batch_size=0)
    with pytest.raises(ValueError, match="images must be at least 2, got 1"):
        ResponseConfig(out=tmp_path, runs_from=tmp_path, images=1)
    with pytest.raises(ValueError, match="batches must be at least 1, got 0"):
        GradientConfig(out=tmp_path, batches=0)


def test_warmup_recipe_ramps_every_depth_alike():
    from resnets.train.recipe import learning_rate, load_recipe

    paper = load_recipe("paper-cifar").with_length(iterations=500)
    warm = load_recipe("paper-cifar-warmup").with_length(iterations=500)
    for depth in (20, 56):
        # the paper's recipe starts ResNet-20 and -56 at 0.1; the warm-up recipe ramps both over 50 iterations
        assert learning_rate(paper, 0, 500, 1.0, depth) == 0.1
        assert [learning_rate(warm, step, 500, 1.0, depth) for step in (0, 24, 49)] == pytest.approx(
            [0.002, 0.05, 0.1])
        # then the same steps as the paper's recipe: / 10 at half and three quarters of the run
        for step in (50, 249, 250, 374, 375, 499):
            assert learning_rate(warm, step, 500, 1.0, depth) == learning_rate(paper, step, 500, 1.0, depth)
    assert learning_rate(warm, 375, 500, 1.0, 20) == pytest.approx(0.001)
    # a run so short that the warm-up is under one step never goes above the base rate
    tiny = load_recipe("paper-cifar-warmup").with_length(iterations=4)
    assert [learning_rate(tiny, step, 4, 1.0, 20) for step in range(4)] == pytest.approx([0.1, 0.1, 0.01, 0.001])


def test_findings_compare_at_the_latest_common_evaluation():
    from resnets.studies.degradation import findings

    def run(model, kind, depth, steps, train, complete):
        return dict(model=model, kind=kind, depth=depth, steps=steps, train_error=train,
                    val_error=[e + 1 for e in train], complete=complete)

    result = dict(runs=[run("plain20", "plain", 20, [50, 100, 150], [80.0, 70.0, 60.0], True),
                        run("plain56", "plain", 56, [50, 100], [88.0, 69.0], False),
                        run("resnet20", "residual", 20, [50, 100, 150], [80.0, 70.0, 60.0], True),
                        run("resnet56", "residual", 56, [50, 100, 150], [79.0, 68.0, 59.0], True)])
    plain, residual = findings(result)
    assert (plain["step"], plain["deep_train_error"], plain["shallow_train_error"]) == (100, 69.0, 70.0)
    assert not plain["deeper_trains_worse"] and not plain["complete"]
    assert (residual["step"], residual["complete"], residual["deeper_trains_worse"]) == (150, True, False)
    result["runs"][3]["train_error"][-1] = 61.0
    assert findings(result)[1]["deeper_trains_worse"]
    assert findings(result)[1]["stalled"] == []  # no chance level recorded: nothing is called stalled
    # a run that ends at chance (90% for 10 classes) did not train: the comparison says so
    from resnets.studies.degradation import stalled

    for run in result["runs"]:
        run["chance_error"] = 90.0
    result["runs"][3]["train_error"][-1] = 89.0
    assert stalled(result["runs"][3]) and not stalled(result["runs"][2])
    assert findings(result)[1]["stalled"] == ["resnet56"] and findings(result)[0]["stalled"] == []
    result["runs"][3]["train_error"][-1] = 61.0

    from resnets.studies.degradation import shortcut_gains

    # depth 20 at iteration 150 (both finished), depth 56 at 100, the last evaluation plain56 reached
    twenty, fifty_six = shortcut_gains(result)
    assert (twenty["depth"], twenty["step"], twenty["complete"]) == (20, 150, True)
    assert (twenty["plain_train_error"], twenty["residual_train_error"]) == (60.0, 60.0)
    assert (fifty_six["plain"], fifty_six["residual"], fifty_six["step"]) == ("plain56", "resnet56", 100)
    assert (fifty_six["plain_train_error"], fifty_six["residual_train_error"], fifty_six["complete"]) == (
        69.0, 68.0, False)


USER_MODELS = '''
from torch import nn

from resnets import cifar_resnet, register_model
from resnets.models import CIFAR10_PREPROCESSING


@register_model("cifar", "plain", CIFAR10_PREPROCESSING)
def myplain14(**kwargs):
    """A 14-layer plain net (n=2), not one of ours."""
    return cifar_resnet(14, plain=True, **kwargs)


@register_model("cifar", "residual", CIFAR10_PREPROCESSING)
def myresnet14(**kwargs):
    """Its residual counterpart."""
    return cifar_resnet(14, **kwargs)


@register_model("cifar", "residual", CIFAR10_PREPROCESSING)
def notaresnet(num_classes=10, **kwargs):
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, num_classes))
'''


@pytest.mark.slow
def test_studies_of_your_own_architectures(tmp_path: Path, monkeypatch, capsys):
    from resnets.models import registry

    monkeypatch.setattr(registry, "_MODELS", dict(registry._MODELS))  # the test's models stay in the test
    module = tmp_path / "my_models.py"
    module.write_text(USER_MODELS)
    sizes = ["--iterations", "4", "--evaluations", "2", "--val-size", "32", "--batch-size", "16"]
    study = tmp_path / "degradation"
    assert main(["study", "degradation", "--import", str(module), "--models", "myplain14", "myresnet14",
                 "--data", DATA, *sizes, "--out", str(study)]) == 0
    result = json.loads((study / "degradation.json").read_text())
    assert [(r["model"], r["kind"], r["depth"], r["steps"]) for r in result["runs"]] == [
        ("myplain14", "plain", 14, [2, 4]), ("myresnet14", "residual", 14, [2, 4])]
    # the gradient study over the same module and the trained runs: 14 weighted layers each
    assert main(["study", "gradients", "--import", str(module), "--models", "myplain14", "myresnet14",
                 "--data", DATA, "--batch-size", "16", "--batches", "1", "--trained-from", str(study),
                 "--out", str(tmp_path / "gradients")]) == 0
    entries = json.loads((tmp_path / "gradients/gradients.json").read_text())["models"]
    assert {(e["model"], e["when"]) for e in entries} >= {("myplain14", "init"), ("myresnet14", "trained")}
    assert all(len(e["weight_grad_norm"]) == 14 for e in entries)
    capsys.readouterr()

    # a registered model that is not made of ResNet stages and blocks, an unknown module
    assert main(["study", "degradation", "--import", str(module), "--models", "notaresnet", "--data", DATA,
                 *sizes, "--out", str(tmp_path / "bad")]) == 2
    assert "notaresnet builds a Sequential, not a resnets.ResNet" in capsys.readouterr().err
    assert main(["study", "table", "--import", "no_such_module_of_models", "--models", "resnet20",
                 "--out", str(tmp_path / "t")]) == 2
    assert "--import no_such_module_of_models" in capsys.readouterr().err
    assert main(["study", "table", "--import", str(tmp_path / "missing.py"), "--models", "resnet20",
                 "--out", str(tmp_path / "t")]) == 2
    assert "missing.py: no such file" in capsys.readouterr().err


def test_responses_draw_no_conclusion_from_runs_that_did_not_train():
    from resnets.studies.responses import comparisons

    def entry(model, kind, depth, std, train_error):
        return dict(model=model, kind=kind, depth=depth, std=[std] * 3, train_error=train_error, chance_error=90.0,
                    trained=train_error < 88.0)

    trained = [entry("plain20", "plain", 20, 0.9, 10.0), entry("resnet20", "residual", 20, 0.5, 8.0),
               entry("resnet56", "residual", 56, 0.4, 5.0)]
    assert comparisons(trained) == ["resnet20 0.500 is smaller than plain20 0.900",
                                    "the deeper resnet56 0.400 is smaller than resnet20 0.500"]
    # plain20 ended at chance (89.5 % train error of 90 %): its responses are those of an untrained net
    stuck = [entry("plain20", "plain", 20, 0.9, 89.5)] + trained[1:]
    lines = comparisons(stuck)
    assert lines[0] == "resnet20 and plain20 not compared: plain20 did not train (train error 89.5 %, chance 90 %)"
    assert lines[1].startswith("the deeper resnet56")


@pytest.mark.slow
def test_degradation_trains_fused_and_sets_table_6_beside_the_runs(degradation_dir: Path, tmp_path: Path):
    """The study's two networks trained side by side are the runs trained one after the other; its report
    puts the paper's Table 6 figure beside the residual run's validation error."""
    result = json.loads((degradation_dir / "degradation.json").read_text())
    assert list(result["timing"]) == ["plain20+resnet20"]  # one fused group
    apart = run_degradation(DegradationConfig(out=tmp_path / "apart", fused=False, **TINY))
    assert sorted(apart["timing"]) == ["plain20", "resnet20"]
    for model in ("plain20", "resnet20"):
        assert (degradation_dir / "runs" / model / "metrics.jsonl").read_text().count("\n") == 2
        fused_rows = [json.loads(line) for line in (degradation_dir / "runs" / model / "metrics.jsonl").open()]
        apart_rows = [json.loads(line) for line in (tmp_path / "apart" / "runs" / model / "metrics.jsonl").open()]
        assert [r["val_loss"] for r in fused_rows] == [r["val_loss"] for r in apart_rows]
    (row,) = result["paper_table"]
    run = next(r for r in result["runs"] if r["model"] == "resnet20")
    assert (row["model"], row["paper_test_error"], row["val_error"], row["val_n"], row["iterations"]) == (
        "resnet20", 8.75, run["val_error"][-1], 32, 4)
    report = (degradation_dir / "README.md").read_text()
    assert "Table 6 of the paper beside these runs" in report and "| resnet20 | 20 | 8.75 |" in report
    from resnets.studies.degradation import PAPER_MODELS, check_models
    assert check_models(["paper"]) == list(PAPER_MODELS) and len(PAPER_MODELS) == 9
