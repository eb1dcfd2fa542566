"""Training and evaluation of 2-D study cells: one cell alone (the reference) or many stacked (the fast path).

Both paths evaluate at the same G steps with the same latents and held-out data:

- metrics (modes covered, high-quality share, EMD) at :func:`toy_setup.eval_steps` -- ``n_evals`` points in the
  last 20% of training -- and averaged, since a plain GAN's last snapshot is one draw from an oscillation;
- the alignment curve at :func:`toy_setup.curve_steps`: the cosine of D's last-layer direction with the optimal
  direction (:mod:`san_ext.diagnostics`) on ``n_align`` held-out real and fresh fake samples, weighted by the
  loss's direction weights. For SAN the direction is sign(s) * omega; for a GAN the normalised last-layer row.

The single-cell path measures alignment with :func:`san_ext.diagnostics.san_alignment` on the ``nn.Module`` D; the
batched path computes the same quantity from the stacked weights, and the tests check that the two agree.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import nn

import san_ext
from san_ext import losses as san_losses
from san_ext.diagnostics import direction_alignment, san_alignment

from .toy_batched import BatchedD, BatchedMLP, LossSlice, MemberStream, train_members
from .toy_data import TrainBatch, get_dataset, training_batches
from .toy_metrics import sample_metrics
from .toy_setup import CellConfig, curve_steps, eval_steps, init_models

__all__ = ['train_cell', 'run_cell', 'group_cells', 'train_group', 'run_group']

_Z_SEED = 1_000_003   # evaluation latents: default_rng-independent torch generator offset per seed
_ALIGN_SEED = 3_000_017


def _tensors(b: TrainBatch) -> TrainBatch:
    dtype = torch.get_default_dtype()  # float32; the equivalence tests run in float64
    return TrainBatch(**{k: torch.as_tensor(v, dtype=dtype) for k, v in dataclasses.asdict(b).items()})


# -- what every evaluation of a cell reads -------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class _EvalInputs:
    z_eval: torch.Tensor     # [n_eval, z_dim]
    z_align: torch.Tensor    # [n_align, z_dim]
    x_align: torch.Tensor    # [n_align, 2] held-out real
    x_held_out: np.ndarray   # [n_emd, 2] held-out real, never seen in training


def _eval_inputs(cfg: CellConfig) -> _EvalInputs:
    dtype = torch.get_default_dtype()
    z_eval = torch.randn(cfg.n_eval, cfg.z_dim, generator=torch.Generator().manual_seed(cfg.seed + _Z_SEED))
    z_align = torch.randn(cfg.n_align, cfg.z_dim, generator=torch.Generator().manual_seed(cfg.seed + _ALIGN_SEED))
    data = get_dataset(cfg.dataset)
    held_out = data.sample(np.random.default_rng([cfg.seed, 1]), cfg.n_emd + cfg.n_align)
    return _EvalInputs(z_eval.to(dtype), z_align.to(dtype), torch.as_tensor(held_out[cfg.n_emd:], dtype=dtype),
                       held_out[:cfg.n_emd])


class _Record:
    """Per-cell evaluations during training: metrics at eval steps, alignment at curve steps."""

    def __init__(self, cfg: CellConfig) -> None:
        self.cfg, self.inputs = cfg, _eval_inputs(cfg)
        self.due_eval, self.due_curve = set(eval_steps(cfg)), set(curve_steps(cfg))
        self.evals: list[dict] = []
        self.curve: list[tuple[int, float]] = []
        self.samples: np.ndarray | None = None
        self.eval_s = 0.0

    def metrics(self, step: int, x_gen: np.ndarray) -> None:
        start = time.perf_counter()
        m = sample_metrics(get_dataset(self.cfg.dataset), x_gen, self.inputs.x_held_out)
        self.evals.append(dict(step=step, **m))
        self.samples = x_gen
        self.eval_s += time.perf_counter() - start

    def summary(self) -> dict:
        cfg = self.cfg
        avg = {k: float(np.mean([e[k] for e in self.evals])) for k in ('modes_covered', 'high_quality', 'emd')}
        return dict(dataset=cfg.dataset, loss=cfg.loss, variant=cfg.variant, optimizer=cfg.optimizer, seed=cfg.seed,
                    steps=cfg.steps, n_modes=self.evals[-1]['n_modes'], **avg, evals=self.evals,
                    curve=self.curve, alignment_final=self.curve[-1][1], eval_s=self.eval_s, samples=self.samples)


# -- one cell alone: the reference path ----------------------------------------------------------------------------
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
    d_loss = loss.d_loss(call(b.x_real), call(x_fake))
    if gp_weight > 0:
        d_loss = d_loss + gp_weight * _gradient_penalty(D, b, x_fake, loss.san)
    opt_D.zero_grad(set_to_none=True)
    d_loss.backward()
    opt_D.step()
    san_ext.normalize_san_weights(D)
    return float(d_loss.detach())


def _g_step(G: nn.Module, D: nn.Module, opt_G: torch.optim.Optimizer, loss: san_losses.GANLoss,
            z: torch.Tensor, x_real: torch.Tensor) -> float:
    """One G update through D's plain logits; gradients go to G's parameters only. A paired loss (RpGAN) scores the
    fakes against ``x_real``, a fresh real batch (R3GAN's loop draws one for its G phase)."""
    params = list(G.parameters())
    with torch.no_grad():
        real = D(x_real) if loss.paired else None
    g_loss = loss.g_loss(D(G(z)), real=real)
    for p, grad in zip(params, torch.autograd.grad(g_loss, params)):
        p.grad = grad
    opt_G.step()
    return float(g_loss.detach())


def _cell_probe(cfg: CellConfig, G: nn.Module, D: nn.Module, loss: san_losses.GANLoss, rec: _Record, step: int
                ) -> None:
    with torch.no_grad():
        if step in rec.due_eval:
            rec.metrics(step, G(rec.inputs.z_eval).numpy().astype(np.float64))
    if step in rec.due_curve:
        with torch.no_grad():
            x_fake = G(rec.inputs.z_align)
        name = 'module.6' if cfg.san else '6'  # D's last Linear (sanified: wrapped as .module)
        rec.curve.append((step, san_alignment(D, rec.inputs.x_align, x_fake, loss=loss, layers=[name])[name]))


def train_cell(cfg: CellConfig) -> tuple[nn.Module, nn.Module, dict]:
    """Train one cell alone with ``nn.Module`` models, the reference for :func:`train_group`; returns G, D and the
    cell's result (averaged metrics, every evaluation, the alignment curve, wall time, final losses)."""
    G, D = init_models(cfg)
    setting, loss = cfg.setting, san_losses.get(cfg.loss, san=cfg.san)
    opt_G = torch.optim.Adam(G.parameters(), lr=setting.lr, betas=setting.betas)
    opt_D = torch.optim.Adam(D.parameters(), lr=setting.lr, betas=setting.betas)
    stream = training_batches(cfg.dataset, cfg.seed, cfg.batch, cfg.z_dim)
    rec = _Record(cfg)
    plain_loss = san_losses.get(cfg.loss)  # the direction weights are the loss's, SAN or not
    _cell_probe(cfg, G, D, plain_loss, rec, 0)
    wall, d_loss, g_loss = 0.0, float('nan'), float('nan')
    for step in range(1, cfg.steps + 1):
        start = time.perf_counter()
        for _ in range(setting.d_steps):
            b = _tensors(next(stream))
            d_loss = _d_step(G, D, opt_D, loss, b, cfg.gp_weight)
        g_loss = _g_step(G, D, opt_G, loss, b.z_g, b.x_real_g)
        wall += time.perf_counter() - start
        _cell_probe(cfg, G, D, plain_loss, rec, step)
    return G, D, dict(rec.summary(), wall_s=wall, d_loss=d_loss, g_loss=g_loss, members=1)


def run_cell(cfg: CellConfig) -> dict:
    """Train and evaluate one cell alone (:func:`train_cell`); returns its result with ``samples`` [n_eval, 2]."""
    return train_cell(cfg)[2]


# -- many cells at once: the fast path -----------------------------------------------------------------------------
def _group_key(cfg: CellConfig) -> CellConfig:
    return dataclasses.replace(cfg, loss='', seed=0)  # cells with equal keys stack into one batched model


def group_cells(cells: Sequence[CellConfig]) -> list[list[int]]:
    """Indices of ``cells`` grouped for :func:`run_group`: same data set, variant, optimizer and shapes; losses
    contiguous."""
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


def _batched_directions(D: BatchedD, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Features the last layer sees ``[E, n, F]``, its direction per member ``[E, F]`` and the plain logits ``[E, n]``
    (one pass through the body)."""
    h = D.body(x)
    return D.head_inputs(h), D.directions(), D.head_logits(h)


def _group_probe(cells: Sequence[CellConfig], G: BatchedMLP, D: BatchedD, records: list[_Record], step: int) -> None:
    due_eval, due_curve = records[0].due_eval, records[0].due_curve
    with torch.no_grad():
        if step in due_eval:
            x_gen = G(torch.stack([r.inputs.z_eval for r in records]))  # [E, n_eval, 2]
            for rec, x in zip(records, x_gen):
                rec.metrics(step, x.numpy().astype(np.float64))
        if step not in due_curve:
            return
        x_fake = G(torch.stack([r.inputs.z_align for r in records]))
        h_r, rows, f_r = _batched_directions(D, torch.stack([r.inputs.x_align for r in records]))
        h_f, _, f_f = _batched_directions(D, x_fake)
    for i, (cfg, rec) in enumerate(zip(cells, records)):
        loss = san_losses.get(cfg.loss)
        w_r, w_f = loss.pair_direction_weights(f_r[i][:, None], f_f[i][:, None])
        cos = direction_alignment(rows[i], h_r[i], h_f[i], w_r[:, 0], w_f[:, 0])
        rec.curve.append((step, float(cos[0])))


def train_group(cells: Sequence[CellConfig], on_step: Callable[[int], None] | None = None
                ) -> tuple[BatchedMLP, BatchedD, list[dict]]:
    """Train ``cells`` together as one batched model; member ``i`` is ``cells[i]``. Returns G, D and each cell's
    result, as :func:`train_cell` gives it (``wall_s`` the group's training time divided by its size).

    The cells must share data set, variant, optimizer and shapes; equal losses should be adjacent
    (:func:`group_cells`). Each member starts from :func:`train_cell`'s initial models and reads its training stream,
    so it follows the same trajectory up to float rounding. ``on_step(k)`` receives progress in cell-steps.
    """
    if len({_group_key(c) for c in cells}) != 1:
        raise ValueError('train_group needs cells that differ only in loss and seed; use group_cells')
    models = [init_models(cfg) for cfg in cells]
    G = BatchedMLP.from_modules([g for g, _ in models], nn.ReLU())
    D = BatchedD([d for _, d in models], nn.LeakyReLU(0.2))
    cfg0, seeds = cells[0], [c.seed for c in cells]
    streams = {s: training_batches(cfg0.dataset, s, cfg0.batch, cfg0.z_dim) for s in dict.fromkeys(seeds)}
    records = [_Record(cfg) for cfg in cells]
    _group_probe(cells, G, D, records, 0)
    report = None if on_step is None else (lambda k: on_step(k * len(cells)))
    setting = cfg0.setting
    stats = train_members(G, D, _loss_slices(cells), MemberStream(streams, seeds), cfg0.steps, setting.lr,
                          setting.betas, report, d_steps=setting.d_steps,
                          after_step=lambda step: _group_probe(cells, G, D, records, step))
    results = [dict(rec.summary(), wall_s=stats['wall_s'] / len(cells), d_loss=stats['d_loss'][i],
                    g_loss=stats['g_loss'][i], members=len(cells)) for i, rec in enumerate(records)]
    return G, D, results


def run_group(cells: Sequence[CellConfig], on_step: Callable[[int], None] | None = None) -> list[dict]:
    """Train and evaluate ``cells`` with :func:`train_group`; per cell the same output as :func:`run_cell`."""
    return train_group(cells, on_step)[2]
