"""A table of a network's submodules with parameter counts and output shapes, printed at the start of training.

Users check their model size against the paper (166M for StyleGAN-XL's ImageNet 256² generator), so the table
separates trainable from frozen parameters and counts buffers apart.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import torch
from torch import nn

__all__ = ['SummaryRow', 'summarize', 'summary']


@dataclass(frozen=True)
class SummaryRow:
    """One submodule: its dotted name, parameters it owns (not its children's), and its output shapes."""

    name: str
    kind: str
    trainable: int
    frozen: int
    buffers: int
    outputs: tuple


def _shapes(out) -> tuple:
    if isinstance(out, torch.Tensor):
        return (tuple(out.shape),)
    if isinstance(out, (tuple, list)):
        return tuple(s for o in out for s in _shapes(o))
    if isinstance(out, dict):
        return tuple(s for o in out.values() for s in _shapes(o))
    return ()


def _record(outputs: dict, name: str, module: nn.Module, inputs, output) -> None:
    outputs.setdefault(name, _shapes(output))  # first call only; returns None so the output is left alone


def _own_counts(module: nn.Module, depth_left: int) -> tuple[int, int, int]:
    """Parameters of ``module`` itself, or of its whole subtree when it is a leaf of the table."""
    params = module.parameters(recurse=depth_left == 0)
    buffers = module.buffers(recurse=depth_left == 0)
    trainable = frozen = 0
    for p in params:
        if p.requires_grad:
            trainable += p.numel()
        else:
            frozen += p.numel()
    return trainable, frozen, sum(b.numel() for b in buffers)


def summarize(module: nn.Module, *inputs, max_depth: int = 2, **kwargs) -> list[SummaryRow]:
    """Run ``module(*inputs, **kwargs)`` once under no_grad and return one row per submodule up to ``max_depth``.

    Submodules deeper than ``max_depth`` are folded into their ancestor at that depth.
    """
    outputs: dict[str, tuple] = {}
    handles = []
    entries = []
    for name, sub in module.named_modules():
        depth = 0 if not name else name.count('.') + 1
        if depth > max_depth:
            continue
        entries.append((name, sub, max_depth - depth))
        handles.append(sub.register_forward_hook(partial(_record, outputs, name)))
    try:
        with torch.no_grad():
            module(*inputs, **kwargs)
    finally:
        for h in handles:
            h.remove()
    return [SummaryRow(name or '<top>', type(sub).__name__, *_own_counts(sub, left), outputs.get(name, ()))
            for name, sub, left in entries]


def _fmt(n: int) -> str:
    return '-' if n == 0 else f'{n / 1e6:.3f}M' if n >= 1e5 else f'{n:,}'


def summary(module: nn.Module, *inputs, max_depth: int = 2, **kwargs) -> str:
    """The table of :func:`summarize` as text, with totals; the caller prints or logs it (rank 0 only)."""
    rows = summarize(module, *inputs, max_depth=max_depth, **kwargs)
    header = ('module', 'type', 'trainable', 'frozen', 'buffers', 'output shape')
    body = [(r.name, r.kind, _fmt(r.trainable), _fmt(r.frozen), _fmt(r.buffers),
             ', '.join(str(list(s)) for s in r.outputs) or '-') for r in rows]
    total_train = sum(r.trainable for r in rows)
    total_frozen = sum(r.frozen for r in rows)
    body.append(('total', '', _fmt(total_train), _fmt(total_frozen), _fmt(sum(r.buffers for r in rows)),
                 f'{(total_train + total_frozen) / 1e6:.3f}M parameters'))
    widths = [max(len(str(row[i])) for row in [header, *body]) for i in range(len(header))]
    lines = ['  '.join(str(c).ljust(w) for c, w in zip(row, widths)) for row in [header, *body]]
    lines.insert(1, '  '.join('-' * w for w in widths))
    lines.insert(len(lines) - 1, lines[1])
    return '\n'.join(lines)
