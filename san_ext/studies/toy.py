"""2-D study, GAN vs SAN across losses *and* optimizer settings: ``python -m san_ext.studies.toy``.

Each cell trains a small MLP GAN on one 2-D data set (``toy_data``) with one loss and one optimizer setting
(``toy_setup.OPTIMIZERS``, each cited to its source), either with a plain discriminator (GAN) or the same D converted
by :func:`san_ext.sanify` (SAN, with ``san_ext.losses.get(name, san=True)`` and the direction re-projected after
every D step). Per cell it reports modes covered, high-quality share and EMD, each **averaged over 5 evaluations in
the last 20% of training** (a plain GAN's last snapshot is one draw from an oscillation), and the **alignment
curve**: the cosine of D's last-layer direction with the optimal direction for its current features
(:mod:`san_ext.diagnostics`), 21 points from the initial networks to the end. Outputs: ``results.json`` (every seed,
every evaluation, every curve), ``table.md`` (per cell, and GAN vs SAN paired by seed with a verdict by a rule fixed
before any run), ``samples.png`` and ``curves.png``.

The protocol, fixed before running it:

- optimizer settings: the official SAN code's (Adam 1e-3, betas (0, 0.99), 1:1), the study's default setting by the
  rule ``toy_setup`` states, then DCGAN's, WGAN-GP's and SNGAN's (``--optimizers`` picks);
- losses hinge, saturating and non-saturating (the three of the SAN paper's 2-D figure), data ring8 and grid25,
  5 seeds, 5000 G steps (our choice: the 30-minute budget on 2 cores; the settings with 5 D steps cost ~3.5x);
  any registered loss and swissroll can be added with ``--losses`` / ``--datasets``;
- networks (our choice, as in the earlier versions of this study): G z (16-d normal) -> 3 x (Linear 64, ReLU)
  -> 2; D 2 -> 3 x (Linear 64, LeakyReLU 0.2) -> 1, no normalisation; batch 128. SAN changes D's last layer only.
  The Wasserstein loss (only if asked for) adds WGAN-GP's penalty, lambda 10 (on ``fun`` for SAN).

Execution: the cells of one (data set, variant, optimizer) train as one stacked model (``toy_batched``), tested equal
to single runs (``toy_train``); groups run in a pool of ``--workers`` single-threaded processes.

Examples::

    python -m san_ext.studies.toy --quick                      # ~1.5 min on 2 cores: ring8, 2 losses, 3 seeds
    python -m san_ext.studies.toy                              # the protocol: 2 x 4 x 3 x 2 x 5 = 240 cells
    python -m san_ext.studies.toy --optimizers san-official    # the default setting alone: 60 cells
    python -m san_ext.studies.toy --optimizers dcgan --losses hinge,lsgan --datasets grid25 --seeds 3
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import torch
from tqdm import tqdm

from san_ext import losses as san_losses

from .common import CommaList, pool_map, single_thread
from .toy_data import list_datasets
from .toy_metrics import format_table, format_verdicts, verdicts
from .toy_report import write_outputs
from .toy_setup import (
    DEFAULT_OPTIMIZER,
    DEFAULT_STEPS,
    GP_WEIGHT,
    CellConfig,
    build_D,
    build_G,
    get_optimizer,
    init_models,
    list_optimizers,
)
from .toy_train import group_cells, run_cell, run_group, train_cell, train_group

__all__ = ['CellConfig', 'SweepConfig', 'QUICK', 'build_G', 'build_D', 'init_models', 'train_cell', 'run_cell',
           'group_cells', 'train_group', 'run_group', 'sweep_cells', 'run_sweep', 'main']

log = logging.getLogger(__name__)

DEFAULT_LOSSES = ('hinge', 'saturating', 'nonsaturating', 'rpgan')


@dataclass(frozen=True)
class SweepConfig:
    """The grid of cells: datasets x optimizers x losses x {GAN, SAN} x seeds 0..seeds-1."""

    datasets: tuple[str, ...] = ('ring8', 'grid25')
    optimizers: tuple[str, ...] = tuple(list_optimizers())  # the default setting first
    losses: tuple[str, ...] = DEFAULT_LOSSES
    seeds: int = 5
    steps: int = DEFAULT_STEPS
    workers: int = 2


# The newcomer's first command: the official setting, where the baselines do learn, 3 seeds so a spread means
# something, ~1.5 min on 2 cores.
QUICK = SweepConfig(datasets=('ring8',), optimizers=(DEFAULT_OPTIMIZER,), losses=('hinge', 'nonsaturating'), seeds=3,
                    steps=5000)


def sweep_cells(sweep: SweepConfig) -> list[CellConfig]:
    """Every cell of the grid, in table order (dataset, optimizer, loss, variant, seed)."""
    return [CellConfig(dataset=d, optimizer=o, loss=name, san=san, seed=seed, steps=sweep.steps)
            for d in sweep.datasets for o in sweep.optimizers for name in sweep.losses for san in (False, True)
            for seed in range(sweep.seeds)]


def _cost(cells: Sequence[CellConfig]) -> int:
    return sum(c.steps * (1 + c.setting.d_steps) for c in cells)  # ~ one unit per G or D update


def _group_task(cells: Sequence[CellConfig], progress: Any) -> list[dict]:
    """Pool task: one group in a single-threaded worker, progress (cell-steps) sent to the ``progress`` queue."""
    torch.set_num_threads(1)  # one core per worker: parallelism comes from the processes
    return run_group(cells, on_step=progress.put)


def run_sweep(cells: Sequence[CellConfig], workers: int = 2, progress: bool = True) -> list[dict]:
    """Run ``cells`` in batched groups (a spawn pool of ``workers`` processes when > 1, costliest groups first);
    results in input order."""
    index_groups = sorted(group_cells(cells), key=lambda idx: -_cost([cells[i] for i in idx]))
    groups = [[cells[i] for i in idx] for idx in index_groups]
    bar = tqdm(total=sum(c.steps for c in cells), desc='toy', unit='cell-step', unit_scale=True, mininterval=1.0,
               disable=not progress)
    if workers > 1 and len(groups) > 1:
        outputs = pool_map(_group_task, [(g,) for g in groups], workers, bar.update)
    else:
        with single_thread():
            outputs = [run_group(g, on_step=bar.update) for g in groups]
    bar.close()
    results: list[dict | None] = [None] * len(cells)
    for idx, out in zip(index_groups, outputs):
        for i, result in zip(idx, out):
            results[i] = result
    return results


def _config_json(sweep: SweepConfig) -> dict:
    per_cell = ('dataset', 'loss', 'san', 'seed', 'optimizer')  # vary over the grid; the rest is shared
    shared = {k: v for k, v in dataclasses.asdict(CellConfig(steps=sweep.steps)).items() if k not in per_cell}
    shared['gp_weight'] = dict(wasserstein=GP_WEIGHT, others=0.0)
    return dict(sweep=dataclasses.asdict(sweep), cell=shared)


def _optimizer_list(value: tuple[str, ...] | None) -> tuple[str, ...] | None:
    if value == ('all',):
        return tuple(list_optimizers())
    return value


@click.command(context_settings=dict(help_option_names=['-h', '--help']))
# What to run
@click.option('--datasets', type=CommaList(list_datasets()), default=None,
              help=f'Comma list of data sets.  [default: {",".join(SweepConfig.datasets)}; --quick: '
                   f'{",".join(QUICK.datasets)}]')
@click.option('--optimizers', type=CommaList([*list_optimizers(), 'all']), default=None,
              help=f'Comma list of optimizer settings ({", ".join(list_optimizers())}) or "all"; sources in '
                   f'san_ext/studies/toy_setup.py.  [default: all; --quick: {DEFAULT_OPTIMIZER}, the default setting]')
@click.option('--losses', type=CommaList(san_losses.list_losses()), default=None,
              help=f'Comma list of losses.  [default: {",".join(DEFAULT_LOSSES)}; --quick: {",".join(QUICK.losses)}]')
@click.option('--seeds', type=click.IntRange(min=1), default=None,
              help=f'Seeds per cell, 0..N-1.  [default: {SweepConfig.seeds}; --quick: {QUICK.seeds}]')
@click.option('--steps', type=click.IntRange(min=1), default=None,
              help=f'G steps per cell (batch 128; each after the setting\'s D steps).  [default: {DEFAULT_STEPS}; '
                   f'--quick: {QUICK.steps}]')
@click.option('--quick', is_flag=True,
              help='First-run preset: the default setting only, ring8, hinge and non-saturating, 3 seeds (~1.5 min on '
                   '2 cores).')
# How to run it
@click.option('--workers', type=click.IntRange(min=1), default=2, show_default=True,
              help='Worker processes, one CPU core each, each training whole groups; 1 runs in this process.')
@click.option('--outdir', type=click.Path(file_okay=False, path_type=Path), default=Path('runs/toy'),
              show_default=True, help='Folder for results.json, table.md, samples.png and curves.png.')
def main(datasets, optimizers, losses, seeds, steps, quick, workers, outdir) -> None:
    """2-D GAN vs SAN study: modes covered, high-quality share (%), EMD (W1, data units) and the alignment of D's
    direction with the optimal one, each averaged over 5 evaluations in the last 20% of training, mean±std over
    seeds; then GAN vs SAN paired by seed.

    \b
    Examples:
      python -m san_ext.studies.toy --quick
      python -m san_ext.studies.toy
      python -m san_ext.studies.toy --optimizers san-official
      python -m san_ext.studies.toy --optimizers dcgan --losses hinge,lsgan --datasets grid25 --seeds 3
    """
    logging.basicConfig(level=logging.INFO, format='%(message)s')
    base = QUICK if quick else SweepConfig()
    sweep = SweepConfig(datasets=datasets or base.datasets, optimizers=_optimizer_list(optimizers) or base.optimizers,
                        losses=losses or base.losses, seeds=seeds or base.seeds, steps=steps or base.steps,
                        workers=workers)
    cells = sweep_cells(sweep)
    log.info('%d cells in %d batched groups, %d G steps each, %d worker(s); optimizers: %s', len(cells),
             len(group_cells(cells)), sweep.steps, sweep.workers,
             '; '.join(f'{o} = Adam {get_optimizer(o).lr:g}, betas {get_optimizer(o).betas}, '
                       f'{get_optimizer(o).d_steps} D step(s)' for o in sweep.optimizers))
    start = time.perf_counter()
    results = run_sweep(cells, workers=sweep.workers)
    wall = time.perf_counter() - start
    rows = write_outputs(dict(_config_json(sweep), wall_s=wall), results, outdir)
    click.echo(format_table(rows))
    click.echo(format_verdicts(verdicts(results)))
    log.info('study took %.1f s; wrote %s/{results.json,table.md,samples.png,curves.png}', wall, outdir)


if __name__ == '__main__':
    main()
