"""Image decoding speed: torchvision.io (deprecated in torchvision 0.29) against Pillow, on the real
JPEG data sets, and whether they give the same pixels.

The data pipelines decode with ``resnets.data.decode.decode_bytes``: torchvision.io for JPEG while it
exists, Pillow otherwise (and for PNG, whose torchvision decoder crashes on a corrupt checksum). Rounds are
interleaved, best of ``--repeats`` per decoder.

    python benchmarks/image_decoding.py [--count 3000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import io
import time
import warnings
import zipfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

DATASETS = Path(__file__).resolve().parents[2] / "shared" / "datasets"


def torchvision_decode(data: bytes) -> torch.Tensor:
    from torchvision.io import ImageReadMode, decode_image
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return decode_image(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=ImageReadMode.RGB)


def pillow_decode(data: bytes) -> torch.Tensor:
    with Image.open(io.BytesIO(data)) as image:
        if image.mode != "RGB":
            image = image.convert("RGB")
        return torch.from_numpy(np.array(image)).permute(2, 0, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=3000, help="images per data set (at most)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    decoders = {"torchvision.io": torchvision_decode, "Pillow": pillow_decode}
    print("| data | images | decoder | images/s | same pixels |")
    print("| --- | --- | --- | --- | --- |")
    for name in ("cifar10-jpeg-train.zip", "imagenette-224-train.zip"):
        path = DATASETS / name
        if not path.is_file():
            print(f"| {name} | - | not found at {path} | | |")
            continue
        with zipfile.ZipFile(path) as archive:
            names = [i.filename for i in archive.infolist() if i.filename.lower().endswith((".jpg", ".jpeg"))]
            blobs = [archive.read(n) for n in names[:args.count]]
        same = sum(torch.equal(torchvision_decode(b), pillow_decode(b)) for b in blobs)
        best = {label: float("inf") for label in decoders}
        for _ in range(args.repeats):
            for label, decode in decoders.items():
                start = time.perf_counter()
                for blob in blobs:
                    decode(blob)
                best[label] = min(best[label], time.perf_counter() - start)
        for label in decoders:
            print(f"| {name} | {len(blobs)} | {label} | {len(blobs) / best[label]:.0f} | {same}/{len(blobs)} |")


if __name__ == "__main__":
    main()
