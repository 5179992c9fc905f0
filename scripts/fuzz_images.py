"""Fuzz the image decoders (``resnets.data.decode.decode_bytes``, ``resnets.deploy.decode_image``, and the
server's header read ``resnets.deploy.images.header_size``) with hypothesis: PNG, JPEG, GIF, TIFF, BMP and
WebP images (animated, 16-bit and float ones among them) with bytes overwritten, cut short or extended, and
plain random bytes. Any input must give a uint8 image within
the pixel limit or a ResnetsError; another exception is a bug (hypothesis shrinks it and prints it), and a
crash of the process (a decoder's segmentation fault) leaves the input that caused it in ``--last``.

    python scripts/fuzz_images.py [--examples 20000] [--seed 0] [--last /tmp/fuzz-last.bin]

The test suite runs a few hundred examples of the same search (tests/test_hardening_images.py).
"""

from __future__ import annotations

import argparse
import io
import time
from pathlib import Path
from typing import Optional

import numpy as np
from PIL import Image


def seed_images() -> list[bytes]:
    """Small valid images of every format the decoders read, the starting points of the mutations."""
    rgb = np.random.default_rng(0).integers(0, 256, (12, 10, 3), dtype=np.uint8)

    def saved(image: Image.Image, fmt: str, **options) -> bytes:
        buffer = io.BytesIO()
        image.save(buffer, fmt, **options)
        return buffer.getvalue()

    still = Image.fromarray(rgb)
    frames = [Image.fromarray(np.full((8, 8, 3), v, np.uint8)) for v in (40, 200, 120)]
    return [saved(still, "PNG"), saved(still, "JPEG", quality=80), saved(still, "GIF"), saved(still, "TIFF"),
            saved(still, "BMP"), saved(still, "WEBP"), saved(still, "TIFF", compression="tiff_lzw"),
            *(saved(frames[0], fmt, save_all=True, append_images=frames[1:]) for fmt in ("GIF", "PNG", "TIFF")),
            saved(Image.fromarray(np.linspace(0, 1, 20, dtype=np.float32).reshape(4, 5)), "TIFF"),
            saved(Image.fromarray(np.arange(20, dtype=np.uint16).reshape(4, 5) * 3000), "PNG")]


def check_decoders(data: bytes, last: Optional[Path] = None) -> None:
    """Decode ``data`` every way the package does; anything but an image or a ResnetsError raises."""
    from resnets.data import decode
    from resnets.deploy.images import decode_image, header_size
    from resnets.errors import ResnetsError

    if last is not None:
        last.write_bytes(data)
    for channels in (3, 1):
        try:
            image = decode.decode_bytes(data, "fuzz", channels)
        except ResnetsError:
            continue
        assert image.dtype.is_floating_point is False and image.ndim == 3 and image.shape[0] == channels
        assert image.shape[1] * image.shape[2] <= decode.MAX_IMAGE_PIXELS
    size = header_size(data)  # the server's header read: a size or None, never an exception (a 500)
    assert size is None or (len(size) == 3 and all(isinstance(v, int) for v in size))
    try:
        image = decode_image(data, source="fuzz")
    except ResnetsError:
        return
    assert image.ndim == 3 and image.shape[0] == 3


def run(mutated_examples: int = 400, random_examples: int = 150, *, derandomize: bool = True,
        seed: Optional[int] = None, last: Optional[Path] = None) -> float:
    """Run both searches; returns the seconds they took. A failing input raises (hypothesis's report)."""
    import hypothesis
    from hypothesis import strategies as st

    from resnets.data import decode

    seeds = seed_images()
    mutation = st.tuples(st.integers(0, 2**16), st.integers(0, 255))
    common = dict(deadline=None, database=None, derandomize=derandomize,
                  suppress_health_check=list(hypothesis.HealthCheck))

    @hypothesis.settings(max_examples=mutated_examples, **common)
    @hypothesis.given(start=st.sampled_from(seeds), mutations=st.lists(mutation, max_size=8),
                      cut=st.one_of(st.none(), st.integers(0, 2**16)), tail=st.binary(max_size=32))
    def mutated(start, mutations, cut, tail):
        data = bytearray(start)
        for position, value in mutations:
            data[position % len(data)] = value
        if cut is not None:
            data = data[:cut % (len(data) + 1)]
        check_decoders(bytes(data) + tail, last)

    @hypothesis.settings(max_examples=random_examples, **common)
    @hypothesis.given(st.binary(max_size=256))
    def random_bytes(data):
        check_decoders(data, last)

    if seed is not None:
        mutated = hypothesis.seed(seed)(mutated)
        random_bytes = hypothesis.seed(seed)(random_bytes)
    start = time.perf_counter()
    decode.take_first_frames()
    try:
        mutated()
        random_bytes()
    finally:
        decode.take_first_frames()  # the fuzzed GIFs' notes are nobody's
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=20000, help="mutated images (a quarter as many random ones)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--last", type=Path, default=Path("fuzz-last.bin"),
                        help="where each input is written before it is decoded (the culprit after a crash)")
    args = parser.parse_args()
    import warnings

    warnings.simplefilter("ignore")  # Pillow warns about odd TIFF tags; the invariant is what is checked
    seconds = run(args.examples, max(1, args.examples // 4), derandomize=False, seed=args.seed, last=args.last)
    print(f"{args.examples + max(1, args.examples // 4)} inputs, no failure, in {seconds:.0f} s")


if __name__ == "__main__":
    main()
