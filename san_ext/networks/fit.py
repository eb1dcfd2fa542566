"""Build a network that a checkpoint's record declares only once the declaration fits the checkpoint's tensors.

A sidecar is plain JSON that anyone can edit: one declaring ``channel_max=10**6`` would make the loader allocate
terabytes before ``load_state_dict`` could notice that the file holds a few megabytes. :func:`build_fitting` first
bounds every integer of the record by the number of values the file holds, then builds the network on the ``meta``
device (no memory, no initialisation work) and compares its state-dict shapes with the file's tensors; only a
network that matches is built for real.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, Callable

import torch
from torch import nn

__all__ = ['build_fitting']


def _ints(record: Any, key: str = '') -> Iterator[tuple[str, int]]:
    """(dotted key, value) of every integer (not bool) in a JSON-like record."""
    if isinstance(record, Mapping):
        for k, v in record.items():
            yield from _ints(v, f'{key}.{k}' if key else str(k))
    elif isinstance(record, (list, tuple)):
        for i, v in enumerate(record):
            yield from _ints(v, f'{key}[{i}]')
    elif isinstance(record, int) and not isinstance(record, bool):
        yield key, record


def _first_difference(declared: Mapping[str, tuple], found: Mapping[str, tuple]) -> str:
    only = sorted(set(declared) ^ set(found))
    key = only[0] if only else next(k for k in declared if declared[k] != found[k])
    return f'{key}: {list(declared[key]) if key in declared else "absent"} declared, ' \
           f'{list(found[key]) if key in found else "absent"} in the file'


def build_fitting(build: Callable[[], nn.Module], record: Any, tensors: Mapping[str, torch.Tensor]) -> nn.Module:
    """``build()`` (which builds from ``record``) once the network it declares has exactly the state-dict keys and
    shapes of ``tensors``; raises ValueError naming the first field or tensor that does not fit, before allocating
    anything of the declared size."""
    total = sum(t.numel() for t in tensors.values())
    for key, value in _ints(record):
        if value > max(total, 1 << 16):  # no count or width of a network exceeds the values it holds
            raise ValueError(f'the record declares {key}={value}, more than the {total} values its tensor file holds')
    with torch.device('meta'):
        declared = {k: tuple(v.shape) for k, v in build().state_dict().items()}
    found = {k: tuple(v.shape) for k, v in tensors.items()}
    if declared != found:
        raise ValueError(f'the record declares another network than the tensor file holds ({len(declared)} tensors '
                         f'declared, {len(found)} in the file; first difference: {_first_difference(declared, found)})')
    return build()
