"""Setup pieces of the training loop: run directory, data stream, networks, optimizers, metrics.

The data order is :class:`san_ext.data.InfiniteBatchSampler`'s (a function of seed and ``cur_nimg``), so a resumed
run reads exactly the images it would have read.
"""

from __future__ import annotations

import copy
import logging
import re
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Optional

import torch
from torch import nn

import san_ext.metrics as metrics
from san_ext import dist
from san_ext.checkpoint import (
    STATE_FORMAT,
    STATE_PREFIX,
    CheckpointError,
    load_generator,
    read_generator_spec,
    read_sidecar,
    scan_checkpoints,
)
from san_ext.data import InfiniteBatchSampler, open_dataset
from san_ext.files import remove_stale_temps
from san_ext.layers import normalize_san_weights
from san_ext.metrics.features import extractor_weights
from san_ext.networks import Generator, ProjectedDiscriminator, SuperresGenerator, summary

from .config import RunConfig, TrainingConfig
from .errors import ResumeError

__all__ = ['MetricsUnavailableError', 'batch_split', 'build_networks', 'build_optimizers', 'load_stem', 'make_loader',
           'metric_module', 'open_training_data', 'print_summaries', 'reinit_stem', 'resolve_run_dir', 'stem_spec',
           'trainable']

log = logging.getLogger(__name__)

_RUN_DIR = re.compile(r'^(\d+)-(.*)$')


class MetricsUnavailableError(RuntimeError):
    """A requested metric is not registered, or its feature extractor's weights are missing."""


def metric_module(names: tuple[str, ...]) -> Optional[ModuleType]:
    """The ``san_ext.metrics`` package when metrics are requested (None for ``--metrics none``). Fails at startup,
    not after hours of training, when a metric or its feature-extractor weights are missing."""
    if not names:
        return None
    for name in names:
        try:
            spec = metrics.get_metric(name)
            weights = extractor_weights(spec.extractor)
            if weights is not None:
                metrics.find_weights(weights)
        except (ValueError, FileNotFoundError) as e:
            raise MetricsUnavailableError(f'{e}; or train with --metrics none') from e
    return metrics


# ---------------------------------------------------------------------------------------------------------------
# Run directory.

def _run_dirs(outdir: Path) -> list[tuple[int, str, Path]]:
    if not outdir.is_dir():
        return []
    found = []
    for d in outdir.iterdir():
        m = _RUN_DIR.match(d.name)
        if m and d.is_dir():
            found.append((int(m.group(1)), m.group(2), d))
    return sorted(found)


def resolve_run_dir(cfg: TrainingConfig, create: bool = True) -> tuple[Path, Optional[Path]]:
    """(run dir, training state to resume from or None), following ``--resume``:

    - ``latest``: the newest ``outdir/NNNNN-{desc}`` holding a training state is reused and resumed from its newest
      valid state (newer corrupt ones are skipped, with a warning naming them); with none, a fresh run starts (so
      the same command starts and continues a run); a run dir whose states are all invalid stops the run;
    - a training-state file or a run directory: resumed into a new run directory;
    - None: a new run directory ``outdir/{max id + 1:05d}-{desc}``.

    Raises :class:`ResumeError` before creating anything when ``--resume`` names nothing usable.
    """
    run = cfg.run
    outdir = Path(run.outdir)
    dirs = _run_dirs(outdir)
    resume: Optional[Path] = None
    if run.resume == 'latest':
        for _, desc, d in reversed(dirs):
            if desc == run.desc and (latest := _newest_state(d, 'latest')) is not None:
                for f in remove_stale_temps(d):
                    log.warning('removed %s, left by a writer that is gone', f)
                return d, latest
    elif run.resume:
        resume = Path(run.resume)
        if resume.is_dir():
            resume = _newest_state(resume, str(resume))
            if resume is None:
                raise ResumeError(f'--resume {run.resume}: no {STATE_PREFIX}*.safetensors in it; give a run directory '
                                  'with training states, a training-state file, or latest')
        else:
            _check_state_file(resume)
    next_id = max((i for i, _, _ in dirs), default=-1) + 1
    run_dir = outdir / f'{next_id:05d}-{run.desc}'
    if create:
        run_dir.mkdir(parents=True, exist_ok=False)
    return run_dir, resume


def _newest_state(run_dir: Path, flag: str) -> Optional[Path]:
    """The newest valid training state in ``run_dir`` (None if it has no state files at all); invalid newer ones
    are named in a warning; state files none of which is valid stop the run (ResumeError naming each and why)."""
    latest, bad = scan_checkpoints(run_dir)
    if latest is None and bad:
        raise ResumeError(f'--resume {flag}: {run_dir} has training states but none is valid: '
                          + '; '.join(reason for _, reason in bad)
                          + '. Restore or delete them (or resume from another run)')
    if bad:
        log.warning('--resume %s: skipped %s; resuming from %s', flag, '; '.join(reason for _, reason in bad), latest)
    return latest


def _check_state_file(path: Path) -> None:
    """Raise ResumeError unless ``path`` is a training state (its sidecar readable and of that format)."""
    if not path.is_file():
        raise ResumeError(f'--resume {path}: no such file or directory')
    try:
        fmt = read_sidecar(path).get('format')
    except CheckpointError as e:
        raise ResumeError(f'--resume {path}: {e}') from e
    if fmt != STATE_FORMAT:
        raise ResumeError(f'--resume {path} is a network snapshot, not a training state; give a '
                          f'{STATE_PREFIX}*.safetensors file, its run directory, or latest')


# ---------------------------------------------------------------------------------------------------------------
# Data.

def open_training_data(cfg: TrainingConfig):
    """The dataset of ``cfg.data`` through ``san_ext.data.open_dataset``."""
    d = cfg.data
    return open_dataset(d.path, use_labels=d.cond, xflip=d.mirror, max_size=d.max_size,
                        resolution=d.resolution or None)


def make_loader(dataset, cfg: TrainingConfig, env: dist.DistEnv, start_nimg: int) -> Iterator:
    """An endless iterator of (uint8 images [B/gpus, C, H, W], labels [B/gpus, label_dim]) for this rank."""
    sampler = InfiniteBatchSampler(len(dataset), cfg.run.batch, env.rank, env.world_size, cfg.run.seed, start_nimg)
    workers = cfg.data.workers
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=sampler, num_workers=workers,
                                         pin_memory=env.device.type == 'cuda',
                                         prefetch_factor=2 if workers > 0 else None)
    return iter(loader)


# ---------------------------------------------------------------------------------------------------------------
# Networks and optimizers.

def load_stem(path: str) -> nn.Module:
    """The generator a superres stage grows on, through the checkpoint reader's front door
    (:func:`san_ext.checkpoint.load_generator`): a san-ext network snapshot, or the ``G_ema`` of a released
    StyleGAN-XL / StyleSAN-XL ``.pkl`` (e.g. the official imagenet128.pkl)."""
    return load_generator(path)


def stem_spec(path: str) -> dict:
    """The stem's architecture ``{'cfg', 'stages'}`` without loading its weights
    (:func:`san_ext.checkpoint.read_generator_spec`); raises CheckpointError naming the file and the problem."""
    return read_generator_spec(path)


def build_networks(cfg: TrainingConfig, device: torch.device) -> tuple[nn.Module, nn.Module, nn.Module]:
    """G (a stem, or a superres stage on the ``path_stem`` generator), D and G_ema = deepcopy(G), seeded by
    ``cfg.run.seed`` so every rank builds the same weights."""
    torch.manual_seed(cfg.run.seed)
    if cfg.superres is not None:
        sr = cfg.superres
        stem = load_stem(sr.path_stem)
        G = SuperresGenerator(stem, head_layers=sr.head_layers, up_factor=sr.up_factor)
    else:
        G = Generator(cfg.G)
    D = ProjectedDiscriminator(cfg.D)
    normalize_san_weights(D)
    if cfg.run.sync_bn:
        D = dist.convert_sync_batchnorm(D)
    G = G.to(device).train()
    D = D.to(device).train()
    G_ema = copy.deepcopy(G).eval().requires_grad_(False)
    return G, D, G_ema


def reinit_stem(cfg: TrainingConfig, *generators: nn.Module) -> None:
    """Copy the stem of ``path_stem`` into superres generators again (upstream does so at every start)."""
    if cfg.superres is None or not cfg.superres.reinit_stem:
        return
    stem = load_stem(cfg.superres.path_stem)
    for G in generators:
        G.reinit_stem(stem.to(next(G.parameters()).device))


def print_summaries(G: nn.Module, D: nn.Module, device: torch.device) -> None:
    """Module tables of G and D on rank 0 (D in eval mode so that printing does not move its BatchNorm or spectral
    norm)."""
    z = torch.zeros([2, G.z_dim], device=device)
    c = torch.zeros([2, G.c_dim], device=device) if G.c_dim else None
    if c is not None:
        c[:, 0] = 1
    dist.print0(summary(G, z, c, max_depth=2))
    img = torch.zeros([2, G.img_channels, G.img_resolution, G.img_resolution], device=device)
    D.eval()
    try:
        dist.print0(summary(D, img, c, max_depth=2))
    finally:
        D.train()


def batch_split(run: RunConfig) -> str:
    """How the global batch is split, for the log: ``4 x 1 x 2 (processes x chunks x batch_gpu)``, with nodes x
    processes per node on several nodes."""
    if run.nodes == 1:
        return f'{run.gpus} x {run.chunks_per_rank} x {run.batch_gpu} (processes x chunks x batch_gpu)'
    return (f'{run.nodes} x {run.gpus // run.nodes} x {run.chunks_per_rank} x {run.batch_gpu} '
            '(nodes x processes per node x chunks x batch_gpu)')


def trainable(G: nn.Module) -> list[nn.Parameter]:
    """G's parameters that train (the head only in a superres stage)."""
    return [p for p in G.parameters() if p.requires_grad]


def build_optimizers(cfg: TrainingConfig, G: nn.Module, D: nn.Module
                     ) -> tuple[torch.optim.Optimizer, torch.optim.Optimizer]:
    """Adam for G's trainable parameters and D's heads, with lazy-regularisation scaled lr and betas."""
    opt_G = torch.optim.Adam(trainable(G), **cfg.optim.adam_kwargs('G'))
    opt_D = torch.optim.Adam(D.trainable_parameters(), **cfg.optim.adam_kwargs('D'))
    return opt_G, opt_D
