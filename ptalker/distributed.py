"""Data-parallel setup under torchrun, and the collectives the loops use.

One process trains on one device; under torchrun every process trains a DistributedDataParallel
replica on its own share of the batches, and rank 0 logs and writes checkpoints.
"""
from __future__ import annotations

import contextlib
import datetime
import math
import os
import sys
from dataclasses import dataclass, field

import torch
import torch.distributed as dist

from .errors import UserError


@dataclass(frozen=True)
class Parallel:
    """This process's place in a data-parallel run; rank 0 of 1 without torchrun."""
    rank: int = 0
    world: int = 1
    # CPU group with a long timeout, for waiting while rank 0 alone works (filling the audio
    # cache, the test phase): that can outlast the default group's collective timeout
    wait_group: object = field(default=None, compare=False, repr=False)

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1

    def say(self, message: str) -> None:
        if self.main:
            print(message, file=sys.stderr)

    @contextlib.contextmanager
    def main_first(self):
        """Rank 0 runs the block before the others (it fills caches they then read)."""
        if self.active and not self.main:
            self.wait_for_all()
        yield
        if self.active and self.main:
            self.wait_for_all()

    def wait_for_all(self) -> None:
        """Every rank waits here until all have arrived."""
        if self.active:
            dist.barrier(group=self.wait_group)


def start_parallel(device: str) -> tuple[Parallel, str]:
    """Join the process group that torchrun describes in the environment: NCCL with one GPU per
    process on CUDA, gloo on the CPU. Returns (this process's place, its device)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Parallel(), device
    local_rank = int(os.environ["LOCAL_RANK"])
    if device.startswith("cuda"):
        if local_rank >= torch.cuda.device_count():
            raise UserError(f"{world} processes on this node but only {torch.cuda.device_count()} GPU(s): "
                            f"lower torchrun's --nproc_per_node")
        device = f"cuda:{local_rank}"
        torch.cuda.set_device(device)
        dist.init_process_group("nccl", device_id=torch.device(device))
    else:
        dist.init_process_group("gloo")
    wait_group = dist.new_group(backend="gloo", timeout=datetime.timedelta(days=1))
    return Parallel(dist.get_rank(), dist.get_world_size(), wait_group), device


def stop_parallel(parallel: Parallel) -> None:
    if parallel.active and dist.is_initialized():
        dist.destroy_process_group()


def sum_tensors_over_ranks(values: torch.Tensor, parallel: Parallel) -> torch.Tensor:
    """`values` summed over the ranks, on their device (collective; NCCL needs a GPU tensor)."""
    if parallel.active:
        values = values.clone()
        dist.all_reduce(values)
    return values


def broadcast_from_main(tensors: list[torch.Tensor], parallel: Parallel) -> None:
    """Overwrite `tensors` on every rank with rank 0's, in place (collective, queued on the device)."""
    if parallel.active:
        for tensor in tensors:
            dist.broadcast(tensor, src=0)


def mean_over_ranks(total: float, count: int, parallel: Parallel, device) -> float:
    """Sum of `total` over the ranks divided by the sum of `count`; NaN when nothing was counted."""
    total, count = sum_tensors_over_ranks(torch.tensor([total, count], dtype=torch.float64, device=device),
                                          parallel).tolist()
    return total / count if count else math.nan


def gather(obj, parallel: Parallel) -> list:
    """Every rank's `obj`, in rank order (collective)."""
    if not parallel.active:
        return [obj]
    out = [None] * parallel.world
    dist.all_gather_object(out, obj)
    return out
