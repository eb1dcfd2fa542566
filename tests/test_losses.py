"""Loss registry: hand-computed values, SAN conversion against an independent form, KL-WGAN stability, errors."""

import math
import re

import numpy as np
import pytest
import torch
from scipy.special import expit, log_expit, softmax

from san_ext import losses

REAL = [-2.0, 0.5, 3.0]
FAKE = [-1.0, 0.0, 2.0, 4.0]


# The losses scored per sample; the paired one (rpgan) has its own tests in test_losses_rpgan.py.
UNPAIRED = [n for n in losses.list_losses() if not losses.get(n).paired]


def _t(values, grad=False):
    return torch.tensor(values, dtype=torch.float64, requires_grad=grad)


# Per-element (d_real, d_fake, g) written with scipy/numpy, independent of the torch code.
def _expected(name, r, f, T=5.0):
    r, f = np.asarray(r), np.asarray(f)
    if name == 'hinge':
        return np.maximum(0, 1 - r), np.maximum(0, 1 + f), -f
    if name == 'wasserstein':
        return -r, f, -f
    if name in ('saturating', 'nonsaturating'):
        g = np.log1p(-expit(f)) if name == 'saturating' else -log_expit(f)
        return -log_expit(r), -np.log1p(-expit(f)), g
    if name == 'lsgan':
        return 0.5 * (r - 1) ** 2, 0.5 * f ** 2, 0.5 * (f - 1) ** 2
    if name == 'klwgan':
        w = softmax(f / T) * len(f)
        return np.maximum(0, 1 - r), np.maximum(0, 1 + w * f), -w * f
    raise KeyError(name)


def test_registry_lists_every_loss():
    assert losses.list_losses() == ['hinge', 'klwgan', 'lsgan', 'nonsaturating', 'rpgan', 'saturating', 'wasserstein']


@pytest.mark.parametrize('name', UNPAIRED)
def test_loss_matches_hand_computed_values(name):
    loss = losses.get(name)
    exp_r, exp_f, exp_g = _expected(name, REAL, FAKE)
    np.testing.assert_allclose(loss.d_real(_t(REAL)).numpy(), exp_r, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(loss.d_fake(_t(FAKE)).numpy(), exp_f, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(loss.g(_t(FAKE)).numpy(), exp_g, rtol=1e-12, atol=1e-12)
    assert loss.d_loss(_t(REAL), _t(FAKE)).item() == pytest.approx(exp_r.mean() + exp_f.mean(), rel=1e-12)


def test_hinge_spot_values():
    loss = losses.get('hinge')
    assert loss.d_real(_t(REAL)).tolist() == [3.0, 0.5, 0.0]
    assert loss.d_fake(_t(FAKE)).tolist() == [0.0, 1.0, 3.0, 5.0]


def test_san_hinge_is_hinge_on_fun_plus_wasserstein_on_dir():
    fun_r, dir_r, fun_f, dir_f = _t(REAL, True), _t(REAL, True), _t(FAKE, True), _t(FAKE, True)
    san = losses.get('hinge', san=True)
    total = san.d_loss((fun_r, dir_r), (fun_f, dir_f))
    hinge = np.maximum(0, 1 - np.array(REAL)).mean() + np.maximum(0, 1 + np.array(FAKE)).mean()
    wasserstein = -np.mean(REAL) + np.mean(FAKE)
    assert total.item() == pytest.approx(hinge + wasserstein, rel=1e-12)
    total.backward()
    np.testing.assert_allclose(dir_r.grad.numpy(), -1 / len(REAL))
    np.testing.assert_allclose(dir_f.grad.numpy(), 1 / len(FAKE))
    np.testing.assert_allclose(fun_r.grad.numpy(), [-1 / 3, -1 / 3, 0])  # hinge active only below 1


@pytest.mark.parametrize('name', ['hinge', 'saturating', 'nonsaturating', 'lsgan', 'wasserstein'])
def test_san_direction_gradient_equals_generator_loss_difference(name):
    # Independent form (sony/bigvsan, SAN tutorial): the direction loss E_real[l_G(dir)] - E_fake[l_G(dir)] has
    # exactly the gradient of our reweighted Wasserstein term. Build it from the G loss and compare gradients.
    loss = losses.get(name, san=True, dir_weight=0.7)
    base = losses.get(name)
    dir_r, dir_f = _t(REAL, True), _t(FAKE, True)
    zero_r, zero_f = _t(REAL), _t(FAKE)  # fun inputs without grad
    loss.d_loss((zero_r, dir_r), (zero_f, dir_f)).backward()
    ours = dir_r.grad.clone(), dir_f.grad.clone()
    ref_r, ref_f = _t(REAL, True), _t(FAKE, True)
    (0.7 * (base.g(ref_r).mean() - base.g(ref_f).mean())).backward()
    torch.testing.assert_close(ours[0], ref_r.grad)
    torch.testing.assert_close(ours[1], ref_f.grad)


@pytest.mark.parametrize('name', UNPAIRED)
def test_san_value_equals_base_value_on_fun_plus_weighted_dir(name):
    base, san = losses.get(name), losses.get(name, san=True)
    r, f = _t(REAL), _t(FAKE)
    # fun == dir in value, so the SAN loss = base loss + lambda * (weighted linear term); check the fun part alone.
    zero_dir_r, zero_dir_f = torch.zeros_like(r), torch.zeros_like(f)
    torch.testing.assert_close(san.d_real((r, zero_dir_r)), base.d_real(r))
    torch.testing.assert_close(san.d_fake((f, zero_dir_f)), base.d_fake(f))


# -l_G'(f), the weight of the SAN direction term at the detached dir logit, written with scipy/numpy (docs/LOSSES.md).
def _direction_weight(name, f, real, T=5.0):
    f = np.asarray(f)
    if name in ('hinge', 'wasserstein') or (name == 'klwgan' and real):
        return np.ones_like(f)
    if name in ('saturating', 'nonsaturating'):
        return expit(f) if name == 'saturating' else expit(-f)
    if name == 'lsgan':
        return 1 - f
    if name == 'klwgan':
        return softmax(f / T) * len(f)
    raise KeyError(name)


@pytest.mark.parametrize('name', UNPAIRED)
def test_san_value_with_nonzero_dir_adds_the_weighted_direction_term(name):
    # docs/LOSSES.md, SAN conversion: d_real = base(fun) - lambda rho(dir) dir, d_fake = base(fun) + lambda rho(dir) dir
    lam, dir_r, dir_f = 0.7, [1.5, -0.25, 0.8], [0.3, -2.0, 1.2, -0.6]
    san = losses.get(name, san=True, dir_weight=lam)
    exp_r, exp_f, _ = _expected(name, REAL, FAKE)
    want_r = exp_r - lam * _direction_weight(name, dir_r, real=True) * np.asarray(dir_r)
    want_f = exp_f + lam * _direction_weight(name, dir_f, real=False) * np.asarray(dir_f)
    np.testing.assert_allclose(san.d_real((_t(REAL), _t(dir_r))).numpy(), want_r, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(san.d_fake((_t(FAKE), _t(dir_f))).numpy(), want_f, rtol=1e-12, atol=1e-12)
    assert not np.allclose(want_r, exp_r) and not np.allclose(want_f, exp_f)  # the direction term counts


def test_san_loss_routes_gradients_only_through_matching_inputs():
    san = losses.get('nonsaturating', san=True)
    fun, dir_ = _t(REAL, True), _t(REAL, True)
    san.d_real((fun, dir_)).sum().backward()
    np.testing.assert_allclose(fun.grad.numpy(), -expit(-np.array(REAL)))  # d/df softplus(-f)
    np.testing.assert_allclose(dir_.grad.numpy(), -expit(-np.array(REAL)))  # -sigmoid(-f), detached weight


def test_klwgan_weights_average_to_one_and_are_stable_for_large_logits():
    loss = losses.get('klwgan', T=5.0)
    f = _t([1000.0, 999.0, -1000.0, 20.0])
    w = loss.weights(f)
    assert torch.isfinite(w).all()
    assert w.mean().item() == pytest.approx(1.0, rel=1e-12)
    np.testing.assert_allclose(w.numpy(), softmax(f.numpy() / 5.0) * 4, rtol=1e-12)
    assert torch.isfinite(loss.d_fake(f)).all() and torch.isfinite(loss.g(f)).all()
    per_column = loss.weights(torch.randn(6, 3, dtype=torch.float64) * 100)
    torch.testing.assert_close(per_column.mean(0), torch.ones(3, dtype=torch.float64))


def test_klwgan_generator_gradient_flows_through_the_weights():
    # Closed form: L = -sum_j p_j f_j with p = softmax(f/T) gives dL/df_j = -p_j (1 + (f_j - sum_k p_k f_k) / T).
    T = 2.0
    f = _t(FAKE, True)
    losses.get('klwgan', T=T).g(f).mean().backward()
    fv = np.array(FAKE)
    p = softmax(fv / T)
    np.testing.assert_allclose(f.grad.numpy(), -p * (1 + (fv - (p * fv).sum()) / T), rtol=1e-10)


def test_san_klwgan_direction_term_is_unhinged_critic_with_detached_weights():
    loss = losses.get('klwgan', san=True, T=5.0)
    dir_r, dir_f = _t(REAL, True), _t(FAKE, True)
    loss.d_loss((_t(REAL), dir_r), (_t(FAKE), dir_f)).backward()
    np.testing.assert_allclose(dir_r.grad.numpy(), -1 / 3)
    np.testing.assert_allclose(dir_f.grad.numpy(), softmax(np.array(FAKE) / 5.0) * 4 / 4, rtol=1e-12)


def test_loss_shapes_follow_the_logits():
    loss = losses.get('hinge', san=True)
    fun = torch.randn(4, 100)
    assert loss.d_real((fun, fun.clone())).shape == (4, 100)
    assert losses.get('klwgan').d_fake(fun).shape == (4, 100)


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(ValueError, match='unknown loss .*known: hinge, klwgan, lsgan, nonsaturating, rpgan, satur'):
        losses.get('relativistic')


def test_bad_options_and_inputs_are_clear():
    with pytest.raises(ValueError, match="no option 'T'"):
        losses.get('hinge', T=5)
    with pytest.raises(ValueError, match='temperature T must be'):
        losses.get('klwgan', T=0)
    with pytest.raises(ValueError, match='dir_weight'):
        losses.get('hinge', dir_weight=math.nan)
    with pytest.raises(TypeError, match=r'expects the pair \(fun, dir\)'):
        losses.get('hinge', san=True).d_real(torch.randn(3))
    with pytest.raises(TypeError, match='san=True'):
        losses.get('hinge').d_real((torch.randn(3), torch.randn(3)))
    with pytest.raises(ValueError, match='same shape'):
        losses.get('hinge', san=True).d_fake((torch.randn(3), torch.randn(4)))
    with pytest.raises(TypeError, match='floating-point'):
        losses.get('lsgan').d_real(torch.tensor([1, 2]))
    with pytest.raises(TypeError, match='without flg_train'):
        losses.get('hinge', san=True).g((torch.randn(3), torch.randn(3)))
    with pytest.raises(ValueError, match='batch dimension'):
        losses.get('hinge').g(torch.tensor(1.0))


# -- loss specs (train.py --loss, the studies) ---------------------------------------------------------------------
@pytest.mark.parametrize('name', losses.list_losses())
def test_every_loss_parses_as_name_and_name_san(name):
    assert losses.parse_spec(name) == (name, False)
    assert losses.parse_spec(f'{name}-san') == (name, True)
    assert losses.spec_name(name, False) == name and losses.spec_name(name, True) == f'{name}-san'
    assert {name, f'{name}-san'} <= set(losses.list_specs())
    assert losses.get(*losses.parse_spec(f'{name}-san')).san  # the spec's switch reaches the loss


def test_san_alone_is_stylesan_xl_hinge_san_and_every_spec_round_trips():
    assert losses.parse_spec('san') == ('hinge', True)
    assert losses.list_specs()[0] == 'san' and len(losses.list_specs()) == 1 + 2 * len(losses.list_losses())
    for spec in losses.list_specs():
        name, san = losses.parse_spec(spec)
        assert losses.spec_name(name, san) == ('hinge-san' if spec == 'san' else spec)


@pytest.mark.parametrize('bad', ['relativistic', 'relativistic-san', 'hinge+san', 'hinge-SAN', '-san', ''])
def test_bad_spec_fails_listing_every_valid_one(bad):
    with pytest.raises(ValueError, match=re.escape(f'unknown loss {bad!r}')) as info:
        losses.parse_spec(bad)
    assert info.value.args[0].endswith('known: ' + ', '.join(losses.list_specs()))
    assert 'nonsaturating-san' in str(info.value) and ' san,' in str(info.value)


def test_a_loss_name_that_reads_as_a_spec_cannot_be_registered():
    for name in ('san', 'hinge-san'):
        with pytest.raises(ValueError, match='would read as a SAN spec'):
            losses.register(name)(losses.HingeLoss)
    assert 'san' not in losses.list_losses() and 'hinge-san' not in losses.list_losses()


def test_unregister_removes_a_loss_and_refuses_unknown_names():
    losses.register('test_unregister_hinge')(type('TestHinge', (losses.HingeLoss,), {}))
    try:
        assert 'test_unregister_hinge' in losses.list_losses() and 'test_unregister_hinge-san' in losses.list_specs()
        assert losses.get('test_unregister_hinge', san=True).san
    finally:
        losses.unregister('test_unregister_hinge')
    assert 'test_unregister_hinge' not in losses.list_losses()
    with pytest.raises(ValueError, match="unknown loss 'test_unregister_hinge'; known: hinge"):
        losses.unregister('test_unregister_hinge')
