"""Outputs of the 2-D DOT study: rows aggregated over seeds, the EMD table (text and Markdown), the JSON file
and the scatter figure."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .common import render_table, write_json
from .toy_data import get_dataset

__all__ = ['aggregate', 'format_table', 'plot_samples', 'write_outputs']

_METRICS = ('emd', 'high_quality', 'modes_covered')


def _mean_std(values: Sequence[float]) -> dict:
    """Mean and sample std (0 for one value); a NaN (diverged seed) propagates."""
    v = np.asarray(values, dtype=np.float64)
    return dict(mean=float(v.mean()), std=float(v.std(ddof=1)) if len(v) > 1 else 0.0)


def aggregate(cells: Sequence[dict], methods: Sequence[str]) -> list[dict]:
    """One row per (dataset, critic), in first-seen order: mean/std over seeds of every metric of every method,
    of the k_eff estimates and of the real-vs-real EMD; ``delta_emd[m]`` is the paired change EMD(m) - EMD(bare)
    (same G and seed) and ``improved[m]`` counts the seeds where ``m`` beat ``bare``."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for c in cells:
        groups.setdefault((c['dataset'], c['critic']), []).append(c)
    rows = []
    for (dataset, critic), group in groups.items():
        row = dict(dataset=dataset, critic=critic, n_seeds=len(group), n_modes=group[0]['metrics']['bare']['n_modes'])
        for key in ('data_emd', 'k_eff_target', 'k_eff_latent', 'train_s'):
            row[key] = _mean_std([c[key] for c in group])
        for metric in _METRICS:
            row[metric] = {m: _mean_std([c['metrics'][m][metric] for c in group]) for m in methods}
        row['delta_emd'] = {m: _mean_std([c['metrics'][m]['emd'] - c['metrics']['bare']['emd'] for c in group])
                            for m in methods}
        row['improved'] = {m: sum(c['metrics'][m]['emd'] < c['metrics']['bare']['emd'] for c in group)
                           for m in methods}
        rows.append(row)
    return rows


def _pm(stat: dict, digits: int = 3, signed: bool = False) -> str:
    sign = '+' if signed else ''
    return f'{stat["mean"]:{sign}.{digits}f}±{stat["std"]:.{digits}f}' if math.isfinite(stat['mean']) else 'nan'


def format_table(rows: Sequence[dict], methods: Sequence[str], markdown: bool = False, delta: bool = False) -> str:
    """EMD table, mean±std over seeds: a row per (dataset, critic), a column per method plus ``data`` (the EMD
    between two real sets, the floor of finite samples). ``delta=True``: the paired change against ``bare`` per
    transport instead, with the number of seeds it improved, e.g. ``-0.027±0.012 3/3``."""
    if delta:
        header = ('dataset', 'critic', *[m for m in methods if m != 'bare'])
        body = [(r['dataset'], r['critic'], *(f'{_pm(r["delta_emd"][m], signed=True)} {r["improved"][m]}/{r["n_seeds"]}'
                                              for m in header[2:])) for r in rows]
    else:
        header = ('dataset', 'critic', 'data', *methods)
        body = [(r['dataset'], r['critic'], _pm(r['data_emd']), *(_pm(r['emd'][m]) for m in methods)) for r in rows]
    return render_table(header, body, 2, markdown)


def plot_samples(cells: Sequence[dict], methods: Sequence[str], path: Path) -> None:
    """Scatter grid of the first seed's samples: a row per (dataset, critic), a column per method, real data in
    grey beneath, each panel titled with its EMD."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    first_seed = min(c['seed'] for c in cells)
    shown = [c for c in cells if c['seed'] == first_seed]
    fig, axes = plt.subplots(len(shown), len(methods), figsize=(1.7 * len(methods), 1.8 * len(shown)), squeeze=False)
    real = {d: get_dataset(d).sample(np.random.default_rng(12345), 1500) for d in {c['dataset'] for c in shown}}
    for row, c in enumerate(shown):
        lim = 1.25 * np.abs(real[c['dataset']]).max()
        for col, m in enumerate(methods):
            ax = axes[row, col]
            ax.scatter(*real[c['dataset']].T, s=1, c='0.8', linewidths=0)
            x = np.asarray(c['samples'][m])
            ax.scatter(*x[np.isfinite(x).all(axis=1)].T, s=1, c='tab:blue', alpha=0.5, linewidths=0)
            ax.set(xlim=(-lim, lim), ylim=(-lim, lim), xticks=[], yticks=[], aspect='equal')
            ax.set_title(f'{m}: EMD {c["metrics"][m]["emd"]:.3f}', fontsize=6)
            if col == 0:
                ax.set_ylabel(f'{c["dataset"]}\n{c["critic"]}', fontsize=7)
    fig.suptitle(f'DOT study, seed {first_seed}: grey = data, blue = samples', fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_outputs(config: dict, cells: Sequence[dict], methods: Sequence[str], outdir: Path) -> list[dict]:
    """Write ``results.json`` (config, per-seed cells without samples, aggregated rows), ``table.md`` (both tables)
    and ``samples.png`` into ``outdir``; return the rows."""
    outdir.mkdir(parents=True, exist_ok=True)
    rows = aggregate(cells, methods)
    raw = [{k: v for k, v in c.items() if k != 'samples'} for c in cells]
    write_json(outdir / 'results.json', dict(config=config, methods=list(methods), cells=raw, rows=rows))
    (outdir / 'table.md').write_text(
        '### EMD to held-out data (mean ± std over seeds)\n\n' + format_table(rows, methods, markdown=True)
        + '\n### Change of EMD against bare G, paired by seed (negative = better), seeds improved\n\n'
        + format_table(rows, methods, markdown=True, delta=True))
    plot_samples(cells, methods, outdir / 'samples.png')
    return rows
