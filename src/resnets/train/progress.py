"""What a run reports while it trains: a progress bar or lines, and the counters behind them."""

from __future__ import annotations

import os
import sys
import time
from typing import Optional

import torch
from tqdm import tqdm


class Progress:
    """A tqdm bar on a terminal; plain lines elsewhere (and under CI): at each evaluation, and between two
    evaluations at least every ``line_every`` seconds (:meth:`due`), so a long run off a terminal is never
    silent for long."""

    line_every = 60.0

    def __init__(self, total: int, initial: int, enabled: Optional[bool], stream, silent: bool = False):
        self.last_line = time.monotonic()
        self.stream = stream or sys.stderr
        self.silent = silent  # processes other than rank 0 say nothing
        if enabled is None:
            enabled = self.stream.isatty() and not os.environ.get("CI")
        self.bar = None
        if enabled and not silent:
            self.bar = tqdm(total=total, initial=initial, unit="it", file=self.stream, dynamic_ncols=True)

    def update(self, steps: int, **postfix: str) -> None:
        if self.bar is not None:
            self.bar.update(steps)
            if postfix:
                self.bar.set_postfix(postfix, refresh=False)

    def due(self) -> bool:
        """Whether a line off a terminal is due (none was written for ``line_every`` seconds)."""
        return self.bar is None and not self.silent and time.monotonic() - self.last_line >= self.line_every

    def line(self, text: str) -> None:
        if self.silent:
            return
        self.last_line = time.monotonic()
        if self.bar is not None:
            self.bar.write(text, file=self.stream)
        else:
            print(text, file=self.stream, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


class Meter:
    """The training counters: loss and correct predictions summed on the device step by step
    (reading them forces a sync, so ``flush`` is called only every few steps on a GPU), and
    the totals and throughput since the last evaluation."""

    def __init__(self, device: torch.device):
        self.pending_loss = torch.zeros((), dtype=torch.float64, device=device)  # sum of loss x images
        self.pending_correct = torch.zeros((), dtype=torch.float64, device=device)
        self.pending_steps = self.pending_seen = 0
        self.start_window()

    def start_window(self) -> None:
        self.loss = self.correct = 0.0
        self.seen = self.images = self.steps = 0
        self.time = 0.0
        self.tick = time.perf_counter()  # step times include fetching the batch: images/s is end to end
        self.window_start = self.tick  # wall time of the window, evaluation and checkpoint included

    def add(self, loss: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor) -> None:
        self.pending_loss += loss.detach().double() * len(labels)
        self.pending_correct += (logits.detach().argmax(1) == labels).sum()

    def step_done(self, images: int) -> None:
        now = time.perf_counter()
        self.time += now - self.tick
        self.tick = now
        self.pending_steps += 1
        self.pending_seen += images
        self.images += images
        self.steps += 1

    def flush(self, reduce) -> tuple[float, float, int, int]:
        """Read (and, with ``reduce``, sum over processes) the pending sums into the window;
        returns (loss sum, correct, steps, images) of what was pending."""
        loss, correct = reduce(self.pending_loss).item(), reduce(self.pending_correct).item()
        steps, seen = self.pending_steps, self.pending_seen
        self.loss += loss
        self.correct += correct
        self.seen += seen
        self.pending_loss.zero_()
        self.pending_correct.zero_()
        self.pending_steps = self.pending_seen = 0
        return loss, correct, steps, seen

    @property
    def images_per_sec(self) -> float:
        return self.images / max(self.time, 1e-9)

    def seconds_left(self, steps_left: int) -> float:
        """The time ``steps_left`` more steps take at this window's pace, its evaluation included."""
        return steps_left * (time.perf_counter() - self.window_start) / max(self.steps, 1)


def format_duration(seconds: float) -> str:
    """``2h05m``, ``4m30s``, ``12s``."""
    seconds = round(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds}s"


__all__ = ["Meter", "Progress"]
