"""Generate images from a network snapshot or a released StyleGAN-XL/StyleSAN-XL .pkl: one PNG per (seed, class),
optionally a grid (rows = classes), or an ADM-format sample batch (``--npz``) for ADM's evaluator and
``calc_metrics.py --sample-npz``."""

from __future__ import annotations

import os
import re
from typing import Optional

import click
import torch
from click.core import ParameterSource

from san_ext import images
from san_ext.checkpoint import CheckpointError, load_generator
from san_ext.dot.cli import dot_options, load_dot
from san_ext.metrics import write_sample_batch


def parse_range(ctx, param, value: str) -> list[int]:
    """'0-7,10,12-13' -> [0, 1, ..., 7, 10, 12, 13]."""
    out = []
    for part in filter(None, (p.strip() for p in value.split(','))):
        m = re.fullmatch(r'(\d+)(?:-(\d+))?', part)
        if not m:
            raise click.BadParameter(f'{part!r} is not N or N-M')
        lo, hi = int(m.group(1)), int(m.group(2) or m.group(1))
        if hi < lo:
            raise click.BadParameter(f'{part!r}: the range is empty')
        out.extend(range(lo, hi + 1))
    if not out:
        raise click.BadParameter('give at least one value')
    return out


def _classes(G, class_idx, classes: str) -> list:
    """Class ids to generate, or [None] for an unconditional generator."""
    if G.c_dim == 0:
        if class_idx is not None or classes:
            raise click.ClickException('--class/--classes: this generator is unconditional (c_dim=0)')
        return [None]
    if class_idx is not None and classes:
        raise click.ClickException('give --class or --classes, not both')
    if classes:
        ids = list(range(G.c_dim)) if classes == 'all' else parse_range(None, None, classes)
    elif class_idx is not None:
        ids = [class_idx]
    else:
        raise click.ClickException(f'--class: this generator is conditional ({G.c_dim} classes); pass --class N, '
                                   '--classes all or --classes 0-9')
    bad = [i for i in ids if not 0 <= i < G.c_dim]
    if bad:
        raise click.ClickException(f'--class/--classes: {bad[0]} is not in 0..{G.c_dim - 1}')
    return ids


def _check_npz_mode(ctx: click.Context, npz: Optional[str], outdir: Optional[str]) -> None:
    """--npz writes one sample batch: the PNG options do not apply (and --outdir is needed without it)."""
    if npz is None:
        if outdir is None:
            raise click.ClickException('--outdir is required (or --npz FILE for an ADM sample batch)')
        return
    flags = {'seeds': '--seeds', 'class_idx': '--class', 'classes': '--classes', 'grid': '--grid', 'outdir': '--outdir'}
    png_only = [flag for name, flag in flags.items() if ctx.get_parameter_source(name) == ParameterSource.COMMANDLINE]
    if png_only:
        raise click.ClickException(f'{", ".join(png_only)}: not with --npz (it draws --n samples from --seed, '
                                   'classes uniform at random)')


def _write_npz(G, dot, npz: str, n: int, seed: int, batch: int, truncation_psi: float, dev: torch.device) -> None:
    """``n`` samples (calc_metrics.py's latents and classes for ``seed``) as an ADM batch: arr_0, arr_1."""
    sampler = G if dot is None else dot  # DOT applies truncation itself
    path = write_sample_batch(npz, sampler, n, seed=seed, batch_size=batch, device=dev,
                              truncation_psi=truncation_psi if dot is None else 1.0)
    labels = ', arr_1 class ids' if G.c_dim else ''
    click.echo(f'wrote {n} samples to {path} (arr_0 uint8 [{n}, {G.img_resolution}, {G.img_resolution}, 3]{labels})')


@click.command(context_settings={'max_content_width': 120})
@click.option('--network', 'network_path', metavar='FILE', required=True,
              help='network-snapshot-*.safetensors, best_model.safetensors, a training state or a released '
              'StyleGAN-XL/StyleSAN-XL .pkl (read without running code from it)')
@click.option('--seeds', callback=parse_range, default='0-7', show_default=True, help='Seeds, e.g. 0-7,10')
@click.option('--class', 'class_idx', type=click.IntRange(min=0), help='Class id (conditional networks)')
@click.option('--classes', metavar='all|LIST', default='', help='Several classes, one grid row each: all or 0-9')
@click.option('--trunc', 'truncation_psi', type=float, default=1.0, show_default=True,
              help='Truncation psi (towards each class\'s mean w)')
@click.option('--outdir', metavar='DIR', help='Where to save the images (PNG mode)')
@click.option('--grid', is_flag=True, help='Also save grid.png: one row per class, one column per seed')
# ADM sample batch.
@click.option('--npz', metavar='FILE', help='Write an ADM sample batch instead of PNGs: arr_0 uint8 [N, H, W, 3], '
              'arr_1 class ids (conditional networks); classes uniform at random, as calc_metrics.py samples')
@click.option('--n', 'num', type=click.IntRange(min=1), default=50_000, show_default=True,
              help='Samples in the --npz batch')
@click.option('--seed', type=int, default=0, show_default=True,
              help='Seed of the --npz batch (calc_metrics.py --seed draws the same latents and classes)')
@click.option('--batch', type=click.IntRange(min=1), default=64, show_default=True,
              help='Images per forward pass (--npz)')
@click.option('--device', type=click.Choice(['auto', 'cpu', 'cuda']), default='auto', show_default=True)
@dot_options
@click.pass_context
def main(ctx: click.Context, network_path: str, seeds: list[int], class_idx, classes: str, truncation_psi: float,
         outdir: Optional[str], grid: bool, npz: Optional[str], num: int, seed: int, batch: int, device: str,
         dot_steps: int, dot_lr: float, dot_opt: str, dot_critic, dot_k, dot_pairs: int) -> None:
    """Generate images with a trained generator (class-wise truncation as StyleGAN-XL), optionally improved by
    latent discriminator optimal transport (--dot-steps, Tanaka et al. 2019) with the run's D as the critic.

    \b
    Examples:
      python gen_images.py --network runs/00000-.../network-snapshot-000100.safetensors --seeds 0-7 --class 3 \\
          --trunc 0.7 --outdir out
      python gen_images.py --network runs/00000-.../best_model.safetensors --seeds 0-9 --classes all --grid \\
          --outdir out
      python gen_images.py --network imagenet128.pkl --seeds 0-3 --class 207 --trunc 0.7 --outdir out-pkl
      python gen_images.py --network runs/00000-.../network-snapshot-000100.safetensors --seeds 0-7 --class 3 \\
          --dot-steps 10 --dot-lr 0.01 --outdir out-dot   # D from training-state-000100.safetensors
      python gen_images.py --network imagenet256.pkl --npz samples.npz --n 50000   # ADM sample batch, psi = 1
      python calc_metrics.py --sample-npz samples.npz --ref-npz VIRTUAL_imagenet256_labeled.npz  # ... scored
    """
    _check_npz_mode(ctx, npz, outdir)
    dev = torch.device('cuda' if device == 'cuda' or (device == 'auto' and torch.cuda.is_available()) else 'cpu')
    try:
        G = load_generator(network_path, device=dev)
    except (CheckpointError, FileNotFoundError) as e:
        raise click.ClickException(f'--network: {e}') from e
    if npz is not None:  # all classes, as calc_metrics.py --dot-steps estimates k_eff
        dot = None if dot_steps == 0 else load_dot(
            network_path, G, dot_critic, dev, class_ids=list(range(G.c_dim)) or [None], steps=dot_steps, lr=dot_lr,
            opt=dot_opt, k_eff=dot_k, pairs=dot_pairs, seed=seed, batch=batch, truncation_psi=truncation_psi)
        _write_npz(G, dot, npz, num, seed, batch, truncation_psi, dev)
        return
    ids = _classes(G, class_idx, classes)
    os.makedirs(outdir, exist_ok=True)
    z = torch.stack([images.z_from_seed(s, G.z_dim) for s in seeds])  # [S, z_dim]
    dot = None if dot_steps == 0 else load_dot(network_path, G, dot_critic, dev, class_ids=ids, steps=dot_steps,
                                               lr=dot_lr, opt=dot_opt, k_eff=dot_k, pairs=dot_pairs,
                                               truncation_psi=truncation_psi)
    rows = []
    for cid in ids:
        c = None if cid is None else torch.nn.functional.one_hot(torch.full([len(seeds)], cid), G.c_dim).float()
        # latent DOT moves z before the mapping network; truncation then applies as without DOT
        zc = z if dot is None else dot.transport(z.to(dev), None if c is None else c.to(dev)).cpu()
        imgs = images.generate(G, zc, c, truncation_psi=truncation_psi)  # uint8 [S, C, H, W]
        for seed, img in zip(seeds, imgs):
            name = f'seed{seed:04d}' + ('' if cid is None else f'-class{cid:04d}')
            images.save_image(img.transpose(1, 2, 0), os.path.join(outdir, f'{name}.png'))
        rows.append(imgs)
    if grid:
        images.save_grid(torch.cat([torch.from_numpy(r) for r in rows]).numpy(), os.path.join(outdir, 'grid.png'),
                         (len(seeds), len(rows)))
    click.echo(f'wrote {len(seeds) * len(rows)} images{" and grid.png" if grid else ""} to {outdir}')


if __name__ == '__main__':
    main()
