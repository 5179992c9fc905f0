"""Repositories in the Hugging Face Hub's layout: save_pretrained, local-dir:, and hf-hub: through huggingface_hub's
own cache, filled from a loopback server that speaks the part of the Hub's HTTP API that huggingface_hub downloads
with (no network)."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlparse

import numpy as np
import pytest
import torch
from PIL import Image

import resnets
from resnets.deploy import load_batch
from resnets.errors import MissingDependencyError, MissingFileError
from resnets.weights import CheckpointError
from resnets.weights import hub as hub_module
from resnets.weights.classes import class_names

from cli_helpers import cli_env, run_cli
from model_helpers import randomise_bn

huggingface_hub = pytest.importorskip("huggingface_hub")
hub_constants = pytest.importorskip("huggingface_hub.constants")  # loaded on first use otherwise

COMMIT = "0123456789abcdef0123456789abcdef01234567"
CLASSES = ["apple", "bee", "cloud", "drum", "eel"]


# -- a loopback Hub ---------------------------------------------------------------------------


class _HubHandler(BaseHTTPRequestHandler):
    """``/ORG/NAME/resolve/REV/FILE`` (HEAD and GET), ``/api/models/ORG/NAME/revision/REV`` and
    ``/api/models/ORG/NAME/tree/REV``, answered from ``server.repos`` (repo id -> folder)."""

    def log_message(self, *args):  # quiet
        pass

    def _files(self, repo_id):
        folder = self.server.repos.get(repo_id)
        return None if folder is None else {p.name: p for p in sorted(Path(folder).iterdir()) if p.is_file()}

    def _error(self, code: str):
        self.send_response(404)
        self.send_header("X-Error-Code", code)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _json(self, value):
        body = json.dumps(value).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _answer(self, head: bool):
        self.server.requests.append((self.command, self.path))
        parts = [unquote(p) for p in urlparse(self.path).path.strip("/").split("/")]
        if parts[:2] == ["api", "models"] and len(parts) >= 6 and parts[4] in ("revision", "tree"):
            files = self._files("/".join(parts[2:4]))
            if files is None:
                return self._error("RepoNotFound")
            if parts[4] == "revision":
                return self._json({"id": "/".join(parts[2:4]), "sha": COMMIT,
                                   "siblings": [{"rfilename": n} for n in files]})
            return self._json([{"type": "file", "path": n, "size": p.stat().st_size,
                                "oid": hashlib.sha1(p.read_bytes()).hexdigest()} for n, p in files.items()])
        if len(parts) >= 5 and parts[2] == "resolve":
            files = self._files("/".join(parts[:2]))
            if files is None:
                return self._error("RepoNotFound")
            path = files.get("/".join(parts[4:]))
            if path is None:
                return self._error("EntryNotFound")
            data = path.read_bytes()
            self.send_response(200)
            self.send_header("X-Repo-Commit", COMMIT)
            self.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if not head:
                self.wfile.write(data)
            return None
        return self._error("RepoNotFound")

    def do_HEAD(self):
        self._answer(head=True)

    def do_GET(self):
        self._answer(head=False)


@pytest.fixture
def loopback_hub():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _HubHandler)
    server.repos, server.requests = {}, []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def _endpoint(server) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}"


def _snapshot_download(server, repo_id: str, cache: Path) -> Path:
    """huggingface_hub's own ``snapshot_download`` from the loopback Hub into ``cache`` (a child process: the
    endpoint is read when huggingface_hub is imported)."""
    code = ("import sys; from huggingface_hub import snapshot_download; "
            "print(snapshot_download(sys.argv[1]))")
    env = cli_env(env={"HF_ENDPOINT": _endpoint(server), "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "0",
                       "HF_HUB_DISABLE_PROGRESS_BARS": "1", "HF_HUB_DISABLE_TELEMETRY": "1"})
    done = subprocess.run([sys.executable, "-c", code, repo_id], capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    return Path(done.stdout.strip().splitlines()[-1])


@pytest.fixture
def offline_cache(monkeypatch, tmp_path):
    """This process's huggingface_hub reading ``tmp_path/hf-cache``, offline."""
    cache = tmp_path / "hf-cache"
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return cache


# -- repositories -----------------------------------------------------------------------------


def _our_model():
    """A resnet20 with options and statistics a wrong reader would lose: option-B shortcuts, 5 classes with
    names, random BN statistics, its own preprocessing."""
    model = resnets.create_model("resnet20", num_classes=5, shortcut="B")
    randomise_bn(model)
    model.classes = list(CLASSES)
    model.preprocessing = resnets.Preprocessing((3, 32, 32), (0.5, 0.4, 0.3), (0.2, 0.25, 0.3), "bicubic", 1.0)
    return model.eval()


def _timm_repo(folder: Path, *, config: dict | None = None) -> torch.nn.Module:
    """A repository as timm writes it: torchvision's resnet18 tensors under timm's (the same) names, in a
    safetensors file with timm's metadata ({"format": "pt"}, no BN step counters), and timm's config.json.
    Returns the torchvision network, the reference."""
    from safetensors.torch import save_file
    from torchvision.models import resnet18

    reference = randomise_bn(resnet18(num_classes=len(CLASSES))).eval()
    tensors = {k: v.contiguous() for k, v in reference.state_dict().items() if not k.endswith("num_batches_tracked")}
    folder.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
    default = {"architecture": "resnet18", "num_classes": len(CLASSES), "num_features": 512, "global_pool": "avg",
               "label_names": {str(i): n for i, n in enumerate(CLASSES)},
               "pretrained_cfg": {"tag": "demo_in1k", "custom_load": False, "input_size": [3, 64, 64],
                                  "fixed_input_size": False, "interpolation": "bicubic", "crop_pct": 0.95,
                                  "crop_mode": "center", "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225],
                                  "num_classes": len(CLASSES), "pool_size": [2, 2], "first_conv": "conv1",
                                  "classifier": "fc"}}
    (folder / "config.json").write_text(json.dumps(config if config is not None else default))
    return reference


def _image(path: Path) -> Path:
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(path)
    return path


# -- tests ------------------------------------------------------------------------------------


def test_save_pretrained_round_trip_through_local_dir(tmp_path):
    model = _our_model()
    folder = resnets.save_pretrained(model, tmp_path / "repo", repo_id="someone/resnet20-demo")
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    config = json.loads((folder / "config.json").read_text())
    assert config["architecture"] == "resnet20" and config["num_classes"] == 5
    assert config["label_names"] == CLASSES and config["pretrained_cfg"]["interpolation"] == "bicubic"
    assert config["resnets"]["arch_kwargs"]["shortcut"] == "B"
    loaded = resnets.create_model(f"local-dir:{folder}").eval()
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    assert loaded.arch_kwargs["shortcut"] == "B"
    assert loaded.classes == CLASSES and loaded.preprocessing == model.preprocessing
    assert loaded.checkpoint_info.source == f"local-dir:{folder}"
    digest = hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()
    assert resnets.create_model(f"local-dir:{folder}", sha256=digest[:12]).arch == "resnet20"
    with pytest.raises(CheckpointError, match="does not match"):
        resnets.create_model(f"local-dir:{folder}", sha256="0" * 64)
    # the same through weights= for the named architecture, and the card's metadata for the Hub
    again = resnets.create_model("resnet20", weights=f"local-dir:{folder}").eval()
    with torch.no_grad():
        assert torch.equal(again(x), model(x))
    card = huggingface_hub.ModelCard.load(folder / "README.md")
    assert card.data.library_name == "resnets" and card.data.pipeline_tag == "image-classification"
    assert 'create_model("hf-hub:someone/resnet20-demo")' in card.text
    # saved again: its own card is rewritten (here without the repo_id); a card the user wrote is kept
    resnets.save_pretrained(model, folder)
    assert "someone/resnet20-demo" not in (folder / "README.md").read_text()
    (folder / "README.md").write_text("# my notes on this model\n")
    with pytest.warns(UserWarning, match="not written by save_pretrained: kept"):
        resnets.save_pretrained(model, folder, repo_id="someone/resnet20-demo")
    assert (folder / "README.md").read_text() == "# my notes on this model\n"


def test_card_carries_the_named_weights_metadata(tmp_path):
    model = resnets.create_model("resnet20", pretrained=True)
    folder = resnets.save_pretrained(model, tmp_path / "repo")
    card = huggingface_hub.ModelCard.load(folder / "README.md")
    meta = resnets.get_weights("resnet20.cifar10").meta
    assert card.data.datasets == ["cifar10"] and card.data.license == meta.license.lower()
    assert card.data.eval_results[0].metric_value == meta.top1
    assert f"top-1 {meta.top1:.2f}%" in card.text and "resnets train resnet20" in card.text
    assert json.loads((folder / "config.json").read_text())["resnets"]["weights"] == "resnet20.cifar10"
    # saved again after a trip through the folder: the name, not the folder's path, travels
    again = resnets.save_pretrained(resnets.create_model(f"local-dir:{folder}"), tmp_path / "again")
    assert json.loads((again / "config.json").read_text())["resnets"]["weights"] == "resnet20.cifar10"
    assert str(tmp_path) not in (again / "README.md").read_text() + (again / "config.json").read_text()


def test_hub_repository_through_a_real_cache_offline(loopback_hub, offline_cache, tmp_path):
    model = _our_model()
    loopback_hub.repos["someone/resnet20-demo"] = resnets.save_pretrained(model, tmp_path / "repo")
    snapshot = _snapshot_download(loopback_hub, "someone/resnet20-demo", offline_cache)
    assert snapshot.is_relative_to(offline_cache) and (snapshot / "model.safetensors").is_symlink()
    scanned = huggingface_hub.scan_cache_dir(offline_cache)
    assert [r.repo_id for r in scanned.repos] == ["someone/resnet20-demo"]
    loopback_hub.shutdown()  # offline: nothing may reach the server, the cache must do
    seen = len(loopback_hub.requests)
    loaded = resnets.create_model("hf-hub:someone/resnet20-demo").eval()
    assert len(loopback_hub.requests) == seen
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    assert loaded.classes == CLASSES and loaded.checkpoint_info.path.is_relative_to(offline_cache)
    assert loaded.checkpoint_info.source == "hf-hub:someone/resnet20-demo"
    # a revision the cache holds, by its commit
    pinned = resnets.create_model("resnet20", weights=f"hf-hub:someone/resnet20-demo@{COMMIT}").eval()
    with torch.no_grad():
        assert torch.equal(pinned(x), model(x))


def test_timm_repository_loads_and_matches_torchvision(loopback_hub, offline_cache, tmp_path):
    reference = _timm_repo(tmp_path / "timm-repo")
    loopback_hub.repos["timm-like/resnet18.demo_in1k"] = tmp_path / "timm-repo"
    _snapshot_download(loopback_hub, "timm-like/resnet18.demo_in1k", offline_cache)
    model = resnets.create_model("hf-hub:timm-like/resnet18.demo_in1k").eval()
    assert model.arch == "resnet18" and model.checkpoint_info.layout == "timm"
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference(x), rtol=1e-5, atol=1e-5)
    assert model.classes == CLASSES
    assert model.preprocessing == resnets.Preprocessing((3, 64, 64), (0.485, 0.456, 0.406), (0.229, 0.224, 0.225),
                                                        "bicubic", 0.95)
    # fine-tuning from it: a new head of another size, the body kept
    with pytest.warns(resnets.WeightsAdaptedWarning):
        other = resnets.create_model("resnet18", weights="hf-hub:timm-like/resnet18.demo_in1k", num_classes=3)
    assert torch.equal(other.conv1.weight, reference.conv1.weight)


def test_timm_in1k_config_without_label_names_gets_imagenet_classes(tmp_path):
    """timm's configs often leave label_names out; an ImageNet-1k tag (..._in1k) with 1,000 classes says which."""
    config = {"architecture": "resnet50", "num_classes": 1000,
              "pretrained_cfg": {"tag": "a1_in1k", "input_size": [3, 224, 224], "mean": [0.485, 0.456, 0.406],
                                 "std": [0.229, 0.224, 0.225], "interpolation": "bicubic", "crop_pct": 0.95}}
    path = tmp_path / "config.json"
    for tag, classes, expected in (("a1_in1k", 1000, class_names("imagenet1k")),
                                   ("in21k_ft_in1k", 1000, class_names("imagenet1k")),
                                   ("a1_in21k", 1000, None), ("a1_in1k", 10, None)):
        path.write_text(json.dumps({**config, "num_classes": classes,
                                    "pretrained_cfg": {**config["pretrained_cfg"], "tag": tag}}))
        repository = hub_module._read_config("hf-hub:x/y", tmp_path, path, tmp_path / "model.safetensors")
        assert repository.classes == expected, tag


def test_older_timm_repository_with_pytorch_model_bin(tmp_path):
    """timm's older repositories hold pytorch_model.bin (torch.save): read with weights_only, checked against the
    config before a network is built."""
    folder = tmp_path / "old-repo"
    reference = _timm_repo(folder)
    torch.save(reference.state_dict(), folder / "pytorch_model.bin")
    (folder / "model.safetensors").unlink()
    model = resnets.create_model(f"local-dir:{folder}").eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference(x), rtol=1e-5, atol=1e-5)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "num_classes": 7, "label_names": None}))
    with pytest.raises(CheckpointError, match="num_classes 7, but pytorch_model.bin has a 5-class classifier"):
        resnets.create_model(f"local-dir:{folder}")


def test_cli_downloads_from_the_loopback_hub_into_the_cache(loopback_hub, offline_cache, tmp_path):
    """The user's path: --weights hf-hub: fetches through resnets' own call into an empty cache; afterwards,
    offline and with the server gone, the cache alone gives the same network."""
    model = _our_model()
    loopback_hub.repos["someone/resnet20-demo"] = resnets.save_pretrained(model, tmp_path / "repo")
    image = _image(tmp_path / "x.png")
    env = {"HF_ENDPOINT": _endpoint(loopback_hub), "HF_HUB_CACHE": str(offline_cache), "HF_HUB_OFFLINE": "0",
           "HF_HUB_DISABLE_PROGRESS_BARS": "1", "HF_HUB_DISABLE_TELEMETRY": "1"}
    done = run_cli("predict", "resnet20", "--backend", "torch", "--weights", "hf-hub:someone/resnet20-demo", "--json",
                   "--top-k", "2", str(image), env=env)
    assert done.returncode == 0, done.stderr
    assert ("GET", "/someone/resnet20-demo/resolve/main/model.safetensors") in loopback_hub.requests
    top = json.loads(done.stdout)["results"][0]["predictions"]
    loopback_hub.shutdown()
    cached = huggingface_hub.scan_cache_dir(offline_cache)
    assert {f.file_name for r in cached.repos for rev in r.revisions for f in rev.files} == \
        {"config.json", "model.safetensors"}
    loaded = resnets.create_model("hf-hub:someone/resnet20-demo").eval()
    batch = load_batch([image], loaded.preprocessing)
    with torch.no_grad():
        assert torch.equal(loaded(batch), model(batch))
        probabilities = loaded(batch).softmax(1)[0]
    assert top[0]["name"] == CLASSES[int(probabilities.argmax())]
    assert top[0]["probability"] == pytest.approx(float(probabilities.max()), abs=1e-5)


_NAMED_ON_THE_HUB = """
import json, sys, torch, resnets
from resnets.weights.named import Weights, WeightsMeta
url = "https://huggingface.co/timm-like/resnet18.demo_in1k/resolve/main/model.safetensors"
meta = WeightsMeta(dataset="demo", preprocessing=resnets.get_model_spec("resnet18").preprocessing,
                   classes=("apple", "bee", "cloud", "drum", "eel"))
resnets.register_weights(Weights(name="resnet18.hubdemo", url=url, sha256=sys.argv[1], meta=meta))
try:
    model = resnets.create_model("resnet18", weights="hubdemo").eval()
except resnets.ResnetsError as error:
    sys.exit(f"{type(error).__name__}: {error}")
x = torch.linspace(-1, 1, 3 * 64 * 64).reshape(1, 3, 64, 64)
located = resnets.get_weights("resnet18.hubdemo").locate()  # where the file is now, and which cache said so
with torch.no_grad():
    print(json.dumps({"path": str(model.checkpoint_info.path), "logits": model(x)[0].tolist(),
                      "cache": located.cache, "located": str(located.path)}))
"""


def test_named_weights_on_the_hub_come_through_the_hugging_face_cache(loopback_hub, tmp_path):
    """timm's named weights (a huggingface.co resolve URL) are fetched by huggingface_hub into its own cache, where
    timm finds them too, hash checked; offline the cache alone serves them; resnets' own cache stays empty."""
    reference = _timm_repo(tmp_path / "repo")
    loopback_hub.repos["timm-like/resnet18.demo_in1k"] = tmp_path / "repo"
    digest = hashlib.sha256((tmp_path / "repo" / "model.safetensors").read_bytes()).hexdigest()
    cache, ours = tmp_path / "hf-cache", tmp_path / "resnets-cache"
    env = {"HF_ENDPOINT": _endpoint(loopback_hub), "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "0",
           "RESNETS_CACHE": str(ours), "RESNETS_OFFLINE": "0", "HF_HUB_DISABLE_PROGRESS_BARS": "1",
           "HF_HUB_DISABLE_TELEMETRY": "1"}

    def run(sha256: str, **changes) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-c", _NAMED_ON_THE_HUB, sha256], capture_output=True, text=True,
                              env=cli_env(env={**env, **changes}), timeout=120)

    done = run(digest)
    assert done.returncode == 0, done.stderr
    assert ("GET", "/timm-like/resnet18.demo_in1k/resolve/main/model.safetensors") in loopback_hub.requests
    result = json.loads(done.stdout)
    assert Path(result["path"]).is_relative_to(cache)
    assert result["cache"] == "huggingface_hub" and result["located"] == result["path"]
    x = torch.linspace(-1, 1, 3 * 64 * 64).reshape(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(torch.tensor(result["logits"]), reference(x)[0], rtol=0, atol=1e-5)
    assert [r.repo_id for r in huggingface_hub.scan_cache_dir(cache).repos] == ["timm-like/resnet18.demo_in1k"]
    assert not ours.exists() or not any(p.is_file() for p in ours.rglob("*"))
    loopback_hub.shutdown()  # offline: the cache alone
    done = run(digest, HF_HUB_OFFLINE="1")
    assert done.returncode == 0 and json.loads(done.stdout)["path"] == result["path"], done.stderr
    done = run("0" * 64, HF_HUB_OFFLINE="1")  # the hash is checked on what the cache holds
    assert done.returncode == 1 and "sha256" in done.stderr and "CheckpointError" in done.stderr
    done = run(digest, HF_HUB_OFFLINE="1", HF_HUB_CACHE=str(tmp_path / "empty"))
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "hf download timm-like/resnet18.demo_in1k model.safetensors" in done.stderr
    assert "https://huggingface.co/timm-like/resnet18.demo_in1k/resolve/main/model.safetensors" in done.stderr


def test_cli_missing_files_offline_is_one_line_exit_2(tmp_path):
    image = _image(tmp_path / "x.png")
    env = {"HF_HUB_CACHE": str(tmp_path / "empty-cache"), "HF_HUB_OFFLINE": "1"}
    done = run_cli("predict", "resnet50", "--weights", "hf-hub:nobody/resnet50-nothing", str(image), env=env)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "hf-hub:nobody/resnet50-nothing" in lines[0] and "hf download nobody/resnet50-nothing" in lines[0]
    assert "local-dir:" in lines[0] and "Traceback" not in done.stderr


def test_a_hub_whose_name_does_not_resolve_is_read_from_the_cache_at_once(loopback_hub, tmp_path):
    """No network but HF_HUB_OFFLINE unset: the cache serves what it holds, and what it lacks is one line
    naming the address, instead of half a minute of huggingface_hub's retries."""
    cache = tmp_path / "hf-cache"
    loopback_hub.repos["someone/resnet20-demo"] = resnets.save_pretrained(_our_model(), tmp_path / "repo")
    _snapshot_download(loopback_hub, "someone/resnet20-demo", cache)
    image = _image(tmp_path / "x.png")
    env = {"HF_ENDPOINT": "http://hub.invalid", "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "0",
           "HF_HUB_DISABLE_TELEMETRY": "1"}  # .invalid never resolves (RFC 6761)
    done = run_cli("predict", "resnet20", "--backend", "torch", "--weights", "hf-hub:someone/resnet20-demo",
                   str(image), env=env)
    assert done.returncode == 0, done.stderr
    done = run_cli("predict", "resnet20", "--weights", "hf-hub:someone/other", str(image), env=env)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1, done.stderr
    assert "the Hub's address hub.invalid does not resolve (no network?)" in lines[0]
    assert "Retrying" not in done.stderr


def test_missing_local_dir_and_bad_specs(tmp_path):
    with pytest.raises(MissingFileError, match="no such folder"):
        resnets.create_model(f"local-dir:{tmp_path / 'nowhere'}")
    (tmp_path / "empty").mkdir()
    with pytest.raises(MissingFileError, match="config.json"):
        resnets.create_model(f"local-dir:{tmp_path / 'empty'}")
    with pytest.raises(resnets.ResnetsError, match="ORG/NAME"):
        resnets.create_model("hf-hub:not a repo")
    folder = resnets.save_pretrained(_our_model(), tmp_path / "repo")
    with pytest.raises(CheckpointError, match="holds resnet20 weights, not resnet56"):
        resnets.create_model("resnet56", weights=f"local-dir:{folder}")
    with pytest.raises(resnets.ResnetsError, match="repository"):
        resnets.load_weights(_our_model(), f"local-dir:{folder}")


@pytest.mark.parametrize("change, message", [
    ({"num_classes": 10 ** 12, "label_names": None},
     "num_classes 1000000000000, but model.safetensors has a 5-class classifier"),
    ({"architecture": "vit_base_patch16_224"}, "architecture 'vit_base_patch16_224' is not a network resnets builds"),
    ({"num_classes": -1}, "'num_classes' must be a count"),
    ({"model_args": {"stem_type": "deep"}}, "model_args \\['stem_type'\\]"),
    ({"label_names": ["a", "b"]}, "2 label_names for num_classes 5"),
    ({"pretrained_cfg": {"input_size": [3, 100000, 100000], "mean": [0.5] * 3, "std": [0.5] * 3}}, "over the limit"),
    ({"global_pool": "max"}, "average pooling only"),
])
def test_hostile_config_is_refused_before_anything_is_allocated(tmp_path, monkeypatch, change, message):
    folder = tmp_path / "repo"
    _timm_repo(folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, **change}))

    def never(*args, **kwargs):
        raise AssertionError("weights were read or a network was built from a config that should be refused")

    monkeypatch.setattr(hub_module, "load_checkpoint", never)
    monkeypatch.setattr(resnets.factory, "build_model", never)
    with pytest.raises(CheckpointError, match=message):
        resnets.create_model(f"local-dir:{folder}")


def test_oversized_or_broken_config_is_refused_unparsed(tmp_path, monkeypatch):
    folder = tmp_path / "repo"
    _timm_repo(folder)
    monkeypatch.setattr(hub_module, "MAX_CONFIG_BYTES", 100)
    with pytest.raises(CheckpointError, match="over the limit"):
        resnets.create_model(f"local-dir:{folder}")
    monkeypatch.undo()
    (folder / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not JSON"):
        resnets.create_model(f"local-dir:{folder}")


def test_missing_hub_extra_is_the_one_line_extra_error(tmp_path, monkeypatch):
    folder = resnets.save_pretrained(_our_model(), tmp_path / "repo")
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # as if not installed
    with pytest.raises(MissingDependencyError, match=r'pip install "resnets\[hub\]"'):
        resnets.create_model("hf-hub:someone/resnet20-demo")
    # a folder on disk needs no huggingface_hub
    assert resnets.create_model(f"local-dir:{folder}").arch == "resnet20"
