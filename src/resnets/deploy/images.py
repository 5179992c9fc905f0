"""Decoding and preprocessing single images for prediction and serving.

Kept deliberately small: decode with PIL (which notices truncated files), then resize the
shorter side, center-crop and normalise as the model's ``preprocessing`` says. A file's byte
size is checked (``os.stat``, before it is opened) against ``resnets.data.decode.MAX_IMAGE_BYTES``;
the image's size against MAX_PIXELS and MAX_ASPECT_RATIO from its header, before decoding, and
again before resizing, so that neither step's memory is set by the sender. A multi-frame image
gives its first frame (:func:`read_images` says so, once, with the count).
"""

from __future__ import annotations

import io
import os
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Optional, Sequence, Union

import numpy as np
import torch
import torchvision.transforms.v2.functional as TF
from torchvision.transforms import InterpolationMode

from ..data.decode import (MAX_IMAGE_ASPECT, MAX_IMAGE_PIXELS, BadImageError, BadInputWarning, bytes_problem,
                           has_more_frames, pil_to_8bit, read_image_file, report_first_frames)
from ..errors import MissingFileError, UsageError
from ..models import Preprocessing

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm")
# a decoded image larger than this is refused rather than filling memory (about 8k x 8k): the data sets' bound
MAX_PIXELS = MAX_IMAGE_PIXELS
# resizing the shorter side to resize_size makes the longer one aspect * resize_size: a 121-byte
# 1x20000 PNG became 256x5,120,000 (4 GB). Past 20:1 the center crop keeps under 5% of the image,
# so a prediction means little; refusing bounds every resized image to 20 * resize_size**2 pixels (the data sets'
# bound too)
MAX_ASPECT_RATIO = MAX_IMAGE_ASPECT


class ImageDecodeError(UsageError):
    """Bytes that are not a complete, decodable image, or an image over MAX_PIXELS or MAX_ASPECT_RATIO."""


def check_image_size(width: int, height: int, source: str = "image") -> None:
    """Refuse an image over MAX_PIXELS or MAX_ASPECT_RATIO (ImageDecodeError naming ``source``)."""
    if width < 1 or height < 1:
        raise ImageDecodeError(f"{source}: {width}x{height} pixels is an empty image")
    if width * height > MAX_PIXELS:
        raise ImageDecodeError(f"{source}: {width}x{height} pixels is over the limit of {MAX_PIXELS} pixels "
                               "(MAX_PIXELS); scale the image down first")
    if max(width, height) > MAX_ASPECT_RATIO * min(width, height):
        raise ImageDecodeError(f"{source}: {width}x{height} pixels has an aspect ratio of "
                               f"{max(width, height) / min(width, height):.0f}:1, over the limit of "
                               f"{MAX_ASPECT_RATIO}:1 (MAX_ASPECT_RATIO); crop the image first")


def decode_image(data: Union[bytes, str, os.PathLike], *, source: str = "") -> torch.Tensor:
    """An RGB image as a uint8 tensor (3, H, W), the first frame of a multi-frame one. Truncated, corrupt or
    non-image input, files over MAX_IMAGE_BYTES and images over MAX_PIXELS or MAX_ASPECT_RATIO raise
    ImageDecodeError naming ``source``."""
    return _decode_image(data, source)[0]


def _decode_image(data: Union[bytes, str, os.PathLike], source: str = "") -> tuple[torch.Tensor, bool]:
    """decode_image's tensor, and whether the image had more than one frame."""
    from PIL import Image, UnidentifiedImageError

    if isinstance(data, (str, os.PathLike)):
        source = source or os.fspath(data)
        try:
            data = read_image_file(data, source)  # its size from os.stat, before it is opened
        except BadImageError as error:
            raise ImageDecodeError(str(error)) from None
    source = source or "image"
    problem = bytes_problem(len(data))
    if problem:
        raise ImageDecodeError(f"{source}: {problem}")
    try:
        with warnings.catch_warnings():
            # MAX_PIXELS is below Pillow's own guard, whose warning would come first: the header is checked here
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                check_image_size(image.width, image.height, source)  # from the header, before decoding
                image.load()  # decodes fully (the first frame): a truncated file fails here, not later
                rgb = pil_to_8bit(image)  # 16-bit and float images as the training data's reader sees them
                multi = has_more_frames(image)
    except UnidentifiedImageError:
        raise ImageDecodeError(f"{source}: not a recognised image format") from None
    except Image.DecompressionBombError as error:  # Pillow refuses to open it at all (over twice its limit)
        found = re.search(r"\((\d+) pixels\)", str(error))
        size = f"{int(found.group(1)):,} pixels" if found else "an image"
        raise ImageDecodeError(f"{source}: {size} is over the limit of {MAX_PIXELS} pixels (MAX_PIXELS); "
                               f"scale the image down first") from None
    except ImageDecodeError:
        raise
    except Exception as error:  # Pillow raises many types for corrupt files (IndexError, struct.error...)
        raise ImageDecodeError(f"{source}: cannot decode image ({str(error).strip() or type(error).__name__})") \
            from None
    array = np.asarray(rgb, dtype=np.uint8)
    return torch.from_numpy(array.copy()).permute(2, 0, 1), multi


def header_size(data: bytes) -> Optional[tuple[int, int, int]]:
    """(width, height, channels) of an encoded image, read from its header alone (nothing is decoded): what
    the server sizes its decoding memory by. None where the header does not read (decode_image says why)."""
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                return image.width, image.height, len(image.getbands())
    except Exception:  # Pillow raises many types for corrupt headers (IndexError, struct.error...), as decode_image
        return None  # finds: it is what names the file's problem


def preprocess(image: torch.Tensor, preprocessing: Preprocessing, *, source: str = "image") -> torch.Tensor:
    """uint8 (3, H, W) -> normalised float (3, h, w): shorter side resized to
    ``input_size / crop_pct``, center crop to ``input_size``. An image over MAX_PIXELS or
    MAX_ASPECT_RATIO raises ImageDecodeError naming ``source``."""
    check_image_size(image.shape[-1], image.shape[-2], source)  # before the resize, whose size it bounds
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
    """Decode and preprocess several images into one (N, 3, h, w) batch; the first that cannot be read raises
    ImageDecodeError naming it."""
    images = []
    for index, item in enumerate(sources):
        source = os.fspath(item) if isinstance(item, (str, os.PathLike)) else f"image {index}"
        images.append(preprocess(decode_image(item, source=source), preprocessing, source=source))
    return torch.stack(images)


@dataclass
class ReadImages:
    """What `read_images` made of a list of files: the batch of those it could read (None where none),
    their paths and their positions in the list, and the files it skipped with the reason."""

    batch: Optional[torch.Tensor]
    paths: list[Path]
    indices: list[int]
    skipped: list[tuple[Path, ImageDecodeError]] = field(default_factory=list)
    first_frame: list[Path] = field(default_factory=list)  # multi-frame files, read as their first frame


def read_images(paths: Sequence[Union[str, os.PathLike]], preprocessing: Preprocessing, *,
                named: Iterable[Union[str, os.PathLike]] = (), report: bool = True) -> ReadImages:
    """Decode and preprocess image files, as the commands that take files and folders read them: a file that
    cannot be read raises ImageDecodeError if it is among ``named`` (asked for by name: it gets an answer or the
    run stops), and is otherwise skipped with a BadInputWarning naming it (found in a folder, as evaluation and
    training skip them). Multi-frame images give their first frame, said in one FirstFrameWarning (by
    :func:`report_multi_frames`; ``report=False`` leaves it to a caller reading in batches, once for all)."""
    asked = {Path(p) for p in named}
    images, kept, indices, skipped, first_frame = [], [], [], [], []
    for index, item in enumerate(paths):
        path = Path(item)
        try:
            image, multi = _decode_image(path)
            images.append(preprocess(image, preprocessing, source=str(path)))
            if multi:
                first_frame.append(path)
        except ImageDecodeError as error:
            if path in asked:
                raise
            warnings.warn(f"skipped {error}", BadInputWarning)
            skipped.append((path, error))
            continue
        kept.append(path)
        indices.append(index)
    if report:
        report_multi_frames(first_frame)
    return ReadImages(torch.stack(images) if images else None, kept, indices, skipped, first_frame)


def report_multi_frames(paths: Sequence[Path]) -> None:
    """One FirstFrameWarning for the multi-frame images among those read (none when there are none)."""
    if paths:
        report_first_frames(os.path.commonpath([str(p.parent) for p in paths]) or ".", [str(p) for p in paths])


def find_images(paths: Iterable[Union[str, os.PathLike]]) -> list[Path]:
    """Image files among ``paths``; directories are searched recursively, in sorted order."""
    found: list[Path] = []
    for item in paths:
        path = Path(item)
        if path.is_dir():
            found.extend(sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()))
        elif path.is_file():
            found.append(path)
        elif path.exists():  # a pipe, a device: reading it could block or never end
            raise UsageError(f"{path} is not a regular file or a directory; give image files or folders")
        else:
            raise MissingFileError(f"no such image or directory: {path}")
    return found
