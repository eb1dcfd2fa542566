"""gen_images.py and calc_metrics.py with latent DOT (--dot-*), end to end on a tiny run, CPU, offline.

The run is made as the training tests make theirs (tiny widths, one random-weight backbone, the built-in digits at
16x16, conditional) but written straight through save_snapshot/save_training_state instead of training steps: DOT
needs a G and a D with the run's architecture, not trained ones.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import timm
import torch
from click.testing import CliRunner
from scripts import load_script  # tests/scripts.py
from torch import nn

from san_ext.checkpoint import (
    CheckpointError,
    critic_settings,
    load_discriminator,
    read_sidecar,
    save_snapshot,
    save_training_state,
)
from san_ext.critic_score import ScoreSettings
from san_ext.data import make_digits_dataset
from san_ext.dot import ProjectedCritic
from san_ext.dot.loading import check_critic_fits, find_critic_state, load_critic
from san_ext.metrics import CallableExtractor, register_extractor
from san_ext.training.build import build_networks, build_optimizers
from san_ext.training.loss import ProjectedGANLoss
from san_ext.training.options import TrainOptions, build_config

ROOT = Path(__file__).resolve().parents[1]
TINY_OPTS = dict(cond=True, batch=4, cbase=512, cmax=32, syn_layers=4, backbones=('tf_efficientnet_lite0',),
                 pretrained=False, interp_size=128, metrics=('none',), workers=0, device='cpu')
EXTRACTOR = 'test-dot-conv'
DOT = ['--dot-steps', '2', '--dot-pairs', '2', '--dot-lr', '0.05']

pytestmark = pytest.mark.usefixtures('one_thread')


@pytest.fixture(scope='module')
def run(tmp_path_factory) -> dict:
    """A tiny conditional run at 2 kimg: snapshot + training state (its sidecar claims pretrained backbones, as a
    real run's would), the data, and the D that was saved (to compare the rebuilt one with)."""
    tmp = tmp_path_factory.mktemp('dot')
    data = make_digits_dataset(tmp / 'digits16.zip', resolution=16)
    cfg = build_config(TrainOptions(outdir=str(tmp / 'runs'), data=str(data), **TINY_OPTS))
    G, D, G_ema = build_networks(cfg, torch.device('cpu'))
    opt_G, opt_D = build_optimizers(cfg, G, D)
    cfg_dict = cfg.to_dict()
    cfg_dict['D']['pretrained'] = True  # a real run's config: rebuilding must still not download
    run_dir = tmp / 'run'
    snapshot = save_snapshot(run_dir, G_ema, cfg_dict, 2000)
    state = save_training_state(run_dir, G=G, D=D, G_ema=G_ema, opt_G=opt_G, opt_D=opt_D, config=cfg_dict,
                                progress={'cur_nimg': 2000})
    return dict(data=data, snapshot=snapshot, state=state, D=D.eval(), tmp=tmp, cfg=cfg, cfg_dict=cfg_dict,
                nets=dict(G=G, D=D, G_ema=G_ema, opt_G=opt_G, opt_D=opt_D))


def images(outdir: Path) -> dict[str, np.ndarray]:
    return {p.name: np.asarray(PIL.Image.open(p)).astype(np.int16) for p in sorted(outdir.glob('seed*.png'))}


def test_rebuilt_discriminator_equals_saved_one_without_downloads(run, monkeypatch):
    create = timm.create_model

    def offline_create(name, pretrained=False, **kw):
        assert not pretrained, 'load_discriminator must not ask timm for pretrained weights'
        return create(name, pretrained=False, **kw)

    monkeypatch.setattr(timm, 'create_model', offline_create)
    D = load_discriminator(run['state'])
    assert not D.training and not any(p.requires_grad for p in D.parameters())
    img, c = torch.rand(2, 3, 16, 16) * 2 - 1, torch.eye(10)[:2]
    with torch.no_grad():
        assert torch.equal(D(img, c), run['D'](img, c))
    critic = load_critic(run['state'])  # a sidecar without critic settings: they come from config.loss
    assert read_sidecar(run['state'])['critic'] is None
    assert isinstance(critic, ProjectedCritic) and critic.reduction == 'sum'
    assert critic.blur_sigma == pytest.approx(2.0 * (1 - 2000 / 300e3))  # the loss's input blur at 2 kimg
    with pytest.raises(CheckpointError, match='holds only G_ema'):
        load_discriminator(run['snapshot'])


def _state(run, run_dir: Path, cur_nimg: int, critic=None, cfg_dict=None) -> Path:
    return save_training_state(run_dir, **run['nets'], config=cfg_dict or run['cfg_dict'],
                               progress={'cur_nimg': cur_nimg}, critic=critic)


def test_critic_settings_travel_in_the_state_sidecar(run, tmp_path):
    """DOT reads the blur schedule and reduction from the sidecar's ``critic``, not from the training config."""
    odd = ScoreSettings(blur_init_sigma=1.5, blur_fade_kimg=10.0, reduction='mean')
    state = _state(run, tmp_path, 4000, critic=odd)  # config.loss says 2.0 / 300 / sum
    assert read_sidecar(state)['critic'] == odd.to_dict() and critic_settings(state) == odd
    critic = load_critic(state)
    assert critic.reduction == 'mean' and critic.blur_sigma == pytest.approx(1.5 * (1 - 4 / 10))


def test_older_sidecars_without_critic_settings_fall_back_to_the_loss_config(run, tmp_path):
    loss = {k: v for k, v in run['cfg_dict']['loss'].items() if k != 'blur_fade_kimg'}
    state = _state(run, tmp_path, 2000, cfg_dict={**run['cfg_dict'], 'loss': {**loss, 'blur_init_sigma': 1.0,
                                                                             'reduction': 'mean'}})
    side = state.with_suffix('.json')
    record = json.loads(side.read_text())
    del record['critic']  # as written before the field existed
    side.write_text(json.dumps(record))
    assert critic_settings(state) == ScoreSettings(1.0, 300.0, 'mean')  # a missing key: StyleGAN-XL's default
    del record['config']
    side.write_text(json.dumps(record))
    with pytest.raises(CheckpointError, match='neither critic settings nor a run config'):
        critic_settings(state)


@pytest.mark.parametrize('reduction', ['sum', 'mean'])
def test_dot_critic_score_is_the_training_loss_score(run, tmp_path, reduction):
    """The critic of a state written at 100 kimg (input blur sigma 4/3) reads D as the training loss did then: the
    hinge G loss on the same images is minus the sum (or mean) of the critic's scores, for the same D."""
    cur_nimg = 100_000
    loss_cfg = dataclasses.replace(run['cfg'].loss, reduction=reduction)
    critic = load_critic(_state(run, tmp_path, cur_nimg, critic=ScoreSettings.from_config(loss_cfg)))
    img = torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
    c = torch.eye(10)[[1, 4, 7]]
    fixed = lambda z, c, update_emas=False: img  # noqa: E731  (G's images, fixed)
    loss = ProjectedGANLoss(dataclasses.replace(loss_cfg, name='hinge'), fixed, run['D'])
    with torch.no_grad():
        scores = critic(img, c)
        g = loss.g_main(torch.zeros(3, 1), c, cur_nimg).loss
    assert critic.blur_sigma > 1 and scores.shape == (3,)
    torch.testing.assert_close(g, -(scores.sum() if reduction == 'sum' else scores.mean()), rtol=1e-5, atol=1e-5)


def test_critic_state_is_found_beside_the_snapshot(run, tmp_path):
    assert find_critic_state(run['snapshot']) == run['state']  # same kimg
    assert find_critic_state(run['state']) == run['state']  # a training state is its own critic
    assert find_critic_state(run['snapshot'], run['state'].parent) == run['state']  # a run dir: its newest state
    lonely = tmp_path / 'network-snapshot-000002.safetensors'
    for suffix in ('.safetensors', '.json'):
        shutil.copy(run['snapshot'].with_suffix(suffix), lonely.with_suffix(suffix))
    with pytest.raises(FileNotFoundError, match='training-state-000002.safetensors.*--dot-critic'):
        find_critic_state(lonely)
    other = tmp_path / 'other' / 'network-snapshot-000007.safetensors'  # no same-kimg state: the newest one
    other.parent.mkdir()
    for path in (run['state'], run['snapshot']):
        for suffix in ('.safetensors', '.json'):
            target = other if path == run['snapshot'] else other.with_name(path.name)
            shutil.copy(path.with_suffix(suffix), target.with_suffix(suffix))
    assert find_critic_state(other) == other.with_name(run['state'].name)


def test_critic_must_fit_the_generator(run):
    critic = load_critic(run['state'])
    G = nn.Module()
    G.img_channels, G.img_resolution, G.c_dim = 3, 32, 10
    with pytest.raises(ValueError, match='takes 3x16x16 images.*makes 3x32x32'):
        check_critic_fits(G, critic)


def test_gen_images_with_dot_changes_images_and_keeps_truncation(run, tmp_path):
    cli = load_script('gen_images').main
    base = ['--network', str(run['snapshot']), '--seeds', '0-2', '--class', '3', '--trunc', '0.7', '--device', 'cpu']
    plain = CliRunner().invoke(cli, [*base, '--outdir', str(tmp_path / 'plain')], catch_exceptions=False)
    assert plain.exit_code == 0, plain.output
    res = CliRunner().invoke(cli, [*base, '--outdir', str(tmp_path / 'dot'), *DOT], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert 'latent DOT: 2 sgd steps' in res.output and run['state'].name in res.output
    a, b = images(tmp_path / 'plain'), images(tmp_path / 'dot')
    assert a.keys() == b.keys() and len(a) == 3
    assert all(np.abs(a[k] - b[k]).mean() > 0.1 for k in a), 'DOT did not change the images'
    # --dot-steps 0 is the plain path, bit for bit
    res = CliRunner().invoke(cli, [*base, '--outdir', str(tmp_path / 'zero'), '--dot-steps', '0'])
    assert res.exit_code == 0 and all(np.array_equal(a[k], v) for k, v in images(tmp_path / 'zero').items())


def test_gen_images_dot_errors(run, tmp_path):
    cli = load_script('gen_images').main
    lonely = tmp_path / 'alone' / 'network-snapshot-000002.safetensors'
    lonely.parent.mkdir()
    for suffix in ('.safetensors', '.json'):
        shutil.copy(run['snapshot'].with_suffix(suffix), lonely.with_suffix(suffix))
    base = ['--seeds', '0', '--class', '1', '--outdir', str(tmp_path / 'out'), '--device', 'cpu']
    res = CliRunner().invoke(cli, ['--network', str(lonely), *base, *DOT])
    assert res.exit_code == 1 and '--dot-critic' in res.output and 'training-state-000002.safetensors' in res.output
    res = CliRunner().invoke(cli, ['--network', str(run['snapshot']), *base, *DOT, '--dot-critic',
                                   str(run['snapshot'])])
    assert res.exit_code == 1 and 'holds only G_ema' in res.output
    res = CliRunner().invoke(cli, ['--network', str(run['snapshot']), *base, *DOT, '--dot-critic',
                                   str(tmp_path / 'nothere.safetensors')])
    assert res.exit_code == 1 and 'does not exist' in res.output
    for flag, value in (('--dot-lr', '0'), ('--dot-steps', '-1'), ('--dot-opt', 'rmsprop'), ('--dot-k', '0')):
        res = CliRunner().invoke(cli, ['--network', str(run['snapshot']), *base, flag, value])
        assert res.exit_code == 2 and flag in res.output, (flag, res.output)


def test_calc_metrics_fid_with_dot_is_one_flag(run, tmp_path, monkeypatch):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten())
    register_extractor(EXTRACTOR, lambda **kw: CallableExtractor(net, EXTRACTOR, 32).eval(), overwrite=True)
    cli = load_script('calc_metrics').main
    args = ['--network', str(run['snapshot']), '--data', str(run['data']), '--metrics', 'fid50k_full', '--num-gen',
            '12', '--max-ref', '12', '--extractor', EXTRACTOR, '--device', 'cpu', '--batch', '6', '--workers', '0',
            '--run-dir', str(tmp_path), '--no-progress', '--no-cache']
    for extra in ([], DOT):
        res = CliRunner().invoke(cli, [*args, *extra], catch_exceptions=False)
        assert res.exit_code == 0, res.output
    plain = json.loads((tmp_path / 'metric-fid50k_full.jsonl').read_text())
    dot = json.loads((tmp_path / 'metric-fid50k_full_dot.jsonl').read_text())
    assert plain['network'] == dot['network'] == str(run['snapshot']) and 'dot' not in plain
    settings = dot['dot']  # the DOT settings, as fields of their own
    assert (settings['steps'], settings['opt'], settings['lr'], settings['pairs']) == (2, 'sgd', 0.05, 2)
    assert settings['critic'].endswith(run['state'].name) and settings['k_eff_estimated']
    assert np.all(np.isfinite(settings['k_eff']))
    assert np.isfinite(dot['results']['fid50k_full'])
    assert dot['results']['fid50k_full'] != plain['results']['fid50k_full']
