"""Helpers shared by the studies: name-list options, one-thread blocks, seed statistics and the spawn pool.

The table renderer and the JSON writer are the benchmarks' (``san_ext.bench.common``), re-exported here so a study
module imports its helpers from one place.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import queue
import time
from collections.abc import Iterator, Sequence
from typing import Any, Callable

import click
import numpy as np
import torch
from tqdm import tqdm

from san_ext.bench.common import render_table, write_json

__all__ = ['CommaList', 'log_finished', 'mean_std', 'pool_map', 'render_table', 'run_cells', 'run_timed',
           'single_thread', 'write_json']


class CommaList(click.ParamType):
    """A comma-separated list of names, each checked against ``choices``."""

    name = 'list'

    def __init__(self, choices: Sequence[str]) -> None:
        self.choices = tuple(choices)

    def convert(self, value, param, ctx) -> tuple[str, ...]:
        if isinstance(value, tuple):
            return value
        names = tuple(v.strip() for v in value.split(',') if v.strip())
        unknown = [v for v in names if v not in self.choices]
        if unknown or not names:
            self.fail(f'unknown name(s) {", ".join(map(repr, unknown)) or "(empty list)"}; '
                      f'choose from {",".join(self.choices)}', param, ctx)
        return names


@contextlib.contextmanager
def single_thread() -> Iterator[None]:
    """One intra-op thread inside the block: tiny networks run as fast, and a fixed thread count keeps float
    rounding (hence benchmark numbers) reproducible across machines."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample std over seeds (std 0 for one value); a diverged seed's NaN propagates to the row."""
    v = np.asarray(values, dtype=np.float64)
    return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0


def _cell_task(run_cell: Callable[..., dict], cfg: Any, progress: Any) -> dict:
    torch.set_num_threads(1)  # one core per worker: parallelism comes from the processes
    return run_cell(cfg, on_step=progress.put)


def run_cells(run_cell: Callable[..., dict], cells: Sequence[Any], workers: int, desc: str, unit: str = 'step',
              progress: bool = True) -> list[dict]:
    """``[run_cell(c, on_step=...) for c in cells]`` in this process, single-threaded, or in a spawn pool of
    ``workers`` single-threaded processes; results in input order, a tqdm bar over the cells' ``steps``.
    ``run_cell`` must be a module-level function (the pool pickles it by name)."""
    bar = tqdm(total=sum(c.steps for c in cells), desc=desc, unit=unit, unit_scale=True, mininterval=1.0,
               disable=not progress)
    if workers <= 1 or len(cells) == 1:
        with single_thread():
            results = [run_cell(c, on_step=bar.update) for c in cells]
    else:
        results = pool_map(_cell_task, [(run_cell, c) for c in cells], workers, bar.update)
    bar.close()
    return results


def run_timed(run_study: Callable[..., list[dict]], cells: Sequence[Any], workers: int, unit: str,
              log: logging.Logger) -> tuple[list[dict], dict]:
    """``run_study(cells, workers=workers)`` and its timing as results.json records it: wall seconds, the cells' CPU
    seconds (their ``train_cpu_s + eval_cpu_s``), the load average before and after and the core count. Logs the
    start on ``log`` (the study's logger)."""
    load = os.getloadavg()
    log.info('%d cells, %d %s each, %d worker(s); load average %.2f (%d cores)', len(cells),
             cells[0].steps if cells else 0, unit, workers, load[0], os.cpu_count() or 0)
    start = time.perf_counter()
    results = run_study(cells, workers=workers)
    wall = time.perf_counter() - start
    timing = dict(wall_s=wall, cells_cpu_s=sum(r['train_cpu_s'] + r['eval_cpu_s'] for r in results),
                  load_before=load, load_after=os.getloadavg(), cpu_count=os.cpu_count())
    return results, timing


def log_finished(log: logging.Logger, timing: dict, outdir: object) -> None:
    """The closing line of a study run from :func:`run_timed`'s ``timing``: wall and CPU seconds, the load average
    before and after, and where the outputs went."""
    log.info('study took %.1f s wall, its cells %.1f s of CPU (load average %.2f -> %.2f); wrote '
             '%s/{results.json,table.md,*.png}', timing['wall_s'], timing['cells_cpu_s'], timing['load_before'][0],
             timing['load_after'][0], outdir)


def pool_map(task: Callable[..., Any], arg_tuples: Sequence[tuple], workers: int, on_progress: Callable[[Any], Any]
             ) -> list:
    """``[task(*args, progress_queue) for args in arg_tuples]`` in a spawn pool of ``workers`` processes (results in
    input order); whatever the tasks put on the queue (e.g. step counts) is passed to ``on_progress`` as it comes."""
    ctx = multiprocessing.get_context('spawn')
    with ctx.Manager() as manager, ctx.Pool(min(workers, len(arg_tuples))) as pool:
        progress = manager.Queue()
        pending = [pool.apply_async(task, (*args, progress)) for args in arg_tuples]
        while not all(r.ready() for r in pending):
            with contextlib.suppress(queue.Empty):
                on_progress(progress.get(timeout=0.5))
        while not progress.empty():
            on_progress(progress.get())
        return [r.get() for r in pending]
