"""The HTTP service under attack, run for real (uvicorn on 127.0.0.1): what a request may hold is set by
what it makes the server do (decoding memory, a prediction slot), not by how many requests there are."""

from __future__ import annotations

import contextlib
import io
import json
import socket
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

import resnets
from resnets.deploy import InferenceSession
from server_helpers import open_upload, read_until_closed
from resnets.errors import ResnetsError

uvicorn = pytest.importorskip("uvicorn")
pytest.importorskip("fastapi")

from resnets.deploy.server import ServerConfig, create_app, listen, serve  # noqa: E402


def _png(size, color=(90, 160, 30)) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG")
    return buffer.getvalue()


def _post(url: str, body: bytes, content_type: str = "image/png", timeout: float = 60.0):
    """(status, JSON body, headers) of a POST."""
    request = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read()), response.headers
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read()), error.headers


@contextlib.contextmanager
def _server(config: ServerConfig, model=None):
    """uvicorn serving ``model`` (a random resnet20) on an ephemeral loopback port, in a thread: (url, app)."""
    model = (model or resnets.create_model("resnet20")).eval()
    app = create_app(InferenceSession(model, backend="torch"), config)
    sock = listen("127.0.0.1", 0)
    instance = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=instance.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not instance.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("server did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}", app
    finally:
        instance.should_exit = True
        thread.join(timeout=10)
        sock.close()


SMALL = _png((40, 36))
BOMB = _png((4000, 4000))  # 56 KB that decode to 48,000,000 bytes (RGB)
BOMB_BYTES = 4000 * 4000 * 3


def test_concurrent_bombs_share_a_decoding_budget_and_get_503_with_retry_after_never_500():
    # room for one bomb's pixels at a time, and for the small images beside it; without a budget all six decode
    # at once (at 7999x8000 each, eight of them answered 500 with a MemoryError and left the server at 3.8 GB)
    limit = BOMB_BYTES + 1_000_000
    with _server(ServerConfig(max_decoded_bytes=limit, warm_up=False)) as (url, app):
        start = threading.Barrier(6)

        def bomb(_):
            start.wait()
            return _post(f"{url}/predict", BOMB)

        with ThreadPoolExecutor(6) as pool:
            bombs = list(pool.map(bomb, range(6)))
            goods = [_post(f"{url}/predict", SMALL) for _ in range(6)]  # sent while the bombs decode
        statuses = sorted(status for status, _, _ in bombs)
        assert set(statuses) <= {200, 503} and 200 in statuses and 503 in statuses, statuses
        for status, body, headers in bombs:
            if status == 503:
                assert headers.get("Retry-After") == "1"
                assert "max_decoded_bytes" in body["error"] and "4000x4000" in body["error"]
        assert [status for status, _, _ in goods] == [200] * 6
        budget = app.state.decode_budget
        assert BOMB_BYTES <= budget.peak <= limit and budget.in_use == 0
        status, _, headers = _post(f"{url}/predict", BOMB)  # retried once the others are done: answered
        assert status == 200


def test_an_image_larger_than_the_whole_budget_is_413_before_decoding():
    with _server(ServerConfig(max_decoded_bytes=10_000_000, warm_up=False)) as (url, app):
        started = time.monotonic()
        status, body, _ = _post(f"{url}/predict", _png((2000, 2000)))  # 12,000,000 bytes decoded
        assert status == 413 and "2000x2000" in body["error"] and "max_decoded_bytes" in body["error"]
        assert time.monotonic() - started < 2.0
        assert app.state.decode_budget.peak == 0  # nothing was reserved, nothing decoded
        assert _post(f"{url}/predict", SMALL)[0] == 200
        # a header that does not read reserves nothing and is named by the decoder, as before
        status, body, _ = _post(f"{url}/predict", b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
        assert status == 400 and "image" in body["error"]


def _slow_upload(url: str, stop: threading.Event, seconds: float = 1.5) -> socket.socket:
    """A connection that sends a /predict request's headers, then its body a byte every 100 ms (for ``seconds``)."""
    client = open_upload(url, 100000, timeout=10)
    started = time.monotonic()

    def drip():  # stopped before the server cuts it off, so that the 408 is not lost to a reset connection
        with contextlib.suppress(OSError):
            while not stop.wait(0.1) and time.monotonic() - started < seconds:
                client.send(b"x")

    threading.Thread(target=drip, daemon=True).start()
    return client


def test_slow_bodies_hold_no_prediction_slot_and_are_cut_off_at_the_minimum_rate():
    # 8 clients dripping bodies against 2 slots: before, they held both slots for the whole 30-s read timeout
    # and every good request got 503
    with _server(ServerConfig(max_concurrent=2, warm_up=False)) as (url, app):
        stop = threading.Event()
        started = time.monotonic()
        slow = [_slow_upload(url, stop) for _ in range(8)]
        try:
            time.sleep(0.5)  # every slow request is in, reading its body
            goods = [_post(f"{url}/predict", SMALL) for _ in range(6)]
            assert [status for status, _, _ in goods] == [200] * 6
            answers = [read_until_closed(client) for client in slow]
        finally:
            stop.set()
            for client in slow:
                client.close()
        elapsed = time.monotonic() - started
        for status, body in answers:
            assert status == 408 and "min_body_rate" in body["error"]
        assert elapsed < 8.0  # cut off after the 2-s grace, not after read_timeout's 30 s
        assert app.state.in_progress == 0
        assert _post(f"{url}/predict", SMALL)[0] == 200


def test_the_minimum_rate_can_be_turned_off_leaving_the_read_timeout():
    with pytest.raises(resnets.errors.UsageError, match="min_body_rate"):
        ServerConfig(min_body_rate=-1)
    with _server(ServerConfig(min_body_rate=0, read_timeout=1.0, warm_up=False)) as (url, _):
        stop = threading.Event()
        # the drip ends before the 1-s timeout: bytes still arriving as the server closes would reset the
        # connection (the kernel answers unread data with RST) and lose the 408 on its way
        client = _slow_upload(url, stop, seconds=0.6)
        try:
            started = time.monotonic()
            status, body = read_until_closed(client)
        finally:
            stop.set()
            client.close()
        assert status == 408 and "read_timeout" in body["error"] and time.monotonic() - started < 3.0


def _damaged() -> torch.nn.Module:
    """A resnet20 whose weights are all finite but compute NaN: a negative BatchNorm variance."""
    model = resnets.create_model("resnet20").eval()
    with torch.no_grad():
        model.bn1.running_var.fill_(-1.0)
    return model


def test_weights_that_compute_nan_are_refused_before_serving_and_answered_as_the_servers_fault():
    session = InferenceSession(_damaged(), backend="torch")
    raised = []

    def run():  # in a thread: a server that does start would otherwise hold the test until killed
        try:
            serve(session, ServerConfig(port=0, warm_up=False))
        except ResnetsError as error:
            raised.append(error)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout=30)
    assert not thread.is_alive(), "served weights that compute NaN"
    assert len(raised) == 1 and "compute NaN" in str(raised[0]) and "damaged" in str(raised[0])
    with _server(ServerConfig(warm_up=False), model=_damaged()) as (url, _):
        status, body, _ = _post(f"{url}/predict", SMALL)
        assert status == 500 and "compute NaN" in body["error"]  # not a "probability": NaN
