"""Files: atomic writes (a temporary file in the target's directory, fsync, rename), digests, the cache root.

A reader (or a run resumed after a kill) sees either the old file or the new one, never
a half-written one.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import tempfile
from pathlib import Path
from typing import Iterator, Optional, Union

from .errors import DiskFullError, ResnetsError, UsageError

# below this many free bytes when a write fails, the failure is taken for a full disk (libraries such as
# torch.save and safetensors report it in words of their own, without the errno)
_NEARLY_FULL = 1 << 20


# what a write that ran out of room says: no space, over quota, over the file-size limit (ulimit -f)
_NO_ROOM = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
_NO_ROOM_WORDS = ("No space left on device", "os error 28", "Disk quota exceeded", "File too large")


def is_disk_full(error: BaseException, directory: Union[str, os.PathLike, None] = None) -> bool:
    """Whether ``error`` (or an exception it was raised from) means no room to write: ENOSPC, EDQUOT or
    EFBIG, the words libraries wrap them in, or a failed write in a ``directory`` that has under 1 MiB free."""
    seen = error
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in _NO_ROOM:
            return True
        if any(words in str(seen) for words in _NO_ROOM_WORDS):
            return True
        seen = seen.__cause__ or seen.__context__
    if directory is not None:
        try:
            stats = os.statvfs(directory)
        except OSError:
            return False
        return stats.f_bavail * stats.f_frsize < _NEARLY_FULL
    return False


def _umask() -> int:
    """The process's umask, read without changing it where Linux shows it (os.umask both sets and reads)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _too_large(error: Optional[BaseException]) -> bool:
    while error is not None:
        if (isinstance(error, OSError) and error.errno == errno.EFBIG) or "File too large" in str(error):
            return True
        error = error.__cause__ or error.__context__
    return False


def disk_full_error(path: Union[str, os.PathLike], error: Optional[BaseException] = None) -> DiskFullError:
    """The one line of a write that found no room: a full disk or quota, or (``error`` an EFBIG) a file over
    the file system's or the process's file-size limit."""
    path = Path(path)
    kept = f"nothing was replaced, the previous {path.name} (if any) is intact"
    if _too_large(error):
        return DiskFullError(f"{path}: the file is larger than the file system or the file-size limit (ulimit -f) "
                             f"allows; {kept}; raise the limit or choose another place to write it, and run again")
    return DiskFullError(f"{path}: the disk is full (no room left to write on the device holding {path.parent}); "
                         f"{kept}; free some space or choose another place to write it, and run again")


def fsync_dir(directory: Union[str, os.PathLike]) -> None:
    """Make a rename inside ``directory`` durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: Union[str, os.PathLike], keep_suffix: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` (``.NAME.*.tmp``; with ``keep_suffix``, ``.NAME.*.tmp.SUFFIX``
    for writers that check the extension, as torch.export's does); on success it is fsynced and renamed
    onto ``path``, on error it is removed and ``path`` is left as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = f".tmp{path.suffix}" if keep_suffix else ".tmp"
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    except OSError as error:  # no room even for an empty file (no free inode): named by the target, not the temp
        if is_disk_full(error):
            raise disk_full_error(path, error) from None
        raise
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # mkstemp (and some writers) make the file 0600; the result gets the permissions any new file gets
        # (0666 less the umask), so that a run's files match each other and the umask decides who reads them
        os.chmod(tmp_path, 0o666 & ~_umask())
        with open(tmp_path, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp_path, path)
        fsync_dir(path.parent)
    except Exception as error:
        # an input refused mid-write (ResnetsError) is never taken for a full disk, however little space is left
        if not isinstance(error, ResnetsError) and is_disk_full(error, path.parent):
            raise disk_full_error(path, error) from None
        raise
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def check_png_path(path: Union[str, os.PathLike], option: str) -> Path:
    """Refuse, before any work, a figure path that is not a .png name or is a folder."""
    path = Path(path)
    if path.suffix.lower() != ".png" or path.is_dir():
        raise UsageError(f"{option} {os.fspath(path)}: expected the name of a .png file to write")
    existing = path.absolute().parent
    while not existing.exists():  # the folders still to be made go under the nearest existing one
        existing = existing.parent
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise UsageError(f"{option} {os.fspath(path)}: cannot write under {existing} "
                         f"({'not a directory' if not existing.is_dir() else 'no permission'})")
    return path


def save_png(figure, path: Union[str, os.PathLike]) -> Path:
    """Write a matplotlib figure as PNG atomically (a full disk leaves the previous file, or none)."""
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png")
    return Path(path)


def atomic_write_text(path: Union[str, os.PathLike], text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def file_digest(path: Union[str, os.PathLike], algorithm: str = "sha256") -> str:
    """The hex digest of a file, read in 1 MiB chunks."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_file(path: Union[str, os.PathLike]) -> str:
    return file_digest(path, "sha256")


def cache_root() -> Path:
    """The package's one cache root: ``$RESNETS_CACHE`` or ``~/.cache/resnets``. Checkpoints live in
    ``checkpoints/``, dataset archives in ``datasets/``, decoded datasets in ``decoded/``."""
    return Path(os.environ.get("RESNETS_CACHE", Path.home() / ".cache" / "resnets")).expanduser()
