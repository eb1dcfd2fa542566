"""Training pipeline: a tiny end-to-end run, exact resume, torchrun == one process, superres, NaN guard, CLI checks.

CPU only: tiny widths (--cbase 512 --cmax 32 --syn_layers 4), one random-weight backbone (tf_efficientnet_lite0,
--no-pretrained) at --interp-size 128, batch 4, the built-in digits at 16x16 (and 32x32 for superres).
"""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch
from click.testing import CliRunner

from san_ext import losses
from san_ext.checkpoint import find_latest, load_generator, load_training_state
from san_ext.critic_score import blur, gaussian_taps
from san_ext.data import make_digits_dataset
from san_ext.networks import DiscriminatorConfig, Generator, GeneratorConfig, ProjectedDiscriminator
from san_ext.training import from_json
from san_ext.training.config import LossConfig, OptimConfig
from san_ext.training.loop import NonFiniteLossError, run
from san_ext.training.loss import ClassifierError, PhaseLoss, ProjectedGANLoss, build_classifier, frozen_spectral_norm
from san_ext.training.options import TrainOptions, build_config

ROOT = Path(__file__).resolve().parents[1]
TINY_ARGS = ['--cond', '--batch', '4', '--cbase', '512', '--cmax', '32', '--syn_layers', '4', '--backbones',
             'tf_efficientnet_lite0', '--no-pretrained', '--interp-size', '128', '--metrics', 'none', '--workers', '0',
             '--device', 'cpu']
TINY_OPTS = dict(cond=True, batch=4, cbase=512, cmax=32, syn_layers=4, backbones=('tf_efficientnet_lite0',),
                 pretrained=False, interp_size=128, metrics=('none',), workers=0, device='cpu')


pytestmark = pytest.mark.usefixtures('one_thread')


@pytest.fixture(scope='module')
def digits32(tmp_path_factory) -> Path:
    return make_digits_dataset(tmp_path_factory.mktemp('data') / 'digits32.zip', resolution=32)


def write_zip(path: Path, n: int, res: int, labels: bool) -> Path:
    """A StyleGAN-format zip of n random RGB images (the fallback for data the built-in set cannot give)."""
    rng = np.random.default_rng(0)
    with zipfile.ZipFile(path, 'w') as z:
        for i in range(n):
            buf = __import__('io').BytesIO()
            PIL.Image.fromarray(rng.integers(0, 255, [res, res, 3], dtype=np.uint8)).save(buf, format='PNG')
            z.writestr(f'00000/img{i:08d}.png', buf.getvalue())
        if labels:
            z.writestr('dataset.json', json.dumps({'labels': [[f'00000/img{i:08d}.png', i % 2] for i in range(n)]}))
    return path


def tiny_config(outdir: Path, data: Path, grid_cols: int = 2, loss: dict | None = None, **opts):
    cfg = build_config(TrainOptions(outdir=str(outdir), data=str(data), **{**TINY_OPTS, **opts}))
    return dataclasses.replace(cfg, run=dataclasses.replace(cfg.run, grid_cols=grid_cols),
                               loss=dataclasses.replace(cfg.loss, **(loss or {})))


def assert_same_state(a, b, modules=('G', 'D', 'G_ema'), skip=()):
    for m in modules:
        assert a.modules[m].keys() == b.modules[m].keys()
        bad = [k for k in a.modules[m] if not any(s in k for s in skip) and not torch.equal(a.modules[m][k],
                                                                                              b.modules[m][k])]
        assert not bad, f'{m} differs in {bad[:5]}'
    for o in ('G', 'D'):
        sa, sb = a.optimizers[o]['state'], b.optimizers[o]['state']
        assert sa.keys() == sb.keys()
        assert all(torch.equal(v, sb[i][k]) for i, s in sa.items() for k, v in s.items()), f'opt_{o} differs'


# -- (a) end to end ---------------------------------------------------------------------------------------------------
@pytest.fixture(scope='module')
def stem_run(tmp_path_factory, digits16, train_cli) -> Path:
    """4 steps of the tiny stem through the CLI: 2 ticks, a snapshot at each."""
    outdir = tmp_path_factory.mktemp('runs')
    res = CliRunner().invoke(train_cli, ['--outdir', str(outdir), '--data', str(digits16), '--kimg', '0.016',
                                         '--tick', '0.008', '--snap', '1', *TINY_ARGS], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    (run_dir,) = outdir.iterdir()
    return run_dir


def test_tiny_run_writes_snapshot_state_grid_and_stats(stem_run):
    assert stem_run.name == '00000-stylegan-xl-digits16-gpus1-batch4'
    names = {p.name for p in stem_run.iterdir()}
    assert {'config.json', 'stats.jsonl', 'fakes_init.png', 'fakes000000_016.png',  # 0.016 kimg: 000000_016
            'network-snapshot-000000_016.safetensors', 'network-snapshot-000000_016.json',
            'training-state-000000_016.safetensors', 'training-state-000000_016.json'} <= names
    assert any(n.startswith('events.out.tfevents') for n in names)  # TensorBoard
    assert not [n for n in names if '.tmp-' in n]
    ticks = [json.loads(line) for line in (stem_run / 'stats.jsonl').read_text().splitlines()]
    assert [t['kimg'] for t in ticks] == [0.008, 0.016]
    for key in ('Loss/G/loss', 'Loss/D/loss', 'Loss/scores/real', 'Timing/sec_per_kimg', 'Timing/eta_hours'):
        assert all(np.isfinite(t[key]) for t in ticks), key
    cfg = from_json((stem_run / 'config.json').read_text())
    assert cfg.loss.san and cfg.G.num_layers == 4 and cfg.run.batch == 4 and cfg.data.label_dim == 10
    assert PIL.Image.open(stem_run / 'fakes000000_016.png').size == (8 * 16, 10 * 16)  # 8 seeds x 10 classes
    st = load_training_state(find_latest(stem_run))
    assert st.progress['cur_nimg'] == 16 and st.progress['batch_idx'] == 4
    G = load_generator(stem_run / 'network-snapshot-000000_016.safetensors')
    assert G(torch.randn(2, G.z_dim), torch.eye(10)[:2]).shape == (2, 3, 16, 16)


# -- (b) exact resume -------------------------------------------------------------------------------------------------
def test_resume_continues_the_same_trajectory_bit_for_bit(tmp_path, digits16):
    """6 steps straight == 3 steps + --resume latest + 3 steps: G, D, G_ema, both optimizers, pl_mean. Two chunks
    per step and the path-length phase (from step 0, every 2nd step) are on, so all RNG streams are exercised."""
    common = dict(batch_gpu=2, tick=0.004, snap=3, loss=dict(pl_start_kimg=0, pl_interval=2))
    straight = run(tiny_config(tmp_path / 'a', digits16, kimg=0.024, **common))
    first = run(tiny_config(tmp_path / 'b', digits16, kimg=0.012, **common))
    resumed = run(tiny_config(tmp_path / 'b', digits16, kimg=0.024, resume='latest', **common))
    assert resumed == first  # --resume latest continues in the same run directory
    a, b = load_training_state(find_latest(straight)), load_training_state(find_latest(resumed))
    assert a.progress == b.progress and a.progress['cur_nimg'] == 24
    assert_same_state(a, b)
    assert torch.equal(a.extra['pl_mean'], b.extra['pl_mean']) and float(a.extra['pl_mean']) > 0


# -- (c) torchrun -----------------------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def test_two_torchrun_processes_match_one_process_with_the_same_chunks(tmp_path, digits16):
    """2 ranks x 1 chunk of 2 == 1 process x 2 chunks of 2 (same global batch 4): BatchNorm sees the same chunks,
    the data order and every random stream depend on the global chunk index. Parameters and optimizer states
    agree bit for bit; only the per-rank w_avg EMA (used for truncation) and BatchNorm running stats differ."""
    args = [str(ROOT / 'train.py'), '--data', str(digits16), '--kimg', '0.012', '--tick', '0.012', '--snap', '1',
            '--batch-gpu', '2', *TINY_ARGS]
    env = {**os.environ, 'OMP_NUM_THREADS': '1'}
    torchrun = [sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node', '2', '--master_port',
                str(free_port())]
    multi = subprocess.run([*torchrun, *args, '--outdir', str(tmp_path / 'multi'), '--gpus', '2'], env=env,
                           capture_output=True, text=True, timeout=300)
    assert multi.returncode == 0, multi.stderr[-3000:]
    single = subprocess.run([sys.executable, *args, '--outdir', str(tmp_path / 'single'), '--gpus', '1'], env=env,
                            capture_output=True, text=True, timeout=300)
    assert single.returncode == 0, single.stderr[-3000:]
    (multi_dir,), (single_dir,) = (tmp_path / 'multi').iterdir(), (tmp_path / 'single').iterdir()
    assert 'batch 4 = 2 x 1 x 2' in multi.stdout and 'batch 4 = 1 x 2 x 2' in single.stdout
    a, b = load_training_state(find_latest(multi_dir)), load_training_state(find_latest(single_dir))
    assert a.progress['cur_nimg'] == b.progress['cur_nimg'] == 12
    assert_same_state(a, b, skip=('w_avg', 'running_mean', 'running_var', 'num_batches_tracked'))


# -- (d) superres -----------------------------------------------------------------------------------------------------
def test_superres_stage_trains_only_the_head(tmp_path, stem_run, digits32):
    snap = stem_run / 'network-snapshot-000000_016.safetensors'
    cfg = tiny_config(tmp_path, digits32, superres=True, path_stem=str(snap), head_layers=3, up_factor=2,
                      kimg=0.008, tick=0.008, snap=1)
    assert cfg.loss.pl_weight == 0 and cfg.superres.path_stem == str(snap)
    run_dir = run(cfg)
    st = load_training_state(find_latest(run_dir))
    stem = load_generator(snap).state_dict()
    torch.manual_seed(cfg.run.seed)  # the initial superres G, built as the loop builds it
    from san_ext.networks import SuperresGenerator
    G0 = SuperresGenerator(load_generator(snap), head_layers=3, up_factor=2)
    trained = st.modules['G']
    head = [k for k in trained if any(k.startswith(f'synthesis.{n}.') for n in G0.head_layer_names)]
    frozen = [k for k in trained if k.startswith(('mapping.', 'synthesis.input.'))
              or any(k.startswith(f'synthesis.{n}.') for n in G0.stem_layer_names)]
    assert head and frozen and len(head) + len(frozen) == len(trained)
    params = dict(G0.named_parameters())
    differ = [k for k in frozen if k in stem and not torch.equal(trained[k], stem[k])]
    assert differ == ['mapping.w_avg']  # the class centres still track w (a buffer, as upstream)
    changed = [k for k in head if k in params and not torch.equal(trained[k], params[k].detach())]
    assert changed and all(k.endswith(('weight', 'bias')) for k in changed)
    assert len(st.optimizers['G']['state']) == sum(p.requires_grad for p in G0.parameters())
    assert load_generator(find_latest(run_dir)).img_resolution == 32


# -- (e) NaN guard ----------------------------------------------------------------------------------------------------
def test_non_finite_loss_stops_naming_step_phase_and_last_checkpoint(tmp_path, digits16, monkeypatch):
    real_d_real = ProjectedGANLoss.d_real

    def poisoned(self, img, c, cur_nimg, generator=None, **kw):
        out = real_d_real(self, img, c, cur_nimg, generator, **kw)
        return PhaseLoss(out.loss * float('nan'), out.stats) if cur_nimg >= 8 else out

    monkeypatch.setattr(ProjectedGANLoss, 'd_real', poisoned)
    cfg = tiny_config(tmp_path, digits16, kimg=0.02, tick=0.004, snap=1)
    with pytest.raises(NonFiniteLossError) as info:
        run(cfg)
    msg = str(info.value)
    assert 'D loss is nan' in msg and 'step 2' in msg and 'cur_nimg=8' in msg
    assert 'training-state-000000_008.safetensors' in msg
    (run_dir,) = tmp_path.iterdir()
    assert load_training_state(find_latest(run_dir)).progress['cur_nimg'] == 8  # the last good state is intact


# -- torch.backends switches --------------------------------------------------------------------------------------
def _backend_flags() -> tuple[bool, bool, bool]:
    return torch.backends.cudnn.benchmark, torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32


def _set_backend_flags(flags: tuple[bool, bool, bool]) -> None:
    torch.backends.cudnn.benchmark, torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = flags


def test_run_restores_the_callers_torch_backends_switches_on_return_and_on_error(tmp_path, digits16, monkeypatch):
    """Training runs with cudnn autotuning on and TF32 off (as upstream); afterwards, finished or failed, the caller
    has its own values back."""
    from san_ext.training import loop

    before, mine, during = _backend_flags(), (False, True, True), []
    real_step = loop._train_step
    monkeypatch.setattr(loop, '_train_step', lambda t, *a: (during.append(_backend_flags()), real_step(t, *a)))
    _set_backend_flags(mine)
    try:
        run(tiny_config(tmp_path / 'ok', digits16, kimg=0.004, tick=0.004))
        assert _backend_flags() == mine
        monkeypatch.setattr(loop, '_train_step', lambda t, *a: (_ for _ in ()).throw(RuntimeError('step failed')))
        with pytest.raises(RuntimeError, match='step failed'):
            run(tiny_config(tmp_path / 'fails', digits16, kimg=0.004, tick=0.004))
        assert _backend_flags() == mine
    finally:
        _set_backend_flags(before)
    assert during and set(during) == {(True, False, False)}


# -- metrics hook -----------------------------------------------------------------------------------------------------
def test_metrics_at_snapshots_write_results_and_best_model(tmp_path, digits16, monkeypatch):
    """A tiny registered metric (FID on 8 random-projection features) runs at each snapshot."""
    from san_ext import metrics

    def extractor(**kw):
        torch.manual_seed(0)
        return metrics.CallableExtractor(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 16 * 16, 8)),
                                         'training_test_features', 8)

    monkeypatch.setenv('SAN_EXT_CACHE', str(tmp_path / 'cache'))
    metrics.register_extractor('training_test_features', extractor)
    metrics.register_metric(metrics.MetricSpec('training_test_fid', 'fid', 'training_test_features', num_gen=16,
                                               max_ref=32))
    try:
        run_dir = run(tiny_config(tmp_path / 'runs', digits16, kimg=0.008, tick=0.004, snap=1,
                                  metrics=('training_test_fid',)))
    finally:  # the global registries as they were
        metrics.unregister_metric('training_test_fid')
        metrics.unregister_extractor('training_test_features')
    lines = [json.loads(x) for x in (run_dir / 'metric-training_test_fid.jsonl').read_text().splitlines()]
    assert len(lines) == 2 and all(np.isfinite(x['results']['training_test_fid']) for x in lines)
    assert lines[0]['network'] == 'network-snapshot-000000_004.safetensors'
    best = json.loads((run_dir / 'best_model.json').read_text())['extra']
    assert best['value'] == min(x['results']['training_test_fid'] for x in lines)
    assert load_generator(run_dir / 'best_model.safetensors').img_resolution == 16


# -- (f) CLI validation -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize('extra,flag,words', [
    (['--batch', '6', '--batch-gpu', '4'], '--batch', 'multiple of --gpus x --batch-gpu'),
    (['--superres'], '--superres', 'needs --path_stem'),
    (['--metrics', 'no_such_metric'], '--metrics', '--metrics none'),
    (['--cls_weight', '2', '--cond', 'false'], '--cls_weight', 'add --cond'),
])
def test_cli_rejects_bad_options_naming_the_flag(tmp_path, digits16, train_cli, extra, flag, words):
    args = ['--outdir', str(tmp_path), '--data', str(digits16), *TINY_ARGS, *extra]
    res = CliRunner().invoke(train_cli, args)
    assert res.exit_code != 0 and f'{flag}:' in res.output and words in res.output, res.output
    assert not list(tmp_path.iterdir())  # nothing was created


def test_cli_rejects_data_that_does_not_fit(tmp_path, stem_run, digits32, train_cli):
    runner = CliRunner()
    base = ['--outdir', str(tmp_path / 'o'), *TINY_ARGS]
    snap = str(stem_run / 'network-snapshot-000000_016.safetensors')
    res = runner.invoke(train_cli, [*base, '--data', str(digits32), '--superres', '--path_stem', snap,
                                    '--up_factor', '4'])
    assert res.exit_code != 0 and '--up_factor:' in res.output and '--up_factor 2' in res.output, res.output
    unlabelled = write_zip(tmp_path / 'nolabels.zip', 8, 16, labels=False)
    res = runner.invoke(train_cli, [*base, '--data', str(unlabelled)])
    assert res.exit_code != 0 and '--cond:' in res.output and 'dataset.json' in res.output, res.output
    tiny = write_zip(tmp_path / 'tiny4.zip', 8, 4, labels=True)
    res = runner.invoke(train_cli, [*base, '--data', str(tiny)])
    assert res.exit_code != 0 and '--data:' in res.output and 'resolution 4 is not supported' in res.output
    res = runner.invoke(train_cli, [*base, '--data', str(digits32), '-n'])
    assert res.exit_code == 0 and from_json(res.output).G.img_resolution == 32  # --dry-run prints the config


# -- loss and data units ----------------------------------------------------------------------------------------------
def test_blur_is_a_normalised_gaussian_that_fades_out():
    taps = gaussian_taps(2.0)
    assert len(taps) == 2 * round(3 * 2.0) + 1 and int(taps.argmax()) == 6
    assert torch.allclose(taps / taps.sum(), torch.exp(-torch.arange(-6., 7.) ** 2 / 8) / torch.exp(
        -torch.arange(-6., 7.) ** 2 / 8).sum())
    img = torch.ones(1, 3, 32, 32)
    assert torch.allclose(blur(img, 2.0)[..., 8:24, 8:24], img[..., 8:24, 8:24])  # mean-preserving inside
    assert blur(img, 0.1) is img
    loss = ProjectedGANLoss(LossConfig(), None, None)
    assert [loss.blur_sigma(n) for n in (0, 150_000, 300_000, 10 ** 6)] == [2.0, 1.0, 0.0, 0.0]


def tiny_nets(san: bool = True):
    torch.manual_seed(0)
    G = Generator(GeneratorConfig(img_resolution=16, c_dim=3, channel_base=512, channel_max=32, num_layers=4))
    D = ProjectedDiscriminator(DiscriminatorConfig(backbones=('tf_efficientnet_lite0',), c_dim=3, img_resolution=16,
                                                   san=san, pretrained=False, interp_size=128))
    return G, D


@pytest.mark.parametrize('name', ['san', *losses.list_losses()])
def test_every_loss_gives_finite_phase_losses_and_gradients(name):
    san = name == 'san'
    G, D = tiny_nets(san)
    loss = ProjectedGANLoss(LossConfig(name='hinge' if san else name, san=san), G, D)
    z, c, gen = torch.randn(2, G.z_dim), torch.eye(3)[:2], torch.Generator().manual_seed(0)
    real = torch.rand(2, 3, 16, 16) * 2 - 1
    phases = ((loss.d_pair(z, c, real, c, 0, gen),) if loss.gan.paired else
              (loss.d_fake(z, c, 0, gen), loss.d_real(real, c, 0, gen)))
    for out in phases:
        assert out.loss.ndim == 0 and torch.isfinite(out.loss)
        out.loss.backward()
    assert all(p.grad is not None for p in D.trainable_parameters())
    g = loss.g_main(z, c, 0, gen, real, c)
    g.loss.backward()
    assert torch.isfinite(g.loss) and G.mapping.fc0.weight.grad is not None
    mean = ProjectedGANLoss(LossConfig(name='hinge' if san else name, san=san, reduction='mean'), G, D)
    with frozen_spectral_norm(D):  # the same D twice (no power iteration in between)
        summed = loss.g_main(z, c, 0, torch.Generator().manual_seed(0), real, c).loss
        averaged = mean.g_main(z, c, 0, torch.Generator().manual_seed(0), real, c).loss
    assert torch.allclose(averaged * 2, summed, rtol=1e-5)  # 2 images x 1 backbone


def test_classifier_guidance_adds_weighted_cross_entropy():
    G, D = tiny_nets()
    classifier = build_classifier('test_efficientnet', pretrained=False)  # tiny timm model, random weights
    plain = ProjectedGANLoss(LossConfig(), G, D)
    guided = ProjectedGANLoss(LossConfig(cls_weight=2.0), G, D, classifier=classifier)
    z, c = torch.randn(2, G.z_dim), torch.eye(3)[1:]
    with frozen_spectral_norm(D):
        a = plain.g_main(z, c, 0, torch.Generator().manual_seed(0))
        b = guided.g_main(z, c, 0, torch.Generator().manual_seed(0))
    ce = b.stats['Loss/G/cls']
    assert ce.shape == (2,) and torch.allclose(b.loss, a.loss + 2.0 * ce.mean())
    b.loss.backward()
    assert G.mapping.fc0.weight.grad is not None and all(p.grad is None for p in classifier.parameters())
    with pytest.raises(ClassifierError, match='--cls_weight 0'):
        build_classifier('no_such_timm_model')


def test_optimizer_and_ema_settings_follow_the_recipe():
    optim = OptimConfig()
    g, d = optim.adam_kwargs('G'), optim.adam_kwargs('D')
    assert g['lr'] == pytest.approx(0.002) and g['betas'] == (0.0, pytest.approx(0.99 ** 0.8))
    assert d['lr'] == pytest.approx(0.002 * 16 / 17) and d['betas'] == (0.0, pytest.approx(0.99 ** (16 / 17)))
    assert optim.ema_nimg(batch=256, cur_nimg=10 ** 7) == pytest.approx(80_000)  # batch * 10 / 32 kimg
    assert optim.ema_nimg(batch=256, cur_nimg=100_000) == pytest.approx(5_000)  # ramp-up: 5% of images seen
