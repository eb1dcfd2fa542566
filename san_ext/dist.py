"""One small distributed layer for every room: torchrun environment, rank and world size, rank-0 printing,
collectives, seeds.

Processes are started by ``torchrun`` only (``python -m torch.distributed.run``); ``train.py --gpus N`` and
``calc_metrics.py --gpus N`` relaunch themselves through it. Without torchrun's environment everything runs in one
process, no process group exists and every collective is a no-op. NCCL on CUDA, gloo on CPU (tests); NCCL only moves
CUDA tensors and gloo only CPU ones, so the collectives copy to the backend's device and back. Nothing here keeps
module-level state: rank and world size are read from ``torch.distributed`` each time.
"""

from __future__ import annotations

import logging
import os
import random
import signal
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np
import torch
import torch.distributed as tdist
from torch import nn

__all__ = ['DistEnv', 'RelaunchError', 'active', 'all_gather_rows', 'all_reduce_grads', 'all_reduce_mean',
           'all_reduce_sum', 'barrier', 'broadcast_module', 'broadcast_object', 'convert_sync_batchnorm', 'init',
           'is_comm_failure', 'launched_by_torchrun', 'print0', 'rank', 'relaunch', 'resolve_device', 'seed_for',
           'seed_globals', 'shard_range', 'shutdown', 'silent_ranks', 'torchrun_world', 'world_size']

log = logging.getLogger(__name__)

# Clamp of non-finite gradient entries after the all-reduce (NaN -> 0), as StyleGAN2/3 and StyleGAN-XL do.
_GRAD_LIMIT = 1e5


# ---------------------------------------------------------------------------------------------------------------
# Where this process sits.

@dataclass(frozen=True)
class DistEnv:
    """Where this process sits: its rank, the number of processes, and the device it works on."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    store: Any = field(default=None, compare=False, repr=False)  # torchrun's key-value store (health checks)

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def active() -> bool:
    """Whether a process group with more than one process is running."""
    return tdist.is_available() and tdist.is_initialized() and tdist.get_world_size() > 1


def rank() -> int:
    """This process's rank (0 without a process group)."""
    return tdist.get_rank() if tdist.is_available() and tdist.is_initialized() else 0


def world_size() -> int:
    """Number of processes (1 without a process group)."""
    return tdist.get_world_size() if tdist.is_available() and tdist.is_initialized() else 1


def shard_range(n: int) -> tuple[int, int]:
    """``[start, stop)`` of this rank's contiguous share of ``n`` items (shares differ by at most one)."""
    r, w = rank(), world_size()
    return r * n // w, (r + 1) * n // w


def launched_by_torchrun() -> bool:
    """True inside a process started by torchrun (it sets RANK, WORLD_SIZE and LOCAL_RANK)."""
    return all(k in os.environ for k in ('RANK', 'WORLD_SIZE', 'LOCAL_RANK'))


def torchrun_world() -> Optional[tuple[int, int]]:
    """(nodes, processes per node) of the torchrun launch this process belongs to, from WORLD_SIZE and
    LOCAL_WORLD_SIZE (None outside torchrun). Nodes with unequal process counts count as one node of them all."""
    if not launched_by_torchrun():
        return None
    world = int(os.environ['WORLD_SIZE'])
    per_node = int(os.environ.get('LOCAL_WORLD_SIZE', world))
    return (world // per_node, per_node) if per_node > 0 and world % per_node == 0 else (1, world)


def resolve_device(device: str, local_rank: int = 0) -> torch.device:
    """'auto' -> CUDA when available, else CPU; 'cuda' -> this process's GPU (``cuda:LOCAL_RANK``)."""
    if device not in ('auto', 'cpu', 'cuda'):
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda', got {device!r}")
    if device == 'auto':
        device = 'cuda' if torch.cuda.is_available() else 'cpu'
    if device == 'cuda':
        if not torch.cuda.is_available():
            raise RuntimeError('device cuda was requested but PyTorch sees no CUDA GPU; use --device cpu')
        return torch.device('cuda', local_rank)
    return torch.device('cpu')


def init(device: str = 'auto') -> DistEnv:
    """Join torchrun's process group (env://; NCCL on CUDA, gloo on CPU) or stay a single process."""
    if not launched_by_torchrun():
        return DistEnv(0, 1, 0, resolve_device(device))
    rank_, world, local = (int(os.environ[k]) for k in ('RANK', 'WORLD_SIZE', 'LOCAL_RANK'))
    dev = resolve_device(device, local)
    if dev.type == 'cuda':
        torch.cuda.set_device(dev)
    store = None
    if world > 1 and not tdist.is_initialized():
        backend = 'nccl' if dev.type == 'cuda' else 'gloo'
        # env:// by hand, to keep the store: under torchrun it is the launcher's, which outlives a dead worker.
        store, rank_, world = next(tdist.rendezvous('env://'))
        tdist.init_process_group(backend=backend, store=store, rank=rank_, world_size=world,
                                 device_id=dev if dev.type == 'cuda' else None)
    return DistEnv(rank_, world, local, dev, store)


_COMM_TEXT = ('Connection reset', 'Connection closed', 'Connection refused', 'Broken pipe', 'pair.cc', 'NCCL',
              'Timed out', 'timed out', 'ProcessGroup')


def is_comm_failure(e: BaseException) -> bool:
    """Whether ``e`` looks like a failed collective (a peer gone, a timeout) rather than a local error."""
    return isinstance(e, getattr(tdist, 'DistError', ())) or (
        isinstance(e, RuntimeError) and any(text in str(e) for text in _COMM_TEXT))


def silent_ranks(env: DistEnv, timeout: float = 10.0) -> list[int]:
    """After a failed collective: check in through the launcher's store and return the ranks that do not check in
    within ``timeout`` seconds (dead or hanging). Every surviving rank sees the failure, so a live rank checks in
    within seconds. Returns [] when there is no store, and all other ranks when it cannot be reached."""
    if env.store is None or env.world_size < 2:
        return []
    restart = os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')
    store = tdist.PrefixStore(f'san_ext/alive/{restart}', env.store)
    others = [r for r in range(env.world_size) if r != env.rank]
    try:
        store.set(str(env.rank), '1')
        deadline = time.monotonic() + timeout
        while others and time.monotonic() < deadline:
            others = [r for r in others if not store.check([str(r)])]
            time.sleep(0.1)
    except Exception as e:  # the store itself is gone (its host died): nothing can be told apart
        log.warning('cannot reach the rendezvous store to tell which rank failed: %s', e)
    return others


def shutdown() -> None:
    """Leave the process group (if any)."""
    if tdist.is_available() and tdist.is_initialized():
        tdist.destroy_process_group()


def relaunch(nproc: int, argv: Iterable[str]) -> None:
    """Run ``argv`` (a script and its arguments) as ``nproc`` processes on this node through torchrun.

    Used by ``train.py --gpus N`` and ``calc_metrics.py --gpus N`` when not started by torchrun. Returns when all
    processes have finished; torchrun raises if one of them failed.
    """
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import main as torchrun_main

    args = ['--standalone', f'--nproc_per_node={nproc}', *argv]
    log.info('relaunching through torchrun: %s', ' '.join(args))
    try:
        torchrun_main(args)
    except ChildFailedError as e:
        failed = ', '.join(f'rank {r} ({_exit_reason(f.exitcode)})' for r, f in sorted(e.failures.items()))
        raise RelaunchError(f'{failed} of the {nproc} processes started through torchrun failed; the error of each '
                            'is printed above') from e


class RelaunchError(RuntimeError):
    """A process started by :func:`relaunch` failed; the message names its rank and exit status."""


def _exit_reason(exitcode: int) -> str:
    """'exit code 1', or 'killed by SIGKILL' for a negative exit code."""
    if exitcode < 0:
        try:
            return f'killed by {signal.Signals(-exitcode).name}'
        except ValueError:
            return f'killed by signal {-exitcode}'
    return f'exit code {exitcode}'


def print0(*args, **kwargs) -> None:
    """``print`` on rank 0 only; every other rank stays silent."""
    if rank() == 0:
        print(*args, **kwargs, flush=True)


def seed_globals(seed: int) -> None:
    """Seed Python's ``random``, numpy's and torch's global generators (every CUDA device's too) from one seed."""
    random.seed(seed)
    np.random.seed(seed % (1 << 32))
    torch.manual_seed(seed)


def seed_for(*keys: int) -> int:
    """A 63-bit seed that depends on every key (e.g. seed, cur_nimg, chunk, phase) through numpy's SeedSequence,
    so neighbouring keys give unrelated streams."""
    state = np.random.SeedSequence([int(k) for k in keys]).generate_state(2, dtype=np.uint32)
    return (int(state[0]) << 31 ^ int(state[1])) & ((1 << 63) - 1)


# ---------------------------------------------------------------------------------------------------------------
# Collectives (no-ops in a single process).

def barrier() -> None:
    if active():
        tdist.barrier()


def _comm_device() -> torch.device:
    if tdist.get_backend() == 'nccl':
        return torch.device('cuda', torch.cuda.current_device())
    return torch.device('cpu')


def all_reduce_sum(x: torch.Tensor) -> torch.Tensor:
    """Sum of ``x`` over ranks, written into ``x`` (returned); ``x`` unchanged in a single process."""
    if not active():
        return x
    y = x.to(_comm_device())
    tdist.all_reduce(y, op=tdist.ReduceOp.SUM)
    if y is not x:
        x.copy_(y)
    return x


def all_reduce_mean(x: torch.Tensor) -> torch.Tensor:
    """Mean of ``x`` over ranks (a new tensor; ``x`` itself when single-process)."""
    if not active():
        return x
    y = x.clone()
    tdist.all_reduce(y)
    return y / tdist.get_world_size()


def all_gather_rows(x: torch.Tensor) -> torch.Tensor:
    """Concatenate every rank's ``x`` (same trailing shape, any number of rows) along dim 0, in rank order."""
    if not active():
        return x
    dev = _comm_device()
    counts = torch.tensor([x.shape[0]], dtype=torch.int64, device=dev)
    all_counts = [torch.zeros_like(counts) for _ in range(world_size())]
    tdist.all_gather(all_counts, counts)
    sizes = [int(c.item()) for c in all_counts]
    # Collectives need equal shapes: pad every share to the longest, then cut the padding off again.
    padded = torch.zeros((max(sizes), *x.shape[1:]), dtype=x.dtype, device=dev)
    padded[:x.shape[0]] = x.to(dev)
    parts = [torch.empty_like(padded) for _ in sizes]
    tdist.all_gather(parts, padded)
    return torch.cat([p[:s] for p, s in zip(parts, sizes)]).to(x.device)


def broadcast_object(obj):
    """Rank 0's value of a picklable ``obj`` on every rank (e.g. the run directory, chosen once)."""
    if not active():
        return obj
    box = [obj]
    tdist.broadcast_object_list(box, src=0)
    return box[0]


@torch.no_grad()
def broadcast_module(module: nn.Module) -> None:
    """Copy rank 0's parameters and buffers to every rank, so all processes start from the same weights."""
    if not active():
        return
    for t in [*module.parameters(), *module.buffers()]:
        if t.numel():
            tdist.broadcast(t.data, src=0)


@torch.no_grad()
def all_reduce_grads(params: Sequence[nn.Parameter]) -> None:
    """Average the gradients of ``params`` over ranks in one flat all-reduce, then replace NaN by 0 and +-inf by
    +-1e5 (StyleGAN's guard). Parameters without a gradient count as zero, so every rank sends the same shape."""
    params = list(params)
    if not params:
        return
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    if active():
        flat = torch.cat([p.grad.reshape(-1) for p in params])
        tdist.all_reduce(flat)
        flat /= tdist.get_world_size()
        torch.nan_to_num(flat, nan=0.0, posinf=_GRAD_LIMIT, neginf=-_GRAD_LIMIT, out=flat)
        for p, g in zip(params, flat.split([p.numel() for p in params])):
            p.grad.copy_(g.view_as(p))
        return
    for p in params:
        torch.nan_to_num(p.grad, nan=0.0, posinf=_GRAD_LIMIT, neginf=-_GRAD_LIMIT, out=p.grad)


def convert_sync_batchnorm(module: nn.Module) -> nn.Module:
    """BatchNorm -> SyncBatchNorm so statistics are taken over all ranks' chunks (``--sync-bn``; needs CUDA)."""
    return nn.SyncBatchNorm.convert_sync_batchnorm(module)
