"""Digits study, GAN vs SAN, with and without latent DOT: ``python -m san_ext.studies.digits``.

The comparison of the SAN paper's MNIST study (vanilla GAN, WGAN, hinge, SAN; FID with precision and
recall) on real handwritten digits that ship with scikit-learn (1,797 8x8 images), then each model again with
latent discriminator optimal transport (Tanaka et al. 2019, ``san_ext.dot``). Scores use the features of a
digits classifier that the project trains itself (:mod:`san_ext.studies.digits_classifier`, 98.9 % held-out
accuracy); conventions in :mod:`san_ext.studies.digits_eval`.

Setup, fixed before any comparison and identical for every variant (the reasons):

- Data: the classifier's train split (1,347 images, 8x8, in [-1, 1]); the held-out 450 stay unseen.
- Networks (:mod:`san_ext.studies.digits_models`): DCGAN-style G (z 32-d normal, no batch norm, He init) and D of
  base width 16 (~50k and ~42k parameters). Lipschitz control: spectral norm on every D layer, for all variants
  (WGAN needs a bounded critic and DOT a near-Lipschitz one); SAN replaces the spectrally normalised last layer by
  ``sanify``'s SANLinear (SANEmbedding class rows in the conditional D) and re-projects omega after each D step.
- Variants: ``nonsaturating`` (vanilla GAN), ``wasserstein`` (WGAN: the plain critic loss with the spectral norm
  above; no clipping or gradient penalty), ``hinge``, ``hinge-san`` (any ``LOSS[-san]`` spec of ``san_ext.losses``
  works, as in ``train.py --loss``; the old spelling ``LOSS+san`` is still read, deprecated, for one release).
- Training: Adam lr 2e-4, betas (0.5, 0.999) for G and D (DCGAN), batch 64, one D step per G step, real and fake
  through D in one batch, 5,000 steps (~240 epochs). Fixed on the baseline alone (unconditional non-saturating GAN,
  seeds 0 and 1): with PyTorch's default init G started mode-collapsed for ~4k steps, with He init its FID fell
  from ~57 at 1k steps to ~20 at 5k (still falling slowly: ~15 at 6k); 5k steps is what the 20-minute budget allows
  for 24 models. SNGAN's Adam betas (0, 0.9) did worse there. Nothing was tuned per variant or on the GAN-SAN
  difference; the models are not converged, and all are compared at the same number of steps.
- Class-conditional runs: G takes one-hot c concatenated to z; D is the projection D; classes uniform in training,
  in the train split's proportions at evaluation. DOT then uses per-class k_eff.
- DOT: ``latent_space_dot`` with SGD, lr 0.01, 30 steps, the sphere projection of the normal prior, k_eff estimated
  from 100 random pairs of the evaluation latents (per class when conditional): the DOT paper's conditional
  defaults (execute_dot_cond.py; the DOT paper: SGD lr 0.01, 10 to 30 steps for images), not tuned here.
- Evaluation: after the last step (no EMA, no checkpoint selection), 1,347 samples from fixed latents vs the
  train split; the same latents are transported by DOT.

Cost (2-core AMD EPYC shared with other jobs): the default run (24 models x 5,000 steps, plus DOT and scoring) took
563 s wall at load average 1.1-2.0, with 1,058 CPU-seconds in the cells (~8.5 ms per training step on one core),
and 829 s at load 2-3; ``--quick`` took 33 s. Both runs gave identical numbers.

Seeds: cell seed s seeds the initial weights (G and D's body start identical in every variant of a seed), the training
stream and the evaluation latents; each cell runs in one thread, so a cell is deterministic on one machine.
Cells run in ``--workers`` spawned processes, one core each.

Examples::

    python -m san_ext.studies.digits                      # 4 variants x {uncond, cond} x 3 seeds, with DOT
    python -m san_ext.studies.digits --quick              # 1 seed, 600 steps: a smoke run of about a minute
    python -m san_ext.studies.digits --variants hinge,hinge-san --seeds 5 --no-conditional
"""

from __future__ import annotations

import dataclasses
import logging
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import click
import torch
import torch.nn.functional as F

import san_ext
from san_ext import losses as san_losses

from . import digits_eval as ev
from .common import CommaList, log_finished, run_cells, run_timed
from .digits_models import build_D, build_G
from .digits_report import LEGACY_SAN_SUFFIX, aggregate, current_spelling, format_table, write_outputs
from .optimizers import DEFAULT_OPTIMIZER, get_optimizer, list_optimizers

__all__ = ['CellConfig', 'StudyConfig', 'canonical_variant', 'd_step', 'parse_variant', 'run_cell', 'run_study',
           'study_cells', 'train_cell', 'main']

log = logging.getLogger(__name__)

DEFAULT_VARIANTS = ('nonsaturating', 'wasserstein', 'hinge', 'hinge-san')
OPTIMIZER_CHOICES = tuple(o for o in list_optimizers() if get_optimizer(o).d_steps == 1)
DEFAULT_OPTIMIZERS = ('dcgan', DEFAULT_OPTIMIZER)  # the study's first setting, then the official SAN code's
DEFAULT_STEPS = 5000
QUICK = dict(seeds=1, steps=600)


def parse_variant(name: str) -> tuple[str, bool]:
    """``'hinge-san'`` -> ('hinge', True); ``'wasserstein'`` -> ('wasserstein', False): a ``san_ext.losses`` spec,
    checked against the registry. The old ``'hinge+san'`` still parses, with a DeprecationWarning, for one release."""
    spec = current_spelling(name)
    try:
        parsed = san_losses.parse_spec(spec)
    except ValueError as e:
        raise ValueError(f'unknown variant {name!r}: use LOSS or LOSS{san_losses.SAN_SUFFIX} with LOSS in '
                         f'{", ".join(san_losses.list_losses())}') from e
    if spec != name:
        warnings.warn(f'digits variant {name!r}: the spelling LOSS{LEGACY_SAN_SUFFIX} is deprecated and will be '
                      f'removed in the next release; write {spec!r}', DeprecationWarning, stacklevel=2)
    return parsed


def canonical_variant(name: str) -> str:
    """The study's spelling of a variant: ``'hinge+san'`` and ``'san'`` -> ``'hinge-san'`` (see parse_variant)."""
    return san_losses.spec_name(*parse_variant(name))


@dataclass(frozen=True)
class CellConfig:
    """One trained model of the study and its evaluation."""

    variant: str = 'hinge-san'     # LOSS or LOSS-san (parse_variant); stored in canonical_variant's spelling
    conditional: bool = False
    seed: int = 0
    steps: int = DEFAULT_STEPS     # G steps, one D step before each
    optimizer: str = 'dcgan'       # san_ext.studies.optimizers: Adam lr and betas, G and D alike
    batch: int = 64
    z_dim: int = 32
    width: int = 16                # D and G base channels
    n_gen: int = 1347              # evaluation samples (= the reference split's size)
    dot_steps: int = 30            # latent DOT, SGD; 0 skips DOT
    dot_lr: float = 0.01

    def __post_init__(self) -> None:
        object.__setattr__(self, 'variant', canonical_variant(self.variant))
        if get_optimizer(self.optimizer).d_steps != 1:
            raise ValueError(f'the digits study trains one D step per G step; optimizer setting '
                             f'{self.optimizer!r} takes {get_optimizer(self.optimizer).d_steps}; use one of '
                             f'{", ".join(OPTIMIZER_CHOICES)}')

    @property
    def lr(self) -> float:
        return get_optimizer(self.optimizer).lr

    @property
    def betas(self) -> tuple[float, float]:
        return get_optimizer(self.optimizer).betas

    @property
    def loss(self) -> str:
        return parse_variant(self.variant)[0]

    @property
    def san(self) -> bool:
        return parse_variant(self.variant)[1]


@dataclass(frozen=True)
class StudyConfig:
    """The grid: conditionings x variants x seeds 0..seeds-1, all with the same cell settings."""

    variants: tuple[str, ...] = DEFAULT_VARIANTS
    optimizers: tuple[str, ...] = DEFAULT_OPTIMIZERS
    conditional: tuple[bool, ...] = (False, True)
    seeds: int = 3
    steps: int = DEFAULT_STEPS
    dot_steps: int = 30
    dot_lr: float = 0.01
    workers: int = 2

    def __post_init__(self) -> None:
        object.__setattr__(self, 'variants', tuple(canonical_variant(v) for v in self.variants))


# -- training --------------------------------------------------------------------------------------------------
def _batches(cfg: CellConfig, ref: ev.Reference):
    """Endless (x_real, c_real, z, c_fake) batches: epochs of a seeded permutation of the train split."""
    gen = torch.Generator().manual_seed(cfg.seed)
    n = len(ref.images)
    while True:
        order = torch.randperm(n, generator=gen)
        for i in range(0, n - cfg.batch + 1, cfg.batch):  # drop the last partial batch: fixed shapes
            idx = order[i:i + cfg.batch]
            z = torch.randn(cfg.batch, cfg.z_dim, generator=gen)
            c_real = c_fake = None
            if cfg.conditional:
                c_real = F.one_hot(ref.labels[idx], 10).float()
                c_fake = F.one_hot(torch.randint(0, 10, (cfg.batch,), generator=gen), 10).float()
            yield ref.images[idx], c_real, z, c_fake


def _fresh_reals(cfg: CellConfig, ref: ev.Reference):
    """Endless (x_real, c_real) batches for a paired loss's G step: uniform draws with replacement from their own
    generator (seed + 1), so the D step's stream is the same as for every other loss."""
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    while True:
        idx = torch.randint(0, len(ref.images), (cfg.batch,), generator=gen)
        yield ref.images[idx], F.one_hot(ref.labels[idx], 10).float() if cfg.conditional else None


def d_step(G, D, opt_D, loss: san_losses.GANLoss, x_real, c_real, z, c_fake) -> float:
    """One D update on real and (detached) fake samples in one forward pass; re-projects SAN directions after."""
    b = len(x_real)
    with torch.no_grad():
        x_fake = G(z) if c_fake is None else G(z, c_fake)
    x = torch.cat([x_real, x_fake])
    args = () if c_real is None else (torch.cat([c_real, c_fake]),)
    out = D(x, *args, flg_train=True) if loss.san else D(x, *args)
    if loss.san:
        real, fake = (out[0][:b], out[1][:b]), (out[0][b:], out[1][b:])
    else:
        real, fake = out[:b], out[b:]
    d_loss = loss.d_loss(real, fake)
    opt_D.zero_grad(set_to_none=True)
    d_loss.backward()
    opt_D.step()
    san_ext.normalize_san_weights(D)
    return float(d_loss.detach())


def _g_step(G, D, opt_G, loss: san_losses.GANLoss, z, c_fake, x_real, c_real) -> float:
    """One G update through D's plain logits; gradients are taken for G's parameters only. A paired loss (RpGAN)
    scores the fakes against ``x_real``, a fresh real batch (:func:`_fresh_reals`; R3GAN's loop draws one for G)."""
    params = list(G.parameters())
    fake = G(z) if c_fake is None else G(z, c_fake)
    real = None
    if loss.paired:
        with torch.no_grad():
            real = D(x_real) if c_real is None else D(x_real, c_real)
    g_loss = loss.g_loss(D(fake) if c_fake is None else D(fake, c_fake), real=real)
    for p, grad in zip(params, torch.autograd.grad(g_loss, params)):
        p.grad = grad
    opt_G.step()
    return float(g_loss.detach())


def train_cell(cfg: CellConfig, on_step: Optional[Callable[[int], None]] = None) -> tuple[Any, Any, dict]:
    """Train one cell; returns G, D (both in eval mode) and stats (wall seconds, last losses, finite flag).

    A non-finite loss stops training early and is recorded (``finite=False``); the cell is still evaluated.
    """
    ref = ev.reference()
    loss = san_losses.get(cfg.loss, san=cfg.san)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)  # weight init: G and D's body are the same in every variant of a seed
        G = build_G(cfg.z_dim, cfg.width, cfg.conditional)
        D = build_D(cfg.width, cfg.conditional, cfg.san)
    opt_G = torch.optim.Adam(G.parameters(), lr=cfg.lr, betas=cfg.betas)
    opt_D = torch.optim.Adam(D.parameters(), lr=cfg.lr, betas=cfg.betas)
    stream, fresh = _batches(cfg, ref), _fresh_reals(cfg, ref)
    start, cpu = time.perf_counter(), time.process_time()
    d_loss, g_loss, step = float('nan'), float('nan'), 0
    for step in range(1, cfg.steps + 1):
        x_real, c_real, z, c_fake = next(stream)
        d_loss = d_step(G, D, opt_D, loss, x_real, c_real, z, c_fake)
        g_loss = _g_step(G, D, opt_G, loss, z, c_fake, *(next(fresh) if loss.paired else (None, None)))
        if on_step is not None and step % 100 == 0:
            on_step(100)
        if not (torch.isfinite(torch.tensor([d_loss, g_loss])).all()):
            log.warning('%s seed %d: non-finite loss at step %d; stopping', cfg.variant, cfg.seed, step)
            break
    finite = bool(torch.isfinite(torch.tensor([d_loss, g_loss])).all())
    stats = dict(train_s=time.perf_counter() - start, train_cpu_s=time.process_time() - cpu, d_loss=d_loss,
                 g_loss=g_loss, steps_done=step, finite=finite)
    return G.eval(), D.eval(), stats


# -- evaluation ------------------------------------------------------------------------------------------------
def _generate(G, z: torch.Tensor, c: Optional[torch.Tensor]) -> torch.Tensor:
    with torch.no_grad():
        return ev.to_uint8(G(z) if c is None else G(z, c))


def evaluate_cell(cfg: CellConfig, G, D) -> tuple[dict, dict]:
    """Scores of G's samples without and with latent DOT; returns (metrics, sample images for the grids)."""
    ref = ev.reference()
    z, c = ev.eval_inputs(cfg.seed, cfg.n_gen, cfg.z_dim, ref, cfg.conditional)
    labels = None if c is None else c.argmax(dim=1)
    images = _generate(G, z, c)
    out, shown = dict(bare=ev.score_images(images, ref, labels)), dict(bare=_grid_images(images, labels))
    if cfg.dot_steps > 0:
        start = time.perf_counter()
        z_dot, k_eff = ev.apply_dot(G, D, z, c, steps=cfg.dot_steps, lr=cfg.dot_lr, seed=cfg.seed)
        dot_s = time.perf_counter() - start
        images_dot = _generate(G, z_dot, c)
        out['dot'] = dict(ev.score_images(images_dot, ref, labels), dot_s=dot_s,
                          k_eff=k_eff.tolist(), z_shift=float((z_dot - z).norm(dim=1).mean()),
                          pixel_shift=float((images_dot.float() - images.float())[:, 0].abs().mean() / 255))
        shown['dot'] = _grid_images(images_dot, labels)
    return out, shown


def _grid_images(images: torch.Tensor, labels: Optional[torch.Tensor], n: int = 100) -> torch.Tensor:
    """100 samples for a grid: the first 100, or for conditional samples 10 of each class in class rows."""
    if labels is None:
        return images[:n]
    rows = [images[labels == k][:10] for k in range(10)]
    return torch.cat([torch.cat([r, torch.zeros(10 - len(r), *r.shape[1:], dtype=r.dtype)]) for r in rows])


def run_cell(cfg: CellConfig, on_step: Optional[Callable[[int], None]] = None) -> dict:
    """Train and evaluate one cell: its config, metrics (``bare`` and ``dot``), training stats and grid samples."""
    G, D, stats = train_cell(cfg, on_step)
    start, cpu = time.perf_counter(), time.process_time()
    metrics, shown = evaluate_cell(cfg, G, D)
    return dict(dataclasses.asdict(cfg), loss=cfg.loss, san=cfg.san, lr=cfg.lr, betas=cfg.betas, **stats,
                eval_s=time.perf_counter() - start, eval_cpu_s=time.process_time() - cpu, metrics=metrics,
                samples=shown)


# -- the study -------------------------------------------------------------------------------------------------
def study_cells(study: StudyConfig) -> list[CellConfig]:
    """Every cell of the grid in table order (optimizer setting, conditioning, variant, seed)."""
    return [CellConfig(variant=v, conditional=cond, seed=s, steps=study.steps, optimizer=o,
                       dot_steps=study.dot_steps, dot_lr=study.dot_lr)
            for o in study.optimizers for cond in study.conditional for v in study.variants
            for s in range(study.seeds)]


def run_study(cells: Sequence[CellConfig], workers: int = 2, progress: bool = True) -> list[dict]:
    """Run ``cells`` (a spawn pool of ``workers`` single-threaded processes when > 1); results in input order."""
    return run_cells(run_cell, cells, workers, 'digits', 'step', progress)


# -- CLI -------------------------------------------------------------------------------------------------------
class _Variants(CommaList):
    """``--variants``: loss specs (``san_losses.list_specs()``), returned in canonical_variant's spelling; the
    deprecated ``LOSS+san`` is still read, with a warning."""

    def convert(self, value, param, ctx) -> tuple[str, ...]:
        if isinstance(value, str):
            names = [v.strip() for v in value.split(',')]
            old = [v for v in names if v.endswith(LEGACY_SAN_SUFFIX)]
            if old:
                log.warning('--variants: the spelling LOSS%s is deprecated and will be removed in the next release; '
                            'write %s', LEGACY_SAN_SUFFIX, ','.join(map(current_spelling, old)))
            value = ','.join(map(current_spelling, names))
        return tuple(canonical_variant(v) for v in super().convert(value, param, ctx))


@click.command(context_settings=dict(help_option_names=['-h', '--help']))
# What to run
@click.option('--variants', type=_Variants(san_losses.list_specs()), default=None,
              help=f'Comma list of LOSS or LOSS-san, as train.py --loss (losses: '
                   f'{",".join(san_losses.list_losses())}).  '
                   f'[default: {",".join(DEFAULT_VARIANTS)}]')
@click.option('--optimizers', type=CommaList(OPTIMIZER_CHOICES), default=None,
              help=f'Comma list of optimizer settings (san_ext/studies/optimizers.py, sources there).  '
                   f'[default: {",".join(DEFAULT_OPTIMIZERS)}]')
@click.option('--seeds', type=click.IntRange(min=1), default=None,
              help=f'Seeds per variant, 0..N-1.  [default: 3; --quick: {QUICK["seeds"]}]')
@click.option('--steps', type=click.IntRange(min=1), default=None,
              help=f'Training steps (one D and one G update of batch 64).  [default: {DEFAULT_STEPS}; '
                   f'--quick: {QUICK["steps"]}]')
@click.option('--conditional/--no-conditional', default=True, show_default=True,
              help='Also run the class-conditional models (projection D, per-class k_eff).')
@click.option('--dot-steps', type=click.IntRange(min=0), default=30, show_default=True,
              help='Latent DOT steps (SGD) on every model; 0 skips DOT.')
@click.option('--dot-lr', type=click.FloatRange(min=0, min_open=True), default=0.01, show_default=True,
              help='Latent DOT learning rate.')
@click.option('--quick', is_flag=True, help='Smoke preset: 1 seed, 600 steps (about a minute on 2 cores).')
# How to run it
@click.option('--workers', type=click.IntRange(min=1), default=2, show_default=True,
              help='Worker processes, one CPU core each; 1 runs in this process.')
@click.option('--outdir', type=click.Path(file_okay=False, path_type=Path), default=Path('runs/digits'),
              show_default=True, help='Folder for results.json, table.md and the PNG sample grids.')
def main(variants, optimizers, seeds, steps, conditional, dot_steps, dot_lr, quick, workers, outdir) -> None:
    """Digits study: vanilla GAN, WGAN, hinge and hinge SAN on sklearn's 8x8 digits, each with and without latent
    DOT, unconditional and class-conditional; prints FID, precision and recall (k=3) on the project's digits
    classifier features, mean±std over seeds, and writes results.json, table.md and PNG grids.

    \b
    Examples:
      python -m san_ext.studies.digits
      python -m san_ext.studies.digits --quick
      python -m san_ext.studies.digits --variants hinge,hinge-san --seeds 5 --no-conditional
      python -m san_ext.studies.digits --optimizers san-official --variants hinge,hinge-san
    """
    logging.basicConfig(level=logging.INFO, format='%(message)s')
    preset = QUICK if quick else {}
    default = StudyConfig()
    study = StudyConfig(variants=variants or default.variants, optimizers=optimizers or default.optimizers,
                        conditional=(False, True) if conditional else (False,),
                        seeds=seeds or preset.get('seeds', default.seeds),
                        steps=steps or preset.get('steps', default.steps), dot_steps=dot_steps, dot_lr=dot_lr,
                        workers=workers)
    cells = study_cells(study)
    results, timing = run_timed(run_study, cells, study.workers, 'steps', log)
    rows = aggregate(results)
    shared = {k: v for k, v in dataclasses.asdict(CellConfig()).items()
              if k not in ('variant', 'conditional', 'seed', 'steps', 'dot_steps', 'dot_lr', 'optimizer')}
    write_outputs(study, shared, results, rows, ev.real_floor(ev.reference()), timing, outdir)
    click.echo(format_table(rows, floor=ev.real_floor(ev.reference())))
    log_finished(log, timing, outdir)


if __name__ == '__main__':
    main()
