"""Multi-scale mini-discriminators of the projected discriminator, with SAN or plain last layers.

Each mini-discriminator (Projected GAN, Sauer et al. 2021) takes one projected feature map, halves it with
DownBlocks (spectral-norm conv 4x4 stride 2, BatchNorm, LeakyReLU 0.2) from a nominal resolution down to 8x8,
then maps the 512-channel result to a logit map with a 4x4 valid conv. The last layer decides the head type:

- unconditional SAN: ``SANConv2d(512, 1, 4)``, the unit-norm direction omega is the whole 512x4x4 kernel;
- conditional SAN: ``h = cls(main(x))`` (spectral-norm conv 512 -> 64) projected onto the class vector of a
  ``SANEmbedding``; fun = <h, s_c omega_c^-> / sqrt(64), dir = <h^-, s_c^- omega_c> / sqrt(64) (sony/san's head);
- plain (non-SAN) heads for comparison: a spectral-norm conv 512 -> 1, or the projection onto
  ``embed_proj(embed(c))`` (embedding c_dim x 320 then a 320 -> 64 equalized-lr linear with leaky ReLU).

This module imports only torch, the standard library and ``san_ext.layers`` (the drop-in rule: it works inside
someone else's checkout).
"""

from __future__ import annotations

import math
from typing import Optional, Union

import torch
import torch.nn.functional as F
from torch import nn

from san_ext.layers import SANConv2d, SANEmbedding

__all__ = ['CHANNELS', 'NOMINAL_RESOLUTIONS', 'DownBlock', 'EqualizedLinear', 'MiniDisc', 'MiniDiscCond',
           'MultiScaleD']

Logits = Union[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]

# Width of the DownBlock output at each resolution (Projected GAN's table); the head ends at 8x8 with 512 channels.
CHANNELS = {4: 512, 8: 512, 16: 256, 32: 128, 64: 64, 128: 64, 256: 32, 512: 16, 1024: 8}
# Resolutions the 4 mini-discs are built for (fixed upstream for a 256 input; the real maps may differ in size).
NOMINAL_RESOLUTIONS = (128, 64, 32, 16)
_END_RES = 8


def _sn_conv(c_in: int, c_out: int, kernel: int, stride: int, padding: int, bias: bool = True) -> nn.Module:
    """Spectral-norm Conv2d (parameters ``weight_orig`` and buffers ``weight_u``/``weight_v``, as upstream)."""
    return nn.utils.spectral_norm(nn.Conv2d(c_in, c_out, kernel, stride, padding, bias=bias))


class DownBlock(nn.Module):
    """Halve the resolution: spectral-norm conv 4x4 stride 2, BatchNorm2d, LeakyReLU(0.2)."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.main = nn.Sequential(_sn_conv(c_in, c_out, 4, 2, 1), nn.BatchNorm2d(c_out), nn.LeakyReLU(0.2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.main(x)  # [B, c_in, H, W] -> [B, c_out, H/2, W/2]


def _body(in_channels: int, start_res: int) -> nn.Sequential:
    """DownBlocks from ``start_res`` to 8x8; the first takes ``in_channels``, the rest follow CHANNELS."""
    if start_res not in CHANNELS or start_res <= _END_RES:
        raise ValueError(f'mini-disc start resolution must be a power of two in 16..1024, got {start_res}')
    blocks, res, c_in = [], start_res, in_channels
    while res > _END_RES:
        blocks.append(DownBlock(c_in, CHANNELS[res // 2]))
        c_in, res = CHANNELS[res // 2], res // 2
    return nn.Sequential(*blocks)


class EqualizedLinear(nn.Module):
    """Equalized-learning-rate linear layer with leaky ReLU (StyleGAN2's FC): lrelu(x W^T / sqrt(in) + b) * sqrt 2."""

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_features, in_features))
        self.bias = nn.Parameter(torch.zeros(out_features))
        self.weight_gain = 1 / math.sqrt(in_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.leaky_relu(F.linear(x, self.weight * self.weight_gain, self.bias), 0.2) * math.sqrt(2)


class MiniDisc(nn.Module):
    """Unconditional mini-discriminator: DownBlocks, then ``last_layer`` (SANConv2d or spectral-norm conv) 512 -> 1."""

    def __init__(self, in_channels: int, start_res: int, san: bool = True) -> None:
        super().__init__()
        self.san = san
        self.main = _body(in_channels, start_res)
        if san:
            self.last_layer = SANConv2d(CHANNELS[_END_RES], 1, 4, 1, 0, bias=False)
        else:
            self.last_layer = _sn_conv(CHANNELS[_END_RES], 1, 4, 1, 0, bias=False)

    def forward(self, x: torch.Tensor, c: Optional[torch.Tensor] = None, flg_train: bool = False) -> Logits:
        """x [B, C, H, W] -> logit map [B, 1, h, w], or ``(fun, dir)`` with ``flg_train`` (SAN only)."""
        h = self.main(x)  # [B, 512, ~8, ~8]
        if self.san:
            return self.last_layer(h, flg_train=flg_train)
        return self.last_layer(h)


class MiniDiscCond(nn.Module):
    """Class-conditional mini-discriminator: projection of ``h = cls(main(x))`` onto a class vector (no uncond term).

    SAN: the class vector is a ``SANEmbedding(c_dim, cmap_dim)`` row s_c omega_c. Plain: ``embed_proj(embed(c))``
    with ``embed`` an ``nn.Embedding(c_dim, embed_dim)`` (random N(0, 1) init; upstream loads EfficientNet-lite0's
    ImageNet class embedding instead) and ``embed_proj`` an equalized-lr linear embed_dim -> cmap_dim with lrelu.
    """

    def __init__(self, in_channels: int, start_res: int, c_dim: int, san: bool = True, cmap_dim: int = 64,
                 embed_dim: int = 320) -> None:
        super().__init__()
        if c_dim < 1:
            raise ValueError(f'a conditional mini-disc needs c_dim >= 1, got {c_dim}')
        self.san, self.c_dim, self.cmap_dim = san, c_dim, cmap_dim
        self.main = _body(in_channels, start_res)
        self.cls = _sn_conv(CHANNELS[_END_RES], cmap_dim, 4, 1, 0, bias=False)
        if san:
            self.embed = SANEmbedding(c_dim, cmap_dim)
        else:
            self.embed = nn.Embedding(c_dim, embed_dim)
            self.embed_proj = EqualizedLinear(embed_dim, cmap_dim)

    def _project(self, h: torch.Tensor, cmap: torch.Tensor) -> torch.Tensor:
        return (h * cmap[:, :, None, None]).sum(dim=1, keepdim=True) / math.sqrt(self.cmap_dim)  # [B, 1, h, w]

    def forward(self, x: torch.Tensor, c: torch.Tensor, flg_train: bool = False) -> Logits:
        """x [B, C, H, W], c class ids [B] -> logit map [B, 1, h, w], or ``(fun, dir)`` with ``flg_train``."""
        h = self.cls(self.main(x))  # [B, cmap_dim, h, w]
        if not self.san:
            return self._project(h, self.embed_proj(self.embed(c)))
        if flg_train:
            cmap_fun, cmap_dir = self.embed(c, flg_train=True)  # [B, cmap_dim] each
            return self._project(h, cmap_fun), self._project(h.detach(), cmap_dir)
        return self._project(h, self.embed(c))


class MultiScaleD(nn.Module):
    """The mini-discriminators of one backbone, one per projected feature map; logits flattened and concatenated."""

    def __init__(self, in_channels: tuple[int, ...], c_dim: int = 0, san: bool = True, num_discs: int = 4,
                 cmap_dim: int = 64, embed_dim: int = 320) -> None:
        super().__init__()
        if not 1 <= num_discs <= min(len(in_channels), len(NOMINAL_RESOLUTIONS)):
            raise ValueError(f'num_discs must be in 1..{min(len(in_channels), len(NOMINAL_RESOLUTIONS))}, '
                             f'got {num_discs}')
        self.san, self.c_dim = san, c_dim
        discs = {}
        for i in range(num_discs):
            if c_dim > 0:
                discs[str(i)] = MiniDiscCond(in_channels[i], NOMINAL_RESOLUTIONS[i], c_dim, san, cmap_dim, embed_dim)
            else:
                discs[str(i)] = MiniDisc(in_channels[i], NOMINAL_RESOLUTIONS[i], san)
        self.mini_discs = nn.ModuleDict(discs)

    def forward(self, feats: list[torch.Tensor], c: Optional[torch.Tensor] = None, flg_train: bool = False) -> Logits:
        """feats: projected maps, mini-disc i takes feats[i]; c: class ids [B] -> [B, N] or ``(fun, dir)``."""
        if flg_train and not self.san:
            raise ValueError('flg_train=True needs SAN heads (san=True); plain heads return one logit tensor')
        if self.c_dim > 0 and c is None:
            raise ValueError(f'conditional heads (c_dim={self.c_dim}) need class ids c')
        outs = [disc(feats[int(k)], c, flg_train) for k, disc in self.mini_discs.items()]
        if flg_train:
            fun = torch.cat([o[0].flatten(1) for o in outs], dim=1)
            dir_ = torch.cat([o[1].flatten(1) for o in outs], dim=1)
            return fun, dir_
        return torch.cat([o.flatten(1) for o in outs], dim=1)
