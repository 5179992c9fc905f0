"""Fuzz the checkpoint readers for a while: mutated, truncated and made-up files of every format
(safetensors, torch.save's zip and legacy layouts), each read by ``load_checkpoint`` and ``read_metadata``,
and well-formed files of resnet20's tensors with keys dropped, renamed, reshaped or retyped, each given to
``create_model``. Whatever the bytes, the result must be a state dict (a network) or a ResnetsError; any
other exception is a bug, and its input is saved under --out.

    python scripts/fuzz_readers.py --seconds 600 --memory-gb 4 --out fuzz-failures

The suite runs the same readers for about ten seconds under hypothesis (tests/test_fuzz_checkpoints.py);
this script is the long run. The address space is capped (--memory-gb): a reader that allocates what a
header claims instead of what the file holds fails here with a MemoryError instead of swapping.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import random
import resource
import struct
import sys
import tempfile
import time
import traceback
import warnings
from pathlib import Path

import torch

import resnets
from resnets.errors import ResnetsError
from resnets.weights import load_checkpoint, read_metadata


def tiny_state_dict() -> dict[str, torch.Tensor]:
    return {"conv1.weight": torch.randn(4, 3, 3, 3), "bn1.num_batches_tracked": torch.tensor(3),
            "fc.weight": torch.randn(2, 4), "fc.bias": torch.zeros(2)}


def seeds() -> dict[str, bytes]:
    """Small valid files of each format the readers take: mutations of them reach past the first checks."""
    from safetensors.torch import save as save_safetensors
    found = {"safetensors": save_safetensors(tiny_state_dict(), metadata={
        "format": "resnets", "arch": "resnet20", "classes": json.dumps(["a", "b"])})}
    for name, zip_format in (("torch_zip", True), ("torch_legacy", False)):
        buffer = io.BytesIO()
        torch.save(tiny_state_dict(), buffer, _use_new_zipfile_serialization=zip_format)
        found[name] = buffer.getvalue()
    return found


def read_any(data: bytes, directory: Path, suffix: str = ".bin") -> None:
    """Every reader on ``data``: a result, or a ResnetsError; anything else propagates."""
    path = directory / f"input{suffix}"
    path.write_bytes(data)
    try:
        try:
            state_dict, _ = load_checkpoint(path)
            if not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state_dict.items()):
                raise AssertionError("load_checkpoint returned something other than a dict of tensors")
        except ResnetsError:
            pass
        try:
            read_metadata(path)
        except ResnetsError:
            pass
    finally:
        path.unlink()


def resnet20_tensors() -> dict[str, tuple[str, list[int]]]:
    """resnet20's tensors as (safetensors dtype, shape): what network mutations start from."""
    with torch.device("meta"):
        model = resnets.create_model("resnet20")
    return {k: ("I64" if k.endswith("num_batches_tracked") else "F32", list(v.shape))
            for k, v in model.state_dict().items()}


_ITEM_SIZES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1}


def shaped_safetensors(tensors: dict[str, tuple[str, list[int]]], metadata: "dict[str, str] | None" = None) -> bytes:
    """A well-formed safetensors file of ``tensors`` (name -> (dtype, shape)), every value zero."""
    header: dict = {"__metadata__": metadata} if metadata else {}
    offset = 0
    for key, (dtype, shape) in tensors.items():
        size = _ITEM_SIZES[dtype]
        for side in shape:
            size *= side
        header[key] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw + bytes(offset)


def build_any(data: bytes, directory: Path) -> None:
    """``create_model("resnet20", weights=...)`` on ``data``: a network, or a ResnetsError."""
    path = directory / "network.safetensors"
    path.write_bytes(data)
    try:
        resnets.create_model("resnet20", weights=path)
    except ResnetsError:
        pass
    finally:
        path.unlink()


_SIDES = (0, 1, 2, 3, 10, 16, 64)


def mutate_network(rng: random.Random, tensors: dict[str, tuple[str, list[int]]]) -> bytes:
    """resnet20's tensors with a few keys dropped, renamed, reshaped (small sides) or retyped, as a file."""
    tensors = dict(tensors)
    for _ in range(rng.randrange(1, 4)):
        key = rng.choice(sorted(tensors))
        dtype, shape = tensors[key]
        how = rng.randrange(4)
        if how == 0 and len(tensors) > 1:
            del tensors[key]
        elif how == 1:
            tensors[rng.choice(["module." + key, key.replace("fc.", "linear."), key + "x", "fc.weight"])] = \
                tensors.pop(key)
        elif how == 2:
            shape = [rng.choice(_SIDES) for _ in range(rng.randrange(5))]
            tensors[key] = (dtype, shape if _elements(shape) <= 2**20 else [1])
        else:
            tensors[key] = (rng.choice(sorted(_ITEM_SIZES)), shape)
    metadata = None
    if rng.random() < 0.3:
        metadata = {"format": "resnets", "arch": rng.choice(["resnet20", "resnet32", "resnet50"]),
                    "arch_kwargs": json.dumps(rng.choice([{}, {"shortcut": "B"}, {"width_per_group": 2}]))}
    return shaped_safetensors(tensors, metadata)


def _elements(shape: list[int]) -> int:
    count = 1
    for side in shape:
        count *= side
    return count


def _random_json(rng: random.Random, depth: int = 0):
    kind = rng.randrange(7 if depth < 3 else 4)
    if kind == 0:
        return None
    if kind == 1:
        return rng.choice([0, -1, 1, 2**31, 2**40, 2**64, rng.randrange(-2**70, 2**70)])
    if kind == 2:
        return rng.choice(["F32", "F16", "I64", "U8", "F8_E4M3", "BOOL", "", "x" * rng.randrange(20)])
    if kind == 3:
        return rng.random() * 10**rng.randrange(-5, 40)
    if kind == 4:
        return [_random_json(rng, depth + 1) for _ in range(rng.randrange(4))]
    entry = {"dtype": _random_json(rng, depth + 1), "shape": [rng.randrange(-1, 2**rng.randrange(1, 40))
                                                              for _ in range(rng.randrange(4))],
             "data_offsets": [rng.randrange(-1, 4096) for _ in range(rng.randrange(4))]}
    if kind == 5:
        return entry
    return {rng.choice(["fc.weight", "conv1.weight", "__metadata__", "x"]): _random_json(rng, depth + 1)
            for _ in range(rng.randrange(4))}


def mutate(rng: random.Random, found: dict[str, bytes]) -> tuple[bytes, str]:
    """One input: a seed cut short, with bytes flipped, with a made-up header, or random bytes behind a
    format's magic; and the file suffix to give it."""
    name = rng.choice(sorted(found))
    data = bytearray(found[name])
    how = rng.randrange(4)
    if how == 0:
        return bytes(data[: rng.randrange(1, len(data))]), ".bin"
    if how == 1:
        for _ in range(rng.randrange(1, 8)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        return bytes(data), ".pth"
    if how == 2:
        header = {f"t{i}": _random_json(rng) for i in range(rng.randrange(4))}
        if rng.random() < 0.5:
            header["__metadata__"] = {"format": "resnets", "classes": json.dumps(_random_json(rng))}
        raw = json.dumps(header).encode()
        length = (len(raw) + rng.choice([0, 0, -1, 1, 2**40, 2**63])) % 2**64
        return struct.pack("<Q", length) + raw + bytes(rng.randrange(2048)), ".safetensors"
    magic = rng.choice([b"PK\x03\x04", found["torch_legacy"][:14], struct.pack("<Q", 40) + b"{", b""])
    return magic + rng.randbytes(rng.randrange(512)), ".bin"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="how long to run (default 60)")
    parser.add_argument("--memory-gb", type=float, default=4.0, help="address-space cap (default 4)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--out", type=Path, default=Path("fuzz-failures"),
                        help="where failing inputs are saved (default ./fuzz-failures)")
    args = parser.parse_args(argv)
    hard = resource.getrlimit(resource.RLIMIT_AS)[1]
    cap = int(args.memory_gb * 2**30)
    resource.setrlimit(resource.RLIMIT_AS, (cap if hard == resource.RLIM_INFINITY else min(cap, hard), hard))
    warnings.simplefilter("ignore")  # torch's notes on odd pickle protocols, thousands of them
    rng = random.Random(args.seed)
    found, network = seeds(), resnet20_tensors()
    failures: dict[str, int] = {}
    runs, deadline = 0, time.monotonic() + args.seconds
    with tempfile.TemporaryDirectory(prefix="resnets-fuzz-") as directory:
        while time.monotonic() < deadline:
            as_network = rng.random() < 0.1  # a network is built for one input in ten (they take longer)
            data, suffix = (mutate_network(rng, network), ".safetensors") if as_network else mutate(rng, found)
            runs += 1
            try:
                if as_network:
                    build_any(data, Path(directory))
                else:
                    read_any(data, Path(directory), suffix)
            except Exception as error:  # noqa: BLE001 - every other exception is what this script looks for
                where = traceback.extract_tb(error.__traceback__)[-1]
                kind = f"{type(error).__name__} at {os.path.basename(where.filename)}:{where.lineno}"
                if kind not in failures:
                    args.out.mkdir(parents=True, exist_ok=True)
                    saved = args.out / f"{hashlib.sha256(data).hexdigest()[:16]}{suffix}"
                    saved.write_bytes(data)
                    print(f"{kind}: {str(error).splitlines()[0][:200] if str(error) else ''} (input: {saved})")
                failures[kind] = failures.get(kind, 0) + 1
    print(f"{runs} inputs in {args.seconds:g} s: {sum(failures.values())} escaped a ResnetsError "
          f"({len(failures)} kinds)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
