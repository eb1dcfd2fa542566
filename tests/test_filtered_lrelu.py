"""filtered_lrelu against its definition (scipy upfirdn chain + numpy leaky ReLU), gradients, clear errors."""

import math

import numpy as np
import pytest
import torch
from test_upfirdn2d import _scipy_2d, _scipy_axis

from torch_utils.ops.filtered_lrelu import filtered_lrelu
from torch_utils.ops.upfirdn2d import setup_filter

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA GPU')


def _definition(x, fu, fd, b, up, down, pad, gain, slope, clamp):
    """Bias -> zero-stuff/pad/convolve (gain up^2) -> lrelu*gain, clamp -> convolve/decimate, in float64 numpy."""
    v = x.double().numpy() + b.double().numpy().reshape(1, -1, 1, 1)
    fu2, fd2 = np.outer(fu, fu), np.outer(fd, fd)
    v = _scipy_2d(v, fu2, (up, up), (1, 1), pad) * up ** 2
    v = np.where(v > 0, v, slope * v) * gain
    if clamp is not None:
        v = np.clip(v, -clamp, clamp)
    return _scipy_2d(v, fd2, (1, 1), (down, down), (0, 0, 0, 0))


@pytest.mark.parametrize('up, down, pad, clamp', [(1, 1, (1, 1, 1, 1), None), (2, 2, (5, 5, 5, 5), 0.7),
                                                  (2, 1, (3, 4, 2, 5), None), (1, 2, (2, 1, 0, 3), 2.0),
                                                  (4, 2, (-1, 6, 7, -2), None)])
def test_reference_matches_definition(up, down, pad, clamp):
    torch.manual_seed(0)
    x, b = torch.randn(2, 3, 7, 6, dtype=torch.float64), torch.randn(3, dtype=torch.float64)
    fu = np.array([1.0, 3.0, 3.0, 1.0]) / 8
    fd = np.array([0.2, 0.5, 0.3])
    out = filtered_lrelu(x, torch.tensor(fu), torch.tensor(fd), b, up=up, down=down, padding=list(pad), gain=1.3,
                         slope=0.1, clamp=clamp, impl='ref')
    # A 1-D filter of fewer than 8 taps is used as its outer product (setup_filter's rule), so test the 2-D form.
    expected = _definition(x, fu, fd, b, up, down, pad, 1.3, 0.1, clamp)
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-10, atol=1e-12)


def test_separable_long_filters_match_the_axiswise_definition():
    torch.manual_seed(1)
    x, b = torch.randn(1, 2, 9, 8, dtype=torch.float64), torch.zeros(2, dtype=torch.float64)
    f = setup_filter(torch.hann_window(14, dtype=torch.float64)[1:-1].float(), separable=True).double()
    out = filtered_lrelu(x, f, f, b, up=2, down=2, padding=11, impl='ref').numpy()
    v = _scipy_axis(x.numpy(), f.numpy(), 2, 1, 11, 11)
    v = _scipy_axis(v.swapaxes(2, 3), f.numpy(), 2, 1, 11, 11).swapaxes(2, 3) * 4
    v = np.where(v > 0, v, 0.2 * v) * math.sqrt(2)
    v = _scipy_axis(v, f.numpy(), 1, 2, 0, 0)
    v = _scipy_axis(v.swapaxes(2, 3), f.numpy(), 1, 2, 0, 0).swapaxes(2, 3)
    np.testing.assert_allclose(out, v, rtol=1e-9, atol=1e-12)


def test_gradcheck_and_gradgradcheck():
    x = torch.randn(1, 2, 5, 5, dtype=torch.float64, requires_grad=True)
    b = torch.randn(2, dtype=torch.float64, requires_grad=True)
    f = torch.tensor([1.0, 2.0, 1.0], dtype=torch.float64) / 4
    fn = lambda x, b: filtered_lrelu(x, f, f, b, up=2, down=2, padding=2, clamp=5.0, impl='ref')  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x, b))
    assert torch.autograd.gradgradcheck(fn, (x, b))


def test_bad_input_is_refused_clearly():
    x = torch.randn(1, 2, 4, 4)
    with pytest.raises(ValueError, match=r'\[N, C, H, W\]'):
        filtered_lrelu(x[0])
    with pytest.raises(ValueError, match='up must be an int >= 1'):
        filtered_lrelu(x, up=0)
    with pytest.raises(ValueError, match='slope >= 0 and gain > 0'):
        filtered_lrelu(x, gain=-1.0)
    with pytest.raises(ValueError, match='bias must be 1-D'):
        filtered_lrelu(x, b=torch.zeros(3))


@pytest.mark.cuda
@cuda
def test_cuda_matches_reference():
    torch.manual_seed(0)
    x = torch.randn(2, 16, 20, 20, device='cuda')
    b = torch.randn(16, device='cuda')
    f = setup_filter(torch.hann_window(14)[1:-1], device='cuda', separable=True)
    kw = dict(up=2, down=2, padding=11, clamp=1.0)
    torch.testing.assert_close(filtered_lrelu(x, f, f, b, impl='cuda', **kw), filtered_lrelu(x, f, f, b, impl='ref',
                                                                                              **kw),
                               rtol=1e-5, atol=1e-5)
