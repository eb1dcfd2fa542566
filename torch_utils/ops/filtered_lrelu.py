"""Alias-free activation of StyleGAN3: upsample -> bias + leaky ReLU + gain + clamp -> downsample.

``filtered_lrelu(x, fu, fd, b, up, down, padding, gain, slope, clamp)`` is composed of :func:`upfirdn2d` and
:func:`bias_act`, so each stage runs its CUDA kernel where one is built and the reference otherwise, and the whole
op is differentiable twice. (StyleGAN3 fuses the three stages into one kernel; we do not, see the README.)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Optional, Union

import torch

from .bias_act import bias_act
from .upfirdn2d import upfirdn2d

__all__ = ['filtered_lrelu']


def filtered_lrelu(x: torch.Tensor, fu: Optional[torch.Tensor] = None, fd: Optional[torch.Tensor] = None,
                   b: Optional[torch.Tensor] = None, up: int = 1, down: int = 1,
                   padding: Union[int, Sequence[int]] = 0, gain: float = math.sqrt(2), slope: float = 0.2,
                   clamp: Optional[float] = None, flip_filter: bool = False, impl: str = 'auto') -> torch.Tensor:
    """Bias, upsample by ``up`` with filter ``fu`` (and ``padding``), leaky ReLU, multiply by ``gain``, clamp to
    [-clamp, clamp], then downsample by ``down`` with filter ``fd``. ``x``: [N, C, H, W]; ``b``: [C].

    The upsampling carries gain ``up**2`` so that a normalized ``fu`` keeps the signal's level, as in StyleGAN3.
    """
    if not isinstance(x, torch.Tensor) or x.ndim != 4:
        raise ValueError(f'filtered_lrelu expects x of shape [N, C, H, W], got '
                         f'{list(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}')
    for name, value in (('up', up), ('down', down)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f'filtered_lrelu {name} must be an int >= 1, got {value!r}')
    if not slope >= 0 or not gain > 0:
        raise ValueError(f'filtered_lrelu needs slope >= 0 and gain > 0, got slope={slope}, gain={gain}')
    x = bias_act(x, b, dim=1, act='linear', impl=impl)
    x = upfirdn2d(x, fu, up=up, padding=padding, gain=up ** 2, flip_filter=flip_filter, impl=impl)
    x = bias_act(x, act='lrelu', alpha=slope, gain=gain, clamp=clamp, impl=impl)
    return upfirdn2d(x, fd, down=down, flip_filter=flip_filter, impl=impl)
