"""The md5-verified, atomic download helper, against a loopback HTTP server."""

import hashlib
import http.server
import threading
from functools import partial

import numpy as np
import pytest

from data_helpers import write_cifar
from resnets.data import DownloadError, cifar_archive, download, resolve_source


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

    path = download(f"{base}/{archive.name}", md5, cache)
    assert path == cache / archive.name and path.read_bytes() == archive.read_bytes()
    assert len(requests) == 1
    assert download(f"{base}/{archive.name}", md5, cache) == path
    assert len(requests) == 1  # a verified file is not fetched again
    source = resolve_source(path)  # and it is a CIFAR archive like the official one
    assert np.array_equal(source.targets, expected["train"][1])

    other = tmp_path / "other"
    with pytest.raises(DownloadError, match="md5"):
        download(f"{base}/{archive.name}", "0" * 32, other)
    assert list(other.iterdir()) == []  # nothing left behind, not even a partial file

    with pytest.raises(DownloadError, match="missing.tar.gz"):
        download(f"{base}/missing.tar.gz", md5, other)
    assert list(other.iterdir()) == []

    # a corrupted file in place is replaced by a verified one
    path.write_bytes(b"corrupt")
    assert download(f"{base}/{archive.name}", md5, cache).read_bytes() == archive.read_bytes()


def test_cifar_archive_without_download_says_how(tmp_path):
    with pytest.raises(FileNotFoundError, match="download=True"):
        cifar_archive("cifar10", cache_dir=tmp_path)
    with pytest.raises(FileNotFoundError, match="download=True"):
        resolve_source("cifar100", cache_dir=tmp_path)
    archive, _ = write_cifar(tmp_path / "src")
    (tmp_path / "datasets").mkdir()
    archive.rename(tmp_path / "datasets" / "cifar-10-python.tar.gz")
    assert len(resolve_source("cifar10", cache_dir=tmp_path)) == 100
