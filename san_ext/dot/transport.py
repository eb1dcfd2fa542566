"""Discriminator optimal transport (Tanaka et al., NeurIPS 2019): move samples along a critic used as a
Kantorovich potential, in target space or in G's latent space, and the naive baseline that ascends D alone.

DOT solves T(y) in argmin_x ||x - y||_2 - D(x) / k_eff (Tanaka 2019, Eq. 6; the 2023 errata: a minimiser, not
the unique one) by gradient descent from x = y, with ``delta`` added inside the norm so its gradient is defined at
the start (the paper's code uses 0.001). The objective is a sum of per-sample terms, so every sample moves
independently: chunking (``batch_size``) does not change the result, for SGD or for Adam (element-wise state).
Each step rebuilds the graph; only the moving tensor gets a gradient (``torch.autograd.grad``), so G's and D's
parameters keep their ``.grad`` and ``requires_grad``. Imports only torch and the standard library.
"""

from __future__ import annotations

import math
from typing import Callable, Optional, Union

import torch

from .critic import Critic, _takes_class_arg, class_ids, critic_scores, num_classes_of, one_hot_labels
from .keff import _check_prior, _chunks, call_generator, estimate_k_eff, estimate_latent_k_eff

__all__ = ['ADAM_BETAS', 'OPTIMIZERS', 'latent_space_dot', 'naive_latent_transport', 'naive_transport',
           'target_space_dot']

OPTIMIZERS = ('sgd', 'adam')
ADAM_BETAS = (0.0, 0.9)  # the DOT code's Adam (beta1 = 0, beta2 = 0.9)
KEff = Union[float, torch.Tensor]
Objective = Callable[[torch.Tensor, slice], torch.Tensor]  # (moving x chunk, its rows) -> per-sample loss [n]


def _check_run(steps: object, lr: object, opt: str, delta: object = 0.0) -> None:
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise ValueError(f'steps must be an int >= 0 (0 returns the input unchanged), got {steps!r}')
    if not isinstance(lr, (int, float)) or not math.isfinite(lr) or lr <= 0:
        raise ValueError(f'lr must be a finite number > 0, got {lr!r}')
    if opt not in OPTIMIZERS:
        raise ValueError(f'unknown opt {opt!r}; known: {", ".join(OPTIMIZERS)}')
    if not isinstance(delta, (int, float)) or not math.isfinite(delta) or delta < 0:
        raise ValueError(f'delta must be a finite number >= 0, got {delta!r}')


def _check_samples(name: str, x: object) -> torch.Tensor:
    if not isinstance(x, torch.Tensor) or x.ndim < 1 or not x.is_floating_point():
        got = f'{list(x.shape)} {x.dtype}' if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f'{name} must be a float tensor [N, ...], got {got}')
    return x


def _labels(c: Optional[torch.Tensor], n: int, G: Optional[Callable], D: Critic,
            num_classes: Optional[int] = None) -> tuple[Optional[torch.Tensor], Optional[torch.Tensor]]:
    """(one-hot labels for the networks, class ids [N]) or (None, None); rejects labels for an unconditional net."""
    if c is None:
        return None, None
    for name, net in (('G', G), ('D', D)):
        if net is not None and not _takes_class_arg(net):
            raise ValueError(f'class labels c (shape {list(c.shape)}) were given but {name} is unconditional (it '
                             f'takes no class argument or declares c_dim=0); drop c or use a conditional {name}')
    ids = class_ids(c, n)
    return one_hot_labels(c, n, num_classes_of(G, D, c=c, num_classes=num_classes)), ids


def _k_per_sample(k_eff: KEff, ids: Optional[torch.Tensor], n: int, x: torch.Tensor) -> torch.Tensor:
    """k_eff as a tensor broadcastable to [N]: a scalar, or a [num_classes] table indexed by each sample's class."""
    k = torch.as_tensor(k_eff, dtype=torch.float32).to(x.device)
    if k.ndim == 1 and (k.numel() > 1 or ids is not None):
        if ids is None:
            raise ValueError(f'k_eff has {k.numel()} entries (one per class) but no class labels c were given')
        if ids.numel() and int(ids.max()) >= k.numel():
            raise ValueError(f'class id {int(ids.max())} has no entry in k_eff ({k.numel()} classes)')
        k = k[ids.to(x.device)]
    elif k.numel() == 1:
        k = k.reshape([])
    else:
        raise ValueError(f'k_eff must be a number, a 0-dim tensor or [num_classes], got shape {list(k.shape)}')
    bad = ~(torch.isfinite(k) & (k > 0))
    if bool(bad.any()):
        which = '' if k.ndim == 0 else f' for class {int(ids[bad.nonzero()[0, 0]])}'
        raise ValueError(f'k_eff{which} must be finite and > 0, got {k.reshape(-1)[bad.reshape(-1)][0].item()} (0: '
                         'the critic is constant on the estimation samples; nan: no estimate for that class)')
    return k.to(x.dtype)


def _descend(x0: torch.Tensor, objective: Objective, *, steps: int, lr: float, opt: str,
             batch_size: Optional[int], prior: Optional[str] = None) -> torch.Tensor:
    """Minimise ``objective(x, rows).sum()`` from ``x0`` with ``steps`` SGD or Adam steps, chunk by chunk.

    ``prior='normal'``: the gradient is projected on the tangent space of the sphere through x, g - x (g.x)/||x||^2
    (per sample), so ||x|| changes only to second order in lr; the DOT code divides by sqrt(dim) instead, which is
    not a projection. ``prior='uniform'``: x is clipped to [-1, 1] after each step.
    """
    out = []
    for rows in _chunks(x0.shape[0], batch_size):
        x = x0[rows].detach().clone().requires_grad_(True)
        optim = torch.optim.SGD([x], lr=lr) if opt == 'sgd' else torch.optim.Adam([x], lr=lr, betas=ADAM_BETAS)
        for _ in range(steps):
            with torch.enable_grad():
                (g,) = torch.autograd.grad(objective(x, rows).sum(), [x])
            if prior == 'normal':
                flat, gf = x.detach().reshape(len(x), -1), g.reshape(len(x), -1)
                coef = (gf * flat).sum(1, keepdim=True) / (flat * flat).sum(1, keepdim=True).clamp_min(1e-12)
                g = (gf - coef * flat).reshape(g.shape)
            x.grad = g
            optim.step()
            if prior == 'uniform':
                with torch.no_grad():
                    x.clamp_(-1, 1)
        out.append(x.detach())
    return torch.cat(out) if out else x0.detach().clone()


def _distance(x: torch.Tensor, y: torch.Tensor, delta: float) -> torch.Tensor:
    """||x - y + delta||_2 per sample (delta added to every coordinate, as in the DOT code) -> [n]."""
    return (x - y + delta).reshape(len(x), -1).norm(dim=1)


def target_space_dot(D: Critic, x: torch.Tensor, k_eff: Optional[KEff], *, c: Optional[torch.Tensor] = None,
                     steps: int = 10, lr: float = 0.01, opt: str = 'sgd', delta: float = 1e-3,
                     batch_size: Optional[int] = None, num_classes: Optional[int] = None) -> torch.Tensor:
    """Target-space DOT: minimise ||x - x_y + delta|| - D(x[, c]) / k_eff from x_y = ``x`` (Tanaka 2019, Alg. 1).

    ``k_eff``: a number, a 0-dim or [num_classes] tensor (indexed by each sample's class), or None to estimate it on
    ``x`` itself (:func:`estimate_k_eff`, 100 pairs). Returns the moved samples, detached.
    """
    _check_run(steps, lr, opt, delta)
    y = _check_samples('x', x).detach()
    c_net, ids = _labels(c, len(y), None, D, num_classes)
    if steps == 0 or len(y) == 0:
        return y.clone()
    if k_eff is None:
        k_eff = estimate_k_eff(D, y, c_net, batch_size=batch_size)
    k = _k_per_sample(k_eff, ids, len(y), y)

    def objective(xi: torch.Tensor, rows: slice) -> torch.Tensor:
        ki = k if k.ndim == 0 else k[rows]
        return _distance(xi, y[rows], delta) - critic_scores(D, xi, None if c_net is None else c_net[rows]) / ki

    return _descend(y, objective, steps=steps, lr=lr, opt=opt, batch_size=batch_size)


def latent_space_dot(G: Callable, D: Critic, z: torch.Tensor, c: Optional[torch.Tensor] = None, *,
                     k_eff: Optional[KEff] = None, steps: int = 10, lr: float = 0.01, prior: str = 'normal',
                     opt: str = 'sgd', delta: float = 1e-3, batch_size: Optional[int] = None, pairs: int = 100,
                     generator: Optional[torch.Generator] = None, num_classes: Optional[int] = None) -> torch.Tensor:
    """Latent-space DOT: minimise ||z - z_y + delta|| - D(G(z[, c])[, c]) / k_eff from z_y = ``z`` (Tanaka 2019,
    Alg. 2), keeping z on its prior's support: sphere projection for ``'normal'``, clipping for ``'uniform'``.

    ``k_eff=None`` estimates it with :func:`estimate_latent_k_eff` on 2 * ``pairs`` fresh latents from the prior
    (``generator`` seeds them), per class (for the classes in ``c``) when ``c`` is given. Returns the moved z.
    Put G and D in eval mode first (the DOT code runs both in test mode; a projected D augments in training mode).
    """
    _check_run(steps, lr, opt, delta)
    _check_prior(prior)
    zy = _check_samples('z', z).detach()
    c_net, ids = _labels(c, len(zy), G, D, num_classes)
    if steps == 0 or len(zy) == 0:
        return zy.clone()
    if k_eff is None:
        classes = None if ids is None else ids.unique().tolist()
        k_eff = estimate_latent_k_eff(G, D, zy.shape[1:], classes=classes, prior=prior, pairs=pairs,
                                      generator=generator, batch_size=batch_size, device=zy.device,
                                      num_classes=None if c_net is None else c_net.shape[1])
    k = _k_per_sample(k_eff, ids, len(zy), zy)

    def objective(zi: torch.Tensor, rows: slice) -> torch.Tensor:
        ci = None if c_net is None else c_net[rows]
        ki = k if k.ndim == 0 else k[rows]
        return _distance(zi, zy[rows], delta) - critic_scores(D, call_generator(G, zi, ci), ci) / ki

    return _descend(zy, objective, steps=steps, lr=lr, opt=opt, batch_size=batch_size, prior=prior)


def naive_transport(D: Critic, x: torch.Tensor, *, c: Optional[torch.Tensor] = None, steps: int = 10,
                    lr: float = 0.01, opt: str = 'sgd', batch_size: Optional[int] = None, k_eff: KEff = 1.0,
                    num_classes: Optional[int] = None) -> torch.Tensor:
    """Naive transport, DOT's baseline: gradient ascent on D(x[, c]) / k_eff alone (no distance term), target space.
    ``k_eff`` (default 1) only rescales the step so that it can match a DOT run's."""
    _check_run(steps, lr, opt)
    y = _check_samples('x', x).detach()
    c_net, ids = _labels(c, len(y), None, D, num_classes)
    if steps == 0 or len(y) == 0:
        return y.clone()
    k = _k_per_sample(k_eff, ids, len(y), y)

    def objective(xi: torch.Tensor, rows: slice) -> torch.Tensor:
        ki = k if k.ndim == 0 else k[rows]
        return -critic_scores(D, xi, None if c_net is None else c_net[rows]) / ki

    return _descend(y, objective, steps=steps, lr=lr, opt=opt, batch_size=batch_size)


def naive_latent_transport(G: Callable, D: Critic, z: torch.Tensor, c: Optional[torch.Tensor] = None, *,
                           steps: int = 10, lr: float = 0.01, prior: str = 'normal', opt: str = 'sgd',
                           batch_size: Optional[int] = None, k_eff: KEff = 1.0,
                           num_classes: Optional[int] = None) -> torch.Tensor:
    """Naive transport in latent space: ascend D(G(z[, c])[, c]) / k_eff alone, with the same prior handling as
    :func:`latent_space_dot`."""
    _check_run(steps, lr, opt)
    _check_prior(prior)
    zy = _check_samples('z', z).detach()
    c_net, ids = _labels(c, len(zy), G, D, num_classes)
    if steps == 0 or len(zy) == 0:
        return zy.clone()
    k = _k_per_sample(k_eff, ids, len(zy), zy)

    def objective(zi: torch.Tensor, rows: slice) -> torch.Tensor:
        ci = None if c_net is None else c_net[rows]
        ki = k if k.ndim == 0 else k[rows]
        return -critic_scores(D, call_generator(G, zi, ci), ci) / ki

    return _descend(zy, objective, steps=steps, lr=lr, opt=opt, batch_size=batch_size, prior=prior)
