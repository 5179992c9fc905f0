"""Fetch a file, verify its md5 and write it atomically: a failed or wrong download leaves nothing behind."""

from __future__ import annotations

import hashlib
import urllib.request
from pathlib import Path
from typing import Optional, Union

from ..errors import MissingFileError, ResnetsError, UsageError
from .._io import atomic_path
from .sources import default_cache_dir

# the official archives (https://www.cs.toronto.edu/~kriz/cifar.html) and their published md5 sums
CIFAR_ARCHIVES = {
    "cifar10": ("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a"),
    "cifar100": ("https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz", "eb9058c3a382ffc7106e4002c42a8d85"),
}


class DownloadError(ResnetsError, RuntimeError):
    pass


def file_md5(path: Union[str, Path], chunk: int = 1 << 20) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def download(url: str, md5: str, directory: Union[str, Path], filename: Optional[str] = None,
             timeout: float = 60.0) -> Path:
    """Download ``url`` into ``directory`` unless a file with the right md5 is already there.

    The bytes go to a temporary file in the same directory, are checked against ``md5``, and
    only then renamed into place; on a wrong checksum or any error the temporary file is removed.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / (filename or url.rstrip("/").rsplit("/", 1)[-1])
    if path.is_file() and file_md5(path) == md5:
        return path
    try:
        with atomic_path(path) as tmp:
            digest = hashlib.md5()
            with open(tmp, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as response:
                while block := response.read(1 << 20):
                    digest.update(block)
                    out.write(block)
            if digest.hexdigest() != md5:
                raise DownloadError(f"{url}: md5 {digest.hexdigest()} does not match the expected {md5}; "
                                    f"nothing written")
    except OSError as error:  # unreachable host, HTTP error, timeout, disk full
        raise DownloadError(f"{url}: download failed ({error})") from error
    return path


fetch = download  # the name ``download`` is also cifar_archive's flag


def cifar_archive(name: str, cache_dir: Optional[Union[str, Path]] = None, download: bool = False) -> Path:
    """The official ``cifar10`` / ``cifar100`` python archive from ``<cache_dir>/datasets``."""
    if name not in CIFAR_ARCHIVES:
        raise UsageError(f"unknown archive {name!r}; expected one of {sorted(CIFAR_ARCHIVES)}")
    url, md5 = CIFAR_ARCHIVES[name]
    directory = Path(cache_dir or default_cache_dir()) / "datasets"
    path = directory / url.rsplit("/", 1)[-1]
    if path.is_file():
        return path
    if not download:
        raise MissingFileError(f"{name}: {path} not found; pass download=True (--download) to fetch {url}, "
                                "or give the path of the archive")
    return fetch(url, md5, directory)
