"""Run directories and checkpoints.

A run directory holds::

    config.json                      what the run is (model, recipe, data, split, seed, ...)
    metrics.jsonl                    one line per evaluation
    sessions.jsonl                   one line per start or resume: when, from which step, and what
                                     may differ between sessions without changing the run (compile,
                                     threads, versions)
    checkpoints/step-<N>.safetensors the weights (with preprocessing and class names)
    checkpoints/step-<N>.state.pt    optimiser, step, RNG states, EMA, data position
    last.json                        which checkpoint is the last complete one
    last.safetensors, best.safetensors   the weights a user takes away (a run that averages its weights,
                                     EMA or SWA: the average, as the metrics score it)

Every file is written atomically and ``last.json`` is replaced only after both halves of a
checkpoint are on disk, so a run killed at any moment resumes from a complete checkpoint.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Optional

import torch
from torch import nn

from .._io import atomic_path, atomic_write_text, disk_full_error, is_disk_full, sha256_file
from ..errors import UsageError
from ..weights import read_metadata, save_weights


class RunDirError(UsageError):
    """A run directory that cannot be used as asked (another model's run, a corrupt checkpoint, ...).
    ``clashes``: on a refused resume, each option given differently from the record, in words."""

    def __init__(self, message: str, clashes: Optional[list[str]] = None):
        super().__init__(message)
        self.clashes = list(clashes or [])


def read_config(run_dir: Path) -> Optional[dict]:
    path = run_dir / "config.json"
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise RunDirError(f"{path} is not valid JSON ({error}); the run directory cannot be resumed") from None


def write_config(run_dir: Path, config: dict) -> None:
    atomic_write_text(run_dir / "config.json", json.dumps(config, indent=2, sort_keys=True) + "\n")


def append_session(run_dir: Path, session: dict) -> None:
    """Add one line to ``sessions.jsonl``: a start or a resume of the run. Rewritten whole and atomically,
    so a kill leaves the old file or the new one."""
    path = run_dir / "sessions.jsonl"
    previous = path.read_text() if path.exists() else ""
    if previous and not previous.endswith("\n"):
        previous += "\n"
    atomic_write_text(path, previous + json.dumps(session, sort_keys=True) + "\n")


def read_sessions(run_dir: Path) -> list[dict]:
    """The starts and resumes of a run (empty for runs older than the log)."""
    return _read_jsonl(Path(run_dir) / "sessions.jsonl")[0]  # written atomically: never torn


def _step_name(step: int, suffix: str) -> str:
    """``step-00000050.safetensors``: the name of a checkpoint or snapshot file of ``step``."""
    return f"step-{step:08d}{suffix}"


def save_checkpoint(run_dir: Path, model: nn.Module, state: dict[str, Any], *, step: int,
                    classes: list[str], metadata: dict[str, Any], link_last: bool = True) -> Path:
    """Write the weights and the training state of ``step``, then point ``last.json`` at them (and
    ``last.safetensors``, unless ``link_last`` is False: a run that averages its weights writes its
    average there with :func:`save_last`)."""
    folder = run_dir / "checkpoints"
    weights = folder / _step_name(step, ".safetensors")
    state_path = folder / _step_name(step, ".state.pt")
    previous = last_checkpoint(run_dir, verify=False)
    try:
        save_weights(model, weights, classes=classes, metadata={**metadata, "step": step})
        state = {**state, "step": step, "weights_sha256": sha256_file(weights)}
        with atomic_path(state_path) as tmp:
            torch.save(state, tmp)
        atomic_write_text(run_dir / "last.json", json.dumps(
            {"step": step, "weights": str(weights.relative_to(run_dir)),
             "state": str(state_path.relative_to(run_dir))}))
    except BaseException:
        # last.json still names the previous checkpoint: this step's half-written pair would be an orphan
        if previous is None or previous["step"] != step:
            weights.unlink(missing_ok=True)
            state_path.unlink(missing_ok=True)
        raise
    if link_last:
        _link(weights, run_dir / "last.safetensors")
    if previous is not None and previous["step"] != step:
        for key in ("weights", "state"):
            (run_dir / previous[key]).unlink(missing_ok=True)
    return weights


def keep_snapshot(run_dir: Path, weights: Path) -> Path:
    """Keep a checkpoint's weights as ``snapshots/step-N.safetensors`` once later checkpoints
    replace it (a hard link where the file system has them, else a copy)."""
    snapshot = run_dir / "snapshots" / weights.name
    if not snapshot.exists():
        snapshot.parent.mkdir(parents=True, exist_ok=True)
        _link(weights, snapshot)
    return snapshot


def save_initial_snapshot(run_dir: Path, model: nn.Module, *, classes: list[str], metadata: dict[str, Any]) -> Path:
    """The weights before the first step, as ``snapshots/step-00000000.safetensors``."""
    snapshot = run_dir / "snapshots" / _step_name(0, ".safetensors")
    snapshot.parent.mkdir(parents=True, exist_ok=True)
    save_weights(model, snapshot, classes=classes, metadata={**metadata, "step": 0})
    return snapshot


def list_snapshots(run_dir: Path) -> list[tuple[int, Path]]:
    """(step, path) of every snapshot a run kept, in step order."""
    found = []
    for path in (Path(run_dir) / "snapshots").glob("step-*.safetensors"):
        digits = path.name[len("step-"):-len(".safetensors")]
        if digits.isdigit():
            found.append((int(digits), path))
    return sorted(found)


def _link(target: Path, link: Path) -> None:
    """Point ``link`` at ``target``'s content atomically (a hard link, or a copy where links fail)."""
    with atomic_path(link) as tmp:
        tmp.unlink()
        try:
            os.link(target, tmp)
        except OSError:
            tmp.write_bytes(target.read_bytes())


def last_checkpoint(run_dir: Path, verify: bool = True) -> Optional[dict]:
    """The record of the last complete checkpoint, or None when the run has none yet."""
    pointer = run_dir / "last.json"
    if not pointer.exists():
        return None
    try:
        record = json.loads(pointer.read_text())
        record["step"] = int(record["step"])
    except (json.JSONDecodeError, KeyError, ValueError, TypeError) as error:
        raise RunDirError(f"{pointer} is corrupt ({error}); cannot resume") from None
    inside = run_dir.resolve()
    for key in ("weights", "state"):  # a pointer is followed only inside its own run directory
        if not isinstance(record.get(key), str) or inside not in (run_dir / record[key]).resolve().parents:
            raise RunDirError(f"{pointer} names {record.get(key)!r} as its {key}, which is not a file of "
                              f"checkpoints/ in {run_dir}; the pointer is corrupt or foreign: cannot resume")
    if verify:
        for key in ("weights", "state"):
            if not (run_dir / record[key]).is_file():
                raise RunDirError(f"{pointer} names {record[key]}, which is missing; cannot resume")
    return record


def load_checkpoint_state(run_dir: Path, record: dict) -> tuple[dict[str, torch.Tensor], dict]:
    """Read and check a checkpoint: (model state dict, training state). Nothing is written."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    weights, state_path = run_dir / record["weights"], run_dir / record["state"]
    try:
        state = torch.load(state_path, map_location="cpu", weights_only=True)
    except Exception as error:  # a truncated or foreign file: say which and why
        raise RunDirError(f"checkpoint {state_path} is corrupt or unreadable: {error}") from None
    if not isinstance(state, dict) or state.get("step") != record["step"]:
        raise RunDirError(f"checkpoint {state_path} does not hold step {record['step']}")
    if sha256_file(weights) != state.get("weights_sha256"):
        raise RunDirError(f"checkpoint {weights} does not match its state file (corrupt or replaced)")
    try:
        tensors = load_file(str(weights))
        read_metadata(weights)
    except (SafetensorError, OSError, ValueError) as error:
        raise RunDirError(f"checkpoint {weights} is corrupt: {error}") from None
    return tensors, state


def save_last(run_dir: Path, model: nn.Module, *, classes: list[str], metadata: dict[str, Any]) -> None:
    save_weights(model, run_dir / "last.safetensors", classes=classes, metadata=metadata)


def save_best(run_dir: Path, model: nn.Module, *, classes: list[str], metadata: dict[str, Any]) -> None:
    save_weights(model, run_dir / "best.safetensors", classes=classes, metadata=metadata)


def read_metrics(run_dir: Path) -> list[dict]:
    return _read_jsonl(Path(run_dir) / "metrics.jsonl")[0]


def _read_jsonl(path: Path) -> tuple[list[dict], bool]:
    """The rows of a JSON-lines file of the run directory (none if it does not exist) and whether its last
    line was torn: cut short without its newline by a kill during the append, and left out. Any other line
    that is not JSON is a RunDirError naming the file and line."""
    if not path.exists():
        return [], False
    text = path.read_text()
    lines = text.splitlines()
    rows = []
    for number, line in enumerate(lines, start=1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                if number == len(lines) and not text.endswith("\n"):
                    return rows, True
                raise RunDirError(f"{path}, line {number}: not valid JSON") from None
    return rows, False


def append_metrics(run_dir: Path, row: dict) -> None:
    path = run_dir / "metrics.jsonl"
    try:
        with open(path, "a") as f:
            f.write(json.dumps(row) + "\n")
            f.flush()
            os.fsync(f.fileno())
    except OSError as error:
        if is_disk_full(error, run_dir):
            raise disk_full_error(path) from None
        raise


def clean_run_dir(run_dir: Path) -> list[Path]:
    """Remove what an interrupted write can leave in a run directory (its lock held): temporary files of
    atomic writes (``.NAME.*.tmp``) and checkpoint files that ``last.json`` does not name (a step's weights
    without its state, or either of an older step). Returns the files removed."""
    run_dir = Path(run_dir)
    record = last_checkpoint(run_dir, verify=False)
    kept = {run_dir / record[key] for key in ("weights", "state")} if record else set()
    removed = []
    for folder in (run_dir, run_dir / "checkpoints", run_dir / "snapshots"):
        if folder.is_dir():
            removed += [p for p in folder.glob(".*.tmp") if p.is_file()]
    if (run_dir / "checkpoints").is_dir():
        removed += [p for p in (run_dir / "checkpoints").glob("step-*") if p.is_file() and p not in kept]
    for path in removed:
        path.unlink(missing_ok=True)
    return removed


def truncate_metrics(run_dir: Path, step: int) -> None:
    """Drop metric lines written after the checkpoint a run resumes from."""
    rows, torn = _read_jsonl(run_dir / "metrics.jsonl")
    kept = [r for r in rows if r.get("step", 0) <= step]
    if len(kept) != len(rows) or torn:  # a torn line is rewritten away, or the next append would join it
        atomic_write_text(run_dir / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in kept))
