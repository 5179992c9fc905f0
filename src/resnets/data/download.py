"""The official CIFAR archives, fetched into ``datasets/`` of the cache root and md5-checked."""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Union

from .._io import cache_root
from ..download import fetch
from ..errors import MissingFileError, UsageError

# the official archives (https://www.cs.toronto.edu/~kriz/cifar.html) and their published md5 sums
CIFAR_ARCHIVES = {
    "cifar10": ("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a"),
    "cifar100": ("https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz", "eb9058c3a382ffc7106e4002c42a8d85"),
}


def cifar_archive(name: str, cache_dir: Optional[Union[str, Path]] = None, download: bool = False) -> Path:
    """The official ``cifar10`` / ``cifar100`` python archive from ``<cache_dir>/datasets``."""
    if name not in CIFAR_ARCHIVES:
        raise UsageError(f"unknown archive {name!r}; expected one of {sorted(CIFAR_ARCHIVES)}")
    url, md5 = CIFAR_ARCHIVES[name]
    path = Path(cache_dir or cache_root()) / "datasets" / url.rsplit("/", 1)[-1]
    if path.is_file():
        return path
    if not download:
        raise MissingFileError(f"{name}: {path} not found; fetch {url} there (Python: resolve_source({name!r}, "
                               "download=True)), or give the archive's path as the data source")
    return fetch(url, path, md5=md5)
