"""torch.hub: the repository's hubconf.py, loaded by torch.hub itself from a folder and from its GitHub cache."""

from pathlib import Path

import pytest
import torch

import resnets
from resnets import WeightsAdaptedWarning
from resnets.errors import UsageError

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def hub_dir(tmp_path):
    """torch.hub's cache holding this repository as a GitHub download of OWNER/resnets at main would be:
    torch.hub.list and help read only that cache when the ref is given (no network)."""
    before = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path))
    (tmp_path / "OWNER_resnets_main").symlink_to(REPO, target_is_directory=True)
    yield tmp_path
    torch.hub.set_dir(before)


def test_every_registered_model_is_an_entry_point_and_nothing_else(hub_dir):
    listed = torch.hub.list("OWNER/resnets:main", trust_repo=True, skip_validation=True, verbose=False)
    assert sorted(listed) == sorted(resnets.list_models())


def test_help_names_the_model_and_its_weights(hub_dir):
    text = torch.hub.help("OWNER/resnets:main", "resnet56", trust_repo=True, skip_validation=True)
    top1 = resnets.get_weights("resnet56.cifar10").meta.top1
    assert "ResNet-56" in text and "weights='cifar10'" in text and f"{top1:.2f} %" in text
    resnet50 = torch.hub.help("OWNER/resnets:main", "resnet50", trust_repo=True, skip_validation=True)
    assert "weights='tv2_in1k'" in resnet50 and "weights='a1_in1k'" in resnet50
    plain = torch.hub.help("OWNER/resnets:main", "plain20", trust_repo=True, skip_validation=True)
    assert "No named weights" in plain


def test_load_from_the_github_cache_gives_create_model(hub_dir):
    model = torch.hub.load("OWNER/resnets:main", "resnet56", weights="cifar10", trust_repo=True,
                           skip_validation=True, verbose=False)
    reference = resnets.create_model("resnet56", weights="cifar10")
    assert model.classes == reference.classes and model.classes[0] == "airplane"
    for (name, ours), (_, theirs) in zip(model.state_dict().items(), reference.state_dict().items()):
        assert torch.equal(ours, theirs), name
    # the shipped weights, not a fresh network: a trained BN has moved its running mean off zero
    assert model.bn1.running_mean.abs().sum() > 0


def test_load_from_a_folder_positional_pretrained_and_options():
    with pytest.warns(WeightsAdaptedWarning, match="num_classes=5"):
        model = torch.hub.load(str(REPO), "resnet20", True, source="local", num_classes=5)
    assert model.fc.out_features == 5
    trained = resnets.create_model("resnet20", pretrained=True)
    assert torch.equal(model.conv1.weight, trained.conv1.weight)  # pretrained=True: the default weights
    fresh = torch.hub.load(str(REPO), "resnet110", source="local", in_chans=1)
    assert fresh.conv1.in_channels == 1
    # resnet110 (option A) has 1,727,962 parameters; one input plane instead of three drops 2 x 9 x 16
    assert sum(p.numel() for p in fresh.parameters()) == 1_727_962 - 2 * 9 * 16


def test_pretrained_without_registered_weights_is_refused():
    with pytest.raises(UsageError, match="no weights are registered for 'plain20'"):
        torch.hub.load(str(REPO), "plain20", source="local", pretrained=True)
