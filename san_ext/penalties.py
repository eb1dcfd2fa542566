"""Zero-centred gradient penalties R1 and R2, their schedule and their cheap variants (R3GAN's regulariser).

R3GAN (Huang et al., NeurIPS 2024, Eq. 3-4) trains the relativistic pairing loss with
R1 = E_real[|grad_x D(x)|^2] and R2 = E_fake[|grad_x D(x)|^2], both weighted gamma / 2: zero-centred penalties at the
data make the dynamics locally convergent (Mescheder et al. 2018, Theorem 4.1; R3GAN Sec. 2). Here:

- :func:`r1_penalty` / :func:`r2_penalty`: per-sample |grad_x sum(D(x))|^2 summed over every non-batch dim (C, H, W),
  with ``create_graph`` so the D step can back-propagate through it;
- :func:`gamma_at`: gamma decayed from ``gamma`` to ``gamma_end`` with a cosine over training (R3GAN's schedule);
- :func:`lazy_scale`: lazy regularisation (StyleGAN2, Karras et al. 2020, Sec. 3.1): the penalty every ``k`` D steps,
  multiplied by ``k``, so its expected weight per step is unchanged;
- :func:`finite_difference_penalty`: |D(x + sigma u) - D(x)|^2 / sigma^2 with u ~ N(0, I), the derivative-free
  estimate used by AFM-style trainers: E_u[(u . grad D)^2] = |grad D|^2, so it estimates R1 up to O(sigma^2)
  without double back-propagation.

Which one voids R3GAN's theory: the finite-difference penalty. With sigma > 0 it regularises a Gaussian-smoothed D,
not grad D at the data points, so the zero-centred-penalty convergence argument no longer applies; lazy
application keeps the same penalty (in expectation over steps) and only spaces it out.

SAN: penalise the ``fun`` logit of ``D(x, flg_train=True)``: its gradient reaches the features and the scale, never
the direction omega, which stays trained by the direction term alone (the penalty is part of the feature objective).

Imports only torch (the drop-in rule: it works inside someone else's training loop).
"""

from __future__ import annotations

import math
from typing import Callable, Optional

import torch

__all__ = ['r1_penalty', 'r2_penalty', 'gamma_at', 'lazy_scale', 'finite_difference_penalty']


def _check(logits: torch.Tensor, x: torch.Tensor) -> None:
    if isinstance(logits, (tuple, list)):
        raise TypeError('the penalty takes one logit tensor; for SAN pass the fun logit: D(x, flg_train=True)[0]')
    if not x.requires_grad:
        raise ValueError('x must require grad and be the input D was called on: x.requires_grad_(True) before D(x)')
    if logits.shape[0] != x.shape[0]:
        raise ValueError(f'logits and x must share the batch dim, got {list(logits.shape)} and {list(x.shape)}')


def r1_penalty(logits: torch.Tensor, x: torch.Tensor, create_graph: bool = True) -> torch.Tensor:
    """Per-sample |grad_x sum_j D(x)_j|^2 ``[N]`` (R1 on real ``x``; R3GAN Eq. 3), summed over all non-batch dims.

    ``logits`` ``[N]`` or ``[N, M]`` must come from ``D(x)`` with ``x.requires_grad``; several logits per sample (a
    projected D's logit maps) are summed first. ``create_graph=True`` (the default) for a D step that
    back-propagates the penalty into D's parameters.
    """
    _check(logits, x)
    (grad,) = torch.autograd.grad(logits.sum(), x, create_graph=create_graph)
    return grad.square().reshape(grad.shape[0], -1).sum(dim=1)


def r2_penalty(logits: torch.Tensor, x: torch.Tensor, create_graph: bool = True) -> torch.Tensor:
    """Per-sample |grad_x D(x)|^2 on generated ``x`` (R2; R3GAN Eq. 4): :func:`r1_penalty` at the fakes."""
    return r1_penalty(logits, x, create_graph)


def gamma_at(gamma: float, gamma_end: Optional[float], cur_nimg: float, total_nimg: float) -> float:
    """gamma_end + (gamma - gamma_end) (1 + cos(pi t)) / 2 with t = cur_nimg / total_nimg clipped to [0, 1]: a cosine
    from ``gamma`` at the start to ``gamma_end`` at the end (R3GAN's schedule); constant when ``gamma_end`` is None."""
    if gamma_end is None or total_nimg <= 0:
        return float(gamma)
    t = min(max(cur_nimg / total_nimg, 0.0), 1.0)
    return float(gamma_end + (gamma - gamma_end) * 0.5 * (1.0 + math.cos(math.pi * t)))


def lazy_scale(step: int, every: int) -> int:
    """Weight of the penalty at D step ``step`` (0-based) under lazy regularisation every ``every`` steps: ``every``
    on the steps it runs (step % every == 0), else 0 (skip computing it)."""
    if every < 1:
        raise ValueError(f'regularise every k >= 1 steps, got {every}')
    return every if step % every == 0 else 0


def finite_difference_penalty(D: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, sigma: float = 0.01,
                              generator: Optional[torch.Generator] = None,
                              logits: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Per-sample |D(x + sigma u) - D(x)|^2 / sigma^2, u ~ N(0, I) ``[N]``: an estimate of |grad D|^2 without double
    back-propagation (unbiased as sigma -> 0). ``logits`` = D(x) when already computed; several logits per sample
    are summed first, as in :func:`r1_penalty`. Voids R3GAN's convergence argument (module docstring)."""
    if not sigma > 0:
        raise ValueError(f'sigma must be > 0, got {sigma}')
    u = torch.randn(x.shape, generator=generator, dtype=x.dtype).to(x.device)
    base = D(x) if logits is None else logits
    moved = D(x + sigma * u)
    diff = (moved.reshape(moved.shape[0], -1).sum(1) - base.reshape(base.shape[0], -1).sum(1)) / sigma
    return diff.square()
