"""What a new user meets first: torchvision's idioms for the same files, the caches they already have, a
checkpoint or a run directory where a model goes, one rule for which weights run, and messages that say
what happened."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision

import resnets
from cli_helpers import cli_env, run_main
from data_helpers import encode, random_rgb, write_tree
from model_helpers import CountingHandler, randomise_bn, served_state_dict
from resnets.cli import main
from resnets.errors import MissingFileError, UsageError
from resnets.factory import choose_weights
from resnets.weights import CheckpointError, catalogue, named, save_weights
from resnets.weights.named import Weights, WeightsMeta, get_weights

# every torchvision enum of the residual networks we build
TORCHVISION_ENUMS = [getattr(torchvision.models, name) for name in dir(torchvision.models)
                     if name.endswith("_Weights") and "Res" in name]


@pytest.fixture(autouse=True)
def _registry_restored(monkeypatch, tmp_path):
    """Entries a test registers are its alone; caches point into its own folder."""
    saved = dict(named._WEIGHTS)
    monkeypatch.setenv("RESNETS_CACHE", str(tmp_path / "resnets-cache"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    monkeypatch.delenv("RESNETS_OFFLINE", raising=False)
    yield
    named._WEIGHTS.clear()
    named._WEIGHTS.update(saved)


def _cli(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _outputs(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(x)


# -- torchvision's idioms -------------------------------------------------------------------------


def test_every_torchvision_enum_member_is_an_entry_for_the_same_file():
    members = [member for enum_class in TORCHVISION_ENUMS for member in enum_class]
    assert len(members) == 17  # ten models; seven of them have V1 and V2
    for member in members:
        ours = get_weights(member)
        assert ours.url == member.url, member  # the same file, so its hash prefix too
        assert ours.sha256.startswith(member.url.rsplit("-", 1)[1].split(".")[0])
        assert ours.torchvision == f"{type(member).__name__}.{member.name}"
        assert get_weights(ours.torchvision) is ours  # torchvision's get_weights string
        model = ours.model
        assert get_weights(member.name, model=model) is ours  # "IMAGENET1K_V1" beside the model
        assert resnets.weights.named.find_weights(model, member) is ours
    for enum_class in TORCHVISION_ENUMS:
        default = get_weights(enum_class.DEFAULT)
        assert default.url == enum_class.DEFAULT.url
        # "DEFAULT" beside the model is torchvision's DEFAULT, and our default weights of the model
        assert get_weights("DEFAULT", model=default.model) is default is resnets.default_weights(default.model)
        assert get_weights(f"{enum_class.__name__}.DEFAULT") is default


def test_meta_is_a_mapping_with_torchvision_keys_and_values():
    for enum_class in TORCHVISION_ENUMS:
        for member in enum_class:
            meta = get_weights(member).meta
            assert set(member.meta) <= set(meta), (member, set(member.meta) - set(meta))
            assert meta["categories"] == list(member.meta["categories"]) and len(meta["categories"]) == 1000
            assert meta["num_params"] == member.meta["num_params"] and meta["min_size"] == member.meta["min_size"]
            assert meta["_metrics"] == member.meta["_metrics"] and meta["recipe"] == member.meta["recipe"]
            assert meta["_ops"] == pytest.approx(member.meta["_ops"])
            assert meta["_file_size"] == pytest.approx(member.meta["_file_size"], abs=0.01)
            assert isinstance(meta["_docs"], str) and meta["_docs"]
    meta = get_weights("resnet20.cifar10").meta  # ours: the same keys, beside our own fields
    assert "categories" in meta and meta.get("categories")[:2] == ["airplane", "automobile"]
    assert meta["top1"] == meta.top1 and meta["_metrics"] == {"CIFAR-10": {"acc@1": meta.top1, "acc@5": meta.top5}}
    assert meta.get("no such key") is None and "no such key" not in meta
    with pytest.raises(KeyError):
        meta["no such key"]
    assert dict(meta)["dataset"] == "cifar10" and len(dict(meta)) == len(meta)


def test_a_tag_alone_names_its_weights_or_is_refused_in_one_line():
    assert get_weights("imagenette") is get_weights("resnet18.imagenette")  # one model has it
    assert get_weights("tv2_in1k", model="resnet50") is get_weights("resnet50.tv2_in1k")
    with pytest.raises(UsageError, match=r"'tv2_in1k' is a tag of the weights of 7 models .*give MODEL.TAG"):
        get_weights("tv2_in1k")
    with pytest.raises(UsageError, match="'DEFAULT' names weights of a model: give the model too"):
        get_weights("DEFAULT")
    with pytest.raises(UsageError, match="resnet20 has no torchvision weights IMAGENET1K_V2"):
        get_weights("IMAGENET1K_V2", model="resnet20")
    with pytest.raises(UsageError, match="are weights of resnet18, not resnet50"):
        resnets.create_model("resnet50", weights=torchvision.models.ResNet18_Weights.DEFAULT)
    with pytest.raises(UsageError, match="resnet110 has no named weights, so no DEFAULT"):
        resnets.create_model("resnet110", weights="DEFAULT")


# -- the caches users already have ----------------------------------------------------------------


@pytest.fixture
def published(tmp_path):
    """A resnet20 saved as torchvision saves its weights (torch.save of a state dict, the sha256 prefix in the
    name), served over loopback HTTP, and a catalogue entry for it named as torchvision's ResNet18 V1 is (the real
    entry set aside: the test's file is small)."""
    with served_state_dict(tmp_path / "served") as (model, url, digest, data):
        named._WEIGHTS.pop("resnet18.tv_in1k")
        meta = WeightsMeta(dataset="cifar10", preprocessing=model.preprocessing, classes="cifar10")
        entry = resnets.register_weights(Weights(name="resnet20.tvtest", url=url, sha256=digest, meta=meta,
                                                 torchvision="ResNet18_Weights.IMAGENET1K_V1"))
        CountingHandler.requests = []
        yield model, entry, data


def test_a_file_in_torch_hubs_cache_is_used_hash_checked(published, tmp_path, caplog, capsys):
    reference, entry, data = published
    theirs = tmp_path / "torch-home" / "hub" / "checkpoints" / entry.url.rsplit("/", 1)[1]
    assert entry.torch_hub_file() == theirs and Path(torch.hub.get_dir()) == tmp_path / "torch-home" / "hub"
    theirs.parent.mkdir(parents=True)
    theirs.write_bytes(data)
    x = torch.randn(2, 3, 32, 32)
    with caplog.at_level(logging.INFO, logger="resnets.weights"):
        model = resnets.create_model("resnet20", weights=torchvision.models.ResNet18_Weights.IMAGENET1K_V1)
    assert torch.equal(_outputs(model, x), _outputs(reference, x))
    assert model.checkpoint_info.path == theirs and CountingHandler.requests == []  # nothing downloaded
    assert f"resnet20.tvtest: {theirs} (found in torch.hub's cache)" in caplog.text
    assert entry.locate().cache == "torch.hub"
    # the command line says which cache the file came from
    image = tmp_path / "a.png"
    image.write_bytes(encode(random_rgb(np.random.default_rng(0))))
    capsys.readouterr()
    code, _, err = _cli(capsys, "predict", "resnet20", "--weights", "tvtest", str(image))
    assert code == 0 and f"resnets predict: resnet20.tvtest: {theirs} (found in torch.hub's cache)" in err
    assert CountingHandler.requests == []


def test_a_damaged_file_in_torch_hubs_cache_is_not_used(published, tmp_path, capsys):
    reference, entry, data = published
    theirs = tmp_path / "torch-home" / "hub" / "checkpoints" / entry.url.rsplit("/", 1)[1]
    theirs.parent.mkdir(parents=True)
    theirs.write_bytes(data[:-10] + b"0123456789")  # the right name, other bytes
    with pytest.warns(UserWarning, match="in torch.hub's cache does not match the published file"):
        located = entry.locate(progress=False)
    # fetched into our own cache instead; the user's file is left as it was
    assert located.cache == "resnets" and located.downloaded and located.path != theirs
    assert located.path.read_bytes() == data and theirs.read_bytes() != data
    assert len(CountingHandler.requests) == 1
    with pytest.warns(UserWarning):  # said each time the damaged copy is met
        again = entry.locate()
    assert again.path == located.path and not again.downloaded and len(CountingHandler.requests) == 1
    # offline with only the damaged copy: one line naming both caches
    located.path.unlink()
    image = tmp_path / "a.png"
    image.write_bytes(encode(random_rgb(np.random.default_rng(0))))
    code, _, err = _cli(capsys, "predict", "resnet20", "--weights", "tvtest", str(image))
    assert code == 0 and "(downloaded into the resnets cache)" in err
    # online: fetched again, and said
    assert "resnets predict: warning: the weights resnet20.tvtest:" in err and "not used" in err
    located.path.unlink()
    with pytest.warns(UserWarning), pytest.raises(MissingFileError, match=r"not in torch.hub's cache .* nor in the "
                                                                          r"resnets cache; .* is not used: sha256"):
        entry.locate(offline=True)


# -- a checkpoint where the model goes --------------------------------------------------------------


@pytest.fixture
def run_dir(tmp_path):
    """A run directory as training leaves it: best.safetensors and last.safetensors, different weights."""
    run = tmp_path / "runs" / "r20"
    run.mkdir(parents=True)
    best = randomise_bn(resnets.create_model("resnet20", num_classes=3, shortcut="B")).eval()
    last = randomise_bn(resnets.create_model("resnet20", num_classes=3, shortcut="B")).eval()
    save_weights(best, run / "best.safetensors", classes=["ant", "bee", "cat"])
    save_weights(last, run / "last.safetensors", classes=["ant", "bee", "cat"])
    return run, best, last


def test_a_checkpoint_or_run_directory_is_the_model(run_dir, tmp_path):
    run, best, last = run_dir
    x = torch.randn(2, 3, 32, 32)
    from_file = resnets.create_model(str(run / "last.safetensors"))
    assert from_file.arch == "resnet20" and from_file.shortcut == "B" and from_file.classes == ["ant", "bee", "cat"]
    assert torch.equal(_outputs(from_file, x), _outputs(last, x))
    from_run = resnets.create_model(run)  # a run directory: its best weights
    assert torch.equal(_outputs(from_run, x), _outputs(best, x))
    assert choose_weights(str(run)).weights == str(run / "best.safetensors")
    (run / "best.safetensors").unlink()  # a run without validation has only last
    assert torch.equal(_outputs(resnets.create_model(run), x), _outputs(last, x))
    session = resnets.InferenceSession(str(run / "last.safetensors"))
    assert session.arch == "resnet20" and session.classes == ["ant", "bee", "cat"]
    # what cannot be the model, in one line each
    with pytest.raises(MissingFileError, match="checkpoint not found: .*nope.safetensors"):
        resnets.create_model(str(run / "nope.safetensors"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(MissingFileError, match="a folder without best.safetensors or last.safetensors"):
        resnets.create_model(str(tmp_path / "empty"))
    torch.save(last.state_dict(), tmp_path / "theirs.pth")
    with pytest.raises(CheckpointError, match=r"theirs.pth records no architecture .* --weights"):
        resnets.create_model(str(tmp_path / "theirs.pth"))
    with pytest.raises(UsageError, match="is a checkpoint, and weights 'cifar10' others"):
        resnets.create_model(str(run / "last.safetensors"), weights="cifar10")


def test_every_command_takes_a_checkpoint_where_the_model_goes(run_dir, tmp_path, capsys):
    run, best, last = run_dir
    image = tmp_path / "a.png"
    image.write_bytes(encode(random_rgb(np.random.default_rng(0))))
    code, out, err = _cli(capsys, "predict", str(run), str(image), "--json")
    assert code == 0 and json.loads(out)["arch"] == "resnet20"
    assert f"using {run / 'best.safetensors'}, the run's best validation weights (resnet20" in err
    assert f"{run / 'last.safetensors'} holds its final ones" in err
    probabilities = json.loads(out)["results"][0]["predictions"]
    batch = resnets.deploy.read_images([image], best.preprocessing).batch
    expected = _outputs(best, batch).softmax(1)[0]
    top = probabilities[0]
    assert top["name"] == ["ant", "bee", "cat"][int(expected.argmax())]
    assert top["probability"] == pytest.approx(float(expected.max()), abs=1e-4)
    code, out, _ = _cli(capsys, "info", str(run / "last.safetensors"), "--json")
    summary = json.loads(out)
    assert code == 0 and summary["name"] == "resnet20" and summary["shortcut"] == "B" and summary["num_classes"] == 3
    code, out, _ = _cli(capsys, "export", str(run), "--format", "onnx", "--out", str(tmp_path / "m.onnx"))
    assert code == 0 and (tmp_path / "m.onnx").is_file()
    if importlib.util.find_spec("pytorch_grad_cam") is not None:  # the optional 'explain' extra
        code, out, _ = _cli(capsys, "explain", str(run), str(image), "--out", str(tmp_path / "maps"))
        assert code == 0 and json.loads((tmp_path / "maps" / "a.json").read_text())["predictions"][0]["name"] in \
            ("ant", "bee", "cat")
    write_tree(tmp_path / "data", {"ant": 2, "bee": 2, "cat": 2})
    code, out, _ = _cli(capsys, "eval", str(run), "--data", str(tmp_path / "data"), "--json", "--amp", "off")
    assert code == 0 and json.loads(out)["n"] == 6
    code, out, _ = _cli(capsys, "features", str(run), "--data", str(tmp_path / "data"), "--out",
                        str(tmp_path / "f.npy"))
    assert code == 0 and np.load(tmp_path / "f.npy").shape == (6, 64)
    code, _, err = _cli(capsys, "predict", str(run), "--weights", "cifar10", str(image))
    assert code == 2 and "is a checkpoint, and weights 'cifar10' others" in err and err.count("\n") == 1
    code, _, err = _cli(capsys, "finetune", str(run), "--weights", "cifar10", "--data", str(tmp_path / "data"))
    assert code == 2 and "is a checkpoint, and --weights cifar10 others" in err and err.count("\n") == 1
    code, _, err = _cli(capsys, "predict", str(tmp_path / "nowhere"), str(image))
    assert code == 2 and "checkpoint not found" in err and err.count("\n") == 1


# -- one rule for which weights run ---------------------------------------------------------------


def test_python_and_the_commands_choose_weights_by_one_rule(tmp_path, capsys):
    # create_model(name): fresh weights, as torchvision's resnet50(); pretrained=True: the default named ones
    assert choose_weights("resnet20").reason == "untrained" and choose_weights("resnet20").weights is None
    chosen = choose_weights("resnet20", pretrained=True)
    assert chosen.reason == "default" and chosen.weights == resnets.default_weights("resnet20").name
    x = torch.randn(1, 3, 32, 32)
    default = resnets.create_model("resnet20", pretrained=True)
    assert torch.equal(_outputs(default, x), _outputs(resnets.create_model("resnet20", weights="DEFAULT"), x))
    # a command runs the default named weights, by the same function, and says so
    image = tmp_path / "a.png"
    image.write_bytes(encode(random_rgb(np.random.default_rng(1))))
    code, out, err = _cli(capsys, "predict", "resnet20", str(image), "--json", "--top-k", "1")
    assert code == 0 and chosen.describe() in err
    batch = resnets.deploy.read_images([image], default.preprocessing).batch
    top = json.loads(out)["results"][0]["predictions"][0]
    assert top["name"] == default.classes[int(_outputs(default, batch).argmax())]
    code, out, err = _cli(capsys, "predict", "resnet20", "--weights", "DEFAULT", str(image), "--json", "--top-k", "1")
    again = json.loads(out)["results"][0]["predictions"][0]  # the same weights (the runtime may differ: 1e-4)
    assert code == 0 and again["name"] == top["name"] and again["probability"] == pytest.approx(top["probability"],
                                                                                                 abs=1e-4)
    assert f"using {chosen.weights} (resnets)" in err  # torchvision's word, said as the entry it names
    # MODEL.TAG: the network those weights need; with pretrained, the weights
    assert choose_weights("resnet56.chenyaofo_cifar10").reason == "untrained"
    assert choose_weights("resnet56.chenyaofo_cifar10", pretrained=True).weights == "resnet56.chenyaofo_cifar10"
    with pytest.raises(UsageError, match="resnet110 has no named weights"):
        choose_weights("resnet110", pretrained=True)


# -- messages that say what happened --------------------------------------------------------------


def test_info_names_the_shortcut_the_weights_have(capsys):
    code, out, _ = _cli(capsys, "info", "resnet56.chenyaofo_cifar10")
    first = out.splitlines()[0]
    assert code == 0 and "option B shortcuts (registered with option A)" in first and "shortcut B" in out
    code, out, _ = _cli(capsys, "info", "resnet56")
    assert out.splitlines()[0].endswith("option A shortcuts.") and "shortcut A" in out


def test_list_weights_says_which_files_ship_inside_the_package(capsys):
    code, out, _ = _cli(capsys, "list", "--weights")
    header, *rows, legend = out.splitlines()
    assert code == 0 and header.split()[:2] == ["NAME", "TOP-1"] and "FILE" in header.split()
    column = header.split().index("FILE") + 3  # each row says "top-1" and "top-5" and "n" before its figures
    files = {row.split()[0]: row.split()[column] for row in rows}
    shipped = {w.name for w in catalogue.SHIPPED}
    assert shipped and {n for n, f in files.items() if f == "package"} == shipped
    assert {f for n, f in files.items() if n not in shipped} == {"download"}
    assert "package = inside the installed package" in legend
    code, out, _ = _cli(capsys, "list", "--weights", "--json")
    assert {r["name"] for r in json.loads(out) if r["shipped"]} == shipped


def test_eval_on_data_without_a_held_out_split_says_the_score_may_not_be_held_out(tmp_path):
    write_tree(tmp_path / "photos", {"cat": 3, "ship": 3})
    done = run_main("eval", "resnet20", "--data", str(tmp_path / "photos"), "--amp", "off")
    assert done.returncode == 0, done.stderr
    assert "trained on other data" not in done.stderr
    assert "every image is scored, and those the weights may have been trained on make it no held-out score" \
        in done.stderr


def test_plot_of_a_run_not_evaluated_yet_says_so(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"model": "resnet20"}))
    code, _, err = _cli(capsys, "plot", str(run))
    assert code == 2 and "the run has not been evaluated yet" in err and err.count("\n") == 1
    code, _, err = _cli(capsys, "plot", str(tmp_path))  # not a run at all
    assert code == 2 and "give the directory of a training run" in err


def test_a_session_choosing_its_precision_knows_its_runtime_at_construction():
    model = resnets.create_model("resnet20", num_classes=4).eval()
    images = torch.randn(24, 3, 32, 32)
    labels = _outputs(model, images).argmax(1)
    session = resnets.InferenceSession(model, precision="auto", calibration=(images, labels))
    assert session.backend in ("torch", "onnxruntime", "openvino") and session.precision in ("fp32", "bf16", "int8")
    assert session.chosen_on == "16 calibration images"
    assert f"{session.backend}/{session.precision}" == min(session.timings, key=session.timings.get)
    chosen = (session.backend, session.precision)
    session.run(images[:3])
    assert (session.backend, session.precision) == chosen  # the first batch changes nothing
    plain = resnets.InferenceSession(model, backend="auto")  # no images to time on: the first batch decides
    assert plain.backend is None
    plain.run(images[:2])
    assert plain.backend is not None and plain.chosen_on == "the first batch"


_CUDA_HOME_NOTICE = """
import sys, torch, resnets
if sys.argv[1] == "session":
    resnets.InferenceSession(resnets.create_model("resnet20"), backend="torch", compile=True)
import torch.utils.cpp_extension  # what torch.compile's builder imports: it looks for CUDA_HOME as it loads
"""


def test_no_cuda_home_notice_from_a_compiled_session_on_a_machine_without_a_gpu(tmp_path):
    toolkit = tmp_path / "cuda"  # a CUDA toolkit's folder, and no GPU
    toolkit.mkdir()

    def run(mode: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-c", _CUDA_HOME_NOTICE, mode], capture_output=True, text=True,
                              env=cli_env(env={"CUDA_HOME": str(toolkit)}), timeout=120)

    assert "No CUDA runtime is found" in run("plain").stderr  # torch says it where nothing silences it
    done = run("session")
    assert done.returncode == 0 and "No CUDA runtime is found" not in done.stderr, done.stderr


def test_the_registry_module_holds_no_catalogue_data():
    source = Path(named.__file__).read_text()
    assert "download.pytorch.org" not in source and "huggingface.co/timm" not in source
    registered = set(resnets.list_weights())
    assert {w.name for w in (*catalogue.SHIPPED, *catalogue.TORCHVISION, *catalogue.TIMM,
                             *catalogue.PYTORCH_CIFAR_MODELS)} == registered


_WITHOUT_HUGGINGFACE_HUB = """
import json, sys
sys.modules["huggingface_hub"] = None  # as if not installed: importing it fails
import resnets
from resnets.weights.named import Weights, WeightsMeta
meta = WeightsMeta(dataset="cifar10", preprocessing=resnets.get_model_spec("resnet20").preprocessing, classes="cifar10")
entry = resnets.register_weights(Weights(name="resnet20.hubtest", url=sys.argv[1], sha256=sys.argv[2], meta=meta))
try:
    located = entry.locate(offline=True)
except resnets.ResnetsError as error:
    sys.exit(f"{type(error).__name__}: {error}")
model = resnets.create_model("resnet20", weights="hubtest")
print(json.dumps({"cache": located.cache, "path": str(located.path), "loaded": str(model.checkpoint_info.path)}))
"""


def test_a_file_in_huggingface_hubs_cache_is_found_without_huggingface_hub(tmp_path):
    """timm's weights already in huggingface_hub's cache (its layout: refs/main names the snapshot) are used where
    huggingface_hub itself is not installed, hash checked; nothing is downloaded (offline)."""
    model = randomise_bn(resnets.create_model("resnet20"))
    snapshot = tmp_path / "hf" / "models--org--tiny" / "snapshots" / "0123abcd"
    snapshot.mkdir(parents=True)
    save_weights(model, snapshot / "model.safetensors")
    (tmp_path / "hf" / "models--org--tiny" / "refs").mkdir()
    (tmp_path / "hf" / "models--org--tiny" / "refs" / "main").write_text("0123abcd")
    digest = hashlib.sha256((snapshot / "model.safetensors").read_bytes()).hexdigest()
    url = "https://huggingface.co/org/tiny/resolve/main/model.safetensors"
    env = cli_env(env={"HF_HUB_CACHE": str(tmp_path / "hf"), "RESNETS_CACHE": str(tmp_path / "ours"),
                       "RESNETS_OFFLINE": "1"})

    def run(sha256: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-c", _WITHOUT_HUGGINGFACE_HUB, url, sha256], capture_output=True,
                              text=True, env=env, timeout=120)

    done = run(digest)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["cache"] == "huggingface_hub" and result["path"] == result["loaded"] == str(snapshot /
                                                                                              "model.safetensors")
    refused = run("0" * 64)  # other bytes than the entry's: not used, and offline nothing else is there
    assert refused.returncode == 1 and "MissingFileError" in refused.stderr and "not in the resnets cache" in \
        refused.stderr
