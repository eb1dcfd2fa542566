"""The effective Lipschitz constant k_eff that turns a critic into a transport potential (Tanaka 2019, Sec. 3).

k_eff = max over random pairs (i != j) of |D(p_i) - D(p_j)| / ||x_i - x_j||, with p = x (target space) or
p = G(z) and x = z (latent space). It is a sample estimate of the Lipschitz constant of D (or of D o G), an
underestimate of the true one; DOT moves a sample only where D's slope towards the data exceeds k_eff.
Imports only torch and the standard library.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Callable, Optional, Union

import torch

from .critic import Critic, class_ids, critic_scores, num_classes_of, one_hot_labels

__all__ = ['PRIORS', 'estimate_k_eff', 'estimate_latent_k_eff', 'sample_prior']

PRIORS = ('normal', 'uniform')


def _check_positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f'{name} must be an int >= 1, got {value!r}')
    return value


def _check_prior(prior: str) -> str:
    if prior not in PRIORS:
        raise ValueError(f'unknown prior {prior!r}; known: {", ".join(PRIORS)}')
    return prior


def call_generator(G: Callable, z: torch.Tensor, c: Optional[torch.Tensor]) -> torch.Tensor:
    """``G(z)`` or ``G(z, c)``."""
    return G(z) if c is None else G(z, c)


def _chunks(n: int, batch_size: Optional[int]) -> list[slice]:
    step = n if batch_size is None else _check_positive_int('batch_size', batch_size)
    return [slice(i, min(i + step, n)) for i in range(0, n, max(step, 1))]


def sample_prior(prior: str, shape: Sequence[int], *, device: Union[str, torch.device, None] = None,
                 dtype: torch.dtype = torch.float32, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Latents from the prior: N(0, I) (``'normal'``) or U[-1, 1] (``'uniform'``), drawn on the generator's device
    (CPU without one) and moved to ``device``, so a seeded CPU generator gives the same latents on every device."""
    where = generator.device if generator is not None else 'cpu'
    if _check_prior(prior) == 'normal':
        z = torch.randn(tuple(shape), generator=generator, device=where, dtype=dtype)
    else:
        z = torch.rand(tuple(shape), generator=generator, device=where, dtype=dtype) * 2 - 1
    return z.to(device or where)


def _random_pairs(idx: torch.Tensor, pairs: int, generator: Optional[torch.Generator]) -> tuple[torch.Tensor, ...]:
    """``pairs`` random index pairs (i, j), i != j, from the positions ``idx`` (at least 2)."""
    where = generator.device if generator is not None else 'cpu'
    n = idx.numel()
    a = torch.randint(n, (pairs,), generator=generator, device=where)
    b = (a + torch.randint(1, n, (pairs,), generator=generator, device=where)) % n  # never a
    return idx[a.to(idx.device)], idx[b.to(idx.device)]


def _max_ratio(scores: torch.Tensor, flat: torch.Tensor, i: torch.Tensor, j: torch.Tensor) -> torch.Tensor:
    """max |s_i - s_j| / ||x_i - x_j|| over the pairs; pairs of identical points are skipped."""
    dist = (flat[i] - flat[j]).norm(dim=1)
    ratio = (scores[i] - scores[j]).abs() / dist.clamp_min(torch.finfo(dist.dtype).tiny)
    return torch.where(dist > 0, ratio, torch.zeros_like(ratio)).max()


@torch.no_grad()
def estimate_k_eff(D: Critic, x: torch.Tensor, c: Optional[torch.Tensor] = None, *, G: Optional[Callable] = None,
                   pairs: int = 100, per_class: bool = False, generator: Optional[torch.Generator] = None,
                   batch_size: Optional[int] = None, num_classes: Optional[int] = None) -> torch.Tensor:
    """k_eff = max over ``pairs`` random pairs (i != j) of |D(p_i) - D(p_j)| / ||x_i - x_j|| (Tanaka 2019, eff_K).

    ``x`` are target-space samples (``G=None``, p = x) or latents z (p = G(z[, c]); distances stay in z space).
    ``per_class=True`` (needs ``c``) draws the pairs within each class and returns [num_classes] (nan for classes
    with fewer than 2 samples); otherwise a 0-dim tensor. Runs G and D in chunks of ``batch_size`` without an
    autograd graph; ``generator`` makes the pair draw reproducible.
    """
    _check_positive_int('pairs', pairs)
    if not isinstance(x, torch.Tensor) or x.ndim < 1 or x.shape[0] < 2:
        raise ValueError(f'k_eff needs at least 2 samples [N >= 2, ...], got '
                         f'{list(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}')
    n = x.shape[0]
    C = num_classes_of(G, D, c=c, num_classes=num_classes)
    c_net = None if c is None else one_hot_labels(c, n, C)
    scores = []
    for s in _chunks(n, batch_size):
        ci = None if c_net is None else c_net[s]
        p = x[s] if G is None else call_generator(G, x[s], ci)
        scores.append(critic_scores(D, p, ci).float())
    scores = torch.cat(scores)  # [N]
    flat = x.reshape(n, -1).float()
    if not per_class:
        return _max_ratio(scores, flat, *_random_pairs(torch.arange(n, device=x.device), pairs, generator))
    if c is None:
        raise ValueError('per_class=True needs class labels c')
    ids = class_ids(c, n).to(x.device)
    C = C if C is not None else int(ids.max()) + 1
    out = torch.full([C], float('nan'), device=x.device)
    for k in range(C):  # a fixed class order keeps the pair draw reproducible
        idx = (ids == k).nonzero()[:, 0]
        if idx.numel() >= 2:
            out[k] = _max_ratio(scores, flat, *_random_pairs(idx, pairs, generator))
    return out


def estimate_latent_k_eff(G: Callable, D: Critic, z_shape: Sequence[int], *, classes: Optional[Sequence[int]] = None,
                          num_classes: Optional[int] = None, prior: str = 'normal', pairs: int = 100,
                          generator: Optional[torch.Generator] = None, batch_size: Optional[int] = None,
                          device: Union[str, torch.device, None] = None) -> torch.Tensor:
    """k_eff of D o G on fresh latents from the prior: 2 * ``pairs`` latents of shape ``z_shape`` (one sample's
    shape, e.g. ``[z_dim]``) and ``pairs`` random pairs among them, as Tanaka's 100 pairs of fresh z.

    Fresh latents rather than the batch being transported make k_eff a property of (G, D) alone: the same for any
    batch, batch size or seed list. With ``classes`` (conditional models) 2 * ``pairs`` latents per listed class
    and a per-class estimate, [num_classes] with nan for the classes not listed; else a 0-dim tensor.
    """
    _check_positive_int('pairs', pairs)
    shape = [2 * pairs, *z_shape]
    if classes is None:
        z = sample_prior(prior, shape, device=device, generator=generator)
        return estimate_k_eff(D, z, G=G, pairs=pairs, generator=generator, batch_size=batch_size)
    classes = sorted({int(k) for k in classes})
    C = num_classes_of(G, D, num_classes=num_classes)
    if C is None or not classes or classes[0] < 0 or classes[-1] >= C:
        raise ValueError(f'classes {classes} must be a non-empty list of ids in 0..num_classes-1 '
                         f'(num_classes={C}; pass num_classes= when G and D declare no c_dim)')
    z = sample_prior(prior, [len(classes) * shape[0], *z_shape], device=device, generator=generator)
    ids = torch.tensor(classes, device=z.device).repeat_interleave(shape[0])
    c = torch.nn.functional.one_hot(ids, C).float()
    return estimate_k_eff(D, z, c, G=G, pairs=pairs, per_class=True, generator=generator, batch_size=batch_size,
                          num_classes=C)
