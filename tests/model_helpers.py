"""Helpers for tests that compare networks."""

from torch import nn


def randomise_bn(model: nn.Module) -> nn.Module:
    """Random BatchNorm statistics and affine parameters: fresh ones are 0/1, so a wrong key
    mapping would not show in the outputs."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.5, 0.5)
    return model
