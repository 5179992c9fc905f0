"""Explanations: the target layer of every family, heatmaps from grad-cam, the faithfulness check,
and the ``resnets explain`` command."""

import json
import sys

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("pytorch_grad_cam")

import resnets  # noqa: E402
from resnets.errors import MissingDependencyError, UsageError  # noqa: E402
from resnets.interpret import explain, faithfulness, hide_masks, target_layer  # noqa: E402

from cli_helpers import run_main  # noqa: E402
from data_helpers import encode, random_rgb  # noqa: E402


@pytest.mark.parametrize("name, size", [("resnet20", 32), ("plain20", 32), ("preact_resnet110", 32),
                                        ("resnet18", 64), ("resnet50", 64), ("preact_resnet18", 64)])
def test_target_layer_gives_the_map_global_pooling_reads(name, size):
    model = resnets.create_model(name, num_classes=10).eval()
    seen = []
    handle = target_layer(model).register_forward_hook(lambda module, inputs, output: seen.append(output.clone()))
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        model(x)
        features = model.forward_features(x)
    handle.remove()
    # the last output the layer produced in the full forward is the final feature map
    torch.testing.assert_close(seen[0], features)


def test_target_layer_refuses_a_feature_extractor():
    with pytest.raises(UsageError, match="target_layer"):
        target_layer(resnets.create_model("resnet20", features_only=True))


@pytest.mark.parametrize("method", ["gradcam", "gradcam++", "hirescam"])
def test_explain_gives_one_map_per_image_at_input_resolution(method):
    model = resnets.create_model("resnet20", num_classes=10).train()
    for p in model.parameters():
        p.requires_grad_(False)  # frozen weights still explain (the input carries the graph)
    maps = explain(model, torch.randn(3, 3, 32, 32), targets=[1, 2, 3], method=method)
    assert maps.shape == (3, 32, 32) and maps.dtype == torch.float32
    assert maps.min() >= 0 and maps.max() <= 1
    assert model.training  # left as it was


def test_explain_refuses_bad_input():
    model = resnets.create_model("resnet20", num_classes=10)
    with pytest.raises(UsageError, match="unknown method"):
        explain(model, torch.randn(1, 3, 32, 32), method="magic")
    with pytest.raises(UsageError, match=r"\(N, C, H, W\)"):
        explain(model, torch.randn(3, 32, 32))
    with pytest.raises(UsageError, match="outside 0..9"):
        explain(model, torch.randn(1, 3, 32, 32), targets=[10])


def test_explain_without_grad_cam_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "pytorch_grad_cam", None)  # as where grad-cam is not installed
    model = resnets.create_model("resnet20", num_classes=10)
    with pytest.raises(MissingDependencyError) as raised:
        explain(model, torch.randn(1, 3, 32, 32))
    assert str(raised.value) == ("an explanation needs the optional module 'pytorch_grad_cam', which is not installed: "
                                 'pip install "resnets[explain]"')


def test_hide_masks_rank_the_heatmap():
    heat = torch.arange(100, dtype=torch.float32).reshape(1, 10, 10)
    masks = hide_masks(heat, 0.2, seed=3)
    assert all(int(m.sum()) == 20 for m in masks.values())
    assert heat[masks["top"]].min() == 80 and heat[masks["bottom"]].max() == 19
    # a flat map: top and bottom still hide 20 pixels each, disjoint, not in reading order
    flat = hide_masks(torch.zeros(1, 10, 10), 0.2)
    assert not (flat["top"] & flat["bottom"]).any()
    assert not flat["bottom"].flatten()[:20].all()


def test_faithfulness_hides_the_pixels_the_model_reads():
    # a "model" that only looks at the image's left half: hiding pixels there must cost, hiding the right half not
    class LeftHalf(torch.nn.Module):
        num_classes = 2

        def forward(self, x):
            score = x[:, :, :, :16].mean(dim=(1, 2, 3)) * 2
            return torch.stack([score, -score], 1)

    batch = torch.ones(4, 3, 32, 32)
    heat = torch.zeros(4, 32, 32)
    heat[:, :, :16] = 1.0  # the right explanation
    result = faithfulness(LeftHalf(), batch, heat, targets=0)
    assert result.top_beats_bottom == 1.0 and result.top_beats_random == 1.0
    assert result.bottom == pytest.approx(result.whole)  # hiding the ignored half changes nothing
    wrong = faithfulness(LeftHalf(), batch, 1 - heat, targets=0)
    assert wrong.top_beats_bottom == 0.0


def _validation_batch(datasets, model, count: int):
    """The images the figure and the faithfulness benchmark use: benchmarks/explain_faithfulness.py's own
    seeded shuffle of the training recipes' validation split."""
    from script_helpers import benchmark_module

    with benchmark_module("explain_faithfulness") as benchmark:
        batch, _ = benchmark.validation_batch(model, count, datasets / "cifar10-jpeg-train.zip")
    return batch


@pytest.mark.slow
def test_gradcam_is_faithful_on_trained_weights(shared_datasets):
    if "resnet20.cifar10" not in resnets.list_weights():
        pytest.skip("the trained weights resnet20.cifar10 are not registered in this build")
    model = resnets.create_model("resnet20", weights="resnet20.cifar10")
    batch = _validation_batch(shared_datasets, model, 40)
    result = faithfulness(model, batch, explain(model, batch, method="gradcam"))
    # hiding the highest-ranked 20% costs the predicted class more than hiding the lowest-ranked, on at least
    # three in four of 40 held-out images (a noise map: about half)
    assert result.top_beats_bottom >= 0.75, result.to_dict()
    assert result.drops()["top"] > result.drops()["bottom"]


@pytest.mark.slow
def test_explain_command_writes_png_and_json(tmp_path):
    weights = tmp_path / "resnet20.safetensors"
    model = resnets.create_model("resnet20")
    resnets.save_weights(model, weights, classes=[f"class{i}" for i in range(10)])
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        (tmp_path / f"{name}.png").write_bytes(encode(random_rgb(rng, (40, 48))))
    out = tmp_path / "out"
    result = run_main("explain", "resnet20", "--weights", str(weights), str(tmp_path / "a.png"),
                      str(tmp_path / "b.png"), "--out", str(out), "--method", "gradcam++")
    assert result.returncode == 0, result.stderr
    for name in ("a", "b"):
        record = json.loads((out / f"{name}.json").read_text())
        # the map beside a small record, as .npy: a few hundred bytes of JSON, not the map's numbers as text
        heatmap = np.load(out / record["heatmap"])
        assert record["heatmap"] == f"{name}.heatmap.npy" and record["heatmap_shape"] == [32, 32]
        assert heatmap.shape == (32, 32) and heatmap.dtype == np.float32 and 0 <= heatmap.min() <= heatmap.max() <= 1
        assert (out / f"{name}.json").stat().st_size < 2000
        assert record["method"] == "gradcam++" and record["predictions"][0]["name"].startswith("class")
        assert set(record["faithfulness"]) == {"fraction", "whole", "top_hidden", "bottom_hidden", "random_hidden"}
        with Image.open(out / f"{name}.png") as image:
            assert image.format == "PNG" and image.width > 100
    bad = run_main("explain", "resnet20", "--weights", str(weights), str(tmp_path / "a.png"), "--out", str(out),
                   "--method", "magic")
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1 and "unknown method" in bad.stderr
