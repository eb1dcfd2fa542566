"""StyleGAN-XL mapping network: z (+ class embedding) -> w, with class-wise truncation.

StyleGAN (Karras et al., CVPR 2019) Sec. 2 maps a normalised latent through an MLP with equalized learning rate
(Karras et al., ICLR 2018, Sec. 4.1) and a 100x lower learning rate. StyleGAN-XL (Sauer et al., SIGGRAPH 2022,
Sec. 4) feeds a class embedding beside z and truncates each sample towards the mean w of its own class. Parameter
and buffer names (``embed``, ``embed_proj``, ``fc{i}``, ``w_avg``) follow upstream's so state dicts can be mapped.
Our own code (MIT).
"""

from __future__ import annotations

import math
from typing import Optional, Union

import torch
from torch import nn

from torch_utils.ops.bias_act import bias_act

__all__ = ['FullyConnected', 'MappingNetwork', 'class_ids', 'normalize_2nd_moment']


def normalize_2nd_moment(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Scale each row of ``x`` [N, D] to unit mean square (StyleGAN's pixel norm on latents)."""
    return x * (x.square().mean(dim=1, keepdim=True) + eps).rsqrt()


class FullyConnected(nn.Module):
    """Linear layer with equalized learning rate: the stored weight is N(0, 1) / lr, scaled at run time by
    ``lr / sqrt(in_features)`` (ProGAN Sec. 4.1); the stored bias is ``bias_init / lr`` and scaled by ``lr``."""

    def __init__(self, in_features: int, out_features: int, activation: str = 'linear', lr_multiplier: float = 1.0,
                 weight_init: float = 1.0, bias_init: Union[float, list[float]] = 0.0):
        super().__init__()
        self.in_features, self.out_features, self.activation = in_features, out_features, activation
        self.weight = nn.Parameter(torch.randn([out_features, in_features]) * (weight_init / lr_multiplier))
        init = torch.as_tensor(bias_init, dtype=torch.float32).broadcast_to([out_features])
        self.bias = nn.Parameter(init / lr_multiplier)
        self.weight_gain = lr_multiplier / math.sqrt(in_features)
        self.bias_gain = lr_multiplier

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [N, in] -> [N, out]
        w = self.weight.to(x.dtype) * self.weight_gain
        b = self.bias.to(x.dtype) * self.bias_gain
        if self.activation == 'linear':
            return torch.addmm(b.unsqueeze(0), x, w.t())
        return bias_act(x @ w.t(), b, act=self.activation)

    def extra_repr(self) -> str:
        return f'in_features={self.in_features}, out_features={self.out_features}, activation={self.activation}'


def class_ids(c: torch.Tensor, c_dim: int) -> torch.Tensor:
    """Integer class ids [N] from one-hot/soft labels [N, c_dim] (argmax, as StyleGAN-XL) or from ids [N]."""
    if c.ndim == 2 and c.is_floating_point():
        if c.shape[1] != c_dim:
            raise ValueError(f'one-hot labels must have shape [N, {c_dim}], got {list(c.shape)}')
        return c.argmax(dim=1)
    if c.ndim != 1 or c.is_floating_point() or c.dtype == torch.bool:
        raise ValueError(f'class labels must be one-hot floats [N, {c_dim}] or integer ids [N], '
                         f'got {c.dtype} of shape {list(c.shape)}')
    if c.numel() and (int(c.min()) < 0 or int(c.max()) >= c_dim):
        raise ValueError(f'class ids must lie in [0, {c_dim - 1}] (c_dim={c_dim}), '
                         f'got min {int(c.min())}, max {int(c.max())}')
    return c.long()


class MappingNetwork(nn.Module):
    """z [N, z_dim] and class c -> ws [N, num_ws, w_dim] (StyleGAN-XL Sec. 4; truncation: StyleGAN Sec. 3.2).

    Conditional: ``embed`` (c_dim x embed_dim, trainable; ``embed_init`` copies given rows, e.g. upstream's pretrained
    lite0 class embeddings) -> ``embed_proj`` FC + lrelu -> 2nd-moment norm, concatenated with the normalised z.
    ``w_avg`` [c_dim, w_dim] ([1, w_dim] unconditional) tracks each class's mean w by EMA, only when ``update_emas``.
    """

    def __init__(self, z_dim: int, c_dim: int, w_dim: int, num_ws: int, embed_dim: int = 320, num_layers: int = 2,
                 lr_multiplier: float = 0.01, w_avg_beta: float = 0.998, embed_init: Optional[torch.Tensor] = None):
        super().__init__()
        self.z_dim, self.c_dim, self.w_dim, self.num_ws = z_dim, c_dim, w_dim, num_ws
        self.num_layers, self.w_avg_beta = num_layers, w_avg_beta
        if c_dim > 0:
            self.embed = nn.Embedding(c_dim, embed_dim)
            if embed_init is not None:
                self._load_embedding(embed_init)
            self.embed_proj = FullyConnected(embed_dim, z_dim, activation='lrelu')
        elif embed_init is not None:
            raise ValueError('embed_init given for an unconditional mapping network (c_dim=0)')
        features = [z_dim * (2 if c_dim > 0 else 1)] + [w_dim] * num_layers
        for i in range(num_layers):
            self.add_module(f'fc{i}', FullyConnected(features[i], features[i + 1], 'lrelu', lr_multiplier))
        self.register_buffer('w_avg', torch.zeros([max(c_dim, 1), w_dim]))

    def _load_embedding(self, table: torch.Tensor) -> None:
        """Copy the first c_dim rows of ``table`` [>= c_dim, embed_dim] (fewer classes reuse the first rows)."""
        rows, dim = self.embed.weight.shape
        if table.ndim != 2 or table.shape[0] < rows or table.shape[1] != dim:
            raise ValueError(f'embed_init must have shape [>= {rows}, {dim}], got {list(table.shape)}')
        with torch.no_grad():
            self.embed.weight.copy_(table[:rows])

    def forward(self, z: torch.Tensor, c: Optional[torch.Tensor], truncation_psi: float = 1.0,
                truncation_cutoff: Optional[int] = None, update_emas: bool = False) -> torch.Tensor:
        if z.ndim != 2 or z.shape[1] != self.z_dim:
            raise ValueError(f'z must have shape [N, {self.z_dim}], got {list(z.shape)}')
        x = normalize_2nd_moment(z.to(torch.float32))
        ids = torch.zeros(len(z), dtype=torch.long, device=z.device)
        if self.c_dim > 0:
            if c is None:
                raise ValueError(f'a conditional generator (c_dim={self.c_dim}) needs class labels c')
            ids = class_ids(c.to(z.device), self.c_dim)
            if len(ids) != len(z):
                raise ValueError(f'z and c disagree on the batch size: {len(z)} vs {len(ids)}')
            y = normalize_2nd_moment(self.embed_proj(self.embed(ids)))
            x = torch.cat([x, y], dim=1)
        for i in range(self.num_layers):
            x = getattr(self, f'fc{i}')(x)  # [N, w_dim]
        if update_emas:
            self._update_w_avg(x.detach(), ids)
        ws = x.unsqueeze(1).repeat([1, self.num_ws, 1])  # [N, num_ws, w_dim]
        if truncation_psi != 1:
            cutoff = self.num_ws if truncation_cutoff is None else truncation_cutoff
            center = self.w_avg[ids].unsqueeze(1)  # [N, 1, w_dim], each sample's own class centre
            ws[:, :cutoff] = center.lerp(ws[:, :cutoff], truncation_psi)
        return ws

    @torch.no_grad()
    def _update_w_avg(self, w: torch.Tensor, ids: torch.Tensor) -> None:
        """EMA of w. Unconditional: one step towards the batch mean, as StyleGAN. Conditional: each present class
        moves towards its batch mean with decay ``beta ** count``, so a class seen k times moves as far as under
        upstream's k sequential per-sample updates (which weight the k samples slightly unequally)."""
        if self.c_dim == 0:
            self.w_avg.copy_(w.mean(dim=0, keepdim=True).lerp(self.w_avg, self.w_avg_beta))
            return
        counts = torch.bincount(ids, minlength=self.c_dim).to(w.dtype)  # [C]
        sums = torch.zeros_like(self.w_avg).index_add_(0, ids, w)
        present = counts > 0
        means = sums[present] / counts[present, None]
        keep = self.w_avg_beta ** counts[present, None]
        self.w_avg[present] = means.lerp(self.w_avg[present], keep)

    def extra_repr(self) -> str:
        return f'z_dim={self.z_dim}, c_dim={self.c_dim}, w_dim={self.w_dim}, num_ws={self.num_ws}'
