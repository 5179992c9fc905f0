"""The one downloader: URLs to verified files in the cache, never half-written.

A file is fetched into a temporary file beside its cache entry and moved into place only
after a complete read (the length the server announced, when it announced one) and a
matching hash (sha256 or md5, when known); the whole transfer is bounded in time and in
size, and a transfer that stalls (less than STALL_BYTES in STALL_TIMEOUT_S, a silent server
or one dripping a byte a second) is given up long before the total limit. Cache entries are
keyed by the URL, so two URLs ending in one file name never share an entry.
``offline=True`` (or ``RESNETS_OFFLINE=1``) never touches the network.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Optional, Union

from ._io import atomic_path, file_digest
from .errors import MissingFileError, ResnetsError, UsageError, check_number

# torchvision's and timm's URLs end in NAME-<8+ hex digits of the sha256>.EXT
_HASH_IN_NAME = re.compile(r"-([a-f0-9]{8,64})\.")
DEFAULT_TIMEOUT_S = 600.0  # the whole transfer, not one read
DEFAULT_MAX_BYTES = 4 << 30  # no checkpoint or archive we read is near 4 GiB
# a transfer that receives less than STALL_BYTES in any STALL_TIMEOUT_S (nothing at all, or a drip) has stalled;
# both read when fetch is called, so that setting them here changes every download (fetch(stall_timeout=) one)
STALL_TIMEOUT_S = 30.0
STALL_BYTES = 16 << 10


class DownloadError(ResnetsError, RuntimeError):
    """A download that failed, was cut short, was too large or too slow, or did not match its hash."""


def offline_from_env() -> bool:
    return os.environ.get("RESNETS_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def expected_sha256(url: str, sha256: Optional[str] = None) -> Optional[str]:
    """``sha256`` (full or a prefix of 8+ hex digits), else the hash prefix in the URL's file name."""
    if sha256:
        sha256 = sha256.lower()
        if not re.fullmatch(r"[0-9a-f]{8,64}", sha256):
            raise UsageError(f"sha256 must be 8 to 64 hex digits, got {sha256!r}")
        return sha256
    match = _HASH_IN_NAME.search(url_file_name(url))
    return match.group(1) if match else None


def url_file_name(url: str) -> str:
    name = Path(urllib.parse.urlparse(url).path).name
    if not name:
        raise UsageError(f"cannot derive a file name from the URL {url!r}")
    return name


def cache_entry(url: str, directory: Union[str, Path]) -> Path:
    """Where ``url`` is cached under ``directory``: a folder named by the URL's hash, holding the
    file under its own name (so the name stays readable and two URLs never collide)."""
    key = hashlib.sha256(url.encode()).hexdigest()[:16]
    return Path(directory).expanduser() / key / url_file_name(url)


def check_digest(path: Path, sha256: Optional[str] = None, md5: Optional[str] = None) -> tuple[bool, str]:
    """Whether ``path`` has the sha256 (full or a prefix) or md5 given, and if not, why."""
    if sha256:
        actual = file_digest(path, "sha256")
        return actual.startswith(sha256), f"sha256 {actual} does not match the expected {sha256}" + \
            ("..." if len(sha256) < 64 else "")
    if md5:
        actual = file_digest(path, "md5")
        return actual == md5, f"md5 {actual} does not match the expected {md5}"
    return True, ""


def fetch(url: str, target: Union[str, Path], *, sha256: Optional[str] = None, md5: Optional[str] = None,
          offline: Optional[bool] = None, progress: bool = True, timeout: float = DEFAULT_TIMEOUT_S,
          max_bytes: int = DEFAULT_MAX_BYTES, stall_timeout: Optional[float] = None) -> Path:
    """``target``, downloaded from ``url`` unless a verified copy is already there.

    ``sha256`` defaults to the hash prefix in the URL's file name. A cached file that fails its
    hash is fetched again (or refused offline). ``timeout`` bounds the whole transfer;
    ``stall_timeout`` (default STALL_TIMEOUT_S) gives up a transfer that receives less than
    STALL_BYTES in that many seconds.
    """
    stall_timeout = check_number("stall_timeout", STALL_TIMEOUT_S if stall_timeout is None else stall_timeout, 0,
                                 low_open=True, integer=False)  # 0 would make the socket non-blocking
    target = Path(target)
    sha256 = expected_sha256(url, sha256)
    offline = offline_from_env() if offline is None else offline
    if target.is_file():
        ok, why = check_digest(target, sha256, md5)
        if ok:
            return target
        if offline:
            raise DownloadError(f"{url}: the cached {target} is damaged ({why}); delete it and download again")
    elif offline:
        raise MissingFileError(f"offline mode: {url} is not in the cache ({target}); download it on a machine with "
                               f"network access, or pass the file's path instead of the URL")
    started = time.monotonic()
    deadline = started + timeout
    try:
        with atomic_path(target) as tmp:
            # the socket's timeout is the longest wait for one read: a silent server stalls out in stall_timeout
            with open(tmp, "wb") as out, urllib.request.urlopen(url, timeout=min(timeout, stall_timeout)) as response:
                announced = response.headers.get("Content-Length")
                total = int(announced) if announced and announced.isdigit() else None
                if total is not None and total > max_bytes:
                    raise DownloadError(f"{url}: {total} bytes is over the limit of {max_bytes}; nothing written")
                bar = _progress_bar(total, target.name, enabled=progress)
                window_start, window_bytes = started, 0  # what arrived since the stall check last passed
                try:
                    while chunk := _read_some(response, url, stall_timeout):  # a drip cannot stall the checks
                        out.write(chunk)
                        bar.update(len(chunk))
                        if out.tell() > max_bytes:
                            raise DownloadError(f"{url}: more than {max_bytes} bytes; nothing written")
                        now = time.monotonic()
                        if now > deadline:
                            raise DownloadError(f"{url}: not complete after {timeout:g} s; nothing written")
                        window_bytes += len(chunk)
                        if now - window_start >= stall_timeout:
                            if window_bytes < STALL_BYTES:
                                raise DownloadError(
                                    f"{url}: stalled, {window_bytes} bytes in the last {now - window_start:.0f} s "
                                    f"(less than {STALL_BYTES} in {stall_timeout:g} s); nothing written; try again "
                                    f"later, or download it elsewhere and give the file's path instead")
                            window_start, window_bytes = now, 0
                finally:
                    bar.close()
                if total is not None and out.tell() != total:
                    raise DownloadError(f"{url}: download incomplete ({out.tell()} of {total} bytes); nothing written")
            ok, why = check_digest(tmp, sha256, md5)
            if not ok:
                raise DownloadError(f"{url}: {why}; nothing written")
    except (urllib.error.URLError, ConnectionError, TimeoutError, http.client.HTTPException) as error:
        # unreachable host, HTTP error, timeout, connection or body cut short; a local failure
        # (disk full, permissions) is not a download failure and keeps its own error
        raise DownloadError(f"{url}: download failed ({error}); where this machine cannot reach it, download it on "
                            f"one that can and give the file's path instead") from None
    return target


def _read_some(response, url: str, stall_timeout: float) -> bytes:
    """What has arrived of ``response`` (up to 64 KiB), or the DownloadError of a server silent for the socket's
    timeout (``stall_timeout``)."""
    try:
        return response.read1(1 << 16)
    except TimeoutError:
        raise DownloadError(f"{url}: stalled, nothing received for {stall_timeout:g} s; nothing written; try again "
                            f"later, or download it elsewhere and give the file's path instead") from None


def _progress_bar(total: Optional[int], name: str, *, enabled: bool):
    from tqdm import tqdm  # deferred: only a download pays for the progress bar

    return tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=name, file=sys.stderr,
                disable=not enabled, leave=False)


__all__ = ["DownloadError", "cache_entry", "check_digest", "expected_sha256", "fetch", "offline_from_env",
           "url_file_name"]
