"""Stacked digits study, GAN vs SAN for hinge, non-saturating and RpGAN: ``python -m san_ext.studies.stacked``.

Stacked MNIST's mode-coverage benchmark (Metz et al. 2017; Srivastava et al. 2017, VEEGAN; Lin et al. 2018, PacGAN)
on the stacked digits that the project builds offline (:mod:`san_ext.data.stacked`: 128,000 RGB images, each channel
an independent uniform draw from the 1,347 training digits, 1000 modes). Each model is scored by ``stacked_modes``
(:mod:`san_ext.metrics.stacked`): modes covered and KL(p_model || uniform) over the modes that ``digits_cnn`` reads
in the three channels of 26,000 samples (PacGAN's count), plus the share of confidently read samples.

Setup, fixed before any comparison and identical for every variant (the reasons):

- Data: the stacked digits at their native 8x8, in [-1, 1]; batches are epochs of a seeded permutation.
- Networks: the digits study's DCGAN-style G (z 32-d normal, He init, no batch norm) and D (spectral norm on every
  layer; SAN: ``sanify``'s SANLinear last layer, re-projected after each D step) at base width 16, with 3 channels
  (:mod:`san_ext.studies.digits_models`; ~50k and ~42k parameters). Unconditional, as Stacked MNIST.
- Variants: ``LOSS`` and ``LOSS-san`` for hinge, non-saturating and RpGAN (R3GAN's relativistic pairing, without
  its R1/R2 penalties, so the pair differs from the others in the loss alone).
- Training: one D step then one G step per iteration, batch 64, 5,000 iterations (2.5 epochs), Adam for G and D
  under two settings from :mod:`san_ext.studies.optimizers`: ``dcgan`` (2e-4, (0.5, 0.999); PacGAN's Stacked MNIST
  code uses it) and ``san-official`` (1e-3, (0, 0.99); sony/san). The G step draws a fresh real batch and passes
  D's logits on it (``D(x_real)``, no ``flg_train``) as ``g_loss(fake, real=...)``: RpGAN needs them, the others
  ignore them, and every variant then runs the same forward passes (spectral norm's power iteration included).
- Evaluation: fixed latents per seed; ``stacked_modes`` at iterations 4,000, 4,500 and 5,000, averaged (GAN
  mode counts swing from one snapshot to the next; the mean of the last three is steadier than the last alone).
- Seeds: 5 per variant; seed s fixes G and D's initial weights (shared by all variants of a seed), the data order
  and the evaluation latents. Each cell runs in one thread, so a cell is deterministic on one machine.

Cost, measured (2-core development CPU): the full protocol's 60 cells took 5,850 CPU-s (~116 CPU-s each: 21 ms per
iteration on one core plus 3.5 CPU-s per 26,000-sample evaluation), i.e. ~49 min wall on 2 otherwise idle cores; the
measured run took 101 min wall while other jobs shared the cores. ``--quick`` (1 seed, 150 iterations, 2,000
samples; the CI smoke run) took 60 s wall at load 1.9-3.0.

Examples::

    python -m san_ext.studies.stacked                       # 6 variants x 2 optimizer settings x 5 seeds
    python -m san_ext.studies.stacked --quick               # smoke run, well under a minute on 2 cores
    python -m san_ext.studies.stacked --variants hinge,hinge-san --optimizers dcgan --seeds 3
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import click
import torch

from san_ext import losses as san_losses

from .common import CommaList, log_finished, run_cells, run_timed
from .digits import OPTIMIZER_CHOICES, canonical_variant, parse_variant
from .digits import d_step as digits_d_step
from .digits_models import build_D, build_G
from .optimizers import get_optimizer
from .stacked_eval import eval_latents, evaluate_modes, real_floor, training_images
from .stacked_report import aggregate, format_deltas, format_table, san_deltas, write_outputs

__all__ = ['CellConfig', 'StudyConfig', 'main', 'run_cell', 'run_study', 'study_cells', 'train_cell']

log = logging.getLogger(__name__)

DEFAULT_LOSSES = ('hinge', 'nonsaturating', 'rpgan')
DEFAULT_VARIANTS = tuple(san_losses.spec_name(loss, san) for loss in DEFAULT_LOSSES for san in (False, True))
DEFAULT_OPTIMIZERS = ('dcgan', 'san-official')
QUICK = dict(seeds=1, steps=150, n_gen=2000, eval_every=50, eval_last=2)


@dataclass(frozen=True)
class CellConfig:
    """One trained model of the study and its evaluations."""

    variant: str = 'hinge-san'     # LOSS or LOSS-san, a san_ext.losses spec
    seed: int = 0
    steps: int = 5000              # iterations: one D step, then one G step
    optimizer: str = 'dcgan'       # san_ext.studies.optimizers: Adam lr and betas, G and D alike
    batch: int = 64
    z_dim: int = 32
    width: int = 16                # D and G base channels
    n_gen: int = 26_000            # samples per evaluation (PacGAN)
    eval_every: int = 500          # iterations between the evaluations that are averaged
    eval_last: int = 3             # how many evaluations, the last at ``steps``

    def __post_init__(self) -> None:
        object.__setattr__(self, 'variant', canonical_variant(self.variant))
        if self.optimizer not in OPTIMIZER_CHOICES:
            raise ValueError(f'the stacked study trains one D step per G step; optimizer setting {self.optimizer!r} '
                             f'is not one of {", ".join(OPTIMIZER_CHOICES)}')
        if self.eval_last < 1 or self.steps - (self.eval_last - 1) * self.eval_every < 1:
            raise ValueError(f'{self.eval_last} evaluations {self.eval_every} iterations apart do not fit in '
                             f'{self.steps} iterations')

    @property
    def eval_steps(self) -> tuple[int, ...]:
        """The iterations after which the model is scored (ascending; the last is ``steps``)."""
        return tuple(self.steps - k * self.eval_every for k in reversed(range(self.eval_last)))


@dataclass(frozen=True)
class StudyConfig:
    """The grid: optimizer settings x variants x seeds 0..seeds-1, all with the same cell settings."""

    variants: tuple[str, ...] = DEFAULT_VARIANTS
    optimizers: tuple[str, ...] = DEFAULT_OPTIMIZERS
    seeds: int = 5
    steps: int = CellConfig.steps
    n_gen: int = CellConfig.n_gen
    eval_every: int = CellConfig.eval_every
    eval_last: int = CellConfig.eval_last
    workers: int = 2


# -- training --------------------------------------------------------------------------------------------------
def _real_batches(images: torch.Tensor, batch: int, gen: torch.Generator) -> Iterator[torch.Tensor]:
    """Endless float batches [batch, 3, 8, 8] in [-1, 1] of uint8 ``images``: epochs of a seeded permutation."""
    while True:
        order = torch.randperm(len(images), generator=gen)
        for i in range(0, len(images) - batch + 1, batch):  # drop the last partial batch: fixed shapes
            yield images[order[i:i + batch]].float() / 127.5 - 1.0


def _d_step(G, D, opt_D, loss: san_losses.GANLoss, x_real: torch.Tensor, z: torch.Tensor) -> float:
    """One D update on a real batch and a (detached) fake batch of the same size, paired by index, in one forward
    pass; SAN directions are re-projected after the step: the digits study's step without labels."""
    return digits_d_step(G, D, opt_D, loss, x_real, None, z, None)


def _g_step(G, D, opt_G, loss: san_losses.GANLoss, z: torch.Tensor, x_real: torch.Tensor) -> float:
    """One G update through D's plain logits, scored against D's logits on the fresh real batch ``x_real`` (used by
    paired losses, ignored by the others); gradients are taken for G's parameters only."""
    params = list(G.parameters())
    with torch.no_grad():
        real = D(x_real)
    g_loss = loss.g_loss(D(G(z)), real=real)
    for p, grad in zip(params, torch.autograd.grad(g_loss, params)):
        p.grad = grad
    opt_G.step()
    return float(g_loss.detach())


def _build(cfg: CellConfig, loss: san_losses.GANLoss):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)  # weight init: G and D's body are the same in every variant of a seed
        G = build_G(cfg.z_dim, cfg.width, False, channels=3)
        D = build_D(cfg.width, False, loss.san, channels=3)
    setting = get_optimizer(cfg.optimizer)
    opt_G = torch.optim.Adam(G.parameters(), lr=setting.lr, betas=setting.betas)
    opt_D = torch.optim.Adam(D.parameters(), lr=setting.lr, betas=setting.betas)
    return G, D, opt_G, opt_D


def train_cell(cfg: CellConfig, on_step: Optional[Callable[[int], None]] = None,
               on_eval: Optional[Callable[[int, Any], None]] = None) -> dict:
    """Train one cell, calling ``on_eval(iteration, G)`` (G in eval mode, back to train mode after) at each of
    ``cfg.eval_steps``; returns training stats (times exclude ``on_eval``). A non-finite loss stops training and is
    recorded (``finite=False``); the remaining evaluations then score the last G."""
    loss = san_losses.get(*parse_variant(cfg.variant))
    G, D, opt_G, opt_D = _build(cfg, loss)
    gen = torch.Generator().manual_seed(cfg.seed)
    reals = _real_batches(training_images(), cfg.batch, gen)
    start, cpu = time.perf_counter(), time.process_time()
    d_loss = g_loss = float('nan')
    finite, step, pending, in_eval = True, 0, list(cfg.eval_steps), [0.0, 0.0]
    for step in range(1, cfg.steps + 1):
        d_loss = _d_step(G, D, opt_D, loss, next(reals), torch.randn(cfg.batch, cfg.z_dim, generator=gen))
        g_loss = _g_step(G, D, opt_G, loss, torch.randn(cfg.batch, cfg.z_dim, generator=gen), next(reals))
        finite = bool(torch.isfinite(torch.tensor([d_loss, g_loss])).all())
        if on_step is not None and step % 50 == 0:
            on_step(50)
        if not finite:
            log.warning('%s seed %d: non-finite loss at iteration %d; stopping', cfg.variant, cfg.seed, step)
        while pending and (pending[0] == step or not finite):
            iteration = pending.pop(0)
            if on_eval is not None:
                t0, c0 = time.perf_counter(), time.process_time()
                on_eval(iteration, G.eval())
                G.train()
                in_eval[0] += time.perf_counter() - t0
                in_eval[1] += time.process_time() - c0
        if not finite:
            break
    return dict(train_s=time.perf_counter() - start - in_eval[0], train_cpu_s=time.process_time() - cpu - in_eval[1],
                d_loss=d_loss,
                g_loss=g_loss, steps_done=step, finite=finite)


def run_cell(cfg: CellConfig, on_step: Optional[Callable[[int], None]] = None) -> dict:
    """Train one cell and score it at each evaluation iteration; returns its config, stats, the evaluations, their
    means (``modes``, ``kl``, ``confident``), the evaluation seconds and 100 samples of the last evaluation."""
    z = eval_latents(cfg.seed, cfg.n_gen, cfg.z_dim)
    evals: list[dict] = []
    shown: dict[str, torch.Tensor] = {}
    eval_s = [0.0, 0.0]

    def on_eval(iteration: int, G) -> None:
        start, cpu = time.perf_counter(), time.process_time()
        scores, samples = evaluate_modes(G, z)
        evals.append(dict(iteration=iteration, **scores))
        shown['samples'] = samples
        eval_s[0] += time.perf_counter() - start
        eval_s[1] += time.process_time() - cpu

    stats = train_cell(cfg, on_step, on_eval)
    means = {k: sum(e[k] for e in evals) / len(evals) for k in ('modes', 'kl', 'confident')}
    loss, san = parse_variant(cfg.variant)
    return dict(dataclasses.asdict(cfg), loss=loss, san=san, lr=get_optimizer(cfg.optimizer).lr,
                betas=get_optimizer(cfg.optimizer).betas, **stats, evals=evals, **means, eval_s=eval_s[0],
                eval_cpu_s=eval_s[1], samples=shown['samples'])


# -- the study -------------------------------------------------------------------------------------------------
def study_cells(study: StudyConfig) -> list[CellConfig]:
    """Every cell of the grid in table order (optimizer setting, variant, seed)."""
    return [CellConfig(variant=v, seed=s, steps=study.steps, optimizer=o, n_gen=study.n_gen,
                       eval_every=study.eval_every, eval_last=study.eval_last)
            for o in study.optimizers for v in study.variants for s in range(study.seeds)]


def run_study(cells: Sequence[CellConfig], workers: int = 2, progress: bool = True) -> list[dict]:
    """Run ``cells`` (a spawn pool of ``workers`` single-threaded processes when > 1); results in input order."""
    return run_cells(run_cell, cells, workers, 'stacked', 'it', progress)


# -- CLI -------------------------------------------------------------------------------------------------------
@click.command(context_settings=dict(help_option_names=['-h', '--help']))
# What to run
@click.option('--variants', type=CommaList(san_losses.list_specs()), default=None,
              help=f'Comma list of LOSS or LOSS-san (losses: {",".join(san_losses.list_losses())}).  '
                   f'[default: {",".join(DEFAULT_VARIANTS)}]')
@click.option('--optimizers', type=CommaList(OPTIMIZER_CHOICES), default=None,
              help=f'Comma list of optimizer settings (san_ext/studies/optimizers.py).  '
                   f'[default: {",".join(DEFAULT_OPTIMIZERS)}]')
@click.option('--seeds', type=click.IntRange(min=1), default=None,
              help=f'Seeds per variant, 0..N-1.  [default: {StudyConfig.seeds}; --quick: {QUICK["seeds"]}]')
@click.option('--steps', type=click.IntRange(min=1), default=None,
              help=f'Iterations (one D and one G update of batch 64).  [default: {CellConfig.steps}; '
                   f'--quick: {QUICK["steps"]}]')
@click.option('--n-gen', type=click.IntRange(min=100), default=None,
              help=f'Samples per evaluation.  [default: {CellConfig.n_gen}; --quick: {QUICK["n_gen"]}]')
@click.option('--quick', is_flag=True, help='Smoke preset: 1 seed, 150 iterations, 2,000 samples, 2 evaluations.')
# How to run it
@click.option('--workers', type=click.IntRange(min=1), default=2, show_default=True,
              help='Worker processes, one CPU core each; 1 runs in this process.')
@click.option('--outdir', type=click.Path(file_okay=False, path_type=Path), default=Path('runs/stacked'),
              show_default=True, help='Folder for results.json, table.md and the PNG sample grids.')
def main(variants, optimizers, seeds, steps, n_gen, quick, workers, outdir) -> None:
    """Stacked digits study: GAN and SAN for hinge, non-saturating and RpGAN under two optimizer settings; prints
    modes covered (of 1000), KL to uniform and the confident share (stacked_modes, mean of the last evaluations),
    mean±std over seeds, and writes results.json, table.md and a PNG of samples per model.

    \b
    Examples:
      python -m san_ext.studies.stacked
      python -m san_ext.studies.stacked --quick
      python -m san_ext.studies.stacked --variants hinge,hinge-san --optimizers dcgan --seeds 3
    """
    logging.basicConfig(level=logging.INFO, format='%(message)s')
    preset = QUICK if quick else {}
    default = StudyConfig()
    study = StudyConfig(variants=variants or default.variants, optimizers=optimizers or default.optimizers,
                        seeds=seeds or preset.get('seeds', default.seeds),
                        steps=steps or preset.get('steps', default.steps),
                        n_gen=n_gen or preset.get('n_gen', default.n_gen),
                        eval_every=preset.get('eval_every', default.eval_every),
                        eval_last=preset.get('eval_last', default.eval_last), workers=workers)
    try:
        cells = study_cells(study)
    except ValueError as err:
        raise click.ClickException(str(err)) from err
    results, timing = run_timed(run_study, cells, study.workers, 'iterations', log)
    rows = aggregate(results)
    floor = real_floor(study.n_gen)
    write_outputs(dataclasses.asdict(study), results, rows, floor, timing, outdir)
    click.echo(format_table(rows, floor=floor))
    click.echo(format_deltas(san_deltas(results)))
    log_finished(log, timing, outdir)


if __name__ == '__main__':
    main()
