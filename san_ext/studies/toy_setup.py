"""What one cell of the 2-D study is: its optimizer setting (each cited to its source), networks and schedule.

Optimizer settings: :mod:`san_ext.studies.optimizers` (each with its source).

The study's default is ``san-official``, chosen by a rule stated before any comparison was run: the study asks
whether SAN does what its authors say, so it runs first at the only optimizer setting its authors published
(the SAN paper's own 2-D hyperparameters are in an appendix no stored copy reaches). The other three are the
field's standard settings, so the verdict can say where it holds. Networks and batch are our choice (below).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

import san_ext

from .optimizers import DEFAULT_OPTIMIZER, OPTIMIZERS, OptimizerSetting, get_optimizer, list_optimizers

__all__ = ['OptimizerSetting', 'OPTIMIZERS', 'DEFAULT_OPTIMIZER', 'get_optimizer', 'list_optimizers', 'CellConfig',
           'build_G', 'build_D', 'init_models', 'eval_steps', 'curve_steps', 'GP_WEIGHT', 'DEFAULT_STEPS']

DEFAULT_STEPS = 5000
GP_WEIGHT = 10.0


@dataclass(frozen=True)
class CellConfig:
    """One training run of the study: data set, loss, GAN or SAN, optimizer setting, seed, and the evaluation plan."""

    dataset: str = 'ring8'
    loss: str = 'hinge'              # key in the san_ext.losses registry
    san: bool = True                 # sanify D and use the SAN loss on (fun, dir)
    seed: int = 0                    # seeds weights, z, training data and held-out data
    steps: int = DEFAULT_STEPS       # G steps; d_steps D steps before each
    optimizer: str = DEFAULT_OPTIMIZER
    batch: int = 128
    z_dim: int = 16
    hidden: int = 64                 # width of G's and D's hidden layers
    n_eval: int = 2500               # generated samples for high_quality / modes_covered
    n_emd: int = 1000                # generated and held-out real samples for EMD
    n_evals: int = 5                 # evaluations in the last eval_window of training, averaged
    eval_window: float = 0.2
    n_curve: int = 20                # points of the alignment curve (plus step 0)
    n_align: int = 512               # real and fake samples per alignment point

    def __post_init__(self) -> None:
        get_optimizer(self.optimizer)
        if not 0 < self.eval_window <= 1 or self.n_evals < 1 or self.n_curve < 1:
            raise ValueError('need n_evals >= 1, n_curve >= 1 and 0 < eval_window <= 1')

    @property
    def variant(self) -> str:
        return 'SAN' if self.san else 'GAN'

    @property
    def setting(self) -> OptimizerSetting:
        return get_optimizer(self.optimizer)

    @property
    def gp_weight(self) -> float:
        """WGAN-GP's lambda for the Wasserstein loss, which needs a Lipschitz constraint; 0 (none) otherwise."""
        return GP_WEIGHT if self.loss == 'wasserstein' else 0.0


def eval_steps(cfg: CellConfig) -> list[int]:
    """G steps after which the metrics are taken: ``n_evals`` equally spaced in the last ``eval_window``, ending at
    the last step (10k steps, 5 evaluations: 8400, 8800, 9200, 9600, 10000)."""
    window = cfg.eval_window * cfg.steps
    return sorted({max(1, math.ceil(cfg.steps - j * window / cfg.n_evals)) for j in range(cfg.n_evals)})


def curve_steps(cfg: CellConfig) -> list[int]:
    """G steps of the alignment curve: 0 (the initial networks) and ``n_curve`` equal intervals up to the end."""
    return sorted({round(k * cfg.steps / cfg.n_curve) for k in range(cfg.n_curve + 1)})


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


def init_models(cfg: CellConfig) -> tuple[nn.Module, nn.Module]:
    """Initial G and D of a cell, a function of the seed only: GAN and SAN cells of a seed start alike."""
    torch.manual_seed(cfg.seed)
    return build_G(cfg), build_D(cfg)
