"""GAN losses and their SAN conversions, behind one registry: ``san_ext.losses.get(name, san=..., **kw)``.

Every loss maps logits to *per-element* loss tensors of the logits' shape; the caller reduces them (mean, or the
StyleGAN-XL sum over samples). D losses are to be minimised by D, the G loss by G.

With ``san=True`` the D losses take the ``(fun, dir)`` pair of ``D(x, flg_train=True)``: the base loss is applied to
``fun`` and ``dir_weight`` (lambda) times the direction term to ``dir``. The direction term is the Wasserstein critic
loss on omega, each sample weighted by the (detached) negative derivative -l_G'(f) of the generator's per-sample loss
at its logit: weight 1 for hinge and Wasserstein, which reproduces the official Hinge-SAN. ``docs/LOSSES.md`` has
every formula with its source and marks which conversions are our own derivation.

A *loss spec* names a loss and its SAN switch in one word, as ``train.py --loss`` and the studies spell it:
``NAME`` (plain) or ``NAME-san`` (its SAN conversion); ``san`` alone is StyleSAN-XL's Hinge-SAN (:func:`parse_spec`).

Imports only torch (the drop-in rule: it works inside someone else's training loop).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Callable, Union

import torch
import torch.nn.functional as F

__all__ = ['SAN_ALIASES', 'SAN_SUFFIX', 'GANLoss', 'get', 'list_losses', 'list_specs', 'parse_spec', 'register',
           'spec_name', 'unregister']

Logits = Union[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]

_LOSSES: dict[str, type[GANLoss]] = {}

SAN_SUFFIX = '-san'                                     # NAME-san: the SAN conversion of loss NAME
SAN_ALIASES: dict[str, tuple[str, bool]] = {'san': ('hinge', True)}  # StyleSAN-XL's `--loss san`


def register(name: str) -> Callable[[type[GANLoss]], type[GANLoss]]:
    """Class decorator that adds a loss to the registry under ``name``."""
    def deco(cls: type[GANLoss]) -> type[GANLoss]:
        if name in _LOSSES:
            raise ValueError(f'loss {name!r} is already registered')
        if name in SAN_ALIASES or name.endswith(SAN_SUFFIX):
            raise ValueError(f'loss name {name!r} would read as a SAN spec; pick a name that is not '
                             f'{", ".join(map(repr, SAN_ALIASES))} and does not end in {SAN_SUFFIX!r}')
        _LOSSES[name] = cls
        return cls
    return deco


def unregister(name: str) -> None:
    """Remove loss ``name`` from the registry (e.g. a test's own); unknown names fail listing the known ones."""
    if name not in _LOSSES:
        raise ValueError(f'unknown loss {name!r}; known: {", ".join(list_losses())}')
    del _LOSSES[name]


def list_losses() -> list[str]:
    """Names accepted by :func:`get`."""
    return sorted(_LOSSES)


def parse_spec(spec: str) -> tuple[str, bool]:
    """A loss spec to ``(name, san)``: ``'nonsaturating-san'`` -> ('nonsaturating', True), ``'hinge'`` ->
    ('hinge', False), ``'san'`` -> ('hinge', True); unknown specs fail listing the valid ones."""
    if spec in SAN_ALIASES:
        return SAN_ALIASES[spec]
    name, san = (spec[:-len(SAN_SUFFIX)], True) if spec.endswith(SAN_SUFFIX) else (spec, False)
    if name not in _LOSSES:
        raise ValueError(f'unknown loss {spec!r}; known: {", ".join(list_specs())}')
    return name, san


def spec_name(name: str, san: bool) -> str:
    """The canonical spec of loss ``name`` with or without SAN (inverse of :func:`parse_spec`): ``NAME[-san]``."""
    if name not in _LOSSES:
        raise ValueError(f'unknown loss {name!r}; known: {", ".join(list_losses())}')
    return f'{name}{SAN_SUFFIX}' if san else name


def list_specs() -> list[str]:
    """Every spec :func:`parse_spec` accepts: the aliases, then ``NAME`` and ``NAME-san`` for each loss."""
    return [*SAN_ALIASES, *(spec_name(n, san) for n in list_losses() for san in (False, True))]


def get(name: str, san: bool = False, **kw) -> GANLoss:
    """Build the loss ``name`` (``san=True``: its SAN conversion); unknown names or options fail listing valid ones."""
    if name not in _LOSSES:
        raise ValueError(f'unknown loss {name!r}; known: {", ".join(list_losses())}')
    cls = _LOSSES[name]
    options = {f.name for f in dataclasses.fields(cls)} - {'san'}
    unknown = sorted(set(kw) - options)
    if unknown:
        raise ValueError(f'loss {name!r} has no option {", ".join(map(repr, unknown))}; '
                         f'its options: {", ".join(sorted(options))}')
    return cls(san=san, **kw)


@dataclass(frozen=True)
class GANLoss:
    """Base class: subclasses define ``_d_real``, ``_d_fake``, ``_g`` on plain logits and ``_dir_weight``.

    Attributes:
        san: take ``(fun, dir)`` pairs in the D losses and add the SAN direction term.
        dir_weight: lambda, the weight of the direction term (1 in the paper and the official code).
    """

    san: bool = False
    dir_weight: float = 1.0

    def __post_init__(self) -> None:
        if not math.isfinite(self.dir_weight) or self.dir_weight < 0:
            raise ValueError(f'dir_weight must be a finite number >= 0, got {self.dir_weight}')

    # -- public API -------------------------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return next(k for k, v in _LOSSES.items() if v is type(self))

    def d_real(self, logits: Logits) -> torch.Tensor:
        """Per-element D loss on real samples (``(fun, dir)`` when ``san``)."""
        fun, dir_ = self._unpack(logits, 'd_real')
        loss = self._d_real(fun)
        if self.san:
            loss = loss - self.dir_weight * self._dir_weight(dir_.detach(), real=True) * dir_
        return loss

    def d_fake(self, logits: Logits) -> torch.Tensor:
        """Per-element D loss on generated samples (``(fun, dir)`` when ``san``)."""
        fun, dir_ = self._unpack(logits, 'd_fake')
        loss = self._d_fake(fun)
        if self.san:
            loss = loss + self.dir_weight * self._dir_weight(dir_.detach(), real=False) * dir_
        return loss

    def g(self, logits: torch.Tensor) -> torch.Tensor:
        """Per-element G loss on D's ordinary logits for generated samples (G's step uses ``flg_train=False``)."""
        if isinstance(logits, (tuple, list)):
            raise TypeError(f'{self.name} G loss takes the plain logits D(G(z)), not a (fun, dir) pair; '
                            'call D without flg_train in the generator step')
        return self._g(_as_tensor(logits, 'g'))

    def direction_weights(self, logits: torch.Tensor, real: bool) -> torch.Tensor:
        """The detached per-element weights rho of the SAN direction term at plain ``logits``: -l_G'(f) (Sec. 4 of
        Takida et al. 2024), 1 for hinge and Wasserstein; batch on dim 0 (KL-WGAN normalises over it)."""
        f = _as_tensor(logits, 'direction_weights').detach()
        return torch.as_tensor(self._dir_weight(f, real=real), dtype=f.dtype, device=f.device).expand_as(f).clone()

    def d_loss(self, real: Logits, fake: Logits) -> torch.Tensor:
        """Scalar D loss: mean over real elements plus mean over fake elements."""
        return self.d_real(real).mean() + self.d_fake(fake).mean()

    def g_loss(self, fake: torch.Tensor) -> torch.Tensor:
        """Scalar G loss: mean over elements."""
        return self.g(fake).mean()

    # -- to implement -----------------------------------------------------------------------------------------
    def _d_real(self, f: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _d_fake(self, f: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _g(self, f: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _dir_weight(self, f: torch.Tensor, real: bool) -> torch.Tensor | float:
        """-d l_G / d f at the (detached) logit: the per-sample weight of the SAN direction term."""
        return 1.0

    # -- helpers ----------------------------------------------------------------------------------------------
    def _unpack(self, logits: Logits, where: str) -> tuple[torch.Tensor, torch.Tensor | None]:
        is_pair = isinstance(logits, (tuple, list))
        if self.san and not is_pair:
            raise TypeError(f'SAN {self.name} {where} expects the pair (fun, dir) from D(x, flg_train=True), '
                            f'got {type(logits).__name__}')
        if not self.san and is_pair:
            raise TypeError(f'{self.name} {where} (san=False) expects one logit tensor, got a pair; '
                            f'use san_ext.losses.get({self.name!r}, san=True) for (fun, dir)')
        if not is_pair:
            return _as_tensor(logits, where), None
        if len(logits) != 2:
            raise ValueError(f'SAN {where} expects exactly (fun, dir), got {len(logits)} items')
        fun, dir_ = (_as_tensor(t, where) for t in logits)
        if fun.shape != dir_.shape:
            raise ValueError(f'fun and dir logits must have the same shape, got {list(fun.shape)} and '
                             f'{list(dir_.shape)}')
        return fun, dir_


def _as_tensor(x, where: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise TypeError(f'{where} expects floating-point logit tensors, got {type(x).__name__}'
                        + (f' of dtype {x.dtype}' if isinstance(x, torch.Tensor) else ''))
    if x.ndim == 0:
        raise ValueError(f'{where} expects logits with a batch dimension [N] or [N, n_logits], got a scalar')
    return x


@register('hinge')
@dataclass(frozen=True)
class HingeLoss(GANLoss):
    """Hinge loss (Lim & Ye 2017; Miyato et al. 2018): D relu(1 - f(x)) + relu(1 + f(G(z))), G -f(G(z))."""

    def _d_real(self, f):
        return F.relu(1 - f)

    def _d_fake(self, f):
        return F.relu(1 + f)

    def _g(self, f):
        return -f


@register('saturating')
@dataclass(frozen=True)
class SaturatingLoss(GANLoss):
    """Minimax GAN (Goodfellow et al. 2014, Eq. 1): D -log sig(f(x)) - log(1 - sig(f(G(z)))), G log(1 - sig(f))."""

    def _d_real(self, f):
        return F.softplus(-f)

    def _d_fake(self, f):
        return F.softplus(f)

    def _g(self, f):
        return -F.softplus(f)

    def _dir_weight(self, f, real):
        return torch.sigmoid(f)  # -d/df log(1 - sig(f))


@register('nonsaturating')
@dataclass(frozen=True)
class NonSaturatingLoss(SaturatingLoss):
    """Non-saturating GAN (Goodfellow et al. 2014, Sec. 3): D as minimax, G -log sig(f(G(z)))."""

    def _g(self, f):
        return F.softplus(-f)

    def _dir_weight(self, f, real):
        return torch.sigmoid(-f)  # -d/df -log sig(f)


@register('lsgan')
@dataclass(frozen=True)
class LeastSquaresLoss(GANLoss):
    """Least-squares GAN (Mao et al. 2017, Eq. 2 with a=0, b=c=1): D (f(x)-1)^2/2 + f(G(z))^2/2, G (f-1)^2/2."""

    def _d_real(self, f):
        return 0.5 * (f - 1) ** 2

    def _d_fake(self, f):
        return 0.5 * f ** 2

    def _g(self, f):
        return 0.5 * (f - 1) ** 2

    def _dir_weight(self, f, real):
        return 1 - f  # -d/df (f-1)^2/2


@register('wasserstein')
@dataclass(frozen=True)
class WassersteinLoss(GANLoss):
    """Wasserstein critic loss (Arjovsky et al. 2017, Eq. 3): D -f(x) + f(G(z)), G -f(G(z)); add a Lipschitz
    constraint (spectral norm, GP) yourself."""

    def _d_real(self, f):
        return -f

    def _d_fake(self, f):
        return f

    def _g(self, f):
        return -f


@register('klwgan')
@dataclass(frozen=True)
class KLWGANLoss(GANLoss):
    """KL-WGAN (Song & Ermon 2020): fakes reweighted by w_j = exp(f_j/T) / mean_k exp(f_k/T) over the batch.

    D relu(1 - f(x)) + relu(1 + w f(G(z))), G -w f(G(z)); w is not detached, as in ermongroup/f-wgan. Weights are
    normalised over dim 0 (the batch), separately for each logit position, and computed with logsumexp. SAN
    conversion (our derivation): the direction term is the un-hinged KL-WGAN critic on omega,
    -dir(x) + w^- dir(G(z)).
    """

    T: float = 5.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if not (math.isfinite(self.T) and self.T > 0):
            raise ValueError(f'klwgan temperature T must be a finite number > 0, got {self.T}')

    def weights(self, f: torch.Tensor) -> torch.Tensor:
        """Importance weights exp(f/T) / mean exp(f/T) over dim 0; they average to 1 and never overflow."""
        v = f / self.T
        return torch.exp(v - (torch.logsumexp(v, dim=0, keepdim=True) - math.log(f.shape[0])))

    def _d_real(self, f):
        return F.relu(1 - f)

    def _d_fake(self, f):
        return F.relu(1 + self.weights(f) * f)

    def _g(self, f):
        return -self.weights(f) * f

    def _dir_weight(self, f, real):
        return 1.0 if real else self.weights(f)
