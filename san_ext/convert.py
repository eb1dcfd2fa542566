"""One-call SAN conversion of an existing discriminator: ``D = sanify(D)``.

"With only simple modifications, a broad class of existing GANs can be converted" (Takida et al., ICLR 2024):
the modification is replacing the last linear layer by a normalized linear layer and exposing ``(fun, dir)``.
:func:`sanify` swaps the chosen ``nn.Linear`` / ``nn.Conv2d`` for :class:`SANLinear` / :class:`SANConv2d`
with the same function value (direction = normalized rows, scale = row norms, an output bias moved to the
input side), and wraps D so that ``D(x, flg_train=True)`` returns ``(fun, dir)``.

What it cannot convert (it raises or documents instead of guessing):
- a last layer that is not ``nn.Linear`` / ``nn.Conv2d`` (e.g. ``nn.Bilinear``, a custom op, grouped conv);
- the class projection of a projection discriminator (``<embed(y), h>``): that needs :class:`SANEmbedding`
  and a code change to the head; the converted D is SAN on its unconditional layer only;
- anything non-linear *after* the layer (a sigmoid inside D): remove it and use a loss on logits;
- an output bias on a padded conv, which has no exact input-side equivalent: pass ``bias='drop'``.
Ops after the layer must be linear and parameter-free in the logit (reshape, flatten, mean, sum, concat);
when the output is not a plain reshape of the layer's output, the ``dir`` logits take a second forward pass.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from .layers import SANConv2d, SANLinear, is_san_layer, normalize_san_weights

__all__ = ['SANDiscriminator', 'sanify', 'find_last_layer']


def find_last_layer(D: nn.Module) -> str:
    """Name of the last registered ``nn.Linear`` / ``nn.Conv2d`` that is not already a SAN layer."""
    candidates = [name for name, m in D.named_modules()
                  if isinstance(m, (nn.Linear, nn.Conv2d)) and not is_san_layer(m)]
    if not candidates:
        kinds = sorted({type(m).__name__ for m in D.modules()} - {type(D).__name__})
        raise ValueError(f'sanify found no nn.Linear or nn.Conv2d in {type(D).__name__} (modules: '
                         f'{", ".join(kinds) or "none"}); pass layer=NAME of the last linear layer')
    return candidates[-1]


def _effective_weight_and_bias(layer: nn.Module) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Weight as the forward sees it (after spectral-norm parametrizations or hooks) and the output bias."""
    weight = layer.weight  # parametrized modules compute it on access; hook-based spectral norm stores it
    return weight.detach().clone(), None if layer.bias is None else layer.bias.detach().clone()


def _input_bias_for(san: nn.Module, out_bias: torch.Tensor) -> torch.Tensor:
    """Solve s_k <omega_k, beta> = b_k for the input-side bias beta (exact when the rows are independent)."""
    omega = san.weight.detach()
    if isinstance(san, SANConv2d):
        padded = san.padding != 'valid' and any(p != 0 for p in _as_pair(san.padding))
        if padded and san.padding_mode == 'zeros':
            raise ValueError('sanify cannot move the output bias of a padded Conv2d to the input side exactly '
                             '(zero padding breaks the constant shift at the borders); pass bias="drop"')
        omega = omega.sum(dim=(2, 3))  # a constant input shift beta_c meets the kernel summed over space
    target = out_bias / san.scale.detach()
    beta = torch.linalg.lstsq(omega.double(), target.double().unsqueeze(1)).solution.squeeze(1)
    residual = (omega.double() @ beta - target.double()).abs().max().item()
    if residual > 1e-5 * (1 + target.abs().max().item()):
        raise ValueError(f'sanify cannot represent the output bias of this layer on the input side '
                         f'(residual {residual:.2e}: more outputs than independent inputs); pass bias="drop"')
    return beta.to(omega.dtype)


def _build_san_layer(layer: nn.Module, bias: str, positive_scale: bool) -> nn.Module:
    """A SAN layer with the same function value as ``layer``."""
    weight, out_bias = _effective_weight_and_bias(layer)
    keep_bias = out_bias is not None and bias == 'keep'
    kw = dict(bias=keep_bias, positive_scale=positive_scale, device=weight.device, dtype=weight.dtype)
    if isinstance(layer, nn.Conv2d):
        if layer.groups != 1:
            raise ValueError(f'sanify cannot convert a grouped Conv2d (groups={layer.groups}): SAN needs one '
                             'direction over all input channels per output')
        san = SANConv2d(layer.in_channels, layer.out_channels, layer.kernel_size, layer.stride, layer.padding,
                        layer.dilation, padding_mode=layer.padding_mode, **kw)
    elif isinstance(layer, nn.Linear):
        san = SANLinear(layer.in_features, layer.out_features, **kw)
    else:
        raise TypeError(f'sanify converts nn.Linear or nn.Conv2d, got {type(layer).__name__}')
    with torch.no_grad():
        norm = weight.flatten(1).norm(dim=1).clamp_min(1e-12)
        san.weight.copy_(weight / norm.view(-1, *([1] * (weight.ndim - 1))))
        san.scale.copy_(norm.abs() if positive_scale else norm)
        if keep_bias:
            san.bias.copy_(_input_bias_for(san, out_bias))
    return san


def _as_pair(padding) -> tuple:
    return (1, 1) if isinstance(padding, str) else tuple(padding)  # 'same' pads whenever the kernel is > 1


def _set_submodule(root: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition('.')
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, child, module)


class SANDiscriminator(nn.Module):
    """Wraps a discriminator whose last layer is a SAN layer so that ``forward(..., flg_train=True)`` returns
    ``(fun, dir)`` with the routing of SAN Eq. 8; without ``flg_train`` it is the wrapped D unchanged."""

    def __init__(self, module: nn.Module, layer_name: str) -> None:
        super().__init__()
        self.module = module
        self.layer_name = layer_name
        self._route: str | None = None
        self._seen: dict[str, torch.Tensor] = {}
        self.san_layer.register_forward_hook(self._route_output)

    @property
    def san_layer(self) -> nn.Module:
        return self.module.get_submodule(self.layer_name)

    def _route_output(self, layer: nn.Module, inputs: tuple, output: torch.Tensor):
        if self._route is None:
            return None
        fun, dir_ = layer.forward(inputs[0], flg_train=True)  # forward, not __call__: no hook recursion
        self._seen.update(fun=fun, dir=dir_)
        return fun if self._route == 'fun' else dir_

    def forward(self, *args, flg_train: bool = False, **kwargs):
        if not flg_train:
            return self.module(*args, **kwargs)
        try:
            self._route = 'fun'
            out_fun = self.module(*args, **kwargs)
            fun, dir_ = self._seen['fun'], self._seen['dir']
            if _is_reshape_of(out_fun, fun):  # the common case: logits = layer output, maybe flattened
                return out_fun, dir_.reshape(out_fun.shape)
            return out_fun, self._dir_by_second_pass(args, kwargs)
        finally:
            self._route = None
            self._seen.clear()

    def _dir_by_second_pass(self, args: tuple, kwargs: dict) -> torch.Tensor:
        """Run D again with the layer emitting ``dir`` and every other parameter frozen, so only omega learns."""
        omega = self.san_layer.weight
        frozen = [p for p in self.module.parameters() if p.requires_grad and p is not omega]
        detach = lambda v: v.detach() if isinstance(v, torch.Tensor) else v  # noqa: E731
        with contextlib.ExitStack() as stack:
            for p in frozen:
                p.requires_grad_(False)
                stack.callback(p.requires_grad_, True)
            self._route = 'dir'
            return self.module(*map(detach, args), **{k: detach(v) for k, v in kwargs.items()})

    def normalize_weight(self) -> None:
        """Re-project every SAN layer inside the wrapped D (call after each D optimizer step)."""
        normalize_san_weights(self.module)


def _is_reshape_of(out, layer_out: torch.Tensor) -> bool:
    return (isinstance(out, torch.Tensor) and out.numel() == layer_out.numel()
            and torch.equal(out.detach().reshape(-1), layer_out.detach().reshape(-1)))


def sanify(D: nn.Module, layer: str = 'auto', *, bias: str = 'keep', positive_scale: bool = False) -> SANDiscriminator:
    """Convert D's last linear layer into a SAN layer in place and return D wrapped for ``flg_train``.

    Args:
        D: the discriminator; its parameters and other layers are kept (the wrapper holds it as ``.module``).
        layer: dotted name of the layer to convert, or ``'auto'`` for the last registered Linear/Conv2d.
        bias: ``'keep'`` moves an output bias to the SAN layer's input-side bias with the same function value;
            ``'drop'`` removes it (the function then changes by that constant).
        positive_scale: see :class:`SANLinear`.
    """
    if bias not in ('keep', 'drop'):
        raise ValueError(f"bias must be 'keep' or 'drop', got {bias!r}")
    if isinstance(D, SANDiscriminator):
        raise ValueError('D is already converted (a SANDiscriminator); call sanify once')
    name = find_last_layer(D) if layer == 'auto' else layer
    try:
        target = D.get_submodule(name)
    except AttributeError:
        names = [n for n, m in D.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
        raise ValueError(f'{type(D).__name__} has no submodule {name!r}; its Linear/Conv2d layers: '
                         f'{", ".join(names) or "none"}') from None
    if is_san_layer(target):
        raise ValueError(f'layer {name!r} is already a SAN layer')
    _set_submodule(D, name, _build_san_layer(target, bias, positive_scale))
    return SANDiscriminator(D, name)
