"""How close a discriminator's directions are to SAN's optimal direction (Takida et al., ICLR 2024, Sec. 4 and Fig. 2).

SAN's claim is that its direction omega tracks the *optimal direction*: for fixed features h(x), the maximiser over
the unit sphere of the direction objective. This module measures that, for SAN and plain discriminators alike:

- :func:`optimal_direction` -- omega* for given real and fake features (and the loss's direction weights rho);
- :func:`direction_alignment` -- cosine of each row of omega with omega*;
- :func:`san_alignment` -- the cosine for every SAN layer of a module, read with hooks on a forward of D.

Imports only torch (the drop-in rule): it works inside someone else's training loop.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Optional, Union

import torch
import torch.nn.functional as F
from torch import nn

from san_ext.layers import is_san_layer

__all__ = ['optimal_direction', 'direction_alignment', 'san_alignment', 'direction_weights']

_EPS = 1e-12
_MEASURABLE = (nn.Linear, nn.Conv2d, nn.Embedding)
Labels = Union[None, torch.Tensor, tuple[torch.Tensor, torch.Tensor]]


def _weighted_mean(h: torch.Tensor, w: Optional[torch.Tensor]) -> torch.Tensor:
    if h.ndim != 2:
        raise ValueError(f'features must be [N, F], got shape {list(h.shape)}')
    if w is None:
        return h.mean(dim=0)
    w = torch.as_tensor(w, dtype=h.dtype, device=h.device).reshape(-1)
    if w.shape[0] != h.shape[0]:
        raise ValueError(f'weights must have one entry per feature row: got {w.shape[0]} for {h.shape[0]} rows')
    return (w[:, None] * h).mean(dim=0)


def optimal_direction(h_real: torch.Tensor, h_fake: torch.Tensor, weights_real: Optional[torch.Tensor] = None,
                      weights_fake: Optional[torch.Tensor] = None) -> torch.Tensor:
    """The unit vector omega* = m / |m|, m = E_r[rho_r h] - E_f[rho_f h], for features ``[N, F]``; returns ``[F]``.

    For fixed features, SAN's direction objective (Takida et al. 2024, Eq. 9, with the per-sample weights rho of
    the loss's reweighting; rho = 1 for hinge and Wasserstein) is J(omega) = E_r[rho <omega, h>] - E_f[rho <omega, h>]
    = <omega, m>, which Cauchy-Schwarz maximises over |omega| = 1 at omega = m / |m|. Where m = 0 (real and fake
    features alike) every direction is optimal and the zero vector is returned, whose cosine with anything is 0.
    """
    if h_real.shape[1:] != h_fake.shape[1:]:
        raise ValueError(f'real and fake features differ in width: {list(h_real.shape)} vs {list(h_fake.shape)}')
    m = _weighted_mean(h_real, weights_real) - _weighted_mean(h_fake, weights_fake)
    return m / m.norm().clamp_min(_EPS)


def direction_alignment(omega: torch.Tensor, h_real: torch.Tensor, h_fake: torch.Tensor,
                        weights_real: Optional[torch.Tensor] = None,
                        weights_fake: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Cosine of each row of ``omega`` ``[K, F]`` (or ``[F]``) with :func:`optimal_direction`; returns ``[K]``.

    1 means the direction is the optimal one for these features, 0 orthogonal, -1 the worst direction.
    """
    target = optimal_direction(h_real, h_fake, weights_real, weights_fake)  # [F]
    rows = omega.reshape(-1, target.shape[0]).to(target.dtype)
    return rows @ target / rows.norm(dim=1).clamp_min(_EPS)


def direction_weights(loss: Any, logits: torch.Tensor, real: bool) -> torch.Tensor:
    """The loss's detached per-element direction weights rho at ``logits`` (ones when ``loss`` is None)."""
    if loss is None:
        return torch.ones_like(logits)
    return loss.direction_weights(logits.detach(), real=real)


def _pair_weights(loss: Any, real: torch.Tensor, fake: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Detached weights rho of a real and a fake batch of logits: each side its own for a per-sample loss, rho(t) of
    the pair t = real - fake for a paired one (RpGAN), ones when ``loss`` is None."""
    if loss is None:
        return torch.ones_like(real), torch.ones_like(fake)
    return loss.pair_direction_weights(real.detach(), fake.detach())


# -- reading the SAN layers of a module with hooks ---------------------------------------------------------------
def _is_embedding(m: nn.Module) -> bool:
    return isinstance(m, nn.Embedding)


@contextmanager
def _restored_buffers(module: nn.Module) -> Iterator[None]:
    """Run a diagnostic forward without side effects: BatchNorm statistics and spectral-norm vectors restored."""
    saved = [(b, b.detach().clone()) for b in module.buffers()]
    try:
        yield
    finally:
        with torch.no_grad():
            for b, value in saved:
                b.copy_(value)


def _projection_features(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """What the projection of a SANLinear / SANConv2d sees: its input plus its input-side bias, as rows ``[M, F]``."""
    x = x.detach()
    input_bias = is_san_layer(layer) and layer.bias is not None  # a plain layer's bias is added after the product
    if isinstance(layer, nn.Conv2d):
        if input_bias:
            x = x + layer.bias.detach().view(1, -1, 1, 1)
        patches = F.unfold(x, layer.kernel_size, layer.dilation, layer.padding, layer.stride)  # [N, C*k*k, L]
        return patches.transpose(1, 2).reshape(-1, patches.shape[1])
    if input_bias:
        x = x + layer.bias.detach()
    return x.reshape(-1, x.shape[-1])


def _effective_rows(layer: nn.Module) -> torch.Tensor:
    """omega per output row times sign(s): s <omega, h> = |s| <sign(s) omega, h>, so this is the direction D uses
    (a plain layer: its normalised weight rows)."""
    w = layer.weight.detach()
    rows = F.normalize(w.reshape(w.shape[0], -1), dim=1, eps=_EPS)
    if not is_san_layer(layer):
        return rows
    scale = layer.effective_scale() if hasattr(layer, 'effective_scale') else layer.scale
    return rows * torch.sign(scale.detach().reshape(-1, 1))


def _split_labels(c: Labels) -> tuple[Optional[torch.Tensor], Optional[torch.Tensor]]:
    if c is None or isinstance(c, torch.Tensor):
        return c, c
    return c[0], c[1]


def _class_ids(c: torch.Tensor) -> torch.Tensor:
    return c.argmax(dim=1) if c.ndim == 2 else c.reshape(-1).long()


def _logits(out: Any) -> torch.Tensor:
    """D's output as one ``[N, M]`` tensor (a dict or list of per-head logits is concatenated)."""
    if isinstance(out, dict):
        out = list(out.values())
    if isinstance(out, (list, tuple)):
        return torch.cat([o.reshape(o.shape[0], -1) for o in out], dim=1)
    return out.reshape(out.shape[0], -1)


class _Recorder:
    """Forward hooks that keep each SAN layer's input (projections) or output and class ids (embeddings)."""

    def __init__(self, layers: dict[str, nn.Module]) -> None:
        self.layers, self.seen, self.handles = layers, {}, []
        for name, layer in layers.items():
            self.handles.append(layer.register_forward_hook(self._hook(name)))

    def _hook(self, name: str):
        def hook(module, args, output):
            if _is_embedding(module):  # a leaf in D's graph: its gradient is the class's features, params untouched
                output = output.detach().requires_grad_(True)
            self.seen[name] = (args[0], output)
            return output
        return hook

    def close(self) -> None:
        for h in self.handles:
            h.remove()


def _forward(D: nn.Module, x: torch.Tensor, c: Optional[torch.Tensor], kwargs: dict) -> torch.Tensor:
    return _logits(D(x, **kwargs) if c is None else D(x, c, **kwargs))


def _weight_source(layer: nn.Module, seen: tuple, logits: torch.Tensor) -> torch.Tensor:
    """The 2-D logits the loss weights for this layer: D's ``[N, M]`` logits for an embedding, the layer's own
    output as ``[N, K*L]`` (conv) or ``[M, K]`` (linear) otherwise."""
    out = seen[1]
    if _is_embedding(layer):
        return logits
    if isinstance(layer, nn.Conv2d):
        return out.reshape(out.shape[0], -1)
    return out.reshape(-1, out.shape[-1])


def _layer_record(layer: nn.Module, seen: tuple, logits: torch.Tensor, rho: torch.Tensor):
    """Per SAN layer: features ``[M, F]`` and per-row weights ``[K, M]`` (projections), or per-sample features
    ``[N, F]`` and class ids ``[N]`` (embeddings: the gradient of sum(rho * logits) w.r.t. the class vectors);
    ``rho`` are the direction weights on :func:`_weight_source`'s logits."""
    x, out = seen
    if _is_embedding(layer):
        (g,) = torch.autograd.grad((rho * logits).sum(), out, retain_graph=True)
        return g.reshape(g.shape[0], -1).detach(), _class_ids(x)
    feats = _projection_features(layer, x)
    if isinstance(layer, nn.Conv2d):  # [N, K, H, W]: weights as the loss computes them on D's [N, M] logits
        n, k = out.shape[:2]
        rho = rho.reshape(n, k, -1)  # [N, K, L]
    else:  # [..., K]
        k = out.shape[-1]
        rho = rho[:, :, None]  # [M, K, 1]
    return feats, rho.transpose(0, 1).reshape(k, -1)  # [K, M] in the row order of feats


def _embedding_alignment(layer: nn.Module, real: tuple, fake: tuple) -> float:
    """Mean over classes present among real and fake samples of cos(sign(s_c) omega_c, omega*_c)."""
    (g_r, ids_r), (g_f, ids_f) = real, fake
    rows = _effective_rows(layer)
    cosines = [direction_alignment(rows[k], g_r[ids_r == k], g_f[ids_f == k])[0]
               for k in sorted(set(ids_r.tolist()) & set(ids_f.tolist()))]
    return float(torch.stack(cosines).mean()) if cosines else math.nan


def _projection_alignment(layer: nn.Module, real: tuple, fake: tuple) -> float:
    """Mean over output rows of cos(sign(s_k) omega_k, omega*_k), each row with its own weights rho."""
    (h_r, w_r), (h_f, w_f) = real, fake
    rows = _effective_rows(layer)
    return float(torch.stack([direction_alignment(rows[k], h_r, h_f, w_r[k], w_f[k])[0]
                              for k in range(rows.shape[0])]).mean())


def san_alignment(D: nn.Module, x_real: torch.Tensor, x_fake: torch.Tensor, c: Labels = None, *,
                  loss: Any = None, layers: Optional[Sequence[str]] = None, **d_kwargs) -> dict[str, float]:
    """SAN layer name -> cosine of its (sign-corrected) direction with the optimal direction on these batches.

    Calls ``D(x)`` (or ``D(x, c)``; ``c`` one tensor for both batches or a pair ``(c_real, c_fake)``, ids or
    one-hot) once on each batch, reads each SAN layer's input with a forward hook, and compares its rows with
    :func:`optimal_direction` of those features weighted by ``loss``'s direction weights (``None``: rho = 1, hinge
    and Wasserstein; a paired loss weights real i and fake i alike by rho(t_i), so both batches need one size).
    For a :class:`~san_ext.layers.SANEmbedding` the features of class c are the gradients of
    sum(rho * logits) w.r.t. the class vectors of c's samples (for a projection head, rho h / sqrt(d)); classes
    present in both batches are averaged. D's buffers (BatchNorm, spectral norm) are restored afterwards and no
    parameter's ``.grad`` is touched, so the call leaves training unchanged.

    ``layers`` restricts the measurement to the named modules, and may name a plain ``nn.Linear`` / ``nn.Conv2d`` /
    ``nn.Embedding`` too: a GAN's last layer is then measured by its normalised weight rows (no scale, its bias
    after the product), the comparison SAN's paper draws.
    """
    if layers is None:
        san_layers = {n: m for n, m in D.named_modules() if is_san_layer(m)}
    else:
        found = dict(D.named_modules())
        unknown = [n for n in layers if not isinstance(found.get(n), _MEASURABLE)]
        if unknown:
            raise ValueError(f'no Linear, Conv2d or Embedding layer named {", ".join(map(repr, unknown))} in '
                             f'{type(D).__name__}')
        san_layers = {n: found[n] for n in layers}
    if not san_layers:
        raise ValueError(f'{type(D).__name__} has no SAN layer to measure; sanify it or name its last layer in layers')
    c_real, c_fake = _split_labels(c)
    recorder = _Recorder(san_layers)
    records: dict[str, list] = {n: [] for n in san_layers}
    try:
        with _restored_buffers(D), torch.enable_grad():
            sides = []  # (seen, logits) of the real, then the fake batch
            for x, cc in ((x_real, c_real), (x_fake, c_fake)):
                recorder.seen.clear()
                logits = _forward(D, x.detach(), cc, d_kwargs)
                sides.append((dict(recorder.seen), logits))
            for name, layer in san_layers.items():
                (seen_r, logits_r), (seen_f, logits_f) = sides
                rho = _pair_weights(loss, _weight_source(layer, seen_r[name], logits_r),
                                    _weight_source(layer, seen_f[name], logits_f))
                records[name] = [_layer_record(layer, seen_r[name], logits_r, rho[0]),
                                 _layer_record(layer, seen_f[name], logits_f, rho[1])]
    finally:
        recorder.close()
    return {name: (_embedding_alignment if _is_embedding(layer) else _projection_alignment)(layer, *records[name])
            for name, layer in san_layers.items()}
