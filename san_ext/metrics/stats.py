"""Streaming feature statistics (mean and covariance from float64 running sums) and the Fréchet distance.

FID (Heusel et al. 2017, Eq. 6) is ``|mu1 - mu2|^2 + tr(S1) + tr(S2) - 2 tr((S1 S2)^(1/2))``. Statistics are kept
as running sums ``n``, ``sum x`` and ``sum x x^T`` in float64, so batches, shards and ranks merge by adding them.
"""

from __future__ import annotations

import logging
import os
from typing import Union

import numpy as np
import torch

from san_ext import dist

__all__ = ['StreamingStats', 'frechet_distance']

log = logging.getLogger(__name__)

ArrayLike = Union[np.ndarray, torch.Tensor]
PathLike = Union[str, os.PathLike]

# Relative size of a negative or imaginary eigenvalue part of S1 S2 that is more than rounding: a sign of
# rank-deficient covariances (fewer samples than feature dimensions, or duplicated images).
_EIG_WARN = 1e-3


class StreamingStats:
    """Mean and covariance of a stream of ``dim``-dimensional features from float64 sums ``n``, ``sum x`` and
    ``sum x x^T``; order-independent, so shards merge by addition (:meth:`merge`, :meth:`all_reduce`).

    :meth:`cov` divides by ``n - 1`` by default (unbiased, as ``np.cov`` and pytorch-fid, torch-fidelity, clean-fid
    and TTUR do); ``unbiased=False`` divides by ``n`` (StyleGAN2/3's ``E[x x^T] - mu mu^T``). At 50k samples the two
    differ by a factor 1 - 2e-5, which moves FID far below its last printed digit.
    """

    def __init__(self, dim: int, device: Union[str, torch.device] = 'cpu') -> None:
        if dim < 1:
            raise ValueError(f'dim must be at least 1, got {dim}')
        self.dim = dim
        self.n = 0
        self.sum = torch.zeros(dim, dtype=torch.float64, device=device)  # [dim]
        self.sum_outer = torch.zeros(dim, dim, dtype=torch.float64, device=device)  # [dim, dim]

    def update(self, x: ArrayLike, indices: object = None) -> StreamingStats:
        """Add a batch of features ``x`` [N, dim]; ``indices`` is accepted for the accumulator interface, unused."""
        x = torch.as_tensor(x)
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f'expected features of shape [N, {self.dim}], got {list(x.shape)}')
        x = x.to(device=self.sum.device, dtype=torch.float64)
        self.n += x.shape[0]
        self.sum += x.sum(dim=0)
        self.sum_outer += x.T @ x
        return self

    def merge(self, other: StreamingStats) -> StreamingStats:
        """Add another shard's sums into this one (in place; returns self)."""
        if other.dim != self.dim:
            raise ValueError(f'cannot merge statistics of dimension {other.dim} into {self.dim}')
        self.n += other.n
        self.sum += other.sum.to(self.sum.device)
        self.sum_outer += other.sum_outer.to(self.sum.device)
        return self

    def all_reduce(self) -> StreamingStats:
        """Sum the statistics of every rank (collective: call on all ranks; no-op in one process)."""
        if dist.active():
            n = torch.tensor([float(self.n)], dtype=torch.float64, device=self.sum.device)
            dist.all_reduce_sum(n)
            dist.all_reduce_sum(self.sum)
            dist.all_reduce_sum(self.sum_outer)
            self.n = int(round(n.item()))
        return self

    def mean(self) -> np.ndarray:
        """Mean feature, float64 [dim]."""
        self._check_count(1)
        return (self.sum / self.n).cpu().numpy()

    def cov(self, unbiased: bool = True) -> np.ndarray:
        """Covariance, float64 [dim, dim]: divided by ``n - 1`` (unbiased, like ``np.cov``) or by ``n``."""
        self._check_count(2 if unbiased else 1)
        mu = self.sum / self.n
        scatter = self.sum_outer - self.n * torch.outer(mu, mu)
        return (scatter / (self.n - 1 if unbiased else self.n)).cpu().numpy()

    def _check_count(self, need: int) -> None:
        if self.n < need:
            raise ValueError(f'statistics need at least {need} samples, have {self.n}')

    # -- persistence ----------------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, np.ndarray]:
        """The sums as numpy arrays (plus ``mu`` and ``sigma``, so pytorch-fid style readers find them)."""
        state = {'n': np.array(self.n, dtype=np.int64), 'sum': self.sum.cpu().numpy(),
                 'sum_outer': self.sum_outer.cpu().numpy()}
        if self.n >= 2:
            state.update(mu=self.mean(), sigma=self.cov())
        return state

    @classmethod
    def from_state_dict(cls, state: dict, device: Union[str, torch.device] = 'cpu') -> StreamingStats:
        """Statistics from :meth:`state_dict` output."""
        sums = np.asarray(state['sum'], dtype=np.float64)
        stats = cls(sums.shape[0], device=device)
        stats.n = int(state['n'])
        stats.sum.copy_(torch.from_numpy(sums))
        stats.sum_outer.copy_(torch.from_numpy(np.asarray(state['sum_outer'], dtype=np.float64)))
        return stats

    def save(self, path: PathLike) -> None:
        """Write the sums (and ``mu``, ``sigma``) to an ``.npz`` file."""
        np.savez(path, **self.state_dict())

    @classmethod
    def load(cls, path: PathLike, device: Union[str, torch.device] = 'cpu') -> StreamingStats:
        """Read statistics written by :meth:`save`."""
        with np.load(path) as f:
            return cls.from_state_dict(dict(f), device=device)

    def __repr__(self) -> str:
        return f'StreamingStats(dim={self.dim}, n={self.n})'


def _as_float64(x: ArrayLike) -> np.ndarray:
    return (x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)).astype(np.float64)


def frechet_distance(mu1: ArrayLike, sigma1: ArrayLike, mu2: ArrayLike, sigma2: ArrayLike) -> float:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2), in float64.

    ``tr((S1 S2)^(1/2))`` is the sum of the square roots of the eigenvalues of ``S1 S2`` (torch-fidelity's route):
    they are real and non-negative in exact arithmetic, since S1 S2 is similar to the PSD S1^(1/2) S2 S1^(1/2).
    Rounding leaves tiny negative or imaginary parts; we take the real part and clip it at 0 before the square root
    (logged when large, which means too few samples for the dimension). No ``scipy.linalg.sqrtm``: its ``disp``
    argument is deprecated (SciPy 1.16) and it is several times slower. The result can be -1e-12-ish for identical
    statistics; it is not clipped.
    """
    mu1, mu2, sigma1, sigma2 = (_as_float64(a) for a in (mu1, mu2, sigma1, sigma2))
    if mu1.ndim != 1 or mu1.shape != mu2.shape:
        raise ValueError(f'means must be vectors of one shape, got {mu1.shape} and {mu2.shape}')
    d = mu1.shape[0]
    if sigma1.shape != (d, d) or sigma2.shape != (d, d):
        raise ValueError(f'covariances must be [{d}, {d}], got {sigma1.shape} and {sigma2.shape}')
    eig = np.linalg.eigvals(sigma1 @ sigma2)
    scale = max(float(np.abs(eig).max()), np.finfo(np.float64).tiny)
    if np.abs(eig.imag).max() > _EIG_WARN * scale or eig.real.min() < -_EIG_WARN * scale:
        log.warning('eigenvalues of S1 S2 have large imaginary or negative parts (max |imag| %.3g, min real %.3g); '
                    'the covariances are probably rank-deficient: use more samples than feature dimensions',
                    np.abs(eig.imag).max(), eig.real.min())
    tr_covmean = float(np.sqrt(np.clip(eig.real, 0.0, None)).sum())
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * tr_covmean)
