"""Fused bias + activation + gain + clamp: ``clamp(act(x + b) * gain)``, as StyleGAN's layers use it.

The reference path composes PyTorch ops (and runs any activation of the registry). The CUDA path (one elementwise
kernel forward, one backward) covers the piecewise-linear activations that dominate GAN networks (``linear``,
``relu``, ``lrelu``): their derivative depends only on the sign of the output, so the backward needs only ``y``
and is itself differentiable (grad-of-grad for path-length regularisation) by calling the same kernel again.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional

import torch
import torch.nn.functional as F

from .loader import use_cuda

__all__ = ['ACTIVATIONS', 'Activation', 'bias_act']


@dataclass(frozen=True)
class Activation:
    """One activation: its function, default alpha and gain, and its kernel id (-1: reference path only)."""

    func: Callable[[torch.Tensor, float], torch.Tensor]
    def_alpha: float = 0.0
    def_gain: float = 1.0
    cuda_id: int = -1


ACTIVATIONS: dict[str, Activation] = {
    'linear': Activation(lambda x, _: x, cuda_id=0),
    'relu': Activation(lambda x, _: F.relu(x), def_gain=math.sqrt(2), cuda_id=1),
    'lrelu': Activation(lambda x, a: F.leaky_relu(x, a), def_alpha=0.2, def_gain=math.sqrt(2), cuda_id=2),
    'tanh': Activation(lambda x, _: torch.tanh(x)),
    'sigmoid': Activation(lambda x, _: torch.sigmoid(x)),
    'elu': Activation(lambda x, _: F.elu(x)),
    'selu': Activation(lambda x, _: F.selu(x)),
    'softplus': Activation(lambda x, _: F.softplus(x)),
    'swish': Activation(lambda x, _: F.silu(x), def_gain=math.sqrt(2)),
}


def _check(x: torch.Tensor, b: Optional[torch.Tensor], dim: int, act: str, clamp: Optional[float]) -> None:
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise TypeError(f'bias_act expects a floating-point tensor x, got '
                        f'{x.dtype if isinstance(x, torch.Tensor) else type(x).__name__}')
    if act not in ACTIVATIONS:
        raise ValueError(f'unknown activation {act!r}; known: {", ".join(ACTIVATIONS)}')
    if b is not None:
        if not 0 <= dim < x.ndim:
            raise ValueError(f'bias_act dim={dim} is out of range for x with {x.ndim} dims')
        if b.ndim != 1 or b.numel() != x.shape[dim]:
            raise ValueError(f'bias must be 1-D with x.shape[{dim}] = {x.shape[dim]} entries, got shape '
                             f'{list(b.shape)}')
        if b.device != x.device or b.dtype != x.dtype:
            raise ValueError(f'bias must match x in device and dtype, got {b.device}/{b.dtype} vs '
                             f'{x.device}/{x.dtype}')
    if clamp is not None and not clamp >= 0:
        raise ValueError(f'clamp must be None or >= 0, got {clamp}')


def bias_act(x: torch.Tensor, b: Optional[torch.Tensor] = None, dim: int = 1, act: str = 'linear',
             alpha: Optional[float] = None, gain: Optional[float] = None, clamp: Optional[float] = None,
             impl: str = 'auto') -> torch.Tensor:
    """Return ``clamp(act(x + b) * gain, -clamp, clamp)``, with b broadcast along ``dim``.

    ``alpha`` and ``gain`` default per activation (lrelu: 0.2 and sqrt(2)); ``clamp=None`` disables clamping.
    """
    _check(x, b, dim, act, clamp)
    spec = ACTIVATIONS[act]
    alpha = spec.def_alpha if alpha is None else float(alpha)
    gain = spec.def_gain if gain is None else float(gain)
    if spec.cuda_id >= 0 and gain > 0 and use_cuda('bias_act', impl, x):  # the kernel reads act' off sign(y)
        return _BiasActCuda.apply(x, b, dim, spec.cuda_id, alpha, gain, -1.0 if clamp is None else float(clamp))
    if impl == 'cuda' and spec.cuda_id < 0:
        raise RuntimeError(f"bias_act(impl='cuda') has no kernel for {act!r}; use impl='auto'")
    return _bias_act_ref(x, b, dim, spec, alpha, gain, clamp)


def _bias_act_ref(x, b, dim, spec: Activation, alpha: float, gain: float, clamp: Optional[float]) -> torch.Tensor:
    if b is not None:
        x = x + b.reshape([-1 if i == dim else 1 for i in range(x.ndim)])
    x = spec.func(x, alpha)
    if gain != 1:
        x = x * gain
    if clamp is not None:
        x = x.clamp(-clamp, clamp)
    return x


class _BiasActCuda(torch.autograd.Function):
    """Forward kernel; the backward is :class:`_BiasActGradCuda`, differentiable again."""

    @staticmethod
    def forward(ctx, x, b, dim, act_id, alpha, gain, clamp):
        y = torch.ops.san_ext.bias_act_fwd(x.contiguous(), None if b is None else b.contiguous(), dim, act_id,
                                           alpha, gain, clamp)
        ctx.save_for_backward(y)
        ctx.params = (act_id, alpha, gain, clamp)
        ctx.bias_dims = None if b is None else [i for i in range(x.ndim) if i != dim]
        return y

    @staticmethod
    def backward(ctx, grad_y):
        (y,) = ctx.saved_tensors
        grad_x = _BiasActGradCuda.apply(grad_y, y, *ctx.params)
        grad_b = None if ctx.bias_dims is None or not ctx.needs_input_grad[1] else grad_x.sum(ctx.bias_dims)
        return grad_x, grad_b, None, None, None, None, None


class _BiasActGradCuda(torch.autograd.Function):
    """grad_x = grad_y * act'(y) * gain * [|y| < clamp]; linear in grad_y with a piecewise-constant factor."""

    @staticmethod
    def forward(ctx, grad_y, y, act_id, alpha, gain, clamp):
        ctx.save_for_backward(y)
        ctx.params = (act_id, alpha, gain, clamp)
        return torch.ops.san_ext.bias_act_grad(grad_y.contiguous(), y, act_id, alpha, gain, clamp)

    @staticmethod
    def backward(ctx, grad_grad_x):
        (y,) = ctx.saved_tensors
        # The factor depends on y only through its sign and the clamp mask, so d/dy is zero almost everywhere.
        return _BiasActGradCuda.apply(grad_grad_x, y, *ctx.params), None, None, None, None, None
