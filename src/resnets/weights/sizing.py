"""Checkpoints sized before they are read.

A checkpoint is data from elsewhere, and its header says how much memory reading it takes: a
safetensors header lists every tensor's dtype, shape and byte range, a torch.save archive's
zip directory every member's uncompressed size. Both are read here first, without touching
the tensors, and checked against the file's own size and the limits below, so that a hostile
or damaged file (a header length of terabytes, JSON nested a million deep, 10^12 elements in
a sparse file, a zip bomb, a float8 tensor, a million-wide classifier) is one line naming what
is wrong before anything is mapped or allocated.
"""

from __future__ import annotations

import json
import math
import re
import struct
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from ..errors import UsageError

MAX_HEADER_BYTES = 16 << 20  # a safetensors header: names, shapes, metadata (ours are under 100 kB)
MAX_JSON_DEPTH = 64  # our headers and metadata nest 4 deep
MAX_DIMENSIONS = 8  # a ResNet's tensors have at most 4
MAX_TENSOR_BYTES = 1 << 30  # the largest tensor of a registered net is 151 MB (wide_resnet101_2's layer4)
MAX_CHECKPOINT_BYTES = 4 << 30  # all tensors of one file, as the download limit
MAX_NUM_CLASSES = 100_000  # a classifier's width (ImageNet-21k has 21,843 classes)

# the safetensors dtypes a checkpoint of ours can hold: floating-point weights, integer counters
SAFETENSORS_DTYPES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1,
                      "BOOL": 1}
_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_OPENING = np.zeros(256, dtype=np.int8)
_OPENING[[ord("["), ord("{")]] = 1
_OPENING[[ord("]"), ord("}")]] = -1


class CheckpointError(UsageError):
    """A checkpoint that cannot be read or does not fit the model."""


class CheckpointTooLargeError(CheckpointError):
    """A checkpoint whose header describes more than the limits allow (or more than the file holds)."""


def size_text(count: int) -> str:
    """A byte count as messages say it: "1 GiB", "4,001,096,256 bytes"."""
    for unit, shift in (("GiB", 30), ("MiB", 20)):
        if count >= 1 << shift and count % (1 << shift) == 0:
            return f"{count >> shift} {unit}"
    return f"{count:,} bytes"


def json_depth(raw: bytes) -> int:
    """How deep ``raw``'s arrays and objects nest, counted without parsing it (brackets inside strings do
    not count), so that a hostile header is refused before the parser recurses into it."""
    stripped = _JSON_STRING.sub(b'""', raw)
    steps = _OPENING[np.frombuffer(stripped, dtype=np.uint8)]
    return int(np.cumsum(steps, dtype=np.int64).max(initial=0)) if len(steps) else 0


def check_json_depth(raw: "bytes | str", what: str) -> bytes:
    """``raw`` as bytes when it nests at most MAX_JSON_DEPTH deep, else the CheckpointError naming ``what`` (the
    file and the field)."""
    data = raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else raw
    depth = json_depth(data) if len(data) > MAX_JSON_DEPTH else 0  # a shorter text cannot nest deeper
    if depth > MAX_JSON_DEPTH:
        raise CheckpointError(f"{what} nests {depth:,} deep, over the limit of {MAX_JSON_DEPTH}: not what "
                              f"resnets or safetensors writes")
    return data


def loads_bounded(raw: "bytes | str", what: str) -> Any:
    """``json.loads(raw)`` once its nesting is known to be at most MAX_JSON_DEPTH; else a CheckpointError
    naming ``what`` (the file and the field)."""
    data = check_json_depth(raw, what)
    try:
        return json.loads(data)
    except (ValueError, RecursionError) as error:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise CheckpointError(f"{what} is not valid JSON ({str(error).splitlines()[0][:120]}): damaged, or not "
                              f"a safetensors file") from None


@dataclass
class TensorEntry:
    dtype: str
    shape: tuple[int, ...]
    nbytes: int


@dataclass
class SafetensorsHeader:
    """What a safetensors file's header describes: its tensors (without their data) and its metadata."""

    tensors: dict[str, TensorEntry] = field(default_factory=dict)
    metadata: dict[str, str] = field(default_factory=dict)

    @property
    def shapes(self) -> dict[str, tuple[int, ...]]:
        return {key: entry.shape for key, entry in self.tensors.items()}


def read_safetensors_header(path: "str | Path") -> SafetensorsHeader:
    """The header of the safetensors file ``path``, checked before safetensors reads it: its length against
    MAX_HEADER_BYTES and the file, its JSON depth, every tensor's dtype (float8 and other types no network of
    ours keeps refused by name), its shape against its byte range, MAX_TENSOR_BYTES and the file's size, and
    all tensors together against MAX_CHECKPOINT_BYTES. Raises CheckpointError naming the file and the key."""
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as f:
        prefix = f.read(8)
        if len(prefix) < 8:
            raise CheckpointError(f"{path}: {size} bytes, too short for a safetensors header")
        (header_len,) = struct.unpack("<Q", prefix)
        if header_len > MAX_HEADER_BYTES:
            raise CheckpointTooLargeError(
                f"{path}: a safetensors header of {size_text(header_len)}, over the limit of "
                f"{size_text(MAX_HEADER_BYTES)}: damaged or hostile, not a file resnets, timm or torchvision writes")
        if header_len > size - 8:
            raise CheckpointError(f"{path}: a safetensors file whose header claims {header_len:,} bytes, but the "
                                  f"file has {size:,}: truncated or damaged; fetch or copy it again")
        raw = f.read(header_len)
    header = loads_bounded(raw, f"{path}: the safetensors header")
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: the safetensors header is a JSON {type(header).__name__}, not an object")
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise CheckpointError(f"{path}: the safetensors header's __metadata__ must map names to strings")
    data_size = size - 8 - header_len
    result = SafetensorsHeader(metadata=metadata)
    total = end_max = 0
    for key, entry in header.items():
        tensor = _tensor_entry(path, key, entry)
        begin, end = entry["data_offsets"]
        if end - begin != tensor.nbytes:
            raise CheckpointError(f"{path}: {_key(key)} is {_described(tensor)}, {tensor.nbytes:,} bytes, but its "
                                  f"data_offsets span {end - begin:,}: damaged")
        if tensor.nbytes > MAX_TENSOR_BYTES:
            raise CheckpointTooLargeError(
                f"{path}: {_key(key)} declares {_described(tensor)}, {size_text(tensor.nbytes)}, over the limit of "
                f"{size_text(MAX_TENSOR_BYTES)} for one tensor: not the weights of a network resnets builds")
        total += tensor.nbytes
        end_max = max(end_max, end)
        result.tensors[key] = tensor
    if end_max > data_size:
        raise CheckpointError(f"{path}: its header describes {8 + header_len + end_max:,} bytes, the file holds "
                              f"{size:,}: truncated or damaged; fetch or copy it again")
    if total > MAX_CHECKPOINT_BYTES:
        raise CheckpointTooLargeError(f"{path}: its tensors declare {size_text(total)}, over the limit of "
                                      f"{size_text(MAX_CHECKPOINT_BYTES)} for one checkpoint")
    return result


def _key(key: str) -> str:
    """A key as messages show it: itself when short and printable, else its quoted, shortened repr."""
    return key if len(key) <= 120 and key.isprintable() else repr(key[:120])


def _described(tensor: TensorEntry) -> str:
    return f"shape {tensor.shape} of {tensor.dtype}"


def _is_count(value: Any) -> bool:
    return type(value) is int and value >= 0


def _tensor_entry(path: Path, key: str, entry: Any) -> TensorEntry:
    if not isinstance(entry, dict) or not {"dtype", "shape", "data_offsets"} <= set(entry):
        raise CheckpointError(f"{path}: the header's entry {_key(key)} is not a tensor (dtype, shape, "
                              f"data_offsets): damaged, or not a safetensors file")
    dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
    if not isinstance(dtype, str):
        raise CheckpointError(f"{path}: {_key(key)} has dtype {str(dtype)[:40]!r}, not a dtype name: damaged")
    if dtype not in SAFETENSORS_DTYPES:
        raise CheckpointError(f"{path}: {_key(key)} holds {_key(dtype[:40])} values, which no network of resnets keeps "
                              f"(weights are F16, BF16, F32 or F64, counters integers); convert them to float32 "
                              f"first")
    if isinstance(shape, list) and len(shape) > MAX_DIMENSIONS:  # before their product is taken
        raise CheckpointError(f"{path}: {_key(key)} has {len(shape):,} dimensions, over the limit of "
                              f"{MAX_DIMENSIONS}: not the weights of a network resnets builds")
    if not isinstance(shape, list) or not all(map(_is_count, shape)):
        raise CheckpointError(f"{path}: {_key(key)} has shape {str(shape)[:80]}, not a list of sizes: damaged")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(map(_is_count, offsets))
            and offsets[0] <= offsets[1]):
        raise CheckpointError(f"{path}: {_key(key)} has data_offsets {str(offsets)[:80]}, not [begin, end]: damaged")
    return TensorEntry(dtype, tuple(shape), math.prod(shape) * SAFETENSORS_DTYPES[dtype])


def check_torch_archive(path: "str | Path") -> None:
    """The members of a torch.save zip archive, by the uncompressed sizes its directory declares, against
    MAX_TENSOR_BYTES each and MAX_CHECKPOINT_BYTES together, before torch reads (and inflates) any: a zip
    bomb is refused here. torch.save itself stores members uncompressed."""
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError, NotImplementedError,
            struct.error, UnicodeDecodeError) as error:
        raise CheckpointError(f"{path}: a torch.save archive whose zip directory cannot be read ({error}): "
                              f"truncated or damaged; fetch or copy it again") from None
    total = 0
    for member in members:
        if member.file_size > MAX_TENSOR_BYTES:
            inflated = f" from {member.compress_size:,} in the file" if member.compress_size < member.file_size else ""
            raise CheckpointTooLargeError(
                f"{path}: its member {_key(member.filename)} expands to {size_text(member.file_size)}{inflated}, "
                f"over the limit of {size_text(MAX_TENSOR_BYTES)} for one tensor: not the weights of a network "
                f"resnets builds")
        total += member.file_size
    if total > MAX_CHECKPOINT_BYTES:
        raise CheckpointTooLargeError(f"{path}: its members expand to {size_text(total)}, over the limit of "
                                      f"{size_text(MAX_CHECKPOINT_BYTES)} for one checkpoint")


def check_classifier(shapes: Mapping[str, tuple[int, ...]], source: str) -> None:
    """A classifier (``fc.weight``) that is not 2-D (classes, features), or wider than MAX_NUM_CLASSES, is
    refused before a network is built for it."""
    fc = shapes.get("fc.weight")
    if fc is not None and len(fc) != 2:
        raise CheckpointError(f"{source}: fc.weight has shape {tuple(fc)}; a classifier's weight is 2-D (classes, "
                              f"features): damaged, or not a ResNet's classifier")
    if fc and fc[0] > MAX_NUM_CLASSES:
        raise CheckpointTooLargeError(f"{source}: a classifier of {fc[0]:,} classes (fc.weight {tuple(fc)}), over "
                                      f"the limit of {MAX_NUM_CLASSES:,}: not a network resnets builds")


__all__ = ["CheckpointError", "CheckpointTooLargeError", "MAX_CHECKPOINT_BYTES", "MAX_DIMENSIONS", "MAX_HEADER_BYTES",
           "MAX_JSON_DEPTH", "MAX_NUM_CLASSES", "MAX_TENSOR_BYTES", "SAFETENSORS_DTYPES", "SafetensorsHeader",
           "check_classifier", "check_json_depth", "check_torch_archive", "json_depth", "loads_bounded",
           "read_safetensors_header", "size_text"]
