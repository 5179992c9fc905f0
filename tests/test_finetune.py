"""Transfer learning: what each strategy trains, cached features, class names, torchvision files, bad input."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import resnets
import resnets.data
import resnets.train
from resnets.cli import main
from resnets.transfer import FinetuneOptions, finetune, load_features, load_pretrained

SYNTHETIC = "synthetic:32x32:4:256"


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory) -> Path:
    """A resnet20 'pretrained' on three other classes (random weights, non-trivial BN statistics)."""
    torch.manual_seed(1)
    model = resnets.create_model("resnet20", num_classes=3)
    with torch.no_grad():
        model.train()
        for _ in range(3):  # move the running statistics away from their initial 0 / 1
            model(torch.randn(16, 3, 32, 32) * 2 + 0.5)
    model.classes = ["old_a", "old_b", "old_c"]
    path = tmp_path_factory.mktemp("pretrained") / "resnet20-pretrained.safetensors"
    resnets.save_weights(model, path)
    return path


def run(tmp_path, pretrained, strategy, **kwargs):
    snapshots = [load_file(str(pretrained))]
    options = dict(iterations=8, batch_size=32, evaluations=2, val_size=64, progress=False,
                   on_step=lambda step, model: snapshots.append(
                       {k: v.detach().clone() for k, v in model.state_dict().items()}))
    options.update(kwargs)
    result = finetune(FinetuneOptions("resnet20", weights=str(pretrained), data=SYNTHETIC, out=tmp_path / strategy,
                                      strategy=strategy, **options))
    return result, snapshots


def changed(before: dict, after: dict) -> set:
    """Names of the tensors that differ (the classifier is new, so fc.* are compared only when shapes agree)."""
    return {k for k, v in after.items() if k in before and not k.endswith("num_batches_tracked")
            and (v.shape != before[k].shape or not torch.equal(v, before[k]))}


@pytest.mark.slow
def test_linear_probe_trains_only_the_classifier(tmp_path, pretrained):
    result, snapshots = run(tmp_path, pretrained, "linear-probe")
    final = load_file(str(tmp_path / "linear-probe" / "last.safetensors"))
    assert changed(snapshots[0], final) == {"fc.weight", "fc.bias"}  # BN running statistics included
    assert final["fc.weight"].shape == (4, 64)
    assert all(changed(a, b) == {"fc.weight", "fc.bias"} for a, b in zip(snapshots[1:], snapshots[2:]))
    assert result["val_n"] == 64


@pytest.mark.slow
def test_full_finetuning_trains_every_parameter_with_a_faster_head(tmp_path, pretrained):
    _, snapshots = run(tmp_path, pretrained, "full", head_lr_mult=5.0)
    model = resnets.create_model("resnet20", num_classes=4)
    params = {name for name, _ in model.named_parameters()}
    buffers = {name for name, _ in model.named_buffers() if not name.endswith("num_batches_tracked")}
    assert changed(snapshots[0], snapshots[-1]) == params | buffers
    config = json.loads((tmp_path / "full" / "config.json").read_text())
    assert config["transfer"]["lr_mult"] == {"fc": 5.0} and config["transfer"]["trainable"] is None


@pytest.mark.slow
def test_gradual_unfreezes_one_stage_at_a_time(tmp_path, pretrained):
    _, snapshots = run(tmp_path, pretrained, "gradual")
    # 8 steps, resnet20's three stages: layer3 from step 2, layer2 from 4, layer1 and the stem from 6
    groups = [("fc",), ("fc", "layer3"), ("fc", "layer3", "layer2"),
              ("fc", "layer3", "layer2", "layer1", "conv1", "bn1")]
    state_names = set(snapshots[1])
    for step in range(1, 9):
        expected = {n for n in state_names if n.split(".")[0] in groups[(step - 1) // 2]
                    and not n.endswith("num_batches_tracked")}
        assert changed(snapshots[step - 1], snapshots[step]) == expected, f"step {step}"


def test_freeze_bn_keeps_pretrained_statistics_and_affine(tmp_path, pretrained):
    _, snapshots = run(tmp_path, pretrained, "full", freeze_bn=True, iterations=2, evaluations=1)
    moved = changed(snapshots[0], snapshots[-1])
    bn = {k for k in snapshots[0] if ".bn" in k or k.startswith("bn1.") or ".downsample.1." in k}
    assert bn and not moved & bn
    assert {"conv1.weight", "layer3.2.conv2.weight", "fc.weight"} <= moved


def test_cached_features_equal_a_fresh_forward_pass(tmp_path, pretrained):
    run(tmp_path, pretrained, "linear-probe", iterations=2, evaluations=1)
    cached = load_file(str(tmp_path / "linear-probe" / "features.safetensors"))
    config = json.loads((tmp_path / "linear-probe" / "config.json").read_text())
    model = load_pretrained("resnet20", str(pretrained)).eval()
    train_loader, val_loader, _ = resnets.data.build_loaders(
        SYNTHETIC, batch_size=32, seed=0, split=config["split"], augment=False, drop_last=False,
        preprocessing=model.preprocessing)
    assert len(cached["train_features"]) == 192 and len(cached["val_features"]) == 64
    for loader, key in ((train_loader, "train"), (val_loader, "val")):
        images, labels = next(iter(loader.epoch_batches(0)))
        with torch.no_grad():
            fresh = model.forward_head(model.forward_features(images), pre_logits=True)
        torch.testing.assert_close(cached[f"{key}_features"][:len(images)], fresh, rtol=1e-5, atol=1e-5)
        assert torch.equal(cached[f"{key}_labels"][:len(labels)], labels)


def write_images(root: Path, counts: dict, size: int = 32) -> Path:
    from PIL import Image

    rng = np.random.default_rng(0)
    for cls, count in counts.items():
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            colour = np.array([40 * len(cls) % 255, 90, 200], dtype=np.int16)
            pixels = np.clip(rng.integers(-40, 40, (size, size, 3)) + colour, 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / cls / f"{i:03d}.png")
    return root


def test_class_names_reach_the_checkpoint_and_predict(tmp_path, pretrained, capsys):
    data = write_images(tmp_path / "shop", {"bolts": 12, "nuts": 12, "washers": 12})
    out = tmp_path / "run"
    assert main(["finetune", "resnet20", "--weights", str(pretrained), "--data", str(data), "--out", str(out),
                 "--strategy", "linear-probe", "--iterations", "4", "--batch-size", "8", "--evaluations", "1",
                 "--val-size", "6", "--no-progress"]) == 0
    assert "finished fine-tuning resnet20 (linear-probe)" in capsys.readouterr().out
    for name in ("last.safetensors", "best.safetensors"):
        meta = resnets.read_metadata(out / name)
        assert meta["classes"] == ["bolts", "nuts", "washers"] and meta["num_classes"] == 3
        assert meta["pretrained"] == str(pretrained)
    assert main(["predict", "resnet20", "--weights", str(out / "best.safetensors"), str(data / "nuts" / "000.png"),
                 "--backend", "torch", "--top-k", "3", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert sorted(p["name"] for p in printed["results"][0]["predictions"]) == ["bolts", "nuts", "washers"]


@pytest.mark.slow
def test_finetune_from_a_torchvision_checkpoint(tmp_path, capsys):
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(3)
    reference = torchvision.models.resnet18(num_classes=10)
    path = tmp_path / "resnet18-torchvision.pth"
    torch.save(reference.state_dict(), path)
    data = write_images(tmp_path / "images", {"red": 10, "green": 10})
    common = ["--data", str(data), "--iterations", "2", "--batch-size", "8", "--evaluations", "1", "--val-size", "4",
              "--image-size", "32", "--no-progress"]
    assert main(["finetune", "resnet18", "--weights", str(path), "--out", str(tmp_path / "probe"),
                 "--strategy", "linear-probe", *common]) == 0
    probe = load_file(str(tmp_path / "probe" / "last.safetensors"))
    expected = reference.state_dict()
    # every backbone tensor is torchvision's, exactly; the classifier is new, for two classes
    assert all(torch.equal(probe[k], v) for k, v in expected.items() if not k.startswith("fc.")
               and not k.endswith("num_batches_tracked"))
    assert probe["fc.weight"].shape == (2, 512)
    assert main(["finetune", "resnet18", "--weights", str(path), "--out", str(tmp_path / "full"),
                 "--strategy", "full", *common]) == 0
    full = load_file(str(tmp_path / "full" / "last.safetensors"))
    assert not torch.equal(full["conv1.weight"], expected["conv1.weight"])
    meta = resnets.read_metadata(tmp_path / "full" / "last.safetensors")
    assert meta["classes"] == ["green", "red"] and meta["arch_kwargs"].get("num_classes", 2) == 2
    capsys.readouterr()


def test_weights_of_another_architecture_are_refused(tmp_path, capsys):
    torchvision = pytest.importorskip("torchvision")
    path = tmp_path / "resnet34.pth"
    torch.save(torchvision.models.resnet34(num_classes=10).state_dict(), path)
    data = write_images(tmp_path / "images", {"a": 4, "b": 4})
    with pytest.raises(resnets.CheckpointError, match="resnet34") as error:
        finetune(FinetuneOptions("resnet18", weights=str(path), data=str(data), out=tmp_path / "run",
                                 iterations=1, progress=False))
    assert "unexpected keys" in str(error.value) and str(path) in str(error.value)
    assert not (tmp_path / "run" / "last.json").exists()
    assert main(["finetune", "resnet18", "--weights", str(path), "--data", str(data), "--out",
                 str(tmp_path / "cli")]) == 2
    assert "does not fit resnet18" in capsys.readouterr().err


def test_a_dataset_with_one_class_is_refused(tmp_path, pretrained):
    data = write_images(tmp_path / "images", {"only": 5})
    with pytest.raises(ValueError, match=r"one class \('only'\); fine-tuning needs at least two classes"):
        finetune(FinetuneOptions("resnet20", weights=str(pretrained), data=str(data), out=tmp_path / "run"))


def test_a_class_with_no_usable_image_is_refused(tmp_path, pretrained):
    data = write_images(tmp_path / "images", {"good": 5, "broken": 0})
    (data / "broken" / "scan.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    (data / "broken" / "notes.txt").write_text("not an image")
    with pytest.raises(ValueError, match=r"class 'broken' has no usable image.*scan\.jpg"):
        finetune(FinetuneOptions("resnet20", weights=str(pretrained), data=str(data), out=tmp_path / "run"))
    (data / "broken" / "scan.jpg").unlink()
    with pytest.warns(resnets.data.BadInputWarning), pytest.raises(ValueError, match=r"\['broken'\] hold no images"):
        finetune(FinetuneOptions("resnet20", weights=str(pretrained), data=str(data), out=tmp_path / "run"))


def test_features_command_writes_embeddings_with_files_and_labels(tmp_path, pretrained, capsys):
    data = write_images(tmp_path / "images", {"cats": 3, "dogs": 4})
    out = tmp_path / "emb.npy"
    assert main(["features", "resnet20", "--weights", str(pretrained), "--data", str(data), "--out", str(out)]) == 0
    assert "wrote 7 x 64 features" in capsys.readouterr().out
    pooled = load_features(out)
    assert pooled.features.shape == (7, 64) and pooled.labels.tolist() == [0, 0, 0, 1, 1, 1, 1]
    assert [Path(f).name for f in pooled.files] == ["000.png", "001.png", "002.png"] + \
        [f"{i:03d}.png" for i in range(4)] and pooled.classes == ["cats", "dogs"]
    sidecar = json.loads(out.with_suffix(".json").read_text())
    assert sidecar["labels"] == pooled.labels.tolist()
    # resnet20's pooled features are its last stage's, average-pooled; stage 2 has 32 channels
    assert main(["features", "resnet20", "--weights", str(pretrained), "--data", str(data),
                 "--out", str(tmp_path / "s3.safetensors"), "--stage", "3"]) == 0
    torch.testing.assert_close(load_features(tmp_path / "s3.safetensors").features, pooled.features)
    assert main(["features", "resnet20", "--weights", str(pretrained), "--data", str(data),
                 "--out", str(tmp_path / "s2.safetensors"), "--stage", "2"]) == 0
    assert load_features(tmp_path / "s2.safetensors").features.shape == (7, 32)
    # the first image through the network by hand
    model = load_pretrained("resnet20", str(pretrained)).eval()
    from torchvision.io import read_image

    image = read_image(pooled.files[0]).float() / 255
    mean, std = torch.tensor(model.preprocessing.mean), torch.tensor(model.preprocessing.std)
    with torch.no_grad():
        by_hand = model.forward_head(model.forward_features(((image - mean[:, None, None]) / std[:, None, None])[None]),
                                     pre_logits=True)
    torch.testing.assert_close(pooled.features[:1], by_hand, rtol=1e-4, atol=1e-4)
    assert main(["features", "resnet20", "--data", str(data), "--out", str(tmp_path / "x.npy"), "--stage", "4"]) == 2
    assert "--stage 4: resnet20 has stages 1..3" in capsys.readouterr().err


def test_features_are_computed_in_the_layout_training_uses(tmp_path, pretrained):
    from torch.nn.modules.module import register_module_forward_pre_hook

    from resnets.transfer import compute_features
    data = write_images(tmp_path / "images", {"cats": 2, "dogs": 2})
    seen = []
    handle = register_module_forward_pre_hook(
        lambda module, inputs: seen.append(inputs[0].is_contiguous(memory_format=torch.channels_last))
        if isinstance(module, torch.nn.Conv2d) else None)
    try:
        compute_features("resnet20", str(data), weights=str(pretrained))
    finally:
        handle.remove()
    assert seen and all(seen)  # channels-last on a CPU, as training and evaluation compute there
    given = load_pretrained("resnet20", str(pretrained))
    compute_features(given, str(data))
    assert given.conv1.weight.is_contiguous()  # a module given keeps its own layout


@pytest.mark.slow
def test_an_interrupted_gradual_finetune_resumes_exactly(tmp_path, pretrained):
    common = dict(weights=str(pretrained), data=SYNTHETIC, strategy="gradual", iterations=8, batch_size=32,
                  evaluations=4, val_size=64, progress=False)
    finetune(FinetuneOptions("resnet20", out=tmp_path / "whole", **common))

    def stop(step, model):
        if step == 5:  # after the checkpoint of step 4, in the middle of the unfreezing schedule
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        finetune(FinetuneOptions("resnet20", out=tmp_path / "cut", on_step=stop, **common))
    with pytest.raises(resnets.train.RunDirError, match="other options"):
        finetune(FinetuneOptions("resnet20", out=tmp_path / "cut", resume=True, **{**common, "strategy": "full"}))
    finetune(FinetuneOptions("resnet20", out=tmp_path / "cut", resume=True, **common))
    whole, cut = (load_file(str(tmp_path / d / "last.safetensors")) for d in ("whole", "cut"))
    assert all(torch.equal(whole[k], cut[k]) for k in whole)
    assert [r["val_top1"] for r in resnets.train.read_metrics(tmp_path / "whole")] == \
        [r["val_top1"] for r in resnets.train.read_metrics(tmp_path / "cut")]


def test_features_of_large_images_leave_out_unreadable_files_by_name(tmp_path, pretrained):
    from resnets.transfer import compute_features

    data = write_images(tmp_path / "images", {"a": 3, "b": 3}, size=80)  # larger than 64 px: the large pipeline
    (data / "a" / "001.png").write_bytes(b"\x89PNG broken")
    with pytest.warns(resnets.data.BadInputWarning, match="001.png"):
        result = compute_features("resnet20", str(data), weights=str(pretrained), num_workers=0)
    assert result.features.shape == (5, 64) and result.labels.tolist() == [0, 0, 1, 1, 1]
    assert [Path(f).parent.name + "/" + Path(f).name for f in result.files] == \
        ["a/000.png", "a/002.png", "b/000.png", "b/001.png", "b/002.png"]


def test_distilling_a_linear_probe_is_refused_in_one_line(tmp_path, pretrained, capsys):
    # a linear probe trains on cached features: there are no images for a teacher to see
    data = write_images(tmp_path / "shop", {"bolts": 8, "nuts": 8, "washers": 8})
    code = main(["finetune", "resnet20", "--weights", str(pretrained), "--data", str(data), "--out",
                 str(tmp_path / "run"), "--strategy", "linear-probe", "--iterations", "2", "--batch-size", "8",
                 "--val-size", "4", "--no-progress", "--teacher", "resnet20", "--teacher-weights", str(pretrained)])
    err = capsys.readouterr().err
    assert code == 2 and "distillation needs the images themselves" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()  # refused before anything was computed or written


def test_a_resumed_finetune_names_what_changed_and_takes_named_weights_in_either_form(tmp_path, capsys):
    args = ["finetune", "resnet20", "--weights", "cifar10", "--data", SYNTHETIC, "--strategy", "linear-probe",
            "--iterations", "2", "--evaluations", "1", "--batch-size", "32", "--val-size", "64", "--amp", "off",
            "--no-progress", "--out", str(tmp_path / "run")]
    assert main(args) == 0
    assert json.loads((tmp_path / "run" / "config.json").read_text())["transfer"]["init_weights"] == "cifar10"
    capsys.readouterr()
    # the same weights by their full name are the same run (were refused as changed weights)
    assert main([a if a != "cifar10" else "resnet20.cifar10" for a in args] + ["--resume"]) == 0
    assert "nothing left to train" in capsys.readouterr().err
    # another strategy: only the entries of the transfer that differ are named, not the whole record
    assert main([a if a != "linear-probe" else "full" for a in args] + ["--resume"]) == 2
    err = capsys.readouterr().err
    assert "transfer.trainable (recorded ['fc'], given None)" in err and "init_weights" not in err, err
    assert err.count("\n") == 1
