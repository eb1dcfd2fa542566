"""sanify: function value kept at conversion, (fun, dir) routing through the wrapper, what it refuses."""

import copy
import io

import pytest
import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from san_ext import SANConv2d, SANDiscriminator, SANLinear, sanify


class ConvD(nn.Module):
    """DCGAN-style D: conv body, a 4x4 conv to one logit, then ``.view(-1)`` (single pass)."""

    def __init__(self, tail: str = 'view', last_bias: bool = False):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 8, 4, 2, 1), nn.LeakyReLU(0.2), nn.Conv2d(8, 16, 4, 2, 1),
                                  nn.LeakyReLU(0.2))
        self.last = nn.Conv2d(16, 1, 4, 1, 0, bias=last_bias)
        self.tail = tail

    def forward(self, x):
        out = self.last(self.body(x))  # [N, 1, H', W']
        return out.view(-1) if self.tail == 'view' else out.mean(dim=(1, 2, 3))  # PatchGAN-style mean: 2 passes


def _mlp(last_bias=True):
    return nn.Sequential(nn.Linear(2, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 1, bias=last_bias))


CASES = {
    'mlp_with_output_bias': (lambda: _mlp(True), (9, 2)),
    'conv_view_tail': (lambda: ConvD('view'), (3, 3, 16, 16)),
    'conv_view_tail_with_bias': (lambda: ConvD('view', last_bias=True), (3, 3, 16, 16)),
    'conv_mean_tail': (lambda: ConvD('mean'), (3, 3, 24, 24)),
}


@pytest.mark.parametrize('case', CASES)
def test_sanify_keeps_the_function_value(case):
    make, shape = CASES[case]
    torch.manual_seed(0)
    D = make()
    with torch.no_grad():
        for p in D.parameters():
            p.add_(0.1 * torch.randn_like(p))  # non-zero biases, too
    x = torch.randn(*shape)
    before = D(x)
    san_D = sanify(D)
    torch.testing.assert_close(san_D(x), before, rtol=1e-5, atol=1e-6)
    fun, dir_ = san_D(x, flg_train=True)
    torch.testing.assert_close(fun, before, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(dir_, before, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize('case', CASES)
def test_sanified_routing_dir_reaches_only_omega_fun_never_omega(case):
    make, shape = CASES[case]
    torch.manual_seed(1)
    san_D = sanify(make())
    x = torch.randn(*shape, requires_grad=True)
    layer = san_D.san_layer
    fun, dir_ = san_D(x, flg_train=True)
    dir_.sum().backward()
    assert torch.count_nonzero(layer.weight.grad) > 0
    for name, p in san_D.named_parameters():
        if p is not layer.weight:
            assert p.grad is None or torch.count_nonzero(p.grad) == 0, name
    assert x.grad is None or torch.count_nonzero(x.grad) == 0
    assert all(p.requires_grad for p in san_D.parameters())  # the second pass restores requires_grad
    san_D.zero_grad(set_to_none=True)
    fun, _ = san_D(x, flg_train=True)
    fun.sum().backward()
    assert layer.weight.grad is None or torch.count_nonzero(layer.weight.grad) == 0
    assert torch.count_nonzero(layer.scale.grad) > 0
    first_body_weight = next(p for n, p in san_D.named_parameters() if 'weight' in n)
    assert torch.count_nonzero(first_body_weight.grad) > 0


def test_sanify_converts_the_effective_spectral_norm_weight():
    torch.manual_seed(2)
    D = nn.Sequential(spectral_norm(nn.Linear(2, 8)), nn.ReLU(), spectral_norm(nn.Linear(8, 1)))
    for _ in range(5):  # a few power iterations, as training would have done
        D(torch.randn(4, 2))
    D.eval()
    x = torch.randn(6, 2)
    before = D(x)
    san_D = sanify(D)
    assert isinstance(san_D.module[2], SANLinear)
    torch.testing.assert_close(san_D(x), before, rtol=1e-5, atol=1e-6)


def test_sanify_picks_named_layer_and_keeps_direction_and_scale():
    D = _mlp(False)
    w = D[2].weight.detach().clone()
    san_D = sanify(D, layer='2')
    torch.testing.assert_close(san_D.module[2].scale, w.norm(dim=1))
    torch.testing.assert_close(san_D.module[2].weight, w / w.norm(dim=1, keepdim=True))
    assert san_D.module[0].__class__ is nn.Linear


def test_padded_conv_output_bias_needs_drop():
    class PaddedD(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 1, 3, padding=1)

        def forward(self, x):
            return self.conv(x).flatten(1)

    with pytest.raises(ValueError, match='bias="drop"'):
        sanify(PaddedD())
    D = PaddedD()
    x = torch.randn(2, 3, 5, 5)
    bias = D.conv.bias.item()
    before = D(x)
    san_D = sanify(D, bias='drop')
    assert isinstance(san_D.module.conv, SANConv2d)
    torch.testing.assert_close(san_D(x), before - bias, rtol=1e-5, atol=1e-6)


def test_sanified_d_normalizes_copies_and_serializes():
    san_D = sanify(_mlp())
    with torch.no_grad():
        san_D.san_layer.weight.mul_(3)
    san_D.normalize_weight()
    torch.testing.assert_close(san_D.san_layer.weight.norm(dim=1), torch.ones(1))
    x = torch.randn(3, 2)
    clone = copy.deepcopy(san_D)
    torch.testing.assert_close(clone(x, flg_train=True)[1], san_D(x))
    buf = io.BytesIO()
    torch.save(san_D.state_dict(), buf)
    buf.seek(0)
    fresh = sanify(_mlp())
    fresh.load_state_dict(torch.load(buf))
    torch.testing.assert_close(fresh(x), san_D(x))


def test_sanify_refuses_what_it_cannot_convert():
    with pytest.raises(ValueError, match='no nn.Linear or nn.Conv2d'):
        sanify(nn.Sequential(nn.ReLU(), nn.Bilinear(2, 2, 1)))
    with pytest.raises(ValueError, match="no submodule 'head'.*0, 2, 4"):
        sanify(_mlp(), layer='head')
    with pytest.raises(ValueError, match='grouped Conv2d'):
        sanify(nn.Conv2d(4, 2, 1, groups=2))
    with pytest.raises(ValueError, match='already converted'):
        sanify(sanify(_mlp()))
    with pytest.raises(ValueError, match="'keep' or 'drop'"):
        sanify(_mlp(), bias='move')
    out = sanify(_mlp())
    assert isinstance(out, SANDiscriminator)
