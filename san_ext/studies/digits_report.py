"""Outputs of the digits study: mean ± std over seeds, the printed / Markdown table, ``results.json`` and the PNG
sample grids (seed 0 of each model, without and with DOT, beside the real digits)."""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from san_ext.losses import SAN_SUFFIX

from . import digits_eval as ev
from .common import mean_std, render_table
from .digits_classifier import record_of

__all__ = ['LEGACY_SAN_SUFFIX', 'aggregate', 'current_spelling', 'format_table', 'write_outputs']

_KEYS = ('fid', 'precision', 'recall', 'class_kl', 'class_match')
LEGACY_SAN_SUFFIX = '+san'  # results written before issue 22 spell the SAN variants LOSS+san (today LOSS-san)


def current_spelling(variant: str) -> str:
    """``variant`` as the study spells it today: a legacy ``'hinge+san'`` reads as ``'hinge-san'``."""
    if variant.endswith(LEGACY_SAN_SUFFIX):
        return variant[:-len(LEGACY_SAN_SUFFIX)] + SAN_SUFFIX
    return variant


def aggregate(cells: Sequence[dict]) -> list[dict]:
    """One row per (optimizer setting, conditioning, variant): mean and std over seeds of each score, bare and with
    DOT; cells of older results spelled ``LOSS+san`` join their ``LOSS-san`` rows."""
    groups: dict[tuple, list[dict]] = {}
    for c in cells:
        groups.setdefault((c.get('optimizer', 'dcgan'), c['conditional'], current_spelling(c['variant'])),
                          []).append(c)
    rows = []
    for (optimizer, cond, variant), group in groups.items():
        row: dict[str, Any] = dict(optimizer=optimizer, conditional=cond, variant=variant, n_seeds=len(group),
                                   diverged=sum(not c['finite'] for c in group))
        for mode in ('bare', 'dot'):
            if not all(mode in c['metrics'] for c in group):
                continue
            for key in _KEYS:
                if key in group[0]['metrics'][mode]:
                    row[f'{mode}_{key}_mean'], row[f'{mode}_{key}_std'] = mean_std(
                        [c['metrics'][mode][key] for c in group])
        if all('dot' in c['metrics'] for c in group):
            row['k_eff_mean'] = float(np.nanmean([np.nanmean(c['metrics']['dot']['k_eff']) for c in group]))
            delta = [c['metrics']['dot']['fid'] - c['metrics']['bare']['fid'] for c in group]  # paired by seed
            row['dot_fid_delta_mean'], row['dot_fid_delta_std'] = mean_std(delta)
            row['dot_fid_improved'] = sum(d < 0 for d in delta)
        row['train_s_mean'] = mean_std([c['train_s'] for c in group])[0]
        rows.append(row)
    return rows


def _pm(row: dict, key: str, digits: int) -> str:
    if f'{key}_mean' not in row:
        return '-'
    mean, std = row[f'{key}_mean'], row[f'{key}_std']
    if not math.isfinite(mean):
        return 'nan'
    return f'{mean:.{digits}f}±{std:.{digits}f}' if row['n_seeds'] > 1 else f'{mean:.{digits}f}'


_HEADER = ('model', 'optimizer', 'cond', 'n', 'FID', 'precision', 'recall', 'FID +DOT', 'precision +DOT', 'recall +DOT',
           'DOT ΔFID (seeds better)', 'train s')


def _cells(row: dict) -> tuple[str, ...]:
    name = row['variant'] + (f' ({row["diverged"]} diverged)' if row.get('diverged') else '')
    return (name, row['optimizer'], 'yes' if row['conditional'] else 'no', str(row['n_seeds']),
            _pm(row, 'bare_fid', 1), _pm(row, 'bare_precision', 3),
            _pm(row, 'bare_recall', 3), _pm(row, 'dot_fid', 1), _pm(row, 'dot_precision', 3),
            _pm(row, 'dot_recall', 3), _delta(row), f'{row["train_s_mean"]:.0f}')


def _delta(row: dict) -> str:
    if 'dot_fid_delta_mean' not in row:
        return '-'
    return f'{_pm(row, "dot_fid_delta", 1)} ({row["dot_fid_improved"]}/{row["n_seeds"]})'


def _floor_cells(floor: dict) -> tuple[str, ...]:
    return (f'real held-out (n={floor["n"]})', '-', '-', '-', f'{floor["fid"]:.1f}', f'{floor["precision"]:.3f}',
            f'{floor["recall"]:.3f}', '-', '-', '-', '-', '-')


def format_table(rows: Sequence[dict], markdown: bool = False, floor: Optional[dict] = None) -> str:
    """The aggregated rows (mean±std over seeds) as aligned text, or Markdown; ``floor`` adds the real-data row."""
    body = [_cells(r) for r in rows] + ([_floor_cells(floor)] if floor else [])
    return render_table(_HEADER, body, 4, markdown)


def _grid_name(cell: dict) -> str:
    return (f'samples_{cell.get("optimizer", "dcgan")}_{"cond" if cell["conditional"] else "uncond"}_'
            f'{current_spelling(cell["variant"])}.png')


def write_outputs(study: Any, shared: dict, cells: Sequence[dict], rows: Sequence[dict], floor: dict, timing: dict,
                  outdir: Path) -> dict:
    """Write ``results.json`` (config, classifier record, timing, floor, raw cells, rows), ``table.md``, and for
    each model's seed 0 a PNG with its samples without and with DOT (plus ``real.png``); returns the JSON dict.

    ``shared`` holds the cell settings common to every cell (the caller's defaults), written as ``config.cell``.
    """
    outdir.mkdir(parents=True, exist_ok=True)
    clf = record_of()
    raw = [{k: v for k, v in c.items() if k != 'samples'} for c in cells]
    result = dict(config=dict(study=dataclasses.asdict(study), cell=shared, pr_k=ev.PR_K,
                              features=dict(extractor='digits_cnn', sha256=clf['sha256'],
                                            test_accuracy=clf['test_accuracy'], dim=clf['feature_dim'])),
                  timing=timing, floor=floor, rows=list(rows), cells=raw)
    (outdir / 'results.json').write_text(json.dumps(result, indent=1) + '\n')
    (outdir / 'table.md').write_text(format_table(rows, markdown=True, floor=floor))
    ref = ev.reference()
    real = torch.cat([ref.test_uint8[ref.test_labels == k][:10] for k in range(10)])
    ev.save_grid([('real (held-out), by class', real)], outdir / 'real.png')
    for c in cells:
        if c['seed'] != 0:
            continue
        panels = [(f'{c["variant"]}{" cond" if c["conditional"] else ""} ({c.get("optimizer", "dcgan")})',
                   c['samples']['bare'])]
        if 'dot' in c['samples']:
            panels.append((f'+ DOT {c["dot_steps"]} steps', c['samples']['dot']))
        ev.save_grid(panels, outdir / _grid_name(c))
    return result
