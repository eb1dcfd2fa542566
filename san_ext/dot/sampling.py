"""A generator with latent DOT built in: ``DOTGenerator(G, D)(z, c) = G(T(z), c)``, T the latent-space DOT map.

It has G's ``z_dim``/``c_dim``, so it drops into anything that samples ``G(z, c)``, e.g.
``san_ext.metrics.compute_metrics`` (FID with DOT) or ``gen_images.py``. k_eff is estimated once, at construction,
on fresh latents (per class for a conditional G), so every batch is transported with the same k_eff and a sample's
result does not depend on the batch it is drawn in. Imports only torch and the standard library.
"""

from __future__ import annotations

from typing import Callable, Optional

import torch
from torch import nn

from .critic import Critic
from .keff import estimate_latent_k_eff
from .transport import KEff, latent_space_dot

__all__ = ['DOTGenerator', 'Truncated']


class Truncated(nn.Module):
    """``G(z, c, truncation_psi=psi)`` as a two-argument callable (plain ``G(z, c)`` when psi = 1)."""

    def __init__(self, G: Callable, truncation_psi: float = 1.0) -> None:
        super().__init__()
        self.G, self.truncation_psi = G, float(truncation_psi)
        self.z_dim, self.c_dim = int(G.z_dim), int(getattr(G, 'c_dim', 0))

    def forward(self, z: torch.Tensor, c: Optional[torch.Tensor] = None) -> torch.Tensor:
        if self.truncation_psi == 1.0:
            return self.G(z, c)
        return self.G(z, c, truncation_psi=self.truncation_psi)


class DOTGenerator(nn.Module):
    """Latent DOT (Tanaka 2019, Alg. 2) on z before G, then G: a drop-in generator ``(z, c) -> images``.

    DOT and the final image use the same ``truncation_psi``: the transported z is scored through the generator that
    renders it. ``k_eff=None`` estimates it now on 2 * ``pairs`` fresh prior latents per class (all ``c_dim``
    classes, or ``classes``) seeded by ``generator``; pass a number or tensor to fix it (e.g. a value from a log).
    """

    def __init__(self, G: Callable, D: Critic, *, k_eff: Optional[KEff] = None, steps: int = 10, lr: float = 0.01,
                 opt: str = 'sgd', prior: str = 'normal', delta: float = 1e-3, batch_size: Optional[int] = None,
                 truncation_psi: float = 1.0, pairs: int = 100, classes: Optional[list[int]] = None,
                 generator: Optional[torch.Generator] = None, device: Optional[torch.device] = None) -> None:
        super().__init__()
        self.G, self.D = Truncated(G, truncation_psi), D
        self.z_dim, self.c_dim = self.G.z_dim, self.G.c_dim
        self.steps, self.lr, self.opt, self.prior, self.delta, self.batch_size = steps, lr, opt, prior, delta, \
            batch_size
        if k_eff is None and steps > 0:
            if self.c_dim > 0:
                classes = list(range(self.c_dim)) if classes is None else classes
            k_eff = estimate_latent_k_eff(self.G, D, [self.z_dim], classes=classes if self.c_dim else None,
                                          num_classes=self.c_dim or None, prior=prior, pairs=pairs,
                                          generator=generator, batch_size=batch_size, device=device)
        self.k_eff = None if k_eff is None else torch.as_tensor(k_eff, dtype=torch.float32)
        self.description = ''  # what a CLI records beside its results (san_ext.dot.cli)

    def transport(self, z: torch.Tensor, c: Optional[torch.Tensor] = None) -> torch.Tensor:
        """The transported latents T(z) (detached)."""
        c = c if self.c_dim > 0 else None  # compute_metrics passes c [N, 0] for unconditional G
        if self.steps == 0:
            return z.detach().clone()
        return latent_space_dot(self.G, self.D, z, c, k_eff=self.k_eff.to(z.device), steps=self.steps, lr=self.lr,
                                prior=self.prior, opt=self.opt, delta=self.delta, batch_size=self.batch_size,
                                num_classes=self.c_dim or None)

    def forward(self, z: torch.Tensor, c: Optional[torch.Tensor] = None) -> torch.Tensor:
        """z [N, z_dim], c one-hot [N, c_dim] (or ids) -> G(T(z), c)."""
        z = self.transport(z, c)
        with torch.no_grad():
            return self.G(z, c if self.c_dim > 0 else None)
