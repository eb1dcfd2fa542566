"""Train a StyleGAN-XL generator with a projected (SAN) discriminator: parse options, build the config, run."""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import sys
from typing import Optional

import click

from san_ext import dist, losses
from san_ext.training.config import PRESETS, REDUCTIONS, OptimConfig, to_json
from san_ext.training.options import OptionError, TrainOptions, build_config

# Every option's default, written once in TrainOptions (which takes them from the config sections).
_DEFAULTS = {f.name: f.default for f in dataclasses.fields(TrainOptions)}


class _Finite(click.FloatRange):
    """A FloatRange that also refuses nan and inf: nan passes every bound check (all comparisons are False)."""

    def convert(self, value, param, ctx) -> float:
        value = super().convert(value, param, ctx)
        if not math.isfinite(value):
            self.fail(f'{value} is not a finite number', param, ctx)
        return value


def _processes(gpus: Optional[int]) -> tuple[int, int]:
    """(processes in all, nodes). Under torchrun the world comes from its environment: ``--gpus`` may be left out,
    or give the processes per node (upstream's meaning: GPUs on this machine) or in all; anything else fails
    naming both numbers. Otherwise ``--gpus`` (default 1) processes on this machine."""
    world = dist.torchrun_world()
    if world is None:
        return gpus or 1, 1
    nodes, per_node = world
    if gpus is not None and gpus not in (per_node, nodes * per_node):
        raise click.ClickException(
            f'--gpus {gpus} does not match torchrun\'s {nodes} node(s) x {per_node} processes = {nodes * per_node}: '
            f'leave --gpus out, pass --gpus {per_node} (per node) or {nodes * per_node} (in all), or launch '
            f'torchrun --nproc_per_node {gpus}')
    return nodes * per_node, nodes


def _comma_list(ctx, param, value: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in value.split(',') if v.strip()) if value else ()


# Options that accept StyleGAN-XL's spelling `--cond True`, `--cond=1` as well as a bare `--cond`.
def _bool_option(name: str, help: str):
    return click.option(name, type=bool, default=_DEFAULTS[name.lstrip('-')], is_flag=False, flag_value=True,
                        show_default=True, help=help)


@click.command(context_settings={'max_content_width': 120})
# Required.
@click.option('--outdir', metavar='DIR', required=True, help='Where to make the run directory')
@click.option('--data', metavar='[ZIP|DIR]', required=True, help='Training data (StyleGAN format, dataset_tool.py)')
@click.option('--cfg', 'preset', type=click.Choice(list(PRESETS)), default=_DEFAULTS['preset'], show_default=True,
              help='Recipe; stylegan-xl uses the StyleGAN3-T synthesis, stylegan3-r the R variant')
@click.option('--gpus', type=click.IntRange(min=1), default=_DEFAULTS['gpus'], show_default="1, or torchrun's world",
              help='GPUs (CPU processes with --device cpu) on this machine; >1 relaunches through torchrun. Under '
              'torchrun: leave it out, or give the per-node count')
@click.option('--batch', type=click.IntRange(min=1), default=_DEFAULTS['batch'], show_default=True,
              help='Total batch size')
# Data and conditioning.
@_bool_option('--cond', 'Train class-conditional (needs labels in dataset.json)')
@_bool_option('--mirror', 'Add x-flipped copies of the images')
# Training length and hyperparameters.
@click.option('--batch-gpu', type=click.IntRange(min=1), help='Images per forward pass  [default: batch/gpus]')
@click.option('--kimg', type=_Finite(min=0, min_open=True), default=_DEFAULTS['kimg'], show_default=True,
              help='Training length in thousands of real images')
@click.option('--glr', type=_Finite(min=0),
              help=f"G learning rate  [default: the recipe's, {OptimConfig.glr}]")
@click.option('--dlr', type=_Finite(min=0), default=_DEFAULTS['dlr'], show_default=True,
              help='D learning rate')
@click.option('--loss', type=click.Choice(losses.list_specs()), metavar='NAME[-san]|san', default=_DEFAULTS['loss'],
              show_default=True, help=f'GAN loss NAME with plain heads, or NAME-san: its SAN conversion with SAN '
              f'heads; NAME in {", ".join(losses.list_losses())}; san = hinge-san, StyleSAN-XL\'s')
@click.option('--san-lambda', type=click.FloatRange(min=0), default=_DEFAULTS['san_lambda'], show_default=True,
              help='Weight of the SAN direction term (lambda)')
@click.option('--loss-reduction', type=click.Choice(REDUCTIONS), default=_DEFAULTS['loss_reduction'], show_default=True,
              help='Over (image, backbone) pairs: sum as StyleGAN-XL, or mean')
# Zero-centred gradient penalties (R3GAN: --loss rpgan --r1-gamma G --r2-gamma G).
@click.option('--r1-gamma', type=click.FloatRange(min=0), default=_DEFAULTS['r1_gamma'], show_default=True,
              help="R1 weight: gamma/2 |grad D(x_real)|^2 per image on D's score (SAN: its fun logit); 0: off")
@click.option('--r2-gamma', type=click.FloatRange(min=0), default=_DEFAULTS['r2_gamma'], show_default=True,
              help='R2 weight: the same penalty on generated images; 0: off')
@click.option('--gamma-end', type=click.FloatRange(min=0), default=None,
              help='Cosine-decay the larger of the two gammas to this by --kimg (the other keeps its ratio), as R3GAN '
                   ' [default: no decay]')
@click.option('--reg-every', type=click.IntRange(min=1), default=_DEFAULTS['reg_every'], show_default=True,
              help='Lazy R1/R2: every K D steps, weighted K (StyleGAN2)')
@click.option('--cls_weight', type=click.FloatRange(min=0), default=_DEFAULTS['cls_weight'], show_default=True,
              help='Classifier guidance weight (needs --cond and the deit_small classifier weights)')
# Generator.
@click.option('--cbase', type=click.IntRange(min=1), default=_DEFAULTS['cbase'], show_default=True, help='Channel base')
@click.option('--cmax', type=click.IntRange(min=1), default=_DEFAULTS['cmax'], show_default=True, help='Max channels')
@click.option('--syn_layers', type=click.IntRange(min=3), default=_DEFAULTS['syn_layers'], show_default=True,
              help='Synthesis layers of the stem')
@click.option('--fp32', is_flag=True, help='No FP16 layers, no conv clamping')
# Super-resolution stages.
@click.option('--superres', is_flag=True, help='Train a super-resolution stage on --path_stem')
@click.option('--path_stem', metavar='SNAPSHOT',
              help='Network snapshot of the previous stage, or a released StyleGAN-XL/StyleSAN-XL .pkl (read '
              'without running code from it)')
@click.option('--head_layers', type=click.IntRange(min=3), default=_DEFAULTS['head_layers'], show_default=True,
              help='Layers of the new stage')
@click.option('--up_factor', type=click.Choice(['2', '4', '8', '16']), default=str(_DEFAULTS['up_factor']),
              show_default=True, help='Resolution factor of the new stage')
# Discriminator.
@click.option('--backbones', callback=_comma_list, default=','.join(_DEFAULTS['backbones']),
              show_default=True, help='Frozen timm feature networks, comma-separated')
@click.option('--pretrained/--no-pretrained', default=_DEFAULTS['pretrained'], show_default=True,
              help='Pretrained backbone weights (--no-pretrained: random, for tests)')
@click.option('--interp-size', type=click.IntRange(min=32), default=_DEFAULTS['interp_size'], show_default=True,
              help='CNN backbones see inputs resized to this side')
@click.option('--sync-bn', is_flag=True, help="SyncBatchNorm in D's heads across GPUs")
# Run, logging, checkpoints.
@click.option('--metrics', callback=_comma_list, default=','.join(_DEFAULTS['metrics']), show_default=True,
              help='Metrics at each snapshot, comma-separated, or none')
@click.option('--tick', type=_Finite(min=0, min_open=True), default=_DEFAULTS['tick'], show_default=True,
              help='kimg between progress lines')
@click.option('--snap', type=click.IntRange(min=1), default=_DEFAULTS['snap'], show_default=True,
              help='Ticks between snapshots and metrics')
@click.option('--keep-states', type=click.IntRange(min=0), default=_DEFAULTS['keep_states'], show_default=True,
              help='Newest training states to keep (0 = all)')
@click.option('--resume', metavar='latest|PATH', help='latest: continue the newest matching run in --outdir; '
              'PATH: a training-state file or run dir')
@click.option('--seed', type=click.IntRange(min=0), default=_DEFAULTS['seed'], show_default=True, help='Random seed')
@click.option('--workers', type=click.IntRange(min=0), default=_DEFAULTS['workers'], show_default=True,
              help='DataLoader workers')
@click.option('--device', type=click.Choice(['auto', 'cpu', 'cuda']), default=_DEFAULTS['device'], show_default=True)
@click.option('--desc', metavar='STR', help='String appended to the run directory name')
@click.option('-n', '--dry-run', is_flag=True, help='Print the config and exit')
def main(dry_run: bool, **kw) -> None:
    """Train StyleGAN-XL with a SAN (or plain) projected discriminator.

    \b
    Tiny CPU quick start (digits at 16x16; about 230 s per kimg on one CPU core, so ~4 minutes):
      python dataset_tool.py --source builtin:digits --dest digits16.zip --resolution 16
      python train.py --outdir runs --data digits16.zip --cfg stylegan-xl --cond --batch 8 --kimg 1 \\
          --cbase 512 --cmax 32 --syn_layers 4 --backbones tf_efficientnet_lite0 --no-pretrained \\
          --metrics none --tick 0.2 --snap 5 --workers 0 --device cpu

    \b
    ImageNet stem at 16x16, then one 16 -> 32 stage (8 GPUs):
      python train.py --outdir runs --data imagenet16.zip --cfg stylegan-xl --cond True --mirror 1 \\
          --gpus 8 --batch 2048 --batch-gpu 16 --kimg 10000 --syn_layers 14
      python train.py --outdir runs --data imagenet32.zip --cfg stylegan-xl --cond True --mirror 1 \\
          --gpus 8 --batch 256 --superres --up_factor 2 --head_layers 7 \\
          --path_stem runs/00000-stylegan-xl-imagenet16-gpus8-batch2048/best_model.safetensors

    \b
    Continue an interrupted run (same command plus --resume latest), or try another loss, plain or SAN:
      python train.py ... --resume latest
      python train.py ... --loss nonsaturating
      python train.py ... --loss nonsaturating-san

    \b
    R3GAN's loss (relativistic pairing, R1 and R2) and its SAN form:
      python train.py ... --loss rpgan --r1-gamma 1 --r2-gamma 1
      python train.py ... --loss rpgan-san --r1-gamma 1 --r2-gamma 1 --gamma-end 0.1 --reg-every 4
    """
    logging.basicConfig(level=logging.INFO if os.environ.get('RANK', '0') == '0' else logging.WARNING,
                        format='%(levelname)s %(name)s: %(message)s')
    kw['up_factor'] = int(kw['up_factor'])
    given = click.get_current_context().get_parameter_source('gpus') != click.core.ParameterSource.DEFAULT
    kw['gpus'], kw['nodes'] = _processes(kw['gpus'] if given else None)
    opts = TrainOptions(**kw)
    try:
        cfg = build_config(opts)
    except OptionError as e:
        raise click.ClickException(str(e)) from e
    if dry_run:
        click.echo(to_json(cfg))
        return
    if opts.gpus > 1 and not dist.launched_by_torchrun():
        try:
            dist.relaunch(opts.gpus, [os.path.abspath(__file__), *sys.argv[1:]])
        except dist.RelaunchError as e:
            raise click.ClickException(str(e)) from e
        return
    from san_ext.training.errors import TrainingError
    from san_ext.training.loop import run
    try:
        run(cfg)
    except TrainingError as e:  # a stop the user can act on: its message, not a traceback
        raise click.ClickException(str(e)) from e


if __name__ == '__main__':
    main()
