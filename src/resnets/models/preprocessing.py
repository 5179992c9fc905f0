"""How an image becomes a model's input: one record per model, and the constants it is made of.

A leaf: it imports nothing of the package, so that data, weights and deployment code can
type and build preprocessing without loading the networks.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
# evaluation resizes the shorter side to input_size / crop_pct, then center-crops (224 / 0.875 = 256)
DEFAULT_CROP_PCT = 0.875
DEFAULT_INTERPOLATION = "bilinear"


@dataclass(frozen=True)
class Preprocessing:
    """How an image becomes the model's input: resize the shorter side to
    ``input_size / crop_pct``, center-crop ``input_size``, scale to [0, 1], normalise."""

    input_size: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    interpolation: str = DEFAULT_INTERPOLATION
    crop_pct: float = DEFAULT_CROP_PCT

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "Preprocessing":
        """The inverse of ``to_dict`` (lists, as JSON gives them, become tuples)."""
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})

    @property
    def resize_size(self) -> int:
        return int(round(self.input_size[-1] / self.crop_pct))

    def for_channels(self, in_chans: int) -> "Preprocessing":
        """The same preprocessing for ``in_chans`` input channels: one mean and std, the RGB averages."""
        if in_chans == self.input_size[0]:
            return self
        mean = (sum(self.mean) / len(self.mean),) * in_chans
        std = (sum(self.std) / len(self.std),) * in_chans
        return replace(self, input_size=(in_chans, *self.input_size[1:]), mean=mean, std=std)

    def transforms(self):
        """A torchvision transforms v2 pipeline turning a PIL image or a uint8 (C, H, W) tensor into
        the model's input: shorter side resized to ``resize_size``, center crop, [0, 1], normalised."""
        import torch
        from torchvision.transforms import InterpolationMode, v2  # deferred: torchvision costs seconds

        return v2.Compose([
            v2.ToImage(),
            v2.Resize(self.resize_size, interpolation=InterpolationMode(self.interpolation), antialias=True),
            v2.CenterCrop(list(self.input_size[1:])),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(mean=list(self.mean), std=list(self.std)),
            v2.ToPureTensor(),
        ])


IMAGENET_PREPROCESSING = Preprocessing((3, 224, 224), IMAGENET_MEAN, IMAGENET_STD)
CIFAR10_PREPROCESSING = Preprocessing((3, 32, 32), CIFAR10_MEAN, CIFAR10_STD, crop_pct=1.0)
