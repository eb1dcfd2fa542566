"""SAN direction alignment logged once per tick: how close each SAN head's direction is to the optimal direction.

For a SAN run the loop calls :func:`tick_alignment` at the end of every tick on every rank: it takes the last real
chunk of the tick (at most :data:`MAX_IMAGES` images), generates fakes from ``G`` with the same labels, blurs both as
the loss does at ``cur_nimg`` and measures :func:`san_ext.diagnostics.san_alignment` of ``D`` with the run's
registry loss (its direction weights rho). D stays in training mode (BatchNorm on batch statistics, DiffAugment on)
as in the D phase, with its spectral norm frozen as in the phases; DiffAugment and the latents draw from the
caller's local ``torch.Generator``. ``san_alignment`` restores D's buffers and touches no ``.grad``, so the
measurement leaves training (and exact resume) unchanged. The per-rank cosines are averaged over ranks.

Fields: ``SAN/alignment/<backbone>/<mini-disc>`` per head and ``SAN/alignment/mean``.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
from torch import nn

from san_ext import dist
from san_ext.critic_score import blur
from san_ext.diagnostics import san_alignment

from .loss import ProjectedGANLoss, frozen_spectral_norm

__all__ = ['MAX_IMAGES', 'PREFIX', 'alignment_fields', 'head_name', 'measure', 'tick_alignment']

MAX_IMAGES = 32
PREFIX = 'SAN/alignment/'


def head_name(layer_name: str) -> str:
    """Short name of a SAN layer of a projected D: ``discriminators.<backbone>.mini_discs.<i>.<leaf>`` ->
    ``<backbone>/<i>``; any other module name keeps its path with ``/`` for ``.``."""
    parts = layer_name.split('.')
    if len(parts) == 5 and parts[0] == 'discriminators' and parts[2] == 'mini_discs':
        return f'{parts[1]}/{parts[3]}'
    return '/'.join(parts)


@torch.no_grad()
def _fakes(G: nn.Module, n: int, c: Optional[torch.Tensor], generator: torch.Generator,
           device: torch.device) -> torch.Tensor:
    """G(z, c) for z ~ N(0, I) drawn from ``generator`` (no EMA update): [n, C, R, R]."""
    z = torch.randn([n, G.z_dim], generator=generator).to(device)
    return G(z, c)


def measure(G: nn.Module, D: nn.Module, loss: ProjectedGANLoss, img: torch.Tensor, c: Optional[torch.Tensor],
            cur_nimg: int, generator: torch.Generator, max_images: int = MAX_IMAGES) -> dict[str, float]:
    """SAN layer name -> cosine with the optimal direction, on the first ``max_images`` reals ``img`` [B, C, R, R]
    in [-1, 1] (labels ``c`` [B, c_dim] or None) and as many fakes of ``G`` with the same labels, both blurred with
    ``loss.blur_sigma(cur_nimg)``; ``generator`` seeds the latents, then D's DiffAugment."""
    n = min(len(img), max_images)
    real = img[:n].detach()
    c = None if c is None else c[:n]
    fake = _fakes(G, n, c, generator, real.device)
    sigma = loss.blur_sigma(cur_nimg)
    with frozen_spectral_norm(D):
        return san_alignment(D, blur(real, sigma), blur(fake, sigma), c, loss=loss.gan, generator=generator)


def alignment_fields(values: dict[str, float], device: Optional[torch.device] = None) -> dict[str, float]:
    """Tick fields from :func:`measure`'s values: averaged over ranks (every rank must call this with the same
    layer names, which holds for one D), one ``SAN/alignment/<head>`` per layer and their ``SAN/alignment/mean``."""
    names = list(values)
    if not names:
        return {}
    local = torch.tensor([values[n] for n in names], dtype=torch.float64, device=device)
    mean = dist.all_reduce_mean(local).tolist()
    fields = {PREFIX + head_name(n): v for n, v in zip(names, mean)}
    finite = [v for v in mean if math.isfinite(v)]
    fields[PREFIX + 'mean'] = sum(finite) / len(finite) if finite else math.nan
    return fields


def tick_alignment(G: nn.Module, D: nn.Module, loss: ProjectedGANLoss, img: torch.Tensor, c: Optional[torch.Tensor],
                   cur_nimg: int, generator: torch.Generator, max_images: int = MAX_IMAGES) -> dict[str, float]:
    """:func:`measure` then :func:`alignment_fields`: the tick's ``SAN/alignment/...`` fields."""
    values = measure(G, D, loss, img, c, cur_nimg, generator, max_images)
    return alignment_fields(values, img.device)
