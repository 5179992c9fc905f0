"""Running the ``resnets`` command as a user does: ``python -m resnets ...`` in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Optional

RESNETS = [sys.executable, "-m", "resnets"]


def cli_env(threads: Optional[int] = 1, env: Optional[dict] = None) -> dict:
    """This process's environment for a child, with ``OMP_NUM_THREADS=threads`` (None: inherited) and ``env`` on
    top. One thread by default: runs that a test compares with each other use the same thread count, and a child
    does not compete with its siblings for the cores."""
    pinned = {"OMP_NUM_THREADS": str(threads)} if threads is not None else {}
    return {**os.environ, **pinned, **(env or {})}


def run_cli(*args: str, env: Optional[dict] = None, timeout: float = 300,
            threads: Optional[int] = 1) -> subprocess.CompletedProcess:
    """``python -m resnets *args``, its stdout and stderr captured as text (see :func:`cli_env` for ``threads``)."""
    return subprocess.run([*RESNETS, *args], capture_output=True, text=True, timeout=timeout,
                          env=cli_env(threads, env))


def run_main(*args: str, threads: Optional[int] = 1) -> subprocess.CompletedProcess:
    """``resnets *args`` through ``resnets.cli.main`` in this process (no interpreter start-up), its stdout and
    stderr captured as text and its exit code as ``returncode``, as :func:`run_cli` gives them. For commands whose
    test is about what they print and return, not about a process of their own (signals, environment, a second
    process at once: use :func:`run_cli` for those). ``threads``: PyTorch's thread count during the call."""
    import contextlib
    import io

    import torch

    from resnets.cli import main

    out, err = io.StringIO(), io.StringIO()
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(list(args))
            except SystemExit as exit:  # argparse's usage errors
                code = exit.code if isinstance(exit.code, int) else 2
    finally:
        torch.set_num_threads(before)
    return subprocess.CompletedProcess(["resnets", *args], code, out.getvalue(), err.getvalue())
