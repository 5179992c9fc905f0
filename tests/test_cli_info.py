"""`resnets list` and `resnets info`: what they print and return (through the CLI's entry point, in this process)."""

import json

import pytest
import torch
from torch import nn

from cli_helpers import run_main
import resnets
from resnets.models.summary import count_macs


def info_json(*args: str) -> dict:
    result = run_main("info", *args, "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_info_resnet50_json():
    info = info_json("resnet50")
    assert info["name"] == "resnet50"
    assert info["params"] == 25_557_032
    assert round(info["macs"] / 1e9, 2) == 4.09
    assert [s["output_size"] for s in info["stages"]] == [[112, 112], [56, 56], [28, 28], [14, 14], [7, 7]]
    assert [s["blocks"] for s in info["stages"]] == [0, 3, 4, 6, 3]
    assert info["stages"][1]["layers"] == ["1x1, 64", "3x3, 64", "1x1, 256"]
    assert info["depth"] == 50


def _conv_macs_by_formula(model: nn.Module, size: int) -> int:
    """Multiply-adds of every conv and linear layer, from their shapes and output sizes."""
    total = 0
    outputs = {}
    hooks = [m.register_forward_hook(lambda m, i, o: outputs.__setitem__(m, o.shape))
             for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    with torch.no_grad():
        model.eval()(torch.zeros(1, 3, size, size))
    for h in hooks:
        h.remove()
    for m, shape in outputs.items():
        if isinstance(m, nn.Conv2d):
            k = m.kernel_size[0] * m.kernel_size[1] * m.in_channels // m.groups
            total += k * shape[1] * shape[2] * shape[3]
        else:
            total += m.in_features * m.out_features
    return total


def test_info_resnet20_macs():
    info = info_json("resnet20")
    assert info["params"] == 269_722
    assert info["macs"] == _conv_macs_by_formula(resnets.create_model("resnet20"), 32)
    # option A costs nothing; the commonly quoted 40.8 M counts option B's two projections
    assert round(info["macs"] / 1e6, 2) == 40.55
    option_b = info_json("resnet20", "--shortcut", "B")
    assert round(option_b["macs"] / 1e6, 1) == 40.8
    assert option_b["macs"] - info["macs"] == 16 * 32 * 16 * 16 + 32 * 64 * 8 * 8


def test_info_table_and_input_size():
    result = run_main("info", "resnet18", "--input-size", "64")
    assert result.returncode == 0, result.stderr
    assert "| conv5_x | 2x2 | [3x3, 512; 3x3, 512] x 2 |" in result.stdout
    assert "parameters 11,689,512" in result.stdout


def test_count_macs_of_a_real_model_matches_the_formula():
    model = resnets.create_model("resnext50_32x4d")
    assert count_macs(model, (3, 64, 64)) == _conv_macs_by_formula(model, 64)


def test_list_and_errors():
    result = run_main("list", "plain*", "--json")
    assert result.returncode == 0
    assert [m["name"] for m in json.loads(result.stdout)] == resnets.list_models("plain*")
    bad = run_main("info", "resnet51")
    assert bad.returncode == 2 and "unknown model 'resnet51'" in bad.stderr


@pytest.mark.slow
@pytest.mark.parametrize("name", ["preact_resnet1001", "resnet1202"])
def test_info_deepest_models_are_cheap(name):
    info = info_json(name)
    assert info["depth"] == int(name.split("resnet")[1])


def test_the_command_line_starts_without_the_heavy_optional_packages():
    # every command pays for what `import resnets.cli` imports: torchvision (1.5 s here), matplotlib, ONNX
    # and the server's packages are imported by the commands that use them, not at start-up
    import subprocess
    import sys

    from cli_helpers import cli_env
    heavy = ("torchvision", "matplotlib", "onnx", "onnxruntime", "openvino", "fastapi", "huggingface_hub")
    code = f"import sys, resnets.cli; print(sorted(m for m in {heavy!r} if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=cli_env())
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stdout + done.stderr


def test_a_skeleton_on_the_meta_device_is_shapes_only_and_cheap():
    # commands read a model's shapes and preprocessing from a meta-device skeleton; initialising it there
    # drew random numbers through torch's compiler stack (3 s at a command's start), for nothing
    import subprocess
    import sys

    from cli_helpers import cli_env
    code = ("import sys, torch, resnets\n"
            "with torch.device('meta'):\n"
            "    model = resnets.create_model('resnet56', zero_init_residual=True)\n"
            "print(model.conv1.weight.is_meta, 'torch._dynamo' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=cli_env())
    assert done.stdout.split() == ["True", "False"], done.stdout + done.stderr
    # on a real device the He et al. initialisation is unchanged
    model = resnets.create_model("resnet20")
    fan_out = model.conv1.weight.shape[0] * 9
    assert abs(model.conv1.weight.detach().std().item() - (2 / fan_out) ** 0.5) < 0.06
