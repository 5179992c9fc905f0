"""Decoding and preprocessing single images for prediction and serving.

Kept deliberately small: decode with PIL (which notices truncated files), then resize the
shorter side, center-crop and normalise as the model's ``preprocessing`` says.
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path
from typing import Iterable, Sequence, Union

import numpy as np
import torch
import torchvision.transforms.v2.functional as TF
from torchvision.transforms import InterpolationMode

from ..errors import MissingFileError, UsageError
from ..models import Preprocessing

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm")
# a decoded image larger than this is refused rather than filling memory (about 8k x 8k)
MAX_PIXELS = 64_000_000


class ImageDecodeError(UsageError):
    """Bytes that are not a complete, decodable image."""


def decode_image(data: Union[bytes, str, os.PathLike], *, source: str = "") -> torch.Tensor:
    """An RGB image as a uint8 tensor (3, H, W). Truncated, corrupt or non-image input, and
    images over MAX_PIXELS, raise ImageDecodeError naming ``source``."""
    from PIL import Image, UnidentifiedImageError

    if isinstance(data, (str, os.PathLike)):
        source = source or os.fspath(data)
        data = Path(data).read_bytes()
    source = source or "image"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                if image.width * image.height > MAX_PIXELS:
                    raise ImageDecodeError(f"{source}: {image.width}x{image.height} pixels is over the limit "
                                           f"of {MAX_PIXELS}")
                image.load()  # decodes fully: a truncated file fails here, not later
                rgb = image.convert("RGB")
    except UnidentifiedImageError:
        raise ImageDecodeError(f"{source}: not a recognised image format") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombWarning, Image.DecompressionBombError) as error:
        if isinstance(error, ImageDecodeError):
            raise
        raise ImageDecodeError(f"{source}: cannot decode image ({error})") from None
    array = np.asarray(rgb, dtype=np.uint8)
    return torch.from_numpy(array.copy()).permute(2, 0, 1)


def preprocess(image: torch.Tensor, preprocessing: Preprocessing) -> torch.Tensor:
    """uint8 (3, H, W) -> normalised float (3, h, w): shorter side resized to
    ``input_size / crop_pct``, center crop to ``input_size``."""
    _, height, width = preprocessing.input_size
    interpolation = InterpolationMode(preprocessing.interpolation)
    if preprocessing.crop_pct >= 1.0 and tuple(image.shape[-2:]) == (height, width):
        resized = image
    else:
        resized = TF.resize(image, [preprocessing.resize_size], interpolation=interpolation, antialias=True)
    cropped = TF.center_crop(resized, [height, width])
    scaled = cropped.float().div_(255.0)
    return TF.normalize(scaled, list(preprocessing.mean), list(preprocessing.std))


def load_batch(sources: Sequence[Union[bytes, str, os.PathLike]], preprocessing: Preprocessing) -> torch.Tensor:
    """Decode and preprocess several images into one (N, 3, h, w) batch."""
    return torch.stack([preprocess(decode_image(s), preprocessing) for s in sources])


def find_images(paths: Iterable[Union[str, os.PathLike]]) -> list[Path]:
    """Image files among ``paths``; directories are searched recursively, in sorted order."""
    found: list[Path] = []
    for item in paths:
        path = Path(item)
        if path.is_dir():
            found.extend(sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()))
        elif path.is_file():
            found.append(path)
        else:
            raise MissingFileError(f"no such image or directory: {path}")
    return found
