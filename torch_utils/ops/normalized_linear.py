"""The SAN projection ``s * <omega / ||omega||, h>`` as one fused op (Takida et al., ICLR 2024, Eq. 7).

Two modes: per output row (h [N, D], weight [O, D], scale [O] -> [N, O]), as SANLinear, and per class row
(class_ids [N], weight [C, D], scale [C] or sony/san's [C, 1] -> [N]), as the conditional SAN head. With
``flg_train=True`` it returns ``(fun, dir)`` with SAN's gradient routing: ``fun = s * <omega^-, h>`` trains h
and s, ``dir = s^- * <omega, h^->`` trains omega only; the weight gradient is the true one through the normalisation,
s / ||w|| * (h - w_hat <w_hat, h>).

The CUDA path calls ``torch.ops.san_ext.normalized_linear`` / ``normalized_linear_san``, whose autograd is written in
C++ (``csrc/normalized_linear.cpp``) so that ``san_ext.layers`` can use the very same ops without importing this
package; there is therefore no Python ``autograd.Function`` here, only the loader, input checks and the reference.
"""

from __future__ import annotations

from typing import Optional, Union

import torch
import torch.nn.functional as F

from .loader import use_cuda

__all__ = ['normalized_linear']

_EPS = 1e-12  # omega = w / max(||w||, eps), as F.normalize and san_ext.layers

Logits = Union[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]


def _check_inputs(h: torch.Tensor, weight: torch.Tensor, scale: torch.Tensor,
                  class_ids: Optional[torch.Tensor]) -> None:
    """Shape, dtype and device checks shared by both paths; errors name the argument and the expected shape."""
    if h.ndim != 2:
        raise ValueError(f'normalized_linear expects h of shape [N, D], got {list(h.shape)}')
    if weight.ndim != 2 or weight.shape[1] != h.shape[1]:
        raise ValueError(f'normalized_linear: weight must be [rows, {h.shape[1]}] to match h {list(h.shape)}, '
                         f'got {list(weight.shape)}')
    if not h.is_floating_point() or weight.dtype != h.dtype or scale.dtype != h.dtype:
        raise TypeError(f'normalized_linear: h, weight and scale must share one floating dtype, got '
                        f'{h.dtype}, {weight.dtype}, {scale.dtype}')
    rows = weight.shape[0]
    shapes = [(rows,)] if class_ids is None else [(rows,), (rows, 1)]
    if tuple(scale.shape) not in shapes:
        raise ValueError(f'normalized_linear: scale must have shape {" or ".join(str(list(s)) for s in shapes)}, '
                         f'got {list(scale.shape)}')
    tensors = [weight, scale] + ([] if class_ids is None else [class_ids])
    if any(t.device != h.device for t in tensors):
        raise ValueError(f'normalized_linear: all inputs must be on {h.device}, got '
                         f'{", ".join(str(t.device) for t in tensors)}')
    if class_ids is not None:
        _check_class_ids(class_ids, h.shape[0], rows)


def _check_class_ids(class_ids: torch.Tensor, n: int, rows: int) -> None:
    if class_ids.is_floating_point() or class_ids.is_complex() or class_ids.dtype == torch.bool:
        raise TypeError(f'normalized_linear expects integer class_ids, got dtype {class_ids.dtype}; '
                        'for one-hot labels pass c.argmax(dim=1)')
    if tuple(class_ids.shape) != (n,):
        raise ValueError(f'normalized_linear: class_ids must have shape [{n}] (one per row of h), '
                         f'got {list(class_ids.shape)}')
    if class_ids.numel() and not torch.compiler.is_compiling():  # one device sync; skipped inside torch.compile
        lo, hi = int(class_ids.min()), int(class_ids.max())
        if lo < 0 or hi >= rows:
            raise ValueError(f'normalized_linear: weight has {rows} class rows (ids 0..{rows - 1}), '
                             f'got class ids in [{lo}, {hi}]')


def _normalized_linear_ref(h: torch.Tensor, weight: torch.Tensor, scale: torch.Tensor,
                           class_ids: Optional[torch.Tensor] = None, flg_train: bool = False) -> Logits:
    """Composite PyTorch path (F.normalize + matmul, or gather + sum) with SAN's stop-gradients."""
    s = scale.reshape(-1)
    if class_ids is None:
        omega = F.normalize(weight, dim=1, eps=_EPS)  # [O, D]

        def project(x, w, sc):
            return F.linear(x, w) * sc  # [N, O]
    else:
        omega = F.normalize(F.embedding(class_ids, weight), dim=1, eps=_EPS)  # [N, D], rows w_{c_n}
        s = F.embedding(class_ids, s.unsqueeze(1)).squeeze(1)  # [N]

        def project(x, w, sc):
            return (x * w).sum(1) * sc  # [N]
    if flg_train:
        return project(h, omega.detach(), s), project(h.detach(), omega, s.detach())
    return project(h, omega, s)


def _normalized_linear_cuda(h: torch.Tensor, weight: torch.Tensor, scale: torch.Tensor,
                            class_ids: Optional[torch.Tensor] = None, flg_train: bool = False) -> Logits:
    """Fused path: the registered ops carry their own (C++) autograd, so no Python Function is needed."""
    if flg_train:
        fun, dir_ = torch.ops.san_ext.normalized_linear_san(h, weight, scale, class_ids)
        return fun, dir_
    return torch.ops.san_ext.normalized_linear(h, weight, scale, class_ids)


def normalized_linear(h: torch.Tensor, weight: torch.Tensor, scale: torch.Tensor,
                      class_ids: Optional[torch.Tensor] = None, flg_train: bool = False,
                      impl: str = 'auto') -> Logits:
    """SAN logits ``scale * <weight / ||weight||, h>`` per output row, or per class row when ``class_ids`` is given.

    Args:
        h: features [N, D].
        weight: directions (any norm; normalised here) [O, D], or [C, D] with ``class_ids``.
        scale: [O], or [C] / [C, 1] with ``class_ids``.
        class_ids: integer class of each sample [N]; the output is then [N] instead of [N, O].
        flg_train: return ``(fun, dir)`` (D's training step) instead of one tensor.
        impl: 'auto' (CUDA kernel on GPU tensors when built), 'cuda' (insist) or 'ref'.
    """
    _check_inputs(h, weight, scale, class_ids)
    if class_ids is not None and class_ids.dtype != torch.long:
        class_ids = class_ids.long()
    # The class-row kernel scatters its weight/scale gradients with atomics; deterministic mode keeps 'auto' off it.
    deterministic = class_ids is not None and impl == 'auto' and torch.are_deterministic_algorithms_enabled()
    if not deterministic and use_cuda('normalized_linear', impl, h, weight, scale, class_ids):
        return _normalized_linear_cuda(h, weight, scale, class_ids, flg_train)
    return _normalized_linear_ref(h, weight, scale, class_ids, flg_train)
