"""One code path for 1 or N processes: the process group set up from torchrun's environment."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import torch
import torch.distributed as torch_dist
from torch import nn

from .._device import resolve_device
from ..errors import UsageError


@dataclass
class Distributed:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_environment(cls, device: str = "cpu") -> "Distributed":
        """Read RANK / WORLD_SIZE / LOCAL_RANK (set by torchrun) and join the process group:
        NCCL on GPUs, gloo on CPU. A plain process is rank 0 of 1."""
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        checked = resolve_device(device)
        if checked.type == "cuda":
            index = local_rank if world_size > 1 else (torch.device(device).index or 0)
            torch.cuda.set_device(index)
            resolved = torch.device("cuda", index)
        elif checked.type == "cpu":
            resolved = torch.device("cpu")
        else:
            raise UsageError(f"--device must be 'cpu' or 'cuda', got {device!r}")
        if world_size > 1 and not torch_dist.is_initialized():
            torch_dist.init_process_group(backend="nccl" if resolved.type == "cuda" else "gloo")
        return cls(rank, world_size, local_rank, resolved)

    def wrap(self, model: nn.Module) -> nn.Module:
        if self.world_size == 1:
            return model
        ids = [self.device.index] if self.device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(model, device_ids=ids)

    def no_sync_unless(self, net: nn.Module, sync: bool):
        """Skip DDP's gradient all-reduce on all but the last micro-batch of a step."""
        if sync or not isinstance(net, nn.parallel.DistributedDataParallel):
            return contextlib.nullcontext()
        return net.no_sync()

    def sum(self, value: torch.Tensor) -> torch.Tensor:
        if self.world_size == 1:
            return value
        value = value.clone()
        torch_dist.all_reduce(value)
        return value

    def barrier(self) -> None:
        if self.world_size > 1:
            torch_dist.barrier()

    def close(self) -> None:
        if self.world_size > 1 and torch_dist.is_initialized():
            torch_dist.destroy_process_group()
