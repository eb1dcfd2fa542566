"""Evaluation of the 2-D DOT study: move a trained G's samples with DOT or naive transport, then measure them.

Methods, each run from the same latents z and samples y = G(z) (Tanaka 2019, Sec. 3; ``san_ext.dot``):

- ``bare``: y itself.
- ``target-OPT``: target-space DOT, x from y minimising ||x - y + delta|| - D(x)/k_x, with k_x from
  ``estimate_k_eff`` on 100 pairs of the samples y (the paper's eff_K).
- ``latent-OPT``: G(z*) with z* from latent-space DOT on ||z - z_y + delta|| - D(G(z))/k_z, k_z from
  ``estimate_latent_k_eff`` on 100 pairs of fresh latents (the paper's eff_k); normal prior, so the gradient is
  projected onto the tangent of the sphere through z.
- ``naive-OPT``: ascent on D(x)/k_x alone in target space, the paper's baseline without the distance term.

OPT is the optimizer of the transport (``sgd`` or ``adam``); every method uses the same steps and lr. Metrics per
method (``toy_metrics.sample_metrics``): exact EMD (W1, POT) against as many held-out real points, high-quality
share and modes covered; ``data`` is the EMD between two independent real sets of that size, the floor that
finite samples leave.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from san_ext import dot

from .toy_data import get_dataset
from .toy_metrics import emd, sample_metrics

__all__ = ['TransportConfig', 'KINDS', 'OPTS', 'method_names', 'transport_samples', 'evaluate_samples',
           'evaluate_member']

KINDS = ('target', 'latent', 'naive')
OPTS = ('sgd', 'adam')
_Z_SEED, _PAIR_SEED = 1_000_003, 2_000_003  # eval latents: the toy benchmark's offset, so the same z per seed


@dataclass(frozen=True)
class TransportConfig:
    """Transport and evaluation settings shared by every method and cell (reasons in ``dot.py``)."""

    steps: int = 100               # optimizer steps of every transport
    lr: float = 0.01
    opts: tuple[str, ...] = OPTS   # each transport runs once per optimizer
    pairs: int = 100               # random pairs for each k_eff estimate (the paper's count)
    n_emd: int = 1500              # moved samples and held-out real points per EMD


def method_names(tcfg: TransportConfig) -> list[str]:
    """Column names: ``bare`` then ``KIND-OPT`` for every transport kind and optimizer."""
    return ['bare'] + [f'{kind}-{opt}' for kind in KINDS for opt in tcfg.opts]


def transport_samples(G: Callable, D: Callable, z: torch.Tensor, tcfg: TransportConfig,
                      generator: torch.Generator) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
    """Samples of every method from latents ``z`` ``[N, z_dim]`` (each ``[N, 2]``) and the two k_eff estimates.

    ``generator`` draws the k_eff pairs and latents, so the result is a function of the inputs. A G whose samples
    are not finite, or a D without slope between them (k_eff not > 0), leaves DOT undefined: those methods give NaN.
    """
    with torch.no_grad():
        y = G(z)  # [N, 2]
    out = {'bare': y}
    k_x = k_z = math.nan
    if torch.isfinite(y).all():
        k_x = float(dot.estimate_k_eff(D, y, pairs=tcfg.pairs, generator=generator))
        k_z = float(dot.estimate_latent_k_eff(G, D, z.shape[1:], prior='normal', pairs=tcfg.pairs,
                                              generator=generator))
    nan = torch.full_like(y, math.nan)
    ok_x, ok_z = (math.isfinite(k) and k > 0 for k in (k_x, k_z))
    for opt in tcfg.opts:
        kw = dict(steps=tcfg.steps, lr=tcfg.lr, opt=opt)
        out[f'target-{opt}'] = dot.target_space_dot(D, y, k_x, **kw) if ok_x else nan
        out[f'latent-{opt}'] = _generate(G, dot.latent_space_dot(G, D, z, k_eff=k_z, prior='normal', **kw)) \
            if ok_z else nan
        out[f'naive-{opt}'] = dot.naive_transport(D, y, k_eff=k_x, **kw) if ok_x else nan
    return out, dict(k_eff_target=k_x, k_eff_latent=k_z)


def _generate(G: Callable, z: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return G(z)


def evaluate_samples(dataset: str, samples: dict[str, torch.Tensor], x_real: np.ndarray) -> dict[str, dict]:
    """``toy_metrics.sample_metrics`` (EMD, high quality, modes covered) of every method against ``x_real``."""
    data = get_dataset(dataset)
    return {name: sample_metrics(data, x.detach().cpu().numpy().astype(np.float64), x_real)
            for name, x in samples.items()}


def evaluate_member(G: Callable, D: Callable, dataset: str, seed: int, z_dim: int,
                    tcfg: TransportConfig) -> dict:
    """All methods and metrics for one trained (G, D) of data set ``dataset`` and seed ``seed``.

    Returns ``metrics`` (method -> metrics), the k_eff estimates, the real-vs-real EMD ``data_emd``, the eval time
    and ``samples`` (method -> ``[n_emd, 2]`` numpy, for the figure; not meant for JSON).
    """
    start = time.perf_counter()
    data = get_dataset(dataset)
    z = torch.randn(tcfg.n_emd, z_dim, generator=torch.Generator().manual_seed(_Z_SEED + seed))
    samples, k_eff = transport_samples(G, D, z, tcfg, torch.Generator().manual_seed(_PAIR_SEED + seed))
    x_real = data.sample(np.random.default_rng([seed, 1]), tcfg.n_emd)  # held out: training uses [seed, 0]
    floor = emd(data.sample(np.random.default_rng([seed, 2]), tcfg.n_emd), x_real)
    return dict(metrics=evaluate_samples(dataset, samples, x_real), **k_eff, data_emd=floor,
                eval_s=time.perf_counter() - start,
                samples={k: v.detach().cpu().numpy() for k, v in samples.items()})
