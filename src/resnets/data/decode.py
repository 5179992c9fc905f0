"""Decoding: image bytes to a uint8 tensor, sized before they are decoded, and the bad-input policy.

An image is measured twice before its pixels are: the file's byte size (``os.stat``, before it is
opened; a zip member's declared size) against MAX_IMAGE_BYTES, and the width and height its header
declares (Pillow opens lazily, reading the header alone) against MAX_IMAGE_PIXELS and MAX_IMAGE_ASPECT. A multi-frame
image (animated GIF, PNG or WebP, multi-page TIFF) gives its first frame; the files this happened to
are collected (:func:`take_first_frames`) so that a loop over a data set says so once, with the count.
16-bit and 32-bit integer images keep their top byte of 16 bits; 32-bit float images are scaled from
[0, 1] and refused, by their range, when their values lie outside it (no white point is known then).
Anything that cannot be decoded is a :class:`BadImageError` naming the file.
"""

from __future__ import annotations

import io
import os
import re
import stat
import warnings
from typing import Literal, Optional, Sequence, Union

import numpy as np
import torch

from ..errors import UsageError

BadInputPolicy = Literal["skip", "error"]
BAD_INPUT_POLICIES = ("skip", "error")

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".ppm", ".pgm"})
_WARN_LIMIT = 10  # files named in one warning; the rest are counted

# the largest image decoded (about 8k x 8k), read from the header before any pixel is: the inference side's
# MAX_PIXELS is this value
MAX_IMAGE_PIXELS = 64_000_000
# resizing the shorter side to S makes the longer one aspect * S: evaluation's resize of a 1x40000 strip to 292 px
# would be 11.7 M x 292 pixels (10 GB). Past 20:1 the center crop keeps under 5% of the image, so it is refused
# as the inference side refuses it (its MAX_ASPECT_RATIO is this value)
MAX_IMAGE_ASPECT = 20
# the largest image file read: an uncompressed 8k x 8k RGB image is 192 MB; a 10 GB (sparse) file named .jpg is
# refused from its size alone, without being opened
MAX_IMAGE_BYTES = 256 * 2**20

# formats torchvision.io decodes (2-5x faster than Pillow for JPEG) when the image has one frame; the rest go
# through Pillow. Not PNG: torchvision 0.29's PNG decoder crashes the process (a segmentation fault, not an
# error) on a PNG whose compressed data fails its checksum, which one flipped byte does; Pillow names it. MPO is
# how Pillow names a JPEG with a second, embedded image (phone photos' depth or gain maps): the first image is
# the photo, so it is decoded as the JPEG it is
_TORCHVISION_FORMATS = frozenset({"JPEG", "MPO"})


class BadImageError(UsageError):
    """An image that cannot be decoded; ``path`` names the file (or archive member)."""

    def __init__(self, path: str, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


class BadInputWarning(UserWarning):
    """Files that were skipped (named in the message), an empty class folder, or a linked folder
    outside the data root."""


class FirstFrameWarning(UserWarning):
    """Multi-frame images (animated GIF/PNG/WebP, multi-page TIFF) of which only the first frame was used."""


def check_policy(bad_input: str) -> str:
    if bad_input not in BAD_INPUT_POLICIES:
        raise UsageError(f"bad_input must be one of {BAD_INPUT_POLICIES}, got {bad_input!r}")
    return bad_input


def _named(items: Sequence[str]) -> str:
    more = f"; and {len(items) - _WARN_LIMIT} more" if len(items) > _WARN_LIMIT else ""
    return "; ".join(items[:_WARN_LIMIT]) + more


def report_skipped(where: str, skipped: Sequence[tuple[str, str]], bad_input: str) -> None:
    """Warn about (or, with ``bad_input='error'``, refuse) files that cannot be used."""
    if not skipped:
        return
    named = _named([f"{path} ({reason})" for path, reason in skipped])
    if bad_input == "error":
        raise BadImageError(skipped[0][0], f"{skipped[0][1]} (bad_input='error'; {len(skipped)} bad file(s) in "
                                           f"{where}: {named})")
    warnings.warn(f"skipped {len(skipped)} file(s) in {where}: {named}", BadInputWarning, stacklevel=3)


# ----------------------------------------------------------------------------------------------
# sizes, before anything is decoded


def _bytes_text(size: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size} bytes"


def bytes_problem(size: int) -> Optional[str]:
    """Why a file of ``size`` bytes is not read as an image (over MAX_IMAGE_BYTES), or None."""
    if size > MAX_IMAGE_BYTES:
        return (f"{_bytes_text(size)} is over the limit of {MAX_IMAGE_BYTES // 2**20} MiB for one image file "
                f"(resnets.data.decode.MAX_IMAGE_BYTES)")
    return None


def pixels_problem(width: int, height: int) -> Optional[str]:
    """Why an image of ``width`` x ``height`` (from its header) is not decoded, or None."""
    if width < 1 or height < 1:
        return f"{width}x{height} pixels is an empty image"
    if width * height > MAX_IMAGE_PIXELS:
        return (f"{width}x{height} pixels is over the limit of {MAX_IMAGE_PIXELS:,} pixels "
                f"(resnets.data.decode.MAX_IMAGE_PIXELS); scale the image down first")
    if max(width, height) > MAX_IMAGE_ASPECT * min(width, height):
        return (f"{width}x{height} pixels has an aspect ratio of {max(width, height) / min(width, height):.0f}:1, "
                f"over the limit of {MAX_IMAGE_ASPECT}:1 (resnets.data.decode.MAX_IMAGE_ASPECT); crop it first")
    return None


def read_image_file(path: Union[str, os.PathLike], where: Optional[str] = None) -> bytes:
    """The bytes of an image file, its size checked (``os.stat``) before it is opened: a file over
    MAX_IMAGE_BYTES, one that is not a regular file or cannot be read raises BadImageError naming ``where``."""
    where = where or os.fspath(path)
    try:
        info = os.stat(path)
    except OSError as error:
        raise BadImageError(where, f"unreadable ({error.strerror})") from None
    if not stat.S_ISREG(info.st_mode):
        raise BadImageError(where, "not a regular file")
    problem = bytes_problem(info.st_size)
    if problem:
        raise BadImageError(where, problem)
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_IMAGE_BYTES + 1)  # a file that grew since stat is still bounded
    except OSError as error:
        raise BadImageError(where, f"unreadable ({error.strerror})") from None
    if len(data) > MAX_IMAGE_BYTES:
        raise BadImageError(where, f"grew past {MAX_IMAGE_BYTES // 2**20} MiB while it was read "
                                   f"(resnets.data.decode.MAX_IMAGE_BYTES)")
    return data


# ----------------------------------------------------------------------------------------------
# multi-frame images: the first frame, said once per loop

_first_frames: list[str] = []  # this process's multi-frame files since the last take_first_frames()
_MAX_NOTES = 100_000  # a process that decodes without ever taking them keeps this many names at most


def note_first_frame(path: str) -> None:
    """Record that only the first frame of ``path`` was decoded."""
    if len(_first_frames) < _MAX_NOTES:
        _first_frames.append(path)


def take_first_frames() -> list[str]:
    """The multi-frame files decoded (first frame only) in this process since the last call, and forget them."""
    taken = _first_frames[:]
    del _first_frames[:len(taken)]
    return taken


def report_first_frames(where: str, paths: Sequence[str]) -> None:
    """One FirstFrameWarning for the multi-frame images of a loop over ``where`` (none: nothing said)."""
    if not paths:
        return
    paths = sorted(set(paths))
    warnings.warn(f"{where}: took the first frame of {len(paths)} multi-frame image(s) (animated GIF, PNG or WebP; "
                  f"multi-page TIFF): {_named(paths)}", FirstFrameWarning, stacklevel=3)


# ----------------------------------------------------------------------------------------------
# decoding


def _to_uint8(image: torch.Tensor) -> torch.Tensor:
    # 16-bit PNGs decode to uint16 over the full 0..65535 range; keep the top byte
    if image.dtype == torch.uint16:
        return (image.to(torch.int32) >> 8).to(torch.uint8)
    if image.dtype != torch.uint8:
        raise TypeError(f"unexpected decoded dtype {image.dtype}")
    return image


def pil_to_8bit(pil, mode: str = "RGB"):
    """A Pillow image in ``mode`` ("RGB" or "L"). Pillow's own ``convert`` clips every value above 255 to white
    and every float under 1 to black, so deeper images are scaled first: 16-bit (I;16) and 32-bit integer (I)
    images to their top byte of 16 bits, 32-bit float (F) images from [0, 1]. A float image with values outside
    [0, 1] (or not finite), or an integer one outside 0..65535, raises ValueError saying its range: there is no
    one way to show it."""
    Image = _pillow()  # noqa: N806

    if pil.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        values = np.asarray(pil)
        low, high = (int(values.min()), int(values.max())) if values.size else (0, 0)
        if low < 0 or high > 65535:
            raise ValueError(f"32-bit integer pixels from {low} to {high}, outside 0..65535; save the image as 8 "
                             f"or 16 bits")
        pil = Image.fromarray((values.astype(np.uint32) >> 8).astype(np.uint8))
    elif pil.mode == "F":
        values = np.asarray(pil, dtype=np.float32)
        finite = bool(np.isfinite(values).all())
        low, high = (float(values.min()), float(values.max())) if values.size and finite else (0.0, 0.0)
        if not finite or low < 0 or high > 1:
            seen = "values that are not finite" if not finite else f"values from {low:g} to {high:g}"
            raise ValueError(f"32-bit float pixels with {seen}: only floats in [0, 1] have a known black and "
                             f"white; scale the image to [0, 1] or save it as 8 bits")
        pil = Image.fromarray(np.rint(values * 255).astype(np.uint8))
    return pil.convert(mode)


def _pillow():
    from PIL import Image  # deferred: Pillow costs its import only where an image is decoded

    return Image


def _open(data: bytes, path: str):
    """The image lazily opened (its header read, no pixel decoded), its size checked."""
    Image = _pillow()  # noqa: N806 - the module, as Pillow's own examples name it
    try:
        with warnings.catch_warnings():
            # MAX_IMAGE_PIXELS is below Pillow's own guard, whose warning would come first
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            pil = Image.open(io.BytesIO(data))
    except Image.UnidentifiedImageError:
        raise BadImageError(path, "not an image file") from None
    except Image.DecompressionBombError as error:  # Pillow refuses it at once (over twice its own limit)
        found = re.search(r"\((\d+) pixels\)", str(error))
        size = f"{int(found.group(1)):,} pixels" if found else "the image"
        raise BadImageError(path, f"{size} is over the limit of {MAX_IMAGE_PIXELS:,} pixels "
                                  f"(resnets.data.decode.MAX_IMAGE_PIXELS)") from None
    except Exception as error:  # Pillow raises many types for bad headers; all mean "not decodable"
        raise BadImageError(path, f"cannot decode ({_first_line(error)})") from None
    problem = pixels_problem(*pil.size)
    if problem:
        pil.close()
        raise BadImageError(path, problem)
    return pil


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def has_more_frames(pil) -> bool:
    """Whether a decoded Pillow image has a second frame (an animated GIF, PNG or WebP, a multi-page TIFF). An
    MPO's second image is a JPEG's embedded extra (a phone's depth map), not a frame; a second frame too broken
    to be found is not one either: the first was decoded, and is the image."""
    try:
        return bool(getattr(pil, "is_animated", False)) and pil.format != "MPO"
    except Exception:  # noqa: BLE001 - Pillow raises many types walking a corrupt file's frames
        return False


def _frames_in_header(pil) -> int:
    # PNG (acTL) and WebP say their frame count in the header; GIF and TIFF only when walked (after decoding)
    try:
        return int(getattr(pil, "n_frames", 1)) if pil.format in ("PNG", "WEBP") else 1
    except Exception:  # noqa: BLE001 - a header Pillow cannot count frames in: decoding says what is wrong
        return 1


def decode_bytes(data: bytes, path: str, channels: int = 3) -> torch.Tensor:
    """Decode image bytes to a uint8 (channels, H, W) tensor.

    Grayscale, palette, RGBA (alpha dropped), CMYK, 16-bit and [0, 1] float images are converted; a
    multi-frame image gives its first frame (noted for :func:`take_first_frames`). A zero-byte, truncated,
    oversized or non-image file raises :class:`BadImageError` naming ``path``.
    """
    if len(data) == 0:
        raise BadImageError(path, "zero-byte file")
    problem = bytes_problem(len(data))
    if problem:
        raise BadImageError(path, problem)
    pil = _open(data, path)
    try:
        multi = _frames_in_header(pil) > 1
        if pil.format in _TORCHVISION_FORMATS and not multi:
            image = _torchvision_decode(data, channels)
            if image is not None:
                return image
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", _pillow().DecompressionBombWarning)
                pil.load()  # the first frame only
                array = np.asarray(pil_to_8bit(pil, "RGB" if channels == 3 else "L"), dtype=np.uint8)
            multi = multi or has_more_frames(pil)
        except Exception as pil_error:  # Pillow raises many types for bad files; all mean "not decodable"
            raise BadImageError(path, f"cannot decode ({_first_line(pil_error)})") from None
    finally:
        pil.close()
    if multi:
        note_first_frame(path)
    if array.ndim == 2:
        array = array[:, :, None]
    return torch.from_numpy(array.copy()).permute(2, 0, 1).contiguous()


def _torchvision_decode(data: bytes, channels: int) -> Optional[torch.Tensor]:
    """torchvision.io's decoding of a JPEG whose size is checked, or None where it fails (Pillow then decodes it,
    or names why not)."""
    try:
        # torchvision 0.29 marks its decoders deprecated in favour of TorchCodec. Its JPEG decoder is 2-5x faster
        # than Pillow here (the same pixels), so it stays first while it exists; without it (a torchvision that
        # dropped it) Pillow decodes everything
        from torchvision.io import ImageReadMode, decode_image
    except ImportError:
        return None
    mode = ImageReadMode.RGB if channels == 3 else ImageReadMode.GRAY
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            image = decode_image(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=mode)
    except RuntimeError:
        return None
    if image.ndim != 3:  # one frame was promised by the header; anything else is Pillow's to decode
        return None
    return _to_uint8(image)


__all__ = ["BAD_INPUT_POLICIES", "BadImageError", "BadInputPolicy", "BadInputWarning", "FirstFrameWarning",
           "IMAGE_EXTENSIONS", "MAX_IMAGE_ASPECT", "MAX_IMAGE_BYTES", "MAX_IMAGE_PIXELS", "bytes_problem",
           "check_policy", "decode_bytes", "has_more_frames", "note_first_frame", "pil_to_8bit", "pixels_problem",
           "read_image_file", "report_first_frames", "report_skipped", "take_first_frames"]
