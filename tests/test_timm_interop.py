"""With timm itself: its repositories load here, ours load in timm (or are refused there where timm would build
another function), and timm's data helpers read our models' preprocessing."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

import resnets
from model_helpers import randomise_bn

timm = pytest.importorskip("timm")
timm_hub = pytest.importorskip("timm.models")


def _timm_model(name: str, **kwargs) -> torch.nn.Module:
    model = timm.create_model(name, pretrained=False, **kwargs)
    randomise_bn(model)  # running statistics that matter: a wrong BN mapping shows
    return model.eval()


@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
def test_folder_written_by_timm_save_for_hf_loads_and_matches(tmp_path, name):
    """timm's save_for_hf writes model_args with global_pool (refused before as "another network")."""
    reference = _timm_model(name, num_classes=5)
    timm_hub.save_for_hf(reference, tmp_path, model_config={"label_names": ["a", "b", "c", "d", "e"]})
    assert json.loads((tmp_path / "config.json").read_text())["model_args"]["global_pool"] == "avg"
    model = resnets.create_model(f"local-dir:{tmp_path}").eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference(x), rtol=0, atol=1e-5)
    assert model.classes == ["a", "b", "c", "d", "e"] and model.checkpoint_info.layout == "timm"
    assert model.preprocessing.interpolation == reference.pretrained_cfg["interpolation"]


def _timm_resnet50_and_ours(tmp_path) -> tuple[torch.nn.Module, torch.nn.Module]:
    """timm's resnet50, and ours loaded from its state dict saved as a safetensors file."""
    reference = _timm_model("resnet50")
    save_file({k: v.contiguous() for k, v in reference.state_dict().items()}, tmp_path / "timm.safetensors")
    return reference, resnets.create_model("resnet50", weights=str(tmp_path / "timm.safetensors")).eval()


def test_timm_state_dict_file_loads_into_ours(tmp_path):
    reference, model = _timm_resnet50_and_ours(tmp_path)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference(x), rtol=0, atol=1e-5)


@pytest.mark.parametrize("name, kwargs", [("resnet18", {}), ("resnet50", {"num_classes": 7}),
                                          ("resnext50_32x4d", {"in_chans": 1, "num_classes": 3})])
def test_save_pretrained_loads_in_timm(tmp_path, name, kwargs):
    ours = randomise_bn(resnets.create_model(name, **kwargs)).eval()
    resnets.save_pretrained(ours, tmp_path)
    theirs = timm.create_model(f"local-dir:{tmp_path}", pretrained=True).eval()
    x = torch.randn(1, kwargs.get("in_chans", 3), 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(theirs(x), ours(x), rtol=0, atol=1e-5)


@pytest.mark.parametrize("kwargs, refusal", [({"variant": "v1"}, "variant"), ({"shortcut": "C"}, "shortcut")])
def test_a_layout_timm_builds_differently_is_refused_by_timm(tmp_path, kwargs, refusal):
    """ResNet-50 v1 (stride in the 1x1) has v1.5's tensor shapes: without model_args timm loaded it silently and
    computed another function."""
    name = "resnet50" if "variant" in kwargs else "resnet18"
    ours = resnets.create_model(name, **kwargs).eval()
    resnets.save_pretrained(ours, tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["model_args"] == {
        "num_classes": 1000, "in_chans": 3, **kwargs}
    with pytest.raises(TypeError, match=refusal):
        timm.create_model(f"local-dir:{tmp_path}", pretrained=True)
    back = resnets.create_model(f"local-dir:{tmp_path}").eval()  # and we read it back as it was
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(back(x), ours(x))


def test_layout_args_of_the_registered_layout_stay_out(tmp_path):
    """Options that build the registered network (an explicit v1.5, zero_init_residual) do not stop timm."""
    ours = resnets.create_model("resnet50", variant="v1.5", shortcut="B", zero_init_residual=True).eval()
    resnets.save_pretrained(ours, tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["model_args"] == {"num_classes": 1000, "in_chans": 3}
    timm.create_model(f"local-dir:{tmp_path}", pretrained=True)


def test_timm_data_config_reads_our_preprocessing():
    model = resnets.create_model("resnet20", weights="cifar10")
    config = timm.data.resolve_data_config({}, model=model)
    assert config == {"input_size": (3, 32, 32), "interpolation": "bilinear", "mean": model.preprocessing.mean,
                      "std": model.preprocessing.std, "crop_pct": 1.0, "crop_mode": "center"}
    transform = timm.data.create_transform(**config)
    from PIL import Image
    image = Image.new("RGB", (32, 32), (200, 30, 90))
    ours = model.preprocessing.transforms()(image)
    torch.testing.assert_close(transform(image), ours, rtol=0, atol=1e-6)
    # an ImageNet-family model without weights: its registered preprocessing (bilinear, 0.875), not timm's defaults
    config = timm.data.resolve_model_data_config(resnets.create_model("resnet50"))
    assert (config["interpolation"], config["crop_pct"]) == ("bilinear", 0.875)


def test_forward_intermediates_as_timm_gives_them(tmp_path):
    reference, ours = _timm_resnet50_and_ours(tmp_path)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        for kwargs in ({}, {"indices": 2}, {"indices": [0, -1], "stop_early": True}):
            theirs_last, theirs = reference.forward_intermediates(x, **kwargs)
            last, maps = ours.forward_intermediates(x, **kwargs)
            assert len(maps) == len(theirs)
            for got, want in zip(maps, theirs):
                torch.testing.assert_close(got, want, rtol=0, atol=1e-5)
            torch.testing.assert_close(last, theirs_last, rtol=0, atol=1e-5)
        assert ours.prune_intermediate_layers(2) == reference.prune_intermediate_layers(2) == [3, 4]
