"""Files of Hugging Face Hub repositories, through huggingface_hub's own cache.

``hf_hub_download`` writes and reads that cache (``HF_HUB_CACHE``, by default ``~/.cache/huggingface/hub``;
``HF_ENDPOINT`` and ``HF_TOKEN`` as huggingface_hub reads them), so a file that timm, ``hf download`` or
``snapshot_download`` fetched is found and not fetched again. Repositories (``hf-hub:ORG/NAME``, see ``hub``)
and named weights published on the Hub (timm's) both come through here. Offline (``HF_HUB_OFFLINE``,
``RESNETS_OFFLINE``, or a Hub address that does not resolve) only the cache is read, and a file missing from
it is one line saying how to get it.
"""

from __future__ import annotations

import os
import re
import socket
import urllib.parse
from pathlib import Path
from typing import Optional

from ..download import offline_from_env
from ..errors import MissingFileError, missing_dependency

# a file's address on the Hub, as timm's weights are published: https://huggingface.co/ORG/NAME/resolve/REV/FILE
_HUB_URL = re.compile(r"https://huggingface\.co/([A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*)/resolve/([^/]+)/(.+)")


def huggingface_hub():
    """The huggingface_hub module (the optional ``hub`` extra), or the one-line error naming the extra."""
    try:
        import huggingface_hub  # deferred: the optional 'hub' extra
        import huggingface_hub.constants  # loaded on first use otherwise
        import huggingface_hub.errors
    except ImportError as error:
        raise (missing_dependency(error) or error) from None
    return huggingface_hub


def has_huggingface_hub() -> bool:
    try:
        huggingface_hub()
    except Exception:  # noqa: BLE001 - missing, or broken: either way not there to use
        return False
    return True


def hub_url_parts(url: str) -> Optional[tuple[str, str, str]]:
    """``https://huggingface.co/ORG/NAME/resolve/REV/FILE`` -> (``ORG/NAME``, REV, FILE); None for other URLs."""
    match = _HUB_URL.fullmatch(url)
    return (match.group(1), urllib.parse.unquote(match.group(2)), match.group(3)) if match else None


def hub_offline(offline: Optional[bool] = None) -> bool:
    """``offline`` if given, else whether RESNETS_OFFLINE or huggingface_hub's HF_HUB_OFFLINE is set."""
    if offline is not None:
        return offline
    hub = huggingface_hub()
    return offline_from_env() or bool(hub.constants.HF_HUB_OFFLINE) or \
        os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


class NotInRepository(Exception):
    """A file the repository does not have (the caller may try another)."""


class NotCached(MissingFileError):
    """A file that only the cache could give (offline, or the Hub unreachable), and it does not hold it."""


def hub_file(repo_id: str, filename: str, *, revision: Optional[str] = None, offline: Optional[bool] = None,
             spec: Optional[str] = None, whole_repository: bool = True,
             elsewhere: str = "put the files in a folder and use local-dir:PATH") -> Path:
    """``filename`` of the Hub repository ``repo_id`` in huggingface_hub's cache, fetched into it first unless
    offline. ``spec`` is how the user named the file or
    repository, for the messages; ``whole_repository``: whether the user needs all of it (the ``hf download``
    advice then names no file); ``elsewhere``: the other way to get it. Raises MissingFileError (one line: what is
    missing and how to get it; NotCached where only the cache could be read), or NotInRepository where the
    repository is there and the file is not."""
    hub = huggingface_hub()
    spec = spec or f"hf-hub:{repo_id}"
    offline = hub_offline(offline)
    # a Hub whose name does not resolve (no network) is read from the cache at once, not retried for half a minute
    unresolved = None if offline else _unresolved_endpoint(hub.constants.ENDPOINT)
    cache_only = offline or unresolved is not None
    errors = hub.errors
    revision_text = f" at revision {revision}" if revision else ""
    try:
        return Path(hub.hf_hub_download(repo_id, filename, revision=revision, local_files_only=cache_only,
                                        library_name="resnets"))
    except errors.RepositoryNotFoundError:  # also a gated repository
        raise MissingFileError(f"{spec}: no repository {repo_id} on the Hugging Face Hub, or it is private or "
                               f"gated (log in with `hf auth login`, or pass HF_TOKEN)") from None
    except errors.RevisionNotFoundError:
        raise MissingFileError(f"{spec}: the repository {repo_id} has no revision {revision!r}") from None
    except errors.LocalEntryNotFoundError:
        why = ("offline (HF_HUB_OFFLINE or RESNETS_OFFLINE is set)" if offline
               else f"the Hub's address {unresolved} does not resolve (no network?)" if unresolved
               else "the Hub could not be reached")
        cache = hub.constants.HF_HUB_CACHE
        command = f"hf download {repo_id}{'' if whole_repository else f' {filename}'}" \
                  f"{f' --revision {revision}' if revision else ''}"
        raise NotCached(
            f"{spec}: {filename}{revision_text} is not in the Hugging Face cache ({cache}) and {why}; fetch it "
            f"where there is network with `{command}` (the same HF_HUB_CACHE), or {elsewhere}") from None
    except errors.EntryNotFoundError:  # the repository is there, the file is not
        raise NotInRepository(filename) from None
    except errors.HfHubHTTPError as error:
        raise MissingFileError(f"{spec}: the Hub refused {filename}: "
                               f"{str(error).strip().splitlines()[0]}") from None


def _unresolved_endpoint(endpoint: str) -> Optional[str]:
    """The host of the Hub's ``endpoint`` URL when its name does not resolve, else None."""
    host = urllib.parse.urlparse(endpoint).hostname
    if not host:
        return None
    try:
        socket.getaddrinfo(host, None)
    except (socket.gaierror, UnicodeError):
        return host
    return None


__all__ = ["NotCached", "NotInRepository", "has_huggingface_hub", "hub_file", "hub_offline", "hub_url_parts",
           "huggingface_hub"]
