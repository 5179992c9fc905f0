"""The weights shipped in the package: each file matches its model card, loads by name, and
does what its card says: far above chance on the packaged sample, and its validation accuracy
re-measured on the real data where ../shared/datasets is present."""

import contextlib
import importlib.util
import io
import json
from pathlib import Path

import pytest
import torch

import resnets
from cli_helpers import run_main
from resnets._io import sha256_file
from resnets.data import resolve_source
from resnets.deploy.evaluate import evaluate_checkpoint
from resnets.weights.classes import class_names
from resnets.weights.catalogue import SHIPPED
from resnets.weights.named import FILES_DIR, model_card, weights_for

ROOT = Path(__file__).resolve().parent.parent
# the data each shipped dataset tag was trained on, in ../shared/datasets
REAL_DATA = {"cifar10": "cifar10-jpeg-train.zip", "imagenette": "imagenette-224-train.zip"}

needs_shipped = pytest.mark.skipif(not SHIPPED, reason="no weights are shipped in resnets/weights/files yet")
shipped_names = [w.name for w in SHIPPED]


@needs_shipped
@pytest.mark.parametrize("name", shipped_names)
def test_file_matches_its_card_and_loads_by_name(name):
    weights = resnets.get_weights(name)
    card = model_card(name)
    path = FILES_DIR / card["file"]
    assert path.stat().st_size == card["file_size_bytes"] and sha256_file(path) == card["sha256"] == weights.sha256
    model = resnets.create_model(weights.model, weights=weights.tag)
    assert sum(p.numel() for p in model.parameters()) == card["params"] == weights.meta.params
    assert model.num_classes == len(weights.classes)
    assert tuple(model.preprocessing.input_size) == tuple(card["preprocessing"]["input_size"])
    for key in ("data", "split", "recipe", "command", "iterations", "epochs", "wall_time_s", "machine"):
        assert card["training"][key], f"{name}: the card's training.{key} is empty"
    assert card["val"]["n"] > 0 and 0 < card["val"]["top1"] <= 100


def test_shipped_weights_take_no_default_from_published_ones():
    # a ten-class Imagenette resnet18 must not become what pretrained=True gives a torchvision user; a CIFAR
    # net's default is ours, which needs no network
    for weights in SHIPPED:
        default = resnets.default_weights(weights.model)
        published = [w for w in weights_for(weights.model) if w.url and w.meta.dataset == "imagenet1k"]
        if published:
            assert default.url and default.meta.dataset == "imagenet1k", (weights.name, default.name)
        assert default.default, f"{weights.model}: its default is chosen by registration order ({default.name})"
    assert resnets.get_weights("resnet18").name == "resnet18.tv_in1k"
    assert len(resnets.default_weights("resnet18").classes) == 1000
    assert resnets.get_weights("resnet56").name == "resnet56.cifar10"  # not pytorch-cifar-models' download


@needs_shipped
def test_a_shipped_file_changed_on_disk_is_refused(tmp_path, monkeypatch):
    weights = SHIPPED[0]
    copy = tmp_path / weights.file
    data = bytearray((FILES_DIR / weights.file).read_bytes())
    data[-1] ^= 0xFF
    copy.write_bytes(bytes(data))
    monkeypatch.setattr("resnets.weights.named.FILES_DIR", tmp_path)
    with pytest.raises(resnets.ResnetsError, match="sha256"):
        resnets.create_model(weights.model, weights=weights.tag)


@needs_shipped
def test_eval_computes_in_channels_last_on_a_cpu_and_scores_as_the_contiguous_model_does():
    from resnets.data.evaluation import build_eval_loader
    from resnets.scoring import evaluate
    result = evaluate_checkpoint("resnet20", "cifar10", "sample:cifar10", split="all", amp="off")
    assert result["channels_last"] is True and result["n"] == 2000
    model = resnets.create_model("resnet20", weights="cifar10")
    loader, _ = build_eval_loader("sample:cifar10", split="all", mean=model.preprocessing.mean,
                                  std=model.preprocessing.std, preprocessing=model.preprocessing)
    contiguous = evaluate(model, loader.epoch_batches(0), 10)
    assert next(iter(loader.epoch_batches(0)))[0].is_contiguous()  # the reference really is contiguous
    assert abs(result["top1"] - contiguous["top1"]) <= 100 / 2000  # a summation order may flip one image


@pytest.mark.parametrize("name", [n for n in shipped_names if resnets.get_weights(n).meta.dataset == "cifar10"])
def test_cifar_weights_far_above_chance_on_the_packaged_sample(name):
    # the sample is 2,000 CIFAR-10 training images: chance is 10 %
    weights = resnets.get_weights(name)
    result = run_main("eval", weights.model, "--weights", weights.tag, "--data", "sample:cifar10", "--split", "all",
                      "--json")
    assert result.returncode == 0, result.stderr
    scores = json.loads(result.stdout)
    assert scores["n"] == 2000 and scores["top1"] > 80, scores


@needs_shipped
@pytest.mark.parametrize("name", shipped_names)
def test_one_input_channel_from_shipped_weights(name):
    # conv1 becomes the sum of the RGB filters: a gray image gives the RGB model's output on it repeated
    weights = resnets.get_weights(name)
    with pytest.warns(resnets.WeightsAdaptedWarning, match="in_chans=1"):
        gray = resnets.create_model(weights.model, weights=weights.tag, in_chans=1).eval()
    rgb = resnets.create_model(weights.model, weights=weights.tag).eval()
    assert gray.preprocessing.input_size[0] == 1 and len(gray.preprocessing.mean) == 1
    side = rgb.preprocessing.input_size[-1]
    image = torch.rand(2, 1, side, side)
    with torch.no_grad():
        torch.testing.assert_close(gray(image), rgb(image.repeat(1, 3, 1, 1)), atol=1e-4, rtol=1e-4)


@pytest.mark.slow
@needs_shipped
@pytest.mark.parametrize("name", shipped_names)
def test_card_accuracy_is_reproduced_on_the_real_validation_split(name, shared_datasets):
    weights = resnets.get_weights(name)
    data = shared_datasets / REAL_DATA[weights.meta.dataset]
    card = model_card(name)
    # the 224-px networks through an fp32 OpenVINO session (logits within 1e-5 of the eager model the card
    # was measured with, and a third faster over their images); the small CIFAR ones eagerly, as measured
    backend = "openvino" if weights.meta.dataset == "imagenette" else None
    scores = evaluate_checkpoint(weights.model, weights.tag, str(data), split="val", amp="off", backend=backend)
    assert scores["n"] == card["val"]["n"]
    assert scores["top1"] == pytest.approx(card["val"]["top1"], abs=0.05)


def _ship_script():
    spec = importlib.util.spec_from_file_location("ship_weights", ROOT / "scripts" / "ship_weights.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    return script


def _ship(*args: str) -> tuple[int, str]:
    """scripts/ship_weights.py's main in this process: its exit code and what it wrote to stderr."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = _ship_script().main(list(args))
    return code, err.getvalue()


def test_ship_script_names_a_teacher_file_that_holds_shipped_weights(tmp_path):
    """A distilled run records its teacher's file path on the training machine; the card names the shipped weights
    with the same tensors instead (the file's own metadata may differ), and keeps any other path."""
    named_teacher = _ship_script().named_teacher
    copy, other = tmp_path / "copy.safetensors", tmp_path / "other.safetensors"
    resnets.save_weights(resnets.create_model("resnet20", weights="cifar10"), copy, metadata={"note": "a copy"})
    resnets.save_weights(resnets.create_model("resnet20", num_classes=10), other)
    record = {"teacher": "resnet20", "alpha": 0.5, "temperature": 4.0}
    assert named_teacher({**record, "weights": str(copy)}) == {**record, "weights": "cifar10"}
    assert named_teacher({**record, "weights": str(other)}) == {**record, "weights": str(other)}
    assert named_teacher({**record, "weights": "cifar10"}) == {**record, "weights": "cifar10"}
    assert named_teacher(None) is None


@pytest.mark.slow
def test_ship_script_refuses_an_unfinished_run_and_ships_a_finished_one(tmp_path):
    run = tmp_path / "run"
    teacher = tmp_path / "teacher.safetensors"  # a distilled run: its teacher reaches the card
    resnets.save_weights(resnets.create_model("resnet20"), teacher)
    result = run_main("train", "resnet20", "--iterations", "4", "--evaluations", "1", "--batch-size", "32",
                      "--out", str(run), "--no-progress", "--teacher", "resnet20", "--teacher-weights", str(teacher))
    assert result.returncode == 0, result.stderr
    script = [str(run), "--tag", "sample", "--data-name", "sample:cifar10", "--data", "sample:cifar10",
              "--classes", "cifar10", "--files-dir", str(tmp_path / "files"), "--cards-dir", str(tmp_path / "cards")]
    code, err = _ship(*script)
    assert code == 0, err
    card = json.loads((tmp_path / "files" / "resnet20-sample.json").read_text())
    assert card["sha256"] == sha256_file(tmp_path / "files" / "resnet20-sample.safetensors")
    assert card["training"]["iterations"] == 4 and card["val"]["n"] == 400
    markdown = (tmp_path / "cards" / "resnet20-sample.md").read_text()
    assert "resnet20.sample" in markdown
    assert card["training"]["distilled_from"]["teacher"] == "resnet20"
    assert f"--teacher resnet20 --teacher-weights {teacher} --distill-alpha 0.5" in card["training"]["command"]
    # with the sha256 of the teacher's bytes the run read (recorded in its config.json)
    digest = sha256_file(teacher)
    assert card["training"]["distilled_from"]["sha256"] == digest
    assert f"| distilled from | resnet20 ({teacher}; file sha256 `{digest}`), alpha 0.5, temperature 4 |" in markdown
    (session,) = card["training"]["sessions"]  # the run's one start, from its sessions.jsonl
    assert session["from_step"] == 0 and f"| sessions | 1: from step 0 on {session['started'][:10]} (" in markdown
    model = resnets.create_model("resnet20", weights=str(tmp_path / "files" / "resnet20-sample.safetensors"))
    trained = resnets.create_model("resnet20", weights=str(run / "last.safetensors"))
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), trained.state_dict().values()))
    # a run that has not reached its last step is not shipped
    last = json.loads((run / "last.json").read_text())
    (run / "last.json").write_text(json.dumps({**last, "step": 2}))
    code, err = _ship(*script)
    assert code == 2 and "ship a finished run" in err


def test_imagenette_names_follow_its_synset_folders(shared_datasets):
    source = resolve_source(str(shared_datasets / REAL_DATA["imagenette"]))
    synsets = {"n01440764": "tench", "n02102040": "English springer", "n02979186": "cassette player",
               "n03000684": "chain saw", "n03028079": "church", "n03394916": "French horn",
               "n03417042": "garbage truck", "n03425413": "gas pump", "n03445777": "golf ball",
               "n03888257": "parachute"}
    assert [synsets[folder] for folder in source.classes] == class_names("imagenette")


@needs_shipped
def test_eval_on_a_folder_of_some_classes_scores_them_by_name(tmp_path):
    # 40 cats and 40 ships from the packaged sample, in folders cat/ and ship/: their indices in the folder
    # (0, 1) are not the weights' (3, 8), so only a match by name scores them right
    import zipfile

    from PIL import Image
    with zipfile.ZipFile(resnets.data.sources.sample_path("cifar10")) as archive:
        for name in ("cat", "ship"):
            (tmp_path / "photos" / name).mkdir(parents=True)
            for i in range(40):
                (tmp_path / "photos" / name / f"{i}.jpg").write_bytes(archive.read(f"train/{name}/{i:04d}.jpg"))
    result = evaluate_checkpoint("resnet20", "cifar10", str(tmp_path / "photos"), amp="off", per_class=True)
    assert result["n"] == 80 and result["num_classes"] == 10 and result["data_classes"] == ["cat", "ship"]
    model = resnets.create_model("resnet20", weights="cifar10").eval()
    transform = resnets.get_weights("resnet20.cifar10").transforms()
    right = {}
    with torch.inference_mode():
        for name in ("cat", "ship"):
            batch = torch.stack([transform(Image.open(p).convert("RGB"))
                                 for p in sorted((tmp_path / "photos" / name).iterdir())])
            right[name] = (model(batch).argmax(1) == model.classes.index(name)).sum().item()
    assert abs(result["top1"] - 100 * (right["cat"] + right["ship"]) / 80) <= 100 / 80  # one image's rounding
    assert result["top1"] > 70  # an index-for-index reading would score cats as airplanes: near 0
    accuracy = result["per_class_accuracy"]
    assert accuracy["airplane"] is None and abs(accuracy["ship"] - 100 * right["ship"] / 40) <= 100 / 40
    # through the command line: says what it did; a class the weights never saw is refused in one line
    done = run_main("eval", "resnet20", "--weights", "cifar10", "--data", str(tmp_path / "photos"), "--amp", "off")
    assert done.returncode == 0 and "the data has 2 of the weights' 10 classes (cat, ship)" in done.stderr
    (tmp_path / "photos" / "kitten").mkdir()
    (tmp_path / "photos" / "kitten" / "0.jpg").write_bytes((tmp_path / "photos" / "cat" / "0.jpg").read_bytes())
    refused = run_main("eval", "resnet20", "--weights", "cifar10", "--data", str(tmp_path / "photos"))
    assert refused.returncode == 2 and "1 class(es) that cifar10 was not trained on: ['kitten']" in refused.stderr
    assert refused.stderr.strip().count("\n") == 0


def test_ship_script_cards_a_warm_started_averaged_run(tmp_path):
    """A run started from shipped weights (their file, copied) with weight averaging: the card names the weights
    it started from by their tag, carries the average's description and gives the command's --init-weights."""
    start = tmp_path / "start.safetensors"
    resnets.save_weights(resnets.create_model("resnet20", weights="cifar10"), start, metadata={"note": "a copy"})
    recipe = tmp_path / "swa.toml"
    recipe.write_text('iterations = 4\nbatch_size = 32\nlr = 0.01\nschedule = "constant"\nevaluations = 1\n'
                      '[averaging]\nswa_start = 0\nswa_bn_batches = 1\n')
    run, data = tmp_path / "run", "synthetic:32x32:10:96"
    result = run_main("train", "resnet20", "--init-weights", str(start), "--recipe", str(recipe), "--data", data,
                      "--val-size", "32", "--out", str(run), "--no-progress")
    assert result.returncode == 0, result.stderr
    code, err = _ship(str(run), "--tag", "synthetic", "--data-name", "synthetic", "--files-dir", str(tmp_path / "f"),
                      "--cards-dir", str(tmp_path / "c"))
    assert code == 0, err
    card = json.loads((tmp_path / "f" / "resnet20-synthetic.json").read_text())
    assert card["training"]["started_from"] == "cifar10" and "--init-weights cifar10" in card["training"]["command"]
    assert card["training"]["averaged"]["kind"] == "swa" and card["training"]["averaged"]["averaged"] == 2
    markdown = (tmp_path / "c" / "resnet20-synthetic.md").read_text()
    assert card["training"]["started_from_sha256"] == sha256_file(start)
    assert f"| started from | `cifar10` (`--init-weights`; file sha256 `{sha256_file(start)}`) |" in markdown
    assert "| weights | the average of 2 epoch-end weights (SWA, from epoch 0)" in markdown
    shipped = resnets.create_model("resnet20", weights=str(tmp_path / "f" / "resnet20-synthetic.safetensors"))
    assert shipped.checkpoint_info.metadata["averaged"]["kind"] == "swa"


@needs_shipped
def test_paired_accuracy_counts_the_images_each_weights_alone_gets_right(tmp_path, capsys):
    """benchmarks/paired_accuracy.py on the packaged sample: resnet20.cifar10 against a copy whose classifier
    favours one class, its counts checked against the two networks' predictions computed here."""
    from resnets.data.evaluation import build_eval_loader
    from script_helpers import benchmark_module

    first = resnets.create_model("resnet20", weights="cifar10").eval()
    second = resnets.create_model("resnet20", weights="cifar10").eval()
    with torch.no_grad():
        second.fc.bias[3] += 2.0  # more images called "cat": some right answers lost, a few gained
    changed = tmp_path / "cat-biased.safetensors"
    resnets.save_weights(second, changed, metadata={"split": first.checkpoint_info.metadata["split"]})
    pre = first.preprocessing
    loader, _ = build_eval_loader("sample:cifar10", split="all", mean=pre.mean, std=pre.std, preprocessing=pre)
    with torch.no_grad():
        pairs = [(first(x).argmax(1), second(x).argmax(1), y) for x, y in loader]
    a, b, y = (torch.cat(column) for column in zip(*pairs))
    only_a, only_b = int(((a == y) & (b != y)).sum()), int(((b == y) & (a != y)).sum())
    assert only_a > 0  # the test needs the two to differ
    with benchmark_module("paired_accuracy") as script:
        assert script.main(["resnet20", "cifar10", str(changed), "--data", "sample:cifar10", "--split", "all"]) == 0
    assert torch.is_grad_enabled()  # the script leaves the process's autograd as it found it
    out = capsys.readouterr().out
    assert f"n {len(y):,}, fp32" in out
    assert f"right only with the first {only_a}, only with the second {only_b}; predictions differ on " \
           f"{int((a != b).sum())};" in out
    for predictions in (a, b):
        assert f"top-1 {100 * (predictions == y).float().mean():.2f} %" in out
