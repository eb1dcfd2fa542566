"""SAN direction alignment per tick (``san_ext.training.alignment``): logged for SAN runs only, equal to a direct
``san_alignment`` call on the same blurred batches, and without effect on training (parameters, buffers, RNG).

CPU only, the tiny sizes of tests/test_training.py (conditional 16x16 digits, one random-weight backbone).
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest
import torch
from test_training import TINY_OPTS, assert_same_state, tiny_config  # tests/test_training.py

from san_ext import losses
from san_ext.checkpoint import critic_settings, find_latest, load_training_state, read_sidecar
from san_ext.critic_score import ScoreSettings, blur
from san_ext.data import make_digits_dataset
from san_ext.diagnostics import san_alignment
from san_ext.networks import DiscriminatorConfig, Generator, GeneratorConfig, ProjectedDiscriminator
from san_ext.training import alignment, loop
from san_ext.training.config import LossConfig
from san_ext.training.loss import ProjectedGANLoss, frozen_spectral_norm
from san_ext.training.options import TrainOptions, build_config

pytestmark = pytest.mark.usefixtures('one_thread')

HEADS = [f'SAN/alignment/tf_efficientnet_lite0/{i}' for i in range(4)]


@pytest.fixture(scope='module')
def digits16(tmp_path_factory) -> Path:
    return make_digits_dataset(tmp_path_factory.mktemp('data') / 'digits16.zip', resolution=16)


def ticks(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / 'stats.jsonl').read_text().splitlines()]


@pytest.fixture(scope='module')
def san_run(tmp_path_factory, digits16) -> Path:
    """2 steps of the tiny conditional SAN stem, one tick each (a measurement between the steps), states saved."""
    return loop.run(tiny_config(tmp_path_factory.mktemp('san'), digits16, kimg=0.008, tick=0.004, snap=1))


# -- the training loop ------------------------------------------------------------------------------------------------
def test_san_run_logs_one_alignment_per_head_and_their_mean_every_tick(san_run):
    records = ticks(san_run)
    assert len(records) == 2
    for rec in records:
        keys = sorted(k for k in rec if k.startswith('SAN/alignment/'))
        assert keys == sorted([*HEADS, 'SAN/alignment/mean'])
        values = [rec[k] for k in HEADS]
        assert all(-1 - 1e-6 <= v <= 1 + 1e-6 for v in values), values
        assert rec['SAN/alignment/mean'] == pytest.approx(sum(values) / len(values))
        assert 0 < rec['Timing/alignment_sec'] < rec['Timing/sec_per_tick'] * 10


def test_training_state_records_the_critic_settings_for_dot(san_run):
    """The loop writes how its loss read D (blur schedule, reduction) into the state's sidecar (san_ext.dot reads
    it there, without training code)."""
    state = find_latest(san_run)
    cfg = read_sidecar(state)['config']['loss']
    want = ScoreSettings(cfg['blur_init_sigma'], cfg['blur_fade_kimg'], cfg['reduction'])
    assert read_sidecar(state)['critic'] == want.to_dict() and critic_settings(state) == want


def test_alignment_reaches_tensorboard(san_run):
    accumulator = pytest.importorskip('tensorboard.backend.event_processing.event_accumulator')
    events = accumulator.EventAccumulator(str(san_run))
    events.Reload()
    tags = set(events.Tags()['scalars'])
    assert {*HEADS, 'SAN/alignment/mean', 'Timing/alignment_sec'} <= tags


def test_plain_loss_run_logs_no_alignment(tmp_path, digits16):
    cfg = build_config(TrainOptions(outdir=str(tmp_path), data=str(digits16), **{**TINY_OPTS, 'loss': 'hinge'},
                                    kimg=0.004, tick=0.004, snap=1))
    cfg = dataclasses.replace(cfg, run=dataclasses.replace(cfg.run, grid_cols=2))
    assert not cfg.loss.san and not cfg.D.san
    (rec,) = ticks(loop.run(cfg))
    assert 'Loss/D/loss' in rec
    assert not [k for k in rec if k.startswith('SAN/') or k == 'Timing/alignment_sec']


def test_measuring_leaves_the_training_trajectory_and_the_global_rng_unchanged(tmp_path, digits16, san_run,
                                                                             monkeypatch):
    """The same run with the measurement switched off ends in the same state bit for bit: G, D (buffers too),
    G_ema, both optimizers and the saved global RNG states."""
    monkeypatch.setattr(loop, '_alignment', lambda t: {})
    plain = loop.run(tiny_config(tmp_path, digits16, kimg=0.008, tick=0.004, snap=1))
    assert not [k for rec in ticks(plain) for k in rec if k.startswith('SAN/')]
    a, b = load_training_state(find_latest(san_run)), load_training_state(find_latest(plain))
    assert a.progress == b.progress and a.progress['cur_nimg'] == 8
    assert_same_state(a, b)
    assert torch.equal(a.rng['torch'], b.rng['torch'])


# -- the helper -------------------------------------------------------------------------------------------------------
def tiny_nets(c_dim: int):
    torch.manual_seed(0)
    G = Generator(GeneratorConfig(img_resolution=16, c_dim=c_dim, channel_base=512, channel_max=32, num_layers=4))
    D = ProjectedDiscriminator(DiscriminatorConfig(backbones=('tf_efficientnet_lite0',), c_dim=c_dim,
                                                   img_resolution=16, pretrained=False, interp_size=128))
    return G, D.train()


def batch(c_dim: int, n: int = 5):
    g = torch.Generator().manual_seed(1)
    img = torch.rand(n, 3, 16, 16, generator=g) * 2 - 1
    c = torch.eye(c_dim)[torch.arange(n) % c_dim] if c_dim else None
    return img, c


@pytest.mark.parametrize('name', ['hinge', 'nonsaturating'])
@pytest.mark.parametrize('c_dim', [0, 3])
def test_helper_equals_a_direct_call_on_the_blurred_batches(name, c_dim):
    """SANConv2d heads (unconditional) and SANEmbedding heads (conditional); the non-saturating loss has
    non-constant direction weights, so a measurement with another loss would differ."""
    G, D = tiny_nets(c_dim)
    loss = ProjectedGANLoss(LossConfig(name=name, san=True), G, D)
    img, c = batch(c_dim)
    cur_nimg = 100_000  # blur sigma 2 * (1 - 1/3)
    got = alignment.tick_alignment(G, D, loss, img, c, cur_nimg, torch.Generator().manual_seed(7), max_images=4)

    gen = torch.Generator().manual_seed(7)
    sigma = loss.blur_sigma(cur_nimg)
    cc = None if c is None else c[:4]
    with torch.no_grad():
        fake = G(torch.randn([4, G.z_dim], generator=gen), cc)
    with frozen_spectral_norm(D):
        want = san_alignment(D, blur(img[:4], sigma), blur(fake, sigma), cc, loss=losses.get(name), generator=gen)
    assert sigma == pytest.approx(4 / 3) and len(want) == 4
    assert {f'SAN/alignment/{alignment.head_name(k)}' for k in want} == set(HEADS)
    for k, v in want.items():
        assert got[f'SAN/alignment/{alignment.head_name(k)}'] == pytest.approx(v, abs=1e-6), k
    assert got['SAN/alignment/mean'] == pytest.approx(sum(want.values()) / 4, abs=1e-6)


def test_helper_touches_no_parameter_buffer_gradient_or_global_rng():
    G, D = tiny_nets(3)
    loss = ProjectedGANLoss(LossConfig(name='nonsaturating', san=True), G, D)
    img, c = batch(3)
    D.requires_grad_(False)  # as after the loop's D phase
    before = {k: v.clone() for k, v in [*D.state_dict().items(), *G.state_dict().items()]}
    modes = [m.training for m in D.modules()]
    rng = torch.get_rng_state()
    fields = alignment.tick_alignment(G, D, loss, img, c, 0, torch.Generator().manual_seed(0))
    assert all(math.isfinite(v) and -1 - 1e-6 <= v <= 1 + 1e-6 for v in fields.values())
    after = {k: v for k, v in [*D.state_dict().items(), *G.state_dict().items()]}
    assert [k for k in before if not torch.equal(before[k], after[k])] == []
    assert [m.training for m in D.modules()] == modes
    assert all(p.grad is None for p in [*D.parameters(), *G.parameters()])
    assert torch.equal(torch.get_rng_state(), rng)


def test_head_names_are_backbone_and_mini_disc():
    assert alignment.head_name('discriminators.deit_base_distilled_patch16_224.mini_discs.2.embed') == \
        'deit_base_distilled_patch16_224/2'
    assert alignment.head_name('discriminators.tf_efficientnet_lite0.mini_discs.0.last_layer') == \
        'tf_efficientnet_lite0/0'
    assert alignment.head_name('head.out') == 'head/out'
    assert alignment.alignment_fields({}) == {}
