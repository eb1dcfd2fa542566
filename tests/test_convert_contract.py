"""Contract of ``san_ext.convert.sanify``: what the converted layer keeps, how the wrapper routes, and what it says.

Guards the conversion against the bugs mutation testing found unguarded: constructor arguments that are not
forwarded (positive_scale, dtype, device, bias, dilation, padding_mode), nested layer names replaced at the wrong
place, an already-SAN layer converted again, the bias-residual tolerance, the wrapper's routing state, kwargs
and detaching in both passes, freezing in the ``dir`` pass, the single-pass shortcut, and the exact text of every
error message. Expected values come from torch's own ``nn.Linear`` / ``nn.Conv2d`` / ``F.linear`` / ``F.conv2d``
with hand-normalised weights, never from the code under test.
"""

import copy
import functools

import pytest
import torch
import torch.nn.functional as F
from messages import raised_message  # tests/messages.py
from torch import nn

from san_ext import SANConv2d, SANDiscriminator, SANLinear, sanify
from san_ext.convert import _is_reshape_of, find_last_layer


def _perturbed(module: nn.Module, seed: int = 0) -> nn.Module:
    """``module`` with every parameter moved off its init (non-zero biases included)."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return module


class ViewD(nn.Module):
    """Linear body and a 1-output head whose logit is ``gain * fc(h).view(-1)``; counts its forward calls."""

    def __init__(self, gain: float = 1.0):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(3, 8), nn.ReLU())
        self.fc = nn.Linear(8, 1)
        self.gain = gain
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        out = self.fc(self.body(x)).view(-1)
        return out if self.gain == 1.0 else self.gain * out


class MeanD(ViewD):
    """Two-output head averaged into one logit: not a reshape of the layer output, so ``dir`` takes a 2nd pass."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 2)

    def forward(self, x):
        self.calls += 1
        return self.fc(self.body(x)).mean(dim=1)


class KwargD(nn.Module):
    """D whose logit needs keyword arguments: a tensor ``gain`` and a non-tensor ``reduce``."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(3, 8), nn.ReLU())
        self.fc = nn.Linear(8, 2)

    def forward(self, x, *, gain, reduce='sum'):
        out = self.fc(self.body(x)) * gain.unsqueeze(1)
        return out.sum(dim=1) if reduce == 'sum' else out.mean(dim=1)


class ProjectionD(nn.Module):
    """Projection discriminator: logit = fc(h) + <embed(y), h>; only ``fc`` becomes SAN."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(3, 8), nn.ReLU())
        self.embed = nn.Embedding(4, 8)
        self.fc = nn.Linear(8, 1)

    def forward(self, x, y):
        h = self.body(x)
        return self.fc(h).squeeze(1) + (self.embed(y) * h).sum(dim=1)


class ListInputD(nn.Module):
    """D taking a list of tensors (not detached by the wrapper, only by the SAN layer's ``dir`` path)."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(4, 8), nn.ReLU())
        self.fc = nn.Linear(8, 2)

    def forward(self, xs):
        return self.fc(self.body(torch.cat(xs, dim=1))).mean(dim=1)


class NestedD(nn.Module):
    """The layer to convert lives at ``head.fc`` (and a decoy ``fc`` attribute name exists at the root)."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(3, 8), nn.ReLU())
        self.head = nn.Module()
        self.head.fc = nn.Linear(8, 1)

    def forward(self, x):
        return self.head.fc(self.body(x)).view(-1)


def _normalized(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Hand-normalised direction (rows of unit L2 norm) and the row norms."""
    norm = weight.flatten(1).norm(dim=1)
    return weight / norm.view(-1, *([1] * (weight.ndim - 1))), norm


# --- constructor arguments forwarded to the SAN layer -------------------------------------------------------------


@pytest.mark.parametrize('kind', ['linear', 'conv'])
@pytest.mark.parametrize('positive_scale', [False, True])
def test_positive_scale_is_forwarded_and_honoured(kind, positive_scale):
    """Bugs: positive_scale=None / dropped in _build_san_layer, None passed by sanify, default flipped to True."""
    torch.manual_seed(3)
    layer = nn.Linear(4, 3, bias=False) if kind == 'linear' else nn.Conv2d(2, 3, 3, bias=False)
    x = torch.randn(2, 4) if kind == 'linear' else torch.randn(2, 2, 5, 5)
    w = layer.weight.detach().clone()
    kwargs = {'positive_scale': True} if positive_scale else {}  # False: the default
    san_D = sanify(nn.Sequential(layer), **kwargs)
    san = san_D.san_layer
    assert san.positive_scale is positive_scale
    omega, norm = _normalized(w)
    torch.testing.assert_close(san.scale.detach(), norm)  # scale = |row norm| > 0 at conversion
    with torch.no_grad():
        san.scale.neg_()  # a scale that training drove negative
    sign = 1.0 if positive_scale else -1.0  # positive_scale uses |s|
    if kind == 'linear':
        expected = sign * F.linear(x, omega) * norm
    else:
        expected = sign * F.conv2d(x, omega) * norm.view(-1, 1, 1)
    torch.testing.assert_close(san_D(x), expected)
    fun, dir_ = san_D(x, flg_train=True)
    torch.testing.assert_close(fun, expected)
    torch.testing.assert_close(dir_, expected)


@pytest.mark.parametrize('kind', ['linear', 'conv'])
def test_float64_discriminator_stays_float64(kind):
    """Bugs: dtype=None / dtype dropped from the SAN layer kwargs, or **kw dropped for SANLinear / SANConv2d."""
    if kind == 'linear':
        layer = _perturbed(nn.Linear(4, 3, dtype=torch.float64), 4)
        x = torch.randn(5, 4, dtype=torch.float64)
        expected = F.linear(x, layer.weight.detach(), layer.bias.detach())
    else:
        layer = _perturbed(nn.Conv2d(3, 2, 3, dtype=torch.float64), 4)
        x = torch.randn(2, 3, 6, 6, dtype=torch.float64)
        expected = F.conv2d(x, layer.weight.detach(), layer.bias.detach())
    san_D = sanify(nn.Sequential(layer))
    san = san_D.san_layer
    assert {name: p.dtype for name, p in san.named_parameters()} == {
        'weight': torch.float64, 'scale': torch.float64, 'bias': torch.float64}
    out = san_D(x)
    assert out.dtype == torch.float64
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)  # float32 anywhere would miss this


@pytest.mark.parametrize('kind', ['linear', 'conv'])
def test_device_is_forwarded_not_taken_from_the_default(kind):
    """Bugs: device=None / device dropped: the SAN layer would be built on torch's default device, not D's."""
    torch.manual_seed(5)
    layer = nn.Linear(4, 3) if kind == 'linear' else nn.Conv2d(3, 2, 3)
    x = torch.randn(2, 4) if kind == 'linear' else torch.randn(2, 3, 5, 5)
    expected = layer(x).detach()
    with torch.device('meta'):  # stands in for a CUDA default device: D itself is on the CPU
        san_D = sanify(nn.Sequential(layer))
    assert {p.device.type for p in san_D.parameters()} == {'cpu'}
    torch.testing.assert_close(san_D(x), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize('kind', ['linear', 'conv'])
@pytest.mark.parametrize('how', ['layer_without_bias', 'bias_drop'])
def test_no_bias_means_no_san_bias_parameter(kind, how):
    """Bugs: bias=keep_bias dropped from the kwargs (SAN layers default to bias=True), or **kw dropped."""
    has_bias = how == 'bias_drop'
    layer = nn.Linear(4, 3, bias=has_bias) if kind == 'linear' else nn.Conv2d(3, 2, 3, bias=has_bias)
    san_D = sanify(nn.Sequential(layer), bias='drop' if has_bias else 'keep')
    assert san_D.san_layer.bias is None
    assert sorted(name for name, _ in san_D.named_parameters()) == ['module.0.scale', 'module.0.weight']


CONV_CASES = {  # name: (Conv2d kwargs, input shape, bias mode, attributes the SAN layer must keep)
    'dilation': (dict(kernel_size=3, dilation=2), (2, 3, 9, 9), 'keep', dict(dilation=(2, 2))),
    'stride_padding_zeros': (dict(kernel_size=3, stride=2, padding=1, bias=False), (2, 3, 8, 8), 'keep',
                             dict(stride=(2, 2), padding=(1, 1))),
    'reflect_padding_moves_bias': (dict(kernel_size=3, padding=1, padding_mode='reflect'), (2, 3, 6, 6), 'keep',
                                   dict(padding_mode='reflect')),
    'circular_padding_dilated': (dict(kernel_size=3, padding=2, dilation=2, padding_mode='circular', bias=False),
                                 (2, 3, 7, 7), 'keep', dict(padding_mode='circular', dilation=(2, 2))),
    'same_padding': (dict(kernel_size=3, padding='same', bias=False), (2, 3, 6, 6), 'keep', dict(padding='same')),
    'valid_padding_moves_bias': (dict(kernel_size=3, padding='valid'), (2, 3, 6, 6), 'keep', dict(padding='valid')),
}


@pytest.mark.parametrize('case', CONV_CASES)
def test_conv_geometry_is_kept(case):
    """Bugs: dilation or padding_mode not passed to SANConv2d; 'valid' padding mistaken for padded (bias refused)."""
    conv_kw, shape, bias, attrs = CONV_CASES[case]
    conv = _perturbed(nn.Conv2d(3, 2, **conv_kw), 6)
    x = torch.randn(*shape)
    expected = conv(x).detach()  # torch's own Conv2d, padding modes included
    san_D = sanify(nn.Sequential(copy.deepcopy(conv)), bias=bias)
    san = san_D.san_layer
    assert isinstance(san, SANConv2d)
    for attr, value in attrs.items():
        assert getattr(san, attr) == value, attr
    torch.testing.assert_close(san_D(x), expected, rtol=1e-5, atol=1e-5)
    fun, dir_ = san_D(x, flg_train=True)
    torch.testing.assert_close(fun, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(dir_, expected, rtol=1e-5, atol=1e-5)


# --- where the layer is replaced ----------------------------------------------------------------------------------


def test_nested_layer_is_replaced_in_its_parent():
    """Bugs: rpartition on the wrong separator, the root used as the parent, get_submodule(None)."""
    D = _perturbed(NestedD(), 7)
    x = torch.randn(5, 3)
    w, b = D.head.fc.weight.detach().clone(), D.head.fc.bias.detach().clone()
    expected = F.linear(D.body(x), w, b).view(-1).detach()
    san_D = sanify(D)
    assert san_D.layer_name == 'head.fc'
    assert isinstance(D.head.fc, SANLinear)
    assert [name for name, _ in D.named_children()] == ['body', 'head']  # no stray 'head.fc' child at the root
    torch.testing.assert_close(san_D(x), expected, rtol=1e-5, atol=1e-6)
    fun, dir_ = san_D(x, flg_train=True)
    torch.testing.assert_close(fun, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(dir_, expected, rtol=1e-5, atol=1e-6)


def test_auto_skips_a_layer_that_is_already_san():
    """Bug: find_last_layer asking is_san_layer(None), so a trailing SAN layer is picked (and then refused)."""
    D = nn.Sequential(nn.Linear(2, 4, bias=False), nn.ReLU(), SANLinear(4, 1))
    assert find_last_layer(D) == '0'
    assert sanify(D).layer_name == '0'
    assert isinstance(D[0], SANLinear)


def test_named_san_layer_is_refused_with_its_message():
    """Bugs: is_san_layer(None) in sanify (the SAN layer is rebuilt), ValueError(None) as the message."""
    D = nn.Sequential(nn.Linear(2, 4), nn.ReLU(), SANLinear(4, 1))
    with pytest.raises(ValueError) as err:
        sanify(D, layer='2')
    assert str(err.value) == "layer '2' is already a SAN layer"


# --- the input-side bias and its residual tolerance ---------------------------------------------------------------


def _bias_probe(b_sum: float, b_zero: float) -> nn.Conv2d:
    """float64 Conv2d(1, 2, 2) whose rows both have norm 1; row 0 sums to 2 over space, row 1 sums to 0.

    A constant input shift beta moves output 0 by 2*beta and output 1 not at all, so moving the output bias
    (b_sum, b_zero) to the input side is exact for output 0 and leaves exactly |b_zero| as residual.
    """
    conv = nn.Conv2d(1, 2, 2, dtype=torch.float64)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([[[[0.5, 0.5], [0.5, 0.5]]], [[[0.5, -0.5], [0.5, -0.5]]]], dtype=torch.float64))
        conv.bias.copy_(torch.tensor([b_sum, b_zero], dtype=torch.float64))  # float32 would round b_zero
    return conv


AT_TOLERANCE = 1e-5 * (1 + 1.0)  # the documented tolerance 1e-5 * (1 + max|b / s|) for max|b / s| = 1

RESIDUAL_CASES = {  # name: (b_sum, b_zero, accepted)
    'residual_exactly_at_tolerance': (1.0, AT_TOLERANCE, True),
    'residual_one_ulp_above_tolerance': (1.0, float(torch.nextafter(torch.tensor(AT_TOLERANCE, dtype=torch.float64),
                                                                    torch.tensor(1.0, dtype=torch.float64))), False),
    'tiny_residual_under_large_bias': (100.0, 1e-4, True),  # tolerance 1.01e-3 grows with the bias
    'zero_residual_large_bias': (100.0, 0.0, True),
    'small_residual_above_tolerance': (1.0, 2.5e-5, False),
    'large_residual': (1.0, 0.5, False),
}


@pytest.mark.parametrize('case', RESIDUAL_CASES)
def test_bias_residual_threshold(case):
    """Bugs: '>=' for '>', tolerance 1e-5/(1+m), 1.00001*(1+m), 1e-5*(1-m), 1e-5*(2+m); ValueError(None)."""
    b_sum, b_zero, accepted = RESIDUAL_CASES[case]
    conv = _bias_probe(b_sum, b_zero)
    x = torch.randn(2, 1, 4, 4, dtype=torch.float64)
    expected = F.conv2d(x, conv.weight.detach(), conv.bias.detach())
    if not accepted:
        with pytest.raises(ValueError) as err:
            sanify(nn.Sequential(conv))
        assert str(err.value) == (f'sanify cannot represent the output bias of this layer on the input side '
                                  f'(residual {abs(b_zero):.2e}: more outputs than independent inputs); '
                                  'pass bias="drop"')
        return
    out = sanify(nn.Sequential(conv))(x)
    torch.testing.assert_close(out[:, 0], expected[:, 0], rtol=1e-10, atol=1e-10)  # exact where representable
    torch.testing.assert_close(out[:, 1], expected[:, 1] - b_zero, rtol=1e-10, atol=1e-10)  # the residual


# --- the wrapper's routing ----------------------------------------------------------------------------------------


@pytest.mark.parametrize('after_train_call', [False, True])
def test_plain_forward_is_the_unrouted_discriminator(after_train_call):
    """Bugs: _route initialised or reset to '' instead of None, so D(x) would return the dir logit (omega only)."""
    san_D = sanify(_perturbed(ViewD(), 8))
    x = torch.randn(4, 3, requires_grad=True)
    if after_train_call:
        san_D(x, flg_train=True)
    san_D(x).sum().backward()
    grads = {name: p.grad for name, p in san_D.named_parameters()}
    assert all(g is not None and torch.count_nonzero(g) > 0 for g in grads.values()), grads
    assert torch.count_nonzero(x.grad) > 0


@pytest.mark.parametrize('make, passes', [(ViewD, 1), (MeanD, 2)])
def test_second_pass_only_when_the_output_is_not_a_reshape(make, passes):
    """Bugs: _is_reshape_of(None, ...) or numel '!=': every flg_train call would run D twice."""
    san_D = sanify(make())
    san_D(torch.randn(4, 3), flg_train=True)
    assert san_D.module.calls == passes


def test_same_size_output_that_is_not_a_reshape_gets_its_own_dir():
    """Bug: ``A and B or C`` in _is_reshape_of: a scaled logit of the same size would be taken for a reshape."""
    D = _perturbed(ViewD(gain=-2.0), 9)
    x = torch.randn(4, 3)
    expected = (-2.0 * F.linear(D.body(x), D.fc.weight, D.fc.bias).view(-1)).detach()
    fun, dir_ = sanify(D)(x, flg_train=True)
    torch.testing.assert_close(fun, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(dir_, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize('out, layer_out, expected', [
    (torch.arange(6.).view(2, 3), torch.arange(6.), True),
    (torch.arange(6.), torch.arange(6.).view(3, 2, 1), True),
    (2 * torch.arange(6.), torch.arange(6.), False),  # same size, other values
    (torch.arange(3.), torch.arange(6.), False),  # other size
    ((torch.arange(6.),), torch.arange(6.), False),  # not a tensor
])
def test_is_reshape_of_only_for_a_real_reshape(out, layer_out, expected):
    """Bugs: ``A and B or C`` and numel '!=' in _is_reshape_of."""
    assert _is_reshape_of(out, layer_out) is expected


def test_kwargs_reach_d_in_every_pass():
    """Bugs: kwargs dropped in the plain call, in the fun pass, in the dir pass, or their values replaced by None."""
    D = _perturbed(KwargD(), 10)
    x, gain = torch.randn(4, 3), torch.tensor([1.0, -2.0, 0.5, 3.0])
    h = D.body(x).detach()
    per_out = F.linear(h, D.fc.weight.detach(), D.fc.bias.detach()) * gain.unsqueeze(1)
    san_D = sanify(D)
    torch.testing.assert_close(san_D(x, gain=gain), per_out.sum(dim=1), rtol=1e-5, atol=1e-5)
    fun, dir_ = san_D(x, flg_train=True, gain=gain, reduce='mean')  # a non-tensor kwarg passes through as is
    torch.testing.assert_close(fun, per_out.mean(dim=1), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(dir_, per_out.mean(dim=1), rtol=1e-5, atol=1e-5)


def test_dir_pass_detaches_tensor_kwargs():
    """Bug: the dir pass not detaching its tensor arguments: dir would train the ``gain`` tensor."""
    san_D = sanify(_perturbed(KwargD(), 11))
    gain = torch.tensor([1.0, -2.0, 0.5, 3.0], requires_grad=True)
    _, dir_ = san_D(torch.randn(4, 3), flg_train=True, gain=gain)
    dir_.sum().backward()
    assert gain.grad is None
    assert torch.count_nonzero(san_D.san_layer.weight.grad) > 0


def test_dir_pass_routes_tensors_nested_in_arguments_through_the_san_dir_path():
    """Bug: _route set to None for the dir pass: the layer would run unrouted and pass gradient to its input."""
    san_D = sanify(_perturbed(ListInputD(), 12))
    xs = [torch.randn(5, 2, requires_grad=True), torch.randn(5, 2, requires_grad=True)]
    fun, dir_ = san_D(xs, flg_train=True)
    torch.testing.assert_close(dir_, fun)
    dir_.sum().backward()
    assert all(x.grad is None or torch.count_nonzero(x.grad) == 0 for x in xs)
    assert torch.count_nonzero(san_D.san_layer.weight.grad) > 0


def test_dir_pass_freezes_other_parameters_and_restores_them():
    """Bugs: requires_grad_(True) instead of False in the dir pass (the projection embedding would learn from dir)."""
    D = _perturbed(ProjectionD(), 13)
    D.body[0].bias.requires_grad_(False)  # frozen by the user: must stay frozen
    x, y = torch.randn(6, 3), torch.tensor([0, 1, 2, 3, 1, 0])
    expected = D(x, y).detach()
    san_D = sanify(D)
    fun, dir_ = san_D(x, y, flg_train=True)
    torch.testing.assert_close(fun, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(dir_, expected, rtol=1e-5, atol=1e-6)
    dir_.sum().backward()
    omega = san_D.san_layer.weight
    assert torch.count_nonzero(omega.grad) > 0
    leaked = [name for name, p in san_D.named_parameters() if p is not omega and p.grad is not None]
    assert leaked == []
    assert {name for name, p in san_D.named_parameters() if not p.requires_grad} == {'module.body.0.bias'}
    san_D.zero_grad(set_to_none=True)
    fun, _ = san_D(x, y, flg_train=True)
    fun.sum().backward()
    assert torch.count_nonzero(D.embed.weight.grad) > 0
    assert omega.grad is None or torch.count_nonzero(omega.grad) == 0


# --- exact error messages -----------------------------------------------------------------------------------------


class Empty(nn.Module):
    """A module with no submodules at all."""

    def forward(self, x):
        return x


class HeadlessD(nn.Module):
    """No Linear/Conv2d anywhere."""

    def __init__(self):
        super().__init__()
        self.act = nn.ReLU()
        self.inner = nn.Sequential(nn.Tanh())


_message = functools.partial(raised_message, error=ValueError)  # TypeError only where a test says so


@pytest.mark.parametrize('make, expected', [
    (lambda: nn.Sequential(nn.ReLU(), nn.Bilinear(2, 2, 1)),
     'sanify found no nn.Linear or nn.Conv2d in Sequential (modules: Bilinear, ReLU); '
     'pass layer=NAME of the last linear layer'),
    (HeadlessD, 'sanify found no nn.Linear or nn.Conv2d in HeadlessD (modules: ReLU, Sequential, Tanh); '
                'pass layer=NAME of the last linear layer'),
    (Empty, 'sanify found no nn.Linear or nn.Conv2d in Empty (modules: none); '
            'pass layer=NAME of the last linear layer'),
])
def test_message_no_linear_layer(make, expected):
    """Bugs: type(None) for the module kinds or D's name, D's own class listed, join/'none' fallback changed."""
    assert _message(sanify, make()) == expected


@pytest.mark.parametrize('make, expected', [
    (lambda: nn.Sequential(nn.Linear(2, 4), nn.ReLU(), nn.Linear(4, 1)),
     "Sequential has no submodule 'head'; its Linear/Conv2d layers: 0, 2"),
    (HeadlessD, "HeadlessD has no submodule 'head'; its Linear/Conv2d layers: none"),
])
def test_message_unknown_layer_name(make, expected):
    """Bugs: type(None) for D's name, the 'none' fallback changed."""
    assert _message(sanify, make(), layer='head') == expected


def test_message_padded_conv_bias():
    """Bugs: the padded-Conv2d message changed ('XX..XX', upper/lower case)."""
    assert _message(sanify, nn.Sequential(nn.Conv2d(3, 1, 3, padding='same'))) == (
        'sanify cannot move the output bias of a padded Conv2d to the input side exactly '
        '(zero padding breaks the constant shift at the borders); pass bias="drop"')


def test_message_grouped_conv():
    """Bugs: the grouped-Conv2d message changed."""
    assert _message(sanify, nn.Sequential(nn.Conv2d(4, 2, 1, groups=2))) == (
        'sanify cannot convert a grouped Conv2d (groups=2): SAN needs one direction over all input channels '
        'per output')


def test_message_named_layer_of_another_kind():
    """Bugs: TypeError(None), type(None) for the layer kind."""
    D = nn.Sequential(nn.Linear(2, 2), nn.Bilinear(2, 2, 1))
    assert _message(sanify, D, layer='1', error=TypeError) == 'sanify converts nn.Linear or nn.Conv2d, got Bilinear'


def test_message_already_converted_and_bad_bias_mode():
    """Bugs: the already-converted message changed ('XX..XX', lower case)."""
    san_D = sanify(nn.Sequential(nn.Linear(2, 1)))
    assert isinstance(san_D, SANDiscriminator)
    assert _message(sanify, san_D) == 'D is already converted (a SANDiscriminator); call sanify once'
    assert _message(sanify, nn.Sequential(nn.Linear(2, 1)), bias='move') == "bias must be 'keep' or 'drop', got 'move'"
