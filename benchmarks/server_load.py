"""Load test of ``resnets serve`` on loopback: concurrent clients, bounded in count and time.

Starts the real command (uvicorn) on 127.0.0.1, sends real Imagenette JPEGs from several
client threads (raw bodies and multipart forms), mixes in bad requests (non-image bytes,
truncated JPEGs, a wrong content type, an oversized body) and reports throughput, p50/p99
latency of the good requests, failures, and the batch sizes the server formed.

    python benchmarks/server_load.py --model resnet18 --clients 16 --requests 400 --max-seconds 120
    python benchmarks/server_load.py --model resnet18 --weights imagenette --precision auto \
        --calibration ../shared/datasets/imagenette-224-train.zip
"""

from __future__ import annotations

import argparse
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
import zipfile
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_IMAGES = ROOT.parent / "shared" / "datasets" / "imagenette-224-train.zip"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def post(url: str, body: bytes, content_type: str, timeout: float = 60.0) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


def multipart(data: bytes) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"image.jpg\"\r\n"
            "Content-Type: image/jpeg\r\n\r\n").encode()
    return head + data + f"\r\n--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def build_requests(images: list[bytes], count: int, bad_every: int, max_body: int) -> list[tuple[str, bytes, str]]:
    """(kind, body, content type) for each request; kind "good" or "bad:<what>"."""
    bad = [("bad:not-an-image", b"definitely not a picture", "image/jpeg"),
           ("bad:truncated", images[0][: len(images[0]) // 3], "image/jpeg"),
           ("bad:content-type", images[0], "text/plain"),
           ("bad:oversized", b"\xff" * (max_body + 1), "application/octet-stream")]
    requests = []
    for i in range(count):
        if bad_every and i % bad_every == bad_every - 1:
            requests.append(bad[(i // bad_every) % len(bad)])
        elif i % 2:
            requests.append(("good", *multipart(images[i % len(images)])))
        else:
            requests.append(("good", images[i % len(images)], "image/jpeg"))
    return requests


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--weights", help="named or file weights for the server (default: random ones, saved to a "
                                          "file)")
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--compile", action="store_true", help="pass --compile to the server")
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--calibration", help="--calibration DATA for the server (int8, auto)")
    parser.add_argument("--calibration-count", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--max-seconds", type=float, default=120.0, help="stop sending after this long")
    parser.add_argument("--bad-every", type=int, default=10, help="every n-th request is a bad one (0: none)")
    parser.add_argument("--max-body-bytes", type=int, default=2 * 1024 * 1024)
    parser.add_argument("--images", type=Path, default=DEFAULT_IMAGES)
    args = parser.parse_args(argv)
    if not args.images.is_file():
        print(f"real images not found: {args.images}", file=sys.stderr)
        return 2

    with zipfile.ZipFile(args.images) as archive:
        names = sorted(n for n in archive.namelist() if n.lower().endswith((".jpeg", ".jpg")))
        random.Random(0).shuffle(names)
        images = [archive.read(n) for n in names[:64]]
    requests = build_requests(images, args.requests, args.bad_every, args.max_body_bytes)

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory() as tmp:
        # a real checkpoint file on the command line, as a user would run it
        import resnets

        weights = args.weights
        if weights is None:
            weights = Path(tmp) / f"{args.model}.safetensors"
            resnets.save_weights(resnets.create_model(args.model), weights)
        command = [sys.executable, "-m", "resnets", "serve", args.model, "--weights", str(weights), "--host",
                   "127.0.0.1", "--port", str(port), "--backend", args.backend, "--precision", args.precision,
                   "--max-body-bytes", str(args.max_body_bytes)]
        if args.compile:
            command.append("--compile")
        if args.calibration:
            command += ["--calibration", args.calibration, "--calibration-count", str(args.calibration_count)]
        log = open(Path(tmp) / "server.log", "w+")
        server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ))
        try:
            # start-up: the backend choice, and for int8 / auto quantising and checking each candidate
            deadline = time.monotonic() + (180 if args.precision == "fp32" else 900)
            while True:
                try:
                    with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                        health = json.loads(response.read())
                        break
                except (urllib.error.URLError, ConnectionError, OSError):
                    if server.poll() is not None or time.monotonic() > deadline:
                        log.seek(0)
                        print(f"server did not start:\n{log.read()}", file=sys.stderr)
                        return 1
                    time.sleep(0.5)

            results: list[tuple[str, int, float, int]] = []
            lock = threading.Lock()
            stop_at = time.monotonic() + args.max_seconds

            def send(item):
                kind, body, content_type = item
                if time.monotonic() > stop_at:
                    return
                start = time.perf_counter()
                try:
                    status, payload = post(f"{url}/predict", body, content_type)
                except (urllib.error.URLError, ConnectionError, OSError):
                    status, payload = -1, {}
                elapsed = time.perf_counter() - start
                with lock:
                    results.append((kind, status, elapsed, payload.get("batch_size", 0)))

            started = time.perf_counter()
            with ThreadPoolExecutor(args.clients) as pool:
                list(pool.map(send, requests))
            wall = time.perf_counter() - started
            with urllib.request.urlopen(f"{url}/health", timeout=5) as response:
                alive_after = response.status == 200
        finally:
            server.terminate()
            server.wait(timeout=30)
            log.close()

    good = [r for r in results if r[0] == "good"]
    bad = [r for r in results if r[0] != "good"]
    good_ok = [r for r in good if r[1] == 200]
    latencies = sorted(r[2] * 1000 for r in good_ok)
    bad_4xx = [r for r in bad if 400 <= r[1] < 500]
    print(f"# resnets serve {args.model} (weights {args.weights or 'random'}, backend {health['backend']}, "
          f"precision {health.get('precision')}, asked {args.precision}{', compiled' if args.compile else ''}), "
          f"{args.clients} clients, "
          f"{len(results)} of {len(requests)} requests sent in {wall:.1f} s, {time.strftime('%Y-%m-%d')}")
    print(f"good requests: {len(good_ok)}/{len(good)} succeeded, {len(good_ok) / wall:.1f} images/s, "
          f"latency p50 {statistics.median(latencies):.0f} ms, "
          f"p99 {latencies[int(0.99 * (len(latencies) - 1))]:.0f} ms")
    by_kind = Counter(f"{r[0][len('bad:'):]} -> {r[1]}" for r in bad)
    kinds = ", ".join(f"{k}: {n}" for k, n in sorted(by_kind.items()))
    print(f"bad requests: {len(bad_4xx)}/{len(bad)} answered 4xx ({kinds})")
    sizes = Counter(r[3] for r in good_ok)
    print(f"batch sizes formed by the server: {dict(sorted(sizes.items()))}; server healthy afterwards: {alive_after}")
    failed = len(good) - len(good_ok) + len(bad) - len(bad_4xx)
    return 0 if failed == 0 and alive_after else 1


if __name__ == "__main__":
    sys.exit(main())
