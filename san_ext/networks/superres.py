"""StyleGAN-XL progressive growing: a super-resolution stage on top of a trained (frozen) stem generator.

StyleGAN-XL (Sauer et al., SIGGRAPH 2022) Sec. 4, "Progressive growing": the stem's critically sampled end (its last
``num_critical`` layers and ToRGB) is dropped, the remaining layers and the mapping are kept frozen, and new layers
continue the Alias-Free GAN band-limit schedule from the last kept layer to the new resolution. Stages stack
(16 -> 32 -> 64 ...). Our own code (MIT), written from the paper and the notes on upstream's behaviour.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Optional, Union

import torch
from torch import nn

from .filters import band_schedule, layer_specs
from .generator import Generator, GeneratorConfig
from .synthesis import SynthesisLayer, SynthesisNetwork

__all__ = ['SuperresConfig', 'SuperresGenerator', 'build_generator', 'generator_spec']

UP_FACTORS = (2, 4, 8, 16)


@dataclass(frozen=True)
class SuperresConfig:
    """One super-resolution stage (train.py: ``--head_layers``, ``--up_factor``)."""

    head_layers: int = 7            # new layers, of which the last num_critical are critically sampled; + ToRGB
    up_factor: int = 2              # 2, 4, 8 or 16
    train_head_only: bool = True    # freeze mapping and kept stem layers
    train_input: bool = False       # upstream leaves synthesis.input trainable (a quirk); True reproduces that


class SuperresGenerator(nn.Module):
    """``stem`` (a Generator or another SuperresGenerator) grown to ``up_factor`` times its resolution.

    Kept: a copy of the stem's mapping (``num_ws`` grows), Fourier input and every layer before its critically
    sampled end. Added: ``head_layers + 1`` layers (the last is ToRGB) named ``L{i}_{size}_{ch}`` from index
    ``len(kept) + 1`` on, as upstream. Head schedule: the first head layer keeps the stem's last rate, width and
    cutoff; cutoffs and stopbands then grow geometrically to ``res / 2`` and ``res / 2 * 2**0.3``.
    """

    def __init__(self, stem: Union[Generator, SuperresGenerator], head_layers: int = 7, up_factor: int = 2,
                 train_head_only: bool = True, train_input: bool = False):
        super().__init__()
        stage = SuperresConfig(head_layers, up_factor, train_head_only, train_input)
        cfg: GeneratorConfig = stem.cfg
        if up_factor not in UP_FACTORS:
            raise ValueError(f'up_factor must be one of {UP_FACTORS}, got {up_factor!r}')
        if head_layers <= cfg.num_critical:
            raise ValueError(f'head_layers ({head_layers}) must exceed num_critical ({cfg.num_critical})')
        self.cfg, self.stages = cfg, (*stem.stages, stage)
        self.z_dim, self.c_dim, self.w_dim, self.img_channels = cfg.z_dim, cfg.c_dim, cfg.w_dim, cfg.img_channels
        self.img_resolution = stem.img_resolution * up_factor
        self.stem_layer_names = [n for n in stem.synthesis.layer_names
                                 if not getattr(stem.synthesis, n).is_critically_sampled]
        kept = [copy.deepcopy(getattr(stem.synthesis, n)) for n in self.stem_layer_names]
        head = self._build_head(kept[-1], stage)
        self.head_layer_names = [layer.spec.name for layer in head]
        self.synthesis = SynthesisNetwork(cfg.w_dim, self.img_resolution, cfg.img_channels,
                                          copy.deepcopy(stem.synthesis.input), kept + head, cfg.output_scale)
        self.num_ws = self.synthesis.num_ws
        self.mapping = copy.deepcopy(stem.mapping)
        self.mapping.num_ws = self.num_ws
        self.freeze_stem()

    def _build_head(self, last: SynthesisLayer, stage: SuperresConfig) -> list[SynthesisLayer]:
        cfg, k = self.cfg, self.cfg.width_multiplier
        if last.out_size != last.out_sampling_rate + 2 * cfg.margin_size:
            raise ValueError(f'the last kept stem layer {last.spec.name} has no margin (num_critical='
                             f'{cfg.num_critical}); a superres stage needs num_critical >= 1')
        sched = band_schedule(stage.head_layers, cfg.num_critical, first_cutoff=last.out_cutoff,
                              first_stopband=last.out_cutoff + last.out_half_width,
                              img_resolution=self.img_resolution, last_stopband_rel=cfg.last_stopband_rel,
                              margin_size=cfg.margin_size, channel_base=k * cfg.channel_base,
                              channel_max=k * cfg.channel_max, img_channels=cfg.img_channels,
                              first_sampling_rate=last.out_sampling_rate, first_channels=last.out_channels)
        specs = layer_specs(sched, cfg.num_critical, self.img_resolution, cfg.num_fp16_res,
                            first_index=len(self.stem_layer_names) + 1)
        return [SynthesisLayer(cfg.w_dim, spec, cfg.layer_options) for spec in specs]

    @classmethod
    def from_configs(cls, cfg: GeneratorConfig, stages: Sequence[SuperresConfig],
                     embed_init: Optional[torch.Tensor] = None) -> Union[Generator, SuperresGenerator]:
        """Rebuild the architecture of a stage chain (e.g. before loading a checkpoint's state dict)."""
        G: Union[Generator, SuperresGenerator] = Generator(cfg, embed_init=embed_init)
        for stage in stages:
            G = cls(G, **dataclasses.asdict(stage))
        return G

    def freeze_stem(self) -> None:
        """Apply ``train_head_only``: requires_grad False on mapping, kept stem layers (and input unless
        ``train_input``); head layers trainable. Call again after a blanket ``requires_grad_(True)``."""
        stage = self.stages[-1]
        self.requires_grad_(True)
        if not stage.train_head_only:
            return
        self.mapping.requires_grad_(False)
        self.synthesis.input.requires_grad_(stage.train_input)
        for name in self.stem_layer_names:
            getattr(self.synthesis, name).requires_grad_(False)

    @torch.no_grad()
    def reinit_stem(self, stem: Union[Generator, SuperresGenerator]) -> None:
        """Copy the stem's mapping, input and kept layers (parameters and buffers) into this generator again, as
        upstream does at every (re)start so that a retrained stem is picked up."""
        missing = [n for n in self.stem_layer_names if n not in stem.synthesis.layer_names]
        if missing:
            raise ValueError(f'stem lacks the layers {missing}; it is not the stem this generator was built on')
        self.mapping.load_state_dict(stem.mapping.state_dict())
        self.synthesis.input.load_state_dict(stem.synthesis.input.state_dict())
        for name in self.stem_layer_names:
            getattr(self.synthesis, name).load_state_dict(getattr(stem.synthesis, name).state_dict())

    def forward(self, z: torch.Tensor, c: Optional[torch.Tensor] = None, truncation_psi: float = 1.0,
                truncation_cutoff: Optional[int] = None, update_emas: bool = False) -> torch.Tensor:
        """As :meth:`Generator.forward`: [N, z_dim] -> [N, img_channels, R, R]; ``update_emas`` touches w_avg only."""
        ws = self.mapping(z, c, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff,
                          update_emas=update_emas)  # [N, num_ws, w_dim]
        return self.synthesis(ws)


def generator_spec(G: nn.Module) -> dict:
    """G's architecture as JSON: ``{'cfg': stem GeneratorConfig, 'stages': [SuperresConfig, ...]}`` (what
    checkpoint sidecars record and :func:`build_generator` takes)."""
    return {'cfg': dataclasses.asdict(G.cfg), 'stages': [dataclasses.asdict(s) for s in getattr(G, 'stages', ())]}


def build_generator(spec: Mapping) -> Union[Generator, SuperresGenerator]:
    """A randomly initialised generator of the architecture in ``spec`` (see :func:`generator_spec`)."""
    cfg = GeneratorConfig.from_dict(spec['cfg'])
    stages = [SuperresConfig(**s) for s in spec.get('stages', [])]
    return SuperresGenerator.from_configs(cfg, stages) if stages else Generator(cfg)
