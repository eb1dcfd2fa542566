"""upfirdn2d: upsample by zero insertion, pad, FIR-filter, downsample -- the resampling op of StyleGAN2/3 and XL.

Per axis, an input of length L becomes ``L*up`` samples (each followed by ``up-1`` zeros), is padded by ``p0``/``p1``
zeros (negative crops), convolved "valid" with the filter and every ``down``-th sample is kept from index 0:
``out_len = (L*up + p0 + p1 - taps) // down + 1``. A 1-D filter is separable (applied along x, then y); a 2-D filter
``[fh, fw]`` is not. Two paths, chosen per call by :func:`torch_utils.ops.loader.use_cuda`: a pure-PyTorch reference
(differentiable in ``x`` and ``f`` to any order) and our CUDA kernel (``torch.ops.san_ext.upfirdn2d``) whose backward
is again an upfirdn2d with the adjoint parameters, so it is differentiable twice (path-length regularisation).
Our own code (MIT), written from the documented semantics; no StyleGAN2/3 code.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import NamedTuple, Optional, Union

import torch
import torch.nn.functional as F

from torch_utils.ops.loader import use_cuda

__all__ = ['downsample2d', 'filter2d', 'setup_filter', 'upfirdn2d', 'upsample2d']

Scaling = Union[int, Sequence[int]]
Padding = Union[int, Sequence[int]]
_CPU = torch.device('cpu')  # setup_filter's default device (a call in the signature trips ruff B008)


class _Params(NamedTuple):
    """Every non-tensor argument of one upfirdn2d call, resolved per axis (hashable, passed through autograd)."""

    upx: int
    upy: int
    downx: int
    downy: int
    padx0: int
    padx1: int
    pady0: int
    pady1: int
    flip: bool
    gain: float


# ----------------------------------------------------------------------------------------------------------------
# Argument parsing and checks.

def _is_int(v: object) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _parse_scaling(value: Scaling, name: str) -> tuple[int, int]:
    """``up``/``down`` as (x, y): an int for both axes or a pair [x, y]; each >= 1."""
    if _is_int(value):
        pair = (int(value), int(value))
    elif isinstance(value, (list, tuple)) and len(value) == 2 and all(_is_int(v) for v in value):
        pair = (int(value[0]), int(value[1]))
    else:
        raise TypeError(f'{name} must be an int or a pair of ints [x, y], got {value!r}')
    if min(pair) < 1:
        raise ValueError(f'{name} must be >= 1 along each axis, got {value!r}')
    return pair


def _parse_padding(padding: Padding) -> tuple[int, int, int, int]:
    """``padding`` as (px0, px1, py0, py1) from an int, [px, py] or [px0, px1, py0, py1]; negative values crop."""
    if _is_int(padding):
        return (int(padding),) * 4
    if not isinstance(padding, (list, tuple)) or not all(_is_int(p) for p in padding):
        raise TypeError(f'padding must be an int or a list of ints, got {padding!r}')
    if len(padding) == 2:
        px, py = (int(p) for p in padding)
        return px, px, py, py
    if len(padding) == 4:
        px0, px1, py0, py1 = (int(p) for p in padding)
        return px0, px1, py0, py1
    raise ValueError(f'padding must be an int, [px, py] or [px0, px1, py0, py1], got {len(padding)} values: '
                     f'{padding!r}')


def _check_filter(f: Optional[torch.Tensor], device: Optional[torch.device] = None) -> None:
    if f is None:
        return
    if not isinstance(f, torch.Tensor):
        raise TypeError(f'f must be a torch.Tensor or None (see setup_filter), got {type(f).__name__}')
    if not f.is_floating_point():
        raise TypeError(f'f must be a floating-point filter (float32), got {f.dtype}')
    if f.ndim not in (1, 2):
        raise ValueError(f'f must be 1-D [taps] (separable) or 2-D [fh, fw], got shape {list(f.shape)}')
    if f.numel() == 0:
        raise ValueError(f'f must have at least one tap, got shape {list(f.shape)}')
    if device is not None and f.device != device:
        raise ValueError(f'f is on {f.device} but x is on {device}; move the filter with setup_filter(..., '
                         f'device=x.device)')


def _get_filter_size(f: Optional[torch.Tensor]) -> tuple[int, int]:
    """(fw, fh) of a filter: a 1-D filter has fw = fh = taps; None is a single tap."""
    _check_filter(f)
    if f is None:
        return 1, 1
    if f.ndim == 1:
        return f.shape[0], f.shape[0]
    return f.shape[1], f.shape[0]


def _out_size(length: int, up: int, down: int, pad0: int, pad1: int, taps: int, axis: str) -> int:
    span = length * up + pad0 + pad1 - taps
    if span < 0:
        raise ValueError(f'padding leaves an empty output along {axis}: ({length}*{up} + {pad0} + {pad1} - {taps}) '
                         f'// {down} + 1 = {span // down + 1}; input*up + pad0 + pad1 must be >= the filter taps')
    return span // down + 1


def _resolve(x: torch.Tensor, f: Optional[torch.Tensor], up: Scaling, down: Scaling, padding: Padding,
             flip_filter: bool, gain: float) -> tuple[torch.Tensor, _Params]:
    """Check every argument (clear errors, no crash) and return the filter (never None) with the parsed params."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f'x must be a torch.Tensor, got {type(x).__name__}')
    if x.ndim != 4:
        raise ValueError(f'x must be 4-D [N, C, H, W], got shape {list(x.shape)}')
    if not x.is_floating_point():
        raise TypeError(f'x must be a floating-point tensor, got {x.dtype}')
    _check_filter(f, x.device)
    if f is None:
        f = torch.ones([1, 1], dtype=torch.float32, device=x.device)
    if not isinstance(gain, numbers.Real):
        raise TypeError(f'gain must be a real number, got {gain!r}')
    upx, upy = _parse_scaling(up, 'up')
    downx, downy = _parse_scaling(down, 'down')
    params = _Params(upx, upy, downx, downy, *_parse_padding(padding), bool(flip_filter), float(gain))
    fw, fh = _get_filter_size(f)
    _out_size(x.shape[3], upx, downx, params.padx0, params.padx1, fw, 'x (width)')
    _out_size(x.shape[2], upy, downy, params.pady0, params.pady1, fh, 'y (height)')
    return f, params


# ----------------------------------------------------------------------------------------------------------------
# Public API.

def setup_filter(f: object, device: torch.device = _CPU, normalize: bool = True,
                 flip_filter: bool = False, gain: float = 1, separable: Optional[bool] = None) -> torch.Tensor:
    """Turn a list/array/tensor of taps into the float32 filter upfirdn2d expects.

    None gives a single tap; ``separable=None`` keeps 1-D filters of >= 8 taps separable and turns shorter ones into
    their outer product (2-D), the cheaper form for each. The result is normalized to sum 1, optionally flipped, and
    scaled by ``gain ** (ndim / 2)`` so that a separable filter, applied along both axes, has total gain ``gain``.
    """
    if f is None:
        f = 1
    f = torch.as_tensor(f).to(dtype=torch.float32)  # .to copies only when needed; nothing below is in place
    if f.ndim not in (0, 1, 2):
        raise ValueError(f'f must be a scalar, 1-D or 2-D filter, got shape {list(f.shape)}')
    if f.numel() == 0:
        raise ValueError('f must have at least one tap, got an empty filter')
    if f.ndim == 0:
        f = f[None]
    if separable is None:
        separable = f.ndim == 1 and f.numel() >= 8
    if separable and f.ndim != 1:
        raise ValueError(f'separable=True needs a 1-D filter, got shape {list(f.shape)}')
    if f.ndim == 1 and not separable:
        f = torch.outer(f, f)
    if normalize:
        total = f.sum()
        if total == 0:
            raise ValueError('cannot normalize a filter whose taps sum to 0; pass normalize=False')
        f = f / total
    if flip_filter:
        f = f.flip(list(range(f.ndim)))
    if f.ndim == 1 and gain < 0:
        raise ValueError(f'a separable (1-D) filter cannot carry a negative gain ({gain}): it is applied along both '
                         'axes; pass the sign as upfirdn2d(..., gain=) instead')
    f = f * (gain ** (f.ndim / 2))
    return f.to(device=device)


def upfirdn2d(x: torch.Tensor, f: Optional[torch.Tensor], up: Scaling = 1, down: Scaling = 1, padding: Padding = 0,
              flip_filter: bool = False, gain: float = 1, impl: str = 'auto') -> torch.Tensor:
    """Upsample (zero insertion), pad, FIR-filter and downsample a batch of images ``x`` [N, C, H, W].

    Args:
        f: float32 filter: 1-D [taps] (separable), 2-D [fh, fw], or None for identity; see :func:`setup_filter`.
        up, down: int or [x, y] integer factors.
        padding: int, [px, py] or [px0, px1, py0, py1] zeros added after upsampling; negative values crop.
        flip_filter: False convolves (as in signal processing); True correlates.
        gain: overall scale; the filter is multiplied by ``gain ** (f.ndim / 2)``.
        impl: 'auto' (CUDA when possible), 'cuda' (insist) or 'ref' (pure PyTorch).
    Returns: [N, C, (H*upy + py0 + py1 - fh) // downy + 1, (W*upx + px0 + px1 - fw) // downx + 1].
    """
    f, params = _resolve(x, f, up, down, padding, flip_filter, gain)
    if use_cuda('upfirdn2d', impl, x):
        if not (f.requires_grad and torch.is_grad_enabled()):
            return _Upfirdn2dCuda.apply(x, f, params)
        if impl == 'cuda':
            raise ValueError("upfirdn2d(impl='cuda') treats the filter as a constant but f requires grad; detach f "
                             "or use impl='ref'")
    return _upfirdn2d_ref_params(x, f, params)


def upsample2d(x: torch.Tensor, f: Optional[torch.Tensor], up: Scaling = 2, padding: Padding = 0,
               flip_filter: bool = False, gain: float = 1, impl: str = 'auto') -> torch.Tensor:
    """Upsample ``x`` by ``up`` with filter ``f``, padded so the output is [N, C, H*upy, W*upx] (at zero padding).

    The gain is multiplied by ``upx * upy`` to make up for the inserted zeros, so a normalized low-pass filter keeps
    a constant image constant.
    """
    upx, upy = _parse_scaling(up, 'up')
    px0, px1, py0, py1 = _parse_padding(padding)
    fw, fh = _get_filter_size(f)
    pad = [px0 + (fw + upx - 1) // 2, px1 + (fw - upx) // 2, py0 + (fh + upy - 1) // 2, py1 + (fh - upy) // 2]
    return upfirdn2d(x, f, up=(upx, upy), padding=pad, flip_filter=flip_filter, gain=gain * upx * upy, impl=impl)


def downsample2d(x: torch.Tensor, f: Optional[torch.Tensor], down: Scaling = 2, padding: Padding = 0,
                 flip_filter: bool = False, gain: float = 1, impl: str = 'auto') -> torch.Tensor:
    """Low-pass filter ``x`` with ``f`` and keep every ``down``-th pixel: [N, C, H/downy, W/downx] at zero padding."""
    downx, downy = _parse_scaling(down, 'down')
    px0, px1, py0, py1 = _parse_padding(padding)
    fw, fh = _get_filter_size(f)
    pad = [px0 + (fw - downx + 1) // 2, px1 + (fw - downx) // 2, py0 + (fh - downy + 1) // 2, py1 + (fh - downy) // 2]
    return upfirdn2d(x, f, down=(downx, downy), padding=pad, flip_filter=flip_filter, gain=gain, impl=impl)


def filter2d(x: torch.Tensor, f: Optional[torch.Tensor], padding: Padding = 0, flip_filter: bool = False,
             gain: float = 1, impl: str = 'auto') -> torch.Tensor:
    """Filter ``x`` with ``f`` keeping its size (at zero padding): a 'same' convolution with zero borders."""
    px0, px1, py0, py1 = _parse_padding(padding)
    fw, fh = _get_filter_size(f)
    pad = [px0 + fw // 2, px1 + (fw - 1) // 2, py0 + fh // 2, py1 + (fh - 1) // 2]
    return upfirdn2d(x, f, padding=pad, flip_filter=flip_filter, gain=gain, impl=impl)


# ----------------------------------------------------------------------------------------------------------------
# Reference path: differentiable torch ops only (reshape, pad, slicing, grouped conv2d).

def _upfirdn2d_ref(x: torch.Tensor, f: Optional[torch.Tensor], up: Scaling = 1, down: Scaling = 1,
                   padding: Padding = 0, flip_filter: bool = False, gain: float = 1) -> torch.Tensor:
    """Pure-PyTorch upfirdn2d (same arguments and checks as :func:`upfirdn2d`); differentiable to any order."""
    f, params = _resolve(x, f, up, down, padding, flip_filter, gain)
    return _upfirdn2d_ref_params(x, f, params)


def _upfirdn2d_ref_params(x: torch.Tensor, f: torch.Tensor, p: _Params) -> torch.Tensor:
    n, c, h, w = x.shape
    # Zero insertion: [N, C, H, 1, W, 1] -> pad the unit axes to up -> [N, C, H*upy, W*upx].
    x = x.reshape(n, c, h, 1, w, 1)
    x = F.pad(x, [0, p.upx - 1, 0, 0, 0, p.upy - 1])
    x = x.reshape(n, c, h * p.upy, w * p.upx)
    # Zero padding, then cropping where negative (in this order, so a crop may also eat into the padding).
    x = F.pad(x, [max(p.padx0, 0), max(p.padx1, 0), max(p.pady0, 0), max(p.pady1, 0)])
    x = x[:, :, max(-p.pady0, 0): x.shape[2] - max(-p.pady1, 0), max(-p.padx0, 0): x.shape[3] - max(-p.padx1, 0)]
    # conv2d correlates: a true convolution (flip=False) correlates with the flipped filter.
    f = f.to(x.dtype)
    if not p.flip:
        f = f.flip(list(range(f.ndim)))
    if f.ndim == 2:
        weight = (f * p.gain)[None, None].expand(c, 1, *f.shape)  # [C, 1, fh, fw]
        return F.conv2d(x, weight, stride=(p.downy, p.downx), groups=c)
    gain_x, gain_y = _split_gain(p.gain)
    x = F.conv2d(x, (f * gain_x)[None, None, None, :].expand(c, 1, 1, f.shape[0]), stride=(1, p.downx), groups=c)
    return F.conv2d(x, (f * gain_y)[None, None, :, None].expand(c, 1, f.shape[0], 1), stride=(p.downy, 1), groups=c)


def _split_gain(gain: float) -> tuple[float, float]:
    """Gains of the two passes of a separable filter: sqrt(|gain|) each, the sign on the first (no complex roots)."""
    root = abs(gain) ** 0.5
    return (root if gain >= 0 else -root), root


# ----------------------------------------------------------------------------------------------------------------
# CUDA path: the kernel forward, and a backward that is the adjoint upfirdn2d (itself differentiable again).

def _adjoint_params(p: _Params, in_hw: Sequence[int], out_hw: Sequence[int], fw: int, fh: int) -> _Params:
    """Parameters of the upfirdn2d that computes the vector-Jacobian product w.r.t. x of a call with params ``p``.

    Transposing "zero-insert by up, pad, convolve, keep every down-th" gives "zero-insert by down, pad, correlate
    (the filter flipped), keep every up-th": the left padding becomes ``taps - 1 - p0`` and the right one is chosen
    so that the result has exactly the input's size ``in_hw`` from a cotangent of size ``out_hw``.
    """
    (in_h, in_w), (out_h, out_w) = in_hw, out_hw
    padx0 = fw - 1 - p.padx0
    pady0 = fh - 1 - p.pady0
    padx1 = (in_w - 1) * p.upx + fw - out_w * p.downx - padx0
    pady1 = (in_h - 1) * p.upy + fh - out_h * p.downy - pady0
    return _Params(p.downx, p.downy, p.upx, p.upy, padx0, padx1, pady0, pady1, not p.flip, p.gain)


def _cuda_call(x: torch.Tensor, f2d: torch.Tensor, p: _Params, gain: float) -> torch.Tensor:
    return torch.ops.san_ext.upfirdn2d(x, f2d, p.upx, p.upy, p.downx, p.downy, p.padx0, p.padx1, p.pady0, p.pady1,
                                       p.flip, gain)


def _cuda_forward(x: torch.Tensor, f: torch.Tensor, p: _Params) -> torch.Tensor:
    """Run the kernel; a 1-D filter as two passes, the one that shrinks more (or grows less) first."""
    x = x.contiguous()
    f = f.detach()
    if f.ndim == 2:
        return _cuda_call(x, f, p, p.gain)
    taps, (gain_a, gain_b) = f.shape[0], _split_gain(p.gain)
    along_x = p._replace(upy=1, downy=1, pady0=0, pady1=0)
    along_y = p._replace(upx=1, downx=1, padx0=0, padx1=0)
    if p.upx * p.downy <= p.upy * p.downx:  # x pass first: intermediate H*W*upx/downx is the smaller one
        x = _cuda_call(x, f.reshape(1, taps), along_x, gain_a)
        return _cuda_call(x, f.reshape(taps, 1), along_y, gain_b)
    x = _cuda_call(x, f.reshape(taps, 1), along_y, gain_a)
    return _cuda_call(x, f.reshape(1, taps), along_x, gain_b)


class _Upfirdn2dCuda(torch.autograd.Function):
    """CUDA upfirdn2d; the filter is a constant (no gradient), the gradient w.r.t. x is the adjoint upfirdn2d."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, f: torch.Tensor, params: _Params) -> torch.Tensor:
        y = _cuda_forward(x, f, params)
        ctx.save_for_backward(f)
        ctx.params = params
        ctx.in_hw = tuple(x.shape[2:])
        return y

    @staticmethod
    def backward(ctx, dy: torch.Tensor) -> tuple[Optional[torch.Tensor], None, None]:
        (f,) = ctx.saved_tensors
        if not ctx.needs_input_grad[0]:
            return None, None, None
        fw, fh = _get_filter_size(f)
        adjoint = _adjoint_params(ctx.params, ctx.in_hw, tuple(dy.shape[2:]), fw, fh)
        return _Upfirdn2dCuda.apply(dy, f, adjoint), None, None

