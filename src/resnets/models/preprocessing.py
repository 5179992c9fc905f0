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
# the largest input side a Preprocessing may ask for (after the resize to input_size / crop_pct):
# a checkpoint's metadata cannot make every prediction allocate more than 3 x 4096 x 4096 floats
MAX_INPUT_SIDE = 4096
INTERPOLATIONS = ("nearest", "nearest-exact", "bilinear", "bicubic")


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

    def check(self) -> None:
        """Raise ValueError naming the field that cannot be used: sides of 1..MAX_INPUT_SIDE (also
        after the resize), one positive finite mean and std per channel, a known interpolation."""
        import math

        size = self.input_size
        if not (isinstance(size, tuple) and len(size) == 3 and all(type(v) is int and v > 0 for v in size)):
            raise ValueError(f"input_size must be three positive integers (C, H, W), got {size!r}")
        if max(size[1:]) > MAX_INPUT_SIDE:
            raise ValueError(f"input_size {size} has a side over the limit of {MAX_INPUT_SIDE} (MAX_INPUT_SIDE)")
        if size[0] > 64:
            raise ValueError(f"input_size {size} has {size[0]} channels (at most 64)")
        if not (isinstance(self.crop_pct, (int, float)) and 0 < self.crop_pct <= 1):
            raise ValueError(f"crop_pct must be in (0, 1], got {self.crop_pct!r}")
        if self.resize_size > MAX_INPUT_SIDE:
            raise ValueError(f"crop_pct {self.crop_pct} resizes to {self.resize_size} pixels, over the limit of "
                             f"{MAX_INPUT_SIDE} (MAX_INPUT_SIDE)")
        for name, values in (("mean", self.mean), ("std", self.std)):
            if not (isinstance(values, tuple) and len(values) == size[0]
                    and all(isinstance(v, (int, float)) and math.isfinite(v) for v in values)):
                raise ValueError(f"{name} must be {size[0]} finite numbers (one per channel), got {values!r}")
        if any(v <= 0 for v in self.std):
            raise ValueError(f"std must be positive, got {self.std!r}")
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(f"interpolation must be one of {INTERPOLATIONS}, got {self.interpolation!r}")

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
