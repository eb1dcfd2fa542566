"""2-D study of discriminator optimal transport (DOT) on GAN and SAN critics: ``python -m san_ext.studies.dot``.

Tanaka (NeurIPS 2019) moves a trained G's samples with the critic as a transport potential; SAN (Takida et al.,
ICLR 2024) claims its discriminator is a better distance estimate. This study measures both on the DOT paper's 2-D
data: the 25-Gaussians grid (std 0.05, scaled by 1/2.828) and the swiss roll (noise 0.25, scaled by 1/7.5), the
``grid25`` and ``swissroll`` sets of ``toy_data``. For each critic (``dot_train``: WGAN-GP; hinge, RpGAN: GAN, SAN)
and seed it trains G and D, then reports the exact EMD to held-out data of bare G, target-space DOT, latent-space
DOT and naive transport (``dot_eval``): a table of mean ± std over seeds, a table of the change against bare G
paired by seed (with the number of seeds improved), ``results.json`` (also high-quality share and modes covered
per method) and ``samples.png`` (``dot_report``).

Choices, all fixed before the first run of the study, none tuned on its results:

- Networks, batch and steps: the toy benchmark's MLPs (width 64, z 16-d normal, batch 128) and its 10k G steps:
  the default run takes 430 CPU seconds (10.5 min wall on 2 cores shared with other jobs, load ~5). The DOT
  paper's 2-D nets (width 256/512) would cost several times more per step.
- Critic recipes: each critic's standard one (``dot_train``): WGAN-GP as in Gulrajani et al. 2017 (lambda 10,
  5 D steps, Adam 1e-4, (0.5, 0.9)); hinge GAN and SAN with the toy benchmark's Adam 2e-4, (0.5, 0.999), 1:1.
  WGAN-GP is under-trained at 10k G steps (Gulrajani's toy code runs 100k); on seed 0 neither Adam 2e-4,
  (0.5, 0.999) nor 1e-4, (0, 0.9) trained it better, so the standard recipe stayed.
- Transport: 100 steps, lr 0.01 for every method, each run with SGD and with Adam. lr 0.01 is the paper's value
  everywhere. The paper's image code (``execute_dot.py``) uses SGD with 100 updates by default; its 2-D demo
  uses Adam(betas 0, 0.9) for 100 steps. Both are reported because they behave differently near a good critic:
  the gradient of ||x - y|| has unit norm and D/k_eff's slope is at most about 1, so with SGD the two nearly
  cancel and samples move little, while Adam normalises the step and moves them about lr per step along the
  net gradient's sign. Naive transport ascends D/k_eff (the paper's "naive" mode divides by K too), in target
  space.
- k_eff: the max slope over 100 random pairs (the paper's count): of the generated points for the target-space
  methods (``estimate_k_eff``), of fresh latents for latent DOT (``estimate_latent_k_eff``); one estimate per
  trained model, drawn from a seeded generator.
- Evaluation: 1500 moved samples against 1500 held-out real points, exact EMD (POT ``emd2``); the ``data`` column
  is the EMD between two independent real sets of that size, what finite samples cost a perfect G.

Execution: the seeds of one (critic, data set) train as one stacked model (``toy_batched``), groups run in
``--workers`` single-threaded spawn processes (every path uses one thread, so the numbers do not depend on
``--workers``). The same options give the same numbers.

Examples::

    python -m san_ext.studies.dot                    # 2 data sets x 5 critics x 3 seeds, 10k steps
    python -m san_ext.studies.dot --quick            # smoke run, about a minute on 2 cores
    python -m san_ext.studies.dot --datasets grid25 --critics hinge-gan,hinge-san --seeds 5 --dot-opts adam
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
from tqdm import tqdm

from .common import CommaList, pool_map, single_thread
from .dot_eval import OPTS, TransportConfig, evaluate_member, method_names
from .dot_report import format_table, write_outputs
from .dot_train import Member, TrainConfig, get_critic, list_critics, member_callables, train_group
from .toy_data import list_datasets

__all__ = ['StudyConfig', 'QUICK', 'study_groups', 'run_group', 'run_study', 'main']

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StudyConfig:
    """The whole study: data sets x critics x seeds 0..seeds-1, with shared training and transport settings."""

    datasets: tuple[str, ...] = ('grid25', 'swissroll')
    critics: tuple[str, ...] = tuple(list_critics())
    seeds: int = 3
    train: TrainConfig = TrainConfig()
    transport: TransportConfig = TransportConfig()
    workers: int = 2


QUICK = StudyConfig(seeds=1, train=TrainConfig(steps=1000), transport=TransportConfig(n_emd=500))


def study_groups(study: StudyConfig) -> list[tuple[str, list[Member]]]:
    """(critic, members) per (critic, data set), the costliest (most D steps per G step) first, so a pool that
    takes them in order balances its workers."""
    groups = [(c, [Member(d, s) for s in range(study.seeds)]) for c in study.critics for d in study.datasets]
    return sorted(groups, key=lambda g: -get_critic(g[0]).n_critic)


def run_group(critic: str, members: Sequence[Member], study: StudyConfig,
              on_step: Callable[[int], None] | None = None) -> list[dict]:
    """Train one group and evaluate each member; one cell dict per member (``samples`` included)."""
    G, D, stats = train_group(get_critic(critic), members, study.train, on_step)
    cells = []
    for i, m in enumerate(members):
        G_i, D_i = member_callables(G, D, i)
        result = evaluate_member(G_i, D_i, m.dataset, m.seed, study.train.z_dim, study.transport)
        cells.append(dict(dataset=m.dataset, critic=critic, seed=m.seed, steps=study.train.steps,
                          train_s=stats['wall_s'] / len(members), d_loss=stats['d_loss'][i],
                          g_loss=stats['g_loss'][i], **result))
    return cells


def _pool_task(critic: str, members: Sequence[Member], study: StudyConfig, progress: Any) -> list[dict]:
    with single_thread():
        return run_group(critic, members, study, on_step=progress.put)


def run_study(study: StudyConfig, progress: bool = True) -> list[dict]:
    """Train and evaluate every group (in a spawn pool of ``study.workers`` processes when > 1); cells in
    (data set, critic, seed) order."""
    groups = study_groups(study)
    total = sum(study.train.steps * len(members) for _, members in groups)
    bar = tqdm(total=total, desc='dot study', unit='G-step', unit_scale=True, mininterval=1.0, disable=not progress)
    if study.workers > 1 and len(groups) > 1:
        outputs = pool_map(_pool_task, [(c, m, study) for c, m in groups], study.workers, bar.update)
    else:
        with single_thread():
            outputs = [run_group(c, m, study, on_step=bar.update) for c, m in groups]
    bar.close()
    rank = {(d, c): k for k, (d, c) in enumerate((d, c) for d in study.datasets for c in study.critics)}
    return sorted((cell for out in outputs for cell in out), key=lambda x: (rank[x['dataset'], x['critic']], x['seed']))


def _config_json(study: StudyConfig) -> dict:
    return dict(study=dataclasses.asdict(study), critics={c: get_critic(c).to_dict() for c in study.critics})


# -- CLI -------------------------------------------------------------------------------------------------------
@click.command(context_settings=dict(help_option_names=['-h', '--help']))
# What to run
@click.option('--datasets', type=CommaList(list_datasets()), default=None,
              help=f'Comma list of 2-D data sets.  [default: {",".join(StudyConfig.datasets)}]')
@click.option('--critics', type=CommaList(list_critics()), default=None,
              help=f'Comma list of critics.  [default: {",".join(list_critics())}]')
@click.option('--seeds', type=click.IntRange(min=1), default=None,
              help=f'Seeds per (data set, critic), seeds 0..N-1.  [default: {StudyConfig.seeds}; --quick: '
                   f'{QUICK.seeds}]')
@click.option('--steps', type=click.IntRange(min=1), default=None,
              help=f'G steps per training run (WGAN-GP: 5 D steps each, hinge: 1).  [default: '
                   f'{TrainConfig.steps}; --quick: {QUICK.train.steps}]')
@click.option('--quick', is_flag=True, help='Smoke-test preset: 1 seed, fewer steps and EMD points (about 1 min).')
# Transport and evaluation
@click.option('--dot-steps', type=click.IntRange(min=0), default=TransportConfig.steps, show_default=True,
              help='Optimizer steps of every transport (DOT and naive).')
@click.option('--dot-lr', type=click.FloatRange(min=0, min_open=True), default=TransportConfig.lr,
              show_default=True, help='Learning rate of every transport.')
@click.option('--dot-opts', type=CommaList(OPTS), default=','.join(OPTS), show_default=True,
              help='Optimizers; each transport runs once with each.')
@click.option('--n-emd', type=click.IntRange(min=2), default=None,
              help=f'Moved samples and held-out real points per EMD.  [default: {TransportConfig.n_emd}; --quick: '
                   f'{QUICK.transport.n_emd}]')
# How to run it
@click.option('--workers', type=click.IntRange(min=1), default=2, show_default=True,
              help='Worker processes, one CPU core each, each training whole (critic, data set) groups; 1 runs in '
                   'this process.')
@click.option('--outdir', type=click.Path(file_okay=False, path_type=Path), default=Path('runs/dot'),
              show_default=True, help='Directory for results.json, table.md and samples.png.')
def main(datasets, critics, seeds, steps, quick, dot_steps, dot_lr, dot_opts, n_emd, workers, outdir) -> None:
    """DOT on WGAN-GP, hinge GAN and hinge SAN critics, 2-D: trains G and D per (data set, critic, seed), then
    prints the EMD (W1, data units, mean±std over seeds) to held-out data of bare G, target-space DOT,
    latent-space DOT and naive transport, each with SGD and Adam; 'data' is the EMD between two real sets.

    \b
    Examples:
      python -m san_ext.studies.dot
      python -m san_ext.studies.dot --quick
      python -m san_ext.studies.dot --datasets grid25 --critics hinge-gan,hinge-san --seeds 5 --dot-opts adam
    """
    logging.basicConfig(level=logging.INFO, format='%(message)s')
    base = QUICK if quick else StudyConfig()
    study = dataclasses.replace(
        base, datasets=datasets or base.datasets, critics=critics or base.critics, seeds=seeds or base.seeds,
        train=dataclasses.replace(base.train, steps=steps or base.train.steps),
        transport=dataclasses.replace(base.transport, steps=dot_steps, lr=dot_lr, opts=dot_opts,
                                      n_emd=n_emd or base.transport.n_emd),
        workers=workers)
    log.info('%d training runs in %d groups, %d G steps each, %d worker(s)',
             len(study.datasets) * len(study.critics) * study.seeds, len(study_groups(study)), study.train.steps,
             study.workers)
    start = time.perf_counter()
    cells = run_study(study)
    wall = time.perf_counter() - start
    methods = method_names(study.transport)
    rows = write_outputs(dict(_config_json(study), wall_s=wall), cells, methods, outdir)
    click.echo('EMD to held-out data, mean±std over seeds:\n' + format_table(rows, methods))
    click.echo('Change of EMD against bare G, paired by seed (negative = better), seeds improved:\n'
               + format_table(rows, methods, delta=True))
    log.info('study took %.1f s; wrote %s/{results.json,table.md,samples.png}', wall, outdir)


if __name__ == '__main__':
    main()
