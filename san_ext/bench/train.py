"""``python -m san_ext.bench.train``: seconds per kimg of the whole training loop, as StyleGAN-XL reports it.

Each case runs :func:`san_ext.training.loop.run` end to end (data loader, G and D phases, SAN re-projection, EMA,
statistics) for a few ticks on a throw-away dataset and reads ``Timing/sec_per_kimg`` from the run's ``stats.jsonl``.
The first tick (cuDNN autotuning, JIT builds, allocator warm-up) is dropped; the table gives the median of the rest.
Snapshots are excluded from the tick time, as in the loop itself.

Cases (the ImageNet sizes are those of ``python -m san_ext.bench.networks``: ``--cbase 32768 --cmax 512
--syn_layers 11``, 4-layer superres heads, 1000 classes, the two default backbones with random weights, since speed
does not depend on them):

- ``imagenet-stem16``: the 16² stem, batch 64 in chunks of 16 (``--batch-gpu 16`` as the ImageNet recipe).
- ``imagenet-sr256``: the 128→256 super-resolution stage on a random 128² stem chain, batch 32 in chunks of 8.
- ``tiny`` / ``tiny-sr32``: the README's CPU quick start (digits at 16², ``--cbase 512 --cmax 32 --syn_layers 4``,
  ``tf_efficientnet_lite0``) and a 16→32 stage on top of it.

Loss settings (``--loss-setting``, repeatable; each case runs under each): ``san`` (StyleSAN-XL's Hinge-SAN, the
default), ``rpgan-san`` (the relativistic pairing loss: one paired D pass, and G's phase also runs D on the reals) and
``rpgan-san-r1r2`` (the same with R1 and R2 at gamma 1 on every step, R3GAN's regulariser: a double backward through
the frozen backbones for the reals and for the fakes), so the table shows what R1/R2 cost per step.

The reference point for upstream StyleGAN-XL is its issue #36: the 16² stem on one V100 at batch 8, about 120 s/kimg.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import statistics
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import click
import numpy as np
import PIL.Image
import torch

from san_ext.checkpoint import save_snapshot
from san_ext.data import make_digits_dataset
from san_ext.data.writer import DatasetWriter
from san_ext.networks.superres import SuperresGenerator

from .common import render_table, write_json
from .networks import Stage, stages

__all__ = ['CASES', 'LOSS_SETTINGS', 'Case', 'LossSetting', 'measure', 'format_table']


@dataclass(frozen=True)
class Case:
    """One benchmark row: a network stage (from ``bench.networks``), the batch split, and the D input size."""

    name: str
    stage: Stage
    batch: int
    batch_gpu: int
    interp_size: int = 224          # --interp-size: D resizes its input to this before the backbones
    digits: bool = False            # train on the built-in digits instead of synthetic noise images

    @property
    def superres(self) -> bool:
        return bool(self.stage.superres)


def _cases() -> dict[str, Case]:
    tiny_stem, tiny_sr = stages('tiny')
    stem, sr = stages('imagenet')
    return {'tiny': Case('tiny', tiny_stem, batch=8, batch_gpu=8, digits=True),
            'tiny-sr32': Case('tiny-sr32', tiny_sr, batch=8, batch_gpu=8, digits=True),
            'imagenet-stem16': Case('imagenet-stem16', stem, batch=64, batch_gpu=16),
            'imagenet-sr256': Case('imagenet-sr256', sr, batch=32, batch_gpu=8)}


CASES: dict[str, Case] = _cases()


@dataclass(frozen=True)
class LossSetting:
    """The loss a case trains with: a ``--loss`` spec and the R1/R2 weights."""

    name: str
    loss: str = 'san'
    r1_gamma: float = 0.0
    r2_gamma: float = 0.0


LOSS_SETTINGS: dict[str, LossSetting] = {s.name: s for s in (
    LossSetting('san'),
    LossSetting('rpgan-san', 'rpgan-san'),
    LossSetting('rpgan-san-r1r2', 'rpgan-san', r1_gamma=1.0, r2_gamma=1.0),
)}


def _synthetic_dataset(dest: Path, num: int, resolution: int, classes: int, seed: int = 0) -> Path:
    """A labelled StyleGAN-format zip of smooth random images (cost of loading is that of real PNGs)."""
    rng = np.random.default_rng(seed)
    labels = []
    with DatasetWriter(dest) as w:
        for i in range(num):
            small = rng.integers(0, 256, [8, 8, 3], dtype=np.uint8)
            img = PIL.Image.fromarray(small).resize((resolution, resolution), PIL.Image.BILINEAR)
            buf = io.BytesIO()
            img.save(buf, format='PNG', compress_level=1)
            name = f'{i // 1000:05d}/img{i:08d}.png'
            w.add(name, buf.getvalue())
            labels.append([name, i % classes])
        w.add('dataset.json', json.dumps({'labels': labels}).encode())
    return dest


def _dataset(case: Case, resolution: int, work: Path) -> Path:
    if case.digits:
        return make_digits_dataset(work / f'digits{resolution}.zip', resolution=resolution)
    return _synthetic_dataset(work / f'noise{resolution}.zip', max(4 * case.batch, 256), resolution,
                              case.stage.gen.c_dim)


def _stem_snapshot(case: Case, work: Path) -> Path:
    """The previous stage (random weights) as a network snapshot, for ``--superres --path_stem``."""
    stem = SuperresGenerator.from_configs(case.stage.gen, case.stage.superres[:-1])
    return save_snapshot(work, stem, config=None, cur_nimg=0, name='stem')


def _options(case: Case, work: Path, data: Path, device: str, ticks: int, steps_per_tick: int, seed: int,
             loss: LossSetting = LOSS_SETTINGS['san']):
    from san_ext.training.options import TrainOptions

    gen, tick_kimg = case.stage.gen, case.batch * steps_per_tick / 1000
    extra = {}
    if case.superres:
        extra = dict(superres=True, path_stem=str(_stem_snapshot(case, work)),
                     head_layers=case.stage.superres[-1].head_layers, up_factor=case.stage.superres[-1].up_factor)
    return TrainOptions(outdir=str(work / 'runs'), data=str(data), cond=True, batch=case.batch,
                        batch_gpu=case.batch_gpu, kimg=tick_kimg * ticks, tick=tick_kimg, snap=10 ** 6,
                        cbase=gen.channel_base, cmax=gen.channel_max, syn_layers=gen.num_layers,
                        backbones=case.stage.backbones, pretrained=False, interp_size=case.interp_size,
                        metrics=('none',), workers=0 if device == 'cpu' else 3, device=device, seed=seed,
                        loss=loss.loss, r1_gamma=loss.r1_gamma, r2_gamma=loss.r2_gamma, **extra)


def _tick_records(run_dir: Path) -> list[dict]:
    """The run's ``stats.jsonl``: one record per tick."""
    return [json.loads(line) for line in (run_dir / 'stats.jsonl').read_text().splitlines() if line.strip()]


def measure(case: Case, device: str, ticks: int = 4, steps_per_tick: int = 2, seed: int = 0,
            workdir: Optional[Path] = None, log: Optional[io.TextIOBase] = None,
            loss: LossSetting = LOSS_SETTINGS['san']) -> dict:
    """Train ``case`` with ``loss`` for ``ticks`` ticks of ``steps_per_tick`` steps; return sec/kimg (median of
    ticks 2..N)."""
    if ticks < 2:
        raise ValueError(f'ticks must be >= 2 (the first tick is warm-up), got {ticks}')
    from san_ext.training.loop import run
    from san_ext.training.options import build_config

    with contextlib.ExitStack() as stack:
        work = Path(workdir) if workdir else Path(stack.enter_context(tempfile.TemporaryDirectory()))
        resolution = case.stage.gen.img_resolution * math.prod(s.up_factor for s in case.stage.superres)
        data = _dataset(case, resolution, work)
        cfg = build_config(_options(case, work, data, device, ticks, steps_per_tick, seed, loss))
        sink = log if log is not None else io.StringIO()
        with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
            run_dir = run(cfg)
        records = _tick_records(run_dir)
    times = [float(r['Timing/sec_per_kimg']) for r in records]
    peaks = [r['Resources/peak_gpu_mem_gb'] for r in records if 'Resources/peak_gpu_mem_gb' in r]
    peak = max(peaks) if peaks else None
    timed = times[1:]
    median = statistics.median(timed)
    return dict(case=case.name, loss=loss.name, resolution=resolution, batch=case.batch, batch_gpu=case.batch_gpu,
                steps_per_tick=steps_per_tick, ticks=len(times), sec_per_kimg=median,
                sec_per_kimg_min=min(timed), sec_per_kimg_max=max(timed), img_per_s=1000 / median,
                first_tick_sec_per_kimg=times[0], peak_gpu_gib=peak)


def format_table(rows: list[dict]) -> str:
    """The rows as a Markdown table (the README's)."""
    header = ('case', 'loss', 'res', 'batch (chunk)', 'sec/kimg (median)', 'range', 'img/s', 'peak GPU GiB')
    body = [(r['case'], r.get('loss', 'san'), f'{r["resolution"]}²', f'{r["batch"]} ({r["batch_gpu"]})',
             f'{r["sec_per_kimg"]:.1f}',
             f'{r["sec_per_kimg_min"]:.1f}–{r["sec_per_kimg_max"]:.1f}', f'{r["img_per_s"]:.2f}',
             '-' if r['peak_gpu_gib'] is None else f'{r["peak_gpu_gib"]:.1f}') for r in rows]
    return render_table(header, body, 4, markdown=True).rstrip('\n')


def _device_name(device: str) -> str:
    if device == 'cuda':
        return torch.cuda.get_device_name()
    return f'cpu ({torch.get_num_threads()} threads)'


@click.command(help=__doc__, context_settings={'max_content_width': 120})
@click.option('--case', 'names', multiple=True, type=click.Choice(list(CASES)),
              help='Cases to run (repeatable). Default: the ImageNet cases on a GPU, tiny on CPU.')
@click.option('--loss-setting', 'losses', multiple=True, type=click.Choice(list(LOSS_SETTINGS)),
              help='Loss settings to run each case under (repeatable).  [default: san]')
@click.option('--device', type=click.Choice(['auto', 'cpu', 'cuda']), default='auto', show_default=True)
@click.option('--ticks', type=click.IntRange(2), default=4, show_default=True,
              help='Ticks per case; the first is warm-up and not counted.')
@click.option('--steps-per-tick', type=click.IntRange(1), default=2, show_default=True,
              help='Optimisation steps (global batches) per tick.')
@click.option('--seed', type=int, default=0, show_default=True)
@click.option('--out', type=click.Path(dir_okay=False), default='runs/bench_train.json', show_default=True,
              help='JSON result file.')
@click.option('--log', 'log_path', type=click.Path(dir_okay=False), default=None,
              help='Write the training loops\' own output (summaries, progress) here instead of discarding it.')
def main(names, losses, device, ticks, steps_per_tick, seed, out, log_path):
    if device == 'auto':
        device = 'cuda' if torch.cuda.is_available() else 'cpu'
    if device == 'cuda' and not torch.cuda.is_available():
        raise click.ClickException('--device cuda: no CUDA GPU is visible to PyTorch; use --device cpu')
    names = names or (('imagenet-stem16', 'imagenet-sr256') if device == 'cuda' else ('tiny',))
    rows = []
    with contextlib.ExitStack() as stack:
        log = stack.enter_context(open(log_path, 'w', encoding='utf-8')) if log_path else None
        for name in names:
            for setting in losses or ('san',):
                click.echo(f'{name} / {setting}: {ticks} ticks x {steps_per_tick} steps on {device} ...', err=True)
                rows.append(measure(CASES[name], device, ticks, steps_per_tick, seed, log=log,
                                    loss=LOSS_SETTINGS[setting]))
    result = dict(device=_device_name(device), torch=torch.__version__, rows=rows)
    click.echo(f'device: {result["device"]}, torch {result["torch"]}')
    click.echo(format_table(rows))
    click.echo(f'wrote {write_json(out, result)}')


if __name__ == '__main__':
    main()
