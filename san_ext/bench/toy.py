"""2-D benchmark, GAN vs SAN for every registered loss: ``python -m san_ext.bench.toy``.

Each cell trains a small MLP GAN on one toy data set (``toy_data``) with one loss, either with a plain
spectral-norm discriminator (GAN) or the same D converted by :func:`san_ext.sanify` (SAN), and reports mode
coverage, high-quality share, EMD and training wall time (``toy_metrics``). The sweep runs every
dataset x loss x variant x seed cell in a process pool and writes ``results.json``, ``table.md`` and
``samples.png`` to ``--outdir``.

Examples::

    python -m san_ext.bench.toy                       # full sweep: 3 data sets x 6 losses x 2 x 3 seeds
    python -m san_ext.bench.toy --quick               # smoke run, under a minute on 2 cores
    python -m san_ext.bench.toy --datasets grid25 --losses hinge,wasserstein --seeds 5 --steps 5000
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import multiprocessing
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import click
import numpy as np
import torch
from torch import nn
from tqdm import tqdm

import san_ext
from san_ext import losses as san_losses

from .toy_data import get_dataset, list_datasets
from .toy_metrics import aggregate, format_table, sample_metrics

__all__ = ['CellConfig', 'SweepConfig', 'build_G', 'build_D', 'run_cell', 'sweep_cells', 'run_sweep',
           'write_outputs', 'main']

log = logging.getLogger(__name__)

DEFAULT_STEPS = 1500  # lowered from 3000: the 108-cell default sweep took 10 min at 2000 steps on 2 cores
QUICK = dict(seeds=1, steps=500, losses=('hinge', 'nonsaturating'))  # --quick: the smoke-test preset


@dataclass(frozen=True)
class CellConfig:
    """One training run of the sweep."""

    dataset: str = 'ring8'
    loss: str = 'hinge'              # key in the san_ext.losses registry
    san: bool = True                 # sanify D and use the SAN loss on (fun, dir)
    seed: int = 0                    # seeds weights, z, training data and held-out data
    steps: int = DEFAULT_STEPS       # G steps; one D step each
    batch: int = 256
    lr: float = 2e-4                 # Adam, G and D alike
    betas: tuple[float, float] = (0.5, 0.999)
    z_dim: int = 16
    hidden: int = 128
    n_eval: int = 2500               # generated samples for high_quality / modes_covered
    n_emd: int = 1500                # generated and held-out real samples for EMD

    @property
    def variant(self) -> str:
        return 'SAN' if self.san else 'GAN'


@dataclass(frozen=True)
class SweepConfig:
    """The grid of cells: datasets x losses x {GAN, SAN} x seeds 0..seeds-1."""

    datasets: tuple[str, ...] = tuple(list_datasets())
    losses: tuple[str, ...] = tuple(san_losses.list_losses())
    seeds: int = 3
    steps: int = DEFAULT_STEPS
    workers: int = 2


# -- models ----------------------------------------------------------------------------------------------------
def build_G(cfg: CellConfig) -> nn.Module:
    """Generator MLP z [N, z_dim] -> 3 x (Linear, ReLU) -> [N, 2]."""
    h = cfg.hidden
    return nn.Sequential(nn.Linear(cfg.z_dim, h), nn.ReLU(), nn.Linear(h, h), nn.ReLU(),
                         nn.Linear(h, h), nn.ReLU(), nn.Linear(h, 2))


def build_D(cfg: CellConfig) -> nn.Module:
    """Discriminator MLP [N, 2] -> [N, 1], spectral norm on every Linear (SNGAN), sanified for SAN."""
    sn = nn.utils.parametrizations.spectral_norm
    h = cfg.hidden
    layers: list[nn.Module] = []
    for d_in in (2, h, h):
        layers += [sn(nn.Linear(d_in, h)), nn.LeakyReLU(0.2)]
    D = nn.Sequential(*layers, sn(nn.Linear(h, 1)))
    return san_ext.sanify(D) if cfg.san else D


# -- training of one cell --------------------------------------------------------------------------------------
def _d_step(G: nn.Module, D: nn.Module, opt_D: torch.optim.Optimizer, loss: san_losses.GANLoss,
            x_real: torch.Tensor, z: torch.Tensor) -> float:
    """One D update on a real batch and a detached fake batch; re-projects SAN directions afterwards."""
    with torch.no_grad():
        x_fake = G(z)
    call = (lambda x: D(x, flg_train=True)) if loss.san else D
    d_loss = loss.d_real(call(x_real)).mean() + loss.d_fake(call(x_fake)).mean()
    opt_D.zero_grad(set_to_none=True)
    d_loss.backward()
    opt_D.step()
    san_ext.normalize_san_weights(D)
    return float(d_loss.detach())


def _g_step(G: nn.Module, D: nn.Module, opt_G: torch.optim.Optimizer, loss: san_losses.GANLoss,
            z: torch.Tensor) -> float:
    """One G update through D's plain logits; gradients go to G's parameters only."""
    params = list(G.parameters())
    g_loss = loss.g(D(G(z))).mean()
    for p, grad in zip(params, torch.autograd.grad(g_loss, params)):
        p.grad = grad
    opt_G.step()
    return float(g_loss.detach())


def _train(cfg: CellConfig) -> tuple[nn.Module, dict]:
    """Train G and D of one cell; returns G and the training stats (wall time, final losses)."""
    torch.manual_seed(cfg.seed)  # weights and spectral-norm vectors: GAN and SAN cells of a seed start equal
    G, D = build_G(cfg), build_D(cfg)
    loss = san_losses.get(cfg.loss, san=cfg.san)
    opt_G = torch.optim.Adam(G.parameters(), lr=cfg.lr, betas=cfg.betas)
    opt_D = torch.optim.Adam(D.parameters(), lr=cfg.lr, betas=cfg.betas)
    data, rng_data = get_dataset(cfg.dataset), np.random.default_rng([cfg.seed, 0])
    gen_z = torch.Generator().manual_seed(cfg.seed)
    start = time.perf_counter()
    d_loss = g_loss = float('nan')
    for _ in range(cfg.steps):
        x_real = torch.from_numpy(data.sample(rng_data, cfg.batch))  # [batch, 2]
        d_loss = _d_step(G, D, opt_D, loss, x_real, torch.randn(cfg.batch, cfg.z_dim, generator=gen_z))
        g_loss = _g_step(G, D, opt_G, loss, torch.randn(cfg.batch, cfg.z_dim, generator=gen_z))
    return G, dict(wall_s=time.perf_counter() - start, d_loss=d_loss, g_loss=g_loss)


def run_cell(cfg: CellConfig) -> dict:
    """Train one cell and evaluate it; returns its config fields, metrics, stats and ``samples`` [n_eval, 2]."""
    G, stats = _train(cfg)
    start = time.perf_counter()
    with torch.no_grad():
        z = torch.randn(cfg.n_eval, cfg.z_dim, generator=torch.Generator().manual_seed(cfg.seed + 1_000_003))
        x_gen = G(z).numpy().astype(np.float64)  # [n_eval, 2]
    data = get_dataset(cfg.dataset)
    x_held_out = data.sample(np.random.default_rng([cfg.seed, 1]), cfg.n_emd)  # never seen in training
    metrics = sample_metrics(data, x_gen, x_held_out)
    return dict(dataset=cfg.dataset, loss=cfg.loss, variant=cfg.variant, seed=cfg.seed, steps=cfg.steps,
                **metrics, **stats, eval_s=time.perf_counter() - start, samples=x_gen)


# -- the sweep -------------------------------------------------------------------------------------------------
def sweep_cells(sweep: SweepConfig) -> list[CellConfig]:
    """Every cell of the grid, in table order (dataset, loss, variant, seed)."""
    return [CellConfig(dataset=d, loss=name, san=san, seed=seed, steps=sweep.steps)
            for d in sweep.datasets for name in sweep.losses for san in (False, True) for seed in range(sweep.seeds)]


def _init_worker() -> None:
    torch.set_num_threads(1)  # one core per cell: the MLPs are too small to gain from intra-op threads


@contextlib.contextmanager
def _single_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    _init_worker()
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def run_sweep(cells: Sequence[CellConfig], workers: int = 2, progress: bool = True) -> list[dict]:
    """Run ``cells`` (in a spawn pool when ``workers > 1``, else in this process); results in input order."""
    bar = tqdm(total=len(cells), desc='toy cells', unit='cell', disable=not progress)
    results: list[dict | None] = [None] * len(cells)
    with contextlib.ExitStack() as stack:
        if workers > 1:
            pool = stack.enter_context(multiprocessing.get_context('spawn').Pool(workers, initializer=_init_worker))
            outputs = pool.imap_unordered(_run_indexed, list(enumerate(cells)))
        else:
            stack.enter_context(_single_thread())
            outputs = map(_run_indexed, enumerate(cells))
        for i, result in outputs:
            results[i] = result
            bar.update()
            log.debug('%s %s %s seed %d: %.1f s', result['dataset'], result['loss'], result['variant'],
                      result['seed'], result['wall_s'])
    bar.close()
    return results


def _run_indexed(item: tuple[int, CellConfig]) -> tuple[int, dict]:
    i, cfg = item
    return i, run_cell(cfg)


# -- outputs ---------------------------------------------------------------------------------------------------
def plot_samples(cells: Sequence[dict], path: Path) -> None:
    """Scatter grid of seed-0 samples: a row per (dataset, variant), a column per loss, real data in grey."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    shown = [c for c in cells if c['seed'] == 0]
    rows = list(dict.fromkeys((c['dataset'], c['variant']) for c in shown))
    cols = list(dict.fromkeys(c['loss'] for c in shown))
    fig, axes = plt.subplots(len(rows), len(cols), figsize=(2.2 * len(cols), 2.2 * len(rows)), squeeze=False)
    real = {d: get_dataset(d).sample(np.random.default_rng(12345), 2000) for d, _ in rows}
    for c in shown:
        ax = axes[rows.index((c['dataset'], c['variant'])), cols.index(c['loss'])]
        lim = 1.25 * np.abs(real[c['dataset']]).max()
        ax.scatter(*real[c['dataset']].T, s=1, c='0.8', linewidths=0)
        ax.scatter(*np.asarray(c['samples']).T, s=1, c='tab:blue', alpha=0.5, linewidths=0)
        ax.set(xlim=(-lim, lim), ylim=(-lim, lim), xticks=[], yticks=[], aspect='equal')
        ax.set_title(f'{c["dataset"]}: {c["loss"]} / {c["variant"]}', fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_outputs(sweep: SweepConfig, cells: Sequence[dict], outdir: Path) -> list[dict]:
    """Write ``results.json`` (config, raw cells, aggregated rows), ``table.md`` and ``samples.png``; return rows."""
    outdir.mkdir(parents=True, exist_ok=True)
    rows = aggregate(cells)
    raw = [{k: v for k, v in c.items() if k != 'samples'} for c in cells]
    per_cell = ('dataset', 'loss', 'san', 'seed')  # these vary over the grid; the rest is shared by every cell
    shared = {k: v for k, v in dataclasses.asdict(CellConfig(steps=sweep.steps)).items() if k not in per_cell}
    config = dict(sweep=dataclasses.asdict(sweep), cell=shared)
    results = dict(config=config, cells=raw, rows=rows)
    (outdir / 'results.json').write_text(json.dumps(results, indent=1) + '\n')
    (outdir / 'table.md').write_text(format_table(rows, markdown=True))
    plot_samples(cells, outdir / 'samples.png')
    return rows


# -- CLI -------------------------------------------------------------------------------------------------------
class _CommaList(click.ParamType):
    """A comma-separated list of names, each checked against ``choices``."""

    name = 'list'

    def __init__(self, choices: Sequence[str]) -> None:
        self.choices = tuple(choices)

    def convert(self, value, param, ctx) -> tuple[str, ...]:
        if isinstance(value, tuple):
            return value
        names = tuple(v.strip() for v in value.split(',') if v.strip())
        unknown = [v for v in names if v not in self.choices]
        if unknown or not names:
            self.fail(f'unknown name(s) {", ".join(map(repr, unknown)) or "(empty list)"}; '
                      f'choose from {",".join(self.choices)}', param, ctx)
        return names


@click.command(context_settings=dict(help_option_names=['-h', '--help']))
# What to run
@click.option('--datasets', type=_CommaList(list_datasets()), default=None,
              help=f'Comma list of data sets.  [default: {",".join(list_datasets())}]')
@click.option('--losses', type=_CommaList(san_losses.list_losses()), default=None,
              help=f'Comma list of losses.  [default: all: {",".join(san_losses.list_losses())}; '
                   f'--quick: {",".join(QUICK["losses"])}]')
@click.option('--seeds', type=click.IntRange(min=1), default=None,
              help=f'Number of seeds per cell, seeds 0..N-1.  [default: 3; --quick: {QUICK["seeds"]}]')
@click.option('--steps', type=click.IntRange(min=1), default=None,
              help=f'Training steps per cell (one D and one G update of batch 256 each).  '
                   f'[default: {DEFAULT_STEPS}; --quick: {QUICK["steps"]}]')
@click.option('--quick', is_flag=True, help='Smoke-test preset: fewer seeds, steps and losses (under 1 min).')
# How to run it
@click.option('--workers', type=click.IntRange(min=1), default=2, show_default=True,
              help='Worker processes, one CPU core each; 1 runs in this process.')
@click.option('--outdir', type=click.Path(file_okay=False, path_type=Path), default=Path('runs/toy'),
              show_default=True, help='Directory for results.json, table.md and samples.png.')
def main(datasets, losses, seeds, steps, quick, workers, outdir) -> None:
    """2-D GAN vs SAN benchmark: every loss on ring8, grid25 and swissroll; prints a table of mode coverage,
    high-quality share (%), EMD (W1, data units) and training wall time (s), each mean±std over seeds.

    \b
    Examples:
      python -m san_ext.bench.toy
      python -m san_ext.bench.toy --quick
      python -m san_ext.bench.toy --datasets grid25 --losses hinge,wasserstein --seeds 5 --steps 5000
    """
    logging.basicConfig(level=logging.INFO, format='%(message)s')
    preset = QUICK if quick else {}
    default = SweepConfig()
    sweep = SweepConfig(datasets=datasets or default.datasets, losses=losses or preset.get('losses', default.losses),
                        seeds=seeds or preset.get('seeds', default.seeds),
                        steps=steps or preset.get('steps', default.steps), workers=workers)
    cells = sweep_cells(sweep)
    log.info('%d cells, %d steps each, %d worker(s)', len(cells), sweep.steps, sweep.workers)
    start = time.perf_counter()
    results = run_sweep(cells, workers=sweep.workers)
    rows = write_outputs(sweep, results, outdir)
    click.echo(format_table(rows))
    log.info('sweep took %.1f s; wrote %s/{results.json,table.md,samples.png}', time.perf_counter() - start, outdir)


if __name__ == '__main__':
    main()
