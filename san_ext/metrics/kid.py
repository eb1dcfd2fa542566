"""Kernel Inception Distance (Bińkowski et al. 2018, Eq. 4): the unbiased MMD^2 estimate with the cubic polynomial
kernel k(x, y) = (x^T y / d + 1)^3, averaged over random subsets.

The estimate drops the diagonals of K_XX and K_YY and keeps every K_XY pair; small negative values are valid.
Conventions follow StyleGAN2/3 (``kid50k_full``) and torch-fidelity: 100 subsets of min(1000, n_gen, n_ref)
samples each, drawn without replacement; papers often print KID x 10^3.
"""

from __future__ import annotations

from typing import Union

import numpy as np
import torch

__all__ = ['kernel_inception_distance', 'mmd2_unbiased', 'polynomial_kernel']

ArrayLike = Union[np.ndarray, torch.Tensor]


def _np64(x: ArrayLike) -> np.ndarray:
    return (x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)).astype(np.float64)


def polynomial_kernel(x: np.ndarray, y: np.ndarray, degree: int = 3, coef0: float = 1.0) -> np.ndarray:
    """K[i, j] = (x_i . y_j / d + coef0) ** degree, float64 [len(x), len(y)]."""
    base = x @ y.T / x.shape[1] + coef0
    out = base.copy()
    for _ in range(degree - 1):  # repeated products: several times faster than np.power
        out *= base
    return out


def mmd2_unbiased(x: ArrayLike, y: ArrayLike) -> float:
    """Unbiased MMD^2 between samples x [m, d] and y [n, d] with the KID kernel (diagonals of K_XX, K_YY dropped)."""
    x, y = _np64(x), _np64(y)
    m, n = len(x), len(y)
    if m < 2 or n < 2:
        raise ValueError(f'MMD needs at least 2 samples per set, got {m} and {n}')
    k_xx, k_yy, k_xy = polynomial_kernel(x, x), polynomial_kernel(y, y), polynomial_kernel(x, y)
    xx = (k_xx.sum() - np.trace(k_xx)) / (m * (m - 1))
    yy = (k_yy.sum() - np.trace(k_yy)) / (n * (n - 1))
    return float(xx + yy - 2.0 * k_xy.mean())


def kernel_inception_distance(gen: ArrayLike, ref: ArrayLike, num_subsets: int = 100, max_subset_size: int = 1000,
                              seed: int = 0) -> tuple[float, float]:
    """(mean, std) over ``num_subsets`` of the unbiased MMD^2 between random subsets of ``gen`` [N, d] and
    ``ref`` [M, d], each of min(max_subset_size, N, M) samples drawn without replacement (``np.random`` seeded by
    ``seed``; StyleGAN leaves it unseeded, torch-fidelity uses 2020)."""
    gen, ref = _np64(gen), _np64(ref)
    if gen.ndim != 2 or ref.ndim != 2 or gen.shape[1] != ref.shape[1]:
        raise ValueError(f'features must be [N, d] with one d, got {gen.shape} and {ref.shape}')
    m = min(max_subset_size, len(gen), len(ref))
    rng = np.random.default_rng(seed)
    mmds = np.array([mmd2_unbiased(gen[rng.choice(len(gen), m, replace=False)],
                                   ref[rng.choice(len(ref), m, replace=False)]) for _ in range(num_subsets)])
    return float(mmds.mean()), float(mmds.std())
