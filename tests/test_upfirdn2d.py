"""upfirdn2d: reference vs scipy, gradients to second order, the adjoint used by the CUDA backward, wrappers, errors.

CPU by default; the CUDA kernel is checked against the reference under the ``cuda`` marker.
"""

import itertools

import numpy as np
import pytest
import scipy.signal
import torch

from torch_utils.ops import upfirdn2d as U
from torch_utils.ops.upfirdn2d import _upfirdn2d_ref, downsample2d, filter2d, setup_filter, upfirdn2d, upsample2d

_RNG = np.random.default_rng(1234)
FILTERS = {  # name -> taps (1-D: separable, 2-D: not)
    'sep_even': [1.0, 3.0, 3.0, 1.0],
    'sep_odd': [1.0, 2.0, 5.0],
    'sep_asym': _RNG.standard_normal(5).tolist(),
    '2d_3x4': _RNG.standard_normal((3, 4)).tolist(),
    '2d_1x5': _RNG.standard_normal((1, 5)).tolist(),
}
UPS = [1, 2, 4, [2, 1], [1, 4]]
DOWNS = [1, 2, 4, [1, 2]]
PADS = [0, [1, 2, 0, 3], [-1, 2, 1, -2], [2, -1], [3, 1]]
GAINS = [1.0, 2.5, -0.5]
X_SHAPE = (2, 3, 8, 9)


def _pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


def _pad4(p):
    return (p,) * 4 if isinstance(p, int) else (p[0], p[0], p[1], p[1]) if len(p) == 2 else tuple(p)


def _nonempty(up, down, pad, taps2d):
    (upx, upy), (px0, px1, py0, py1), (fh, fw) = _pair(up), _pad4(pad), taps2d
    return X_SHAPE[3] * upx + px0 + px1 >= fw and X_SHAPE[2] * upy + py0 + py1 >= fh


def _cases():
    """A deterministic spread over up x down x filter, cycling padding, flip and gain."""
    out = []
    for i, (up, down, name) in enumerate(itertools.product(UPS, DOWNS, FILTERS)):
        taps = np.asarray(FILTERS[name])
        shape2d = taps.shape if taps.ndim == 2 else (len(taps), len(taps))
        pad = PADS[i % len(PADS)]
        if _nonempty(up, down, pad, shape2d):
            out.append(pytest.param(up, down, pad, name, bool(i % 2), GAINS[i % 3], id=f'{i}-{name}'))
    return out


CASES = _cases()


# ----------------------------------------------------------------------------------------------------------------
# Independent computation with scipy.

def _scipy_axis(x: np.ndarray, f1: np.ndarray, up: int, down: int, p0: int, p1: int) -> np.ndarray:
    """1-D upfirdn along the last axis: out[i] = full_conv(zero_stuffed_x, f)[i*down + taps - 1 - p0], 0 outside."""
    taps, length = len(f1), x.shape[-1]
    out_len = (length * up + p0 + p1 - taps) // down + 1
    idx = np.arange(out_len) * down + taps - 1 - p0
    out = np.zeros(x.shape[:-1] + (out_len,))
    for index in np.ndindex(*x.shape[:-1]):
        full = scipy.signal.upfirdn(f1, x[index], up=up)  # length (L-1)*up + taps; the rest is 0
        ok = (idx >= 0) & (idx < len(full))
        out[index][ok] = full[idx[ok]]
    return out


def _scipy_2d(x: np.ndarray, f2: np.ndarray, up, down, pad) -> np.ndarray:
    """Zero-stuff and pad by explicit index mapping, then scipy's valid convolve2d and striding."""
    (upx, upy), (downx, downy), (px0, px1, py0, py1) = up, down, pad
    n, c, h, w = x.shape
    rows = np.arange(h * upy + py0 + py1) - py0  # position in the upsampled image of each padded row
    cols = np.arange(w * upx + px0 + px1) - px0
    rows_ok = (rows >= 0) & (rows < h * upy) & (rows % upy == 0)
    cols_ok = (cols >= 0) & (cols < w * upx) & (cols % upx == 0)
    padded = np.zeros((n, c, len(rows), len(cols)))
    padded[np.ix_(range(n), range(c), np.flatnonzero(rows_ok), np.flatnonzero(cols_ok))] = \
        x[np.ix_(range(n), range(c), rows[rows_ok] // upy, cols[cols_ok] // upx)]
    out = [[scipy.signal.convolve2d(padded[i, j], f2, mode='valid')[::downy, ::downx] for j in range(c)]
           for i in range(n)]
    return np.asarray(out)


def _expected(x: torch.Tensor, taps, up, down, pad, flip: bool, gain: float) -> np.ndarray:
    f = np.asarray(taps, dtype=np.float64)
    f = f[::-1, ::-1] if (flip and f.ndim == 2) else (f[::-1] if flip else f)  # correlation = conv with flipped
    up, down, pad, xn = _pair(up), _pair(down), _pad4(pad), x.double().numpy()
    if f.ndim == 2:
        return _scipy_2d(xn, f, up, down, pad) * gain
    out = _scipy_axis(xn, f, up[0], down[0], pad[0], pad[1])
    out = _scipy_axis(out.swapaxes(2, 3), f, up[1], down[1], pad[2], pad[3]).swapaxes(2, 3)
    return out * gain


# ----------------------------------------------------------------------------------------------------------------
# Reference path.

@pytest.mark.parametrize('up, down, pad, name, flip, gain', CASES)
def test_upfirdn2d_ref_matches_scipy(up, down, pad, name, flip, gain):
    x = torch.randn(X_SHAPE, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    f = torch.tensor(FILTERS[name], dtype=torch.float32)
    y = _upfirdn2d_ref(x, f, up=up, down=down, padding=pad, flip_filter=flip, gain=gain)
    want = _expected(x, FILTERS[name], up, down, pad, flip, gain)
    assert y.shape == want.shape
    np.testing.assert_allclose(y.numpy(), want, rtol=1e-6, atol=1e-6)  # f is float32: ~1e-7 relative


def test_upfirdn2d_ref_float32_and_noncontiguous_input():
    x = torch.randn(2, 3, 9, 8).transpose(2, 3)  # non-contiguous [2, 3, 8, 9]
    f = torch.tensor(FILTERS['sep_asym'], dtype=torch.float32)
    y = _upfirdn2d_ref(x, f, up=2, down=[1, 2], padding=[1, 2, 0, 3])
    want = _expected(x, FILTERS['sep_asym'], 2, [1, 2], [1, 2, 0, 3], False, 1.0)
    np.testing.assert_allclose(y.numpy(), want, rtol=1e-5, atol=1e-5)


def test_filter_none_is_identity_and_crop_only():
    x = torch.randn(1, 2, 6, 7, dtype=torch.float64)
    assert torch.equal(_upfirdn2d_ref(x, None), x)
    assert torch.equal(_upfirdn2d_ref(x, None, padding=[-1, -2, -3, 0]), x[:, :, 3:, 1:-2])
    assert torch.equal(_upfirdn2d_ref(x, None, down=2), x[:, :, ::2, ::2])


GRAD_CASES = [  # (up, down, padding, filter name, flip)
    (2, 1, [2, 1, 1, 2], 'sep_even', False),
    (1, 2, [1, 1, 0, 1], '2d_3x4', True),
    ([2, 1], [1, 2], [-1, 3, 2, 0], 'sep_asym', False),
    (4, 2, [3, 0, 1, 2], '2d_1x5', False),
]


@pytest.mark.parametrize('up, down, pad, name, flip', GRAD_CASES)
def test_upfirdn2d_ref_gradcheck_and_gradgradcheck(up, down, pad, name, flip):
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(1, 2, 5, 4, dtype=torch.float64, generator=gen, requires_grad=True)
    f = torch.tensor(FILTERS[name], dtype=torch.float64, requires_grad=True)

    def fn(x, f):
        return _upfirdn2d_ref(x, f, up=up, down=down, padding=pad, flip_filter=flip, gain=1.5)

    assert torch.autograd.gradcheck(fn, (x, f))
    assert torch.autograd.gradgradcheck(fn, (x, f))


@pytest.mark.parametrize('up, down, pad, name, flip, gain', CASES[::3])
def test_adjoint_params_give_the_vjp_of_the_reference(up, down, pad, name, flip, gain):
    """The CUDA backward's formula, run with the reference: upfirdn2d(dy, adjoint params) == autograd's vjp."""
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(X_SHAPE, dtype=torch.float64, generator=gen, requires_grad=True)
    f = torch.tensor(FILTERS[name], dtype=torch.float64)
    f_used, params = U._resolve(x, f, up, down, pad, flip, gain)
    y = U._upfirdn2d_ref_params(x, f_used, params)
    dy = torch.randn(y.shape, dtype=torch.float64, generator=gen)
    (vjp,) = torch.autograd.grad(y, x, dy)
    fw, fh = U._get_filter_size(f)
    adjoint = U._adjoint_params(params, x.shape[2:], y.shape[2:], fw, fh)
    got = U._upfirdn2d_ref_params(dy, f, adjoint)
    assert got.shape == x.shape
    torch.testing.assert_close(got, vjp, rtol=1e-10, atol=1e-10)


# ----------------------------------------------------------------------------------------------------------------
# The CUDA autograd Function's Python glue, on CPU: the kernel call replaced by the reference on a 2-D filter.

@pytest.fixture
def kernel_on_cpu(monkeypatch):
    def fake_kernel(x, f2d, p, gain):
        assert f2d.ndim == 2 and x.is_contiguous() and not f2d.requires_grad
        return U._upfirdn2d_ref_params(x, f2d, p._replace(gain=gain))
    monkeypatch.setattr(U, '_cuda_call', fake_kernel)


@pytest.mark.parametrize('up, down, pad, name, flip', GRAD_CASES)
def test_cuda_function_glue_matches_ref_and_is_twice_differentiable(kernel_on_cpu, up, down, pad, name, flip):
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(1, 2, 5, 4, dtype=torch.float64, generator=gen, requires_grad=True)
    f = torch.tensor(FILTERS[name], dtype=torch.float64)
    f_used, params = U._resolve(x, f, up, down, pad, flip, -2.0)

    def fn(x):
        return U._Upfirdn2dCuda.apply(x, f_used, params)

    torch.testing.assert_close(fn(x), U._upfirdn2d_ref_params(x, f_used, params), rtol=1e-12, atol=1e-12)
    assert torch.autograd.gradcheck(fn, (x,))
    assert torch.autograd.gradgradcheck(fn, (x,))


# ----------------------------------------------------------------------------------------------------------------
# setup_filter and the wrappers.

def test_setup_filter_forms():
    assert torch.equal(setup_filter(None), torch.ones(1, 1))
    assert torch.equal(setup_filter(2.0), torch.ones(1, 1))
    f = setup_filter([1, 2, 1])
    assert f.dtype == torch.float32 and f.shape == (3, 3)
    torch.testing.assert_close(f, torch.outer(torch.tensor([1., 2., 1.]), torch.tensor([1., 2., 1.])) / 16)
    assert setup_filter(np.ones(8)).shape == (8,)
    assert setup_filter(np.ones(8), separable=False).shape == (8, 8)
    assert setup_filter([1, 2, 1], separable=True).shape == (3,)
    torch.testing.assert_close(setup_filter([1, 3], flip_filter=True, separable=True), torch.tensor([0.75, 0.25]))
    torch.testing.assert_close(setup_filter([1, 1], gain=4, separable=True).sum(), torch.tensor(2.0))
    torch.testing.assert_close(setup_filter([1, 1], gain=4).sum(), torch.tensor(4.0))
    torch.testing.assert_close(setup_filter([1, 1], normalize=False, separable=True), torch.tensor([1.0, 1.0]))
    taps = torch.tensor([1.0, 3.0, 3.0, 1.0])
    setup_filter(taps, separable=True)
    assert torch.equal(taps, torch.tensor([1.0, 3.0, 3.0, 1.0]))  # the caller's tensor is not modified


BINOMIAL8 = [1, 7, 21, 35, 35, 21, 7, 1]  # (1 + z^-1)^7: zero at Nyquist, so both phases of up=2 sum to 1/2


@pytest.mark.parametrize('taps, up', [([1, 1], 2), ([1, 2, 1], 2), ([1, 3, 3, 1], 2), (BINOMIAL8, 2),
                                      ([1, 2, 3, 4, 3, 2, 1], 4), ([1, 3, 3, 1], [2, 1])])
def test_upsample2d_shape_and_constant(taps, up):
    f = setup_filter(taps)
    upx, upy = _pair(up)
    y = upsample2d(torch.full((2, 3, 10, 12), 3.0), f, up=up)
    assert y.shape == (2, 3, 10 * upy, 12 * upx)
    m = len(taps)
    torch.testing.assert_close(y[:, :, m:-m, m:-m], torch.full_like(y[:, :, m:-m, m:-m], 3.0))


@pytest.mark.parametrize('taps, down', [([1, 1], 2), ([1, 2, 1], 2), ([1, 3, 3, 1], 2), (BINOMIAL8, 2),
                                        ([1, 3, 3, 1], 4), ([1, 2, 1], [1, 2]), (_RNG.uniform(0.1, 1, 6).tolist(), 2)])
def test_downsample2d_shape_and_constant(taps, down):
    downx, downy = _pair(down)
    y = downsample2d(torch.full((2, 3, 16, 24), -1.5), setup_filter(taps), down=down)
    assert y.shape == (2, 3, 16 // downy, 24 // downx)
    torch.testing.assert_close(y[:, :, 2:-2, 2:-2], torch.full_like(y[:, :, 2:-2, 2:-2], -1.5))


@pytest.mark.parametrize('taps', [[1, 1], [1, 2, 1], [1, 3, 3, 1], BINOMIAL8, _RNG.uniform(0.1, 1, (4, 5)).tolist()])
def test_filter2d_shape_and_constant(taps):
    y = filter2d(torch.full((1, 2, 11, 13), 2.0), setup_filter(taps))
    assert y.shape == (1, 2, 11, 13)
    m = len(taps)
    torch.testing.assert_close(y[:, :, m:-m, m:-m], torch.full_like(y[:, :, m:-m, m:-m], 2.0))


def test_wrappers_pass_extra_padding_and_gain():
    x = torch.randn(1, 1, 6, 6, dtype=torch.float64)
    f = setup_filter([1, 3, 3, 1])
    y = upsample2d(x, f, padding=[1, 0, 0, 2], gain=3)
    want = upfirdn2d(x, f, up=2, padding=[1 + 2, 0 + 1, 0 + 2, 2 + 1], gain=3 * 4)
    torch.testing.assert_close(y, want)
    assert downsample2d(x, f, padding=1).shape == (1, 1, 4, 4)
    assert filter2d(x, None).shape == x.shape


# ----------------------------------------------------------------------------------------------------------------
# Bad input: clear errors naming the argument.

def _x():
    return torch.zeros(1, 2, 4, 4)


@pytest.mark.parametrize('kwargs, err, match', [
    (dict(x=torch.zeros(2, 4, 4)), ValueError, r'x must be 4-D \[N, C, H, W\], got shape \[2, 4, 4\]'),
    (dict(x=torch.zeros(1, 2, 4, 4, dtype=torch.int64)), TypeError, 'x must be a floating-point tensor'),
    (dict(x=np.zeros((1, 2, 4, 4))), TypeError, 'x must be a torch.Tensor'),
    (dict(f=torch.ones(1, 2, 2)), ValueError, r'f must be 1-D \[taps\] .* or 2-D \[fh, fw\], got shape \[1, 2, 2\]'),
    (dict(f=torch.ones(0)), ValueError, 'f must have at least one tap'),
    (dict(f=[1.0, 2.0]), TypeError, 'f must be a torch.Tensor or None'),
    (dict(f=torch.ones(2, dtype=torch.int32)), TypeError, 'f must be a floating-point filter'),
    (dict(f=torch.ones(2, device='meta')), ValueError, 'f is on meta but x is on cpu'),
    (dict(up=0), ValueError, 'up must be >= 1'),
    (dict(down=[1, 0]), ValueError, 'down must be >= 1'),
    (dict(up=1.5), TypeError, 'up must be an int or a pair of ints'),
    (dict(down=[1, 2, 3]), TypeError, 'down must be an int or a pair of ints'),
    (dict(padding=[1, 2, 3]), ValueError, r'padding must be an int, \[px, py\] or \[px0, px1, py0, py1\], got 3'),
    (dict(padding=1.0), TypeError, 'padding must be an int or a list of ints'),
    (dict(padding=[-3, -3, 0, 0]), ValueError,
     r'empty output along x \(width\): \(4\*1 \+ -3 \+ -3 - 1\) // 1 \+ 1 = -2'),
    (dict(f=torch.ones(6), padding=[2, 0, 1, 0]), ValueError, r'empty output along y \(height\).* = 0'),
    (dict(gain='2'), TypeError, 'gain must be a real number'),
    (dict(impl='fast'), ValueError, "impl must be 'auto', 'cuda' or 'ref'"),
    (dict(impl='cuda'), RuntimeError, 'cannot run the CUDA kernel'),
])
def test_bad_input_raises_clear_error(kwargs, err, match):
    args = dict(x=_x(), f=None)
    args.update(kwargs)
    with pytest.raises(err, match=match):
        upfirdn2d(**args)


def test_setup_filter_bad_input():
    with pytest.raises(ValueError, match='scalar, 1-D or 2-D filter'):
        setup_filter(np.ones((2, 2, 2)))
    with pytest.raises(ValueError, match='sum to 0'):
        setup_filter([1, -1])
    with pytest.raises(ValueError, match='separable=True needs a 1-D filter'):
        setup_filter(np.ones((2, 2)), separable=True)
    with pytest.raises(ValueError, match='negative gain'):
        setup_filter(np.ones(8), gain=-1)
    with pytest.raises(ValueError, match='at least one tap'):
        setup_filter([])


def test_wrappers_check_their_arguments():
    with pytest.raises(ValueError, match='up must be >= 1'):
        upsample2d(_x(), None, up=0)
    with pytest.raises(ValueError, match='down must be >= 1'):
        downsample2d(_x(), None, down=[2, 0])
    with pytest.raises(ValueError, match='f must be 1-D'):
        filter2d(_x(), torch.ones(1, 1, 1))


# ----------------------------------------------------------------------------------------------------------------
# CUDA kernel vs reference.

def _ref_cpu(x: torch.Tensor, f: torch.Tensor, **kwargs) -> torch.Tensor:
    """The reference in float64 on the CPU (cuDNN may use TF32 on the GPU), returned as float32 on x's device."""
    return _upfirdn2d_ref(x.cpu().double(), f.cpu(), **kwargs).float().to(x.device)


@pytest.mark.parametrize('up, down, pad, name, flip, gain', CASES)
@pytest.mark.parametrize('dtype, tol', [(torch.float32, 1e-5), (torch.float16, 2e-2), (torch.bfloat16, 1e-1)])
@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA GPU')
def test_cuda_matches_ref(up, down, pad, name, flip, gain, dtype, tol):
    x = torch.randn(X_SHAPE, device='cuda').to(dtype)
    f = torch.tensor(FILTERS[name], dtype=torch.float32, device='cuda')
    kwargs = dict(up=up, down=down, padding=pad, flip_filter=flip, gain=gain)
    got = upfirdn2d(x, f, impl='cuda', **kwargs)
    assert got.dtype == dtype
    torch.testing.assert_close(got.float(), _ref_cpu(x, f, **kwargs), rtol=tol, atol=tol)


@pytest.mark.parametrize('shape, up, down, taps', [
    ((4, 64, 32, 32), 2, 1, 12), ((2, 32, 64, 64), 1, 2, 12), ((3, 5, 4, 4), 2, 1, 4),
    ((4100, 1024, 1, 1), 1, 1, 3), ((1, 1, 4_200_000, 1), 1, 1, 3), ((1, 1, 3, 70000), 1, 2, 4)])
@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA GPU')
def test_cuda_matches_ref_odd_shapes(shape, up, down, taps):
    """StyleGAN-XL-like sizes; more N*C and rows than one grid holds (the kernel loops); wide rows; tiny images."""
    x = torch.randn(shape, device='cuda')
    for separable in (False, True):
        f = setup_filter(np.hanning(taps + 2)[1:-1], device='cuda', separable=separable)
        kwargs = dict(up=up, down=down, padding=[1, 2, 2, 1])
        torch.testing.assert_close(upfirdn2d(x, f, impl='cuda', **kwargs), _ref_cpu(x, f, **kwargs),
                                   rtol=1e-5, atol=1e-5)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA GPU')
def test_cuda_large_filter_and_noncontiguous_input():
    x = torch.randn(1, 2, 140, 130, device='cuda').transpose(2, 3)  # non-contiguous
    f = torch.rand(120, 110, device='cuda')  # 52.8 KB: too big for shared memory, read from global memory
    torch.testing.assert_close(upfirdn2d(x, f, up=2, impl='cuda'), _ref_cpu(x, f, up=2), rtol=1e-4, atol=1e-4)


@pytest.mark.slow
@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA GPU')
def test_cuda_more_than_2_31_elements():
    """64-bit index math: the last rows of a 2^31+ element image match the reference on those rows alone."""
    x = torch.randn(1, 1, 65536, 32769, device='cuda', dtype=torch.float16)
    f = setup_filter([1, 2, 1], device='cuda')
    y = filter2d(x, f, impl='cuda')
    want = _ref_cpu(x[:, :, -10:], f, padding=1)[:, :, 1:]  # its first row lacks the row above: drop it
    torch.testing.assert_close(y[:, :, -9:].float(), want, rtol=2e-2, atol=2e-2)


@pytest.mark.parametrize('up, down, pad, name, flip', GRAD_CASES)
@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA GPU')
def test_cuda_gradcheck_and_gradgradcheck(up, down, pad, name, flip):
    x = torch.randn(2, 3, 5, 4, dtype=torch.float64, device='cuda', requires_grad=True)
    f = torch.tensor(FILTERS[name], dtype=torch.float32, device='cuda')

    def fn(x):
        return upfirdn2d(x, f, up=up, down=down, padding=pad, flip_filter=flip, gain=0.7, impl='cuda')

    assert torch.autograd.gradcheck(fn, (x,))
    assert torch.autograd.gradgradcheck(fn, (x,))


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA GPU')
def test_cuda_refuses_filter_gradient():
    x = torch.randn(1, 1, 4, 4, device='cuda')
    f = torch.ones(2, 2, device='cuda', requires_grad=True)
    with pytest.raises(ValueError, match='treats the filter as a constant'):
        upfirdn2d(x, f, impl='cuda')
    assert upfirdn2d(x, f).requires_grad  # 'auto' takes the reference, which differentiates f
