"""The HTTP service, run for real: uvicorn on 127.0.0.1, an ephemeral port, urllib clients."""

from __future__ import annotations

import contextlib
import io
import json
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

import resnets
from resnets.deploy import InferenceSession, load_batch
from server_helpers import open_upload, read_until_closed
from resnets.deploy.server import ServerConfig, create_app, listen

uvicorn = pytest.importorskip("uvicorn")
pytest.importorskip("fastapi")

CLASSES = [f"kind{i}" for i in range(10)]


def _jpeg(size=(32, 32), color=(200, 30, 30)) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


def _png(size) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", size, (90, 160, 30)).save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def _request(url: str, data: bytes = None, content_type: str = None, timeout: float = 30.0) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=data, method="POST" if data is not None else "GET")
    if content_type:
        request.add_header("Content-Type", content_type)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def _multipart(field: str, filename: str, data: bytes) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"{filename}\"\r\n"
            f"Content-Type: image/jpeg\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def _run_server(config: ServerConfig):
    """uvicorn serving a random resnet20 on an ephemeral loopback port, in a thread."""
    model = resnets.create_model("resnet20").eval()
    model.classes = CLASSES
    session = InferenceSession(model, backend="torch")
    app = create_app(session, config)
    sock = listen("127.0.0.1", 0)
    port = sock.getsockname()[1]
    instance = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=instance.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not instance.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("server did not start")
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}", model, app
    instance.should_exit = True
    thread.join(timeout=10)
    sock.close()


@pytest.fixture(scope="module")
def server():
    yield from _run_server(ServerConfig(max_body_bytes=200_000, max_batch_size=8, max_wait_ms=30.0, top_k=3))


@pytest.fixture(scope="module")
def strict_server():
    """A server with a 2 s read timeout (and no minimum body rate) that runs at most 2 predictions at once."""
    yield from _run_server(ServerConfig(max_batch_size=8, read_timeout=2.0, min_body_rate=0, max_concurrent=2,
                                        warm_up=False))


def test_health_and_metadata(server):
    url, _, _ = server
    assert _request(f"{url}/health") == (200, {"status": "ok", "backend": "torch", "precision": "fp32"})
    status, meta = _request(f"{url}/metadata")
    assert status == 200 and meta["arch"] == "resnet20" and meta["classes"] == CLASSES
    assert meta["preprocessing"]["input_size"] == [3, 32, 32] and meta["server"]["max_batch_size"] == 8


def test_predict_raw_and_multipart_match_pytorch(server, tmp_path):
    url, model, _ = server
    image = _jpeg((40, 36), (20, 180, 60))
    (tmp_path / "x.jpg").write_bytes(image)
    with torch.no_grad():
        probabilities = torch.softmax(model(load_batch([tmp_path / "x.jpg"], model.preprocessing)), 1)[0]
    expected_top = probabilities.topk(3)
    for body, content_type in [(image, "image/jpeg"), (image, "application/octet-stream"),
                               _multipart("file", "x.jpg", image), _multipart("image", "x.jpg", image)]:
        status, result = _request(f"{url}/predict", body, content_type)
        assert status == 200, result
        assert [p["label"] for p in result["predictions"]] == expected_top.indices.tolist()
        assert result["predictions"][0]["name"] == CLASSES[int(expected_top.indices[0])]
        assert abs(result["predictions"][0]["probability"] - expected_top.values[0].item()) < 1e-5
    status, result = _request(f"{url}/predict?top_k=10", image, "image/png")  # content decides, not the type
    assert status == 200 and len(result["predictions"]) == 10


def test_bad_requests_get_4xx_and_the_server_keeps_serving(server):
    url, _, _ = server
    image = _jpeg()
    cases = [
        (b"x" * 300_000, "image/jpeg", 413, "over the limit"),
        (b"{\"image\": 1}", "application/json", 415, "unsupported content type"),
        (b"plain text", "text/plain", 415, "unsupported content type"),
        (b"this is not an image", "image/jpeg", 400, "not a recognised image"),
        (image[: len(image) // 2], "image/jpeg", 400, "cannot decode"),
        (b"", "image/jpeg", 400, "empty request body"),
        (_multipart("file", "x.jpg", image)[0], "multipart/form-data; boundary=zzz", 400, "malformed multipart"),
    ]
    body, content_type = _multipart("file", "x.jpg", image)
    no_file = body.replace(b'name="file"; filename="x.jpg"', b'name="other"')
    cases += [
        (no_file, content_type, 400, "no file field"),
    ]
    for body, content_type, code, message in cases:
        status, result = _request(f"{url}/predict", body, content_type)
        assert status == code, (content_type, result)
        assert message in result["error"]
        assert _request(f"{url}/predict", image, "image/jpeg")[0] == 200
    assert _request(f"{url}/predict?top_k=11", image, "image/jpeg")[0] == 422


def test_unparsable_query_gets_the_usual_error_shape(server):
    url, _, _ = server
    status, result = _request(f"{url}/predict?top_k=abc", _jpeg(), "image/jpeg")
    assert status == 422 and list(result) == ["error"]
    assert result["error"] == "top_k: Input should be a valid integer, unable to parse string as an integer, got 'abc'"
    status, result = _request(f"{url}/predict?top_k=0", _jpeg(), "image/jpeg")
    assert (status, result) == (422, {"error": "top_k must be between 1 and 10, got 0"})
    assert _request(f"{url}/no-such-path") == (404, {"error": "Not Found"})
    assert _request(f"{url}/predict") == (405, {"error": "Method Not Allowed"})


def test_a_default_top_k_above_the_classes_is_capped_as_predict_caps_it():
    # a server started with --top-k 12 for a 10-class model answers with its 10 classes (it said 422 to every
    # request); a request's own ?top_k=12 is still refused
    running = _run_server(ServerConfig(top_k=12, warm_up=False))
    url, _, _ = next(running)
    try:
        status, result = _request(f"{url}/predict", _jpeg(), "image/jpeg")
        assert status == 200 and len(result["predictions"]) == 10
        assert _request(f"{url}/predict?top_k=12", _jpeg(), "image/jpeg")[0] == 422
    finally:
        next(running, None)


def test_concurrent_requests_are_batched(server):
    url, _, app = server
    images = [_jpeg((32, 32), (i * 20, 100, 200 - i * 20)) for i in range(8)]
    before = app.state.batcher.batches_run
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda body: _request(f"{url}/predict", body, "image/jpeg"), images * 3))
    assert all(status == 200 for status, _ in results)
    assert max(result["batch_size"] for _, result in results) > 1
    assert app.state.batcher.batches_run - before < len(results)


def test_aspect_ratio_bombs_are_refused_before_resizing(server):
    url, _, _ = server
    # a few hundred bytes each; resized as sent, the 1x200000 strip needed gigabytes and got a 500
    for size in [(1, 20_000), (20_000, 1), (1, 200_000), (3, 100)]:
        body = _png(size)
        assert len(body) < 2_000
        started = time.monotonic()
        status, result = _request(f"{url}/predict", body, "image/png")
        assert status == 400, (size, result)
        assert "aspect ratio" in result["error"] and "20:1" in result["error"]
        assert time.monotonic() - started < 2.0
        assert _request(f"{url}/predict", _jpeg(), "image/jpeg")[0] == 200
    status, result = _request(f"{url}/predict", _png((5, 100)), "image/png")  # 20:1 itself is allowed
    assert status == 200, result
    assert _request(f"{url}/health")[0] == 200


def test_slow_body_gets_408_and_the_connection_is_closed(strict_server):
    url, _, app = strict_server
    client = open_upload(url)
    stop = threading.Event()

    def drip():  # one byte every 100 ms for 1.9 s: each read is quick, the body never completes in time
        # (stopped before the 2-s deadline: bytes still arriving when the server closes would make it reset
        # the connection, which can discard the 408 before this client reads it)
        with contextlib.suppress(OSError):
            while not stop.wait(0.1) and time.monotonic() - started < 1.9:
                client.send(b"x")

    dripper = threading.Thread(target=drip, daemon=True)
    started = time.monotonic()
    dripper.start()
    try:
        status, result = read_until_closed(client)  # a server without a read timeout never answers
    finally:
        stop.set()
        dripper.join()
        client.close()
    assert status == 408 and "read_timeout" in result["error"]
    assert 2.0 <= time.monotonic() - started < 3.5  # a per-read timeout would answer 2 s after the last byte
    assert app.state.in_progress == 0
    assert _request(f"{url}/predict", _jpeg(), "image/jpeg")[0] == 200


def test_requests_over_max_concurrent_get_503_at_once():
    # two predictions in progress: their bodies have arrived and they wait (1.5 s) for company in a batch
    running = _run_server(ServerConfig(max_batch_size=8, max_wait_ms=1500.0, max_concurrent=2, warm_up=False))
    url, _, app = next(running)
    try:
        with ThreadPoolExecutor(2) as pool:
            holders = [pool.submit(_request, f"{url}/predict", _jpeg(), "image/jpeg") for _ in range(2)]
            deadline = time.monotonic() + 2.0
            while app.state.in_progress < 2 and time.monotonic() < deadline:
                time.sleep(0.01)
            assert app.state.in_progress == 2
            started = time.monotonic()
            status, result = _request(f"{url}/predict", _jpeg(), "image/jpeg")
            assert status == 503 and "max_concurrent" in result["error"]
            assert time.monotonic() - started < 1.0  # refused, not queued
            assert _request(f"{url}/health")[0] == 200  # health checks are not counted
            assert [holder.result()[0] for holder in holders] == [200, 200]
        assert app.state.in_progress == 0
        assert _request(f"{url}/predict", _jpeg(), "image/jpeg")[0] == 200
    finally:
        next(running, None)


def test_the_serve_command_listens_answers_and_stops_on_ctrl_c(tmp_path):
    weights = tmp_path / "w.safetensors"
    resnets.save_weights(resnets.create_model("resnet20"), weights)
    command = [sys.executable, "-m", "resnets", "serve", "resnet20", "--weights", str(weights), "--port", "0",
               "--backend", "torch"]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    try:
        log = []
        for line in process.stderr:  # the log names the port the system chose
            log.append(line)
            found = re.search(r"serving resnet20 on http://127\.0\.0\.1:(\d+)", line)
            if found:
                break
        assert found, "".join(log)
        url = f"http://127.0.0.1:{found.group(1)}"
        assert _request(f"{url}/health")[0] == 200
        status, result = _request(f"{url}/predict", _jpeg(), "image/jpeg")
        assert status == 200 and len(result["predictions"]) == 5
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=30) == 130  # interrupted, as every command says it
    finally:
        process.kill()
        process.wait()


def test_an_address_that_cannot_be_listened_on_is_one_line_before_the_model_loads(tmp_path, capsys, monkeypatch):
    import resnets.cli

    monkeypatch.setattr(resnets.cli, "_session", lambda *a, **k: pytest.fail("the model was loaded first"))
    busy = listen("127.0.0.1", 0)
    busy.listen()
    with busy:
        port = str(busy.getsockname()[1])
        for host, port, says in (("127.0.0.1", port, f"cannot listen on 127.0.0.1:{port}"),
                                 ("999.1.1.1", "8000", "--host 999.1.1.1: not an address to listen on")):
            code = resnets.cli.main(["serve", "resnet20", "--random-weights", "--host", host, "--port", port])
            err = capsys.readouterr().err
            assert code == 2 and err.count("\n") == 1 and says in err
