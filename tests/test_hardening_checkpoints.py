"""Hostile and damaged checkpoints and downloads: each sized from its header (or its zip directory) and
refused in one line before anything is mapped or allocated; downloads that stall or are cut short never
cached."""

from __future__ import annotations

import http.server
import json
import struct
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

import pytest
import torch

import resnets
from cli_helpers import cli_env, run_main
from resnets import download
from resnets.download import DownloadError, cache_entry, fetch
from resnets.errors import UsageError
from resnets.weights import CheckpointError, load_checkpoint, save_weights, sizing

# command lines (a JSON object of name -> arguments, the second argument) run in one process whose address
# space is capped (bytes, the first argument): an allocation of gigabytes fails there instead of swapping the
# machine. Prints {name: [exit code, stderr]}; an exception's traceback is its stderr, exit code 1.
_CAPPED = """
import contextlib, io, json, resource, sys, traceback
resource.setrlimit(resource.RLIMIT_AS, (int(sys.argv[1]), resource.getrlimit(resource.RLIMIT_AS)[1]))
from resnets.cli import main
results = {}
for name, args in json.loads(sys.argv[2]).items():
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = main(args)
        except BaseException:
            traceback.print_exc()
            code = 1
    results[name] = [code, err.getvalue()]
print(json.dumps(results))
"""
CAP = 4 << 30  # a resnet50 prediction runs in it, with about a gigabyte to spare


def _safetensors(path: Path, header: dict, data_size: int, *, header_len: int | None = None,
                 data: bytes = b"") -> Path:
    """A safetensors file of ``header`` (JSON) and ``data_size`` bytes of data, ``data`` first and the rest a
    hole (a sparse file: it takes no disk)."""
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw) if header_len is None else header_len) + raw + data)
        f.truncate(8 + len(raw) + data_size)
    return path


def _entry(dtype: str, shape: list[int], begin: int) -> dict:
    size = sizing.SAFETENSORS_DTYPES.get(dtype, 1)
    for side in shape:
        size *= side
    return {"dtype": dtype, "shape": shape, "data_offsets": [begin, begin + size]}


def _one_line_refusal(result, *says: str) -> None:
    assert result.returncode == 2, (result.stdout[-1000:], result.stderr[-3000:])
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
    for text in says:
        assert text in result.stderr, result.stderr


def _image(tmp_path: Path) -> str:
    from PIL import Image
    image = tmp_path / "x.png"
    Image.new("RGB", (32, 32)).save(image)
    return str(image)


@pytest.fixture(scope="module")
def resnet20_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("weights") / "r20.safetensors"
    save_weights(resnets.create_model("resnet20"), path)
    return path


def _resnet20_tensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file
    return load_file(str(path))


def _fc_alone_250000_wide(directory: Path, resnet20_file: Path) -> Path:
    return _safetensors(directory / "fc.safetensors", {"fc.weight": _entry("F32", [250_000, 1], 0)}, 1_000_000,
                        data=b"\0" * 1_000_000)


def _a_trillion_elements(directory: Path, resnet20_file: Path) -> Path:
    return _safetensors(directory / "trillion.safetensors", {"fc.weight": _entry("U8", [10**6, 10**6], 0)}, 10**12)


def _junk_beside_resnet20(directory: Path, resnet20_file: Path) -> Path:
    from safetensors.torch import save_file
    good = directory / "good.safetensors"
    save_file(_resnet20_tensors(resnet20_file), str(good))
    with open(good, "rb") as f:
        (length,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(length))
        data = f.read()
    end = max(v["data_offsets"][1] for k, v in header.items() if k != "__metadata__")
    header["junk"] = _entry("U8", [4_001_096_256], end)
    return _safetensors(directory / "junk.safetensors", header, end + 4_001_096_256, data=data)


def _resnet50_header(classes: int, dtype: str = "F32") -> dict:
    shapes = {k: list(v.shape) for k, v in resnets.create_model("resnet50", num_classes=0).state_dict().items()}
    shapes["fc.weight"], shapes["fc.bias"] = [classes, 2048], [classes]
    header, offset = {}, 0
    for key, shape in shapes.items():
        header[key] = _entry("I64" if key.endswith("num_batches_tracked") else dtype, shape, offset)
        offset = header[key]["data_offsets"][1]
    return header


def _resnet50_a_million_wide(directory: Path, resnet20_file: Path) -> Path:
    header = _resnet50_header(1_000_000)
    return _safetensors(directory / "wide.safetensors", header, header["fc.bias"]["data_offsets"][1])


# name -> (model, the hostile file's maker): each predicted from in the capped process
_CAPPED_ROWS = {"fc_alone_250000_wide": ("resnet50", _fc_alone_250000_wide),
                "a_trillion_elements": ("resnet20", _a_trillion_elements),
                "junk_beside_resnet20": ("resnet20", _junk_beside_resnet20),
                "resnet50_a_million_wide": ("resnet50", _resnet50_a_million_wide)}


@pytest.fixture(scope="module")
def capped(tmp_path_factory, resnet20_file) -> dict[str, subprocess.CompletedProcess]:
    """Every row of _CAPPED_ROWS through `resnets predict` in one process capped at CAP (one start-up for all)."""
    directory = tmp_path_factory.mktemp("capped")
    image = _image(directory)
    commands = {name: ["predict", model, "--weights", str(make(directory, resnet20_file)), image,
                       "--backend", "torch"] for name, (model, make) in _CAPPED_ROWS.items()}
    run = subprocess.run([sys.executable, "-c", _CAPPED, str(CAP), json.dumps(commands)], capture_output=True,
                         text=True, timeout=300, env=cli_env())
    assert run.returncode == 0, run.stderr[-3000:]
    return {name: subprocess.CompletedProcess(commands[name], code, "", stderr)
            for name, (code, stderr) in json.loads(run.stdout.splitlines()[-1]).items()}


# -- safetensors: the header sized before safetensors reads it ----------------------------------------------


def test_a_classifier_alone_250000_wide_is_refused_before_the_network_is_built(capped):
    """fc.weight [250000, 1] is a 1 MB file; building resnet50 for it took 2.56 GB, over the cap, first."""
    _one_line_refusal(capped["fc_alone_250000_wide"], "a classifier of 250,000 classes", "over the limit of 100,000")


def test_a_classifier_within_the_limit_but_of_the_wrong_shape_is_refused_before_the_network_is_built(
        tmp_path, monkeypatch):
    """Every shape is compared with the architecture on the meta device: fc.weight [20000, 1] is not resnet18's
    [20000, 512], and the 86 MB network is never built: the error comes first."""
    weights = {k: v for k, v in resnets.create_model("resnet18", num_classes=0).state_dict().items()}
    weights["fc.weight"], weights["fc.bias"] = torch.zeros(20_000, 1), torch.zeros(20_000)
    path = tmp_path / "wrong.pth"
    torch.save(weights, path)
    built = []
    real_build = resnets.factory.build_model

    def build(*args, **kwargs):  # the real builder, noting the default device it was called under
        built.append(torch.empty(0).device.type)
        return real_build(*args, **kwargs)

    monkeypatch.setattr(resnets.factory, "build_model", build)
    with pytest.raises(CheckpointError, match=r"fc.weight: file \(20000, 1\) vs model \(20000, 512\)"):
        resnets.create_model("resnet18", weights=path)
    assert built == ["meta"]  # the probe only: the real network was never built


def test_a_huge_header_length_is_one_line(tmp_path, capsys):
    """A 300 MB sparse file whose header length says 200 MB: safetensors' own 'header too large'."""
    bad = tmp_path / "huge-header.safetensors"
    with open(bad, "wb") as f:
        f.write(struct.pack("<Q", 200 << 20) + b'{"a": ')
        f.truncate(300 << 20)
    result = run_main("predict", "resnet20", "--weights", str(bad), _image(tmp_path))
    _one_line_refusal(result, "a safetensors header of 200 MiB, over the limit of 16 MiB")
    with pytest.raises(CheckpointError, match="over the limit"):
        resnets.read_metadata(bad)


@pytest.mark.parametrize("where", ["header", "metadata"])
def test_a_deeply_nested_json_header_is_one_line(tmp_path, resnet20_file, where):
    deep = "[" * 200_000 + "]" * 200_000
    if where == "header":
        raw = b'{"x": ' + deep.encode() + b"}"
        bad = tmp_path / "deep.safetensors"
        bad.write_bytes(struct.pack("<Q", len(raw)) + raw)
        says = "the safetensors header nests 200,001 deep, over the limit of 64"
    else:
        bad = tmp_path / "deep-metadata.safetensors"
        from safetensors.torch import save_file
        save_file(_resnet20_tensors(resnet20_file), str(bad), metadata={"format": "resnets", "classes": deep})
        says = "metadata 'classes' nests 200,000 deep"
    with pytest.raises(CheckpointError, match=says):
        load_checkpoint(bad)
    with pytest.raises(CheckpointError, match="nests 200,00[01] deep"):
        resnets.read_metadata(bad)


def test_a_trillion_declared_elements_in_a_sparse_file_are_refused_unread(capped):
    """A 1 TB sparse file (before: a MemoryError traceback)."""
    _one_line_refusal(capped["a_trillion_elements"], "fc.weight declares shape (1000000, 1000000) of U8",
                      "over the limit of 1 GiB for one tensor")


def test_a_4gb_sparse_junk_tensor_is_refused_unmapped(capped):
    """Beside resnet20's own tensors, a 4,001,096,256-byte one: 'unable to mmap' or MemoryError before."""
    _one_line_refusal(capped["junk_beside_resnet20"], "junk declares shape (4001096256,) of U8")


def test_the_total_of_all_tensors_is_bounded_too(tmp_path, monkeypatch):
    header = {f"t{i}": _entry("F32", [256], 1024 * i) for i in range(4)}
    path = _safetensors(tmp_path / "four.safetensors", header, 4096)
    assert set(sizing.read_safetensors_header(path).tensors) == {"t0", "t1", "t2", "t3"}
    monkeypatch.setattr(sizing, "MAX_CHECKPOINT_BYTES", 3000)
    with pytest.raises(sizing.CheckpointTooLargeError, match="its tensors declare 4,096 bytes, over the limit of "
                                                             "3,000 bytes for one checkpoint"):
        sizing.read_safetensors_header(path)


def test_a_shape_of_a_million_dimensions_is_refused_before_its_product_is_taken(tmp_path):
    """Two million sides of 2**40 in a 16 MB header: their product alone would take minutes."""
    path = _safetensors(tmp_path / "dims.safetensors", {"x": {"dtype": "U8", "shape": [2**40] * 1_000_000,
                                                              "data_offsets": [0, 0]}}, 0)
    started = time.monotonic()
    with pytest.raises(CheckpointError, match="x has 1,000,000 dimensions, over the limit of 8"):
        load_checkpoint(path)
    assert time.monotonic() - started < 5


def test_a_header_cut_short_of_its_tensors_is_named_truncated(tmp_path, resnet20_file):
    data = resnet20_file.read_bytes()
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="its header describes .* bytes, the file holds .*truncated"):
        load_checkpoint(cut)


def test_float8_tensors_are_refused_by_name(tmp_path, resnet20_file):
    """Before: NotImplementedError: "isfinite" not implemented for 'Float8_e4m3fn'."""
    from safetensors.torch import save_file
    tensors = _resnet20_tensors(resnet20_file)
    tensors["conv1.weight"] = tensors["conv1.weight"].to(torch.float8_e4m3fn)
    bad = tmp_path / "f8.safetensors"
    save_file(tensors, str(bad))
    result = run_main("predict", "resnet20", "--weights", str(bad), _image(tmp_path))
    _one_line_refusal(result, "conv1.weight holds F8_E4M3 values, which no network of resnets keeps")
    torch.save(tensors, tmp_path / "f8.pth")
    with pytest.raises(CheckpointError, match="conv1.weight holds torch.float8_e4m3fn values"):
        load_checkpoint(tmp_path / "f8.pth")


# -- torch.save archives: the zip directory sized before torch reads it ---------------------------------------


def test_a_zip_bomb_pth_is_refused_before_it_is_inflated(tmp_path):
    """resnet20's archive with one storage replaced by 1.1 GiB of zeros deflated to 5 MB: torch inflated it
    (3 GB in the probe: 192 GB asked for, 3.7 GB resident)."""
    good = tmp_path / "good.pth"
    torch.save(resnets.create_model("resnet20").state_dict(), good)
    bomb = tmp_path / "bomb.pth"
    zeros = bytes(16 << 20)
    with zipfile.ZipFile(good) as source, zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as out:
        storage = next(m.filename for m in source.infolist() if m.filename.endswith("/data/0"))
        for member in source.infolist():
            if member.filename == storage:
                with out.open(storage, "w", force_zip64=True) as inflated:
                    for _ in range(70):  # 1120 MiB
                        inflated.write(zeros)
            else:
                out.writestr(member, source.read(member))
    assert bomb.stat().st_size < 10 << 20
    result = run_main("predict", "resnet20", "--weights", str(bomb), _image(tmp_path))
    _one_line_refusal(result, f"its member {storage} expands to 1120 MiB from", "over the limit of 1 GiB")


def test_a_resnet50_checkpoint_with_a_million_wide_classifier_is_refused(capped, tmp_path):
    """A sparse 8 GB file: fc.weight [1000000, 2048] is 8 GB of float32 (before: 8 GB asked for, a traceback)."""
    _one_line_refusal(capped["resnet50_a_million_wide"], "fc.weight declares shape (1000000, 2048) of F32")
    # narrower, within the limit on one tensor (800 MB of float16), it is still over the limit on classes
    header = _resnet50_header(200_000, "F16")
    bad = _safetensors(tmp_path / "wide16.safetensors", header, header["fc.bias"]["data_offsets"][1])
    with pytest.raises(CheckpointError, match="a classifier of 200,000 classes"):
        resnets.create_model("resnet50", weights=bad)


def test_a_torch_file_named_safetensors_says_so_in_one_line(tmp_path):
    """Before: torch.load handed it to safetensors by its name: SafetensorError: header too large."""
    misnamed = tmp_path / "w.safetensors"
    torch.save(resnets.create_model("resnet20").state_dict(), misnamed)
    result = run_main("predict", "resnet20", "--weights", str(misnamed), _image(tmp_path))
    _one_line_refusal(result, "a torch.save file (torch_zip), not safetensors despite its name; rename it to w.pth")
    misnamed.rename(tmp_path / "w.pth")
    assert load_checkpoint(tmp_path / "w.pth")[1].format == "torch_zip"


# -- downloads: stalls, and copies cut short never kept ----------------------------------------------------------


@pytest.fixture
def slow_server():
    """/drip announces 1000 bytes and sends one a second; /silent sends its headers and nothing; /file serves
    ``bodies['file']``, announcing no length, cut to ``bodies['cut']`` bytes while that is set."""
    bodies: dict = {}

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            self.send_response(200)
            try:
                if self.path == "/drip":
                    self.send_header("Content-Length", "1000")
                    self.end_headers()
                    for _ in range(1000):
                        self.wfile.write(b"x")
                        self.wfile.flush()
                        time.sleep(1.0)
                elif self.path.startswith("/silent"):
                    self.send_header("Content-Length", "1000")
                    self.end_headers()
                    self.wfile.flush()
                    time.sleep(30)
                else:  # no Content-Length: the end of the connection is the end of the body
                    self.end_headers()
                    body = bodies["file"]
                    self.wfile.write(body[: bodies.get("cut", len(body))])
                self.close_connection = True
            except (BrokenPipeError, ConnectionResetError):
                pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", bodies
    httpd.shutdown()
    httpd.server_close()


def test_a_url_sending_one_byte_a_second_stalls_out(slow_server, tmp_path, monkeypatch):
    """Before: only the 600-s limit on the whole transfer ended it (the progress bar said 304 hours)."""
    base, _ = slow_server
    started = time.monotonic()
    with pytest.raises(DownloadError, match=r"stalled, [1-4] bytes in the last 2 s"):
        fetch(f"{base}/drip", tmp_path / "drip", progress=False, stall_timeout=2)
    assert time.monotonic() - started < 6
    # the module's constant is the default of every download, checkpoints' included
    monkeypatch.setattr(download, "STALL_TIMEOUT_S", 1.5)
    started = time.monotonic()
    with pytest.raises(DownloadError, match="stalled, nothing received for 1.5 s"):
        load_checkpoint(f"{base}/silent/w.pth", cache_dir=tmp_path / "cache", progress=False)
    assert time.monotonic() - started < 6
    assert not any(p.is_file() for p in tmp_path.rglob("*"))  # nothing cached, no temporary file left
    with pytest.raises(UsageError, match="stall_timeout must be more than 0"):  # 0: a non-blocking socket
        fetch(f"{base}/drip", tmp_path / "drip", progress=False, stall_timeout=0)


def test_a_download_cut_short_without_a_length_or_hash_is_not_kept(slow_server, tmp_path, resnet20_file):
    """A server that closes early and never said how long the body was: the copy looked complete and, with no
    hash to check, was read from the cache (and refused) for good."""
    base, bodies = slow_server
    bodies["file"], bodies["cut"] = resnet20_file.read_bytes(), 5000
    url, cache = f"{base}/r20.safetensors", tmp_path / "cache"
    with pytest.raises(CheckpointError, match="truncated.*removed from the download cache"):
        load_checkpoint(url, cache_dir=cache, progress=False)
    assert not cache_entry(url, cache).exists()
    del bodies["cut"]
    state_dict, info = load_checkpoint(url, cache_dir=cache, progress=False)
    assert info.path == cache_entry(url, cache) and info.layout == "resnets"
    assert torch.equal(state_dict["conv1.weight"], _resnet20_tensors(resnet20_file)["conv1.weight"])
