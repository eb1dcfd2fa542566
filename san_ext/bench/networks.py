"""``python -m san_ext.bench.networks``: images/s of G and D, forward + backward, at the ImageNet recipe's stages.

Two stages of the StyleGAN-XL ImageNet recipe (the paper-fit widths: ``--cbase 32768 --cmax 512 --syn_layers 11``,
4-layer heads, class-conditional with 1000 classes, the 166M-parameter generator at 256²):

- ``stem16``: the 16² stem, batch 64; G trains whole.
- ``sr256``: the 128→256 super-resolution stage, batch 32; only its head trains (the stem is frozen).

D is the projected discriminator with SAN heads on the two default timm backbones (random weights: speed does not
depend on them). Each row is timed with the custom CUDA ops and, in a child process with ``SAN_EXT_CUDA=0``, with
the PyTorch reference paths; ``--amp`` runs D under bf16/fp16 autocast. Peak GPU memory is reported per row.
``--preset tiny`` shrinks everything for a CPU smoke run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import click
import torch

from san_ext.networks.discriminator import DiscriminatorConfig, ProjectedDiscriminator
from san_ext.networks.generator import Generator, GeneratorConfig
from san_ext.networks.superres import SuperresConfig, SuperresGenerator

from .common import median_seconds, write_json

AMP_DTYPES = {'none': None, 'bf16': torch.bfloat16, 'fp16': torch.float16}


@dataclass(frozen=True)
class Stage:
    """One benchmark row: the generator chain, the batch, and D's backbones."""

    name: str
    gen: GeneratorConfig
    superres: tuple[SuperresConfig, ...]
    batch: int
    backbones: tuple[str, ...]


def stages(preset: str) -> list[Stage]:
    """``imagenet``: the recipe's stem (16², batch 64) and 128→256 stage (batch 32); ``tiny``: a CPU smoke size."""
    if preset == 'tiny':
        gen = GeneratorConfig(img_resolution=16, c_dim=10, channel_base=512, channel_max=32, num_layers=4)
        heads = (SuperresConfig(head_layers=3),)
        lite = ('tf_efficientnet_lite0',)
        return [Stage('stem16', gen, (), 2, lite), Stage('sr32', gen, heads, 2, lite)]
    gen = GeneratorConfig(img_resolution=16, c_dim=1000, channel_base=32768, channel_max=512, num_layers=11)
    heads = tuple(SuperresConfig(head_layers=4) for _ in range(4))  # 16 -> 32 -> 64 -> 128 -> 256
    backbones = DiscriminatorConfig().backbones
    return [Stage('stem16', gen, (), 64, backbones), Stage('sr256', gen, heads, 32, backbones)]


def _build(stage: Stage, device: str) -> tuple[torch.nn.Module, ProjectedDiscriminator]:
    G = SuperresGenerator.from_configs(stage.gen, stage.superres) if stage.superres else Generator(stage.gen)
    D = ProjectedDiscriminator(DiscriminatorConfig(backbones=stage.backbones, c_dim=stage.gen.c_dim,
                                                   img_resolution=G.img_resolution, pretrained=False))
    return G.to(device), D.to(device).train()


def measure(stage: Stage, device: str, amp: str, warmup: int, repeats: int) -> dict:
    """Forward+backward images/s of G (through its trainable layers) and D (SAN fun+dir), and peak memory."""
    G, D = _build(stage, device)
    n = stage.batch
    z = torch.randn(n, stage.gen.z_dim, device=device)
    c = torch.randint(stage.gen.c_dim, (n,), device=device) if stage.gen.c_dim else None
    with torch.no_grad():
        img = G(z, c).detach()

    def g_step():
        G(z, c).square().mean().backward()

    def d_step():
        with torch.autocast(device_type=device, dtype=AMP_DTYPES[amp], enabled=amp != 'none'):
            fun, dir_ = D(img, c, flg_train=True)
        (fun.float().mean() + dir_.float().mean()).backward()

    row = dict(stage=stage.name, batch=n, resolution=G.img_resolution,
               g_params_m=sum(p.numel() for p in G.parameters()) / 1e6)
    for name, fn in (('G', g_step), ('D', d_step)):
        if device == 'cuda':
            torch.cuda.reset_peak_memory_stats()
        seconds = median_seconds(fn, device, warmup, repeats)
        row[f'{name}_img_s'] = n / seconds
        row[f'{name}_peak_gib'] = torch.cuda.max_memory_allocated() / 2 ** 30 if device == 'cuda' else None
    return row


def _reference_rows(args: list[str]) -> list[dict]:
    """Re-run this benchmark in a child process with the CUDA ops disabled (the loader caches per process)."""
    env = dict(os.environ, SAN_EXT_CUDA='0')
    out = subprocess.run([sys.executable, '-m', 'san_ext.bench.networks', *args, '--ops', 'ref', '--json-only'],
                         env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout)['rows']


def _upstream_rows(checkout: str, preset: str, device: str, warmup: int, repeats: int) -> list[dict]:
    """Upstream StyleGAN-XL's stem G and D from ``checkout``, timed in a child process (see upstream_child.py)."""
    rows = []
    for stage in stages(preset):
        if stage.superres:  # upstream builds a superres G only from a stem pickle; the stem is compared
            continue
        g = stage.gen
        cfg = dict(stage=stage.name, device=device, batch=stage.batch, warmup=warmup, repeats=repeats,
                   c_dim=g.c_dim, img_resolution=g.img_resolution, channel_base=g.channel_base,
                   channel_max=g.channel_max, num_layers=g.num_layers, num_fp16_res=g.num_fp16_res,
                   backbones=list(stage.backbones))
        child = Path(__file__).with_name('upstream_child.py')
        out = subprocess.run([sys.executable, str(child), checkout, json.dumps(cfg)], capture_output=True, text=True)
        if out.returncode != 0:
            raise click.ClickException(f'--upstream {checkout}: building or timing upstream\'s networks failed '
                                       f'(does the checkout import on this PyTorch? try `san-patch apply '
                                       f'{checkout}`):\n{out.stderr[-2000:]}')
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))  # upstream prints to stdout too
    return rows


def format_table(rows: list[dict]) -> str:
    lines = ['| stage | ops | amp | batch | G params | G img/s | G peak GiB | D img/s | D peak GiB |',
             '|' + '---|' * 9]
    for r in rows:
        mem = lambda v: '-' if v is None else f'{v:.1f}'  # noqa: E731
        lines.append(f'| {r["stage"]} ({r["resolution"]}²) | {r["ops"]} | {r["amp"]} | {r["batch"]} | '
                     f'{r["g_params_m"]:.1f}M | {r["G_img_s"]:.1f} | {mem(r["G_peak_gib"])} | {r["D_img_s"]:.1f} | '
                     f'{mem(r["D_peak_gib"])} |')
    return '\n'.join(lines)


@click.command(help=__doc__)
@click.option('--preset', type=click.Choice(['imagenet', 'tiny']), default='imagenet', show_default=True,
              help='imagenet: the recipe sizes (needs a GPU); tiny: a small CPU smoke run.')
@click.option('--ops', type=click.Choice(['both', 'cuda', 'ref']), default='both', show_default=True,
              help='Custom CUDA ops, PyTorch reference paths, or both (reference in a child process).')
@click.option('--amp', type=click.Choice(list(AMP_DTYPES)), default='none', show_default=True,
              help='Autocast dtype for D (its backbones dominate its cost).')
@click.option('--warmup', type=click.IntRange(0), default=2, show_default=True)
@click.option('--repeats', type=click.IntRange(1), default=5, show_default=True, help='Timed steps (median).')
@click.option('--out', type=click.Path(dir_okay=False), default='runs/bench_networks.json', show_default=True)
@click.option('--upstream', type=click.Path(exists=True, file_okay=False), default=None,
              help='A StyleGAN-XL checkout: also time its stem G and D (same sizes, same batch) in a child process.')
@click.option('--json-only', is_flag=True, hidden=True)
def main(preset, ops, amp, warmup, repeats, out, upstream, json_only):
    device = 'cuda' if torch.cuda.is_available() else 'cpu'
    rows = []
    if ops in ('both', 'cuda'):
        rows += [dict(measure(s, device, amp, warmup, repeats), ops='cuda' if device == 'cuda' else 'ref', amp=amp)
                 for s in stages(preset)]
    if ops == 'ref' or (ops == 'both' and device == 'cuda'):
        if ops == 'ref':
            rows += [dict(measure(s, device, amp, warmup, repeats), ops='ref', amp=amp) for s in stages(preset)]
        else:
            rows += _reference_rows(['--preset', preset, '--amp', amp, '--warmup', str(warmup),
                                     '--repeats', str(repeats)])
    if upstream:
        rows += _upstream_rows(upstream, preset, device, warmup, repeats)
    result = dict(device=torch.cuda.get_device_name() if device == 'cuda' else 'cpu', torch=torch.__version__,
                  preset=preset, rows=rows)
    if json_only:
        click.echo(json.dumps(result))
        return
    click.echo(f'device: {result["device"]}')
    click.echo(format_table(rows))
    click.echo(f'wrote {write_json(out, result)}')


if __name__ == '__main__':
    main()
