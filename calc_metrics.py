"""``python calc_metrics.py``: score a generator snapshot with FID/FD_DINOv2/KID/IS/PR/DC against a dataset
(StyleGAN's protocol), or with ADM's FID/sFID/IS/precision/recall against an ADM reference batch (``--ref-npz``);
see ``--help``. Logic in san_ext.metrics."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import sys
from pathlib import Path
from typing import Optional

import click
import torch

import san_ext.studies.digits_classifier  # noqa: F401  registers the digits study's extractor, digits_cnn
from san_ext import dist
from san_ext.checkpoint import load_generator
from san_ext.dot.cli import dot_options, load_dot
from san_ext.metrics import (
    INCEPTION_WEIGHTS,
    MetricOptions,
    compute_adm,
    compute_metrics,
    get_metric,
    list_extractors,
    list_metrics,
    write_result,
)
from san_ext.metrics.features import extractor_weights


def load_network(path: str, device: torch.device) -> torch.nn.Module:
    """The generator of a snapshot or released .pkl through ``san_ext.checkpoint.load_generator``."""
    try:
        return load_generator(path, device=device)
    except (OSError, ValueError, RuntimeError) as err:
        raise click.ClickException(f'cannot load --network {path}: {err}') from err


def _comma_list(ctx, param, value: Optional[str]) -> Optional[tuple[str, ...]]:
    if value is None:
        return None
    names = tuple(v.strip() for v in value.split(',') if v.strip())
    unknown = [n for n in names if n not in list_metrics()]
    if not names or unknown:
        raise click.BadParameter(f'unknown metric {unknown[0] if unknown else value!r}; known: '
                                 f'{", ".join(list_metrics())}', ctx, param)
    return names


def _check_options(metrics: tuple[str, ...], extractor: Optional[str], weights: Optional[str], gpus: int,
                   device: str, adm: bool) -> None:
    if extractor is not None and extractor not in list_extractors():
        known = ', '.join(list_extractors())
        raise click.ClickException(f'--extractor {extractor!r} is not registered; known: {known}')
    files = {extractor_weights(extractor or get_metric(m).extractor) for m in metrics} - {None}
    files |= {INCEPTION_WEIGHTS} if adm else set()
    if weights is not None and Path(weights).is_file() and len(files) > 1:
        names = ', '.join(sorted(f.name for f in files))
        raise click.ClickException(f'--weights {weights} is one file but these metrics need {names}: pass a folder '
                                   f'holding all of them')
    if device == 'cuda' and gpus > torch.cuda.device_count():
        raise click.ClickException(f'--gpus {gpus} but PyTorch sees {torch.cuda.device_count()} CUDA GPUs')


@click.command(context_settings={'max_content_width': 120, 'help_option_names': ['-h', '--help']})
# What to score.
@click.option('--network', metavar='FILE', type=click.Path(exists=True, dir_okay=False),
              help='Generator: network-snapshot-*.safetensors, a training state, or a released StyleGAN-XL/StyleSAN-XL '
              '.pkl (read without running code from it); or --sample-npz instead')
@click.option('--metrics', metavar='LIST', callback=_comma_list, help='Comma-separated metrics (StyleGAN protocol, '
              f'against --data): {", ".join(list_metrics())}  [default: fid50k_full; none with --ref-npz]')
@click.option('--data', metavar='[ZIP|DIR]', type=click.Path(exists=True),
              help='Reference dataset in StyleGAN format (dataset_tool.py); every metric but is50k needs it')
# ADM protocol.
@click.option('--ref-npz', metavar='FILE', type=click.Path(exists=True, dir_okay=False),
              help='ADM reference batch (e.g. VIRTUAL_imagenet256_labeled.npz): adds ADM\'s FID, sFID, IS, precision '
              'and recall (--num-gen samples, default 50000) -> metric-adm.jsonl')
@click.option('--sample-npz', metavar='FILE', type=click.Path(exists=True, dir_okay=False),
              help='Score this ADM sample batch (arr_0 uint8 NHWC, e.g. from gen_images.py --npz) against --ref-npz '
              'instead of sampling a --network')
# Features.
@click.option('--extractor', metavar='NAME', help='Feature extractor for every --metrics entry (the ADM suite '
              'always uses its Inception)  [default: per metric: inception, inception_logits, dinov2 or vgg16]')
@click.option('--weights', metavar='PATH', help='Extractor weight file, or a folder holding them  [default: search '
              '$SAN_EXT_WEIGHTS, then $TORCH_HOME/hub/checkpoints]')
# Counts and reproducibility.
@click.option('--num-gen', type=click.IntRange(min=2), help='Generated images per metric  [default: per metric, '
              'e.g. 50000]')
@click.option('--max-ref', type=click.IntRange(min=2), help='Cap on reference images (fixed random subset)  '
              '[default: per metric]')
@click.option('--seed', type=int, default=0, show_default=True, help='Seed of latents, classes and KID subsets')
# Hardware.
@click.option('--gpus', type=click.IntRange(min=1), default=1, show_default=True,
              help='Processes (GPUs; CPU processes with --device cpu); >1 relaunches through torchrun')
@click.option('--device', type=click.Choice(['auto', 'cpu', 'cuda']), default='auto', show_default=True)
@click.option('--batch', type=click.IntRange(min=1), default=64, show_default=True, help='Images per forward pass '
              'per process')
@click.option('--workers', type=click.IntRange(min=0), default=3, show_default=True, help='Data-loading processes')
# Output.
@click.option('--run-dir', metavar='DIR', help='Where metric-NAME.jsonl is appended  [default: the folder of '
              '--network or --sample-npz]')
@click.option('--cache-dir', metavar='DIR', help='Reference statistics cache  [default: $SAN_EXT_CACHE/metrics or '
              '~/.cache/san_ext/metrics]')
@click.option('--no-cache', is_flag=True, help='Neither read nor write cached reference statistics')
@click.option('--no-progress', is_flag=True, help='No progress bars')
# Discriminator optimal transport.
@dot_options
def main(network: Optional[str], metrics: Optional[tuple[str, ...]], data: Optional[str], ref_npz: Optional[str],
         sample_npz: Optional[str], extractor: Optional[str],
         weights: Optional[str], num_gen: Optional[int], max_ref: Optional[int], seed: int, gpus: int, device: str,
         batch: int, workers: int, run_dir: Optional[str], cache_dir: Optional[str], no_cache: bool,
         no_progress: bool, dot_steps: int, dot_lr: float, dot_opt: str, dot_critic: Optional[str],
         dot_k: Optional[float], dot_pairs: int) -> None:
    """Score a generator snapshot: psi = 1, uniform random classes, reference statistics cached on disk. Results
    are appended to RUN_DIR/metric-NAME.jsonl with the protocol, extractor, resize, reference, counts and time.
    StyleGAN protocol: --metrics against --data. ADM protocol (openai/guided-diffusion's evaluator): --ref-npz, for
    the network's samples or for an ADM sample batch (--sample-npz). See docs/METRICS.md for what compares with what.

    \b
    Examples:
      python calc_metrics.py --network runs/00000/network-snapshot-001000.safetensors --data imagenet16.zip \\
          --metrics fid50k_full,kid50k_full,is50k --gpus 8
      python calc_metrics.py --network imagenet128.pkl --data imagenet128.zip --metrics fid50k_full  # released
      python calc_metrics.py --network snap.safetensors --data cifar10.zip --metrics pr50k3_full,dc50k \\
          --weights ~/weights   # folder with the Inception and VGG16 files
      python calc_metrics.py --network snap.safetensors --data digits16.zip --metrics fid10k_full --num-gen 2000 \\
          --extractor digits_cnn   # the digits study's classifier (or any registered extractor)
      python calc_metrics.py --network snap.safetensors --data cifar10.zip --dot-steps 10  # FID with latent DOT,
          # its D from the training state beside the snapshot; results in metric-fid50k_full_dot.jsonl
      python calc_metrics.py --network imagenet256.pkl --data imagenet256.zip --metrics fid50k_full,fd_dinov2_50k_full
      python calc_metrics.py --network imagenet256.pkl --ref-npz VIRTUAL_imagenet256_labeled.npz --gpus 8  # ADM
      python calc_metrics.py --sample-npz samples.npz --ref-npz VIRTUAL_imagenet256_labeled.npz   # ADM, a batch
    """
    logging.basicConfig(level=logging.INFO if os.environ.get('RANK', '0') == '0' else logging.WARNING,
                        format='%(levelname)s %(name)s: %(message)s')
    metrics = metrics if metrics is not None else (() if ref_npz else ('fid50k_full',))
    _check_sources(network, sample_npz, ref_npz, metrics, dot_steps)
    _check_options(metrics, extractor, weights, gpus, device, adm=ref_npz is not None)
    if any(get_metric(m).max_ref != 0 for m in metrics) and data is None:
        needs = ', '.join(m for m in metrics if get_metric(m).max_ref != 0)
        raise click.ClickException(f'--data is required for {needs}')
    if gpus > 1 and not dist.launched_by_torchrun():
        dist.relaunch(gpus, [os.path.abspath(__file__), *sys.argv[1:]])
        return
    env = dist.init(device)
    opts = MetricOptions(num_gen=num_gen, max_ref=max_ref, extractor=extractor, weights=weights, batch_size=batch,
                         seed=seed, device=str(env.device), num_workers=workers, cache=not no_cache,
                         cache_dir=cache_dir, progress=not no_progress)
    dot = dict(steps=dot_steps, lr=dot_lr, opt=dot_opt, k_eff=dot_k, pairs=dot_pairs, seed=seed, batch=batch)
    try:
        _score(network, metrics, data, env, opts, run_dir, dot, dot_critic, {'ref_npz': ref_npz,
                                                                              'sample_npz': sample_npz})
    finally:
        dist.shutdown()


def _check_sources(network: Optional[str], sample_npz: Optional[str], ref_npz: Optional[str],
                   metrics: tuple[str, ...], dot_steps: int) -> None:
    """Exactly one of --network and --sample-npz; a sample batch is scored only by the ADM suite, without DOT."""
    if (network is None) == (sample_npz is None):
        raise click.ClickException('give --network (a generator to sample) or --sample-npz (an ADM sample batch)')
    if sample_npz is not None and (ref_npz is None or metrics or dot_steps):
        raise click.ClickException('--sample-npz is scored by the ADM suite only: pass --ref-npz, and no --metrics '
                                   'or --dot-steps (they sample a --network)')


def _score(network: Optional[str], metrics: tuple[str, ...], data: Optional[str], env: dist.DistEnv,
           opts: MetricOptions, run_dir: Optional[str], dot_kw: dict, dot_critic: Optional[str],
           adm: dict[str, Optional[str]]) -> None:
    """Load the generator (with latent DOT when ``dot_kw['steps'] > 0``), score it with ``metrics`` and, given
    ``adm['ref_npz']``, the ADM suite (of the generator or of ``adm['sample_npz']``); append the results."""
    G = dot = None
    if network is not None:
        G = load_network(network, env.device)
    if dot_kw['steps'] > 0:  # z moved by latent DOT before G; k_eff estimated once (seeded by --seed) for all batches
        dot = load_dot(network, G, dot_critic, env.device, class_ids=list(range(G.c_dim)) or [None],
                       truncation_psi=1.0, echo=env.is_main, **dot_kw)
    sampler = G if dot is None else dot
    try:
        results = compute_metrics(metrics, sampler, data, opts) if metrics else []
        if adm['ref_npz'] is not None:
            results.append(compute_adm(adm['ref_npz'], None if adm['sample_npz'] else sampler, adm['sample_npz'],
                                       opts))
    except (FileNotFoundError, ValueError, ImportError) as err:  # missing weights, bad data: say so, no traceback
        raise click.ClickException(str(err)) from err
    for result in results:
        if dot is not None:  # never mix DOT scores with plain ones: own file, settings under 'dot'
            result = dataclasses.replace(result, metric=f'{result.metric}_dot')
        file = write_result(result, run_dir or Path(network or adm['sample_npz']).parent, network=network,
                            extra=None if dot is None else {'dot': dot.settings})
        if file is not None:
            click.echo(f'{json.dumps(result.results)} -> {file}')

if __name__ == '__main__':
    main()
