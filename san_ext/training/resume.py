"""Resume: load a training state into freshly built networks and optimizers, with this command's learning rates.

The state restores G, D, G_ema, both Adam states, progress and the loop's extra state. Adam's ``load_state_dict``
would also restore the learning rates the state was trained with; the rates of *this* command (``--glr``, ``--dlr``,
as ``config.json`` records them) are put back afterwards and a change is logged, so lowering ``--glr`` after a NaN
stop (as that message advises) takes effect.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from san_ext.checkpoint import CheckpointError, TrainingState, generator_spec, load_training_state

from .config import OptimConfig
from .errors import ResumeError

__all__ = ['apply_optimizer_settings', 'load_state']

log = logging.getLogger(__name__)


def load_state(path: Path, modules: dict[str, nn.Module], optimizers: dict[str, torch.optim.Optimizer],
               optim: OptimConfig) -> TrainingState:
    """Read ``path`` and load it into ``modules`` (G, D, G_ema) and ``optimizers`` (G, D), then apply ``optim``'s
    learning rates; returns the state (progress, extra). Every failure is a one-line :class:`ResumeError`."""
    try:
        st = load_training_state(path)
    except CheckpointError as e:
        raise ResumeError(f'--resume: {e}') from e
    spec = generator_spec(modules['G'])
    if st.generator != spec:
        raise ResumeError(f'{path} holds a generator of another architecture than this run\'s ('
                          f'{_spec_difference(st.generator, spec)}); resume with the options of that run (its '
                          'config.json)')
    for name, module in modules.items():
        try:
            module.load_state_dict(st.modules[name], strict=True)
        except RuntimeError as e:
            first = str(e).splitlines()[1].strip() if len(str(e).splitlines()) > 1 else str(e)
            raise ResumeError(f'{path}: {name} does not fit this run\'s {name} (other options?): {first}') from e
    for name, opt in optimizers.items():
        opt.load_state_dict(st.optimizers[name])
        apply_optimizer_settings(opt, optim.adam_kwargs(name), f'--{name.lower()}lr', path)
    return st


def _spec_difference(saved: Any, current: dict) -> str:
    """The first field in which two generator specs differ, as ``name: saved (state) vs current (this run)``."""
    if not isinstance(saved, dict):
        return f'the state records {saved!r}'
    for section in ('cfg', 'stages'):
        a, b = saved.get(section), current.get(section)
        if isinstance(a, dict) and isinstance(b, dict):
            for key in sorted(set(a) | set(b)):
                if a.get(key) != b.get(key):
                    return f'{key}: {a.get(key)!r} in the state vs {b.get(key)!r} in this run'
        elif a != b:
            return f'{section}: {a!r} in the state vs {b!r} in this run'
    return 'specs differ'


def apply_optimizer_settings(opt: torch.optim.Optimizer, adam: dict, flag: str, path: Path) -> None:
    """Set lr, betas and eps of every param group to ``adam`` (this run's config), logging a changed lr."""
    old = {group['lr'] for group in opt.param_groups}
    for group in opt.param_groups:
        group.update(lr=adam['lr'], betas=tuple(adam['betas']), eps=adam['eps'])
    if old != {adam['lr']}:
        log.warning('%s: %s was trained with Adam lr %s; continuing with %g from this command\'s %s', flag,
                    Path(path).name, ', '.join(f'{v:g}' for v in sorted(old)), adam['lr'], flag)
