"""Metrics of the 2-D benchmark and their aggregation over seeds.

- ``high_quality``: share of samples within 3 sigma of a mode center (mixtures) or of the curve (swiss roll),
  as in Srivastava et al. 2017 (VEEGAN) and Lin et al. 2018 (PacGAN).
- ``modes_covered``: modes that got at least 0.2 * n / n_modes high-quality samples (20 of 2500 on the 25-grid,
  PacGAN's rule).
- ``emd``: exact W1 distance with Euclidean ground cost between equal-size generated and held-out real sets (POT).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import ot

from .common import mean_std, render_table
from .toy_data import ToyDataset

__all__ = ['high_quality_mask', 'modes_covered', 'emd', 'sample_metrics', 'aggregate', 'format_table']

HQ_SIGMAS = 3.0           # "high quality" radius in units of the data's noise std
COVER_FRACTION = 0.2      # a mode is covered with >= 0.2 * (n / n_modes) high-quality samples
_EMD_MAX_ITER = 10_000_000  # POT's default (1e5) stops early on 1500 x 1500 problems


def high_quality_mask(dataset: ToyDataset, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Boolean mask of samples within 3 sigma of the support and each sample's mode id, both ``[n]``."""
    dist, mode = dataset.assign(x)
    return dist <= HQ_SIGMAS * dataset.sigma, mode


def modes_covered(dataset: ToyDataset, x: np.ndarray) -> int:
    """Number of modes with at least ``0.2 * n / n_modes`` high-quality samples among the ``n`` in ``x``."""
    hq, mode = high_quality_mask(dataset, x)
    counts = np.bincount(mode[hq], minlength=dataset.n_modes)
    return int((counts >= COVER_FRACTION * len(x) / dataset.n_modes).sum())


def emd(x: np.ndarray, y: np.ndarray) -> float:
    """Exact earth mover's distance W1 between two equal-size point sets with uniform weights."""
    if len(x) != len(y):
        raise ValueError(f'emd expects equal-size sets, got {len(x)} and {len(y)}')
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    w = np.full(len(x), 1.0 / len(x))
    return float(ot.emd2(w, w, ot.dist(x, y, metric='euclidean'), numItermax=_EMD_MAX_ITER))


def sample_metrics(dataset: ToyDataset, x_gen: np.ndarray, x_real: np.ndarray) -> dict:
    """All metrics of generated samples ``x_gen``; EMD on the first ``len(x_real)`` of them against ``x_real``."""
    if len(x_gen) < len(x_real):
        raise ValueError(f'need at least {len(x_real)} generated samples for EMD, got {len(x_gen)}')
    if not np.isfinite(x_gen).all():  # a diverged G: no sample is near the data, the distance is undefined
        return dict(high_quality=0.0, modes_covered=0, n_modes=dataset.n_modes, emd=math.nan)
    hq, _ = high_quality_mask(dataset, x_gen)
    return dict(high_quality=float(hq.mean()), modes_covered=modes_covered(dataset, x_gen),
                n_modes=dataset.n_modes, emd=emd(x_gen[:len(x_real)], x_real))


# -- aggregation and tables ------------------------------------------------------------------------------------
def aggregate(cells: Sequence[dict]) -> list[dict]:
    """One row per (dataset, loss, variant): mean and std over seeds of every metric, in first-seen order."""
    groups: dict[tuple, list[dict]] = {}
    for c in cells:
        groups.setdefault((c['dataset'], c['loss'], c['variant']), []).append(c)
    rows = []
    for (dataset, loss, variant), group in groups.items():
        row = dict(dataset=dataset, loss=loss, variant=variant, n_seeds=len(group), n_modes=group[0]['n_modes'])
        for key in ('modes_covered', 'high_quality', 'emd', 'wall_s'):
            row[f'{key}_mean'], row[f'{key}_std'] = mean_std([c[key] for c in group])
        rows.append(row)
    return rows


_HEADER = ('dataset', 'loss', 'variant', 'modes covered', 'high quality %', 'EMD', 'wall s')


def _row_cells(row: dict) -> tuple[str, ...]:
    def pm(key: str, scale: float = 1.0, digits: int = 1) -> str:
        mean, std = row[f'{key}_mean'] * scale, row[f'{key}_std'] * scale
        return f'{mean:.{digits}f}±{std:.{digits}f}' if math.isfinite(mean) else 'nan'
    return (row['dataset'], row['loss'], row['variant'], f'{pm("modes_covered")}/{row["n_modes"]}',
            pm('high_quality', 100.0), pm('emd', digits=3), f'{row["wall_s_mean"]:.1f}')


def format_table(rows: Sequence[dict], markdown: bool = False) -> str:
    """The aggregated rows as an aligned text table, or as a Markdown table for the README."""
    body = [_row_cells(r) for r in rows]
    return render_table(_HEADER, body, 3, markdown)
