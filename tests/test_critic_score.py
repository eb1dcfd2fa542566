"""D's score as the loss sees it (san_ext.critic_score) and every ProjectedGANLoss phase built on it.

The blur is checked against scipy; each phase against the registry loss applied, logit by logit, to a stand-in D's
per-backbone logits of the blurred input, reduced by hand here (sum or mean over images and backbones).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter
from torch import nn

from san_ext import critic_score, losses
from san_ext.critic_score import ScoreSettings, blur, blur_sigma, gaussian_taps
from san_ext.training.config import LossConfig
from san_ext.training.loss import ProjectedGANLoss

RES, C_DIM, LAMBDA = 8, 3, 0.7
CUR_NIMG = 100_000  # blur sigma 2 * (1 - 100/300) = 4/3 with the default schedule


# -- blur, schedule, settings -----------------------------------------------------------------------------------------
@pytest.mark.parametrize('sigma', [0.5, 1.0, 4 / 3, 2.0])
def test_blur_is_scipys_gaussian_with_zero_borders(sigma):
    img = torch.randn(2, 3, 16, 12, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    # scipy's radius is int(truncate * sigma + 0.5): the same 2 * round(3 sigma) + 1 taps
    want = gaussian_filter(img.numpy(), sigma=(0, 0, sigma, sigma), mode='constant', cval=0.0, truncate=3.0)
    np.testing.assert_allclose(blur(img, sigma).numpy(), want, rtol=1e-6, atol=1e-6)
    assert len(gaussian_taps(sigma)) == 2 * round(3 * sigma) + 1
    assert gaussian_taps(sigma).sum().item() == pytest.approx(1.0, rel=1e-6)


def test_blur_is_the_identity_below_one_tap_and_keeps_dtype():
    img = torch.randn(1, 3, 8, 8)
    assert blur(img, 0.1) is img and blur(img, 0.0) is img
    assert blur(img.half(), 1.0).dtype == torch.float16


def test_blur_schedule_fades_linearly_and_settings_round_trip():
    s = ScoreSettings()
    assert [blur_sigma(s, n) for n in (0, 150_000, 300_000, 10 ** 6)] == [2.0, 1.0, 0.0, 0.0]
    assert blur_sigma(ScoreSettings(blur_fade_kimg=0), 0) == 0.0
    assert blur_sigma(LossConfig(), 150_000) == 1.0  # any config with the two fields
    assert ScoreSettings.from_config(LossConfig()) == s  # the defaults are the training loss's
    odd = ScoreSettings(1.5, 10.0, 'mean')
    assert ScoreSettings.from_dict(odd.to_dict()) == odd
    with pytest.raises(ValueError, match='no field.*bogus'):
        ScoreSettings.from_dict({**odd.to_dict(), 'bogus': 1})
    with pytest.raises(ValueError, match='reduction'):
        ScoreSettings(reduction='max')


# -- the loss phases --------------------------------------------------------------------------------------------------
class LinearG(nn.Module):
    """Stands in for G: tanh of a linear map of (z, c) to [B, 3, RES, RES]; records ``update_emas``."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.fc = nn.Linear(4 + C_DIM, 3 * RES * RES)
        self.update_emas_calls = 0

    def forward(self, z, c, update_emas=False):
        self.update_emas_calls += bool(update_emas)
        return torch.tanh(self.fc(torch.cat([z, c], dim=1))).view(-1, 3, RES, RES)


class TwoBackboneD(nn.Module):
    """Stands in for ProjectedDiscriminator: two backbones of 5 and 3 logits, linear in the pixels and the class;
    with ``flg_train`` the pair ``(fun, dir)``, ``dir`` from other weights (as SAN heads give)."""

    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(1)
        n = 3 * RES * RES
        self.w = nn.ParameterList([nn.Parameter(torch.randn(n, k, generator=g) * 0.15) for k in (5, 3)])
        self.v = nn.ParameterList([nn.Parameter(torch.randn(n, k, generator=g) * 0.15) for k in (5, 3)])
        self.e = nn.ParameterList([nn.Parameter(torch.randn(C_DIM, k, generator=g)) for k in (5, 3)])

    def forward_per_backbone(self, img, c, flg_train=False, generator=None):
        x = img.flatten(1)
        out = {}
        for name, w, v, e in zip('ab', self.w, self.v, self.e):
            fun = x @ w + c @ e  # [B, N_b]
            out[name] = (fun, x @ v) if flg_train else fun
        return out


def _by_hand(fn, D, img, c, flg_train, reduction):
    """fn on D's per-backbone logits of the blurred images, each (image, backbone) pair averaged over its logits,
    then summed or averaged over all pairs: the loop below is the reduction, written out."""
    outs = D.forward_per_backbone(blur(img, blur_sigma(ScoreSettings(), CUR_NIMG)), c, flg_train=flg_train)
    values = [fn(o) for o in outs.values()]  # per backbone [B, N_b]; fn sees the whole batch (KL-WGAN's weights)
    pairs = [v[i].mean() for v in values for i in range(img.shape[0])]
    total = torch.stack(pairs).sum()
    return total if reduction == 'sum' else total / len(pairs)


@pytest.fixture(scope='module')
def batch():
    g = torch.Generator().manual_seed(2)
    z, c = torch.randn(4, 4, generator=g), torch.eye(C_DIM)[torch.tensor([0, 2, 1, 2])]
    real = torch.rand(4, 3, RES, RES, generator=g) * 2 - 1
    return z, c, real


@pytest.mark.parametrize('reduction', ['sum', 'mean'])
@pytest.mark.parametrize('san', [False, True], ids=['plain', 'san'])
@pytest.mark.parametrize('name', [n for n in losses.list_losses() if not losses.get(n).paired])  # rpgan: own file
def test_every_phase_is_the_registry_loss_on_per_backbone_logits_of_the_blurred_input(name, san, reduction, batch):
    z, c, real = batch
    G, D = LinearG(), TwoBackboneD()
    cfg = LossConfig(name=name, san=san, dir_weight=LAMBDA, reduction=reduction)
    loss = ProjectedGANLoss(cfg, G, D)
    gan = losses.get(name, san=san, dir_weight=LAMBDA)
    with torch.no_grad():
        fake = G(z, c)
        want = {'g_main': _by_hand(gan.g, D, fake, c, False, reduction),
                'd_fake': _by_hand(gan.d_fake, D, fake, c, san, reduction),
                'd_real': _by_hand(gan.d_real, D, real, c, san, reduction)}
    got = {'g_main': loss.g_main(z, c, CUR_NIMG).loss, 'd_fake': loss.d_fake(z, c, CUR_NIMG).loss,
           'd_real': loss.d_real(real, c, CUR_NIMG).loss}
    for phase in want:
        torch.testing.assert_close(got[phase].detach(), want[phase], rtol=1e-5, atol=1e-6, msg=phase)
    assert G.update_emas_calls == 1  # d_fake's G call, and only it, updates G's w average
    # the checks have teeth: the phases differ from each other and from the unblurred input
    assert not torch.isclose(want['d_real'], _by_hand(gan.d_fake, D, real, c, san, reduction))
    unblurred = D.forward_per_backbone(real, c, flg_train=san)
    assert not torch.isclose(want['d_real'], critic_score.reduce(critic_score.per_backbone(
        list(unblurred.values()), gan.d_real), reduction))


def test_score_is_minus_the_hinge_g_loss(batch):
    """The critic's per-image score and the hinge G loss are one reading of D: G's loss is minus their sum/mean."""
    z, c, _ = batch
    G, D = LinearG(), TwoBackboneD()
    for reduction in ('sum', 'mean'):
        loss = ProjectedGANLoss(LossConfig(name='hinge', san=False, reduction=reduction), G, D)
        with torch.no_grad():
            scores = critic_score.score(D, G(z, c), c, sigma=loss.blur_sigma(CUR_NIMG), reduction=reduction)  # [B]
            g = loss.g_main(z, c, CUR_NIMG).loss
        assert scores.shape == (4,)
        torch.testing.assert_close(g, -(scores.sum() if reduction == 'sum' else scores.mean()))


def test_loss_keeps_its_settings_as_score_settings():
    cfg = dataclasses.replace(LossConfig(), blur_init_sigma=1.5, blur_fade_kimg=10.0, reduction='mean')
    loss = ProjectedGANLoss(cfg, None, None)
    assert loss.score == ScoreSettings(1.5, 10.0, 'mean') and loss.blur_sigma(5000) == 0.75
