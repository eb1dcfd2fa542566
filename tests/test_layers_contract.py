"""SAN layer API contract beyond the gradient routing: constructor arguments reach the torch base layer (device,
dtype, stride, padding, dilation, padding_mode, bias, positive_scale, the defaults, the RNG draws of a seeded
model), inputs of every accepted rank, exact error texts, SANEmbedding's id checks and ``[..., d]`` class vectors,
the fused-op branch of SANLinear, ``is_san_layer`` on look-alikes and ``san_param_groups``' group options.

Written against mutmut's survivors in ``san_ext/layers.py`` (``python -m san_ext.bench.mutation``): each test
below failed on the planted bug it names. Expected values come from torch.nn.functional / numpy on weights
normalised here, never from the layer's own helpers.
"""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from messages import raised_message  # tests/messages.py
from torch import nn

from san_ext import SANConv2d, SANEmbedding, SANLinear, is_san_layer, san_param_groups
from san_ext import layers as san_layers

D64 = torch.float64


def _unit_rows(w: torch.Tensor) -> torch.Tensor:
    """w with each output row (dim 0) divided by its L2 norm over all other dims, written out independently."""
    return w / w.detach().flatten(1).norm(dim=1).view(-1, *([1] * (w.ndim - 1)))


_message = raised_message


# -- constructor: device and dtype reach every parameter, the bias included ------------------------------------------
FACTORIES = {
    'linear': lambda **kw: SANLinear(5, 3, bias=True, **kw),
    'conv': lambda **kw: SANConv2d(4, 2, 3, bias=True, **kw),
}


@pytest.mark.parametrize('kind', list(FACTORIES))
def test_device_reaches_weight_scale_and_bias(kind):
    """Planted: device=None to nn.Linear/nn.Conv2d or dropped there, or bias built without device=norm.device."""
    layer = FACTORIES[kind](device='meta')
    assert {name: p.device.type for name, p in layer.named_parameters()} == {
        'weight': 'meta', 'scale': 'meta', 'bias': 'meta'}


@pytest.mark.parametrize('kind', list(FACTORIES))
def test_dtype_reaches_weight_scale_and_bias(kind):
    """Planted: dtype=None to nn.Linear/nn.Conv2d or dropped there, or bias built without dtype=norm.dtype."""
    layer = FACTORIES[kind](dtype=D64)
    assert {name: p.dtype for name, p in layer.named_parameters()} == {'weight': D64, 'scale': D64, 'bias': D64}


# -- constructor: the torch base layer is built bias-free -------------------------------------------------------------
@pytest.mark.parametrize('bias', [True, False])
@pytest.mark.parametrize('kind', ['linear', 'conv'])
def test_seeded_construction_draws_the_rng_like_a_bias_free_torch_layer(kind, bias):
    """Planted: nn.Linear/nn.Conv2d built with bias=True (or bias left at its default): the base layer's bias init
    draws extra random numbers, so every layer built after a SAN layer in a seeded model initialises differently."""
    make_san = {'linear': lambda: SANLinear(6, 3, bias=bias), 'conv': lambda: SANConv2d(4, 2, 3, bias=bias)}[kind]
    make_ref = {'linear': lambda: nn.Linear(6, 3, bias=False), 'conv': lambda: nn.Conv2d(4, 2, 3, bias=False)}[kind]
    torch.manual_seed(0)
    make_san()
    after_san = nn.Linear(3, 2).weight.detach()
    torch.manual_seed(0)
    make_ref()
    after_ref = nn.Linear(3, 2).weight.detach()
    torch.testing.assert_close(after_san, after_ref, rtol=0, atol=0)


@pytest.mark.parametrize('kind', ['linear', 'conv'])
def test_bias_false_leaves_only_the_sony_san_parameter_slots(kind):
    """Planted: register_parameter('XXbiasXX' / 'BIAS', None): a stray parameter slot besides weight/scale/bias."""
    layer = SANLinear(6, 3, bias=False) if kind == 'linear' else SANConv2d(4, 2, 3, bias=False)
    assert layer.bias is None
    assert set(layer._parameters) == {'weight', 'scale', 'bias'}
    assert not hasattr(layer, 'BIAS') and not hasattr(layer, 'XXbiasXX')


# -- constructor defaults ---------------------------------------------------------------------------------------------
def test_sanlinear_defaults_have_input_bias_and_signed_scale():
    """Planted: positive_scale defaulting to True (a negative scale would be folded to |s|)."""
    torch.manual_seed(0)
    layer = SANLinear(4, 2)
    with torch.no_grad():
        layer.scale.copy_(torch.tensor([-1.5, 2.0]))
    assert layer.positive_scale is False and layer.bias.shape == (4,)
    x = torch.randn(3, 4)
    expected = F.linear(x, _unit_rows(layer.weight.detach())) * torch.tensor([-1.5, 2.0])
    torch.testing.assert_close(layer(x), expected)


def test_sanconv2d_defaults_no_padding_input_bias_and_signed_scale():
    """Planted: padding defaulting to 1, bias defaulting to False, positive_scale defaulting to True."""
    torch.manual_seed(0)
    layer = SANConv2d(2, 3, 3)
    assert layer.positive_scale is False
    assert set(layer.state_dict()) == {'weight', 'scale', 'bias'} and layer.bias.shape == (2,)
    with torch.no_grad():
        layer.scale.copy_(torch.tensor([-1.0, 0.5, -2.0]))
        layer.bias.copy_(torch.tensor([0.3, -0.7]))
    x = torch.randn(2, 2, 6, 7)
    kernel = _unit_rows(layer.weight.detach()) * torch.tensor([-1.0, 0.5, -2.0]).view(-1, 1, 1, 1)
    expected = F.conv2d(x + torch.tensor([0.3, -0.7]).view(1, -1, 1, 1), kernel)
    out = layer(x)
    assert out.shape == (2, 3, 4, 5)
    torch.testing.assert_close(out, expected)


def test_sanembedding_defaults_to_a_signed_scale_and_takes_device_and_dtype():
    """Planted: positive_scale defaulting to True (a negative scale folded to |s|); device or dtype dropped or None
    on the way to nn.Embedding (the scale is built from the weight, so it follows)."""
    torch.manual_seed(0)
    layer = SANEmbedding(4, 3)
    with torch.no_grad():
        layer.scale.neg_()
    assert layer.positive_scale is False
    c = torch.tensor([3, 1])
    np.testing.assert_allclose(layer(c).detach().double().numpy(), _numpy_class_vectors(layer, c), rtol=1e-6)
    assert {n: p.device.type for n, p in SANEmbedding(4, 3, device='meta').named_parameters()} == {
        'weight': 'meta', 'scale': 'meta'}
    assert {n: p.dtype for n, p in SANEmbedding(4, 3, dtype=D64).named_parameters()} == {'weight': D64,
                                                                                           'scale': D64}


# -- SANConv2d forwards the convolution geometry -----------------------------------------------------------------------
CONV_GEOMETRY = {
    'stride': dict(stride=2, padding=1),
    'dilation': dict(dilation=2, padding=2),
    'reflect': dict(padding=1, padding_mode='reflect'),
    'circular': dict(padding=2, padding_mode='circular'),
}


@pytest.mark.parametrize('geometry', list(CONV_GEOMETRY))
def test_sanconv2d_forwards_stride_dilation_and_padding_mode(geometry):
    """Planted: stride, dilation or padding_mode not passed to nn.Conv2d (silently 1, 1, 'zeros')."""
    kw = CONV_GEOMETRY[geometry]
    torch.manual_seed(0)
    layer = SANConv2d(3, 2, 3, bias=True, dtype=D64, **kw)
    with torch.no_grad():
        layer.bias.normal_()
        layer.weight.mul_(2.5)  # off the sphere: the forward must normalise anyway
    x = torch.randn(2, 3, 9, 8, dtype=D64)
    w, s, b = (t.detach() for t in (layer.weight, layer.scale, layer.bias))
    h = x + b.view(1, -1, 1, 1)
    pad, mode = kw['padding'], kw.get('padding_mode', 'zeros')
    if mode != 'zeros':
        h, pad = F.pad(h, (pad,) * 4, mode=mode), 0
    expected = F.conv2d(h, _unit_rows(w) * s.view(-1, 1, 1, 1), stride=kw.get('stride', 1), padding=pad,
                        dilation=kw.get('dilation', 1))
    torch.testing.assert_close(layer(x), expected, rtol=1e-12, atol=1e-12)


def test_sanconv2d_positive_scale_uses_abs_scale():
    """Planted: positive_scale not handed to _init_san (None there: the signed scale is used)."""
    torch.manual_seed(0)
    layer = SANConv2d(2, 2, 1, bias=False, positive_scale=True)
    with torch.no_grad():
        layer.scale.copy_(torch.tensor([-3.0, 0.5]))
    assert layer.positive_scale is True
    x = torch.randn(1, 2, 3, 3)
    expected = F.conv2d(x, _unit_rows(layer.weight.detach()) * torch.tensor([3.0, 0.5]).view(-1, 1, 1, 1))
    torch.testing.assert_close(layer(x), expected)


# -- accepted input ranks ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize('shape', [(5,), (2, 3, 5), (1, 4, 2, 5)], ids=str)
def test_sanlinear_takes_any_rank_with_features_last(shape):
    """Planted: rank check `ndim <= 1` / `ndim < 2` (rejects a single vector) or features read at shape[+1]."""
    torch.manual_seed(0)
    layer = SANLinear(5, 3, bias=True, dtype=D64)
    with torch.no_grad():
        layer.bias.normal_()
    x = torch.randn(shape, dtype=D64)
    w, s, b = (t.detach().numpy() for t in (layer.weight, layer.scale, layer.bias))
    expected = ((x.numpy() + b) @ (w / np.linalg.norm(w, axis=1, keepdims=True)).T) * s
    out = layer(x)
    assert out.shape == (*shape[:-1], 3)
    np.testing.assert_allclose(out.detach().numpy(), expected, rtol=1e-12, atol=1e-12)


def test_sanconv2d_takes_an_unbatched_image():
    """Planted: rank check `ndim not in (4, 4)`, rejecting the [C, H, W] input nn.Conv2d accepts."""
    torch.manual_seed(0)
    layer = SANConv2d(3, 2, 3, padding=1, bias=True)
    with torch.no_grad():
        layer.bias.normal_()
    x = torch.randn(3, 5, 5)
    kernel = _unit_rows(layer.weight.detach()) * layer.scale.detach().view(-1, 1, 1, 1)
    expected = F.conv2d((x + layer.bias.detach().view(-1, 1, 1))[None], kernel, padding=1)[0]
    torch.testing.assert_close(layer(x), expected)


# -- exact error texts ------------------------------------------------------------------------------------------------
ERRORS = {
    'linear_features': (lambda: SANLinear(6, 2)(torch.randn(3, 5)),
                        'SANLinear(6, 2) expects input [..., 6], got shape [3, 5]'),
    'linear_scalar': (lambda: SANLinear(6, 2)(torch.tensor(1.0)),
                      'SANLinear(6, 2) expects input [..., 6], got shape []'),
    'conv_channels': (lambda: SANConv2d(4, 1, 3)(torch.randn(2, 3, 8, 8)),
                      'SANConv2d expects input [N, 4, H, W], got shape [2, 3, 8, 8]'),
    'conv_rank': (lambda: SANConv2d(4, 1, 3)(torch.randn(4, 8)),
                  'SANConv2d expects input [N, 4, H, W], got shape [4, 8]'),
    'embedding_float_ids': (lambda: SANEmbedding(10, 4)(torch.eye(10)[:2]),
                            'SANEmbedding expects integer class ids, got dtype torch.float32; '
                            'for one-hot labels pass c.argmax(dim=1)'),
    'embedding_bool_ids': (lambda: SANEmbedding(10, 4)(torch.tensor([True, False])),
                           'SANEmbedding expects integer class ids, got dtype torch.bool; '
                           'for one-hot labels pass c.argmax(dim=1)'),
    'embedding_id_too_big': (lambda: SANEmbedding(10, 4)(torch.tensor([0, 10])),
                             'SANEmbedding has 10 classes (ids 0..9), got class ids in [0, 10]'),
    'embedding_negative_id': (lambda: SANEmbedding(10, 4)(torch.tensor([[3, -1], [2, 4]])),
                              'SANEmbedding has 10 classes (ids 0..9), got class ids in [-1, 4]'),
}


@pytest.mark.parametrize('case', list(ERRORS))
def test_error_messages_are_exact(case):
    """Planted: 'XXfor one-hot labels pass c.argmax(dim=1)XX' (and any other edit of an error text)."""
    fn, expected = ERRORS[case]
    assert _message(fn) == expected


# -- SANEmbedding ------------------------------------------------------------------------------------------------------
def _numpy_class_vectors(layer: SANEmbedding, c: torch.Tensor, positive: bool = False) -> np.ndarray:
    w, s = layer.weight.detach().double().numpy(), layer.scale.detach().double().numpy()
    s = np.abs(s) if positive else s
    c = c.numpy()
    return w[c] / np.linalg.norm(w[c], axis=-1, keepdims=True) * s[c]


def test_sanembedding_normalises_each_class_vector_for_batched_ids():
    """Planted: F.normalize over its default dim=1 or over dim=+1: with [A, B] ids that mixes classes."""
    torch.manual_seed(0)
    layer = SANEmbedding(6, 4)
    with torch.no_grad():
        layer.weight.mul_(torch.rand(6, 1) * 3 + 0.5)  # rows off the sphere, each by a different factor
    c = torch.tensor([[0, 3, 5], [2, 2, 1]])
    out = layer(c)
    assert out.shape == (2, 3, 4)
    np.testing.assert_allclose(out.detach().double().numpy(), _numpy_class_vectors(layer, c), rtol=1e-5, atol=1e-6)
    fun, dir_ = layer(c, flg_train=True)
    torch.testing.assert_close(fun, out, rtol=0, atol=0)
    torch.testing.assert_close(dir_, out, rtol=0, atol=0)


@pytest.mark.parametrize('flg_train', [False, True])
def test_sanembedding_positive_scale_uses_abs_scale(flg_train):
    """Planted: `scale = None` in place of scale.abs() under positive_scale."""
    torch.manual_seed(0)
    layer = SANEmbedding(5, 3, positive_scale=True)
    with torch.no_grad():
        layer.scale.neg_()
    c = torch.tensor([4, 0, 2])
    out = layer(c, flg_train=flg_train)
    for o in (out if flg_train else (out,)):
        np.testing.assert_allclose(o.detach().double().numpy(), _numpy_class_vectors(layer, c, positive=True),
                                   rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize('shape', [(0,), (2, 0)], ids=str)
def test_sanembedding_accepts_an_empty_batch_of_ids(shape):
    """Planted: `c.numel() or not compiling` in the range check: min() of an empty id tensor raises."""
    out = SANEmbedding(5, 3)(torch.zeros(shape, dtype=torch.long))
    assert out.shape == (*shape, 3)


# -- SANLinear's fused branch (driven on CPU by a fake registered op and an input that says it is on CUDA) -----------
class _CudaLookalike(torch.Tensor):
    """A CPU tensor that answers is_cuda=True, so SANLinear takes its fused-op branch."""

    @property
    def is_cuda(self):
        return True


@pytest.mark.parametrize('positive_scale', [False, True])
@pytest.mark.parametrize('flg_train', [False, True])
def test_sanlinear_returns_the_registered_ops_result(monkeypatch, flg_train, positive_scale):
    """Planted: `fused = None` in forward, flg_train=None handed to _fused / _fused_projection (wrong op, no pair),
    weight=None or scale=None handed to _fused_projection."""
    calls = []

    def fake_registered_op(name):
        def op(h, weight, scale, class_ids):
            calls.append(dict(name=name, h=torch.Tensor.as_subclass(h, torch.Tensor).clone(), weight=weight,
                              scale=scale.detach().clone(), class_ids=class_ids))
            n = h.shape[0]
            if name == 'normalized_linear_san':
                return torch.full((n, 3), 1.0), torch.full((n, 3), 2.0)
            return torch.full((n, 3), 3.0)
        return op

    monkeypatch.setattr(san_layers, '_registered_op', fake_registered_op)
    torch.manual_seed(0)
    layer = SANLinear(4, 3, bias=True, positive_scale=positive_scale)
    with torch.no_grad():
        layer.bias.normal_()
        layer.scale.copy_(torch.tensor([-1.0, 2.0, -0.5]))
    x = torch.randn(2, 5, 4)
    out = layer(x.as_subclass(_CudaLookalike), flg_train=flg_train)

    assert len(calls) == 1
    call = calls[0]
    assert call['name'] == ('normalized_linear_san' if flg_train else 'normalized_linear')
    assert call['weight'] is layer.weight and call['class_ids'] is None
    expected_scale = torch.tensor([1.0, 2.0, 0.5]) if positive_scale else torch.tensor([-1.0, 2.0, -0.5])
    torch.testing.assert_close(call['scale'], expected_scale, rtol=0, atol=0)
    torch.testing.assert_close(call['h'], (x + layer.bias.detach()).reshape(10, 4), rtol=0, atol=0)
    if flg_train:
        assert isinstance(out, tuple) and len(out) == 2
        for o, value in zip(out, (1.0, 2.0)):
            torch.testing.assert_close(torch.Tensor.as_subclass(o, torch.Tensor), torch.full((2, 5, 3), value))
    else:
        torch.testing.assert_close(torch.Tensor.as_subclass(out, torch.Tensor), torch.full((2, 5, 3), 3.0))


@pytest.mark.parametrize('case', ['autocast', 'scale_dtype', 'input_dtype'])
def test_sanlinear_leaves_the_fused_op_to_inputs_it_takes_as_is(monkeypatch, case):
    """The fused op takes one dtype and no autocast: under CUDA autocast, with a scale of another dtype than the
    weight, or with an input of another dtype, SANLinear runs its plain code (planted: the guards joined with `and`,
    which lets the op see such inputs)."""
    calls = []
    monkeypatch.setattr(san_layers, '_registered_op', lambda name: lambda *args: calls.append(name))
    monkeypatch.setattr(san_layers, '_autocast_on', lambda: case == 'autocast')
    torch.manual_seed(0)
    layer = SANLinear(4, 3)
    x = torch.randn(2, 4)
    if case == 'scale_dtype':
        layer.scale.data = layer.scale.data.double()
    if case == 'input_dtype':
        with pytest.raises(RuntimeError):   # PyTorch's own dtype error, from the plain path
            layer(x.double().as_subclass(_CudaLookalike))
    else:
        out = layer(x.as_subclass(_CudaLookalike))
        torch.testing.assert_close(torch.Tensor.as_subclass(out, torch.Tensor), layer(x), rtol=0, atol=0)
    assert calls == []


# -- is_san_layer and san_param_groups --------------------------------------------------------------------------------
class _LookAlike(nn.Module):
    """sony/san-style layer that is not one of ours: a tensor ``scale`` and a callable ``normalize_weight``."""

    def __init__(self, scale=True, method=True):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(2, 3))
        if scale is True:
            self.scale = nn.Parameter(torch.ones(2))
        elif scale is not None:
            self.scale = scale
        if method:
            self.normalize_weight = lambda: None


LAYERS = {
    'san_linear': (lambda: SANLinear(3, 2), True),
    'san_conv': (lambda: SANConv2d(3, 2, 1), True),
    'san_embedding': (lambda: SANEmbedding(3, 2), True),
    'look_alike': (lambda: _LookAlike(), True),
    'normalize_weight_only': (lambda: _LookAlike(scale=None), False),
    'scale_not_a_tensor': (lambda: _LookAlike(scale=1.0), False),
    'scale_only': (lambda: _LookAlike(method=False), False),
    'plain_linear': (lambda: nn.Linear(3, 2), False),
}


@pytest.mark.parametrize('case', list(LAYERS))
def test_is_san_layer_needs_tensor_scale_and_callable_normalize_weight(case):
    """Planted: `callable(...) or isinstance(...)`, callable(None), getattr(None, ...), or a misspelt
    'XXnormalize_weightXX' / 'NORMALIZE_WEIGHT' attribute (look-alikes no longer recognised)."""
    make, expected = LAYERS[case]
    assert is_san_layer(make()) is expected


@pytest.mark.parametrize('dir_lr', [None, 1e-4])
def test_san_param_groups_pass_group_options_to_both_groups(dir_lr):
    """Planted: group_kw dropped from the first (others) or the second (directions) group."""
    model = nn.Sequential(nn.Linear(4, 4), SANLinear(4, 2), _LookAlike())
    groups = san_param_groups(model, dir_lr=dir_lr, lr=2e-3, weight_decay=0.25, betas=(0.0, 0.99))
    others = [model[0].weight, model[0].bias, model[1].scale, model[1].bias, model[2].scale]
    assert [sorted(g) for g in groups] == [['betas', 'lr', 'params', 'weight_decay']] * 2
    assert len(groups[0]['params']) == len(others) and {id(p) for p in groups[0]['params']} == {id(p) for p in others}
    assert [id(p) for p in groups[1]['params']] == [id(model[1].weight), id(model[2].weight)]
    assert (groups[0]['lr'], groups[0]['weight_decay'], groups[0]['betas']) == (2e-3, 0.25, (0.0, 0.99))
    expected_dir_lr = 2e-3 if dir_lr is None else dir_lr
    assert (groups[1]['lr'], groups[1]['weight_decay'], groups[1]['betas']) == (expected_dir_lr, 0.25, (0.0, 0.99))


def test_san_param_groups_without_san_layers_is_one_group():
    """One group (all parameters, with the options) when the model has no SAN layer."""
    model = nn.Linear(3, 2)
    groups = san_param_groups(model, dir_lr=1e-4, lr=1e-3)
    assert len(groups) == 1 and groups[0]['lr'] == 1e-3
    assert [id(p) for p in groups[0]['params']] == [id(model.weight), id(model.bias)]
