"""RpGAN (R3GAN's relativistic pairing loss) and its SAN form: values and gradients against numpy/scipy, the
pairing API, routing of SAN gradients, extreme logits, and the R1/R2 re-exports."""

import numpy as np
import pytest
import torch
from scipy.special import expit

from san_ext import losses, penalties
from san_ext.layers import SANLinear

REAL = [-2.0, 0.5, 3.0, 1.0]
FAKE = [-1.0, 0.0, 2.0, 4.0]


def _t(values, grad=False):
    return torch.tensor(values, dtype=torch.float64, requires_grad=grad)


def _softplus(x):
    return np.logaddexp(0.0, x)  # log(1 + e^x), numerically exact for large |x|


def test_rpgan_values_match_numpy():
    loss = losses.get('rpgan')
    r, f = np.array(REAL), np.array(FAKE)
    np.testing.assert_allclose(loss.d_pair(_t(REAL), _t(FAKE)).numpy(), _softplus(-(r - f)), rtol=1e-12)
    np.testing.assert_allclose(loss.g(_t(FAKE), real=_t(REAL)).numpy(), _softplus(-(f - r)), rtol=1e-12)
    assert loss.d_loss(_t(REAL), _t(FAKE)).item() == pytest.approx(_softplus(f - r).mean(), rel=1e-12)
    assert loss.g_loss(_t(FAKE), real=_t(REAL)).item() == pytest.approx(_softplus(r - f).mean(), rel=1e-12)


def test_rpgan_gradients_match_hand_derivatives():
    # d/df_r softplus(f_f - f_r) = -sigmoid(f_f - f_r); d/df_f = +sigmoid(f_f - f_r); G: d/df_f softplus(f_r - f_f)
    loss = losses.get('rpgan')
    r, f = _t(REAL, True), _t(FAKE, True)
    loss.d_loss(r, f).backward()
    s = expit(np.array(FAKE) - np.array(REAL)) / len(REAL)
    np.testing.assert_allclose(r.grad.numpy(), -s, rtol=1e-12)
    np.testing.assert_allclose(f.grad.numpy(), s, rtol=1e-12)
    r, f = _t(REAL, True), _t(FAKE, True)
    loss.g_loss(f, real=r).backward()
    np.testing.assert_allclose(f.grad.numpy(), -expit(np.array(REAL) - np.array(FAKE)) / len(REAL), rtol=1e-12)


def test_rpgan_pairs_by_index_not_by_batch_statistics():
    # Swapping two fakes changes the pairs and so the loss; an unpaired loss (mean over reals + mean over fakes)
    # would not notice.
    loss = losses.get('rpgan')
    swapped = [FAKE[1], FAKE[0], *FAKE[2:]]
    assert loss.d_loss(_t(REAL), _t(FAKE)).item() != pytest.approx(loss.d_loss(_t(REAL), _t(swapped)).item())


def test_pairing_errors_are_clear():
    loss = losses.get('rpgan')
    with pytest.raises(ValueError, match='pass D.s logits on a fresh real batch'):
        loss.g_loss(_t(FAKE))
    with pytest.raises(ValueError, match=r'one shape; got real \[3\] and fake \[4\]'):
        loss.d_loss(_t(REAL[:3]), _t(FAKE))
    with pytest.raises(ValueError, match=r'got real \[3\] and fake \[4\]'):
        loss.g_loss(_t(FAKE), real=_t(REAL[:3]))
    with pytest.raises(TypeError, match='paired loss.*d_pair'):
        loss.d_real(_t(REAL))
    with pytest.raises(TypeError, match='pair_direction_weights'):
        loss.direction_weights(_t(REAL), real=True)


@pytest.mark.parametrize('name', ['hinge', 'nonsaturating', 'klwgan'])
def test_unpaired_losses_accept_and_ignore_real(name):
    loss = losses.get(name)
    fake = _t(FAKE)
    assert loss.g_loss(fake, real=_t(REAL)).item() == loss.g_loss(fake).item()
    torch.testing.assert_close(loss.g(fake, real=_t(REAL[:2])), loss.g(fake))  # shape does not matter there
    # d_pair of an unpaired loss is d_real + d_fake element by element; d_loss keeps its separate means
    torch.testing.assert_close(loss.d_pair(_t(REAL), _t(FAKE)), loss.d_real(_t(REAL)) + loss.d_fake(_t(FAKE)))
    torch.testing.assert_close(loss.d_loss(_t(REAL), _t(FAKE), dim=0),
                               loss.d_real(_t(REAL)).mean(0) + loss.d_fake(_t(FAKE)).mean(0))


# -- SAN form --------------------------------------------------------------------------------------------------------
def test_san_rpgan_value_is_rpgan_on_fun_minus_weighted_direction_term():
    lam = 0.7
    dir_r, dir_f = [1.5, -0.25, 0.8, 0.1], [0.3, -2.0, 1.2, -0.6]
    san = losses.get('rpgan', san=True, dir_weight=lam)
    got = san.d_pair((_t(REAL), _t(dir_r)), (_t(FAKE), _t(dir_f))).numpy()
    t = np.array(dir_r) - np.array(dir_f)
    want = _softplus(np.array(FAKE) - np.array(REAL)) - lam * expit(t) * t  # rho(t) = sigmoid(t): docs/LOSSES.md
    np.testing.assert_allclose(got, want, rtol=1e-12)


def test_san_rpgan_direction_gradient_equals_independent_form():
    # Independent form (docs/LOSSES.md): in dir, the direction term has the gradient of
    # -lambda * mean softplus(dir_r - dir_f) = -lambda * G's pair loss read at u = dir_f - dir_r.
    lam = 0.7
    san = losses.get('rpgan', san=True, dir_weight=lam)
    dir_r, dir_f = _t([1.5, -0.25, 0.8, 0.1], True), _t([0.3, -2.0, 1.2, -0.6], True)
    san.d_loss((_t(REAL), dir_r), (_t(FAKE), dir_f)).backward()
    ref_r, ref_f = _t([1.5, -0.25, 0.8, 0.1], True), _t([0.3, -2.0, 1.2, -0.6], True)
    (-lam * torch.nn.functional.softplus(ref_r - ref_f).mean()).backward()
    torch.testing.assert_close(dir_r.grad, ref_r.grad)
    torch.testing.assert_close(dir_f.grad, ref_f.grad)


def test_san_rpgan_routes_fun_to_features_and_scale_and_dir_to_omega():
    torch.manual_seed(0)
    layer = SANLinear(5, 1).double()
    h = torch.randn(8, 5, dtype=torch.float64, requires_grad=True)
    fun, dir_ = layer(h, flg_train=True)
    real, fake = (fun[:4, 0], dir_[:4, 0]), (fun[4:, 0], dir_[4:, 0])
    san = losses.get('rpgan', san=True)
    base = losses.get('rpgan')

    def grads(loss):
        return torch.autograd.grad(loss, [h, layer.weight, layer.scale], retain_graph=True, allow_unused=True)

    g_fun = grads(base.d_pair(real[0], fake[0]).mean())
    g_total = grads(san.d_pair(real, fake).mean())
    g_dir = [None if a is None else a - (0 if b is None else b) for a, b in zip(g_total, g_fun)]
    assert g_fun[1] is None or torch.count_nonzero(g_fun[1]) == 0  # fun never moves omega
    assert torch.count_nonzero(g_fun[0]) > 0 and torch.count_nonzero(g_fun[2]) > 0  # ... but moves h and s
    assert torch.count_nonzero(g_dir[1]) > 0  # dir moves omega
    torch.testing.assert_close(g_dir[0], torch.zeros_like(h))  # ... and neither h
    assert g_dir[2] is None or torch.count_nonzero(g_dir[2]) == 0  # ... nor s


@pytest.mark.parametrize('big', [1e4, -1e4])
def test_extreme_logits_stay_finite(big):
    san = losses.get('rpgan', san=True)
    fun_r, dir_r = _t([big, 0.0], True), _t([big, -big], True)
    fun_f, dir_f = _t([-big, big], True), _t([-big, big], True)
    loss = san.d_loss((fun_r, dir_r), (fun_f, dir_f))
    loss.backward()
    assert torch.isfinite(loss)
    assert all(torch.isfinite(x.grad).all() for x in (fun_r, dir_r, fun_f, dir_f))
    g = losses.get('rpgan').g_loss(_t([big, -big], True), real=_t([-big, big]))
    assert torch.isfinite(g)


def test_pair_direction_weights():
    san = losses.get('rpgan', san=True)
    rho_r, rho_f = san.pair_direction_weights(_t(REAL), _t(FAKE))
    np.testing.assert_allclose(rho_r.numpy(), expit(np.array(REAL) - np.array(FAKE)), rtol=1e-12)
    torch.testing.assert_close(rho_r, rho_f)
    ns = losses.get('nonsaturating', san=True)  # unpaired: each side its own weights, shapes free
    rho_r, rho_f = ns.pair_direction_weights(_t(REAL[:3]), _t(FAKE))
    np.testing.assert_allclose(rho_f.numpy(), expit(-np.array(FAKE)), rtol=1e-12)
    # KL-WGAN tells the sides apart: 1 on reals, its importance weights on fakes (a mutation test found this unchecked)
    kl = losses.get('klwgan', san=True)
    rho_r, rho_f = kl.pair_direction_weights(_t(REAL), _t(FAKE))
    np.testing.assert_array_equal(rho_r.numpy(), np.ones(len(REAL)))
    np.testing.assert_allclose(rho_f.numpy(), kl.weights(_t(FAKE)).numpy(), rtol=1e-12)


def test_specs_and_penalty_reexports():
    assert losses.parse_spec('rpgan-san') == ('rpgan', True)
    assert {'rpgan', 'rpgan-san'} <= set(losses.list_specs())
    assert losses.r1_penalty is penalties.r1_penalty and losses.r2_penalty is penalties.r2_penalty
