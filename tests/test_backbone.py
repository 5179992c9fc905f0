"""resnets.backbone: feature maps (and a feature pyramid) that torchvision's detection and segmentation
models accept, frozen stages and BN, weights loaded, bad arguments refused in one line."""

import pytest
import torch
from torch import nn
from torchvision.models.detection import FasterRCNN, MaskRCNN, RetinaNet
from torchvision.models.detection.backbone_utils import resnet_fpn_backbone
from torchvision.models.segmentation import DeepLabV3, FCN
from torchvision.models.segmentation.deeplabv3 import DeepLabHead
from torchvision.models.segmentation.fcn import FCNHead

import resnets
from resnets.errors import UsageError
from resnets.models import FrozenBatchNorm2d


def _randomize_batchnorm(model: nn.Module) -> None:
    """Statistics and affine parameters far from the identity, so that copying them (or not) shows."""
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (nn.BatchNorm2d, FrozenBatchNorm2d)):
                for name in ("weight", "bias", "running_mean"):
                    getattr(module, name).copy_(torch.randn(module.num_features, generator=generator) * 0.3
                                                + (1.0 if name == "weight" else 0.0))
                module.running_var.copy_(torch.rand(module.num_features, generator=generator) + 0.5)


def _scenes(count: int = 2, size: int = 128):
    images = [torch.rand(3, size, size) for _ in range(count)]
    targets = [{"boxes": torch.tensor([[10.0, 20.0, 60.0, 80.0], [70.0, 30.0, 120.0, 100.0]]),
                "labels": torch.tensor([1, 2])} for _ in range(count)]
    return images, targets


def test_faster_rcnn_trains_and_detects_on_a_resnet18_fpn_backbone():
    backbone = resnets.backbone("resnet18", fpn=True, fpn_channels=64)
    assert backbone.out_channels == 64 and backbone.strides == [4, 8, 16, 32, 64]
    detector = FasterRCNN(backbone, num_classes=3, min_size=128, max_size=128)
    images, targets = _scenes()
    detector.train()
    losses = detector(images, targets)
    assert set(losses) == {"loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg"}
    total = sum(losses.values())
    assert torch.isfinite(total)
    total.backward()
    body = detector.backbone.body
    # trainable_stages=3 (the default): layer2..layer4 learn, the stem and layer1 do not
    assert body.layer4[1].conv2.weight.grad is not None and body.layer2[0].conv1.weight.grad is not None
    assert body.conv1.weight.grad is None and body.layer1[0].conv1.weight.grad is None
    assert detector.backbone.fpn.layer_blocks[0][0].weight.grad is not None
    detector.eval()
    with torch.no_grad():
        detections = detector(images)
    assert len(detections) == 2
    for found in detections:
        assert found["boxes"].shape[1] == 4 and len(found["boxes"]) == len(found["scores"]) == len(found["labels"])
        assert found["boxes"].numel() == 0 or float(found["boxes"].max()) <= 128


def test_retinanet_and_mask_rcnn_accept_the_backbone():
    # RetinaNet: P3..P7 from stages 2..4 and the P6/P7 extra levels, as torchvision builds it
    backbone = resnets.backbone("resnet18", fpn=True, fpn_channels=32, out_indices=(2, 3, 4), fpn_extra="p6p7")
    assert list(backbone(torch.rand(1, 3, 128, 128))) == ["0", "1", "2", "p6", "p7"]
    assert backbone.strides == [8, 16, 32, 64, 128]
    retinanet = RetinaNet(backbone, num_classes=3, min_size=128, max_size=128).eval()
    with torch.no_grad():
        assert retinanet([torch.rand(3, 128, 128)])[0]["boxes"].shape[1] == 4
    mask_rcnn = MaskRCNN(resnets.backbone("resnet18", fpn=True, fpn_channels=32), num_classes=3,
                         min_size=128, max_size=128)
    images, targets = _scenes(1)
    masks = torch.zeros(2, 128, 128, dtype=torch.uint8)
    masks[0, 20:80, 10:60] = 1
    masks[1, 30:100, 70:120] = 1
    targets[0]["masks"] = masks
    losses = mask_rcnn(images, targets)
    assert "loss_mask" in losses and torch.isfinite(sum(losses.values()))


@pytest.mark.parametrize("dilation, stride", [((False, True, True), 8), ((False, False, True), 16)])
def test_deeplabv3_and_fcn_on_dilated_stages(dilation, stride):
    backbone = resnets.backbone("resnet18", out_indices=(3, 4), names=("aux", "out"), dilation=dilation)
    assert backbone.strides == [min(16, stride), stride] and backbone.channels == [256, 512]
    features = backbone(torch.rand(1, 3, 128, 128))
    assert features["out"].shape == (1, 512, 128 // stride, 128 // stride)
    deeplab = DeepLabV3(backbone, DeepLabHead(512, 5), FCNHead(256, 5)).eval()
    with torch.no_grad():
        out = deeplab(torch.rand(2, 3, 128, 128))
    assert out["out"].shape == out["aux"].shape == (2, 5, 128, 128)
    fcn = FCN(resnets.backbone("resnet18", out_indices=(4,), names=("out",), dilation=dilation), FCNHead(512, 5))
    assert fcn.eval()(torch.rand(1, 3, 96, 96))["out"].shape == (1, 5, 96, 96)


@pytest.mark.parametrize("name, size, channels, strides", [
    ("resnet50", 64, [256, 512, 1024, 2048], [4, 8, 16, 32]),
    ("resnext50_32x4d", 64, [256, 512, 1024, 2048], [4, 8, 16, 32]),
    ("preact_resnet18", 64, [64, 128, 256, 512], [4, 8, 16, 32]),
    ("resnet20", 32, [16, 32, 64], [1, 2, 4]),
    ("preact_resnet110", 32, [16, 32, 64], [1, 2, 4]),
])
def test_channels_and_strides_match_the_maps(name, size, channels, strides):
    backbone = resnets.backbone(name)
    assert backbone.channels == channels and backbone.strides == strides
    assert backbone.out_channels == channels  # different widths: the list
    maps = backbone.eval()(torch.rand(1, 3, size, size))
    assert [m.shape[1] for m in maps.values()] == channels
    assert [size // m.shape[-1] for m in maps.values()] == strides
    # the stem (index 0) and a CIFAR net's dilated last stage
    stem = resnets.backbone(name, out_indices=(0, 1))
    assert stem.strides[0] == (2 if name.startswith(("resnet5", "resnext", "preact_resnet18")) else 1)


def test_fpn_backbone_is_torchvisions_resnet_fpn_backbone():
    """Same state-dict keys and shapes, same frozen parameters, same output for the same weights."""
    reference = resnet_fpn_backbone(backbone_name="resnet18", weights=None, trainable_layers=3).eval()
    _randomize_batchnorm(reference)
    ours = resnets.backbone("resnet18", fpn=True).eval()
    theirs = reference.state_dict()
    assert {k: tuple(v.shape) for k, v in ours.state_dict().items()} == {k: tuple(v.shape) for k, v in theirs.items()}
    assert ({k for k, p in ours.named_parameters() if p.requires_grad}
            == {k for k, p in reference.named_parameters() if p.requires_grad})
    ours.load_state_dict(theirs)
    x = torch.rand(1, 3, 96, 96)
    with torch.no_grad():
        mine, expected = ours(x), reference(x)
    assert list(mine) == list(expected) == ["0", "1", "2", "3", "pool"]
    for key in mine:
        torch.testing.assert_close(mine[key], expected[key])


def test_frozen_batchnorm_stays_fixed_in_training():
    backbone = resnets.backbone("resnet18", trainable_stages=5)
    _randomize_batchnorm(backbone)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in backbone.modules())
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    backbone.train()
    sum(m.mean() for m in backbone(torch.rand(2, 3, 64, 64) * 5).values()).backward()
    after = backbone.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert backbone.body.conv1.weight.grad is not None  # every stage trainable, the stem too


def test_frozen_stages_keep_trainable_batchnorm_statistics():
    backbone = resnets.backbone("resnet18", norm="batchnorm", trainable_stages=2)
    assert backbone.frozen == ("conv1", "bn1", "layer1", "layer2")
    layer1_mean = backbone.body.layer1[0].bn1.running_mean.clone()
    layer4_mean = backbone.body.layer4[0].bn1.running_mean.clone()
    backbone.train()
    maps = backbone(torch.rand(2, 3, 64, 64) * 5)
    sum(m.mean() for m in maps.values()).backward()
    assert torch.equal(backbone.body.layer1[0].bn1.running_mean, layer1_mean)  # a frozen stage stays in eval mode
    assert not torch.equal(backbone.body.layer4[0].bn1.running_mean, layer4_mean)
    assert backbone.body.layer2[0].conv1.weight.grad is None and backbone.body.layer3[0].conv1.weight.grad is not None
    frozen = resnets.backbone("resnet18", trainable_stages=0)
    assert not any(p.requires_grad for p in frozen.parameters())


def test_weights_from_a_checkpoint_give_the_classifiers_trunk(tmp_path):
    classifier = resnets.create_model("resnet18", num_classes=7)
    _randomize_batchnorm(classifier)
    path = tmp_path / "resnet18.safetensors"
    resnets.save_weights(classifier, path)
    backbone = resnets.backbone("resnet18", weights=str(path)).eval()
    assert isinstance(backbone.body.layer3[1].bn2, FrozenBatchNorm2d)
    torch.testing.assert_close(backbone.body.layer3[1].bn2.running_var, classifier.layer3[1].bn2.running_var)
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        # FrozenBatchNorm2d folds scale and shift: the same numbers up to float rounding, which some CPUs'
        # kernels (AVX2 against AVX-512) accumulate past the default 1e-5
        torch.testing.assert_close(backbone(x)["3"], classifier.eval().forward_features(x), rtol=1e-4, atol=1e-4)


def test_named_weights_give_the_classifiers_trunk():
    classifier = resnets.create_model("resnet20", weights="resnet20.cifar10").eval()
    backbone = resnets.backbone("resnet20", weights="resnet20.cifar10", out_indices=(2, 3)).eval()
    assert backbone.preprocessing == classifier.preprocessing
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        features = backbone(x)
        torch.testing.assert_close(features["1"], classifier.forward_features(x), rtol=1e-4, atol=1e-4)
        logits = classifier.fc(features["1"].mean((2, 3)))
    torch.testing.assert_close(logits, classifier(x))


@pytest.mark.parametrize("kwargs, message", [
    (dict(out_indices=(1, 5)), "out_indices (1, 5) is not usable for resnet18: give increasing indices in 0..4"),
    (dict(out_indices=(3, 2)), "out_indices (3, 2)"),
    (dict(out_indices=()), "out_indices ()"),
    (dict(trainable_stages=6), "trainable_stages=6 is not usable for resnet18: give 0..5"),
    (dict(dilation=(True, True)), "give 3 True/False flags"),
    (dict(dilation=(False, True, False)), "once a stage is dilated the later ones must be too"),
    (dict(names=("out",)), "names ('out',) must be 4 distinct keys"),
    (dict(fpn=True, fpn_extra="p5"), "fpn_extra must be one of"),
    (dict(norm="layernorm"), "unknown norm_layer 'layernorm'"),
])
def test_bad_arguments_are_one_line_usage_errors(kwargs, message):
    with pytest.raises(UsageError) as caught:
        resnets.backbone("resnet18", **kwargs)
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_cifar_nets_count_three_stages():
    with pytest.raises(UsageError, match=r"give 2 True/False flags"):
        resnets.backbone("resnet20", dilation=(False, True, True))
    with pytest.raises(UsageError, match=r"give 0\.\.4 \(its 3 stages and the stem\)"):
        resnets.backbone("resnet20", trainable_stages=5)
