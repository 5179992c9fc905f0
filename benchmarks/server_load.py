"""Load test of ``resnets serve`` on loopback: concurrent clients, bounded in count and time.

Starts the real command (uvicorn) on 127.0.0.1, sends real Imagenette JPEGs from several
client threads (raw bodies and multipart forms), mixes in bad requests (non-image bytes,
truncated JPEGs, a wrong content type, an oversized body) and reports throughput, p50/p99
latency of the good requests, failures, and the batch sizes the server formed.

With ``--bombs N`` and ``--slow-bodies N`` the good load is sent twice: alone (the baseline), then with
attackers mixed in: N clients posting, again and again, a 186 KB PNG of 7999x8000 pixels (legal, 192 MB
decoded), and N connections sending a body at one byte a second (reconnecting when cut off). Each phase
prints the good requests' success rate and the server's resident memory before, at its peak, after, and
a few seconds later.

    python benchmarks/server_load.py --model resnet18 --clients 16 --requests 400 --max-seconds 120
    python benchmarks/server_load.py --model resnet18 --clients 4 --requests 150 --bombs 8 --slow-bodies 64
    python benchmarks/server_load.py --model resnet18 --weights imagenette --precision auto \
        --calibration ../shared/datasets/imagenette-224-train.zip
"""

from __future__ import annotations

import argparse
import contextlib
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
        try:
            return error.code, json.loads(error.read() or b"{}")
        except ValueError:  # a plain-text 500 ("Internal Server Error")
            return error.code, {}


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


def server_rss(pid: int) -> int:
    """The server process's resident memory in bytes (Linux /proc)."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def bomb_png() -> bytes:
    """A PNG of 7999x8000 pixels (under the 64-megapixel limit) of about 190 KB: 192 MB once decoded."""
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (7999, 8000), (90, 160, 30)).save(buffer, format="PNG")
    return buffer.getvalue()


class Attackers:
    """Decoding bombs and slow bodies against ``url`` until stopped; what the server answered them."""

    def __init__(self, url: str, bombs: int, slow_bodies: int, bomb: bytes):
        self.url, self.bomb = url, bomb
        self.stop = threading.Event()
        self.bomb_answers: Counter = Counter()
        self.slow_cut_off = 0  # times the server ended a slow body
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._bomb, daemon=True) for _ in range(bombs)]
        self.threads += [threading.Thread(target=self._slow_body, daemon=True) for _ in range(slow_bodies)]

    def __enter__(self):
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=30)

    def _bomb(self) -> None:
        while not self.stop.is_set():
            try:
                status, _ = post(f"{self.url}/predict", self.bomb, "image/png", timeout=120)
            except (urllib.error.URLError, ConnectionError, OSError):
                status = -1
            with self.lock:
                self.bomb_answers[status] += 1
            if status == 503:
                self.stop.wait(1.0)  # as Retry-After asks

    def _slow_body(self) -> None:
        host, port = self.url.rsplit("/", 1)[-1].split(":")
        while not self.stop.is_set():
            try:
                with socket.create_connection((host, int(port)), timeout=5) as client:
                    client.sendall(f"POST /predict HTTP/1.1\r\nHost: {host}\r\nContent-Type: image/png\r\n"
                                   "Content-Length: 100000\r\n\r\n".encode())
                    while not self.stop.wait(1.0):
                        client.sendall(b"x")  # a byte a second, until the server closes the connection
            except OSError:
                with self.lock:
                    self.slow_cut_off += 1
                self.stop.wait(0.2)


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
    parser.add_argument("--bombs", type=int, default=0, help="clients posting 7999x8000 PNGs during the attack phase")
    parser.add_argument("--slow-bodies", type=int, default=0, help="connections sending a body at 1 byte/s")
    parser.add_argument("--settle-seconds", type=float, default=10.0,
                        help="wait after the attack phase before the last memory reading")
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

            attacked = bool(args.bombs or args.slow_bodies)
            bomb = bomb_png() if args.bombs else b""
            phases = []
            for phase in (["baseline", "under attack"] if attacked else ["load"]):
                rss = {"before": server_rss(server.pid)}
                peak = [rss["before"]]
                sampling = threading.Event()

                def sample():
                    while not sampling.wait(0.1):
                        peak[0] = max(peak[0], server_rss(server.pid))

                sampler = threading.Thread(target=sample, daemon=True)
                sampler.start()
                attack = Attackers(url, args.bombs, args.slow_bodies, bomb) if phase == "under attack" else None
                with attack or contextlib.nullcontext():
                    if attack is not None:
                        time.sleep(3.0)  # the slow bodies connected, the first bombs decoding
                    results, wall = send_all(url, requests, args.clients, args.max_seconds)
                rss["after"] = server_rss(server.pid)
                time.sleep(args.settle_seconds if phase != "baseline" else 0.0)
                rss["settled"] = server_rss(server.pid)
                sampling.set()
                sampler.join()
                rss["peak"] = peak[0]
                phases.append((phase, results, wall, rss, attack))
            with urllib.request.urlopen(f"{url}/health", timeout=5) as response:
                alive_after = response.status == 200
        finally:
            server.terminate()
            server.wait(timeout=30)
            log.close()

    print(f"# resnets serve {args.model} (weights {args.weights or 'random'}, backend {health['backend']}, "
          f"precision {health.get('precision')}, asked {args.precision}{', compiled' if args.compile else ''}), "
          f"{args.clients} clients, {len(requests)} requests a phase, {time.strftime('%Y-%m-%d %H:%M')}, "
          f"load average {os.getloadavg()[0]:.1f}")
    failed = 0
    for phase, results, wall, rss, attack in phases:
        good = [r for r in results if r[0] == "good"]
        bad = [r for r in results if r[0] != "good"]
        good_ok = [r for r in good if r[1] == 200]
        latencies = sorted(r[2] * 1000 for r in good_ok) or [float("nan")]
        bad_4xx = [r for r in bad if 400 <= r[1] < 500]
        print(f"## {phase}: {len(results)} of {len(requests)} requests sent in {wall:.1f} s")
        if attack is not None:
            print(f"attackers: {args.bombs} clients posting 7999x8000 PNGs ({len(attack.bomb)} bytes each; answers "
                  f"{dict(sorted(attack.bomb_answers.items()))}), {args.slow_bodies} connections sending 1 byte/s "
                  f"(cut off {attack.slow_cut_off} times)")
        print(f"good requests: {len(good_ok)}/{len(good)} succeeded ({100 * len(good_ok) / max(len(good), 1):.1f}%), "
              f"{len(good_ok) / wall:.1f} images/s, latency p50 {statistics.median(latencies):.0f} ms, "
              f"p99 {latencies[int(0.99 * (len(latencies) - 1))]:.0f} ms; answers "
              f"{dict(sorted(Counter(r[1] for r in good).items()))}")
        by_kind = Counter(f"{r[0][len('bad:'):]} -> {r[1]}" for r in bad)
        kinds = ", ".join(f"{k}: {n}" for k, n in sorted(by_kind.items()))
        print(f"bad requests: {len(bad_4xx)}/{len(bad)} answered 4xx ({kinds})")
        print(f"server RSS: before {rss['before'] / 2**20:.0f} MiB, peak {rss['peak'] / 2**20:.0f} MiB, after "
              f"{rss['after'] / 2**20:.0f} MiB, {args.settle_seconds if phase != 'baseline' else 0:g} s later "
              f"{rss['settled'] / 2**20:.0f} MiB")
        sizes = Counter(r[3] for r in good_ok)
        print(f"batch sizes formed by the server: {dict(sorted(sizes.items()))}")
        failed += len(good) - len(good_ok) + len(bad) - len(bad_4xx)
    print(f"server healthy afterwards: {alive_after}")
    return 0 if failed == 0 and alive_after else 1


def send_all(url: str, requests: list, clients: int, max_seconds: float) -> tuple[list, float]:
    """Every request from ``clients`` threads (stopping after ``max_seconds``): (kind, status, seconds,
    batch size) of each, and the wall time."""
    results: list[tuple[str, int, float, int]] = []
    lock = threading.Lock()
    stop_at = time.monotonic() + max_seconds

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
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(send, requests))
    return results, time.perf_counter() - started


if __name__ == "__main__":
    sys.exit(main())
