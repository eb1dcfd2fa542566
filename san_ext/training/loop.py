"""The training loop of the StyleGAN-XL recipe with SAN: ``run(cfg)`` reads top to bottom, setup -> iterate -> save.

One step: G phase (adversarial + classifier guidance), lazy path-length phase (stem only), D phase (fakes then
reals; SAN directions re-normalised after the step), G EMA. Each rank splits its share of the batch into
``batch_gpu`` chunks; chunk losses are averaged into the gradient, gradients are averaged over ranks.

Randomness (latents, fake labels, DiffAugment, path-length noise) comes from a generator seeded by
(seed, cur_nimg, global chunk index, phase), and the data order is a function of ``cur_nimg``: a resumed run continues
the same trajectory, and N ranks match one process with the same global batch and ``batch_gpu``. The global
generators are reseeded from (seed, rank, cur_nimg) at every step, so even the RNG states a training state saves are
the same after a kill and ``--resume`` as in a run never stopped.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import resource
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Optional

import numpy as np
import torch
from torch import nn

from san_ext import dist, images
from san_ext.checkpoint import (
    SNAPSHOT_PREFIX,
    STATE_PREFIX,
    checkpoint_name,
    kimg_tag,
    prune_checkpoints,
    restore_rng_state,
    save_snapshot,
    save_training_state,
)
from san_ext.layers import normalize_san_weights

from . import alignment, build
from .config import TrainingConfig, to_json
from .errors import NonFiniteLossError, TrainingError, peer_failure
from .loss import ProjectedGANLoss, build_classifier, frozen_spectral_norm, refresh_spectral_norm
from .resume import load_state
from .snapshots import write_files
from .stats import Stats, TickLog

__all__ = ['NonFiniteLossError', 'Progress', 'run']

log = logging.getLogger(__name__)

PHASE_G, PHASE_PL, PHASE_D, PHASE_ALIGN, PHASE_GLOBAL = 0, 1, 2, 3, 4  # stream ids in the per-chunk seeds
PEER_TIMEOUT = 10.0  # seconds the ranks that saw a collective fail wait for each other before naming the silent ones


@dataclass
class Progress:
    """Counters that a training state stores and a resume restores."""

    cur_nimg: int = 0
    batch_idx: int = 0
    cur_tick: int = 0
    tick_start_nimg: int = 0


@dataclass
class _Chunk:
    index: int                      # global chunk index: rank * chunks_per_rank + k
    img: torch.Tensor               # [batch_gpu, C, H, W] in [-1, 1]
    c: Optional[torch.Tensor]       # [batch_gpu, c_dim] one-hot or None


@dataclass
class _Trainer:
    cfg: TrainingConfig
    env: dist.DistEnv
    run_dir: Path
    dataset: object
    G: nn.Module
    D: nn.Module
    G_ema: nn.Module
    opt_G: torch.optim.Optimizer
    opt_D: torch.optim.Optimizer
    loss: ProjectedGANLoss
    stats: Stats
    progress: Progress = field(default_factory=Progress)
    last_checkpoint: Optional[Path] = None
    best: dict = field(default_factory=dict)
    metrics: object = None
    tick_log: Optional[TickLog] = None
    tick_start_time: float = 0.0
    tick_maintenance: float = 0.0
    start_time: float = 0.0
    last_chunk: Optional[_Chunk] = None  # this rank's last real chunk: the SAN alignment measures D on it


# =================================================================================================================
# Entry point.

def run(cfg: TrainingConfig) -> Path:
    """Train according to ``cfg`` (one process or one torchrun rank); returns the run directory. The
    ``torch.backends`` switches it sets are restored when it returns or raises."""
    env = dist.init(cfg.run.device)
    try:
        with _backend_flags():
            t = _setup(cfg, env)
            _iterate(t)
            return t.run_dir
    except Exception as e:
        if env.world_size > 1 and not isinstance(e, TrainingError) and dist.is_comm_failure(e):
            raise peer_failure(env, e, PEER_TIMEOUT) from e  # names the ranks that died instead of hanging
        raise
    finally:
        dist.shutdown()


@contextlib.contextmanager
def _backend_flags() -> Iterator[None]:
    """cudnn autotuning on and TF32 off for G and D (as upstream) while training; the caller's values after."""
    cudnn, matmul = torch.backends.cudnn, torch.backends.cuda.matmul
    saved = cudnn.benchmark, cudnn.allow_tf32, matmul.allow_tf32
    cudnn.benchmark, cudnn.allow_tf32, matmul.allow_tf32 = True, False, False
    try:
        yield
    finally:
        cudnn.benchmark, cudnn.allow_tf32, matmul.allow_tf32 = saved


# =================================================================================================================
# Setup.

def _setup(cfg: TrainingConfig, env: dist.DistEnv) -> _Trainer:
    """Check the world, pick the run dir (and the state to resume), build the trainer; a failure after the run
    dir was made removes it again when it is still empty."""
    if env.world_size != cfg.run.gpus:
        raise TrainingError(f'the config is for {cfg.run.gpus} processes but {env.world_size} are running; launch '
                            f'with torchrun --nnodes {cfg.run.nodes} --nproc_per_node {cfg.run.gpus // cfg.run.nodes} '
                            'or let train.py --gpus N relaunch itself')
    if cfg.run.sync_bn and env.world_size > 1 and env.device.type != 'cuda':
        raise ValueError('--sync-bn needs CUDA GPUs (SyncBatchNorm has no CPU/gloo path); drop --sync-bn')
    metrics = build.metric_module(cfg.run.metrics)
    run_dir, resume = _run_dir(cfg, env)
    try:
        return _build_trainer(cfg, env, run_dir, resume, metrics)
    except BaseException:
        if env.is_main:  # a run dir made for this run and still empty goes again; a resumed one keeps its files
            with contextlib.suppress(OSError):
                run_dir.rmdir()
        raise


def _build_trainer(cfg: TrainingConfig, env: dist.DistEnv, run_dir: Path, resume: Optional[Path],
                   metrics: Optional[ModuleType]) -> _Trainer:
    """Data, networks, optimizers and loss in ``run_dir``, resumed from ``resume``; writes config.json last."""
    dataset = build.open_training_data(cfg)
    G, D, G_ema = build.build_networks(cfg, env.device)
    opt_G, opt_D = build.build_optimizers(cfg, G, D)
    classifier = build_classifier(cfg.loss.cls_model, cfg.loss.cls_pretrained, env.device) \
        if cfg.loss.cls_weight > 0 else None
    loss = ProjectedGANLoss(cfg.loss, G, D, classifier, superres=cfg.superres is not None, device=env.device,
                            total_nimg=cfg.run.kimg * 1000)
    t = _Trainer(cfg, env, run_dir, dataset, G, D, G_ema, opt_G, opt_D, loss, Stats(env.device), metrics=metrics)
    if resume is not None:
        _load_state(t, resume)
    build.reinit_stem(cfg, G, G_ema)
    for module in (G, D, G_ema):
        dist.broadcast_module(module)
    if env.is_main:
        build.print_summaries(t.G, t.D, t.env.device)
        _write_config(t, resume)
    return t


def _run_dir(cfg: TrainingConfig, env: dist.DistEnv) -> tuple[Path, Optional[Path]]:
    """Rank 0 picks (and creates) the run directory and the resume file; the others receive them (or its error,
    so that no rank waits for a choice that failed)."""
    picked: object = None
    if env.is_main:
        try:
            picked = build.resolve_run_dir(cfg)
        except (OSError, ValueError) as e:
            picked = e
    picked = dist.broadcast_object(picked)
    if isinstance(picked, Exception):
        raise picked
    run_dir, resume = picked
    return Path(run_dir), resume


def _load_state(t: _Trainer, path: Path) -> None:
    """Restore G, D, G_ema, both optimizers (with this command's learning rates), RNG states, progress and the
    path-length mean from ``path``."""
    st = load_state(path, {'G': t.G, 'D': t.D, 'G_ema': t.G_ema}, {'G': t.opt_G, 'D': t.opt_D}, t.cfg.optim)
    restore_rng_state(st.rng)
    t.progress = Progress(**{k: int(st.progress[k]) for k in dataclasses.asdict(Progress())})
    t.loss.pl_mean.copy_(st.extra['pl_mean'])
    t.best = dict(st.extra.get('best', {}))
    t.last_checkpoint = st.path
    if int(st.progress.get('batch', t.cfg.run.batch)) != t.cfg.run.batch:
        log.warning('resuming with --batch %d; %s was trained with %s', t.cfg.run.batch, path, st.progress['batch'])


def _write_config(t: _Trainer, resume: Optional[Path]) -> None:
    (t.run_dir / 'config.json').write_text(to_json(t.cfg))
    cfg = t.cfg
    dist.print0(f'run dir: {t.run_dir}\n'
                       f'data: {cfg.data.path} ({len(t.dataset)} images, {cfg.data.resolution}px, '
                       f'{cfg.data.label_dim} classes)\n'
                       f'batch {cfg.run.batch} = {build.batch_split(cfg.run)}; '
                       f'loss {cfg.loss.name}{" + SAN" if cfg.loss.san else ""}; device {t.env.device}'
                       + (f'\nresuming from {resume} at {t.progress.cur_nimg / 1000:.3f} kimg' if resume else ''))


# =================================================================================================================
# Iterate.

def _iterate(t: _Trainer) -> None:
    cfg, p = t.cfg, t.progress
    total_nimg = int(round(cfg.run.kimg * 1000))
    loader = build.make_loader(t.dataset, cfg, t.env, p.cur_nimg)
    grid_z, grid_c, grid = images.grid_latents(t.G.z_dim, t.G.c_dim, cfg.run.seed, cols=cfg.run.grid_cols)
    t.tick_log = TickLog(t.run_dir, cfg.run.kimg, p.cur_nimg / 1000, enabled=t.env.is_main)
    if t.env.is_main and p.cur_nimg == 0:
        images.save_grid(images.generate(t.G_ema, grid_z, grid_c), t.run_dir / 'fakes_init.png', grid)
    t.start_time = t.tick_start_time = time.time()
    try:
        while p.cur_nimg < total_nimg:
            real_img, real_c = next(loader)
            _train_step(t, real_img, real_c)
            t.tick_log.advance(p.cur_nimg / 1000)
            done = p.cur_nimg >= total_nimg
            if done or p.cur_nimg >= p.tick_start_nimg + cfg.run.tick * 1000:
                _end_tick(t, done, grid_z, grid_c, grid)
    finally:
        t.tick_log.close()


def _train_step(t: _Trainer, real_img: torch.Tensor, real_c: torch.Tensor) -> None:
    """One optimisation step of G and D on this rank's share of the global batch."""
    _seed_globals(t)
    chunks = _split(t, real_img, real_c)
    t.last_chunk = chunks[-1]
    _g_main_phase(t, chunks)
    if t.loss.pl_due(t.progress.cur_nimg, t.progress.batch_idx):
        _g_pl_phase(t, chunks)
    _d_phase(t, chunks)
    _update_ema(t)
    t.progress.cur_nimg += t.cfg.run.batch
    t.progress.batch_idx += 1


def _seed_globals(t: _Trainer) -> None:
    """Python's, numpy's and torch's global generators (CUDA's too) from (seed, rank, cur_nimg). The loop draws from
    its own per-chunk streams, so no result changes; whatever else draws from the globals, and the RNG states that a
    training state saves, become functions of the step: the same after a kill and resume as without one."""
    dist.seed_globals(dist.seed_for(t.cfg.run.seed, t.env.rank, t.progress.cur_nimg, PHASE_GLOBAL))


def _split(t: _Trainer, real_img: torch.Tensor, real_c: torch.Tensor) -> list[_Chunk]:
    dev, run = t.env.device, t.cfg.run
    img = real_img.to(dev, non_blocking=True).to(torch.float32) / 127.5 - 1  # [B/gpus, C, H, W]
    c = real_c.to(dev, non_blocking=True) if real_c.shape[1] > 0 else None
    first = t.env.rank * run.chunks_per_rank
    return [_Chunk(first + k, img[k * run.batch_gpu:(k + 1) * run.batch_gpu],
                   None if c is None else c[k * run.batch_gpu:(k + 1) * run.batch_gpu])
            for k in range(run.chunks_per_rank)]


def _rng(t: _Trainer, chunk: _Chunk, phase: int) -> torch.Generator:
    """The random stream of one chunk in one phase of the step at ``cur_nimg`` (same on any number of ranks)."""
    seed = dist.seed_for(t.cfg.run.seed, t.progress.cur_nimg, chunk.index, phase)
    return torch.Generator().manual_seed(seed)


def _latents(t: _Trainer, n: int, gen: torch.Generator) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    """z ~ N(0, I) [n, z_dim] and labels of random dataset items (the label distribution), one-hot or None."""
    z = torch.randn([n, t.G.z_dim], generator=gen).to(t.env.device)
    if t.G.c_dim == 0:
        return z, None
    idx = torch.randint(len(t.dataset), [n], generator=gen).tolist()
    c = torch.from_numpy(np.stack([t.dataset.get_label(i) for i in idx]))
    return z, c.to(t.env.device)


def _fresh_reals(t: _Trainer, n: int, gen: torch.Generator) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    """n dataset images drawn uniformly (with replacement) by ``gen``, in [-1, 1], and their labels (or None): the
    fresh real batch a paired loss's G phase scores its fakes against (R3GAN draws one for every G phase)."""
    idx = torch.randint(len(t.dataset), [n], generator=gen).tolist()
    images, labels = zip(*(t.dataset[i] for i in idx))
    img = torch.from_numpy(np.stack(images)).to(t.env.device).to(torch.float32) / 127.5 - 1
    return img, torch.from_numpy(np.stack(labels)).to(t.env.device) if t.G.c_dim > 0 else None


def _backward(t: _Trainer, out, n_chunks: int) -> torch.Tensor:
    """Backward of one chunk's loss, weighted so that the chunks of all ranks average; report its stats."""
    (out.loss / n_chunks).backward()
    for name, value in out.stats.items():
        t.stats.report(name, value)
    return out.loss.detach() / n_chunks


def _step(t: _Trainer, phase: str, opt: torch.optim.Optimizer, params: list, loss: torch.Tensor) -> None:
    """Average gradients over ranks and step; a non-finite loss (on any rank) stops the run first."""
    value = float(dist.all_reduce_mean(loss.reshape(1)).item())
    if not math.isfinite(value):
        p = t.progress
        last = t.last_checkpoint or 'none (no training state written yet)'
        raise NonFiniteLossError(f'{phase} loss is {value} at step {p.batch_idx} (cur_nimg={p.cur_nimg}, '
                                 f'kimg {p.cur_nimg / 1000:.3f}); last good checkpoint: {last}. Resume from it with '
                                 f'--resume latest (same run dir) or --resume PATH, e.g. with a lower --glr/--dlr')
    dist.all_reduce_grads(params)
    opt.step()


def _zero_grad(params: list) -> None:
    for p in params:
        p.grad = None


def _g_main_phase(t: _Trainer, chunks: list[_Chunk]) -> None:
    params = build.trainable(t.G)
    t.D.requires_grad_(False)
    _zero_grad(params)
    refresh_spectral_norm(t.D)
    total = torch.zeros([], device=t.env.device)
    with frozen_spectral_norm(t.D):
        for chunk in chunks:
            gen = _rng(t, chunk, PHASE_G)
            z, c = _latents(t, len(chunk.img), gen)
            reals = _fresh_reals(t, len(chunk.img), gen) if t.loss.gan.paired else (None, None)
            total += _backward(t, t.loss.g_main(z, c, t.progress.cur_nimg, gen, *reals), len(chunks))
    _step(t, 'G', t.opt_G, params, total)


def _g_pl_phase(t: _Trainer, chunks: list[_Chunk]) -> None:
    params = build.trainable(t.G)
    _zero_grad(params)
    total, lengths = torch.zeros([], device=t.env.device), []
    for chunk in chunks:
        gen = _rng(t, chunk, PHASE_PL)
        z, c = _latents(t, max(1, len(chunk.img) // t.cfg.loss.pl_batch_shrink), gen)
        out, chunk_lengths = t.loss.g_pl(z, c, gen)
        total += _backward(t, out, len(chunks))
        lengths.append(chunk_lengths.mean())
    _step(t, 'G path-length', t.opt_G, params, total)
    t.loss.update_pl_mean(dist.all_reduce_mean(torch.stack(lengths).mean()))


def _d_phase(t: _Trainer, chunks: list[_Chunk]) -> None:
    """Per chunk: fakes then reals (one spectral-norm power iteration for the phase), then the step."""
    params = t.D.trainable_parameters()
    t.D.requires_grad_(True)
    _zero_grad(params)
    total = torch.zeros([], device=t.env.device)
    cur = t.progress.cur_nimg
    r1, r2 = t.loss.penalty_gammas(cur, t.progress.batch_idx)
    refresh_spectral_norm(t.D)
    with frozen_spectral_norm(t.D):
        for chunk in chunks:
            gen = _rng(t, chunk, PHASE_D)
            with _chunk_gradient(params):
                z, c = _latents(t, len(chunk.img), gen)
                if t.loss.gan.paired:  # RpGAN: fake i against real i in one loss
                    total += _backward(t, t.loss.d_pair(z, c, chunk.img, chunk.c, cur, gen, (r1, r2)), len(chunks))
                    continue
                total += _backward(t, t.loss.d_fake(z, c, cur, gen, r2_gamma=r2), len(chunks))
                total += _backward(t, t.loss.d_real(chunk.img, chunk.c, cur, gen, r1_gamma=r1), len(chunks))
    t.stats.report('Loss/D/loss', total)
    _step(t, 'D', t.opt_D, params, total)
    normalize_san_weights(t.D)
    t.D.requires_grad_(False)


@contextlib.contextmanager
def _chunk_gradient(params: list) -> Iterator[None]:
    """Collect one chunk's gradient on its own, then add it to the earlier chunks' sum: the same association as
    the all-reduce over ranks, so k chunks in one process give the bits of k ranks with one chunk each."""
    stash = [p.grad for p in params]
    for p in params:
        p.grad = None
    yield
    for p, before in zip(params, stash):
        if before is not None:
            p.grad = before if p.grad is None else before.add_(p.grad)


@torch.no_grad()
def _update_ema(t: _Trainer) -> None:
    """G_ema <- lerp(G, G_ema, beta), beta = 0.5 ** (batch / ema_nimg) with ramp-up; buffers are copied."""
    ema_nimg = t.cfg.optim.ema_nimg(t.cfg.run.batch, t.progress.cur_nimg)
    beta = 0.5 ** (t.cfg.run.batch / max(ema_nimg, 1e-8))
    for p_ema, p in zip(t.G_ema.parameters(), t.G.parameters()):
        p_ema.copy_(p.detach().lerp(p_ema, beta))
    for b_ema, b in zip(t.G_ema.buffers(), t.G.buffers()):
        b_ema.copy_(b)


# =================================================================================================================
# Ticks, snapshots, metrics.

def _end_tick(t: _Trainer, done: bool, grid_z, grid_c, grid) -> None:
    p, run = t.progress, t.cfg.run
    p.cur_tick += 1
    now = time.time()
    fields = t.stats.collect()
    fields.update(_timing(t, now))
    fields.update(_alignment(t))
    t.tick_log.tick(p.cur_nimg / 1000, fields)
    p.tick_start_nimg = p.cur_nimg
    maintenance_start = time.time()
    if done or p.cur_tick % run.snap == 0:
        _snapshot(t, grid_z, grid_c, grid)
    t.tick_start_time = time.time()
    t.tick_maintenance = t.tick_start_time - maintenance_start


def _timing(t: _Trainer, now: float) -> dict[str, float]:
    p, run = t.progress, t.cfg.run
    tick_kimg = max((p.cur_nimg - p.tick_start_nimg) / 1000, 1e-9)
    sec_per_kimg = (now - t.tick_start_time) / tick_kimg
    remaining_kimg = max(run.kimg - p.cur_nimg / 1000, 0.0)
    out = {'Progress/tick': p.cur_tick, 'Progress/kimg': p.cur_nimg / 1000,
           'Progress/blur_sigma': t.loss.blur_sigma(p.cur_nimg),
           'Timing/sec_per_tick': now - t.tick_start_time, 'Timing/sec_per_kimg': sec_per_kimg,
           'Timing/maintenance_sec': t.tick_maintenance, 'Timing/total_hours': (now - t.start_time) / 3600,
           'Timing/eta_hours': remaining_kimg * sec_per_kimg / 3600,
           'Resources/peak_cpu_mem_gb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20}
    if t.env.device.type == 'cuda':
        out['Resources/peak_gpu_mem_gb'] = torch.cuda.max_memory_allocated(t.env.device) / 2 ** 30
        torch.cuda.reset_peak_memory_stats(t.env.device)
    return out


def _alignment(t: _Trainer) -> dict[str, float]:
    """SAN runs: the SAN heads' direction alignment on this rank's last real chunk (reduced over ranks, all ranks
    call it) and its cost ``Timing/alignment_sec``; its own random stream, so training is unchanged."""
    if not t.cfg.loss.san or t.last_chunk is None:
        return {}
    start = time.time()
    chunk = t.last_chunk
    gen = _rng(t, chunk, PHASE_ALIGN)
    fields = alignment.tick_alignment(t.G, t.D, t.loss, chunk.img, chunk.c, t.progress.cur_nimg, gen)
    fields['Timing/alignment_sec'] = time.time() - start
    return fields


def _snapshot(t: _Trainer, grid_z, grid_c, grid) -> None:
    """Sample grid, network snapshot and training state (rank 0 writes), metrics, best model."""
    p, cfg = t.progress, t.cfg
    cfg_dict = cfg.to_dict()
    state = t.run_dir / f'{checkpoint_name(STATE_PREFIX, p.cur_nimg)}.safetensors'
    if t.env.is_main:
        fakes = t.run_dir / f'fakes{kimg_tag(p.cur_nimg)}.png'
        snap = t.run_dir / f'{checkpoint_name(SNAPSHOT_PREFIX, p.cur_nimg)}.safetensors'
        write_files([
            (fakes, lambda: images.save_grid(images.generate(t.G_ema, grid_z, grid_c), fakes, grid)),
            (snap, lambda: save_snapshot(t.run_dir, t.G_ema, cfg_dict, p.cur_nimg)),
            (state, lambda: save_training_state(
                t.run_dir, G=t.G, D=t.D, G_ema=t.G_ema, opt_G=t.opt_G, opt_D=t.opt_D, config=cfg_dict,
                progress={**dataclasses.asdict(p), 'batch': cfg.run.batch},
                extra={'pl_mean': t.loss.pl_mean, 'best': t.best}, critic=t.loss.score)),
        ], last=t.last_checkpoint)
        prune_checkpoints(t.run_dir, cfg.run.keep_states)
    t.last_checkpoint = state
    dist.barrier()
    if t.metrics is not None:
        _evaluate(t)


def _evaluate(t: _Trainer) -> None:
    """Run the requested metrics on G_ema (all ranks); rank 0 appends ``metric-{name}.jsonl`` and keeps
    ``best_model`` by the first score of the first metric (lower is better, higher for IS, precision/recall and
    density/coverage)."""
    cfg, p, m = t.cfg, t.progress, t.metrics
    opts = m.MetricOptions(seed=cfg.run.seed, device=str(t.env.device), num_workers=cfg.data.workers,
                           progress=False)
    results = m.compute_metrics(list(cfg.run.metrics), t.G_ema, cfg.data.path, opts)
    if not t.env.is_main or not results:
        return
    network = f'{checkpoint_name(SNAPSHOT_PREFIX, p.cur_nimg)}.safetensors'
    for result in results:
        m.write_result(result, t.run_dir, network=network)
    first = results[0]
    key, value = next(iter(first.results.items()))
    higher = m.get_metric(first.metric).kind in ('is', 'pr', 'dc')
    old = t.best.get('value')
    if old is None or (value > old if higher else value < old):
        t.best = {'metric': key, 'value': value, 'cur_nimg': p.cur_nimg}
        write_files([(t.run_dir / 'best_model.safetensors', lambda: save_snapshot(
            t.run_dir, t.G_ema, cfg.to_dict(), p.cur_nimg, name='best_model', extra=t.best))], t.last_checkpoint)
        t.tick_log.message(f'best_model: {key} = {value:.4g} at {p.cur_nimg / 1000:.3f} kimg')
