"""StyleGAN-XL generator: class-conditional mapping + alias-free (StyleGAN3 T/R) synthesis.

StyleGAN-XL (Sauer et al., SIGGRAPH 2022) Sec. 4 builds on StyleGAN3 (Karras et al., NeurIPS 2021): a 64-d z, a class
embedding, a 2-layer mapping, and a synthesis network whose depth (``num_layers``, train.py's ``--syn_layers``) is
fixed per stage; higher resolutions are added by :class:`san_ext.networks.superres.SuperresGenerator`.
Our own code (MIT); no StyleGAN2/3 or StyleGAN-XL code.
"""

from __future__ import annotations

import dataclasses
import numbers
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Optional

import torch
from torch import nn

from .filters import band_schedule, layer_specs
from .mapping import MappingNetwork
from .synthesis import LayerOptions, SynthesisInput, SynthesisLayer, SynthesisNetwork

__all__ = ['SYNTHESES', 'Generator', 'GeneratorConfig', 'build_synthesis']

# Synthesis variant (StyleGAN-XL's --cfg) -> width multiplier applied to --cbase/--cmax: StyleGAN-XL doubles both
# for its StyleGAN3 generators, and R doubles them once more (as StyleGAN3 does for R).
SYNTHESES = {'stylegan3-t': 2, 'stylegan3-r': 4}


@dataclass(frozen=True)
class GeneratorConfig:
    """Generator options; names follow StyleGAN-XL's train.py (``channel_base`` = ``--cbase``, ``num_layers`` =
    ``--syn_layers``). Layer widths are ``rint(min(k * channel_base / 2 / f_c, k * channel_max))`` with
    ``k = SYNTHESES[synthesis]`` (2 for T, 4 for R), so the defaults give 1024-channel T layers as upstream.
    ``conv_kernel`` and ``use_radial_filters`` default from ``synthesis`` (T: 3 and False; R: 1 and True).
    """

    img_resolution: int
    z_dim: int = 64
    w_dim: int = 512
    c_dim: int = 0                      # number of classes; 0 = unconditional
    img_channels: int = 3
    mapping_layers: int = 2
    embed_dim: int = 320                # class embedding width (lite0's last stage in upstream)
    mapping_lr_multiplier: float = 0.01
    w_avg_beta: float = 0.998
    synthesis: str = 'stylegan3-t'      # StyleGAN3 variant, upstream's --cfg: 'stylegan3-t' or 'stylegan3-r'
    channel_base: int = 32768
    channel_max: int = 512
    num_layers: int = 14
    num_critical: int = 2
    first_cutoff: float = 2.0
    first_stopband: float = 2 ** 2.1
    last_stopband_rel: float = 2 ** 0.3
    margin_size: int = 10
    output_scale: float = 0.25          # StyleGAN3's scale of the ToRGB output
    num_fp16_res: int = 4               # FP16 where s * 2**num_fp16_res > img_resolution (CUDA only)
    conv_clamp: Optional[float] = 256   # None disables clamping
    conv_kernel: Optional[int] = None   # None: 3 for T, 1 for R
    use_radial_filters: Optional[bool] = None  # None: False for T, True for R
    filter_size: int = 6
    lrelu_upsampling: int = 2
    magnitude_ema_beta: float = 0.999   # upstream sets 0.5 ** (batch / 20k); the EMA is never updated in PG training

    def __post_init__(self) -> None:
        res = self.img_resolution
        if not isinstance(res, numbers.Integral) or isinstance(res, bool) or res < 8 or res & (res - 1):
            raise ValueError(f'img_resolution must be a power of 2 >= 8 (8, 16, 32, ..., 1024), got {res!r}')
        if self.synthesis not in SYNTHESES:
            raise ValueError(f'unknown synthesis {self.synthesis!r}; known: {", ".join(sorted(SYNTHESES))} '
                             '(stylegan2 is not implemented)')
        if self.num_layers <= self.num_critical:
            raise ValueError(f'num_layers ({self.num_layers}) must exceed num_critical ({self.num_critical})')
        if self.c_dim < 0 or self.z_dim < 1 or self.w_dim < 1 or self.mapping_layers < 1:
            raise ValueError(f'need c_dim >= 0 and z_dim, w_dim, mapping_layers >= 1, got c_dim={self.c_dim}, '
                             f'z_dim={self.z_dim}, w_dim={self.w_dim}, mapping_layers={self.mapping_layers}')
        if self.conv_clamp is not None and not self.conv_clamp > 0:
            raise ValueError(f'conv_clamp must be None or > 0, got {self.conv_clamp}')

    @property
    def width_multiplier(self) -> int:
        return SYNTHESES[self.synthesis]

    @property
    def layer_options(self) -> LayerOptions:
        is_r = self.synthesis == 'stylegan3-r'
        return LayerOptions(
            conv_kernel=self.conv_kernel if self.conv_kernel is not None else (1 if is_r else 3),
            filter_size=self.filter_size, lrelu_upsampling=self.lrelu_upsampling,
            use_radial_filters=self.use_radial_filters if self.use_radial_filters is not None else is_r,
            conv_clamp=self.conv_clamp, magnitude_ema_beta=self.magnitude_ema_beta)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @staticmethod
    def upgrade(values: Mapping[str, Any]) -> dict:
        """:meth:`to_dict` output in today's field names: sidecars and configs written before ``synthesis`` was
        renamed from ``cfg`` still load."""
        values = dict(values)
        if 'cfg' in values and 'synthesis' not in values:
            values['synthesis'] = values.pop('cfg')
        return values

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> GeneratorConfig:
        """Inverse of :meth:`to_dict` (older field names included, see :meth:`upgrade`)."""
        return cls(**cls.upgrade(values))


def build_synthesis(cfg: GeneratorConfig) -> SynthesisNetwork:
    """The stem synthesis network of ``cfg``: Fourier input + ``num_layers`` layers + ToRGB (Fig. 4b schedule)."""
    k = cfg.width_multiplier
    sched = band_schedule(cfg.num_layers, cfg.num_critical, cfg.first_cutoff, cfg.first_stopband, cfg.img_resolution,
                          cfg.last_stopband_rel, cfg.margin_size, k * cfg.channel_base, k * cfg.channel_max,
                          cfg.img_channels)
    specs = layer_specs(sched, cfg.num_critical, cfg.img_resolution, cfg.num_fp16_res)
    input_layer = SynthesisInput(cfg.w_dim, sched.channels[0], sched.sizes[0], sched.sampling_rates[0],
                                 sched.cutoffs[0])
    opts = cfg.layer_options
    layers = [SynthesisLayer(cfg.w_dim, spec, opts) for spec in specs]
    return SynthesisNetwork(cfg.w_dim, cfg.img_resolution, cfg.img_channels, input_layer, layers, cfg.output_scale)


class Generator(nn.Module):
    """z [N, z_dim], c (one-hot [N, c_dim] or ids [N]; None if unconditional) -> image [N, img_channels, R, R].

    ``embed_init`` [>= c_dim, embed_dim] optionally initialises the class embedding (upstream loads lite0's).
    """

    def __init__(self, cfg: GeneratorConfig, embed_init: Optional[torch.Tensor] = None):
        super().__init__()
        self.cfg = cfg
        self.stages: tuple = ()  # super-resolution stages on top (SuperresConfig); none for a stem
        self.z_dim, self.c_dim, self.w_dim = cfg.z_dim, cfg.c_dim, cfg.w_dim
        self.img_resolution, self.img_channels = cfg.img_resolution, cfg.img_channels
        self.synthesis = build_synthesis(cfg)
        self.num_ws = self.synthesis.num_ws
        self.mapping = MappingNetwork(cfg.z_dim, cfg.c_dim, cfg.w_dim, self.num_ws, embed_dim=cfg.embed_dim,
                                      num_layers=cfg.mapping_layers, lr_multiplier=cfg.mapping_lr_multiplier,
                                      w_avg_beta=cfg.w_avg_beta, embed_init=embed_init)

    def forward(self, z: torch.Tensor, c: Optional[torch.Tensor] = None, truncation_psi: float = 1.0,
                truncation_cutoff: Optional[int] = None, update_emas: bool = False) -> torch.Tensor:
        """``update_emas`` updates the mapping's ``w_avg`` only: as in StyleGAN-XL the synthesis magnitude EMAs stay
        frozen in projected-GAN training (call ``G.synthesis(ws, update_emas=True)`` to update them)."""
        ws = self.mapping(z, c, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff,
                          update_emas=update_emas)  # [N, num_ws, w_dim]
        return self.synthesis(ws)  # [N, img_channels, R, R]
