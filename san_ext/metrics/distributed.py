"""The few collectives the metrics need, over ``torch.distributed`` when a process group exists (gloo or NCCL) and
no-ops in a single process.

Kept inside ``san_ext.metrics`` so metrics never import the training package. NCCL only moves CUDA tensors and
gloo only CPU ones, so every helper copies to the backend's device and back; nothing here keeps module state.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

__all__ = ['active', 'all_gather_rows', 'all_reduce_sum', 'barrier', 'rank', 'shard_range', 'world_size']


def active() -> bool:
    """Whether a process group with more than one process is running."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """This process's rank (0 without a process group)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def world_size() -> int:
    """Number of processes (1 without a process group)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def shard_range(n: int) -> tuple[int, int]:
    """``[start, stop)`` of this rank's contiguous share of ``n`` items (shares differ by at most one)."""
    r, w = rank(), world_size()
    return r * n // w, (r + 1) * n // w


def barrier() -> None:
    if active():
        dist.barrier()


def _comm_device() -> torch.device:
    if dist.get_backend() == 'nccl':
        return torch.device('cuda', torch.cuda.current_device())
    return torch.device('cpu')


def all_reduce_sum(x: torch.Tensor) -> torch.Tensor:
    """Sum of ``x`` over ranks, written into ``x`` (returned); ``x`` unchanged in a single process."""
    if not active():
        return x
    y = x.to(_comm_device())
    dist.all_reduce(y, op=dist.ReduceOp.SUM)
    if y is not x:
        x.copy_(y)
    return x


def all_gather_rows(x: torch.Tensor) -> torch.Tensor:
    """Concatenate every rank's ``x`` (same trailing shape, any number of rows) along dim 0, in rank order."""
    if not active():
        return x
    dev = _comm_device()
    counts = torch.tensor([x.shape[0]], dtype=torch.int64, device=dev)
    all_counts = [torch.zeros_like(counts) for _ in range(world_size())]
    dist.all_gather(all_counts, counts)
    sizes = [int(c.item()) for c in all_counts]
    # Collectives need equal shapes: pad every share to the longest, then cut the padding off again.
    padded = torch.zeros((max(sizes), *x.shape[1:]), dtype=x.dtype, device=dev)
    padded[:x.shape[0]] = x.to(dev)
    parts = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(parts, padded)
    return torch.cat([p[:s] for p, s in zip(parts, sizes)]).to(x.device)

