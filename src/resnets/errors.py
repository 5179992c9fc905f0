"""The one error base of the package.

A ``ResnetsError`` means the input was wrong (a file, an option, a checkpoint, a data set),
not the code: the command line prints its message as one line and exits with code 2 (3 for
a diverged training). Anything else that escapes is a bug and stays a traceback.
"""

from __future__ import annotations


class ResnetsError(Exception):
    """Wrong input: the message names what was wrong and what to do."""

    exit_code = 2


class UsageError(ResnetsError, ValueError):
    """An argument, option or value that cannot be used as given."""


class MissingFileError(ResnetsError, FileNotFoundError):
    """A file or directory the user named does not exist."""


class DiskFullError(ResnetsError, OSError):
    """A write failed because the disk (or the user's quota) is full; the file it would have
    replaced is left as it was."""


__all__ = ["DiskFullError", "MissingFileError", "ResnetsError", "UsageError"]
