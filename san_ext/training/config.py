"""Training configuration: one frozen dataclass per concern, presets, and a JSON round trip.

``train.py`` builds a :class:`TrainingConfig` from its options (``san_ext.training.options``), the loop writes it to
``run_dir/config.json``, and checkpoints carry it so a run can be inspected or rebuilt. The generator and
discriminator parts reuse the networks' own configs (:class:`GeneratorConfig`, :class:`DiscriminatorConfig`).
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from typing import Any, Optional

from san_ext import losses
from san_ext.networks import DiscriminatorConfig, GeneratorConfig

__all__ = ['PRESETS', 'REDUCTIONS', 'DataConfig', 'LossConfig', 'OptimConfig', 'Recipe', 'RunConfig',
           'SuperresStageConfig', 'TrainingConfig', 'from_json', 'to_json']

REDUCTIONS = ('sum', 'mean')


@dataclass(frozen=True)
class DataConfig:
    """The training images (``--data``, ``--cond``, ``--mirror``, ``--workers``)."""

    path: str
    cond: bool = False                  # use the class labels of dataset.json
    mirror: bool = False                # append x-flipped copies
    max_size: Optional[int] = None      # keep a fixed random subset of this many images
    workers: int = 3                    # DataLoader worker processes per rank
    resolution: int = 0                 # image side, read from the data by the CLI
    channels: int = 3
    label_dim: int = 0


@dataclass(frozen=True)
class SuperresStageConfig:
    """A super-resolution stage trained on top of the generator in ``path_stem`` (``--superres``)."""

    path_stem: str                      # network snapshot (or best model) of the previous stage
    head_layers: int = 7
    up_factor: int = 2
    reinit_stem: bool = True            # re-copy the stem from path_stem at every start, as upstream


@dataclass(frozen=True)
class LossConfig:
    """Projected-GAN loss of StyleGAN-XL with a choice of GAN loss: ``--loss NAME[-san]`` sets ``name`` and ``san``
    (``--loss san`` = hinge + SAN, the default); :attr:`spec` spells them back."""

    name: str = 'hinge'                 # key in the san_ext.losses registry
    san: bool = True                    # the direction term on `dir`; the one SAN switch (D.san must agree)
    dir_weight: float = 1.0             # lambda (--san-lambda)
    reduction: str = 'sum'              # per (image, backbone) logit means: 'sum' (StyleGAN-XL) or 'mean'
    blur_init_sigma: float = 2.0        # Gaussian blur of D inputs, fading linearly to 0 ...
    blur_fade_kimg: float = 300.0       # ... over this many kimg
    pl_weight: float = 2.0              # path-length regularisation of the stem (0 in superres)
    pl_start_kimg: float = 1000.0       # off before this many kimg
    pl_interval: int = 4                # lazy regularisation: every this many steps
    pl_batch_shrink: int = 2
    pl_decay: float = 0.01
    cls_weight: float = 0.0             # classifier guidance (needs --cond); 0 builds no classifier
    cls_model: str = 'deit_small_distilled_patch16_224'
    cls_pretrained: bool = True
    r1_gamma: float = 0.0               # R1 on reals, gamma/2 |grad_x D|^2 (R3GAN Eq. 3); 0: off (StyleGAN-XL)
    r2_gamma: float = 0.0               # R2 on fakes (R3GAN Eq. 4); 0: off
    gamma_end: Optional[float] = None   # cosine decay of the larger gamma to this over the run (R3GAN); None: fixed
    reg_every: int = 1                  # lazy R1/R2: every this many D steps, scaled by it (StyleGAN2 Sec. 3.1)

    def __post_init__(self) -> None:
        if self.name not in losses.list_losses():
            raise ValueError(f'unknown loss name {self.name!r}; known: {", ".join(losses.list_losses())}'
                             f'{_spec_hint(self.name)}')
        if self.reduction not in REDUCTIONS:
            raise ValueError(f'loss reduction must be one of {REDUCTIONS}, got {self.reduction!r}')
        for name in ('dir_weight', 'blur_init_sigma', 'blur_fade_kimg', 'pl_weight', 'cls_weight', 'r1_gamma',
                     'r2_gamma'):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f'{name} must be a finite number >= 0, got {value}')
        if self.pl_interval < 1 or self.pl_batch_shrink < 1 or self.reg_every < 1:
            raise ValueError('pl_interval, pl_batch_shrink and reg_every must be >= 1')
        if self.gamma_end is not None:
            if not (math.isfinite(self.gamma_end) and self.gamma_end >= 0):
                raise ValueError(f'gamma_end must be a finite number >= 0, got {self.gamma_end}')
            if self.r1_gamma == 0 and self.r2_gamma == 0:
                raise ValueError('gamma_end decays the R1/R2 weights, but r1_gamma and r2_gamma are both 0')

    @property
    def spec(self) -> str:
        """The ``--loss`` spelling of ``name`` and ``san``: ``'hinge-san'``, ``'nonsaturating'``."""
        return losses.spec_name(self.name, self.san)


def _spec_hint(spec: str) -> str:
    """For a ``--loss`` spec written into ``LossConfig.name``: how to say it with ``name`` and ``san``."""
    try:
        name, san = losses.parse_spec(spec)
    except ValueError:
        return ''
    return f'; for the spec {spec!r} set name={name!r}, san={san}'


@dataclass(frozen=True)
class OptimConfig:
    """Adam for G and D with StyleGAN's lazy-regularisation scaling, and G's EMA (``--glr``, ``--dlr``)."""

    glr: float = 0.0025
    dlr: float = 0.002
    betas: tuple[float, float] = (0.0, 0.99)
    eps: float = 1e-8
    g_reg_interval: int = 4             # lr and betas scaled by interval / (interval + 1), as upstream
    d_reg_interval: int = 16
    ema_kimg: Optional[float] = None    # half-life of G_ema in kimg; None: batch * 10 / 32
    ema_rampup: Optional[float] = 0.05  # cap the half-life at this fraction of the images seen so far

    def __post_init__(self) -> None:
        object.__setattr__(self, 'betas', tuple(float(b) for b in self.betas))

    def adam_kwargs(self, which: str) -> dict:
        """lr, betas and eps of ``which`` ('G' or 'D') after lazy-regularisation scaling (G: x4/5, D: x16/17)."""
        lr, interval = (self.glr, self.g_reg_interval) if which == 'G' else (self.dlr, self.d_reg_interval)
        ratio = interval / (interval + 1) if interval else 1.0
        return dict(lr=lr * ratio, betas=tuple(b ** ratio for b in self.betas), eps=self.eps)

    def ema_nimg(self, batch: int, cur_nimg: int) -> float:
        """Half-life of G_ema in images at ``cur_nimg`` (with ramp-up)."""
        kimg = self.ema_kimg if self.ema_kimg is not None else batch * 10 / 32
        nimg = kimg * 1000
        if self.ema_rampup is not None:
            nimg = min(nimg, cur_nimg * self.ema_rampup)
        return nimg


@dataclass(frozen=True)
class RunConfig:
    """Schedule, logging and checkpoint options (``--batch``, ``--kimg``, ``--tick``, ``--snap``, ``--resume``)."""

    outdir: str = 'training-runs'
    desc: str = ''                      # run dir is outdir/{id:05d}-{desc}
    seed: int = 0
    gpus: int = 1                       # processes in all, nodes x per node (torchrun); CPU processes on CPU
    nodes: int = 1                      # machines (torchrun --nnodes); gpus // nodes processes on each
    batch: int = 32                     # global batch
    batch_gpu: int = 32                 # images per forward pass; batch / gpus is accumulated in such chunks
    kimg: float = 25000.0
    tick: float = 4.0                   # kimg between progress ticks
    snap: int = 50                      # ticks between snapshots, training states, sample grids and metrics
    metrics: tuple[str, ...] = ()
    device: str = 'auto'                # auto | cpu | cuda
    resume: Optional[str] = None        # 'latest' or a training-state path
    sync_bn: bool = False
    keep_states: int = 3                # newest training states kept (0 keeps all)
    grid_cols: int = 8

    def __post_init__(self) -> None:
        object.__setattr__(self, 'metrics', tuple(self.metrics))

    @property
    def batch_per_rank(self) -> int:
        return self.batch // self.gpus

    @property
    def chunks_per_rank(self) -> int:
        return self.batch_per_rank // self.batch_gpu


@dataclass(frozen=True)
class TrainingConfig:
    """Everything a run needs; written as ``run_dir/config.json``."""

    run: RunConfig
    data: DataConfig
    G: GeneratorConfig
    D: DiscriminatorConfig
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    superres: Optional[SuperresStageConfig] = None
    preset: str = 'stylegan-xl'

    def __post_init__(self) -> None:
        # loss.san is the SAN switch; D.san is derived from it (build_config) and must agree: SAN losses need the
        # (fun, dir) pair of SAN heads, plain losses plain logits.
        if self.loss.san != self.D.san:
            raise ValueError(f'loss.san={self.loss.san} but D.san={self.D.san}: the SAN switch must agree in both '
                             f'sections; set D=dataclasses.replace(D, san={self.loss.san}) or build the config with '
                             f'san_ext.training.options.build_config (--loss {self.loss.spec})')

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class Recipe:
    """A named training recipe (``--cfg``): the synthesis variant and the fixed settings of StyleGAN-XL."""

    synthesis: str = 'stylegan3-t'      # GeneratorConfig.synthesis
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    diffaug: str = 'color,translation,cutout'
    z_dim: int = 64
    w_dim: int = 512
    mapping_layers: int = 2


# StyleGAN-XL's recipe (train.py's fixed block); 'stylegan-xl' is its default synthesis, T.
PRESETS: dict[str, Recipe] = {
    'stylegan-xl': Recipe(),
    'stylegan3-t': Recipe(synthesis='stylegan3-t'),
    'stylegan3-r': Recipe(synthesis='stylegan3-r'),
}

_SECTIONS = {'run': RunConfig, 'data': DataConfig, 'G': GeneratorConfig, 'D': DiscriminatorConfig,
             'loss': LossConfig, 'optim': OptimConfig, 'superres': SuperresStageConfig}


def to_json(cfg: TrainingConfig) -> str:
    """Pretty JSON of the whole config (tuples become lists)."""
    return json.dumps(cfg.to_dict(), indent=2, sort_keys=False)


def _build(cls: type, values: Optional[dict[str, Any]]):
    if values is None:
        return None
    if cls is GeneratorConfig:
        values = GeneratorConfig.upgrade(values)  # configs written before its `cfg` became `synthesis`
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ValueError(f'{cls.__name__} has no field(s) {", ".join(unknown)}')
    return cls(**values)


def from_json(text: str | dict) -> TrainingConfig:
    """Inverse of :func:`to_json` (also takes the parsed dict); unknown fields fail naming them."""
    d = json.loads(text) if isinstance(text, str) else dict(text)
    kwargs = {key: _build(cls, d.get(key)) for key, cls in _SECTIONS.items()}
    return TrainingConfig(**kwargs, preset=d.get('preset', 'stylegan-xl'))
