"""Knowledge distillation: the loss, the teacher's re-normalised input, and training runs that
record, resume with, and refuse teachers."""

import io
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

import resnets
from cli_helpers import run_main
from resnets.errors import UsageError
from resnets.train import RunDirError, TrainOptions, train
from resnets.train.distill import Teacher, distillation_loss, load_teacher

from model_helpers import randomise_bn

SYNTHETIC = "synthetic:32x32:10:256"


def test_loss_blends_cross_entropy_and_the_tempered_kl():
    torch.manual_seed(0)
    student, teacher = torch.randn(6, 10), torch.randn(6, 10) * 3
    labels = torch.randint(0, 10, (6,))
    T = 4.0
    p_teacher = F.softmax(teacher / T, dim=1)
    kl = (p_teacher * (p_teacher.log() - F.log_softmax(student / T, dim=1))).sum(dim=1).mean()
    expected = 0.3 * F.cross_entropy(student, labels) + 0.7 * T * T * kl
    got = distillation_loss(student, teacher, labels, alpha=0.7, temperature=T)
    assert got.item() == pytest.approx(expected.item(), rel=1e-5)
    # a student that already matches its teacher pays only the hard part
    same = distillation_loss(teacher, teacher, labels, alpha=0.5, temperature=T)
    assert same.item() == pytest.approx(0.5 * F.cross_entropy(teacher, labels).item(), rel=1e-5)
    # its gradient pulls the student's tempered distribution towards the teacher's
    s = student.clone().requires_grad_(True)
    distillation_loss(s, teacher, labels, alpha=1.0, temperature=T).backward()
    moved = student - 0.5 * s.grad
    before = F.kl_div(F.log_softmax(student / T, 1), p_teacher, reduction="batchmean")
    after = F.kl_div(F.log_softmax(moved / T, 1), p_teacher, reduction="batchmean")
    assert after < before


def test_teacher_gets_images_in_its_own_normalisation():
    model = randomise_bn(resnets.create_model("resnet20")).eval()
    own_mean, own_std = torch.tensor(model.preprocessing.mean), torch.tensor(model.preprocessing.std)
    student_mean, student_std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
    teacher = Teacher(model, student_mean, student_std)
    raw = torch.rand(4, 3, 32, 32)
    as_student = (raw - torch.tensor(student_mean).view(1, 3, 1, 1)) / torch.tensor(student_std).view(1, 3, 1, 1)
    with torch.no_grad():
        expected = model((raw - own_mean.view(1, 3, 1, 1)) / own_std.view(1, 3, 1, 1))
    assert (teacher(as_student) - expected).abs().max().item() < 1e-4
    assert not any(p.requires_grad for p in teacher.model.parameters())
    # its BatchNorms folded into its convolutions (a faster forward pass), the model given left as it was
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in teacher.model.modules())
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules()) == 19
    # with --compile the teacher runs compiled, on the same normalisation
    teacher.compile()
    assert (teacher(as_student) - expected).abs().max().item() < 1e-4
    assert teacher._forward is not teacher.model


def _teacher_file(tmp_path, num_classes=10):
    path = tmp_path / f"teacher{num_classes}.safetensors"
    resnets.save_weights(randomise_bn(resnets.create_model("resnet20", num_classes=num_classes)), path)
    return str(path)


def _options(out, **kwargs):
    # fp32: these few steps would spend most of their time preparing bf16 kernels
    return TrainOptions(model="resnet20", out=out, data=SYNTHETIC, batch_size=32, val_size=64, seed=0, amp="off",
                        deterministic=True, progress=False, log=io.StringIO(), **kwargs)


@pytest.mark.slow
def test_a_distilled_run_records_its_teacher_and_resumes_exactly(tmp_path):
    teacher = _teacher_file(tmp_path)
    distil = dict(teacher="resnet20", teacher_weights=teacher, distill_alpha=0.9)
    straight = tmp_path / "straight"
    train(_options(straight, iterations=8, evaluations=2, **distil))
    record = json.loads((straight / "config.json").read_text())["distillation"]
    assert record == {"teacher": "resnet20", "weights": teacher, "alpha": 0.9, "temperature": 4.0}
    distilled = resnets.create_model("resnet20", weights=str(straight / "last.safetensors"))
    assert distilled.checkpoint_info.metadata["distilled_from"] == record
    plain = tmp_path / "plain"
    train(_options(plain, iterations=8, evaluations=2))
    # halfway, then resumed without repeating the teacher options: the recorded teacher goes on teaching
    halves = tmp_path / "halves"
    with pytest.raises(_Stop):
        train(_options(halves, iterations=8, evaluations=2, **distil, on_step=_stop_at(5)))
    assert json.loads((halves / "last.json").read_text())["step"] == 4
    train(_options(halves, iterations=8, evaluations=2, resume=True))
    final = {name: load_file(str(run / "last.safetensors")) for name, run in
             (("straight", straight), ("plain", plain), ("halves", halves))}
    assert all(torch.equal(final["straight"][k], final["halves"][k]) for k in final["straight"])
    assert not all(torch.equal(final["straight"][k], final["plain"][k]) for k in final["straight"])
    with pytest.raises(RunDirError, match="distillation"):
        train(_options(halves, iterations=8, evaluations=2, resume=True, teacher="resnet20", teacher_weights=teacher,
                       distill_alpha=0.5))


def test_a_resume_whose_starting_or_teacher_weights_changed_is_refused(tmp_path):
    from resnets._io import sha256_file

    teacher, start = _teacher_file(tmp_path), tmp_path / "start.safetensors"
    resnets.save_weights(randomise_bn(resnets.create_model("resnet20")), start)
    run = tmp_path / "run"
    given = dict(iterations=4, evaluations=2, teacher="resnet20", teacher_weights=teacher, init_weights=str(start))
    with pytest.raises(_Stop):
        train(_options(run, **given, on_step=_stop_at(3)))
    config, sessions = (run / "config.json").read_text(), (run / "sessions.jsonl").read_text()
    assert json.loads(config)["weights_sha256"] == {"init_weights": sha256_file(start),
                                                    "teacher_weights": sha256_file(teacher)}
    # the same paths, other bytes (a file overwritten, or named weights of a later package): refused, nothing written
    for path, words in ((teacher, "distils from"), (start, "started from")):
        kept = Path(path).read_bytes()
        resnets.save_weights(randomise_bn(resnets.create_model("resnet20")), path)
        with pytest.raises(RunDirError, match=f"{words} {path}, which now holds other weights") as refused:
            train(_options(run, resume=True, **given))
        assert len(str(refused.value).splitlines()) == 1
        assert (run / "config.json").read_text() == config and (run / "sessions.jsonl").read_text() == sessions
        Path(path).write_bytes(kept)
    # the bytes it started with: it resumes and finishes
    train(_options(run, resume=True, **given))
    assert json.loads((run / "last.json").read_text())["step"] == 4
    assert json.loads((run / "config.json").read_text())["weights_sha256"] == json.loads(config)["weights_sha256"]


class _Stop(Exception):
    pass


def _stop_at(steps):
    """An on_step callback that ends the run when step ``steps`` is done (before its evaluation)."""
    def on_step(step, model):
        if step == steps:
            raise _Stop
    return on_step


def test_a_teacher_without_weights_is_recorded_with_its_default_tag(tmp_path):
    from resnets.train.rundir import distillation_config
    from resnets.weights.named import default_weights

    record = distillation_config(_options(tmp_path / "run", teacher="resnet20"))
    assert record.weights == default_weights("resnet20").tag is not None  # not "whatever the default is then"
    given = distillation_config(_options(tmp_path / "run", teacher="resnet20", teacher_weights="x.pt"))
    assert given.weights == "x.pt"
    # named weights in either form are recorded by tag: a resume with the other form is the same run
    full = distillation_config(_options(tmp_path / "run", teacher="resnet20", teacher_weights="resnet20.cifar10"))
    assert full.weights == "cifar10" == distillation_config(
        _options(tmp_path / "run", teacher="resnet20", teacher_weights="cifar10")).weights


def test_teacher_errors_are_one_line(tmp_path):
    with pytest.raises(UsageError, match="need --teacher"):
        TrainOptions(model="resnet20", out=tmp_path / "x", distill_alpha=0.5)
    with pytest.raises(UsageError, match=r"distill_alpha must be more than 0 and at most 1, got 1.5"):
        TrainOptions(model="resnet20", out=tmp_path / "x", teacher="resnet56", distill_alpha=1.5)
    result = run_main("train", "resnet20", "--data", SYNTHETIC, "--iterations", "2", "--batch-size", "32",
                      "--val-size", "64", "--out", str(tmp_path / "run"), "--teacher", "resnet20",
                      "--teacher-weights", _teacher_file(tmp_path, num_classes=7), "--no-progress")
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1 and "predicts 7 classes, the data has 10" in result.stderr
    # an unknown teacher is named as such (it was "has no named weights")
    with pytest.raises(UsageError, match="unknown model 'nosuchnet'"):
        load_teacher("nosuchnet", None, num_classes=10, channels=3, mean=(0, 0, 0), std=(1, 1, 1))


def test_a_teacher_trained_with_another_split_of_the_same_data_is_warned_about(tmp_path):
    first = tmp_path / "first"
    train(_options(first, iterations=2, evaluations=1))
    split = json.loads((first / "config.json").read_text())["split"]
    teacher = randomise_bn(resnets.create_model("resnet20"))
    logs = {}
    for name, val_digest in (("same", split["val_digest"]), ("other", "0123456789abcdef")):
        path = tmp_path / f"{name}.safetensors"
        resnets.save_weights(teacher, path, metadata={"split": {**split, "val_digest": val_digest, "seed": 7}})
        options = _options(tmp_path / f"run-{name}", iterations=2, evaluations=1, teacher="resnet20",
                           teacher_weights=str(path))
        train(options)
        logs[name] = options.log.getvalue()
    assert "another validation split" not in logs["same"]
    assert "another validation split (seed 7, 64 images)" in logs["other"]


def test_a_teacher_with_the_classes_in_another_order_is_refused_and_other_names_are_warned_about(tmp_path):
    data_classes = [f"class_{i}" for i in range(10)]  # what the synthetic source names its classes
    teacher = randomise_bn(resnets.create_model("resnet20"))
    reordered, renamed = tmp_path / "reordered.safetensors", tmp_path / "renamed.safetensors"
    resnets.save_weights(teacher, reordered, classes=data_classes[::-1])
    resnets.save_weights(teacher, renamed, classes=list("abcdefghij"))
    result = run_main("train", "resnet20", "--data", SYNTHETIC, "--iterations", "2", "--batch-size", "32",
                      "--val-size", "64", "--out", str(tmp_path / "run"), "--teacher", "resnet20",
                      "--teacher-weights", str(reordered), "--no-progress")
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
    assert "in another order (its class 0 is 'class_9', the data's 'class_0')" in result.stderr
    assert not (tmp_path / "run" / "last.safetensors").exists()
    options = _options(tmp_path / "run-renamed", iterations=2, evaluations=1, teacher="resnet20",
                       teacher_weights=str(renamed))
    train(options)
    assert "paired by index ('a'='class_0', 'b'='class_1', 'c'='class_2', ...)" in options.log.getvalue()
    same = tmp_path / "same.safetensors"
    resnets.save_weights(teacher, same, classes=data_classes)
    options = _options(tmp_path / "run-same", iterations=2, evaluations=1, teacher="resnet20",
                       teacher_weights=str(same))
    train(options)
    assert "class names" not in options.log.getvalue()
