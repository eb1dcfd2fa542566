"""From ``train.py``'s option values to a validated :class:`TrainingConfig`.

Every check that needs the data or the stem checkpoint lives here, and each failure is an :class:`OptionError`
naming the flag and the fix; ``train.py`` turns it into a ``click.ClickException``. Option names and defaults are
StyleGAN-XL's (upstream ``train.py``). Defaults are written once: :class:`TrainOptions` takes them from
the config sections they end up in (CLI-only options keep theirs here), and ``train.py``'s click options read
them from :class:`TrainOptions`.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from san_ext import losses
from san_ext.checkpoint import CheckpointError
from san_ext.networks import DiscriminatorConfig, GeneratorConfig
from san_ext.networks.backbones import backbone_kind
from san_ext.networks.superres import UP_FACTORS

from .build import MetricsUnavailableError, metric_module, stem_spec
from .config import PRESETS, DataConfig, LossConfig, OptimConfig, RunConfig, SuperresStageConfig, TrainingConfig

__all__ = ['STEM_RESOLUTIONS', 'OptionError', 'TrainOptions', 'build_config']

STEM_RESOLUTIONS = (8, 16, 32, 64, 128, 256, 512, 1024)  # sides a stem generator can be built for


class OptionError(ValueError):
    """An invalid option value; ``flag`` names the option."""

    def __init__(self, flag: str, message: str) -> None:
        super().__init__(f'{flag}: {message}')
        self.flag = flag


@dataclass(frozen=True)
class TrainOptions:
    """The raw values of train.py's options; defaults from the config sections (StyleGAN-XL's train.py)."""

    outdir: str
    data: str
    preset: str = TrainingConfig.preset  # --cfg
    gpus: int = RunConfig.gpus          # processes in all (train.py: torchrun's world, or --gpus)
    nodes: int = RunConfig.nodes        # train.py: torchrun's nodes
    batch: int = RunConfig.batch
    batch_gpu: Optional[int] = None     # None: batch / gpus
    cond: bool = DataConfig.cond
    mirror: bool = DataConfig.mirror
    kimg: float = RunConfig.kimg
    glr: Optional[float] = None         # None: the recipe's (--cfg)
    dlr: float = OptimConfig.dlr
    cbase: int = GeneratorConfig.channel_base
    cmax: int = GeneratorConfig.channel_max
    syn_layers: int = GeneratorConfig.num_layers
    superres: bool = False
    path_stem: Optional[str] = None
    head_layers: int = SuperresStageConfig.head_layers
    up_factor: int = SuperresStageConfig.up_factor
    cls_weight: float = LossConfig.cls_weight
    metrics: tuple[str, ...] = ('fid50k_full',)
    snap: int = RunConfig.snap
    tick: float = RunConfig.tick
    seed: int = RunConfig.seed
    workers: int = DataConfig.workers
    fp32: bool = False
    desc: Optional[str] = None
    loss: str = losses.spec_name(LossConfig.name, LossConfig.san)  # a losses.parse_spec spec: NAME[-san] or san
    san_lambda: float = LossConfig.dir_weight
    loss_reduction: str = LossConfig.reduction
    r1_gamma: float = LossConfig.r1_gamma
    r2_gamma: float = LossConfig.r2_gamma
    gamma_end: Optional[float] = LossConfig.gamma_end
    reg_every: int = LossConfig.reg_every
    backbones: tuple[str, ...] = DiscriminatorConfig.backbones
    pretrained: bool = DiscriminatorConfig.pretrained
    resume: Optional[str] = None
    device: str = RunConfig.device
    sync_bn: bool = RunConfig.sync_bn
    interp_size: int = DiscriminatorConfig.interp_size
    keep_states: int = RunConfig.keep_states


def build_config(o: TrainOptions) -> TrainingConfig:
    """Validate ``o`` against the data (and the stem for ``--superres``) and build the run's config."""
    if o.preset not in PRESETS:
        raise OptionError('--cfg', f'unknown recipe {o.preset!r}; known: {", ".join(PRESETS)}')
    recipe = PRESETS[o.preset]
    try:
        loss_name, san = losses.parse_spec(o.loss)
    except ValueError as e:
        raise OptionError('--loss', f'{e} (NAME: plain heads, NAME-san: its SAN conversion)') from e
    batch_gpu = _check_batch(o)
    data = _data_config(o)
    if o.path_stem and not o.superres:
        raise OptionError('--path_stem', 'is only read by a super-resolution stage: add --superres to train one on '
                                         'it, or drop --path_stem to train a stem')
    _check_backbones(o.backbones)
    stem_cfg = _stem_config(o, data) if o.superres else None
    G = stem_cfg or _generator_config(o, data, recipe.synthesis)
    superres = SuperresStageConfig(str(o.path_stem), o.head_layers, o.up_factor) if o.superres else None
    if o.cls_weight > 0 and not o.cond:
        raise OptionError('--cls_weight', 'classifier guidance needs class labels: add --cond (or --cls_weight 0)')
    if o.sync_bn and o.device == 'cpu' and o.gpus > 1:
        raise OptionError('--sync-bn', 'SyncBatchNorm needs CUDA GPUs; drop --sync-bn on CPU')
    loss = _loss_config(o, recipe.loss, loss_name, san)
    optim = dataclasses.replace(recipe.optim, glr=o.glr if o.glr is not None else recipe.optim.glr, dlr=o.dlr)
    D = DiscriminatorConfig(backbones=tuple(o.backbones), c_dim=data.label_dim, img_resolution=data.resolution,
                            img_channels=data.channels, san=loss.san,  # derived: loss.san is the one switch
                            diffaug=recipe.diffaug, pretrained=o.pretrained, interp_size=o.interp_size)
    run = RunConfig(outdir=o.outdir, desc=_describe(o, data), seed=o.seed, gpus=o.gpus, nodes=o.nodes, batch=o.batch,
                    batch_gpu=batch_gpu, kimg=o.kimg, tick=o.tick, snap=o.snap, metrics=_metrics(o.metrics),
                    device=o.device, resume=o.resume, sync_bn=o.sync_bn, keep_states=o.keep_states)
    return TrainingConfig(run=run, data=data, G=G, D=D, loss=loss, optim=optim, superres=superres, preset=o.preset)


def _loss_config(o: TrainOptions, base: LossConfig, name: str, san: bool) -> LossConfig:
    if o.gamma_end is not None and o.r1_gamma == 0 and o.r2_gamma == 0:
        raise OptionError('--gamma-end', 'decays the R1/R2 weights, but --r1-gamma and --r2-gamma are 0; '
                                         'set one of them (R3GAN: both equal) or drop --gamma-end')
    if o.reg_every > 1 and o.r1_gamma == 0 and o.r2_gamma == 0:
        raise OptionError('--reg-every', 'spaces out R1/R2, but --r1-gamma and --r2-gamma are 0')
    return dataclasses.replace(base, name=name, san=san, dir_weight=o.san_lambda, reduction=o.loss_reduction,
                               cls_weight=o.cls_weight, cls_pretrained=o.pretrained,
                               pl_weight=0.0 if o.superres else base.pl_weight, r1_gamma=o.r1_gamma,
                               r2_gamma=o.r2_gamma, gamma_end=o.gamma_end, reg_every=o.reg_every)


def _check_batch(o: TrainOptions) -> int:
    batch_gpu = o.batch_gpu or o.batch // o.gpus
    if batch_gpu < 1 or o.batch % (o.gpus * batch_gpu):
        procs = f'{o.gpus}' if o.nodes == 1 else f'{o.gpus} ({o.nodes} nodes x {o.gpus // o.nodes})'
        raise OptionError('--batch', f'must be a multiple of --gpus x --batch-gpu (got {o.batch}, {procs} x '
                                     f'{batch_gpu}); e.g. --batch {o.gpus * max(batch_gpu, 1) * 2}')
    return batch_gpu


def _data_config(o: TrainOptions) -> DataConfig:
    from san_ext.data import DatasetError, open_dataset

    try:
        ds = open_dataset(o.data, use_labels=o.cond, xflip=o.mirror)
    except DatasetError as e:
        if o.cond and 'label' in str(e):
            raise OptionError('--cond', f'{e}') from e
        raise OptionError('--data', str(e)) from e
    except OSError as e:
        raise OptionError('--data', f'cannot open {o.data!r} ({e}); pass a dataset zip or folder') from e
    if o.cond and not ds.has_labels:
        raise OptionError('--cond', f'{o.data} has no class labels; train without --cond or add dataset.json labels')
    return DataConfig(path=str(o.data), cond=o.cond, mirror=o.mirror, workers=o.workers, resolution=ds.resolution,
                      channels=ds.num_channels, label_dim=ds.label_dim)


def _generator_config(o: TrainOptions, data: DataConfig, synthesis: str) -> GeneratorConfig:
    if data.resolution not in STEM_RESOLUTIONS:
        raise OptionError('--data', f'stem resolution {data.resolution} is not supported (supported: '
                                    f'{", ".join(map(str, STEM_RESOLUTIONS))}); StyleGAN-XL trains its stem at 16x16: '
                                    'rebuild the data with dataset_tool.py --resolution 16')
    try:
        return GeneratorConfig(img_resolution=data.resolution, c_dim=data.label_dim, img_channels=data.channels,
                               synthesis=synthesis, channel_base=o.cbase, channel_max=o.cmax, num_layers=o.syn_layers,
                               num_fp16_res=0 if o.fp32 else 4, conv_clamp=None if o.fp32 else 256)
    except ValueError as e:
        raise OptionError('--syn_layers', str(e)) from e


def _stem_config(o: TrainOptions, data: DataConfig) -> GeneratorConfig:
    """The stem's GeneratorConfig from its sidecar, checked against --up_factor and the data."""
    if not o.path_stem:
        raise OptionError('--superres', 'needs --path_stem, the network snapshot (or best_model.safetensors) of '
                                        'the previous stage, or a released StyleGAN-XL/StyleSAN-XL .pkl')
    if o.up_factor not in UP_FACTORS:
        raise OptionError('--up_factor', f'must be one of {UP_FACTORS}, got {o.up_factor}')
    try:
        spec = stem_spec(o.path_stem)
    except (CheckpointError, ValueError) as e:
        raise OptionError('--path_stem', str(e)) from e
    stem = GeneratorConfig.from_dict(spec['cfg'])
    stem_res = stem.img_resolution * math.prod(int(s['up_factor']) for s in spec.get('stages', []))
    if stem_res * o.up_factor != data.resolution:
        fits = data.resolution // stem_res if data.resolution % stem_res == 0 else 0
        hint = f' or --up_factor {fits}' if fits in UP_FACTORS else \
            f' (a stage must enlarge the stem\'s {stem_res}px by one of {UP_FACTORS})'
        raise OptionError('--up_factor', f'the data is {data.resolution}px but the stem makes {stem_res}px x '
                                         f'--up_factor {o.up_factor} = {stem_res * o.up_factor}px; use data at '
                                         f'{stem_res * o.up_factor}px{hint}')
    if stem.c_dim != data.label_dim:
        raise OptionError('--cond', f'the stem has {stem.c_dim} classes but the data {data.label_dim}; '
                                    'use the same --cond setting and labels as the stem')
    return stem


def _check_backbones(names: tuple[str, ...]) -> None:
    """Every --backbones name a timm model (checked before any run dir or network exists)."""
    for name in names:
        try:
            backbone_kind(name)
        except ValueError as e:
            raise OptionError('--backbones', f'{e}; e.g. --backbones {",".join(DiscriminatorConfig.backbones)}') from e


def _metrics(names: tuple[str, ...]) -> tuple[str, ...]:
    names = tuple(n for n in names if n)
    names = () if names in ((), ('none',)) else names
    try:
        metric_module(names)
    except MetricsUnavailableError as e:
        raise OptionError('--metrics', str(e)) from e
    return names


def _describe(o: TrainOptions, data: DataConfig) -> str:
    """``{cfg}-{dataset}-gpus{N}-batch{B}[-desc]`` as StyleGAN-XL names its runs; several nodes:
    ``nodes{K}-gpus{N per node}``."""
    name = Path(o.data).name
    name = name[:-4] if name.endswith('.zip') else name
    procs = f'gpus{o.gpus}' if o.nodes == 1 else f'nodes{o.nodes}-gpus{o.gpus // o.nodes}'
    desc = f'{o.preset}-{name}-{procs}-batch{o.batch}'
    return f'{desc}-{o.desc}' if o.desc else desc
