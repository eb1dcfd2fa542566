"""Shared pieces of the weight conversion: the per-network report and strict loading of renamed tensors.

Each converter (:mod:`.generator`, :mod:`.discriminator`) renames upstream's state-dict keys to ours, records every
upstream tensor it deliberately leaves out (with the reason) and every function-preserving rewrite, then calls
:func:`load_converted`, which refuses (``strict=True``) when any of our tensors stays unfilled, any upstream tensor
is neither mapped nor explained, or a shape differs.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from torch import nn

__all__ = ['ConversionError', 'ConversionReport', 'load_converted']

log = logging.getLogger(__name__)

_SHOW = 12  # keys listed per problem in an error message


class ConversionError(ValueError):
    """A recorded network does not map onto ours; the message lists the keys and what to do."""


@dataclass
class ConversionReport:
    """What happened to one network's tensors: mapped, dropped with a reason, rewritten, or left over."""

    component: str
    mapped: int = 0
    dropped: dict[str, str] = field(default_factory=dict)     # upstream key -> why it is not needed
    rewritten: list[str] = field(default_factory=list)        # function-preserving conversions, in words
    warnings: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)          # our keys left at their init (strict=False only)
    unexpected: list[str] = field(default_factory=list)       # upstream keys nobody used (strict=False only)

    def drop(self, key: str, reason: str) -> None:
        self.dropped[key] = reason

    def warn(self, message: str) -> None:
        self.warnings.append(message)
        log.warning('%s: %s', self.component, message)

    def summary(self) -> str:
        """One paragraph for logs and the CLI."""
        lines = [f'{self.component}: {self.mapped} tensors mapped']
        reasons: dict[str, int] = {}
        for reason in self.dropped.values():
            reasons[reason] = reasons.get(reason, 0) + 1
        lines += [f'  dropped {n}: {reason}' for reason, n in reasons.items()]
        lines += [f'  rewritten: {r}' for r in self.rewritten]
        lines += [f'  warning: {w}' for w in self.warnings]
        if self.missing:
            lines.append(f'  NOT FILLED (kept their init): {_listing(self.missing)}')
        if self.unexpected:
            lines.append(f'  NOT USED: {_listing(self.unexpected)}')
        return '\n'.join(lines)

    def to_dict(self) -> dict:
        return {'component': self.component, 'mapped': self.mapped, 'dropped': dict(self.dropped),
                'rewritten': list(self.rewritten), 'warnings': list(self.warnings), 'missing': list(self.missing),
                'unexpected': list(self.unexpected)}


def _listing(keys: list[str]) -> str:
    keys = sorted(keys)
    more = f' ... and {len(keys) - _SHOW} more' if len(keys) > _SHOW else ''
    return ', '.join(keys[:_SHOW]) + more


def load_converted(module: nn.Module, tensors: Mapping[str, torch.Tensor], report: ConversionReport,
                   strict: bool = True, assign: bool = False) -> None:
    """Load renamed ``tensors`` into ``module``; with ``strict`` every key must match both ways, shapes equal.

    ``assign=True`` adopts the tensors instead of copying (used for networks built on the meta device).
    """
    own = module.state_dict()
    missing = [k for k in own if k not in tensors]
    unexpected = [k for k in tensors if k not in own]
    shapes = [f'{k} {list(tensors[k].shape)} -> ours {list(own[k].shape)}' for k in own
              if k in tensors and tensors[k].shape != own[k].shape]
    if shapes:
        raise ConversionError(f'{report.component}: the recorded tensors do not fit our network (shapes differ): '
                              f'{_listing(shapes)}. The inferred configuration is wrong; please report this with '
                              'the pickle name.')
    if strict and (missing or unexpected):
        problems = []
        if missing:
            problems.append(f'our tensors with no counterpart in the pickle: {_listing(missing)}')
        if unexpected:
            problems.append(f'tensors in the pickle that no rule maps: {_listing(unexpected)}')
        raise ConversionError(f'{report.component}: {"; ".join(problems)}. Pass strict=False to load anyway '
                              '(unfilled tensors keep their random init and are listed in the report).')
    report.missing, report.unexpected = missing, unexpected
    usable = {k: v for k, v in tensors.items() if k in own}
    with torch.no_grad():
        if any(v.is_meta for v in own.values()) and not assign:
            raise ConversionError(f'{report.component}: the network was built on the meta device; load with assign')
        module.load_state_dict(usable, strict=False, assign=assign)
    report.mapped = len(usable)
    leftover = [n for n, t in [*module.named_parameters(), *module.named_buffers()] if t.is_meta]
    if leftover:
        raise ConversionError(f'{report.component}: tensors not filled from the pickle: {_listing(leftover)}')
