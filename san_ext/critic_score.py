"""D's score as the projected-GAN loss sees it: input blur, its fade schedule, per-backbone reduction.

One definition for the training loss (``san_ext.training.loss``) and for DOT's critic (``san_ext.dot``).
StyleGAN-XL (Sauer et al. 2022, Sec. 4 "Training"; upstream ``training/loss.py`` ``ProjectedGANLoss``):

- D's inputs, real and fake, are blurred by a Gaussian whose sigma fades linearly from ``blur_init_sigma`` to 0 over
  the first ``blur_fade_kimg`` kimg: sigma(n) = sigma_0 * max(0, 1 - n / (1000 * fade_kimg));
- D returns logits per backbone; a per-logit function (a loss, or the identity for the score) is averaged over each
  backbone's logits, giving one value per (image, backbone) pair;
- the pairs are summed (``reduction='sum'``, upstream) or averaged (``'mean'``): over backbones for one image's
  score, over images and backbones for a phase's loss.

Imports only torch and the standard library (the drop-in rule: no ``torch_utils``, which a host checkout may
shadow): the blur is a separable depthwise
convolution with zero borders, which is what ``torch_utils.ops.upfirdn2d.filter2d`` computes for these taps.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Callable, Optional, Union

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ['REDUCTIONS', 'ScoreSettings', 'backbone_logits', 'blur', 'blur_sigma', 'gaussian_taps', 'image_scores',
           'per_backbone', 'reduce', 'score']

REDUCTIONS = ('sum', 'mean')
Logits = Union[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]  # [B, N_b], or (fun, dir) from flg_train=True


@dataclass(frozen=True)
class ScoreSettings:
    """What rebuilds D's score outside training: the input blur's schedule and the per-backbone reduction.

    Training writes these into the training state's sidecar (``critic``), so DOT needs no training code. The
    defaults are StyleGAN-XL's; training passes its own (``ScoreSettings.from_config(loss_config)``).
    """

    blur_init_sigma: float = 2.0        # sigma_0 of the Gaussian blur on D's inputs ...
    blur_fade_kimg: float = 300.0       # ... fading linearly to 0 over this many kimg (<= 0: no blur)
    reduction: str = 'sum'              # per (image, backbone) means: 'sum' (StyleGAN-XL) or 'mean'

    def __post_init__(self) -> None:
        if self.reduction not in REDUCTIONS:
            raise ValueError(f'reduction must be one of {REDUCTIONS}, got {self.reduction!r}')
        if not (math.isfinite(self.blur_init_sigma) and self.blur_init_sigma >= 0):
            raise ValueError(f'blur_init_sigma must be a finite number >= 0, got {self.blur_init_sigma}')
        if not math.isfinite(self.blur_fade_kimg):
            raise ValueError(f'blur_fade_kimg must be a finite number, got {self.blur_fade_kimg}')

    @classmethod
    def from_config(cls, cfg: Any) -> ScoreSettings:
        """The settings of any config with ``blur_init_sigma``, ``blur_fade_kimg`` and ``reduction`` (LossConfig)."""
        return cls(**{f.name: getattr(cfg, f.name) for f in dataclasses.fields(cls)})

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> ScoreSettings:
        """Inverse of :meth:`to_dict`; missing keys take the defaults, unknown keys fail naming them."""
        unknown = sorted(set(values) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ValueError(f'{cls.__name__} has no field(s) {", ".join(unknown)}')
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def blur_sigma(settings: Any, cur_nimg: int) -> float:
    """sigma(n) = blur_init_sigma * max(0, 1 - n / (1000 * blur_fade_kimg)): the blur D's inputs get after
    ``cur_nimg`` training images. ``settings``: :class:`ScoreSettings` or any config with those two fields."""
    if settings.blur_fade_kimg <= 0:
        return 0.0
    return float(settings.blur_init_sigma) * max(0.0, 1.0 - cur_nimg / (settings.blur_fade_kimg * 1e3))


def gaussian_taps(sigma: float) -> Optional[torch.Tensor]:
    """The normalised 1-D Gaussian exp(-t^2 / (2 sigma^2)) on ``2 * round(3 sigma) + 1`` taps (float32), or None
    when that is a single tap (the blur is then the identity)."""
    radius = math.floor(3 * sigma + 0.5) if sigma > 0 else 0
    if radius < 1:
        return None
    t = torch.arange(-radius, radius + 1, dtype=torch.float64)
    taps = torch.exp(-0.5 * (t / sigma) ** 2)
    return (taps / taps.sum()).float()


def blur(img: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of images [B, C, H, W] with zero borders; ``img`` itself when sigma gives one tap."""
    taps = gaussian_taps(sigma)
    if taps is None:
        return img
    ch, r = img.shape[1], taps.numel() // 2
    k = taps.to(device=img.device, dtype=img.dtype)
    img = F.conv2d(img, k.view(1, 1, 1, -1).expand(ch, 1, 1, -1), padding=(0, r), groups=ch)
    return F.conv2d(img, k.view(1, 1, -1, 1).expand(ch, 1, -1, 1), padding=(r, 0), groups=ch)


def backbone_logits(D: nn.Module, img: torch.Tensor, c: Optional[torch.Tensor] = None, *, sigma: float = 0.0,
                    flg_train: bool = False, generator: Optional[torch.Generator] = None) -> list[Logits]:
    """D's logits of the blurred images, one entry per backbone: [B, N_b], or ``(fun, dir)`` with ``flg_train``.

    A D without ``forward_per_backbone`` (any ``D(x)`` / ``D(x, c)``) counts as one backbone; ``flg_train`` and
    ``generator`` reach ``forward_per_backbone`` only when set, so a D that takes just ``(img, c)`` works as a critic.
    """
    img = blur(img, sigma)  # [B, C, H, W]
    if hasattr(D, 'forward_per_backbone'):
        kw: dict[str, Any] = {'flg_train': True} if flg_train else {}
        if generator is not None:
            kw['generator'] = generator
        return list(D.forward_per_backbone(img, c, **kw).values())
    if flg_train or generator is not None:
        raise ValueError('flg_train and generator need a projected D with forward_per_backbone')
    return [D(img) if c is None else D(img, c)]


def per_backbone(outs: Sequence[Logits], fn: Optional[Callable[[Logits], torch.Tensor]] = None) -> torch.Tensor:
    """``fn`` (default: identity) applied to each backbone's logits and averaged over them: [B, n_backbones]."""
    values = [o if fn is None else fn(o) for o in outs]
    return torch.stack([v.reshape(v.shape[0], -1).mean(dim=1) for v in values], dim=1)


def reduce(per_pair: torch.Tensor, reduction: str) -> torch.Tensor:
    """A phase's loss from its [B, n_backbones] values: sum (StyleGAN-XL) or mean over images and backbones."""
    return per_pair.sum() if reduction == 'sum' else per_pair.mean()


def image_scores(per_pair: torch.Tensor, reduction: str) -> torch.Tensor:
    """One value per image from [B, n_backbones]: sum (StyleGAN-XL) or mean over backbones -> [B]."""
    return per_pair.sum(dim=1) if reduction == 'sum' else per_pair.mean(dim=1)


def score(D: nn.Module, img: torch.Tensor, c: Optional[torch.Tensor] = None, *, sigma: float = 0.0,
          reduction: str = 'sum') -> torch.Tensor:
    """D's score per image [B] as the loss sees it: blurred input, per-backbone mean logit, reduced over backbones.

    With the hinge loss, G's loss on these images is minus the sum (``'sum'``) or mean (``'mean'``) of the scores.
    """
    return image_scores(per_backbone(backbone_logits(D, img, c, sigma=sigma)), reduction)
