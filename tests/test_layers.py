"""SAN layers: gradient routing of (fun, dir), normalization, sony/san compatibility, clear errors."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from san_ext import SANConv2d, SANEmbedding, SANLinear, normalize_san_weights, san_param_groups


def _make(kind: str, positive_scale: bool = False):
    """A SAN layer, an input whose grad we can inspect, and a function turning the layer output into logits."""
    torch.manual_seed(0)
    if kind == 'linear':
        layer = SANLinear(6, 3, bias=True, positive_scale=positive_scale)
        h = torch.randn(5, 6, requires_grad=True)
        return layer, h, lambda out: out
    if kind == 'conv':
        layer = SANConv2d(4, 2, 3, padding=1, bias=True, positive_scale=positive_scale)
        h = torch.randn(2, 4, 5, 5, requires_grad=True)
        return layer, h, lambda out: out
    layer = SANEmbedding(7, 8, positive_scale=positive_scale)
    h = torch.randn(5, 8, requires_grad=True)
    c = torch.tensor([0, 3, 6, 3, 1])

    class _Head:  # sony/san's conditional head: <h, s_c omega_c> / sqrt(d)
        def __call__(self, x, flg_train=False):
            cmap = layer(c, flg_train=flg_train)
            if flg_train:
                return ((x * cmap[0]).sum(1) / 8 ** 0.5, (x.detach() * cmap[1]).sum(1) / 8 ** 0.5)
            return (x * cmap).sum(1) / 8 ** 0.5
    return layer, h, _Head()


def _call(layer, head, h, flg_train):
    return head(h, flg_train=flg_train) if isinstance(layer, SANEmbedding) else layer(h, flg_train=flg_train)


KINDS = ['linear', 'conv', 'embedding']


@pytest.mark.parametrize('kind', KINDS)
def test_fun_grad_reaches_features_and_scale_not_weight(kind):
    layer, h, head = _make(kind)
    fun, _ = _call(layer, head, h, flg_train=True)
    fun.square().sum().backward()
    assert layer.weight.grad is None or torch.count_nonzero(layer.weight.grad) == 0
    assert torch.count_nonzero(layer.scale.grad) > 0
    assert torch.count_nonzero(h.grad) > 0


@pytest.mark.parametrize('kind', KINDS)
def test_dir_logit_grad_reaches_only_weight(kind):
    layer, h, head = _make(kind)
    _, dir_ = _call(layer, head, h, flg_train=True)
    dir_.square().sum().backward()
    assert torch.count_nonzero(layer.weight.grad) > 0
    assert layer.scale.grad is None or torch.count_nonzero(layer.scale.grad) == 0
    assert h.grad is None or torch.count_nonzero(h.grad) == 0
    if getattr(layer, 'bias', None) is not None:
        assert layer.bias.grad is None or torch.count_nonzero(layer.bias.grad) == 0


@pytest.mark.parametrize('kind', KINDS)
def test_plain_forward_equals_fun_equals_dir(kind):
    layer, h, head = _make(kind)
    plain = _call(layer, head, h, flg_train=False)
    fun, dir_ = _call(layer, head, h, flg_train=True)
    torch.testing.assert_close(fun, plain, rtol=0, atol=0)
    torch.testing.assert_close(dir_, plain, rtol=0, atol=0)


def test_linear_matches_independent_numpy_formula():
    layer, h, _ = _make('linear')
    with torch.no_grad():
        layer.bias.normal_()
        layer.weight.mul_(3.0)  # off the sphere: the forward must normalise anyway
    w, s, b = (t.detach().double().numpy() for t in (layer.weight, layer.scale, layer.bias))
    x = h.detach().double().numpy()
    expected = ((x + b) @ (w / np.linalg.norm(w, axis=1, keepdims=True)).T) * s
    np.testing.assert_allclose(layer(h).detach().double().numpy(), expected, rtol=1e-5, atol=1e-6)


def test_conv_matches_plain_conv_with_scaled_unit_kernel():
    layer, h, _ = _make('conv')
    with torch.no_grad():
        layer.bias.normal_()
    kernel = layer.weight / layer.weight.flatten(1).norm(dim=1).view(-1, 1, 1, 1) * layer.scale.view(-1, 1, 1, 1)
    expected = F.conv2d(h + layer.bias.view(1, -1, 1, 1), kernel, padding=1)
    torch.testing.assert_close(layer(h), expected)


def test_init_scale_is_norm_of_pytorch_default_init():
    torch.manual_seed(3)
    ref = nn.Linear(10, 4, bias=False)
    torch.manual_seed(3)
    san = SANLinear(10, 4, bias=False)
    torch.testing.assert_close(san.scale.detach(), ref.weight.detach().norm(dim=1))
    torch.testing.assert_close(san.weight * san.scale.view(-1, 1), ref.weight)
    torch.manual_seed(3)
    ref_conv = nn.Conv2d(3, 2, 4, bias=False)
    torch.manual_seed(3)
    san_conv = SANConv2d(3, 2, 4, bias=False)
    torch.testing.assert_close(san_conv.scale.detach(), ref_conv.weight.detach().flatten(1).norm(dim=1))


@pytest.mark.parametrize('kind', KINDS)
def test_normalize_weight_gives_unit_rows(kind):
    layer, _, _ = _make(kind)
    with torch.no_grad():
        layer.weight.mul_(torch.rand(layer.weight.shape[0], *([1] * (layer.weight.ndim - 1))) * 5 + 0.1)
    assert not torch.allclose(layer.weight.flatten(1).norm(dim=1), torch.ones(layer.weight.shape[0]))
    layer.normalize_weight()
    torch.testing.assert_close(layer.weight.flatten(1).norm(dim=1), torch.ones(layer.weight.shape[0]))


def test_normalize_san_weights_walks_the_tree_and_skips_plain_layers():
    model = nn.Sequential(nn.Linear(4, 4), SANLinear(4, 2), nn.Sequential(SANConv2d(2, 1, 1), SANEmbedding(3, 2)))
    plain_before = model[0].weight.detach().clone()
    for m in model.modules():
        if hasattr(m, 'scale'):
            with torch.no_grad():
                m.weight.mul_(2.5)
    assert normalize_san_weights(model) == 3
    for m in (model[1], model[2][0], model[2][1]):
        torch.testing.assert_close(m.weight.flatten(1).norm(dim=1), torch.ones(m.weight.shape[0]))
    torch.testing.assert_close(model[0].weight, plain_before)


def test_sony_san_state_dict_loads():
    # Key names and shapes of sony/san's pg_modules/san_modules.py, written out independently of our modules.
    lin = {'weight': torch.randn(3, 6), 'scale': torch.rand(3), 'bias': torch.randn(6)}
    conv = {'weight': torch.randn(1, 512, 4, 4), 'scale': torch.rand(1)}
    emb = {'weight': torch.randn(1000, 64), 'scale': torch.rand(1000, 1)}
    SANLinear(6, 3).load_state_dict(lin, strict=True)
    SANConv2d(512, 1, 4, 1, 0, bias=False).load_state_dict(conv, strict=True)
    layer = SANEmbedding(1000, 64)
    layer.load_state_dict(emb, strict=True)
    c = torch.tensor([5, 999])
    expected = emb['weight'][c] / emb['weight'][c].norm(dim=1, keepdim=True) * emb['scale'][c]
    torch.testing.assert_close(layer(c), expected)


def test_positive_scale_keeps_the_direction_update_pointing_to_the_data():
    # Wasserstein direction step: ascend mean dir(real) - mean dir(fake). With s < 0 and no guard the gradient
    # on omega points away from mean(h_real) - mean(h_fake); with positive_scale it points toward it.
    h_real, h_fake = torch.tensor([[2.0, 0.0]]), torch.tensor([[0.0, 0.0]])
    for positive, expected_sign in ((False, -1), (True, 1)):
        layer = SANLinear(2, 1, bias=False, positive_scale=positive)
        with torch.no_grad():
            layer.weight.copy_(torch.tensor([[0.6, 0.8]]))
            layer.scale.fill_(-1.0)
        gain = layer(h_real, flg_train=True)[1].mean() - layer(h_fake, flg_train=True)[1].mean()
        gain.backward()
        assert torch.sign(-layer.weight.grad[0, 0]) == -expected_sign  # descent direction on -gain
        assert torch.sign(layer.weight.grad[0, 0]) == expected_sign


def test_san_param_groups_separate_the_directions():
    model = nn.Sequential(nn.Linear(4, 4), SANLinear(4, 1))
    groups = san_param_groups(model, dir_lr=1e-4, lr=2e-3)
    assert groups[1]['params'] == [model[1].weight] and groups[1]['lr'] == 1e-4
    assert {id(p) for p in groups[0]['params']} == {id(p) for p in model.parameters()} - {id(model[1].weight)}
    torch.optim.Adam(groups)  # builds


@given(n=st.integers(1, 4), fin=st.integers(1, 9), fout=st.integers(1, 5), scale=st.floats(0.1, 10))
@settings(max_examples=25, deadline=None)
def test_linear_value_is_invariant_to_weight_norm(n, fin, fout, scale):
    layer = SANLinear(fin, fout)
    x = torch.randn(n, fin)
    before = layer(x)
    with torch.no_grad():
        layer.weight.mul_(scale)
    torch.testing.assert_close(layer(x), before)


def test_bad_input_errors_are_clear():
    with pytest.raises(ValueError, match=r'expects input \[..., 6\]'):
        SANLinear(6, 2)(torch.randn(3, 5))
    with pytest.raises(ValueError, match=r'expects input \[N, 4, H, W\]'):
        SANConv2d(4, 1, 3)(torch.randn(2, 3, 8, 8))
    emb = SANEmbedding(10, 4)
    with pytest.raises(ValueError, match=r'10 classes \(ids 0..9\).*\[0, 10\]'):
        emb(torch.tensor([0, 10]))
    with pytest.raises(ValueError, match=r'\[-1, 2\]'):
        emb(torch.tensor([-1, 2]))
    with pytest.raises(TypeError, match='argmax'):
        emb(torch.eye(10)[:2])
