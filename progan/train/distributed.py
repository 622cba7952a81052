"""One process, or one process per device under torchrun. Nothing here is global: a Ranks value is passed around.

Data parallelism is DDP's (same weights on every rank, each rank its own shard, gradients averaged across ranks
before every optimizer step), done as one flat all-reduce per step rather than with the DistributedDataParallel
wrapper: the gradient penalty's double backward and the per-phase unused layers of a growing network are exactly
what that wrapper's bucketed hooks handle badly. It also lets every rank agree on skipping a non-finite step.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist


# How long the other ranks wait for rank 0's share of a metric evaluation (the wait has its own process group, so
# the collective timeout of training stays short). A metric that takes longer fails the evaluation, not the run.
METRICS_WAIT = timedelta(hours=2)


@dataclass(frozen=True)
class Ranks:
    """Which process this is, of how many, and its device."""
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    metrics_group: object = None  # a gloo group with a long timeout, for waiting on metrics

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_from_env(device: str | None = None) -> Ranks:
    """Read torchrun's environment; start the process group (NCCL on CUDA, gloo on CPU) when there is more than one
    process. `device` = 'cpu' forces CPU even where CUDA exists."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() and device != "cpu"
    dev = torch.device("cuda", local_rank) if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(dev)
    metrics_group = None
    if world_size > 1:
        if not dist.is_initialized():
            dist.init_process_group(backend="nccl" if use_cuda else "gloo")
        metrics_group = dist.new_group(backend="gloo", timeout=METRICS_WAIT)
    return Ranks(rank=rank, world_size=world_size, local_rank=local_rank, device=dev, metrics_group=metrics_group)


def broadcast_module(module: torch.nn.Module, ranks: Ranks) -> None:
    """Make every rank start from rank 0's weights."""
    if ranks.enabled:
        for t in module.state_dict().values():
            dist.broadcast(t, src=0)


def average_gradients(params: list[torch.nn.Parameter], ranks: Ranks) -> None:
    """Average .grad over ranks in one flat all-reduce. Parameters without a gradient (layers not active in this
    phase) are the same on every rank, since every rank is in the same phase."""
    if not ranks.enabled:
        return
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.flatten() for g in grads])
    dist.all_reduce(flat)
    flat /= ranks.world_size
    offset = 0
    for g in grads:
        g.copy_(flat[offset:offset + g.numel()].view_as(g))
        offset += g.numel()


def any_rank(flag: bool, ranks: Ranks) -> bool:
    """True on every rank if it is true on any: used to stop (signal, time limit) on the same step everywhere."""
    if not ranks.enabled:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=ranks.device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def barrier(ranks: Ranks) -> None:
    if ranks.enabled:
        dist.barrier()


def wait_for_metrics(ranks: Ranks) -> None:
    """Every rank meets here after a metric evaluation, however long rank 0's part took (up to METRICS_WAIT)."""
    if ranks.enabled:
        dist.barrier(group=ranks.metrics_group)


def mean_over_ranks(values: torch.Tensor, ranks: Ranks) -> torch.Tensor:
    """The element-wise mean of `values` over all ranks (itself with one process)."""
    if not ranks.enabled:
        return values
    values = values.clone()
    dist.all_reduce(values)
    return values / ranks.world_size


def all_gather_cat(t: torch.Tensor, ranks: Ranks) -> torch.Tensor:
    """Concatenate every rank's tensor in rank order (all the same shape except possibly dim 0)."""
    if not ranks.enabled:
        return t
    sizes = [torch.zeros(1, dtype=torch.int64, device=t.device) for _ in range(ranks.world_size)]
    dist.all_gather(sizes, torch.tensor([t.shape[0]], device=t.device))
    largest = int(max(s.item() for s in sizes))
    padded = torch.zeros((largest, *t.shape[1:]), dtype=t.dtype, device=t.device)
    padded[:t.shape[0]] = t
    parts = [torch.empty_like(padded) for _ in range(ranks.world_size)]
    dist.all_gather(parts, padded)
    return torch.cat([p[:int(s.item())] for p, s in zip(parts, sizes)])


def shutdown() -> None:
    """Leave the process group, if any, before the process exits: a gloo group still alive at interpreter exit can
    abort the process from its worker threads ("terminate called without an active exception", SIGABRT after the
    work is done; pytorch/pytorch#190489). Called on success only: a rank that failed may leave others mid-collective."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
