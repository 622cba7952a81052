"""One process, or one process per device under torchrun. Nothing here is global: a Dist value is passed around.

Data parallelism is DDP's (same weights on every rank, each rank its own shard, gradients averaged across ranks
before every optimizer step), done as one flat all-reduce per step rather than with the DistributedDataParallel
wrapper: the gradient penalty's double backward and the per-phase unused layers of a growing network are exactly
what that wrapper's bucketed hooks handle badly. It also lets every rank agree on skipping a non-finite step.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_from_env(device: str | None = None) -> Dist:
    """Read torchrun's environment; start the process group (NCCL on CUDA, gloo on CPU) when there is more than one
    process. `device` = 'cpu' forces CPU even where CUDA exists."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() and device != "cpu"
    dev = torch.device("cuda", local_rank) if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(dev)
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return Dist(rank=rank, world_size=world_size, local_rank=local_rank, device=dev)


def broadcast_module(module: torch.nn.Module, d: Dist) -> None:
    """Make every rank start from rank 0's weights."""
    if d.enabled:
        for t in module.state_dict().values():
            dist.broadcast(t, src=0)


def average_gradients(params: list[torch.nn.Parameter], d: Dist) -> None:
    """Average .grad over ranks in one flat all-reduce. Parameters without a gradient (layers not active in this
    phase) are the same on every rank, since every rank is in the same phase."""
    if not d.enabled:
        return
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.flatten() for g in grads])
    dist.all_reduce(flat)
    flat /= d.world_size
    offset = 0
    for g in grads:
        g.copy_(flat[offset:offset + g.numel()].view_as(g))
        offset += g.numel()


def any_rank(flag: bool, d: Dist) -> bool:
    """True on every rank if it is true on any: used to stop (signal, time limit) on the same step everywhere."""
    if not d.enabled:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=d.device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def barrier(d: Dist) -> None:
    if d.enabled:
        dist.barrier()


def shutdown(d: Dist) -> None:
    if d.enabled and dist.is_initialized():
        dist.destroy_process_group()
