"""Critics for DOT: one score per sample from any ``D(x)`` / ``D(x, c)``, class-label handling, and the adapter that
turns our projected discriminator (logits per head) into such a critic.

Imports only torch, the standard library and :mod:`san_ext.critic_score` (torch only), so DOT works inside someone
else's checkout.
"""

from __future__ import annotations

import inspect
import math
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import nn

from san_ext import critic_score

__all__ = ['Critic', 'ProjectedCritic', 'class_ids', 'critic_scores', 'num_classes_of', 'one_hot_labels']

Critic = Callable[..., torch.Tensor]  # D(x) or D(x, c) -> scores [N] or [N, 1]


def _declared_c_dim(fn: Optional[Callable]) -> Optional[int]:
    """``c_dim`` of a network (attribute, or ``cfg.c_dim`` as on ProjectedDiscriminator); None if not declared."""
    if fn is None:
        return None
    for owner in (fn, getattr(fn, 'cfg', None)):
        value = getattr(owner, 'c_dim', None)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


def _takes_class_arg(fn: Callable) -> bool:
    """Whether ``fn`` can be called as ``fn(x, c)``: its signature has a second positional parameter or *args, and
    it does not declare ``c_dim == 0``. Callables without an inspectable signature are given the benefit of doubt."""
    if _declared_c_dim(fn) == 0:
        return False
    target = fn.forward if isinstance(fn, nn.Module) else fn
    try:
        params = list(inspect.signature(target).parameters.values())
    except (TypeError, ValueError):
        return True
    if any(p.kind == p.VAR_POSITIONAL for p in params):
        return True
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return len(positional) >= 2


def num_classes_of(*fns: Optional[Callable], c: Optional[torch.Tensor] = None,
                   num_classes: Optional[int] = None) -> Optional[int]:
    """The number of classes: ``num_classes`` if given, else the width of one-hot ``c``, else the first ``c_dim``
    declared by ``fns`` (G, D); None when nothing says."""
    if num_classes is not None:
        return int(num_classes)
    if c is not None and c.is_floating_point() and c.ndim == 2:
        return int(c.shape[1])
    for fn in fns:
        c_dim = _declared_c_dim(fn)
        if c_dim:
            return c_dim
    return None


def class_ids(c: torch.Tensor, n: int) -> torch.Tensor:
    """Labels (int64 ids [N] or one-hot/soft float [N, C]) -> int64 ids [N]; checks the batch size and dtype."""
    if not isinstance(c, torch.Tensor):
        raise TypeError(f'class labels must be a tensor (int64 [N] or one-hot float [N, C]), got {type(c).__name__}')
    if c.is_floating_point():
        if c.ndim != 2:
            raise ValueError(f'float class labels must be one-hot [N, C], got shape {list(c.shape)}')
        ids = c.argmax(dim=1)
    elif c.dtype == torch.bool or c.ndim != 1:
        raise ValueError(f'integer class labels must be ids [N], got shape {list(c.shape)} ({c.dtype})')
    else:
        ids = c.long()
    if ids.shape[0] != n:
        raise ValueError(f'{ids.shape[0]} class labels for {n} samples')
    if ids.numel() and int(ids.min()) < 0:
        raise ValueError(f'class ids must be >= 0, got {int(ids.min())}')
    return ids


def one_hot_labels(c: torch.Tensor, n: int, num_classes: Optional[int]) -> torch.Tensor:
    """Labels -> one-hot float [N, C] (what our G and D take); float labels pass through unchanged."""
    if c.is_floating_point():
        class_ids(c, n)  # shape checks
        return c
    ids = class_ids(c, n)
    if num_classes is None:
        raise ValueError('integer class ids need the number of classes to become one-hot labels: pass one-hot '
                         'float labels [N, C], num_classes=C, or networks with a c_dim attribute')
    if ids.numel() and int(ids.max()) >= num_classes:
        raise ValueError(f'class ids must be in 0..{num_classes - 1}, got {int(ids.max())}')
    return F.one_hot(ids, num_classes).float()


def critic_scores(D: Critic, x: torch.Tensor, c: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``D(x)`` (or ``D(x, c)``) as one score per sample, shape [N]; accepts outputs [N] and [N, 1] only.

    Raises ValueError when the output has another shape, or when labels ``c`` go to a D that takes no class
    argument (a one-argument callable, or a network declaring ``c_dim == 0``).
    """
    if c is None:
        out = D(x)
    elif not _takes_class_arg(D):
        raise ValueError(f'class labels c (shape {list(c.shape)}) were given but the critic is unconditional (it '
                         'takes no class argument or has c_dim=0); drop c, or use a class-conditional D')
    else:
        out = D(x, c)
    n = x.shape[0]
    if not isinstance(out, torch.Tensor):
        raise ValueError(f'the critic must return a tensor of scores [N] or [N, 1], got {type(out).__name__} '
                         '(a SAN D in training mode returns (fun, dir): call it with flg_train=False)')
    if tuple(out.shape) == (n, 1):
        out = out[:, 0]
    if tuple(out.shape) != (n,):
        raise ValueError(f'the critic must return one score per sample, [{n}] or [{n}, 1], got shape '
                         f'{list(out.shape)}; wrap it (e.g. ProjectedCritic for logits per head) to reduce its output')
    return out


class ProjectedCritic(nn.Module):
    """One score per image from a projected discriminator that returns logits per head (``[N, L]``).

    The score is D's output as the training loss sees it (:func:`san_ext.critic_score.score`): inputs blurred with
    ``blur_sigma`` (the loss's input blur at the point of training, 0 once it has faded), each backbone's logits
    averaged per image, then summed over backbones (``reduction='sum'``, StyleGAN-XL) or averaged (``'mean'``); the
    hinge G loss is minus this score. A D without ``forward_per_backbone`` is treated as one backbone: its output is
    averaged over all but dim 0. :func:`san_ext.dot.loading.load_critic` builds one from a training state.
    """

    def __init__(self, D: nn.Module, reduction: str = 'sum', blur_sigma: float = 0.0) -> None:
        super().__init__()
        if reduction not in critic_score.REDUCTIONS:
            raise ValueError(f"reduction must be 'sum' or 'mean', got {reduction!r}")
        if not (math.isfinite(blur_sigma) and blur_sigma >= 0):
            raise ValueError(f'blur_sigma must be a finite number >= 0, got {blur_sigma}')
        self.D, self.reduction, self.blur_sigma = D, reduction, float(blur_sigma)
        c_dim = _declared_c_dim(D)
        self.c_dim = 0 if c_dim is None else c_dim

    @classmethod
    def at(cls, D: nn.Module, settings: critic_score.ScoreSettings, cur_nimg: int) -> ProjectedCritic:
        """D's score as the loss with ``settings`` saw it after ``cur_nimg`` training images."""
        return cls(D, reduction=settings.reduction, blur_sigma=critic_score.blur_sigma(settings, cur_nimg))

    def blur(self, img: torch.Tensor) -> torch.Tensor:
        """The training loss's input blur at ``blur_sigma`` (:func:`san_ext.critic_score.blur`)."""
        return critic_score.blur(img, self.blur_sigma)

    def forward(self, img: torch.Tensor, c: Optional[torch.Tensor] = None) -> torch.Tensor:
        """img [N, C, H, W] in [-1, 1], c as D takes it -> scores [N]."""
        return critic_score.score(self.D, img, c, sigma=self.blur_sigma, reduction=self.reduction)
