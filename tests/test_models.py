"""The model zoo: every registered model, exact sizes, torchvision parity, the options."""

import re

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

import resnets
from resnets.models import ZeroPadShortcut, freeze_batchnorm
from resnets.models.blocks import BasicBlock, Bottleneck, PreActBasicBlock

from model_helpers import randomise_bn

# ../shared/ANCHORS.md
ANCHOR_PARAMS = {
    "resnet18": 11_689_512,
    "resnet34": 21_797_672,
    "resnet50": 25_557_032,
    "resnet101": 44_549_160,
    "resnet152": 60_192_808,
    "wide_resnet50_2": 68_883_240,
    "resnext50_32x4d": 25_028_904,
    "resnet20": 269_722,
    "resnet32": 464_154,
    "resnet44": 658_586,
    "resnet56": 853_018,
    "resnet110": 1_727_962,
    "resnet1202": 19_421_274,
}


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def slow_if_deep(params: list) -> list:
    """Parametrize values (a model name, or a tuple that starts with one) with those of networks 100 or more
    layers deep (the number in the name) marked slow."""
    marked = []
    for value in params:
        values = (value,) if isinstance(value, str) else tuple(value)
        depth = re.search(r"\d+", values[0])
        marked.append(pytest.param(*values, marks=pytest.mark.slow) if depth and int(depth.group()) >= 100
                      else value)
    return marked


def test_registry_lists_every_family():
    names = resnets.list_models()
    for name in ["resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "resnet200",
                 "resnet20", "resnet32", "resnet44", "resnet56", "resnet110", "resnet1202",
                 "preact_resnet18", "preact_resnet200", "preact_resnet110", "preact_resnet164", "preact_resnet1001",
                 "plain18", "plain34", "plain20", "plain32", "plain44", "plain56", "plain110",
                 "resnext50_32x4d", "wide_resnet50_2"]:
        assert name in names
    assert resnets.list_models("plain*") == ["plain18", "plain20", "plain32", "plain34", "plain44", "plain56",
                                              "plain110"]
    assert "resnet50" not in resnets.list_models("resnet*", exclude="resnet5*")
    assert set(resnets.list_models(family="cifar")) >= {"resnet20", "preact_resnet1001", "plain110"}


def test_unknown_model_names_close_matches():
    with pytest.raises(ValueError, match="unknown model 'resnet51'.*resnet50"):
        resnets.create_model("resnet51")


@pytest.mark.parametrize("name", slow_if_deep(resnets.list_models()))
def test_every_model_builds_and_runs(name):
    spec = resnets.get_model_spec(name)
    size = 32 if spec.family == "cifar" else 64
    # train mode: at initialisation the running statistics are not yet those of the data
    model = resnets.create_model(name, num_classes=7).train()
    with torch.no_grad():
        out = model(torch.randn(2, 3, size, size))
    assert out.shape == (2, 7)
    assert torch.isfinite(out).all()
    assert model.preprocessing.input_size == (3, 32, 32) if spec.family == "cifar" else (3, 224, 224)


@pytest.mark.parametrize("name", slow_if_deep(sorted(ANCHOR_PARAMS)))
def test_parameter_counts_match_anchors(name):
    with torch.device("meta"):
        model = resnets.create_model(name)
    assert n_params(model) == ANCHOR_PARAMS[name]


def test_preact_bottleneck_sizes_match_the_2016_paper():
    with torch.device("meta"):
        assert n_params(resnets.create_model("preact_resnet164")) == pytest.approx(1.7e6, rel=0.01)
        # the paper rounds to 10.2M; the exact count with its projection shortcuts is 10.33M
        assert n_params(resnets.create_model("preact_resnet1001")) == pytest.approx(10.2e6, rel=0.015)


@torch.no_grad()
def _calibrated(model: nn.Module, size: int) -> nn.Module:
    """Give batch norm the statistics of its inputs, so eval-mode activations keep a sane
    scale (at initialisation the running statistics are 0 and 1, and deep nets blow up)."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = None  # a cumulative average
    model.train()
    for _ in range(2):
        model(torch.randn(8, 3, size, size))
    return model.eval()


def _randomize_bn_statistics(model: nn.Module) -> None:
    generator = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=generator) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=generator) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=generator) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=generator) * 0.1)


TORCHVISION_PAIRS = {
    "resnet18": lambda: torchvision.models.resnet18(),
    "resnet34": lambda: torchvision.models.resnet34(),
    "resnet50": lambda: torchvision.models.resnet50(),
    "resnet101": lambda: torchvision.models.resnet101(),
    "resnet152": lambda: torchvision.models.resnet152(),
    "resnext50_32x4d": lambda: torchvision.models.resnext50_32x4d(),
    "wide_resnet50_2": lambda: torchvision.models.wide_resnet50_2(),
    # torchvision ships no ResNet-200, but its ResNet class builds one with the same layout
    "resnet200": lambda: torchvision.models.resnet.ResNet(torchvision.models.resnet.Bottleneck, [3, 24, 36, 3]),
}


@pytest.mark.parametrize("name", slow_if_deep(sorted(TORCHVISION_PAIRS)))
@torch.no_grad()
def test_torchvision_checkpoint_loads_strict_and_outputs_agree(name):
    reference = TORCHVISION_PAIRS[name]().eval()
    _randomize_bn_statistics(reference)
    ours = resnets.create_model(name).eval()
    ours.load_state_dict(reference.state_dict(), strict=True)
    assert list(ours.state_dict()) == list(reference.state_dict())
    x = torch.randn(2, 3, 96, 96)
    expected = reference(x)
    torch.testing.assert_close(ours(x), expected, atol=1e-5, rtol=1e-5)


def test_option_a_shortcut_is_a_hand_computed_pad():
    x = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).reshape(2, 3, 4, 4)
    shortcut = ZeroPadShortcut(3, 8, stride=2)
    assert list(shortcut.parameters()) == [] and list(shortcut.buffers()) == []
    expected = torch.zeros(2, 8, 2, 2)
    # 5 extra channels: 2 zero channels before the input's 3, 3 after
    for c in range(3):
        for i in range(2):
            for j in range(2):
                expected[:, 2 + c, i, j] = x[:, c, 2 * i, 2 * j]
    assert torch.equal(shortcut(x), expected)


def test_option_a_adds_no_parameters_and_b_c_add_projections():
    counts = {}
    for option in "ABC":
        with torch.device("meta"):
            counts[option] = n_params(resnets.create_model("resnet20", shortcut=option))
    assert counts["A"] == 269_722
    # option B: two projections (16->32, 32->64), each conv1x1 + BN
    assert counts["B"] - counts["A"] == (16 * 32 + 2 * 32) + (32 * 64 + 2 * 64)
    # option C: a projection (conv1x1 + BN) on every one of the 9 blocks
    def projection(i, o):
        return i * o + 2 * o

    c_extra = 3 * projection(16, 16)
    c_extra += projection(16, 32) + 2 * projection(32, 32)
    c_extra += projection(32, 64) + 2 * projection(64, 64)
    assert counts["C"] - counts["A"] == c_extra
    model = resnets.create_model("resnet20")
    assert isinstance(model.layer2[0].downsample, ZeroPadShortcut)
    assert model.layer2[1].downsample is None


def test_v1_and_v1_5_differ_only_in_where_the_stride_sits():
    v15 = resnets.create_model("resnet50")
    v1 = resnets.create_model("resnet50", variant="v1")
    assert [(k, t.shape) for k, t in v1.state_dict().items()] == [(k, t.shape) for k, t in v15.state_dict().items()]
    for layer in ("layer2", "layer3", "layer4"):
        assert getattr(v15, layer)[0].conv1.stride == (1, 1) and getattr(v15, layer)[0].conv2.stride == (2, 2)
        assert getattr(v1, layer)[0].conv1.stride == (2, 2) and getattr(v1, layer)[0].conv2.stride == (1, 1)
    strides = {(n, m.stride) for n, m in v1.named_modules() if isinstance(m, nn.Conv2d)}
    strides15 = {(n, m.stride) for n, m in v15.named_modules() if isinstance(m, nn.Conv2d)}
    assert {n for n, _ in strides ^ strides15} == {f"layer{i}.0.conv{j}" for i in (2, 3, 4) for j in (1, 2)}
    # same weights, same output shape, different function
    v1.load_state_dict(v15.state_dict())
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        a, b = v15.eval()(x), v1.eval()(x)
    assert a.shape == b.shape and not torch.allclose(a, b)


def test_plain_nets_have_no_shortcut():
    plain, residual = resnets.create_model("plain20"), resnets.create_model("resnet20")
    # option A has no parameters, so the two nets have identical state dicts
    assert list(plain.state_dict()) == list(residual.state_dict())
    plain.load_state_dict(residual.state_dict())
    blocks = [m for m in plain.modules() if isinstance(m, BasicBlock)]
    assert len(blocks) == 9 and all(not b.residual and b.downsample is None for b in blocks)
    x16 = torch.randn(2, 16, 8, 8)
    residual_block, plain_block = residual.layer1[0].eval(), plain.layer1[0].eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(residual_block(x16), F.relu(residual_block.residual_function(x16) + x16))
        torch.testing.assert_close(plain_block(x16), F.relu(plain_block.residual_function(x16)))
        assert not torch.allclose(plain.eval()(x), residual.eval()(x))
    with torch.device("meta"):
        assert n_params(resnets.create_model("plain34")) == ANCHOR_PARAMS["resnet34"] - sum(
            c * 2 * c + 2 * 2 * c for c in (64, 128, 256))


@pytest.mark.slow
def test_input_gradient_plain110_vs_resnet110_at_initialisation():
    # With batch norm, the gradient reaching the input of a deep plain net explodes at
    # initialisation; identity shortcuts keep it at the scale of the classifier's gradient.
    ratios = {}
    for name in ("plain110", "resnet110"):
        torch.manual_seed(0)
        model = resnets.create_model(name).train()
        x = torch.randn(16, 3, 32, 32, requires_grad=True)
        F.cross_entropy(model(x), torch.arange(16) % 10).backward()
        ratios[name] = x.grad.norm().item() / model.fc.weight.grad.norm().item()
    assert ratios["resnet110"] < 1.0
    assert ratios["plain110"] > 1e3 * ratios["resnet110"]


def test_preact_blocks_keep_the_identity_path_clean():
    model = resnets.create_model("preact_resnet110").eval()
    block = model.layer1[1]
    assert isinstance(block, PreActBasicBlock) and block.downsample is None
    x = torch.randn(2, 16, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(block(x), x + block.residual_function(x))  # no ReLU after the addition
    # projection shortcuts see the pre-activated input (2016 paper's code)
    transition = model.layer2[0]
    assert isinstance(transition.downsample, nn.Conv2d)
    x = torch.randn(2, 16, 8, 8)
    with torch.no_grad():
        x_act = F.relu(transition.bn1(x))
        torch.testing.assert_close(transition(x), transition.downsample(x_act) + transition.residual_function(x))
    assert hasattr(model, "final_bn")
    imagenet = resnets.create_model("preact_resnet50")
    assert isinstance(imagenet.layer1[0].bn1, nn.Identity)  # the stem already ends in BN-ReLU
    assert isinstance(imagenet.layer2[0].bn1, nn.BatchNorm2d)


def test_feature_api():
    model = resnets.create_model("resnet50", num_classes=10).eval()
    x = torch.randn(2, 3, 128, 128)
    with torch.no_grad():
        features = model.forward_features(x)
        assert features.shape == (2, 2048, 4, 4)
        pooled = model.forward_head(features, pre_logits=True)
        torch.testing.assert_close(pooled, features.mean((2, 3)))
        torch.testing.assert_close(model.forward_head(features), model.fc(pooled))
        torch.testing.assert_close(model(x), model.fc(pooled))
    model.reset_classifier(3)
    assert model(x).shape == (2, 3) and model.num_classes == 3
    model.reset_classifier(0)
    assert model(x).shape == (2, 2048)
    model.reset_classifier(4, global_pool="max")
    with torch.no_grad():
        torch.testing.assert_close(model.forward_head(features, pre_logits=True), features.amax((2, 3)))


@pytest.mark.parametrize("name,size,expected", [
    ("resnet50", 128, [(64, 2), (256, 4), (512, 8), (1024, 16), (2048, 32)]),
    ("resnet20", 32, [(16, 1), (16, 1), (32, 2), (64, 4)]),
    ("preact_resnet164", 32, [(16, 1), (64, 1), (128, 2), (256, 4)]),
])
def test_features_only(name, size, expected):
    full = resnets.create_model(name).eval()
    features = resnets.create_model(name, features_only=True).eval()
    assert [(f["num_chs"], f["reduction"]) for f in features.feature_info] == expected
    # same names as the classifier, so its checkpoint loads once the head is dropped
    head_keys = {k for k in full.state_dict() if k.startswith("fc.")}
    assert set(features.state_dict()) == set(full.state_dict()) - head_keys
    features.load_state_dict({k: v for k, v in full.state_dict().items() if k not in head_keys})
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        maps = features(x)
        assert [(m.shape[1], size // m.shape[2]) for m in maps] == expected
        torch.testing.assert_close(maps[-1], full.forward_features(x))


def test_features_only_out_indices_prune_later_stages():
    f = resnets.create_model("resnet50", features_only=True, out_indices=(1, 2))
    assert [i["module"] for i in f.feature_info] == ["layer1", "layer2"]
    assert not hasattr(f, "layer3") and not hasattr(f, "fc")
    maps = f(torch.randn(1, 3, 64, 64))
    assert [m.shape[1] for m in maps] == [256, 512]
    # timm's accessors, which necks and detection heads call
    info = f.feature_info
    assert info.channels() == [256, 512] and info.reduction() == [4, 8] and info.module_name(1) == "layer2"
    assert info.channels([1, 0]) == [512, 256] and info.get_dicts()[0] == info[0]
    assert resnets.create_model("resnet20").feature_info.channels() == [16, 16, 32, 64]
    with pytest.raises(ValueError, match="out_indices"):
        resnets.create_model("resnet20", features_only=True, out_indices=(4,))
    with pytest.raises(RuntimeError, match="no head"):
        f.forward_head(maps[-1])


@pytest.mark.parametrize("name, size", [("resnet50", 64), ("resnet20", 32), ("preact_resnet18", 64),
                                        ("preact_resnet110", 32)])
def test_forward_intermediates_gives_the_features_only_maps(name, size):
    full = randomise_bn(resnets.create_model(name)).eval()
    features = resnets.create_model(name, features_only=True).eval()
    features.load_state_dict({k: v for k, v in full.state_dict().items() if not k.startswith("fc.")})
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        expected = features(x)
        last, maps = full.forward_intermediates(x, norm=True)
        assert len(maps) == len(expected) == len(full.feature_info)
        for got, want in zip(maps, expected):
            torch.testing.assert_close(got, want)
        torch.testing.assert_close(last, full.forward_features(x))
        # an int is the last n maps, negative indices count from the end, stop_early changes no map
        two = full.forward_intermediates(x, indices=2, norm=True, intermediates_only=True)
        assert [m.shape for m in two] == [m.shape for m in expected[-2:]]
        early = full.forward_intermediates(x, indices=[-2, 1], stop_early=True, intermediates_only=True)
        torch.testing.assert_close(early[0], expected[1])
        torch.testing.assert_close(early[1], expected[-2])
    with pytest.raises(resnets.ResnetsError, match="indices"):
        full.forward_intermediates(x, indices=[len(full.feature_info)])
    with pytest.raises(resnets.ResnetsError, match="NCHW"):
        full.forward_intermediates(x, output_fmt="NHWC")


@pytest.mark.parametrize("name", ["resnet50", "preact_resnet18"])
def test_prune_intermediate_layers_keeps_what_the_indices_need(name):
    model = randomise_bn(resnets.create_model(name)).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        maps = model.forward_intermediates(x, intermediates_only=True)
        assert model.prune_intermediate_layers((1, 2)) == [1, 2]
        assert not any(k.startswith(("layer3", "layer4", "fc.", "final_bn")) for k in model.state_dict())
        torch.testing.assert_close(model(x), maps[2])  # no head: the last kept stage's map
        assert model.feature_info.channels()[-1] == model.num_features == maps[2].shape[1]
        pruned = model.forward_intermediates(x, intermediates_only=True)
        for got, want in zip(pruned, maps[:3]):
            torch.testing.assert_close(got, want)


def test_zero_init_residual_makes_each_block_its_shortcut():
    model = resnets.create_model("resnet50", zero_init_residual=True).eval()
    x = torch.randn(1, 256, 8, 8)
    block = model.layer1[1]
    assert isinstance(block, Bottleneck) and torch.count_nonzero(block.bn3.weight) == 0
    with torch.no_grad():
        torch.testing.assert_close(block(x), F.relu(x))
    preact = resnets.create_model("preact_resnet110", zero_init_residual=True).eval()
    x = torch.randn(1, 16, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(preact.layer1[1](x), x)


def test_frozen_batchnorm_matches_eval_batchnorm_and_loads_torchvision_names():
    reference = torchvision.models.resnet18().eval()
    _randomize_bn_statistics(reference)
    frozen = resnets.create_model("resnet18", norm_layer="frozen_batchnorm")
    frozen.load_state_dict(reference.state_dict(), strict=True)  # num_batches_tracked dropped
    assert all("bn" not in n and "downsample.1" not in n for n, _ in frozen.named_parameters())
    frozen.train()  # frozen statistics do not depend on the mode
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(frozen(x), reference(x), atol=1e-5, rtol=1e-5)
        converted = freeze_batchnorm(resnets.create_model("resnet18"))
        converted.load_state_dict(reference.state_dict())
        torch.testing.assert_close(converted.train()(x), reference(x), atol=1e-5, rtol=1e-5)
    groupnorm = resnets.create_model("resnet20", norm_layer="groupnorm")
    assert isinstance(groupnorm.bn1, nn.GroupNorm)
    with pytest.raises(ValueError, match="unknown norm_layer"):
        resnets.create_model("resnet20", norm_layer="layernorm")


def test_dilation_keeps_resolution():
    model = resnets.create_model("resnet50", replace_stride_with_dilation=[False, True, True]).eval()
    with torch.no_grad():
        assert model.forward_features(torch.randn(1, 3, 128, 128)).shape == (1, 2048, 16, 16)
    assert model.layer4[0].conv2.dilation == (2, 2) and model.layer4[1].conv2.dilation == (4, 4)
    basic = resnets.create_model("resnet18", replace_stride_with_dilation=[False, False, True]).eval()
    with torch.no_grad():
        assert basic.forward_features(torch.randn(1, 3, 128, 128)).shape == (1, 512, 8, 8)


def test_in_chans_and_num_classes():
    model = resnets.create_model("resnet18", in_chans=1, num_classes=3)
    assert model.conv1.weight.shape == (64, 1, 7, 7)
    assert model(torch.randn(2, 1, 64, 64)).shape == (2, 3)
    assert model.preprocessing.input_size == (1, 224, 224) and len(model.preprocessing.mean) == 1


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="shortcut"):
        resnets.create_model("resnet18", shortcut="D")
    with pytest.raises(ValueError, match="variant"):
        resnets.create_model("resnet50", variant="v2")
    with pytest.raises(ValueError, match="depth 21"):
        resnets.cifar_resnet(21)
    with pytest.raises(ValueError, match="groups=1"):
        resnets.create_model("resnet18", groups=32)
    with pytest.raises(ValueError, match="replace_stride_with_dilation"):
        resnets.create_model("resnet50", replace_stride_with_dilation=[True])
    for plain in ("plain20", "plain18", "plain34"):  # else the residual net would be built under the plain name
        with pytest.raises(ValueError, match="a plain network has no shortcut; drop shortcut='B'"):
            resnets.create_model(plain, shortcut="B")
    assert resnets.create_model("plain18", shortcut="none").shortcut == "none"


def test_cifar_builder_any_depth():
    model = resnets.cifar_resnet(8)  # n=1
    assert [len(model.layer1), len(model.layer2), len(model.layer3)] == [1, 1, 1]
    assert resnets.cifar_resnet(47, bottleneck=True, preact=True).layer1[0].conv3.out_channels == 64
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


@pytest.mark.parametrize("name,size", slow_if_deep([("resnet18", 64), ("resnet20", 32), ("preact_resnet164", 32),
                                                    ("plain20", 32), ("resnext50_32x4d", 64)]))
def test_compiles_as_one_graph(name, size):
    import torch._dynamo

    torch._dynamo.reset()
    model = _calibrated(resnets.create_model(name), size)
    compiled = torch.compile(model, fullgraph=True, backend="eager")  # fullgraph: a graph break is an error
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), model(x))


@pytest.mark.parametrize("name,size", slow_if_deep([("resnet18", 64), ("resnet20", 32), ("preact_resnet110", 32),
                                                    ("plain20", 32)]))
def test_onnx_export_matches_pytorch(name, size, tmp_path):
    onnxruntime = pytest.importorskip("onnxruntime")
    model = _calibrated(resnets.create_model(name), size)
    path = tmp_path / f"{name}.onnx"
    torch.onnx.export(model, (torch.randn(3, 3, size, size),), str(path), input_names=["input"],
                      dynamic_shapes={"x": {0: torch.export.Dim("batch")}}, dynamo=True, verbose=False)
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = torch.randn(5, 3, size, size)  # another batch size than at export
    with torch.no_grad():
        expected = model(x).numpy()
    (got,) = session.run(None, {"input": x.numpy()})
    assert abs(got - expected).max() < 1e-4
