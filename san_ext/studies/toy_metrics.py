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

__all__ = ['high_quality_mask', 'modes_covered', 'emd', 'sample_metrics', 'aggregate', 'format_table', 'verdicts',
           'format_verdicts']

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
_ROW_KEYS = ('dataset', 'optimizer', 'loss', 'variant')
_METRICS = ('modes_covered', 'high_quality', 'emd', 'alignment_final', 'wall_s')


def aggregate(cells: Sequence[dict]) -> list[dict]:
    """One row per (dataset, optimizer, loss, variant), in first-seen order: mean and std over seeds of every metric
    (each already averaged over the cell's evaluations), ``n_seeds`` and every seed's value (``<key>_seeds``)."""
    groups: dict[tuple, list[dict]] = {}
    for c in cells:
        groups.setdefault(tuple(c.get(k, '') for k in _ROW_KEYS), []).append(c)
    rows = []
    for key, group in groups.items():
        row = dict(zip(_ROW_KEYS, key), n_seeds=len(group), n_modes=group[0]['n_modes'])
        for name in _METRICS:
            values = [c[name] for c in group if name in c]
            if values:
                row[f'{name}_mean'], row[f'{name}_std'] = mean_std(values)
                row[f'{name}_seeds'] = values
        rows.append(row)
    return rows


_HEADER = ('dataset', 'optimizer', 'loss', 'variant', 'n', 'modes covered', 'modes per seed', 'high quality %', 'EMD',
           'alignment', 'wall s')


def _pm(row: dict, key: str, scale: float = 1.0, digits: int = 1) -> str:
    if f'{key}_mean' not in row:
        return '-'
    mean, std = row[f'{key}_mean'] * scale, row[f'{key}_std'] * scale
    if not math.isfinite(mean):
        return 'nan'
    return f'{mean:.{digits}f}±{std:.{digits}f}' if row['n_seeds'] > 1 else f'{mean:.{digits}f}'


def _row_cells(row: dict) -> tuple[str, ...]:
    per_seed = ' '.join(f'{v:g}' for v in row['modes_covered_seeds'])
    return (row['dataset'], row['optimizer'], row['loss'], row['variant'], str(row['n_seeds']),
            f'{_pm(row, "modes_covered")}/{row["n_modes"]}', per_seed, _pm(row, 'high_quality', 100.0),
            _pm(row, 'emd', digits=3), _pm(row, 'alignment_final', digits=2), f'{row["wall_s_mean"]:.1f}')


def format_table(rows: Sequence[dict], markdown: bool = False) -> str:
    """The aggregated rows as an aligned text table, or as a Markdown table for the README. With one seed a cell
    shows its value alone (no "±0"); ``n`` is the number of seeds and ``modes per seed`` lists each seed's value."""
    return render_table(_HEADER, [_row_cells(r) for r in rows], 4, markdown)


# -- GAN vs SAN, paired by seed --------------------------------------------------------------------------------
_VERDICT_HEADER = ('dataset', 'optimizer', 'loss', 'n', 'GAN modes', 'SAN modes', 'SAN - GAN (paired)', 'SAN better in',
                   'verdict')


def verdicts(cells: Sequence[dict]) -> list[dict]:
    """GAN against SAN per (dataset, optimizer, loss), paired by seed (a seed's GAN and SAN cells start from the same
    function and read the same data). The rule, fixed before any run: with d the per-seed difference SAN - GAN in
    modes covered (averaged over the evaluations), "SAN better" if mean(d) > 2 standard errors and > 0.5 modes,
    "GAN better" symmetrically, "both fail" if neither is better and both cover under half the modes, else "no
    clear difference"."""
    by_key: dict[tuple, dict[str, dict[int, float]]] = {}
    n_modes: dict[tuple, int] = {}
    for c in cells:
        key = (c['dataset'], c.get('optimizer', ''), c['loss'])
        by_key.setdefault(key, {}).setdefault(c['variant'], {})[c['seed']] = c['modes_covered']
        n_modes[key] = c['n_modes']
    out = []
    for key, variants in by_key.items():
        seeds = sorted(set(variants.get('GAN', {})) & set(variants.get('SAN', {})))
        if not seeds:
            continue
        gan = np.array([variants['GAN'][s] for s in seeds])
        san = np.array([variants['SAN'][s] for s in seeds])
        d = san - gan
        se = d.std(ddof=1) / math.sqrt(len(d)) if len(d) > 1 else math.inf
        if d.mean() > max(2 * se, 0.5):
            verdict = 'SAN better'
        elif -d.mean() > max(2 * se, 0.5):
            verdict = 'GAN better'
        elif max(gan.mean(), san.mean()) < 0.5 * n_modes[key]:
            verdict = 'both fail'
        else:
            verdict = 'no clear difference'
        out.append(dict(dataset=key[0], optimizer=key[1], loss=key[2], n=len(seeds), n_modes=n_modes[key],
                        gan=float(gan.mean()), san=float(san.mean()), diff=float(d.mean()), diff_se=float(se),
                        san_wins=int((d > 0).sum()), verdict=verdict))
    return out


def format_verdicts(rows: Sequence[dict], markdown: bool = False) -> str:
    """The paired GAN-vs-SAN comparison as a table (modes covered, mean over seeds)."""
    body = [(r['dataset'], r['optimizer'], r['loss'], str(r['n']), f'{r["gan"]:.1f}/{r["n_modes"]}',
             f'{r["san"]:.1f}/{r["n_modes"]}',
             f'{r["diff"]:+.1f}' + (f' ± {r["diff_se"]:.1f}' if math.isfinite(r['diff_se']) else ''),
             f'{r["san_wins"]}/{r["n"]} seeds', r['verdict']) for r in rows]
    return render_table(_VERDICT_HEADER, body, 3, markdown)
