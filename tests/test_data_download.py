"""The one downloader (md5/sha256-verified, atomic, bounded, keyed by URL), against a loopback HTTP server."""

import hashlib
import http.server
import threading
from functools import partial

import numpy as np
import pytest

from data_helpers import write_cifar
from resnets.data import cifar_archive, resolve_source
from resnets.download import DownloadError, cache_entry, fetch


@pytest.fixture
def server(tmp_path):
    """Serves tmp_path/www on 127.0.0.1; yields (base url, list of requested paths)."""
    www = tmp_path / "www"
    www.mkdir()
    requests = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            requests.append(self.path)
            super().do_GET()

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(Handler, directory=str(www)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", www, requests
    httpd.shutdown()
    httpd.server_close()


def test_download_verifies_md5_and_is_atomic(server, tmp_path):
    base, www, requests = server
    archive, expected = write_cifar(tmp_path / "src")
    (www / archive.name).write_bytes(archive.read_bytes())
    md5 = hashlib.md5(archive.read_bytes()).hexdigest()
    cache = tmp_path / "cache"

    path = fetch(f"{base}/{archive.name}", cache / archive.name, md5=md5)
    assert path == cache / archive.name and path.read_bytes() == archive.read_bytes()
    assert len(requests) == 1
    assert fetch(f"{base}/{archive.name}", cache / archive.name, md5=md5) == path
    assert len(requests) == 1  # a verified file is not fetched again
    source = resolve_source(path)  # and it is a CIFAR archive like the official one
    assert np.array_equal(source.targets, expected["train"][1])

    other = tmp_path / "other"
    with pytest.raises(DownloadError, match="md5"):
        fetch(f"{base}/{archive.name}", other / archive.name, md5="0" * 32)
    assert list(other.iterdir()) == []  # nothing left behind, not even a partial file

    with pytest.raises(DownloadError, match="missing.tar.gz"):
        fetch(f"{base}/missing.tar.gz", other / "missing.tar.gz", md5=md5)
    assert list(other.iterdir()) == []

    # a corrupted file in place is replaced by a verified one
    path.write_bytes(b"corrupt")
    assert fetch(f"{base}/{archive.name}", cache / archive.name, md5=md5).read_bytes() == archive.read_bytes()


def test_cifar_archive_without_download_says_how(tmp_path):
    with pytest.raises(FileNotFoundError, match="download=True"):
        cifar_archive("cifar10", cache_dir=tmp_path)
    with pytest.raises(FileNotFoundError, match="download=True"):
        resolve_source("cifar100", cache_dir=tmp_path)
    archive, _ = write_cifar(tmp_path / "src")
    (tmp_path / "datasets").mkdir()
    archive.rename(tmp_path / "datasets" / "cifar-10-python.tar.gz")
    assert len(resolve_source("cifar10", cache_dir=tmp_path)) == 100


@pytest.fixture
def odd_server():
    """A server whose answers misbehave on purpose: /short announces 1000 bytes and sends 10,
    /big sends 300 kB, /drip sends a byte every 0.2 s, /a/w.bin and /b/w.bin differ."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            import time

            bodies = {"/a/w.bin": b"first", "/b/w.bin": b"second", "/big": b"x" * 300_000}
            if self.path in bodies:
                body = bodies[self.path]
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            elif self.path == "/short":
                self.send_response(200)
                self.send_header("Content-Length", "1000")
                self.end_headers()
                self.wfile.write(b"0123456789")
                self.wfile.flush()
                self.close_connection = True
            elif self.path == "/drip":
                self.send_response(200)
                self.end_headers()
                try:
                    for _ in range(500):
                        self.wfile.write(b"x")
                        self.wfile.flush()
                        time.sleep(0.2)
                except (BrokenPipeError, ConnectionResetError):
                    pass
            else:
                self.send_error(404)

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_cache_is_keyed_by_url_not_file_name(odd_server, tmp_path):
    first = fetch(f"{odd_server}/a/w.bin", cache_entry(f"{odd_server}/a/w.bin", tmp_path), progress=False)
    second = fetch(f"{odd_server}/b/w.bin", cache_entry(f"{odd_server}/b/w.bin", tmp_path), progress=False)
    assert first != second and first.name == second.name == "w.bin"
    assert first.read_bytes() == b"first" and second.read_bytes() == b"second"


def test_cut_short_too_large_and_too_slow_are_refused_and_nothing_is_cached(odd_server, tmp_path):
    with pytest.raises(DownloadError, match="download"):
        fetch(f"{odd_server}/short", tmp_path / "short", progress=False)
    with pytest.raises(DownloadError, match="over the limit of 100000"):
        fetch(f"{odd_server}/big", tmp_path / "big", progress=False, max_bytes=100_000)
    with pytest.raises(DownloadError, match="not complete after 1 s"):
        fetch(f"{odd_server}/drip", tmp_path / "drip", progress=False, timeout=1.0)
    assert list(tmp_path.iterdir()) == []  # no entry, no temporary file
