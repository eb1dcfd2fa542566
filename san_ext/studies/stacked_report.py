"""Outputs of the stacked digits study: mean ± std over seeds, SAN-minus-GAN differences paired by seed, the printed
/ Markdown tables, ``results.json`` and the PNG sample grids (seed 0 of each model, beside the real images)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional

from san_ext.metrics.stacked import CONFIDENCE

from .common import mean_std, render_table, write_json
from .digits_classifier import record_of
from .stacked_eval import grid_panels, save_samples, training_images

__all__ = ['aggregate', 'format_table', 'format_deltas', 'san_deltas', 'write_outputs']

_KEYS = ('modes', 'kl', 'confident')


def aggregate(cells: Sequence[dict]) -> list[dict]:
    """One row per (optimizer setting, variant): mean and std over seeds of each cell's averaged scores."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for c in cells:
        groups.setdefault((c['optimizer'], c['variant']), []).append(c)
    rows = []
    for (optimizer, variant), group in groups.items():
        row: dict[str, Any] = dict(optimizer=optimizer, variant=variant, loss=group[0]['loss'], san=group[0]['san'],
                                   n_seeds=len(group), diverged=sum(not c['finite'] for c in group))
        for key in _KEYS:
            row[f'{key}_mean'], row[f'{key}_std'] = mean_std([c[key] for c in group])
        row['train_s_mean'] = mean_std([c['train_s'] for c in group])[0]
        rows.append(row)
    return rows


def san_deltas(cells: Sequence[dict]) -> list[dict]:
    """Per (optimizer, loss) with both ``LOSS`` and ``LOSS-san`` cells: SAN minus GAN modes and KL, paired by seed
    (the same initial weights, data order and evaluation latents), and in how many seeds SAN covered more modes."""
    by_key = {(c['optimizer'], c['loss'], c['san'], c['seed']): c for c in cells}
    out = []
    for optimizer, loss in dict.fromkeys((c['optimizer'], c['loss']) for c in cells):
        seeds = sorted(s for (o, l_, san, s) in by_key if (o, l_, san) == (optimizer, loss, True)
                       and (optimizer, loss, False, s) in by_key)
        if not seeds:
            continue
        pairs = [(by_key[(optimizer, loss, True, s)], by_key[(optimizer, loss, False, s)]) for s in seeds]
        row: dict[str, Any] = dict(optimizer=optimizer, loss=loss, n_seeds=len(seeds))
        for key in ('modes', 'kl'):
            row[f'{key}_delta_mean'], row[f'{key}_delta_std'] = mean_std([san[key] - gan[key] for san, gan in pairs])
        row['san_more_modes'] = sum(san['modes'] > gan['modes'] for san, gan in pairs)
        out.append(row)
    return out


def _pm(row: dict, key: str, digits: int) -> str:
    mean, std = row[f'{key}_mean'], row[f'{key}_std']
    if not math.isfinite(mean):
        return 'nan'
    return f'{mean:.{digits}f}±{std:.{digits}f}' if row['n_seeds'] > 1 else f'{mean:.{digits}f}'


_HEADER = ('model', 'optimizer', 'n', 'modes (of 1000)', 'KL', f'confident (p≥{CONFIDENCE})', 'train s')


def _cells(row: dict) -> tuple[str, ...]:
    name = row['variant'] + (f' ({row["diverged"]} diverged)' if row.get('diverged') else '')
    return (name, row['optimizer'], str(row['n_seeds']), _pm(row, 'modes', 1), _pm(row, 'kl', 3),
            _pm(row, 'confident', 3), f'{row["train_s_mean"]:.0f}')


def _floor_cells(floor: dict) -> tuple[str, ...]:
    return (f'real stacked digits (n={floor["n"]})', '-', '-', str(floor['modes']), f'{floor["kl"]:.3f}',
            f'{floor["confident"]:.3f}', '-')


def format_table(rows: Sequence[dict], markdown: bool = False, floor: Optional[dict] = None) -> str:
    """The aggregated rows (mean±std over seeds) as aligned text, or Markdown; ``floor`` adds the real-data row."""
    body = [_cells(r) for r in rows] + ([_floor_cells(floor)] if floor else [])
    return render_table(_HEADER, body, 3, markdown)


def format_deltas(deltas: Sequence[dict], markdown: bool = False) -> str:
    """SAN minus GAN per loss and optimizer setting, paired by seed ('' when no loss has both)."""
    if not deltas:
        return ''
    body = [(d['loss'], d['optimizer'], str(d['n_seeds']), _pm(d, 'modes_delta', 1), _pm(d, 'kl_delta', 3),
             f'{d["san_more_modes"]}/{d["n_seeds"]}') for d in deltas]
    return render_table(('loss', 'optimizer', 'n', 'SAN − GAN modes', 'SAN − GAN KL', 'seeds SAN covers more'),
                        body, 3, markdown)


def write_outputs(study: dict, cells: Sequence[dict], rows: Sequence[dict], floor: dict, timing: dict,
                  outdir: Path) -> dict:
    """Write ``results.json`` (config, classifier record, timing, real row, rows, SAN deltas, raw cells),
    ``table.md`` (both tables) and ``samples_<optimizer>_<variant>.png`` for each model's seed 0 plus ``real.png``;
    returns the JSON dict."""
    outdir.mkdir(parents=True, exist_ok=True)
    clf = record_of()
    deltas = san_deltas(cells)
    raw = [{k: v for k, v in c.items() if k != 'samples'} for c in cells]
    result = dict(config=dict(study=study, classifier=dict(extractor='digits_cnn', sha256=clf['sha256'],
                                                           test_accuracy=clf['test_accuracy']),
                              confidence=CONFIDENCE),
                  timing=timing, floor=floor, rows=list(rows), san_deltas=deltas, cells=raw)
    write_json(outdir / 'results.json', result)
    (outdir / 'table.md').write_text(format_table(rows, markdown=True, floor=floor) + '\n\n'
                                     + format_deltas(deltas, markdown=True))
    save_samples(training_images()[:100], outdir / 'real.png')
    for name, samples in grid_panels(cells):
        save_samples(samples, outdir / name)
    return result
