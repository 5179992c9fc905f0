"""Mixed precision where the hardware has it: ``amp="auto"`` and ``channels_last=None`` resolved
for a device, from what the device reports (never guessed from its vendor or name)."""

from __future__ import annotations

import contextlib
import warnings
from dataclasses import dataclass
from typing import Optional

import torch

from ._device import cpu_units
from ._options import option
from .errors import UsageError, check_choice

AMP_CHOICES = ("auto", "bf16", "fp16", "off")


@dataclass
class AutocastOption:
    """The autocast knob, declared once for training and evaluation (their options take it ``same_as``)."""

    amp: str = option("auto", choices=AMP_CHOICES, help="autocast precision; auto: bf16 where the device computes it "
                                                        "natively (recent Intel/AMD CPUs, Ampere+ GPUs), else off "
                                                        "(fp32)")


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes in bf16 natively: a CUDA device that says so, or a CPU with
    AVX512-BF16 or AMX-BF16 units (elsewhere PyTorch emulates bf16, slower than fp32)."""
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        units = cpu_units()
        return bool(units.get("amx_bf16") or units.get("avx512_bf16"))
    return False


def resolve_amp(amp: str, device: torch.device) -> str:
    """``auto``: bf16 where the device has it natively, else off; other values as given."""
    check_choice("amp", amp, AMP_CHOICES)
    if amp != "auto":
        return amp
    return "bf16" if native_bf16(device) else "off"


def warn_if_emulated(amp: str, device: torch.device) -> None:
    """A one-line warning where bf16 is asked for on a CPU without bf16 units: PyTorch then emulates it,
    several times slower than fp32 (measured 9x on an AVX2-only CPU for a resnet20 training step)."""
    if amp == "bf16" and device.type == "cpu" and not native_bf16(device):
        warnings.warn("this CPU has no bf16 units (AVX512-BF16 or AMX-BF16): bf16 is emulated here, several "
                      "times slower than fp32; amp/precision 'auto' chooses fp32 on it", SlowPrecisionWarning,
                      stacklevel=2)


class SlowPrecisionWarning(UserWarning):
    """bf16 asked for where the hardware only emulates it."""


def resolve_channels_last(channels_last: Optional[bool], device: torch.device) -> bool:
    """None: channels-last where it is the faster layout for convolutions: on CUDA and on CPUs, in bf16
    and in fp32 (oneDNN's kernels take NHWC: resnet56 trains 1.27x faster in it in fp32 on an AVX2-only
    CPU; benchmarks/train_throughput.py, figures in benchmarks/RESULTS.md)."""
    if channels_last is not None:
        return channels_last
    return device.type in ("cuda", "cpu")


def autocast_context(device: torch.device, amp: str):
    """bf16 / fp16 autocast on ``device``, or nothing for ``amp="off"`` (``auto`` must be resolved first)."""
    if amp == "off":
        return contextlib.nullcontext()
    if amp not in ("bf16", "fp16"):
        raise UsageError(f"amp must be 'bf16', 'fp16' or 'off' here, got {amp!r}")
    dtype = torch.bfloat16 if amp == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


__all__ = ["AMP_CHOICES", "SlowPrecisionWarning", "autocast_context", "native_bf16", "resolve_amp",
           "resolve_channels_last", "warn_if_emulated"]
