"""Outputs of the 2-D study: ``results.json``, ``table.md`` (per cell and paired GAN-vs-SAN), ``samples.png`` and
``curves.png`` (the direction-alignment curves)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .common import write_json
from .toy_data import get_dataset
from .toy_metrics import aggregate, format_table, format_verdicts, verdicts
from .toy_setup import get_optimizer

__all__ = ['plot_samples', 'plot_curves', 'write_outputs']


def _pyplot():
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    return plt


def plot_samples(cells: Sequence[dict], path: Path) -> None:
    """Scatter grid of the first seed's last samples: a row per (dataset, optimizer, variant), a column per loss."""
    plt = _pyplot()
    seed = min(c['seed'] for c in cells)
    shown = [c for c in cells if c['seed'] == seed]
    rows = list(dict.fromkeys((c['dataset'], c['optimizer'], c['variant']) for c in shown))
    cols = list(dict.fromkeys(c['loss'] for c in shown))
    fig, axes = plt.subplots(len(rows), len(cols), figsize=(2.0 * len(cols), 2.0 * len(rows)), squeeze=False)
    real = {d: get_dataset(d).sample(np.random.default_rng(12345), 2000) for d, _, _ in rows}
    for c in shown:
        ax = axes[rows.index((c['dataset'], c['optimizer'], c['variant'])), cols.index(c['loss'])]
        lim = 1.25 * np.abs(real[c['dataset']]).max()
        ax.scatter(*real[c['dataset']].T, s=1, c='0.8', linewidths=0)
        ax.scatter(*np.asarray(c['samples']).T, s=1, c='tab:blue', alpha=0.5, linewidths=0)
        ax.set(xlim=(-lim, lim), ylim=(-lim, lim), xticks=[], yticks=[], aspect='equal')
        ax.set_title(f'{c["dataset"]} {c["optimizer"]}\n{c["loss"]} / {c["variant"]}: {c["modes_covered"]:g} modes',
                     fontsize=6)
    fig.suptitle(f'2-D study, seed {seed}, last evaluation: grey = data, blue = samples', fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_curves(cells: Sequence[dict], path: Path) -> None:
    """Alignment of D's direction with the optimal one over training: a panel per (dataset, optimizer) and loss,
    GAN and SAN each as the mean over seeds with the min-max band."""
    plt = _pyplot()
    rows = list(dict.fromkeys((c['dataset'], c['optimizer']) for c in cells))
    cols = list(dict.fromkeys(c['loss'] for c in cells))
    fig, axes = plt.subplots(len(rows), len(cols), figsize=(2.6 * len(cols), 1.9 * len(rows)), squeeze=False,
                             sharey=True)
    colours = dict(GAN='tab:orange', SAN='tab:blue')
    for (dataset, optimizer), ax_row in zip(rows, axes):
        for loss, ax in zip(cols, ax_row):
            for variant, colour in colours.items():
                group = [c for c in cells if (c['dataset'], c['optimizer'], c['loss'], c['variant'])
                         == (dataset, optimizer, loss, variant)]
                if not group:
                    continue
                steps = np.array([s for s, _ in group[0]['curve']])
                values = np.array([[v for _, v in c['curve']] for c in group])  # [seeds, points]
                ax.plot(steps, values.mean(0), c=colour, lw=1, label=variant)
                ax.fill_between(steps, values.min(0), values.max(0), color=colour, alpha=0.2, linewidth=0)
            ax.axhline(0, c='0.7', lw=0.5)
            ax.set(ylim=(-1.05, 1.05))
            ax.set_title(f'{dataset} {optimizer} {loss}', fontsize=7)
            ax.tick_params(labelsize=6)
    axes[0][0].legend(fontsize=6)
    fig.suptitle('cos(D direction, optimal direction) over G steps: mean over seeds, band min-max', fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_outputs(config: dict, cells: Sequence[dict], outdir: Path) -> list[dict]:
    """Write ``results.json`` (config, optimizer sources, raw cells with every evaluation and curve, rows, paired
    verdicts), ``table.md``, ``samples.png`` and ``curves.png``; return the aggregated rows."""
    outdir.mkdir(parents=True, exist_ok=True)
    rows, paired = aggregate(cells), verdicts(cells)
    raw = [{k: v for k, v in c.items() if k != 'samples'} for c in cells]
    optimizers = {name: vars(get_optimizer(name)) for name in dict.fromkeys(c['optimizer'] for c in cells)}
    write_json(outdir / 'results.json', dict(config=config, optimizers=optimizers, cells=raw, rows=rows,
                                             verdicts=paired))
    (outdir / 'table.md').write_text(format_table(rows, markdown=True) + '\n' + format_verdicts(paired, markdown=True))
    plot_samples(cells, outdir / 'samples.png')
    plot_curves(cells, outdir / 'curves.png')
    return rows
