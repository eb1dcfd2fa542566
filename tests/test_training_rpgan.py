"""RpGAN and R1/R2 in the projected-GAN phases (san_ext.training.loss), against by-hand and scipy computations.

The stand-in D of test_critic_score is linear in the (blurred) pixels, so D's per-image score has a constant gradient
v_blurred = blur^T v = blur(v) (the Gaussian is symmetric and zero-padded): R1 of every image is |blur(v)|^2, which
scipy's gaussian_filter computes independently of our blur.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter
from test_critic_score import C_DIM, CUR_NIMG, LAMBDA, RES, LinearG, TwoBackboneD

from san_ext import critic_score, losses
from san_ext.critic_score import ScoreSettings, blur, blur_sigma
from san_ext.training.config import LossConfig
from san_ext.training.loss import ProjectedGANLoss


@pytest.fixture()
def batch():
    g = torch.Generator().manual_seed(2)
    z, c = torch.randn(4, 4, generator=g), torch.eye(C_DIM)[torch.tensor([0, 2, 1, 2])]
    real = torch.rand(4, 3, RES, RES, generator=g) * 2 - 1
    return z, c, real


def _outs(D, img, c, flg_train):
    x = blur(img, blur_sigma(ScoreSettings(), CUR_NIMG))
    return list(D.forward_per_backbone(x, c, flg_train=flg_train).values())


def _reduce(values, reduction):
    pairs = [v[i].mean() for v in values for i in range(v.shape[0])]
    total = torch.stack(pairs).sum()
    return total if reduction == 'sum' else total / len(pairs)


@pytest.mark.parametrize('reduction', ['sum', 'mean'])
@pytest.mark.parametrize('san', [False, True], ids=['plain', 'san'])
def test_rpgan_phases_pair_real_i_with_fake_i_logit_by_logit(san, reduction, batch):
    z, c, real = batch
    G, D = LinearG(), TwoBackboneD()
    loss = ProjectedGANLoss(LossConfig(name='rpgan', san=san, dir_weight=LAMBDA, reduction=reduction), G, D)
    gan = losses.get('rpgan', san=san, dir_weight=LAMBDA)
    c_real = torch.eye(C_DIM)[torch.tensor([1, 1, 0, 2])]
    with torch.no_grad():
        fake = G(z, c)
        want_d = _reduce([gan.d_pair(r, f) for r, f in zip(_outs(D, real, c_real, san), _outs(D, fake, c, san))],
                         reduction)
        want_g = _reduce([gan.g(f, real=r) for r, f in zip(_outs(D, real, c_real, False), _outs(D, fake, c, False))],
                         reduction)
    torch.testing.assert_close(loss.d_pair(z, c, real, c_real, CUR_NIMG).loss.detach(), want_d, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(loss.g_main(z, c, CUR_NIMG, None, real, c_real).loss.detach(), want_g,
                               rtol=1e-5, atol=1e-6)
    # teeth: pairing with another order of the reals changes the value
    shuffled = loss.d_pair(z, c, real.flip(0), c_real.flip(0), CUR_NIMG).loss.detach()
    assert not torch.isclose(shuffled, want_d)


def test_rpgan_phases_refuse_missing_or_mismatched_reals(batch):
    z, c, real = batch
    loss = ProjectedGANLoss(LossConfig(name='rpgan', san=False), LinearG(), TwoBackboneD())
    with pytest.raises(ValueError, match='pass real_img'):
        loss.g_main(z, c, CUR_NIMG)
    with pytest.raises(ValueError, match='3 latents for 4 images'):
        loss.d_pair(z[:3], c[:3], real, c, CUR_NIMG)


def _r1_closed_form(D, reduction):
    """|grad_x score|^2 of the linear stand-in D: the blurred sum (sum) or mean (mean) over backbones of each
    backbone's mean weight column, as an image; scipy blurs it."""
    cols = [w.detach().mean(dim=1) for w in D.w]  # per backbone [3*RES*RES]: d/dx of the mean logit
    v = sum(cols) if reduction == 'sum' else sum(cols) / len(cols)
    sigma = blur_sigma(ScoreSettings(), CUR_NIMG)
    g = gaussian_filter(v.view(3, RES, RES).double().numpy(), sigma=(0, sigma, sigma), mode='constant', truncate=3.0)
    return float((g ** 2).sum())


@pytest.mark.parametrize('reduction', ['sum', 'mean'])
@pytest.mark.parametrize('san', [False, True], ids=['plain', 'san'])
def test_r1_and_r2_add_gamma_half_the_squared_score_gradient(san, reduction, batch):
    z, c, real = batch
    G, D = LinearG(), TwoBackboneD()
    cfg = LossConfig(name='hinge', san=san, reduction=reduction)
    loss = ProjectedGANLoss(cfg, G, D)
    penalty = _r1_closed_form(D, reduction)  # the same for every image: D is linear
    per_images = 4 if reduction == 'sum' else 1
    for gamma in (0.5, 3.0):
        with_r1 = loss.d_real(real, c, CUR_NIMG, r1_gamma=gamma)
        without = loss.d_real(real, c, CUR_NIMG)
        assert (with_r1.loss - without.loss).item() == pytest.approx(per_images * gamma / 2 * penalty, rel=1e-4)
        np.testing.assert_allclose(with_r1.stats['Loss/D/r1'].numpy(), penalty, rtol=1e-4)
        with_r2 = loss.d_fake(z, c, CUR_NIMG, r2_gamma=gamma)
        assert (with_r2.loss - loss.d_fake(z, c, CUR_NIMG).loss).item() == pytest.approx(
            per_images * gamma / 2 * penalty, rel=1e-4)


def test_penalty_differentiates_fun_so_it_never_reaches_the_direction_weights(batch):
    # SAN: R1 on the fun logit. The stand-in's dir comes from weights v, fun from w: the penalty's gradient must reach
    # w only (for a real SAN head: features and scale, never omega).
    z, c, real = batch
    D = TwoBackboneD()
    loss = ProjectedGANLoss(LossConfig(name='hinge', san=True), LinearG(), D)
    out = loss.d_real(real, c, CUR_NIMG, r1_gamma=1.0)
    term = out.loss - loss.d_real(real, c, CUR_NIMG).loss
    grads = torch.autograd.grad(term, [*D.w, *D.v], allow_unused=True)
    assert all(g is not None and g.abs().sum() > 0 for g in grads[:2])
    assert all(g is None or g.abs().sum() == 0 for g in grads[2:])


def test_penalty_gammas_follow_cosine_decay_and_lazy_steps():
    cfg = LossConfig(name='rpgan', san=False, r1_gamma=2.0, r2_gamma=1.0, gamma_end=0.2, reg_every=4)
    loss = ProjectedGANLoss(cfg, None, None, total_nimg=1000)
    assert loss.penalty_gammas(0, 0) == pytest.approx((8.0, 4.0))  # start: gamma x k on a regularised step
    assert loss.penalty_gammas(0, 1) == (0.0, 0.0) and loss.penalty_gammas(0, 3) == (0.0, 0.0)
    mid = 0.1 + 0.9 * 0.5 * (1 + np.cos(np.pi * 0.5))  # factor at half the run: from 1 down to 0.2 / 2
    assert loss.penalty_gammas(500, 4) == pytest.approx((4 * 2.0 * mid, 4 * 1.0 * mid))
    assert loss.penalty_gammas(1000, 8) == pytest.approx((4 * 0.2, 4 * 0.1))  # the larger gamma ends at gamma_end
    # lazy k = 4 equals 4x the penalty every 4th step: the sum over 4 steps matches 4 eager steps of 1x
    eager = ProjectedGANLoss(LossConfig(name='rpgan', san=False, r1_gamma=2.0, r2_gamma=1.0), None, None)
    lazy = ProjectedGANLoss(LossConfig(name='rpgan', san=False, r1_gamma=2.0, r2_gamma=1.0, reg_every=4), None, None)
    assert sum(lazy.penalty_gammas(0, s)[0] for s in range(8)) == sum(eager.penalty_gammas(0, s)[0] for s in range(8))
    assert ProjectedGANLoss(LossConfig(), None, None).penalty_gammas(0, 0) == (0.0, 0.0)


def test_config_refuses_gamma_end_without_a_penalty():
    with pytest.raises(ValueError, match='gamma_end decays'):
        LossConfig(gamma_end=0.1)
    with pytest.raises(ValueError, match='r1_gamma must be a finite number'):
        LossConfig(r1_gamma=float('nan'))
    with pytest.raises(ValueError, match='reg_every'):
        LossConfig(reg_every=0)


def test_score_used_by_the_penalty_is_critic_score(batch):
    # The penalty differentiates critic_score's per-image score (the one DOT and the metrics read).
    _, c, real = batch
    D = TwoBackboneD()
    x = real.clone().requires_grad_(True)
    sigma = blur_sigma(ScoreSettings(), CUR_NIMG)
    (g,) = torch.autograd.grad(critic_score.score(D, x, c, sigma=sigma).sum(), x)
    loss = ProjectedGANLoss(LossConfig(name='hinge', san=False), LinearG(), D)
    r1 = loss.d_real(real, c, CUR_NIMG, r1_gamma=1.0).stats['Loss/D/r1']
    torch.testing.assert_close(r1, g.square().flatten(1).sum(1))


# -- train.py end to end ---------------------------------------------------------------------------------------------
@pytest.mark.usefixtures('one_thread')
# rpgan-san runs in CI (every paired path: D pair phase, fresh reals, R1 and R2 on fun); plain rpgan differs only in
# D's heads and costs another 1-2 minutes, so it runs with -m slow.
@pytest.mark.parametrize('spec', [pytest.param('rpgan', marks=pytest.mark.slow), 'rpgan-san'])
def test_train_py_runs_rpgan_with_r1_r2_and_resumes_exactly(spec, tmp_path, digits16, train_cli):
    """6 steps straight == 3 steps + --resume latest + 3 steps, through the CLI, with R1 and R2 on (lazily, every
    2nd step), so the paired D phase, the paired G phase and both penalties are all exercised."""
    from click.testing import CliRunner
    from test_training import TINY_ARGS, assert_same_state

    from san_ext.checkpoint import find_latest, load_training_state
    from san_ext.training import from_json

    def train(outdir, kimg, *extra):
        args = ['--outdir', str(outdir), '--data', str(digits16), '--kimg', kimg, '--tick', '0.004', '--snap', '3',
                '--batch-gpu', '2', '--loss', spec, '--r1-gamma', '1', '--r2-gamma', '0.5', '--reg-every', '2',
                *TINY_ARGS, *extra]
        res = CliRunner().invoke(train_cli, args, catch_exceptions=False)
        assert res.exit_code == 0, res.output
        (run_dir,) = outdir.iterdir()
        return run_dir

    straight = train(tmp_path / 'a', '0.024')
    train(tmp_path / 'b', '0.012')
    resumed = train(tmp_path / 'b', '0.024', '--resume', 'latest')
    a, b = load_training_state(find_latest(straight)), load_training_state(find_latest(resumed))
    assert a.progress == b.progress and a.progress['cur_nimg'] == 24
    assert_same_state(a, b)
    cfg = from_json((straight / 'config.json').read_text())
    assert (cfg.loss.name, cfg.loss.san, cfg.loss.r1_gamma, cfg.loss.r2_gamma, cfg.loss.reg_every) == \
        ('rpgan', spec.endswith('-san'), 1.0, 0.5, 2)
    ticks = [json.loads(line) for line in (straight / 'stats.jsonl').read_text().splitlines()]
    assert all(np.isfinite(t['Loss/D/pair']) for t in ticks)
    penalised = [t for t in ticks if 'Loss/D/r1' in t]  # one step per tick; R1/R2 on every 2nd step
    assert len(penalised) == 3 and all(np.isfinite(t['Loss/D/r1']) and np.isfinite(t['Loss/D/r2']) for t in penalised)


@pytest.mark.usefixtures('one_thread')
def test_g_phase_scores_fakes_against_a_fresh_real_batch(tmp_path, digits16, monkeypatch):
    """The paired G phase gets dataset images other than the D phase's chunk (R3GAN draws a fresh batch for G)."""
    from test_training import tiny_config

    from san_ext.data.dataset import open_dataset
    from san_ext.training.loop import run

    seen = {'g': [], 'd': []}
    g_main, d_pair = ProjectedGANLoss.g_main, ProjectedGANLoss.d_pair

    def spy_g(self, z, c, cur_nimg, generator=None, real_img=None, real_c=None):
        seen['g'].append(real_img.clone())
        return g_main(self, z, c, cur_nimg, generator, real_img, real_c)

    def spy_d(self, z, c, real_img, *args, **kw):
        seen['d'].append(real_img.clone())
        return d_pair(self, z, c, real_img, *args, **kw)

    monkeypatch.setattr(ProjectedGANLoss, 'g_main', spy_g)
    monkeypatch.setattr(ProjectedGANLoss, 'd_pair', spy_d)
    run(tiny_config(tmp_path, digits16, kimg=0.008, tick=0.008, snap=1, loss=dict(name='rpgan')))  # rpgan-san
    assert len(seen['g']) == len(seen['d']) == 2 and all(x.shape == (4, 3, 16, 16) for x in seen['g'])
    assert not any(torch.equal(g, d) for g, d in zip(seen['g'], seen['d']))
    data = open_dataset(digits16)
    pool = torch.stack([torch.from_numpy(data[i][0]) for i in range(len(data))]).float() / 127.5 - 1
    for img in torch.cat(seen['g']):  # every G-phase real is an image of the data set, as the loop scales it
        assert (pool - img).abs().flatten(1).amax(1).min() < 1e-6
