"""Tiny DCGAN-style generator and discriminators for the 8x8 digits study (``python -m san_ext.studies.digits``).

G: z [N, z_dim] (normal; class one-hot concatenated when conditional) -> linear 4w x 2 x 2, ReLU -> transposed
conv 4x4 stride 2 to 2w x 4 x 4, ReLU -> to w x 8 x 8, ReLU -> conv 3x3 to 1 channel, tanh. No batch norm: a
sample then depends on its own z only, which latent DOT needs (D(G(z)) per sample, no batch statistics).

D body: conv 3x3 w, LeakyReLU 0.2 -> conv 4x4 stride 2 2w (4x4) -> conv 4x4 stride 2 4w (2x2) -> flatten h (16w).
Lipschitz control, the same in every variant: spectral norm (Miyato et al. 2018) on every body layer, so the
Wasserstein critic is bounded and k_eff of DOT is meaningful. The last layer:

- GAN: spectrally normalised ``Linear(16w, 1)`` (a single row, so SN makes it a unit direction with scale 1);
- SAN: the same D with a plain last ``Linear`` converted by :func:`san_ext.sanify` into ``SANLinear`` (unit
  direction omega, learnable scale s, trained with the SAN objective).

Conditional D (:class:`ProjectionD`): the class projection alone (Miyato & Koyama 2018's inner-product term).
GAN: logit = <h, e_c> with e_c a row of a spectrally normalised ``nn.Embedding`` (rows of norm <= 1, the analogue of
the unconditional SN last layer). SAN: logit = <h, s_c omega_c> / sqrt(16w) with :class:`san_ext.SANEmbedding`
(SAN's conditional head; s_c starts at the norm of a N(0, 1) row, ~sqrt(16w), so the effective scale starts at ~1
as in the GAN). Dividing the GAN's SN logit by sqrt(16w) as well would shrink it 16x: hinge then never leaves its
linear part and equals WGAN (a first version did exactly that).
Class labels go in as one-hot float [N, C] (the convention of ``san_ext.dot``).
"""

from __future__ import annotations

import math
from typing import Optional

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

import san_ext

__all__ = ['DigitsG', 'DigitsD', 'ProjectionD', 'build_D', 'build_G']

RESOLUTION = 8


class DigitsG(nn.Module):
    """z [N, z_dim] (and one-hot c [N, c_dim] when ``c_dim``) -> images [N, channels, 8, 8] in [-1, 1] (``channels``
    3 for the stacked digits, :mod:`san_ext.studies.stacked`)."""

    def __init__(self, z_dim: int = 32, width: int = 32, c_dim: int = 0, channels: int = 1) -> None:
        super().__init__()
        self.z_dim, self.c_dim, self.width, self.channels = z_dim, c_dim, width, channels
        self.fc = nn.Linear(z_dim + c_dim, 4 * width * 2 * 2)
        self.up = nn.Sequential(nn.ReLU(), nn.ConvTranspose2d(4 * width, 2 * width, 4, 2, 1), nn.ReLU(),
                                nn.ConvTranspose2d(2 * width, width, 4, 2, 1), nn.ReLU(),
                                nn.Conv2d(width, channels, 3, padding=1), nn.Tanh())
        self.initialize_weights()

    def initialize_weights(self) -> None:
        """He-normal weights (fan-in, ReLU gain) and zero biases: without batch norm, PyTorch's default init shrinks
        the signal ~1.7x per layer, so every z maps to nearly the same image and training starts mode-collapsed."""
        for m in self.modules():
            if isinstance(m, nn.ConvTranspose2d):  # each output pixel sums in_ch * k^2 / stride^2 terms
                fan_in = m.in_channels * m.kernel_size[0] * m.kernel_size[1] // (m.stride[0] * m.stride[1])
                nn.init.normal_(m.weight, std=math.sqrt(2.0 / fan_in))
            elif isinstance(m, (nn.Linear, nn.Conv2d)):
                nn.init.kaiming_normal_(m.weight, nonlinearity='relu', mode='fan_in')
            else:
                continue
            nn.init.zeros_(m.bias)

    def forward(self, z: torch.Tensor, c: Optional[torch.Tensor] = None) -> torch.Tensor:
        if z.ndim != 2 or z.shape[1] != self.z_dim:
            raise ValueError(f'DigitsG expects z [N, {self.z_dim}], got {list(z.shape)}')
        if self.c_dim:
            if c is None or c.shape != (z.shape[0], self.c_dim):
                got = None if c is None else list(c.shape)
                raise ValueError(f'conditional DigitsG expects one-hot c [{z.shape[0]}, {self.c_dim}], got {got}')
            z = torch.cat([z, c.to(z.dtype)], dim=1)
        elif c is not None:
            raise ValueError('DigitsG is unconditional (c_dim=0) but got class labels')
        return self.up(self.fc(z).view(-1, 4 * self.width, 2, 2))  # [N, channels, 8, 8]


def _body(width: int, channels: int = 1) -> nn.Sequential:
    """D's feature body [N, channels, 8, 8] -> h [N, 16 * width], spectral norm on every layer."""
    act = lambda: nn.LeakyReLU(0.2)  # noqa: E731
    return nn.Sequential(spectral_norm(nn.Conv2d(channels, width, 3, padding=1)), act(),
                         spectral_norm(nn.Conv2d(width, 2 * width, 4, 2, 1)), act(),
                         spectral_norm(nn.Conv2d(2 * width, 4 * width, 4, 2, 1)), act(), nn.Flatten())


def _check_x(x: torch.Tensor, channels: int = 1) -> None:
    if x.ndim != 4 or x.shape[1:] != (channels, RESOLUTION, RESOLUTION):
        raise ValueError(f'digits D expects images [N, {channels}, 8, 8], got {list(x.shape)}')


class DigitsD(nn.Module):
    """Unconditional D: images [N, channels, 8, 8] -> logits [N]. ``last_sn=False`` leaves the last layer plain for
    :func:`san_ext.sanify`."""

    def __init__(self, width: int = 32, last_sn: bool = True, channels: int = 1) -> None:
        super().__init__()
        self.c_dim, self.channels = 0, channels
        self.body = _body(width, channels)
        last = nn.Linear(16 * width, 1)
        self.last = spectral_norm(last) if last_sn else last

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_x(x, self.channels)
        return self.last(self.body(x)).flatten()


class ProjectionD(nn.Module):
    """Class-conditional D: images [N, 1, 8, 8] and one-hot c [N, C] -> logits [N]; logit = <h(x), e_c> with a
    spectrally normalised embedding (GAN), or <h(x), s_c omega_c> / sqrt(d) with a SANEmbedding (``san=True``).

    With ``san``, ``forward(x, c, flg_train=True)`` returns (fun, dir) with fun = <h, s_c omega_c^-> / sqrt(d) and
    dir = <h^-, s_c^- omega_c> / sqrt(d) (sony/san's conditional head, as :mod:`san_ext.networks.heads`).
    """

    def __init__(self, width: int = 32, num_classes: int = 10, san: bool = False) -> None:
        super().__init__()
        self.num_classes, self.san, self.dim = num_classes, san, 16 * width
        self.c_dim = num_classes  # what san_ext.dot reads to tell a conditional critic
        self.body = _body(width)
        self.embed = san_ext.SANEmbedding(num_classes, self.dim) if san else spectral_norm(
            nn.Embedding(num_classes, self.dim))

    def forward(self, x: torch.Tensor, c: torch.Tensor, flg_train: bool = False):
        _check_x(x)
        if c.shape != (x.shape[0], self.num_classes):
            raise ValueError(f'ProjectionD expects one-hot c [{x.shape[0]}, {self.num_classes}], got {list(c.shape)}')
        h = self.body(x)  # [N, d]
        ids = c.argmax(dim=1)
        if not self.san:
            return (h * self.embed(ids)).sum(dim=1)
        norm = math.sqrt(self.dim)
        if flg_train:
            e_fun, e_dir = self.embed(ids, flg_train=True)
            return (h * e_fun).sum(dim=1) / norm, (h.detach() * e_dir).sum(dim=1) / norm
        return (h * self.embed(ids)).sum(dim=1) / norm


def build_G(z_dim: int, width: int, conditional: bool, channels: int = 1) -> DigitsG:
    """The generator of one study cell."""
    return DigitsG(z_dim, width, 10 if conditional else 0, channels)


def build_D(width: int, conditional: bool, san: bool, channels: int = 1) -> nn.Module:
    """The discriminator of one study cell: unconditional (SAN: sanified last layer) or projection (grey only)."""
    if conditional:
        if channels != 1:
            raise ValueError(f'the projection D reads grey digits; got channels={channels}')
        return ProjectionD(width, 10, san)
    if san:
        return san_ext.sanify(DigitsD(width, last_sn=False, channels=channels))
    return DigitsD(width, channels=channels)
