"""Helpers shared by the benchmarks (and the studies' reports): warm-up-then-median timing, the JSON result file
and the table renderer."""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Callable

import torch

__all__ = ['median_seconds', 'render_table', 'write_json']


def median_seconds(fn: Callable[[], object], device: str, warmup: int, repeats: int) -> float:
    """Median wall seconds of ``fn()`` over ``repeats`` calls after ``warmup`` untimed ones (synchronised on GPU)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        if device == 'cuda':
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device == 'cuda':
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def write_json(out: str | Path, result: dict) -> Path:
    """Write ``result`` to ``out`` (creating folders) and return the path."""
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2))
    return path


def render_table(header: Sequence[str], body: Sequence[Sequence[str]], n_left: int, markdown: bool = False) -> str:
    """Rows of strings as an aligned text table or a Markdown table; the first ``n_left`` columns (names) align
    left, the others (numbers) right."""
    if markdown:
        rule = '|' + '|'.join(['---'] * n_left + ['---:'] * (len(header) - n_left)) + '|'
        return '\n'.join(['| ' + ' | '.join(header) + ' |', rule] + ['| ' + ' | '.join(r) + ' |' for r in body]) + '\n'
    widths = [max(len(h), *(len(r[i]) for r in body)) for i, h in enumerate(header)]

    def line(cells: Sequence[str]) -> str:
        return '  '.join(c.ljust(w) if i < n_left else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))
    return '\n'.join([line(header), '  '.join('-' * w for w in widths)] + [line(r) for r in body]) + '\n'
