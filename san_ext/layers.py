"""SAN normalized linear layers: the discriminator's last layer split into a unit direction and a scale.

A SAN discriminator is f(x) = s * <omega, h(x)> with omega on the unit sphere (Takida et al., ICLR 2024, Eq. 7).
In D's training step (``flg_train=True``) each layer returns two logits with equal values and different gradient
paths (stop-gradient written as ``(.)^-``):

- ``fun = s * <omega^-, h>``: trains the features h and the scale s, never omega;
- ``dir = s^- * <omega, h^->``: trains omega only.

Parameter names (``weight``, ``scale``, ``bias``) and the call signature (``forward(x, flg_train=False)``,
``normalize_weight()``) follow the official sony/san modules so their state dicts load unchanged. As there,
``bias`` (optional) is added to the *input* and so belongs to h.

This module imports only torch: it must run inside foreign checkouts whose ``torch_utils`` may shadow ours.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ['SANLinear', 'SANConv2d', 'SANEmbedding', 'is_san_layer', 'normalize_san_weights', 'san_param_groups']

_EPS = 1e-12


def _normalize_rows(weight: torch.Tensor) -> torch.Tensor:
    """Divide each output row (dim 0) by its L2 norm over all other dims."""
    dims = list(range(1, weight.ndim))
    return weight / weight.norm(p=2, dim=dims, keepdim=True).clamp_min(_EPS)


def _split_into_direction_and_scale(layer: nn.Module) -> torch.Tensor:
    """Normalise ``layer.weight`` in place and return the row norms, the initial scale."""
    with torch.no_grad():
        dims = list(range(1, layer.weight.ndim))
        norm = layer.weight.norm(p=2, dim=dims).clamp_min(_EPS)  # [out]
        layer.weight.div_(norm.view(-1, *([1] * len(dims))))
    return norm


def _registered_op(name: str):
    """``torch.ops.san_ext.<name>`` when some code has loaded the extension that registers it, else None."""
    try:
        return getattr(torch.ops.san_ext, name)
    except (AttributeError, RuntimeError):  # not registered (the error type depends on the PyTorch version)
        return None


def _autocast_on() -> bool:
    try:
        return torch.is_autocast_enabled('cuda')
    except TypeError:  # older PyTorch: no device argument, and the answer is about CUDA
        return torch.is_autocast_enabled()


def _fused_projection(x: torch.Tensor, weight: torch.Tensor, scale: torch.Tensor, flg_train: bool):
    """SANLinear's projection by the fused op ``torch.ops.san_ext.normalized_linear[_san]``, or None.

    The op is used only when someone (``torch_utils.ops.normalized_linear`` or a prebuilt extension) has registered
    it and x is a CUDA tensor that the op takes as is; it carries its own C++ autograd with SAN's routing, so this
    module never imports torch_utils. None means: run the plain PyTorch code (always the case on CPU).
    """
    if not x.is_cuda or torch.compiler.is_compiling() or _autocast_on():
        return None
    if x.dtype != weight.dtype or scale.dtype != weight.dtype or weight.device != x.device:
        return None
    op = _registered_op('normalized_linear_san' if flg_train else 'normalized_linear')
    if op is None:
        return None
    lead = x.shape[:-1]
    out = op(x.reshape(-1, x.shape[-1]), weight, scale, None)  # [N, D] -> [N, out]
    if flg_train:
        return out[0].reshape(*lead, -1), out[1].reshape(*lead, -1)
    return out.reshape(*lead, -1)


class _SANProjection:
    """Shared logic of SANLinear and SANConv2d; subclasses supply ``_project`` and ``_check_input``."""

    weight: nn.Parameter
    scale: nn.Parameter
    bias: nn.Parameter | None
    positive_scale: bool

    def _init_san(self, in_features: int, bias: bool, positive_scale: bool) -> None:
        norm = _split_into_direction_and_scale(self)
        self.scale = nn.Parameter(norm.clone())
        if bias:
            # Input-side bias as in sony/san: it shifts h, so it trains with the features (fun path).
            self.bias = nn.Parameter(torch.zeros(in_features, device=norm.device, dtype=norm.dtype))
        else:
            self.register_parameter('bias', None)
        self.positive_scale = positive_scale

    def effective_scale(self) -> torch.Tensor:
        """The scale s used in the forward; |s| with ``positive_scale`` so the direction update never flips."""
        return self.scale.abs() if self.positive_scale else self.scale

    def forward(self, x: torch.Tensor, flg_train: bool = False):
        """Return s * <omega, x> per output channel, or the pair ``(fun, dir)`` when ``flg_train``."""
        self._check_input(x)
        if self.bias is not None:
            x = x + self._input_bias_view()
        fused = self._fused(x, flg_train)
        if fused is not None:
            return fused
        omega = _normalize_rows(self.weight)
        scale = self._scale_view(self.effective_scale())
        if flg_train:
            out_fun = self._project(x, omega.detach()) * scale
            out_dir = self._project(x.detach(), omega) * scale.detach()
            return out_fun, out_dir
        return self._project(x, omega) * scale

    def _fused(self, x: torch.Tensor, flg_train: bool):
        return None  # plain PyTorch; SANLinear overrides this with the fused op

    @torch.no_grad()
    def normalize_weight(self) -> None:
        """Re-project ``weight`` onto the unit sphere in place (call after every D optimizer step)."""
        self.weight.copy_(_normalize_rows(self.weight))


class SANLinear(_SANProjection, nn.Linear):
    """Linear layer with a unit-norm direction per output row and a separate scale (SAN, Eq. 7).

    Args:
        bias: input-side bias of size ``in_features`` (sony/san semantics), added to h before the projection.
        positive_scale: use |scale| in the forward; not in the official code, off by default.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, positive_scale: bool = False,
                 device=None, dtype=None) -> None:
        nn.Linear.__init__(self, in_features, out_features, bias=False, device=device, dtype=dtype)
        self._init_san(in_features, bias, positive_scale)

    def _check_input(self, x: torch.Tensor) -> None:
        if x.ndim < 1 or x.shape[-1] != self.in_features:
            raise ValueError(f'SANLinear({self.in_features}, {self.out_features}) expects input [..., '
                             f'{self.in_features}], got shape {list(x.shape)}')

    def _input_bias_view(self) -> torch.Tensor:
        return self.bias

    def _scale_view(self, scale: torch.Tensor) -> torch.Tensor:
        return scale  # [out], broadcasts over the last dim

    def _project(self, x: torch.Tensor, omega: torch.Tensor) -> torch.Tensor:
        return F.linear(x, omega)

    def _fused(self, x: torch.Tensor, flg_train: bool):
        return _fused_projection(x, self.weight, self.effective_scale(), flg_train)


class SANConv2d(_SANProjection, nn.Conv2d):
    """Conv2d whose per-output-channel kernel is a unit-Frobenius-norm direction with a separate scale.

    Args:
        bias: input-side bias of size ``in_channels`` (sony/san semantics), added to h before the convolution.
        positive_scale: use |scale| in the forward; not in the official code, off by default.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0, dilation=1,
                 bias: bool = True, padding_mode: str = 'zeros', positive_scale: bool = False,
                 device=None, dtype=None) -> None:
        nn.Conv2d.__init__(self, in_channels, out_channels, kernel_size, stride, padding=padding, dilation=dilation,
                           groups=1, bias=False, padding_mode=padding_mode, device=device, dtype=dtype)
        self._init_san(in_channels, bias, positive_scale)

    def _check_input(self, x: torch.Tensor) -> None:
        if x.ndim not in (3, 4) or x.shape[-3] != self.in_channels:
            raise ValueError(f'SANConv2d expects input [N, {self.in_channels}, H, W], got shape {list(x.shape)}')

    def _input_bias_view(self) -> torch.Tensor:
        return self.bias.view(-1, 1, 1)

    def _scale_view(self, scale: torch.Tensor) -> torch.Tensor:
        return scale.view(-1, 1, 1)

    def _project(self, x: torch.Tensor, omega: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, omega, None)


class SANEmbedding(nn.Embedding):
    """Per-class unit direction omega_c with per-class scale s_c, the class projection of a conditional SAN head.

    ``forward(c)`` takes integer class ids and returns class *vectors* s_c * omega_c (like sony/san); with
    ``flg_train`` the pair ``(s_c * omega_c^-, s_c^- * omega_c)``. The head forms the logits
    fun = <h, s_c omega_c^-> / sqrt(d) and dir = <h^-, s_c^- omega_c> / sqrt(d).
    """

    def __init__(self, num_embeddings: int, embedding_dim: int, positive_scale: bool = False,
                 device=None, dtype=None) -> None:
        super().__init__(num_embeddings, embedding_dim, device=device, dtype=dtype)
        norm = _split_into_direction_and_scale(self)
        self.scale = nn.Parameter(norm.view(num_embeddings, 1).clone())  # [num_classes, 1] as in sony/san
        self.positive_scale = positive_scale

    def _check_ids(self, c: torch.Tensor) -> None:
        if c.is_floating_point() or c.dtype == torch.bool:
            raise TypeError(f'SANEmbedding expects integer class ids, got dtype {c.dtype}; '
                            'for one-hot labels pass c.argmax(dim=1)')
        if c.numel() and not torch.compiler.is_compiling():
            lo, hi = int(c.min()), int(c.max())
            if lo < 0 or hi >= self.num_embeddings:
                raise ValueError(f'SANEmbedding has {self.num_embeddings} classes (ids 0..{self.num_embeddings - 1}),'
                                 f' got class ids in [{lo}, {hi}]')

    def forward(self, c: torch.Tensor, flg_train: bool = False):
        """Return the class vectors s_c * omega_c, shape ``[*c.shape, embedding_dim]``."""
        self._check_ids(c)
        omega = F.normalize(F.embedding(c, self.weight), dim=-1, eps=_EPS)
        scale = F.embedding(c, self.scale)  # [..., 1]
        if self.positive_scale:
            scale = scale.abs()
        if flg_train:
            return omega.detach() * scale, omega * scale.detach()
        return omega * scale

    @torch.no_grad()
    def normalize_weight(self) -> None:
        """Re-project every class row of ``weight`` onto the unit sphere in place."""
        self.weight.copy_(_normalize_rows(self.weight))


def is_san_layer(module: nn.Module) -> bool:
    """True for our SAN layers and for look-alikes (sony/san's) that carry ``scale`` and ``normalize_weight``."""
    if isinstance(module, (_SANProjection, SANEmbedding)):
        return True
    return callable(getattr(module, 'normalize_weight', None)) and isinstance(getattr(module, 'scale', None),
                                                                                 torch.Tensor)


def normalize_san_weights(module: nn.Module) -> int:
    """Re-project the direction of every SAN layer in ``module``'s tree; returns how many layers were touched.

    A training loop calls this after each D optimizer step so that omega stays exactly on the sphere.
    """
    count = 0
    for m in module.modules():
        if is_san_layer(m):
            m.normalize_weight()
            count += 1
    return count


def san_param_groups(module: nn.Module, dir_lr: float | None = None, **group_kw) -> list[dict]:
    """Optimizer parameter groups with the SAN directions (omega) apart, for a separate learning rate on omega.

    ``dir_lr=None`` keeps one learning rate for everything (the official setting).
    """
    directions = [m.weight for m in module.modules() if is_san_layer(m)]
    dir_ids = {id(p) for p in directions}
    others = [p for p in module.parameters() if id(p) not in dir_ids]
    groups = [dict(params=others, **group_kw)]
    if directions:
        dir_group = dict(params=directions, **group_kw)
        if dir_lr is not None:
            dir_group['lr'] = dir_lr
        groups.append(dir_group)
    return groups
