"""2-D toy data sets for the GAN-vs-SAN benchmark, each with the mode geometry its metrics need.

- ``ring8``: 8 Gaussians on a circle of radius 2, std 0.02 (Metz et al. 2017, unrolled GANs).
- ``grid25``: 5x5 Gaussians at {-4,-2,0,2,4}^2, std 0.05, all scaled by 1/2.828 (Tanaka 2019, DOT).
- ``swissroll``: the 2-D swiss roll with noise std 0.25, scaled by 1/7.5 (DOT); its 20 "modes" are equal
  intervals of the curve parameter t.

A data set maps points to (distance to the data's support, mode id) with :meth:`ToyDataset.assign`, so the
metrics treat mixtures and the curve alike. :func:`training_batches` is the random stream of one training run
(real batch, the two latent batches and the gradient-penalty mixing weights of every step); the single-cell and
the batched trainer both read it, so a cell sees the same numbers on either path. Imports only numpy and scipy.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
from scipy.spatial import cKDTree

__all__ = ['ToyDataset', 'TrainBatch', 'get_dataset', 'list_datasets', 'training_batches']

_GRID_SCALE = 2.828
_ROLL_SCALE = 7.5
_ROLL_NOISE = 0.25
_ROLL_T_MIN, _ROLL_T_MAX = 1.5 * math.pi, 4.5 * math.pi
_ROLL_MODES = 20
_ROLL_POLYLINE_POINTS = 4000
_STREAM_CHUNK = 64  # steps drawn per numpy call; fixed, so a run's first k steps never depend on its length

Sampler = Callable[[np.random.Generator, int], np.ndarray]


@dataclass(frozen=True)
class ToyDataset:
    """A 2-D data set: a sampler, its noise std ``sigma`` and a map from points to their nearest mode.

    Attributes:
        name: registry key.
        sigma: per-coordinate std of the noise around a mode center / the curve (after scaling).
        n_modes: number of modes counted by ``modes_covered``.
        centers: ``[n_modes, 2]`` mixture centers, or ``None`` for the swiss roll.
    """

    name: str
    sigma: float
    n_modes: int
    sampler: Sampler = field(repr=False, compare=False)
    centers: np.ndarray | None = field(default=None, repr=False, compare=False)

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """``n`` points, ``[n, 2]`` float32."""
        return self.sampler(rng, n).astype(np.float32)

    def assign(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Distance of each point ``[n, 2]`` to the data's support (center or curve) and the id of its mode."""
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != 2:
            raise ValueError(f'{self.name}: expected points of shape [n, 2], got {list(x.shape)}')
        if self.centers is not None:
            dist = np.linalg.norm(x[:, None, :] - self.centers[None, :, :], axis=-1)  # [n, n_modes]
            mode = dist.argmin(axis=1)
            return dist[np.arange(len(x)), mode], mode
        return _assign_to_roll(x)


# -- mixtures --------------------------------------------------------------------------------------------------
def _ring8_centers() -> np.ndarray:
    angles = 2 * np.pi * np.arange(8) / 8
    return 2.0 * np.stack([np.cos(angles), np.sin(angles)], axis=1)


def _grid25_centers() -> np.ndarray:
    ticks = np.array([-4.0, -2.0, 0.0, 2.0, 4.0])
    return np.stack(np.meshgrid(ticks, ticks, indexing='ij'), axis=-1).reshape(-1, 2) / _GRID_SCALE


def _mixture(centers: np.ndarray, sigma: float) -> Sampler:
    """Sampler of an equal-weight Gaussian mixture with isotropic std ``sigma`` around ``centers``."""
    def sample(rng: np.random.Generator, n: int) -> np.ndarray:
        ids = rng.integers(len(centers), size=n)
        return centers[ids] + sigma * rng.standard_normal((n, 2))
    return sample


# -- swiss roll ------------------------------------------------------------------------------------------------
def _roll_curve(t: np.ndarray) -> np.ndarray:
    """Noiseless swiss-roll points (t cos t, t sin t) / 7.5, ``[len(t), 2]``."""
    return np.stack([t * np.cos(t), t * np.sin(t)], axis=1) / _ROLL_SCALE


def _sample_swissroll(rng: np.random.Generator, n: int) -> np.ndarray:
    t = _ROLL_T_MIN + (_ROLL_T_MAX - _ROLL_T_MIN) * rng.random(n)  # = 1.5 pi (1 + 2u)
    return _roll_curve(t) + (_ROLL_NOISE / _ROLL_SCALE) * rng.standard_normal((n, 2))


_ROLL_T = np.linspace(_ROLL_T_MIN, _ROLL_T_MAX, _ROLL_POLYLINE_POINTS)
_ROLL_TREE = cKDTree(_roll_curve(_ROLL_T))  # a dense polyline: vertex spacing ~0.003, a tenth of sigma


def _assign_to_roll(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distance to the nearest polyline vertex and the t-interval (of 20 equal ones) that vertex falls in."""
    dist, idx = _ROLL_TREE.query(x)
    frac = (_ROLL_T[idx] - _ROLL_T_MIN) / (_ROLL_T_MAX - _ROLL_T_MIN)
    return dist, np.minimum((frac * _ROLL_MODES).astype(np.int64), _ROLL_MODES - 1)


# -- registry --------------------------------------------------------------------------------------------------
def _build_datasets() -> dict[str, ToyDataset]:
    ring, grid = _ring8_centers(), _grid25_centers()
    grid_sigma = 0.05 / _GRID_SCALE
    return {
        'ring8': ToyDataset('ring8', 0.02, len(ring), _mixture(ring, 0.02), ring),
        'grid25': ToyDataset('grid25', grid_sigma, len(grid), _mixture(grid, grid_sigma), grid),
        'swissroll': ToyDataset('swissroll', _ROLL_NOISE / _ROLL_SCALE, _ROLL_MODES, _sample_swissroll),
    }


_DATASETS = _build_datasets()


def list_datasets() -> list[str]:
    """Names accepted by :func:`get_dataset`, in benchmark order."""
    return list(_DATASETS)


def get_dataset(name: str) -> ToyDataset:
    """The data set ``name``; unknown names fail listing the valid ones."""
    if name not in _DATASETS:
        raise ValueError(f'unknown toy data set {name!r}; known: {", ".join(_DATASETS)}')
    return _DATASETS[name]


# -- training stream -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TrainBatch:
    """The random inputs of one training step, float32: real ``[batch, 2]``, latents ``[batch, z_dim]`` for the D
    and the G step, ``mix`` ``[batch, 1]`` in [0, 1) for gradient-penalty interpolates, and ``x_real_g``, a fresh
    real batch for the G step of a paired loss (RpGAN scores G's fakes against reals the D step did not see)."""

    x_real: np.ndarray
    z_d: np.ndarray
    z_g: np.ndarray
    mix: np.ndarray
    x_real_g: np.ndarray


def training_batches(name: str, seed: int, batch: int, z_dim: int) -> Iterator[TrainBatch]:
    """Endless per-step stream of training inputs for data set ``name``, a function of ``seed`` only.

    Drawn in fixed chunks of steps from ``default_rng([seed, 0])`` (held-out evaluation data uses ``[seed, 1]``);
    the G step's reals ``x_real_g`` come from their own ``default_rng([seed, 2])``, so they leave the other draws
    (and every unpaired loss's run) as they were.
    """
    data, rng, rng_g = get_dataset(name), np.random.default_rng([seed, 0]), np.random.default_rng([seed, 2])
    while True:
        x = data.sample(rng, _STREAM_CHUNK * batch).reshape(_STREAM_CHUNK, batch, 2)
        z = rng.standard_normal((_STREAM_CHUNK, 2, batch, z_dim), dtype=np.float32)
        mix = rng.random((_STREAM_CHUNK, batch, 1), dtype=np.float32)
        x_g = data.sample(rng_g, _STREAM_CHUNK * batch).reshape(_STREAM_CHUNK, batch, 2)
        for i in range(_STREAM_CHUNK):
            yield TrainBatch(x_real=x[i], z_d=z[i, 0], z_g=z[i, 1], mix=mix[i], x_real_g=x_g[i])
