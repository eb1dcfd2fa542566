"""k-nearest-neighbour manifold metrics on feature sets: improved precision/recall (Kynkäänniemi et al. 2019) and
density/coverage (Naeem et al. 2020).

A set's manifold is the union of balls around its points, each with radius = distance to the point's k-th nearest
neighbour in the same set (itself excluded). Distances are computed block by block (``ROW_BATCH`` x ``COL_BATCH``
as ``|a|^2 + |b|^2 - 2 a.b``), so memory stays O(blocks + N) and the N x N matrix never exists. Float16 features
are promoted to float32 per block, float64 stays float64. In a process group every function is a collective: each
rank computes a contiguous share of the query rows and the shares are gathered, so all ranks return the same result.

Comparisons: precision/recall count a point inside a ball when d <= r (Kynkäänniemi, StyleGAN);
density/coverage when d < r (``prdc``).
"""

from __future__ import annotations

from typing import Callable, Union

import numpy as np
import torch

from san_ext import dist

__all__ = ['density_coverage', 'knn_radii', 'precision_recall']

ArrayLike = Union[np.ndarray, torch.Tensor]
ROW_BATCH = 1024
COL_BATCH = 8192


def _tensor(x: ArrayLike) -> torch.Tensor:
    x = torch.as_tensor(x)
    if x.ndim != 2:
        raise ValueError(f'features must be [N, d], got shape {list(x.shape)}')
    return x


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def _blocks(queries: torch.Tensor, refs: torch.Tensor, fn: Callable[[torch.Tensor, slice], None]) -> None:
    """Call ``fn(sq_dists [q, c], ref_slice)`` for every column block of refs: squared distances to ``queries``."""
    dt, col_batch = _compute_dtype(refs), COL_BATCH  # module constants read per call, so tests can shrink them
    q = queries.to(dt)
    q2 = (q * q).sum(dim=1, keepdim=True)
    for start in range(0, len(refs), col_batch):
        r = refs[start:start + col_batch].to(dt)
        sq = (q2 + (r * r).sum(dim=1)[None, :] - 2.0 * q @ r.T).clamp_min_(0)
        fn(sq, slice(start, start + len(r)))


def _sharded_rows(n: int, fn: Callable[[int, int], torch.Tensor]) -> torch.Tensor:
    """``fn(start, stop)`` over this rank's rows in batches, concatenated and gathered over ranks in row order."""
    lo, hi, row_batch = *dist.shard_range(n), ROW_BATCH
    parts = [fn(s, min(s + row_batch, hi)) for s in range(lo, hi, row_batch)]
    mine = torch.cat(parts) if parts else fn(lo, lo)
    return dist.all_gather_rows(mine)


def knn_radii(x: ArrayLike, k: int) -> torch.Tensor:
    """Distance from each point of ``x`` [N, d] to its k-th nearest neighbour in ``x``, itself excluded [N]."""
    return _knn_sq_radii(_tensor(x), k).sqrt()


def _knn_sq_radii(x: torch.Tensor, k: int) -> torch.Tensor:
    """Squared k-NN radii [N]. The ball tests compare squared distances with these, never with a re-squared square
    root: sqrt(3.0) ** 2 is 2.9999999999999996 in float64, which would put a point at distance exactly r outside."""
    if not 1 <= k < len(x):
        raise ValueError(f'k must be in [1, {len(x) - 1}] for {len(x)} points, got {k}')

    def rows(start: int, stop: int) -> torch.Tensor:
        best = torch.full((stop - start, 0), float('inf'), dtype=_compute_dtype(x), device=x.device)

        def merge(sq: torch.Tensor, _: slice) -> None:
            nonlocal best
            both = torch.cat([best, sq], dim=1)
            best = both.topk(min(k + 1, both.shape[1]), dim=1, largest=False).values

        _blocks(x[start:stop], x, merge)
        return best[:, k]  # column 0 is the point itself (distance 0)

    return _sharded_rows(len(x), rows)


def _ball_counts(queries: torch.Tensor, refs: torch.Tensor, sq_radii: torch.Tensor, strict: bool) -> torch.Tensor:
    """For each query, the number of reference balls B(ref_i, sqrt(sq_radii_i)) containing it (int64 [len(queries)])."""
    r2 = sq_radii.to(_compute_dtype(refs))

    def rows(start: int, stop: int) -> torch.Tensor:
        counts = torch.zeros(stop - start, dtype=torch.int64, device=queries.device)

        def add(sq: torch.Tensor, cols: slice) -> None:
            inside = sq < r2[None, cols] if strict else sq <= r2[None, cols]
            counts.add_(inside.sum(dim=1))

        _blocks(queries[start:stop], refs, add)
        return counts

    return _sharded_rows(len(queries), rows)


def _nearest_sq_dist(queries: torch.Tensor, refs: torch.Tensor) -> torch.Tensor:
    """Squared distance from each query to its nearest reference point [len(queries)]."""
    def rows(start: int, stop: int) -> torch.Tensor:
        best = torch.full((stop - start,), float('inf'), dtype=_compute_dtype(refs), device=queries.device)

        def take(sq: torch.Tensor, _: slice) -> None:
            torch.minimum(best, sq.min(dim=1).values, out=best)

        _blocks(queries[start:stop], refs, take)
        return best

    return _sharded_rows(len(queries), rows)


def precision_recall(real: ArrayLike, fake: ArrayLike, k: int = 3) -> tuple[float, float]:
    """Improved precision (share of fakes inside the real manifold) and recall (share of reals inside the fake
    manifold), both manifolds built with the ``k``-th neighbour radius (Kynkäänniemi et al. 2019, Eq. 1-3)."""
    real, fake = _tensor(real), _tensor(fake)
    sq_real, sq_fake = _knn_sq_radii(real, k), _knn_sq_radii(fake, k)
    precision = (_ball_counts(fake, real, sq_real, strict=False) > 0).double().mean()
    recall = (_ball_counts(real, fake, sq_fake, strict=False) > 0).double().mean()
    return float(precision), float(recall)


def density_coverage(real: ArrayLike, fake: ArrayLike, k: int = 5) -> tuple[float, float]:
    """Density = (1 / kM) sum_j sum_i 1[|Y_j - X_i| < r_i] and coverage = (1 / N) sum_i 1[min_j |Y_j - X_i| < r_i]
    for N reals X and M fakes Y, radii r from the reals only (Naeem et al. 2020, Eq. 5-6)."""
    real, fake = _tensor(real), _tensor(fake)
    sq_radii = _knn_sq_radii(real, k)
    density = _ball_counts(fake, real, sq_radii, strict=True).double().sum() / (k * len(fake))
    nearest = _nearest_sq_dist(real, fake)
    coverage = (nearest < sq_radii.to(nearest.dtype)).double().mean()
    return float(density), float(coverage)
