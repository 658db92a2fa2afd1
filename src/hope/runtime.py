"""Where a run computes: the device by name, the process group of a ``torchrun`` launch, and its peak memory."""

from __future__ import annotations

import os
import resource
import sys

import torch
import torch.distributed as dist

from hope.errors import HopeError


def resolve_device(name: str) -> torch.device:
    """``auto`` (CUDA when available, else CPU), ``cpu``, ``cuda`` or ``cuda:N``."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise HopeError(f"device {name!r} asked for, but CUDA is not available")
    return torch.device(name)


class Distributed:
    """Rank, world size and the process group when launched by ``torchrun``; a no-op otherwise, unless
    ``group`` asks for a process group even for one process (FSDP2 needs one): a one-rank group is started."""

    def __init__(self, device: torch.device, group: bool = False) -> None:
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.device = device
        self.started = (self.world > 1 or group) and not dist.is_initialized()
        if self.started:
            if device.type == "cuda":
                self.device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
                torch.cuda.set_device(self.device)
            backend = "nccl" if self.device.type == "cuda" else "gloo"
            if "MASTER_ADDR" in os.environ:
                dist.init_process_group(backend)
            else:
                dist.init_process_group(backend, store=dist.HashStore(), rank=0, world_size=1)

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()

    def mean(self, value: torch.Tensor) -> torch.Tensor:
        if self.world > 1:
            value = value.clone()
            dist.all_reduce(value)
            value /= self.world
        return value

    def close(self) -> None:
        if (self.world > 1 or self.started) and dist.is_initialized():
            dist.destroy_process_group()


def peak_memory_mb(device: torch.device | str) -> float:
    """Peak memory of this process in MiB: CUDA's maximum allocated on a CUDA ``device``, else the peak resident
    set size (``getrusage``)."""
    if torch.device(device).type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10  # bytes on macOS, KiB on Linux
