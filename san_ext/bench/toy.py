"""2-D benchmark, GAN vs SAN for every registered loss: ``python -m san_ext.bench.toy``.

Each cell trains a small MLP GAN on one toy data set (``toy_data``) with one loss, either with a plain
discriminator (GAN) or the same D converted by :func:`san_ext.sanify` (SAN, with ``san_ext.losses.get(name,
san=True)`` and the directions re-projected after every D step), and reports mode coverage, high-quality share,
EMD and training wall time (``toy_metrics``). It writes ``results.json``, ``table.md`` and ``samples.png``.

Execution. The cells of one data set and variant (all losses x seeds, 18 in the default sweep) are trained
together as one batched model (``toy_batched``: stacked weights, ``torch.baddbmm``); groups run in a pool of
``--workers`` single-threaded processes. One cell alone spends its ~2 ms step in the Python interpreter; 18
stacked cells take ~12 ms per step on one core (AMD EPYC, Zen 5), i.e. ~7x the throughput. :func:`run_cell` keeps
the single-cell path with ``nn.Module`` models, and the tests check that a batched group trains the same
parameters as single runs. ``wall s`` in the table is the group's training time divided by its cells.

Setup, identical for every cell (GAN and SAN, all losses), with the reasons:

- G: z (16-d normal) -> 3 x (Linear 64, ReLU) -> 2. D: 2 -> 3 x (Linear 64, LeakyReLU 0.2) -> 1, no
  normalisation, the plain MLP pair of the 2-D experiments since Metz et al. 2017 (unrolled GANs). SAN only
  changes D's last layer. Spectral norm on every D layer (the first version) left D at chance level and no cell
  trained within the affordable steps.
- Wasserstein loss: it is unbounded without a Lipschitz constraint, so its cells (only they) add WGAN-GP's
  penalty, lambda = 10 on random interpolates of real and fake (Gulrajani et al. 2017, the paper's value); for
  SAN on ``fun``, so omega stays trained by the direction term alone. WGAN-GP takes 5 critic steps per G step;
  here every loss gets one D step per G step, one schedule for all, which handicaps the Wasserstein rows.
- Adam lr 2e-4, betas (0.5, 0.999) for G and D, no weight decay (DCGAN, Radford et al. 2016). Of three standard
  settings run once at 8000 steps on ring8 and grid25 (seed 0, every loss, GAN and SAN) it trained the most
  cells of either variant; (1e-4, (0.5, 0.9)) (WGAN-GP) and (2e-4, (0.0, 0.9)) (SNGAN) left nearly every cell
  collapsed or drifting. The choice was made on all cells together, never on the GAN-SAN difference.
- Batch 128, width 64, 10k steps (the SAN paper trains its mixtures for about 10k iterations): the 10-minute budget
  on 2 cores. 108 cells are 6 groups, 3 per core: 3 x 10k x ~12 ms = 6 min, plus ~0.3 s of EMD per cell. Width
  128 costs ~3x per step (only ~4k steps would fit), batch 256 ~2x.
- Evaluation: 2500 samples for modes / high quality, exact EMD between 1500 generated and 1500 held-out points.
  One snapshot after the last step: plain GANs on these data oscillate, so a seed's numbers are a draw from
  that oscillation; the 3 seeds give its spread.

Examples::

    python -m san_ext.bench.toy                       # full sweep: 3 data sets x 6 losses x 2 x 3 seeds
    python -m san_ext.bench.toy --quick               # smoke run, under a minute on 2 cores
    python -m san_ext.bench.toy --datasets grid25 --losses hinge,wasserstein --seeds 5 --steps 5000
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import numpy as np
import torch
from torch import nn
from tqdm import tqdm

import san_ext
from san_ext import losses as san_losses

from .common import CommaList, pool_map, single_thread
from .toy_batched import BatchedD, BatchedMLP, LossSlice, MemberStream, train_members
from .toy_data import TrainBatch, get_dataset, list_datasets, training_batches
from .toy_metrics import aggregate, format_table, sample_metrics

__all__ = ['CellConfig', 'SweepConfig', 'build_G', 'build_D', 'train_cell', 'run_cell', 'group_cells', 'train_group',
           'run_group', 'sweep_cells', 'run_sweep', 'write_outputs', 'main']

log = logging.getLogger(__name__)

DEFAULT_STEPS = 10_000
GP_WEIGHT = 10.0
QUICK = dict(seeds=1, steps=3000, losses=('hinge', 'nonsaturating'))  # --quick: the smoke-test preset


@dataclass(frozen=True)
class CellConfig:
    """One training run of the sweep."""

    dataset: str = 'ring8'
    loss: str = 'hinge'              # key in the san_ext.losses registry
    san: bool = True                 # sanify D and use the SAN loss on (fun, dir)
    seed: int = 0                    # seeds weights, z, training data and held-out data
    steps: int = DEFAULT_STEPS       # G steps; one D step before each
    batch: int = 128
    lr: float = 2e-4                 # Adam, G and D alike (the module docstring gives the reasons)
    betas: tuple[float, float] = (0.5, 0.999)
    z_dim: int = 16
    hidden: int = 64                 # width of G's and D's hidden layers
    n_eval: int = 2500               # generated samples for high_quality / modes_covered
    n_emd: int = 1500                # generated and held-out real samples for EMD

    @property
    def variant(self) -> str:
        return 'SAN' if self.san else 'GAN'

    @property
    def gp_weight(self) -> float:
        """WGAN-GP's lambda for the Wasserstein loss, which needs a Lipschitz constraint; 0 (none) otherwise."""
        return GP_WEIGHT if self.loss == 'wasserstein' else 0.0


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
    """Discriminator MLP [N, 2] -> 3 x (Linear, LeakyReLU 0.2) -> [N, 1], no normalisation; sanified for SAN."""
    h = cfg.hidden
    layers: list[nn.Module] = []
    for d_in in (2, h, h):
        layers += [nn.Linear(d_in, h), nn.LeakyReLU(0.2)]
    D = nn.Sequential(*layers, nn.Linear(h, 1))
    return san_ext.sanify(D) if cfg.san else D


def _init_models(cfg: CellConfig) -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(cfg.seed)  # GAN and SAN cells of a seed start from the same function
    return build_G(cfg), build_D(cfg)


def _tensors(b: TrainBatch) -> TrainBatch:
    dtype = torch.get_default_dtype()  # float32; the equivalence tests run in float64
    return TrainBatch(**{k: torch.as_tensor(v, dtype=dtype) for k, v in dataclasses.asdict(b).items()})


# -- training of one cell: the reference path ------------------------------------------------------------------
def _gradient_penalty(D: nn.Module, b: TrainBatch, x_fake: torch.Tensor, san: bool) -> torch.Tensor:
    """WGAN-GP (Gulrajani et al. 2017, Eq. 3) on interpolates; for SAN on ``fun``, so omega stays SAN-trained."""
    x_hat = (b.mix * b.x_real + (1 - b.mix) * x_fake).requires_grad_(True)  # [batch, 2]
    f = D(x_hat, flg_train=True)[0] if san else D(x_hat)
    (grad,) = torch.autograd.grad(f.sum(), x_hat, create_graph=True)
    return ((grad.norm(dim=1) - 1) ** 2).mean()


def _d_step(G: nn.Module, D: nn.Module, opt_D: torch.optim.Optimizer, loss: san_losses.GANLoss, b: TrainBatch,
            gp_weight: float) -> float:
    """One D update on a real batch and a detached fake batch; re-projects SAN directions afterwards."""
    with torch.no_grad():
        x_fake = G(b.z_d)
    call = (lambda x: D(x, flg_train=True)) if loss.san else D
    d_loss = loss.d_real(call(b.x_real)).mean() + loss.d_fake(call(x_fake)).mean()
    if gp_weight > 0:
        d_loss = d_loss + gp_weight * _gradient_penalty(D, b, x_fake, loss.san)
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


def train_cell(cfg: CellConfig) -> tuple[nn.Module, nn.Module, dict]:
    """Train G and D of one cell alone with ``nn.Module`` models, the reference for :func:`train_group`.

    Returns G, D and the training stats (wall time, final losses).
    """
    G, D = _init_models(cfg)
    loss = san_losses.get(cfg.loss, san=cfg.san)
    opt_G = torch.optim.Adam(G.parameters(), lr=cfg.lr, betas=cfg.betas)
    opt_D = torch.optim.Adam(D.parameters(), lr=cfg.lr, betas=cfg.betas)
    stream = training_batches(cfg.dataset, cfg.seed, cfg.batch, cfg.z_dim)
    start = time.perf_counter()
    d_loss = g_loss = float('nan')
    for _ in range(cfg.steps):
        b = _tensors(next(stream))
        d_loss = _d_step(G, D, opt_D, loss, b, cfg.gp_weight)
        g_loss = _g_step(G, D, opt_G, loss, b.z_g)
    return G, D, dict(wall_s=time.perf_counter() - start, d_loss=d_loss, g_loss=g_loss)


def _eval_latents(cfg: CellConfig) -> torch.Tensor:
    return torch.randn(cfg.n_eval, cfg.z_dim, generator=torch.Generator().manual_seed(cfg.seed + 1_000_003))


def _evaluate(cfg: CellConfig, x_gen: np.ndarray, stats: dict) -> dict:
    """Metrics of one cell's samples ``[n_eval, 2]`` against held-out real data, with its config fields."""
    start = time.perf_counter()
    data = get_dataset(cfg.dataset)
    x_held_out = data.sample(np.random.default_rng([cfg.seed, 1]), cfg.n_emd)  # never seen in training
    metrics = sample_metrics(data, x_gen, x_held_out)
    return dict(dataset=cfg.dataset, loss=cfg.loss, variant=cfg.variant, seed=cfg.seed, steps=cfg.steps,
                **metrics, **stats, eval_s=time.perf_counter() - start, samples=x_gen)


def run_cell(cfg: CellConfig) -> dict:
    """Train one cell with :func:`train_cell` and evaluate it; returns its config fields, metrics, stats and
    ``samples`` [n_eval, 2]."""
    G, _, stats = train_cell(cfg)
    with torch.no_grad():
        x_gen = G(_eval_latents(cfg)).numpy().astype(np.float64)  # [n_eval, 2]
    return _evaluate(cfg, x_gen, dict(stats, members=1))


# -- training of many cells at once: the fast path -------------------------------------------------------------
def _group_key(cfg: CellConfig) -> CellConfig:
    return dataclasses.replace(cfg, loss='', seed=0)  # cells with equal keys stack into one batched model


def group_cells(cells: Sequence[CellConfig]) -> list[list[int]]:
    """Indices of ``cells`` grouped for :func:`run_group`: same data set, variant and shapes; losses contiguous."""
    groups: dict[CellConfig, list[int]] = {}
    for i, cfg in enumerate(cells):
        groups.setdefault(_group_key(cfg), []).append(i)
    order = {name: k for k, name in enumerate(dict.fromkeys(c.loss for c in cells))}
    return [sorted(idx, key=lambda i: (order[cells[i].loss], i)) for idx in groups.values()]


def _loss_slices(cells: Sequence[CellConfig]) -> list[LossSlice]:
    slices, start = [], 0
    for k in range(1, len(cells) + 1):
        if k == len(cells) or cells[k].loss != cells[start].loss:
            cfg = cells[start]
            slices.append(LossSlice(san_losses.get(cfg.loss, san=cfg.san), slice(start, k), cfg.gp_weight))
            start = k
    return slices


def train_group(cells: Sequence[CellConfig],
                on_step: Callable[[int], None] | None = None) -> tuple[BatchedMLP, BatchedD, dict]:
    """Train ``cells`` together as one batched model (``toy_batched``); member ``i`` is ``cells[i]``.

    The cells must share data set, variant and shapes; equal losses should be adjacent (:func:`group_cells` does
    so), as each run of one loss is one loss evaluation on ``[batch, members]`` logits. Each member starts from
    :func:`train_cell`'s initial models and reads its training stream, so it follows the same trajectory up to
    float rounding. ``on_step(k)`` receives progress in cell-steps.
    """
    if len({_group_key(c) for c in cells}) != 1:
        raise ValueError('train_group needs cells that differ only in loss and seed; use group_cells')
    models = [_init_models(cfg) for cfg in cells]
    G = BatchedMLP.from_modules([g for g, _ in models], nn.ReLU())
    D = BatchedD([d for _, d in models], nn.LeakyReLU(0.2))
    cfg0, seeds = cells[0], [c.seed for c in cells]
    streams = {s: training_batches(cfg0.dataset, s, cfg0.batch, cfg0.z_dim) for s in dict.fromkeys(seeds)}
    report = None if on_step is None else (lambda k: on_step(k * len(cells)))
    stats = train_members(G, D, _loss_slices(cells), MemberStream(streams, seeds), cfg0.steps, cfg0.lr, cfg0.betas,
                          report)
    return G, D, stats


def run_group(cells: Sequence[CellConfig], on_step: Callable[[int], None] | None = None) -> list[dict]:
    """Train ``cells`` with :func:`train_group` and evaluate each; per cell the same output as :func:`run_cell`,
    with ``wall_s`` the group's training time divided by its size."""
    G, _, stats = train_group(cells, on_step)
    results = []
    for i, cfg in enumerate(cells):
        with torch.no_grad():
            x_gen = G(_eval_latents(cfg)[None], members=slice(i, i + 1))[0].numpy().astype(np.float64)
        cell_stats = dict(wall_s=stats['wall_s'] / len(cells), d_loss=stats['d_loss'][i],
                          g_loss=stats['g_loss'][i], members=len(cells))
        results.append(_evaluate(cfg, x_gen, cell_stats))
    return results


# -- the sweep -------------------------------------------------------------------------------------------------
def sweep_cells(sweep: SweepConfig) -> list[CellConfig]:
    """Every cell of the grid, in table order (dataset, loss, variant, seed)."""
    return [CellConfig(dataset=d, loss=name, san=san, seed=seed, steps=sweep.steps)
            for d in sweep.datasets for name in sweep.losses for san in (False, True) for seed in range(sweep.seeds)]


def _group_task(cells: Sequence[CellConfig], progress: Any) -> list[dict]:
    """Pool task: one group in a single-threaded worker, progress (cell-steps) sent to the ``progress`` queue."""
    torch.set_num_threads(1)  # one core per worker: parallelism comes from the processes
    return run_group(cells, on_step=progress.put)


def _run_in_pool(groups: list[list[CellConfig]], workers: int, bar: tqdm) -> list[list[dict]]:
    """Run the groups in a spawn pool of ``workers`` processes, updating ``bar`` from the workers' progress."""
    return pool_map(_group_task, [(g,) for g in groups], workers, bar.update)


def run_sweep(cells: Sequence[CellConfig], workers: int = 2, progress: bool = True) -> list[dict]:
    """Run ``cells`` in batched groups (a spawn pool of ``workers`` processes when > 1); results in input order."""
    index_groups = group_cells(cells)
    groups = [[cells[i] for i in idx] for idx in index_groups]
    bar = tqdm(total=sum(c.steps for c in cells), desc='toy', unit='cell-step', unit_scale=True, mininterval=1.0,
               disable=not progress)
    if workers > 1 and len(groups) > 1:
        outputs = _run_in_pool(groups, workers, bar)
    else:
        with single_thread():
            outputs = [run_group(g, on_step=bar.update) for g in groups]
    bar.close()
    results: list[dict | None] = [None] * len(cells)
    for idx, out in zip(index_groups, outputs):
        for i, result in zip(idx, out):
            results[i] = result
    return results


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
    shared['gp_weight'] = dict(wasserstein=GP_WEIGHT, others=0.0)  # the Lipschitz constraint of Wasserstein cells
    config = dict(sweep=dataclasses.asdict(sweep), cell=shared)
    results = dict(config=config, cells=raw, rows=rows)
    (outdir / 'results.json').write_text(json.dumps(results, indent=1) + '\n')
    (outdir / 'table.md').write_text(format_table(rows, markdown=True))
    plot_samples(cells, outdir / 'samples.png')
    return rows


# -- CLI -------------------------------------------------------------------------------------------------------
@click.command(context_settings=dict(help_option_names=['-h', '--help']))
# What to run
@click.option('--datasets', type=CommaList(list_datasets()), default=None,
              help=f'Comma list of data sets.  [default: {",".join(list_datasets())}]')
@click.option('--losses', type=CommaList(san_losses.list_losses()), default=None,
              help=f'Comma list of losses.  [default: all: {",".join(san_losses.list_losses())}; '
                   f'--quick: {",".join(QUICK["losses"])}]')
@click.option('--seeds', type=click.IntRange(min=1), default=None,
              help=f'Number of seeds per cell, seeds 0..N-1.  [default: 3; --quick: {QUICK["seeds"]}]')
@click.option('--steps', type=click.IntRange(min=1), default=None,
              help=f'Training steps per cell (one D and one G update of batch 128 each).  '
                   f'[default: {DEFAULT_STEPS}; --quick: {QUICK["steps"]}]')
@click.option('--quick', is_flag=True, help='Smoke-test preset: fewer seeds, steps and losses (under 1 min).')
# How to run it
@click.option('--workers', type=click.IntRange(min=1), default=2, show_default=True,
              help='Worker processes, one CPU core each, each training whole groups (one data set and variant); '
                   '1 runs in this process.')
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
    log.info('%d cells in %d batched groups, %d steps each, %d worker(s)', len(cells), len(group_cells(cells)),
             sweep.steps, sweep.workers)
    start = time.perf_counter()
    results = run_sweep(cells, workers=sweep.workers)
    rows = write_outputs(sweep, results, outdir)
    click.echo(format_table(rows))
    log.info('sweep took %.1f s; wrote %s/{results.json,table.md,samples.png}', time.perf_counter() - start, outdir)


if __name__ == '__main__':
    main()
