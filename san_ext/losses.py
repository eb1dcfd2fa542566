"""GAN losses and their SAN conversions, behind one registry: ``san_ext.losses.get(name, san=..., **kw)``.

Every loss maps logits to *per-element* loss tensors of the logits' shape; the caller reduces them (mean, or the
StyleGAN-XL sum over samples). D losses are to be minimised by D, the G loss by G.

With ``san=True`` the D losses take the ``(fun, dir)`` pair of ``D(x, flg_train=True)``: the base loss is applied to
``fun`` and ``dir_weight`` (lambda) times the direction term to ``dir``. The direction term is the Wasserstein critic
loss on omega, each sample weighted by the (detached) negative derivative -l_G'(f) of the generator's per-sample loss
at its logit: weight 1 for hinge and Wasserstein, which reproduces the official Hinge-SAN. ``docs/LOSSES.md`` has
every formula with its source and marks which conversions are our own derivation.

A *paired* loss (``rpgan``, relativistic pairing) scores real sample i against generated sample i: its D loss is
:meth:`GANLoss.d_loss` ``(real, fake)`` over logits of one shape (:meth:`GANLoss.d_pair` per element) and its G loss
needs D's logits on a fresh real batch, ``g_loss(fake, real=...)``; the unpaired losses accept ``real`` there and
ignore it, so a training loop can pass it for every loss.

A *loss spec* names a loss and its SAN switch in one word, as ``train.py --loss`` and the studies spell it:
``NAME`` (plain) or ``NAME-san`` (its SAN conversion); ``san`` alone is StyleSAN-XL's Hinge-SAN (:func:`parse_spec`).

R3GAN's zero-centred penalties are re-exported from :mod:`san_ext.penalties` as ``r1_penalty`` / ``r2_penalty``.

Imports only torch (the drop-in rule: it works inside someone else's training loop).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Callable, ClassVar, Optional, Union

import torch
import torch.nn.functional as F

from san_ext.penalties import r1_penalty, r2_penalty

__all__ = ['SAN_ALIASES', 'SAN_SUFFIX', 'GANLoss', 'get', 'list_losses', 'list_specs', 'parse_spec', 'r1_penalty',
           'r2_penalty', 'register', 'spec_name', 'unregister']

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
    paired: ClassVar[bool] = False  # D and G losses score real i against fake i (relativistic pairing)

    def __post_init__(self) -> None:
        if not math.isfinite(self.dir_weight) or self.dir_weight < 0:
            raise ValueError(f'dir_weight must be a finite number >= 0, got {self.dir_weight}')

    # -- public API -------------------------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return next(k for k, v in _LOSSES.items() if v is type(self))

    def d_real(self, logits: Logits) -> torch.Tensor:
        """Per-element D loss on real samples (``(fun, dir)`` when ``san``)."""
        self._refuse_paired('d_real')
        fun, dir_ = self._unpack(logits, 'd_real')
        loss = self._d_real(fun)
        if self.san:
            loss = loss - self.dir_weight * self._dir_weight(dir_.detach(), real=True) * dir_
        return loss

    def d_fake(self, logits: Logits) -> torch.Tensor:
        """Per-element D loss on generated samples (``(fun, dir)`` when ``san``)."""
        self._refuse_paired('d_fake')
        fun, dir_ = self._unpack(logits, 'd_fake')
        loss = self._d_fake(fun)
        if self.san:
            loss = loss + self.dir_weight * self._dir_weight(dir_.detach(), real=False) * dir_
        return loss

    def d_pair(self, real: Logits, fake: Logits) -> torch.Tensor:
        """Per-element D loss of real element i paired with fake element i; both of one shape.

        Paired losses: ``_d_pair(fun_r, fun_f)`` plus, with ``san``, the direction term
        -lambda rho(t) (dir_r - dir_f) with t = dir_r - dir_f detached. Unpaired losses: ``d_real + d_fake``.
        """
        fun_r, dir_r = self._unpack(real, 'd_pair')
        fun_f, dir_f = self._unpack(fake, 'd_pair')
        _same_shape(fun_r, fun_f, 'd_pair')
        if not self.paired:
            return self.d_real(real) + self.d_fake(fake)
        loss = self._d_pair(fun_r, fun_f)
        if self.san:
            diff = dir_r - dir_f
            loss = loss - self.dir_weight * self._pair_dir_weight(diff.detach()) * diff
        return loss

    def g(self, logits: torch.Tensor, real: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Per-element G loss on D's ordinary logits for generated samples (G's step uses ``flg_train=False``).

        ``real``: D's logits on a real batch of the same shape, required by paired losses (element i pairs with
        element i), ignored by the others.
        """
        if isinstance(logits, (tuple, list)) or isinstance(real, (tuple, list)):
            raise TypeError(f'{self.name} G loss takes the plain logits D(G(z)), not a (fun, dir) pair; '
                            'call D without flg_train in the generator step')
        fake = _as_tensor(logits, 'g')
        if not self.paired:
            return self._g(fake)
        if real is None:
            raise ValueError(f'{self.name} pairs each generated sample with a real one: pass D\'s logits on a fresh '
                             f'real batch, g_loss(fake, real=D(x_real))')
        real = _as_tensor(real, 'g')
        _same_shape(real, fake, 'g')
        return self._g_pair(fake, real)

    def direction_weights(self, logits: torch.Tensor, real: bool) -> torch.Tensor:
        """The detached per-element weights rho of the SAN direction term at plain ``logits``: -l_G'(f) (Sec. 4 of
        Takida et al. 2024), 1 for hinge and Wasserstein; batch on dim 0 (KL-WGAN normalises over it)."""
        self._refuse_paired('direction_weights', 'pair_direction_weights(real, fake)')
        f = _as_tensor(logits, 'direction_weights').detach()
        return torch.as_tensor(self._dir_weight(f, real=real), dtype=f.dtype, device=f.device).expand_as(f).clone()

    def pair_direction_weights(self, real: torch.Tensor, fake: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(rho_real, rho_fake)``, the detached direction weights of a real and a generated batch; a paired loss
        gives both elements of pair i the same weight rho(t_i), t = real - fake (shapes must then match)."""
        if not self.paired:
            return self.direction_weights(real, real=True), self.direction_weights(fake, real=False)
        f_r, f_f = _as_tensor(real, 'pair_direction_weights').detach(), _as_tensor(fake, 'pair_direction_weights')
        _same_shape(f_r, f_f, 'pair_direction_weights')
        rho = self._pair_dir_weight(f_r - f_f.detach())
        return rho, rho.clone()

    def d_loss(self, real: Logits, fake: Logits, dim: Optional[int] = None) -> torch.Tensor:
        """D loss: mean over real elements plus mean over fake elements (paired: mean of :meth:`d_pair`); ``dim``
        averages over that dim only."""
        if self.paired:
            return _mean(self.d_pair(real, fake), dim)
        return _mean(self.d_real(real), dim) + _mean(self.d_fake(fake), dim)

    def g_loss(self, fake: torch.Tensor, real: Optional[torch.Tensor] = None,
               dim: Optional[int] = None) -> torch.Tensor:
        """G loss: mean over elements (``dim``: over that dim only); ``real`` as in :meth:`g`."""
        return _mean(self.g(fake, real), dim)

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

    # paired losses (``paired = True``) implement these instead of _d_real, _d_fake, _g, _dir_weight
    def _d_pair(self, f_real: torch.Tensor, f_fake: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _g_pair(self, f_fake: torch.Tensor, f_real: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _pair_dir_weight(self, t: torch.Tensor) -> torch.Tensor:
        """The direction weight of a pair at the detached difference t = f_real - f_fake."""
        raise NotImplementedError

    # -- helpers ----------------------------------------------------------------------------------------------
    def _refuse_paired(self, where: str, use: str = 'd_pair(real, fake) or d_loss(real, fake)') -> None:
        if self.paired:
            raise TypeError(f'{self.name} is a paired loss: each real sample is scored against a generated one, so '
                            f'{where} has no meaning alone; use {use}')

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


def _mean(x: torch.Tensor, dim: Optional[int]) -> torch.Tensor:
    return x.mean() if dim is None else x.mean(dim)


def _same_shape(real: torch.Tensor, fake: torch.Tensor, where: str) -> None:
    if real.shape != fake.shape:
        raise ValueError(f'{where}: a paired loss scores real element i against fake element i, so both logit '
                         f'tensors need one shape; got real {list(real.shape)} and fake {list(fake.shape)} '
                         f'(draw as many real as generated samples)')


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


@register('rpgan')
@dataclass(frozen=True)
class RelativisticPairingLoss(GANLoss):
    """Relativistic pairing GAN (Jolicoeur-Martineau 2019; R3GAN, Huang et al. 2024, Eq. 2 and ``Trainer.py``):
    D softplus(-(f(x_r) - f(x_f))), G softplus(-(f(x_f) - f(x_r))) over pairs (x_r, x_f), G's on a fresh real batch.

    SAN conversion (our derivation, ``docs/LOSSES.md``): the relativistic loss on ``fun`` plus the direction term
    -lambda rho(t) (dir_r - dir_f), rho(t) = sigmoid(t) at t = dir_r - dir_f detached: the negative derivative of
    G's pair loss softplus(-u) at its argument u = -t, the reweighting rule of the other losses. In omega its gradient
    equals that of -lambda softplus(dir_r - dir_f).
    """

    paired = True

    def _d_pair(self, f_real, f_fake):
        return F.softplus(f_fake - f_real)

    def _g_pair(self, f_fake, f_real):
        return F.softplus(f_real - f_fake)

    def _pair_dir_weight(self, t):
        return torch.sigmoid(t)  # -d/du softplus(-u) at u = f_fake - f_real = -t
