"""``--device``: a device name checked against what this machine has, in one line."""

from __future__ import annotations

import logging
from typing import Union

import torch

from .errors import UsageError


def cpu_units() -> dict[str, bool]:
    """The CPU's instruction-set units as PyTorch reports them (``amx_bf16``, ``avx512_vnni``, ...;
    ``torch.cpu.get_capabilities``, torch >= 2.6); empty where this torch cannot say."""
    capabilities = getattr(torch.cpu, "get_capabilities", None)
    return dict(capabilities()) if capabilities is not None else {}


def resolve_device(device: Union[str, torch.device, None]) -> torch.device:
    """The torch device ``device`` names (``cpu``, ``cuda``, ``cuda:N``, ``mps``), or a UsageError
    saying what is wrong: an unknown name (``gpu``), or a device this machine does not have."""
    if device is None:
        return torch.device("cpu")
    if isinstance(device, torch.device):
        text = str(device)
    else:
        text = str(device).strip().lower()
    if text == "gpu":
        raise UsageError("--device gpu: name the kind of GPU, --device cuda (or cuda:N) for NVIDIA, mps for Apple")
    try:
        resolved = torch.device(text)
    except RuntimeError:
        raise UsageError(f"--device {text}: not a device; use cpu, cuda, cuda:N or mps") from None
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError(f"--device {text}: no CUDA GPU is available on this machine "
                             f"(torch {torch.__version__}); use --device cpu")
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            raise UsageError(f"--device {text}: this machine has {torch.cuda.device_count()} CUDA GPU(s), "
                             f"numbered from 0")
    elif resolved.type == "mps":
        if not torch.backends.mps.is_available():
            raise UsageError(f"--device {text}: Apple's MPS is not available on this machine; use --device cpu")
    elif resolved.type != "cpu":
        raise UsageError(f"--device {text}: resnets runs on cpu, cuda or mps")
    return resolved


def quiet_cuda_home_notice() -> None:
    """torch.compile's C++ builder logs "No CUDA runtime is found, using CUDA_HOME=..." on a machine with a CUDA
    toolkit and no GPU, once per process, at warning level; compiling for the CPU, it says nothing that matters,
    so that one logger is raised to errors only."""
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)


__all__ = ["quiet_cuda_home_notice", "resolve_device"]
