"""Many toy-GAN cells trained at once in one process: the fast path of ``python -m san_ext.studies.toy``.

``E`` independent cells ("members") of equal shapes are stacked along a leading dim: every ``nn.Linear`` becomes
``W [E, in, out]``, ``b [E, 1, out]`` and runs as one ``torch.baddbmm``, so one interpreter op serves ``E`` cells.
The 2-D MLPs are so small that a single cell spends most of its step in Python; stacked, the step is compute
bound. Members never interact:

- each member's loss is the mean over its own batch and the optimised total is the sum over members, so a
  member's gradient is the gradient of its own loss;
- Adam is element-wise, its step counter advances for all members together, and it has one lr and no weight decay,
  so one Adam over the stacked tensors performs ``E`` independent Adam updates;
- the SAN head reproduces :class:`san_ext.layers.SANLinear` (direction normalised in the forward, input-side bias,
  ``(fun, dir)`` with the stop-gradients of SAN Eq. 8) and is re-projected onto the sphere after every D step,
  like :func:`san_ext.normalize_san_weights`.

Members start from the parameters of real ``nn.Module`` models (``build_G`` and the sanified ``build_D`` of
``toy.py``), and ``tests/test_study_toy.py`` checks that a batched run matches the single-cell reference runs.
``torch.vmap`` over ``torch.func.functional_call`` was the other option; it fails on the sanified D because
:class:`san_ext.SANDiscriminator` compares the hooked layer's output with ``torch.equal``, which has no batching
rule. Losses get logits as ``[batch, members]``: batch on dim 0, where KL-WGAN normalises its weights.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from san_ext import SANDiscriminator
from san_ext.layers import SANLinear
from san_ext.losses import GANLoss

from .toy_data import TrainBatch

__all__ = ['BatchedMLP', 'BatchedD', 'LossSlice', 'MemberStream', 'd_step', 'g_step', 'train_members']

_EPS = 1e-12  # SANLinear's clamp of the row norm
Logits = torch.Tensor | tuple[torch.Tensor, torch.Tensor]


def _stack(tensors: Sequence[torch.Tensor]) -> nn.Parameter:
    return nn.Parameter(torch.stack([t.detach() for t in tensors]).contiguous())


def _plain_linears(module: nn.Module) -> list[nn.Linear]:
    return [m for m in module.modules() if type(m) is nn.Linear]  # SANLinear, a subclass, is not included


class BatchedMLP(nn.Module):
    """``E`` MLPs of equal shapes: Linear layers stacked to ``weight[i]`` ``[E, in, out]``, ``bias[i]`` ``[E, 1, out]``
    with ``act`` between layers (and after the last one with ``last_act``)."""

    def __init__(self, members: Sequence[Sequence[nn.Linear]], act: nn.Module, last_act: bool = False) -> None:
        super().__init__()
        depth = len(members[0])
        if any(len(m) != depth for m in members):
            raise ValueError('BatchedMLP members must have the same number of Linear layers')
        self.weight = nn.ParameterList([_stack([m[i].weight.T for m in members]) for i in range(depth)])
        self.bias = nn.ParameterList([_stack([m[i].bias[None] for m in members]) for i in range(depth)])
        self.act, self.last_act = act, last_act

    @classmethod
    def from_modules(cls, modules: Sequence[nn.Module], act: nn.Module) -> BatchedMLP:
        """Stack the ``nn.Linear`` layers of each module (in registration order), e.g. the toy ``build_G``."""
        return cls([_plain_linears(m) for m in modules], act)

    def forward(self, x: torch.Tensor, members: slice = slice(None)) -> torch.Tensor:
        """``x`` ``[E', N, in]`` -> ``[E', N, out]`` for the members ``members`` (all by default)."""
        depth = len(self.weight)
        for i, (W, b) in enumerate(zip(self.weight, self.bias)):
            x = torch.baddbmm(b[members], x, W[members])
            if i < depth - 1 or self.last_act:
                x = self.act(x)
        return x


class BatchedD(nn.Module):
    """``E`` discriminators ``MLP body -> head``, all plain (``nn.Linear`` head) or all sanified (``SANLinear``
    head, reproduced here); ``forward(x, flg_train=True)`` returns SAN's ``(fun, dir)`` pair."""

    def __init__(self, Ds: Sequence[nn.Module], act: nn.Module) -> None:
        super().__init__()
        kinds = {isinstance(D, SANDiscriminator) for D in Ds}
        if len(kinds) != 1:
            raise ValueError('BatchedD members must be all SAN or all plain discriminators')
        self.san = kinds.pop()
        linears = [_plain_linears(D) for D in Ds]
        if self.san:
            heads = [D.san_layer for D in Ds]
            if not all(isinstance(h, SANLinear) and h.bias is not None and not h.positive_scale for h in heads):
                raise ValueError('BatchedD reproduces SANLinear with an input bias and positive_scale=False only')
            self.body = BatchedMLP(linears, act, last_act=True)
            self.head_weight = _stack([h.weight for h in heads])    # [E, 1, hidden], rows on the unit sphere
            self.head_scale = _stack([h.scale for h in heads])      # [E, 1]
            self.head_bias = _stack([h.bias[None] for h in heads])  # [E, 1, hidden], added to the input
        else:
            self.body = BatchedMLP([ls[:-1] for ls in linears], act, last_act=True)
            self.head = BatchedMLP([ls[-1:] for ls in linears], act)

    def forward(self, x: torch.Tensor, flg_train: bool = False, members: slice = slice(None)) -> Logits:
        """``x`` ``[E', N, 2]`` -> logits ``[E', N]``, or ``(fun, dir)`` with ``flg_train`` (SAN only)."""
        h = self.body(x, members)  # [E', N, hidden]
        if not flg_train:
            return self.head_logits(h, members)
        if not self.san:
            raise ValueError('flg_train needs SAN members')
        h = self.head_inputs(h, members)
        omega = _unit_rows(self.head_weight[members])  # [E', 1, hidden]
        scale = self.head_scale[members]              # [E', 1]
        fun = torch.bmm(h, omega.detach().mT).squeeze(-1) * scale          # trains h and s, never omega
        dir_ = torch.bmm(h.detach(), omega.mT).squeeze(-1) * scale.detach()  # trains omega only
        return fun, dir_

    def head_inputs(self, h: torch.Tensor, members: slice = slice(None)) -> torch.Tensor:
        """What the last layer projects: body features ``[E', N, hidden]`` plus the SAN head's input bias."""
        return h + self.head_bias[members] if self.san else h

    def head_logits(self, h: torch.Tensor, members: slice = slice(None)) -> torch.Tensor:
        """The ordinary logits ``[E', N]`` of body features ``h`` ``[E', N, hidden]``."""
        if not self.san:
            return self.head(h, members).squeeze(-1)
        omega = _unit_rows(self.head_weight[members])  # [E', 1, hidden]
        return torch.bmm(self.head_inputs(h, members), omega.mT).squeeze(-1) * self.head_scale[members]

    def directions(self) -> torch.Tensor:
        """The unit direction each member's last layer projects on, ``[E, hidden]``: sign(s) * omega for SAN (s omega
        = |s| sign(s) omega), the normalised weight row for a plain head."""
        if self.san:
            return _unit_rows(self.head_weight[:, 0]) * torch.sign(self.head_scale)
        return _unit_rows(self.head.weight[0][:, :, 0])

    @torch.no_grad()
    def normalize_weight(self) -> None:
        """Re-project every member's SAN direction onto the unit sphere (after each D optimizer step)."""
        if self.san:
            self.head_weight.copy_(_unit_rows(self.head_weight))


def _unit_rows(weight: torch.Tensor) -> torch.Tensor:
    return weight / weight.norm(p=2, dim=-1, keepdim=True).clamp_min(_EPS)


# -- data ------------------------------------------------------------------------------------------------------
class MemberStream:
    """Per-step inputs of all members, stacked ``[E, batch, ...]``: member ``i`` reads stream ``seed_of[i]``, so
    members with the same seed (other losses, GAN and SAN) see the same data, exactly as their single runs do."""

    def __init__(self, streams: dict[int, Iterator[TrainBatch]], seed_of: Sequence[int]) -> None:
        self.streams = streams
        self.seeds = list(streams)
        self.index = np.array([self.seeds.index(s) for s in seed_of])

    def next(self) -> TrainBatch:
        batches = [next(self.streams[s]) for s in self.seeds]
        dtype = torch.get_default_dtype()
        pick = lambda key: torch.as_tensor(np.stack([getattr(b, key) for b in batches])[self.index], dtype=dtype)  # noqa: E731
        return TrainBatch(x_real=pick('x_real'), z_d=pick('z_d'), z_g=pick('z_g'), mix=pick('mix'),
                          x_real_g=pick('x_real_g'))


# -- training --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LossSlice:
    """Consecutive members trained with one loss; ``gp_weight`` > 0 adds a gradient penalty to their D loss."""

    loss: GANLoss
    members: slice
    gp_weight: float = 0.0


def _columns(logits: Logits, cols: slice) -> Logits:
    if isinstance(logits, tuple):
        return tuple(t[:, cols] for t in logits)
    return logits[:, cols]


def _split_real_fake(logits: Logits, n_real: int) -> tuple[Logits, Logits]:
    """``[E, n_real + n_fake]`` logits (or pairs) -> real and fake parts as ``[batch, E]``."""
    if isinstance(logits, tuple):
        parts = [_split_real_fake(t, n_real) for t in logits]
        return (parts[0][0], parts[1][0]), (parts[0][1], parts[1][1])
    return logits[:, :n_real].T, logits[:, n_real:].T


def _gradient_penalty(D: BatchedD, b: TrainBatch, x_fake: torch.Tensor, members: slice) -> torch.Tensor:
    """WGAN-GP term E[(|grad_x f(x_hat)| - 1)^2] per member ``[k]``; SAN members penalise ``fun`` (omega fixed)."""
    x_hat = (b.mix * b.x_real + (1 - b.mix) * x_fake)[members].requires_grad_(True)  # [k, batch, 2]
    out = D(x_hat, flg_train=D.san, members=members)
    f = out[0] if D.san else out
    (grad,) = torch.autograd.grad(f.sum(), x_hat, create_graph=True)
    return ((grad.norm(dim=-1) - 1) ** 2).mean(dim=1)


def d_step(G: BatchedMLP, D: BatchedD, opt_D: torch.optim.Optimizer, slices: Sequence[LossSlice],
            b: TrainBatch) -> torch.Tensor:
    """One D update of every member; returns the per-member D losses ``[E]``."""
    with torch.no_grad():
        x_fake = G(b.z_d)  # [E, batch, 2]
    logits = D(torch.cat([b.x_real, x_fake], dim=1), flg_train=D.san)  # real and fake in one pass
    real, fake = _split_real_fake(logits, b.x_real.shape[1])
    parts = []
    for s in slices:
        part = s.loss.d_loss(_columns(real, s.members), _columns(fake, s.members), dim=0)
        if s.gp_weight > 0:
            part = part + s.gp_weight * _gradient_penalty(D, b, x_fake, s.members)
        parts.append(part)
    losses = torch.cat(parts)
    opt_D.zero_grad(set_to_none=True)
    losses.sum().backward()
    opt_D.step()
    D.normalize_weight()
    return losses.detach()


def g_step(G: BatchedMLP, D: BatchedD, opt_G: torch.optim.Optimizer, slices: Sequence[LossSlice],
            b: TrainBatch) -> torch.Tensor:
    """One G update of every member through D's plain logits; returns the per-member G losses ``[E]``. Paired losses
    (RpGAN) score the fakes against a fresh real batch (``b.x_real_g``), as :func:`toy_train.train_cell` does."""
    params = list(G.parameters())
    logits = D(G(b.z_g)).T  # [batch, E]
    with torch.no_grad():
        real = D(b.x_real_g).T if any(s.loss.paired for s in slices) else None
    losses = torch.cat([s.loss.g_loss(logits[:, s.members], real=None if real is None else real[:, s.members],
                                      dim=0) for s in slices])
    for p, grad in zip(params, torch.autograd.grad(losses.sum(), params)):
        p.grad = grad
    opt_G.step()
    return losses.detach()


def train_members(G: BatchedMLP, D: BatchedD, slices: Sequence[LossSlice], stream: MemberStream, steps: int,
                  lr: float, betas: tuple[float, float], on_step: Callable[[int], None] | None = None,
                  d_steps: int = 1, after_step: Callable[[int], None] | None = None) -> dict:
    """Train all members for ``steps`` G updates, each after ``d_steps`` D updates; returns final per-member losses
    and wall seconds (``after_step`` time excluded).

    Every D update reads a fresh item of the stream (real batch, latents, penalty mixing weights); the G update uses
    the last item's G latents. ``slices`` must cover the members in order. ``on_step(k)`` is called with the number
    of steps done since its last call, every 100 steps and at the end (progress); ``after_step(step)`` after each G
    update (evaluations during training).
    """
    slices = sorted(slices, key=lambda s: s.members.start)
    n_members = G.weight[0].shape[0]
    bounds = [(s.members.start, s.members.stop) for s in slices]
    if bounds[0][0] != 0 or bounds[-1][1] != n_members or any(a[1] != b[0] for a, b in zip(bounds, bounds[1:])):
        raise ValueError(f'loss slices {bounds} must cover members 0..{n_members} in order')
    opt_G = torch.optim.Adam(G.parameters(), lr=lr, betas=betas, foreach=True)
    opt_D = torch.optim.Adam(D.parameters(), lr=lr, betas=betas, foreach=True)
    d_loss = g_loss = torch.full((n_members,), float('nan'))
    wall, reported = 0.0, 0
    for step in range(1, steps + 1):
        start = time.perf_counter()
        for _ in range(d_steps):
            b = stream.next()
            d_loss = d_step(G, D, opt_D, slices, b)
        g_loss = g_step(G, D, opt_G, slices, b)
        wall += time.perf_counter() - start
        if after_step is not None:
            after_step(step)
        if on_step is not None and (step % 100 == 0 or step == steps):
            on_step(step - reported)
            reported = step
    return dict(wall_s=wall, d_loss=d_loss.tolist(), g_loss=g_loss.tolist())
