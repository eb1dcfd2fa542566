"""san_ext.diagnostics: the optimal direction against numpy, training the direction term alone reaches it, and the
hooks read the right features for SANLinear, SANConv2d and SANEmbedding heads without side effects on D."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

import san_ext
from san_ext import losses
from san_ext.diagnostics import direction_alignment, optimal_direction, san_alignment
from san_ext.layers import SANConv2d, SANEmbedding, SANLinear

pytestmark = pytest.mark.usefixtures('float64')  # tests/conftest.py


def _numpy_optimum(h_r, h_f, w_r=None, w_f=None):
    h_r, h_f = np.asarray(h_r), np.asarray(h_f)
    w_r = np.ones(len(h_r)) if w_r is None else np.asarray(w_r)
    w_f = np.ones(len(h_f)) if w_f is None else np.asarray(w_f)
    m = (w_r[:, None] * h_r).sum(0) / len(h_r) - (w_f[:, None] * h_f).sum(0) / len(h_f)
    return m / np.linalg.norm(m)


def test_optimal_direction_matches_numpy_plain_and_weighted():
    g = torch.Generator().manual_seed(0)
    h_r, h_f = torch.randn(50, 7, generator=g) + 0.3, torch.randn(40, 7, generator=g)
    w_r, w_f = torch.rand(50, generator=g), torch.rand(40, generator=g)
    np.testing.assert_allclose(optimal_direction(h_r, h_f).numpy(), _numpy_optimum(h_r, h_f), rtol=1e-12)
    np.testing.assert_allclose(optimal_direction(h_r, h_f, w_r, w_f).numpy(),
                               _numpy_optimum(h_r, h_f, w_r, w_f), rtol=1e-12)
    # the optimum beats every other unit vector on J(omega) = <omega, m>
    m = (w_r[:, None] * h_r).mean(0) - (w_f[:, None] * h_f).mean(0)
    others = torch.nn.functional.normalize(torch.randn(1000, 7, generator=g), dim=1)
    assert (others @ m).max() <= optimal_direction(h_r, h_f, w_r, w_f) @ m + 1e-12


def test_optimal_direction_rejects_bad_shapes():
    with pytest.raises(ValueError, match='width'):
        optimal_direction(torch.randn(4, 3), torch.randn(4, 2))
    with pytest.raises(ValueError, match='one entry per feature row'):
        optimal_direction(torch.randn(4, 3), torch.randn(4, 3), torch.ones(3))


def test_alignment_of_the_optimum_is_one_its_opposite_minus_one():
    h_r, h_f = torch.randn(30, 5) + 1, torch.randn(30, 5)
    best = optimal_direction(h_r, h_f)
    cos = direction_alignment(torch.stack([best, -best, 3 * best]), h_r, h_f)
    np.testing.assert_allclose(cos.numpy(), [1, -1, 1], atol=1e-12)


def test_random_direction_in_high_dimension_is_nearly_orthogonal():
    g = torch.Generator().manual_seed(1)
    h_r, h_f = torch.randn(256, 4096, generator=g) + 0.1, torch.randn(256, 4096, generator=g)
    cos = direction_alignment(torch.randn(8, 4096, generator=g), h_r, h_f)
    assert cos.abs().max() < 0.1  # ~ N(0, 1/4096): |cos| ~ 0.016


@pytest.mark.parametrize('name', ['hinge', 'nonsaturating', 'rpgan'])
def test_direction_term_alone_on_fixed_features_reaches_alignment_one(name):
    """Train omega with the SAN direction term only (features fixed, s and bias frozen): it converges to omega*."""
    torch.manual_seed(2)
    layer = SANLinear(16, 1)
    layer.scale.requires_grad_(False)
    layer.bias.requires_grad_(False)
    h_r, h_f = torch.randn(256, 16) + torch.linspace(-1, 1, 16), torch.randn(256, 16)
    loss = losses.get(name, san=True)
    opt = torch.optim.SGD([layer.weight], lr=0.5)
    start = san_alignment(layer, h_r, h_f, loss=loss)['']
    for _ in range(400):
        d = loss.d_loss(layer(h_r, flg_train=True), layer(h_f, flg_train=True))  # rpgan: pairs row i with row i
        opt.zero_grad()
        d.backward()
        opt.step()
        layer.normalize_weight()
    end = san_alignment(layer, h_r, h_f, loss=loss)['']
    assert start < 0.9 and end > 1 - 1e-6


def _manual_mlp_alignment(D, x_r, x_f, loss):
    body, head = D.module[:-1], D.san_layer
    h_r, h_f = body(x_r) + head.bias, body(x_f) + head.bias
    omega = head.weight / head.weight.norm() * torch.sign(head.scale)
    f_r, f_f = (h @ omega.T * head.scale.abs() for h in (h_r, h_f))  # the plain logits
    w_r, w_f = loss.direction_weights(f_r, True)[:, 0], loss.direction_weights(f_f, False)[:, 0]
    return float((omega[0] @ torch.as_tensor(_numpy_optimum(h_r.detach(), h_f.detach(), w_r, w_f))).detach())


@pytest.mark.parametrize('name', ['hinge', 'saturating', 'nonsaturating', 'klwgan'])
@pytest.mark.parametrize('flip', [False, True])
def test_san_alignment_of_a_sanified_mlp_matches_a_manual_computation(name, flip):
    torch.manual_seed(3)
    D = san_ext.sanify(nn.Sequential(nn.Linear(2, 8), nn.LeakyReLU(0.2), nn.Linear(8, 1)))
    with torch.no_grad():
        D.san_layer.bias.normal_()
        if flip:
            D.san_layer.scale.neg_()  # s < 0: the direction D uses is -omega
    x_r, x_f = torch.randn(64, 2) + 1, torch.randn(48, 2)
    loss = losses.get(name, san=True)
    got = san_alignment(D, x_r, x_f, loss=loss)
    assert list(got) == ['module.2']
    assert got['module.2'] == pytest.approx(_manual_mlp_alignment(D, x_r, x_f, loss), abs=1e-10)


def test_san_alignment_of_a_paired_loss_weights_both_members_of_pair_i_by_sigmoid_of_their_difference():
    # RpGAN-SAN (docs/LOSSES.md): omega* ∝ sum_i sigmoid(t_i) (h_r,i - h_f,i), t_i = f_r,i - f_f,i, by hand with scipy
    from scipy.special import expit

    torch.manual_seed(4)
    D = san_ext.sanify(nn.Sequential(nn.Linear(2, 8), nn.LeakyReLU(0.2), nn.Linear(8, 1)))
    x_r, x_f = torch.randn(40, 2) + 1, torch.randn(40, 2)
    got = san_alignment(D, x_r, x_f, loss=losses.get('rpgan', san=True))['module.2']
    body, head = D.module[:-1], D.san_layer
    with torch.no_grad():
        h_r, h_f = (body(x) + head.bias for x in (x_r, x_f))
        omega = (head.weight / head.weight.norm() * torch.sign(head.scale))[0]
        f_r, f_f = (h @ omega * head.scale.abs() for h in (h_r, h_f))
    w = expit((f_r - f_f).numpy())
    want = float(omega.numpy() @ _numpy_optimum(h_r.numpy(), h_f.numpy(), w, w))
    assert got == pytest.approx(want, abs=1e-6)
    unpaired = float(omega.numpy() @ _numpy_optimum(h_r.numpy(), h_f.numpy()))
    assert abs(want - unpaired) > 1e-3  # the weights matter here
    with pytest.raises(ValueError, match='one shape'):
        san_alignment(D, x_r, x_f[:30], loss=losses.get('rpgan', san=True))


def test_san_alignment_of_a_conv_layer_uses_every_patch():
    torch.manual_seed(4)
    conv = SANConv2d(3, 2, 2, stride=1, padding=0)
    with torch.no_grad():
        conv.bias.normal_()
    x_r, x_f = torch.randn(5, 3, 4, 4) + 0.5, torch.randn(6, 3, 4, 4)

    def patches(x):  # [N*9, 12], row order (sample, position), by explicit loops
        x = x + conv.bias.detach().view(1, -1, 1, 1)
        return torch.stack([x[n, :, i:i + 2, j:j + 2].reshape(-1) for n in range(len(x))
                            for i in range(3) for j in range(3)])
    rows = conv.weight.detach().reshape(2, -1) / conv.weight.detach().reshape(2, -1).norm(dim=1, keepdim=True)
    rows = rows * torch.sign(conv.scale.detach())[:, None]
    expected = direction_alignment(rows, patches(x_r), patches(x_f)).mean()
    assert san_alignment(conv, x_r, x_f)[''] == pytest.approx(float(expected), abs=1e-12)
    # weighted (non-saturating): each patch weighted by sigmoid(-f) of its own logit; the input bias now matters
    loss = losses.get('nonsaturating', san=True)
    with torch.no_grad():
        f_r, f_f = conv(x_r), conv(x_f)  # [N, 2, 3, 3]
    weighted = [direction_alignment(rows[k], patches(x_r), patches(x_f), torch.sigmoid(-f_r[:, k]).reshape(-1),
                                    torch.sigmoid(-f_f[:, k]).reshape(-1))[0] for k in range(2)]
    assert san_alignment(conv, x_r, x_f, loss=loss)[''] == pytest.approx(float(sum(weighted) / 2), abs=1e-12)


class _ProjectionHead(nn.Module):
    """A conditional SAN head as in the pipeline: logit = <h(x), s_c omega_c> / sqrt(d), with BatchNorm."""

    def __init__(self, c_dim=3, d=6):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(4, d), nn.BatchNorm1d(d), nn.Tanh())
        self.embed = SANEmbedding(c_dim, d)
        self.d = d

    def forward(self, x, c):
        return (self.body(x) * self.embed(c)).sum(1, keepdim=True) / math.sqrt(self.d)


def test_san_alignment_of_an_embedding_head_is_per_class_and_has_no_side_effects():
    torch.manual_seed(5)
    D = _ProjectionHead()
    with torch.no_grad():
        D.embed.scale[1].neg_()
    D.requires_grad_(False)  # as in G's phase: the diagnostic must not need parameter gradients
    x_r, x_f = torch.randn(30, 4) + 0.5, torch.randn(30, 4)
    c_r, c_f = torch.arange(30) % 3, torch.arange(30) % 2  # class 2 has no fakes: left out
    buffers = [b.clone() for b in D.buffers()]
    loss = losses.get('nonsaturating', san=True)
    got = san_alignment(D, x_r, x_f, (c_r, c_f), loss=loss)['embed']
    for before, after in zip(buffers, D.buffers()):
        assert torch.equal(before, after)
    assert all(p.grad is None for p in D.parameters())
    # manual: features rho * h / sqrt(d) per sample; the batch statistics of BatchNorm in train mode, as D saw them
    D.train()
    cos = []
    h_r, h_f = D.body(x_r), D.body(x_f)
    w_r = loss.direction_weights(D(x_r, c_r), True)[:, 0]
    w_f = loss.direction_weights(D(x_f, c_f), False)[:, 0]
    for k in (0, 1):
        omega = D.embed.weight[k] / D.embed.weight[k].norm() * torch.sign(D.embed.scale[k])
        m = _numpy_optimum(h_r[c_r == k] / math.sqrt(6), h_f[c_f == k] / math.sqrt(6), w_r[c_r == k], w_f[c_f == k])
        cos.append(float(omega @ torch.as_tensor(m)))
    assert got == pytest.approx(np.mean(cos), abs=1e-10)


def test_san_alignment_refuses_a_module_without_san_layers():
    with pytest.raises(ValueError, match='no SAN layer'):
        san_alignment(nn.Linear(2, 1), torch.randn(3, 2), torch.randn(3, 2))


def test_a_plain_last_layer_is_measured_by_its_normalised_rows_with_its_bias_after_the_product():
    torch.manual_seed(6)
    D = nn.Sequential(nn.Linear(2, 8), nn.Tanh(), nn.Linear(8, 1))
    with torch.no_grad():
        D[2].bias.fill_(3.0)
    x_r, x_f = torch.randn(40, 2) + 1, torch.randn(40, 2)
    loss = losses.get('nonsaturating')
    h_r, h_f = D[:2](x_r), D[:2](x_f)
    w = D[2].weight[0] / D[2].weight[0].norm()
    rho_r, rho_f = torch.sigmoid(-D(x_r))[:, 0], torch.sigmoid(-D(x_f))[:, 0]
    expected = float((w @ torch.as_tensor(_numpy_optimum(h_r.detach(), h_f.detach(), rho_r.detach(),
                                                         rho_f.detach()))).detach())
    assert san_alignment(D, x_r, x_f, loss=loss, layers=['2'])['2'] == pytest.approx(expected, abs=1e-10)
    with pytest.raises(ValueError, match="no Linear, Conv2d or Embedding layer named '1'"):
        san_alignment(D, x_r, x_f, layers=['1'])
