"""The checkpoint readers against mutated, truncated and made-up files (hypothesis): whatever the bytes, the
result is a state dict or a ResnetsError, never another exception. Longer runs: scripts/fuzz_readers.py."""

from __future__ import annotations

import importlib.util
import json
import struct
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from resnets.weights import load_checkpoint, read_metadata, save_weights

ROOT = Path(__file__).resolve().parents[1]
# torch's note on a pickle whose protocol byte a mutation changed, thousands of times
pytestmark = pytest.mark.filterwarnings("ignore:Detected pickle protocol")

FUZZ = settings(max_examples=600, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def _fuzz_module():
    spec = importlib.util.spec_from_file_location("fuzz_readers", ROOT / "scripts" / "fuzz_readers.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


FUZZ_READERS = _fuzz_module()  # the long-running script's seeds and readers, shared with this short run
SEEDS = FUZZ_READERS.seeds()


@pytest.fixture(scope="module")
def directory(tmp_path_factory) -> Path:
    """Where each input is written (and removed after it is read)."""
    return tmp_path_factory.mktemp("fuzz")


_json = st.recursive(st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.text(max_size=8),
                     lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                                  max_size=4), max_leaves=12)
_entry = st.fixed_dictionaries({"dtype": st.sampled_from(["F32", "F16", "I64", "U8", "F8_E4M3", "BOOL", "X"])
                                | _json,
                                "shape": st.lists(st.integers(-2, 2**40), max_size=4) | _json,
                                "data_offsets": st.lists(st.integers(-2, 2**40), min_size=0, max_size=3) | _json})


@settings(FUZZ, max_examples=2000)
@given(seed=st.sampled_from(sorted(SEEDS)), cut=st.integers(0, 4096),
       flips=st.lists(st.tuples(st.integers(0, 4095), st.integers(0, 255)), max_size=6))
def test_mutated_and_truncated_checkpoints_give_a_result_or_a_resnets_error(directory, seed, cut, flips):
    data = bytearray(SEEDS[seed])
    for position, value in flips:
        if position < len(data):
            data[position] = value
    FUZZ_READERS.read_any(bytes(data[: max(cut, 1)] if cut < len(data) else data), directory)


@FUZZ
@given(header=st.dictionaries(st.text(max_size=12), _entry | _json, max_size=4),
       metadata=st.none() | _json | st.dictionaries(st.text(max_size=8), st.text(max_size=8) | _json, max_size=3),
       length_delta=st.sampled_from([0, 0, 0, -1, 1, 2**40, 2**63]), data_size=st.integers(0, 2048))
def test_made_up_safetensors_headers_give_a_result_or_a_resnets_error(directory, header, metadata, length_delta,
                                                                      data_size):
    if metadata is not None:
        header = {**header, "__metadata__": metadata}
    raw = json.dumps(header).encode()
    length = (len(raw) + length_delta) % 2**64
    FUZZ_READERS.read_any(struct.pack("<Q", length) + raw + bytes(data_size), directory, ".safetensors")


@FUZZ
@given(data=st.binary(max_size=512), prefix=st.sampled_from([b"", b"PK\x03\x04", SEEDS["torch_legacy"][:14],
                                                             struct.pack("<Q", 40) + b"{"]))
def test_random_bytes_give_a_result_or_a_resnets_error(directory, data, prefix):
    FUZZ_READERS.read_any(prefix + data, directory)


_NETWORK = FUZZ_READERS.resnet20_tensors()
_DTYPES = ["F64", "F32", "F16", "BF16", "I64", "I32", "I8", "U8", "BOOL"]
_change = st.tuples(st.sampled_from(sorted(_NETWORK)), st.sampled_from(["drop", "rename", "reshape", "retype"]),
                    st.lists(st.sampled_from([0, 1, 2, 3, 16, 64]), max_size=4), st.sampled_from(_DTYPES))


@settings(FUZZ, max_examples=60)
@given(changes=st.lists(_change, min_size=1, max_size=4),
       arch_kwargs=st.none() | st.sampled_from([{}, {"shortcut": "B"}, {"width_per_group": 2}, {"depth": 2}]))
def test_mutated_networks_give_a_model_or_a_resnets_error(directory, changes, arch_kwargs):
    """Well-formed files whose tensors do not make resnet20 (a key dropped, renamed, reshaped, retyped): past the
    readers, create_model refuses them in one ResnetsError or builds the network."""
    tensors = dict(_NETWORK)
    for key, how, shape, dtype in changes:
        if key not in tensors:
            continue
        if how == "drop":
            del tensors[key]
        elif how == "rename":
            tensors["module." + key] = tensors.pop(key)
        elif how == "reshape":
            tensors[key] = (tensors[key][0], shape)
        else:
            tensors[key] = (dtype, tensors[key][1])
    metadata = None if arch_kwargs is None else {"format": "resnets", "arch": "resnet20",
                                                 "arch_kwargs": json.dumps(arch_kwargs)}
    FUZZ_READERS.build_any(FUZZ_READERS.shaped_safetensors(tensors, metadata), directory)


def test_a_seed_itself_loads(tmp_path):
    """The seeds are real checkpoints (the mutations start from files that load)."""
    for name, data in SEEDS.items():
        path = tmp_path / f"seed-{name}"
        path.write_bytes(data)
        state_dict, info = load_checkpoint(path)
        assert info.format == name and set(state_dict) == set(FUZZ_READERS.tiny_state_dict())
    # and our own writer's file, with a whole network, too
    import resnets
    save_weights(resnets.create_model("resnet20"), tmp_path / "r20.safetensors")
    assert read_metadata(tmp_path / "r20.safetensors")["arch"] == "resnet20"
