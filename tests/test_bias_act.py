"""bias_act against its definition (numpy), gradients, clear errors; CUDA vs reference on a GPU."""

import math

import numpy as np
import pytest
import torch

from torch_utils.ops.bias_act import ACTIVATIONS, bias_act

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA GPU')

NUMPY_ACT = {
    'linear': lambda v, a: v,
    'relu': lambda v, a: np.maximum(v, 0),
    'lrelu': lambda v, a: np.where(v > 0, v, a * v),
    'tanh': lambda v, a: np.tanh(v),
    'sigmoid': lambda v, a: 1 / (1 + np.exp(-v)),
    'elu': lambda v, a: np.where(v > 0, v, np.expm1(v)),
    'selu': lambda v, a: 1.0507009873554805 * np.where(v > 0, v, 1.6732632423543772 * np.expm1(v)),
    'softplus': lambda v, a: np.log1p(np.exp(v)),
    'swish': lambda v, a: v / (1 + np.exp(-v)),
}
DEFAULT_GAIN = {'relu': math.sqrt(2), 'lrelu': math.sqrt(2), 'swish': math.sqrt(2)}


@pytest.mark.parametrize('act', list(ACTIVATIONS))
@pytest.mark.parametrize('clamp', [None, 0.5])
def test_reference_matches_numpy_definition(act, clamp):
    torch.manual_seed(0)
    x = torch.randn(2, 3, 4, 5, dtype=torch.float64)
    b = torch.randn(3, dtype=torch.float64)
    y = bias_act(x, b, dim=1, act=act, clamp=clamp, impl='ref')
    v = x.numpy() + b.numpy().reshape(1, 3, 1, 1)
    expected = NUMPY_ACT[act](v, 0.2) * DEFAULT_GAIN.get(act, 1.0)
    if clamp is not None:
        expected = np.clip(expected, -clamp, clamp)
    np.testing.assert_allclose(y.numpy(), expected, rtol=1e-10, atol=1e-12)


def test_bias_along_other_dim_and_explicit_alpha_gain():
    x = torch.randn(4, 6, dtype=torch.float64)
    b = torch.randn(4, dtype=torch.float64)
    y = bias_act(x, b, dim=0, act='lrelu', alpha=0.1, gain=3.0, impl='ref')
    v = x.numpy() + b.numpy()[:, None]
    np.testing.assert_allclose(y.numpy(), np.where(v > 0, v, 0.1 * v) * 3.0, rtol=1e-12)


@pytest.mark.parametrize('act', ['linear', 'lrelu', 'tanh', 'swish'])
def test_reference_gradcheck_and_gradgradcheck(act):
    x = torch.randn(2, 3, 4, dtype=torch.float64, requires_grad=True)
    b = torch.randn(3, dtype=torch.float64, requires_grad=True)
    fn = lambda x, b: bias_act(x, b, act=act, clamp=10.0, impl='ref')  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x, b))
    assert torch.autograd.gradgradcheck(fn, (x, b))


def test_bad_input_is_refused_clearly():
    x = torch.randn(2, 3, 4)
    with pytest.raises(ValueError, match="unknown activation 'gelu2'"):
        bias_act(x, act='gelu2')
    with pytest.raises(ValueError, match=r'x.shape\[1\] = 3'):
        bias_act(x, torch.randn(4))
    with pytest.raises(TypeError, match='floating-point'):
        bias_act(torch.ones(2, 3, dtype=torch.int64))
    with pytest.raises(ValueError, match='clamp must be'):
        bias_act(x, clamp=-1.0)
    with pytest.raises(ValueError, match="impl must be 'auto', 'cuda' or 'ref'"):
        bias_act(x, act='lrelu', impl='fast')
    with pytest.raises(RuntimeError, match="impl='cuda'"):
        bias_act(x, act='lrelu', impl='cuda')  # CPU tensor: no kernel can run


@pytest.mark.cuda
@cuda
@pytest.mark.parametrize('act', ['linear', 'relu', 'lrelu'])
@pytest.mark.parametrize('dtype', [torch.float32, torch.float16, torch.float64])
def test_cuda_matches_reference(act, dtype):
    torch.manual_seed(0)
    x = torch.randn(4, 32, 17, 9, device='cuda', dtype=dtype)
    b = torch.randn(32, device='cuda', dtype=dtype)
    ref = bias_act(x, b, act=act, clamp=1.5, impl='ref')
    out = bias_act(x, b, act=act, clamp=1.5, impl='cuda')
    tol = dict(rtol=1e-3, atol=1e-3) if dtype == torch.float16 else dict(rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(out, ref, **tol)
    x_nc = x.transpose(2, 3)  # non-contiguous input
    torch.testing.assert_close(bias_act(x_nc, b, act=act, impl='cuda'), bias_act(x_nc, b, act=act, impl='ref'),
                               **tol)


@pytest.mark.cuda
@cuda
def test_cuda_gradcheck_and_gradgradcheck():
    x = torch.randn(2, 5, 3, 3, device='cuda', dtype=torch.float64, requires_grad=True)
    b = torch.randn(5, device='cuda', dtype=torch.float64, requires_grad=True)
    fn = lambda x, b: bias_act(x, b, act='lrelu', clamp=2.0, impl='cuda')  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x, b))
    assert torch.autograd.gradgradcheck(fn, (x, b))
