"""Training statistics: a collector the loop reports to, and the rank-0 sinks written once per tick.

:class:`Stats` keeps running sums on the training device (no host sync per report) and averages them over ranks at
the end of a tick. :class:`TickLog` writes the tick's fields to ``stats.jsonl``, TensorBoard (when installed) and
the postfix of the tqdm bar. Both are plain objects owned by the loop: no module-level counters.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Optional, Union

import torch
from tqdm import tqdm

from san_ext import dist

__all__ = ['Stats', 'TickLog', 'format_postfix']

log = logging.getLogger(__name__)


class Stats:
    """Means of named values reported between two :meth:`collect` calls, averaged over ranks."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self._sums: dict[str, torch.Tensor] = {}
        self._counts: dict[str, int] = {}

    def report(self, name: str, value: Union[torch.Tensor, float]) -> None:
        """Add every element of ``value`` (detached) to the running mean of ``name``."""
        value = torch.as_tensor(value).detach().to(self.device, torch.float64)
        if name not in self._sums:
            self._sums[name] = torch.zeros([], dtype=torch.float64, device=self.device)
            self._counts[name] = 0
        self._sums[name] += value.sum()
        self._counts[name] += value.numel()

    def collect(self) -> dict[str, float]:
        """Means since the last call over all ranks (every rank must call it; names are merged by sorting), then
        reset. Ranks that saw no value of a name contribute nothing to its mean."""
        names = sorted(self._sums)
        names = sorted(set().union(*_gather_names(names)))
        sums = torch.stack([self._sums.get(n, torch.zeros([], dtype=torch.float64, device=self.device))
                            for n in names]) if names else torch.zeros([0], dtype=torch.float64, device=self.device)
        counts = torch.tensor([float(self._counts.get(n, 0)) for n in names], dtype=torch.float64, device=self.device)
        both = dist.all_reduce_mean(torch.cat([sums, counts]))
        sums, counts = both[:len(names)], both[len(names):]
        self._sums.clear()
        self._counts.clear()
        return {n: float(s / c) for n, s, c in zip(names, sums.tolist(), counts.tolist()) if c > 0}


def _gather_names(names: list[str]) -> list[list[str]]:
    if dist.world_size() == 1:
        return [names]
    out: list = [None] * dist.world_size()
    torch.distributed.all_gather_object(out, names)
    return out


def format_postfix(fields: dict[str, float]) -> dict[str, str]:
    """Short tqdm postfix: sec/kimg, memory and the loss means."""
    keys = {'sec/kimg': 'Timing/sec_per_kimg', 'gpumem': 'Resources/peak_gpu_mem_gb', 'G': 'Loss/G/loss',
            'D': 'Loss/D/loss', 'pl': 'Loss/pl_penalty', 'ETA': 'Timing/eta_hours'}
    out = {}
    for short, key in keys.items():
        if key in fields:
            out[short] = f'{fields[key]:.3g}' + ('h' if short == 'ETA' else '')
    return out


class TickLog:
    """Rank-0 outputs: a tqdm bar in kimg, ``stats.jsonl`` and TensorBoard scalars. Other ranks get a no-op."""

    def __init__(self, run_dir: Path, total_kimg: float, start_kimg: float, enabled: bool,
                 tensorboard: bool = True) -> None:
        self.enabled = enabled
        self._jsonl = None
        self._tb = None
        self._bar: Optional[tqdm] = None
        if not enabled:
            return
        self._jsonl = open(Path(run_dir) / 'stats.jsonl', 'a', encoding='utf-8')
        if tensorboard:
            self._tb = _summary_writer(run_dir)
        fmt = '{l_bar}{bar}| {n:.3f}/{total:.3f} kimg [{elapsed}<{remaining}{postfix}]'
        self._bar = tqdm(total=round(total_kimg, 3), initial=round(start_kimg, 3), unit='kimg', dynamic_ncols=True,
                         mininterval=1.0, bar_format=fmt)

    def advance(self, kimg: float) -> None:
        """Move the bar to ``kimg``."""
        if self._bar is not None:  # absolute position, stopped at the total: the last step may pass it by part of
            self._bar.n = min(round(kimg, 6), self._bar.total)  # a batch, and summed float deltas by an ulp
            self._bar.update(0)  # redraws when tqdm's mininterval is due

    def tick(self, kimg: float, fields: dict[str, float]) -> None:
        """Write one tick: a JSON line, TensorBoard scalars at step ``kimg``, and the bar postfix."""
        if not self.enabled:
            return
        record = {'kimg': kimg, 'timestamp': time.time(), **fields}
        self._jsonl.write(json.dumps(record) + '\n')
        self._jsonl.flush()
        if self._tb is not None:
            for name, value in fields.items():
                self._tb.add_scalar(name, value, global_step=int(round(kimg * 1000)))
            self._tb.flush()
        self._bar.set_postfix(format_postfix(fields), refresh=True)

    def message(self, text: str) -> None:
        """A line of text that does not break the bar."""
        if self._bar is not None:
            self._bar.write(text)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        if self._jsonl is not None:
            self._jsonl.close()
        if self._tb is not None:
            self._tb.close()
        self._bar = self._jsonl = self._tb = None


def _summary_writer(run_dir: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as e:
        log.warning('TensorBoard logging is off (%s); pip install tensorboard to enable it', e)
        return None
    return SummaryWriter(str(run_dir))
