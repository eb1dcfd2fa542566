"""Training of the 2-D DOT study's generators and critics: WGAN-GP, hinge GAN/SAN and RpGAN/RpGAN-SAN.

The three critics (Tanaka 2019 used WGAN-GP; SAN claims a better distance estimate, so hinge GAN against hinge SAN
is the comparison that matters) train the toy benchmark's MLPs (``toy.build_G`` / ``toy.build_D``: z 16-d normal,
width 64, 3 hidden layers; hinge SAN swaps D's last layer for :class:`san_ext.SANLinear` via ``sanify``). Members
of one critic are stacked into one batched model (``toy_batched``), each member reading its own data set's stream
(``toy_data.training_batches``), so a member's trajectory is a function of (critic, data set, seed) alone.

Per-critic recipe, fixed before any run of this study (reasons in ``dot.py``'s docstring):

- ``wgan-gp``: Wasserstein loss + gradient penalty lambda 10, 5 D steps per G step, Adam 1e-4, betas (0.5, 0.9)
  (Gulrajani et al. 2017 and their toy code).
- ``hinge-gan``, ``hinge-san``: hinge loss (SAN: ``losses.get('hinge', san=True)`` on (fun, dir), directions
  re-projected after every D step), 1 D step per G step, Adam 2e-4, betas (0.5, 0.999): the toy benchmark's
  setting, chosen there on all its cells together.
- ``rpgan-gan``, ``rpgan-san``: R3GAN's relativistic pairing loss (``losses.get('rpgan')``; G scored against a
  fresh real batch) with hinge's setting, so the pair differs from hinge only in the loss; no R1/R2 penalty.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from san_ext import losses as san_losses

from .optimizers import OptimizerSetting, get_optimizer
from .toy_batched import BatchedD, BatchedMLP, LossSlice, MemberStream, train_members
from .toy_data import training_batches
from .toy_setup import CellConfig, build_D, build_G

__all__ = ['Critic', 'TrainConfig', 'Member', 'list_critics', 'get_critic', 'init_member', 'train_group',
           'member_callables']


@dataclass(frozen=True)
class Critic:
    """How one kind of critic is trained: loss (``san_ext.losses`` key), SAN or not, penalty, and the optimizer
    setting (``san_ext.studies.optimizers``: Adam lr, betas and D steps per G step, with its source)."""

    name: str
    loss: str
    san: bool
    gp_weight: float      # WGAN-GP's lambda on random interpolates of real and fake; 0 = none
    optimizer: str        # key in san_ext.studies.optimizers

    @property
    def setting(self) -> OptimizerSetting:
        return get_optimizer(self.optimizer)

    @property
    def n_critic(self) -> int:
        """D steps per G step."""
        return self.setting.d_steps

    @property
    def lr(self) -> float:
        return self.setting.lr

    @property
    def betas(self) -> tuple[float, float]:
        return self.setting.betas

    def to_dict(self) -> dict:
        """The recipe with its setting's values spelled out (for results.json)."""
        return dict(dataclasses.asdict(self), n_critic=self.n_critic, lr=self.lr, betas=self.betas)


_CRITICS = {c.name: c for c in (
    Critic('wgan-gp', 'wasserstein', san=False, gp_weight=10.0, optimizer='wgan-gp'),
    Critic('hinge-gan', 'hinge', san=False, gp_weight=0.0, optimizer='dcgan'),
    Critic('hinge-san', 'hinge', san=True, gp_weight=0.0, optimizer='dcgan'),
    Critic('rpgan-gan', 'rpgan', san=False, gp_weight=0.0, optimizer='dcgan'),
    Critic('rpgan-san', 'rpgan', san=True, gp_weight=0.0, optimizer='dcgan'),
)}


def list_critics() -> list[str]:
    """Names accepted by :func:`get_critic`, in table order."""
    return list(_CRITICS)


def get_critic(name: str) -> Critic:
    """The critic recipe ``name``; unknown names fail listing the valid ones."""
    if name not in _CRITICS:
        raise ValueError(f'unknown critic {name!r}; known: {", ".join(_CRITICS)}')
    return _CRITICS[name]


@dataclass(frozen=True)
class TrainConfig:
    """Shapes and length of every training run of the study."""

    steps: int = 10_000   # G steps (WGAN-GP takes n_critic D steps before each)
    batch: int = 128
    z_dim: int = 16
    hidden: int = 64


@dataclass(frozen=True)
class Member:
    """One trained (data set, seed) pair of a critic's batched group."""

    dataset: str
    seed: int


def init_member(critic: Critic, member: Member, cfg: TrainConfig) -> tuple[nn.Module, nn.Module]:
    """Initial G and D of one member as ``nn.Module`` s, a function of the seed only (GAN and SAN start alike)."""
    cell = CellConfig(dataset=member.dataset, loss=critic.loss, san=critic.san, seed=member.seed,
                      batch=cfg.batch, z_dim=cfg.z_dim, hidden=cfg.hidden)
    torch.manual_seed(member.seed)
    return build_G(cell), build_D(cell)


def train_group(critic: Critic, members: Sequence[Member], cfg: TrainConfig,
                on_step: Callable[[int], None] | None = None) -> tuple[BatchedMLP, BatchedD, dict]:
    """Train one critic's ``members`` together; member ``i`` of the returned G and D is ``members[i]``.

    Each G step follows ``n_critic`` D steps, each on a fresh item of the member's stream (real batch, latents,
    penalty mixing weights); the G step uses the last item's G latents. ``on_step(k)`` gets progress in
    member-G-steps every 100 steps. Returns G, D and stats (wall seconds, final per-member losses).
    """
    if not members:
        raise ValueError('train_group needs at least one member')
    models = [init_member(critic, m, cfg) for m in members]
    G = BatchedMLP.from_modules([g for g, _ in models], nn.ReLU())
    D = BatchedD([d for _, d in models], nn.LeakyReLU(0.2))
    streams = {i: training_batches(m.dataset, m.seed, cfg.batch, cfg.z_dim) for i, m in enumerate(members)}
    stream = MemberStream(streams, list(range(len(members))))
    slices = [LossSlice(san_losses.get(critic.loss, san=critic.san), slice(0, len(members)), critic.gp_weight)]
    report = None if on_step is None else (lambda k: on_step(k * len(members)))
    stats = train_members(G, D, slices, stream, cfg.steps, critic.lr, critic.betas, report, d_steps=critic.n_critic)
    G.requires_grad_(False)  # frozen from here on: DOT differentiates w.r.t. samples only
    D.requires_grad_(False)
    return G, D, stats


def member_callables(G: BatchedMLP, D: BatchedD, i: int) -> tuple[Callable, Callable]:
    """Member ``i`` of a batched group as plain callables ``G(z [N, z_dim]) -> [N, 2]`` and ``D(x [N, 2]) -> [N]``,
    the form ``san_ext.dot`` takes."""
    members = slice(i, i + 1)
    return (lambda z: G(z[None], members=members)[0]), (lambda x: D(x[None], members=members)[0])
