"""``stacked_modes``: Stacked MNIST's mode count and KL, on stacked digits (``builtin:stacked-digits``).

The protocol of Metz et al. 2017 (unrolled GANs, Sec. 3.3.1), Srivastava et al. 2017 (VEEGAN, Table 2) and Lin et
al. 2018 (PacGAN, Tables 2 and 3): a pretrained digit classifier names the digit in each of the R, G and B channels
of N generated images (N = 26,000 as PacGAN's code, ``num_test_sample``), which gives each image one of 1000 modes
``100 r + 10 g + b``. Scores:

- ``stacked_modes``: modes covered, i.e. with at least one sample (max 1000);
- ``stacked_modes_kl``: KL(p_model || uniform) = sum_m p_m log(1000 p_m) in nats over the empirical mode histogram
  (VEEGAN's and PacGAN's "KL"; 0 for a uniform histogram, log 1000 = 6.91 for a single mode);
- ``stacked_modes_confident``: the share of images whose three channels are each classified with top softmax
  probability >= ``CONFIDENCE`` (0.9), so a reader sees when samples are not digits. On real stacked digits it is
  0.96 at 8x8; on uniform noise 0.15 (the classifier is overconfident off its data, so this flags, it does not prove).

The classifier is the project's ``digits_cnn`` (:mod:`san_ext.metrics.digits_net`, 98.9 % held out, trained on 8x8
sklearn digits). Images of side R > 8 (a multiple of 8) are averaged over R/8 x R/8 blocks down to 8x8 first: of
the downsamplings tried it reads the 16x16 set best (98.9 % of channels right, against 98.2 % after antialiased
bicubic and 96.5 % after antialiased bilinear). Every sample counts in the histogram, confident or not, as in PacGAN.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from san_ext import dist
from san_ext.data.stacked import NUM_MODES
from san_ext.files import file_sha256

from .digits_net import DEFAULT_WEIGHTS, RESOLUTION, load_classifier
from .features import check_images, register_extractor

__all__ = ['CONFIDENCE', 'NUM_GEN', 'NUM_MODES', 'STACKED_EXTRACTOR', 'ModeHistogram', 'StackedDigitsClassifier',
           'make_histogram', 'mode_kl', 'score_modes', 'stacked_digits_classifier']

PathLike = Union[str, os.PathLike]
NUM_GEN = 26_000  # PacGAN's Stacked MNIST evaluation count
CONFIDENCE = 0.9
STACKED_EXTRACTOR = 'stacked_digits'


class StackedDigitsClassifier(nn.Module):
    """uint8 images [N, 3, H, W] -> per-channel digit logits [N, 30] (R's 10, then G's, then B's), each channel read
    as a grey digit by ``digits_cnn`` after block-averaging to 8x8. A :class:`FeatureExtractor` whose ``mode_groups``
    (3) tells :class:`ModeHistogram` how to split its outputs."""

    mode_groups = 3

    def __init__(self, weights: Optional[PathLike] = None) -> None:
        super().__init__()
        self.net = load_classifier(weights)
        path = Path(weights) if weights is not None else DEFAULT_WEIGHTS
        path = path / DEFAULT_WEIGHTS.name if path.is_dir() else path  # load_classifier's rule; it checked the file
        self.name, self.dim, self.resize = STACKED_EXTRACTOR, 3 * 10, f'area-{RESOLUTION}'
        self.version = f'digits_cnn/{file_sha256(path)[:8]}'  # part of every result record

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        check_images(images)
        n, _, h, w = images.shape
        if h != w or h % RESOLUTION:
            raise ValueError(f'{STACKED_EXTRACTOR} reads square images whose side is a multiple of 8, got {h}x{w}')
        x = images.float().reshape(n * 3, 1, h, w) / 127.5 - 1.0  # each channel a grey digit in [-1, 1]
        if h != RESOLUTION:
            x = F.avg_pool2d(x, h // RESOLUTION)
        return self.net(x).reshape(n, 30)


@register_extractor(STACKED_EXTRACTOR)
def stacked_digits_classifier(weights: Optional[PathLike] = None) -> StackedDigitsClassifier:
    """The per-channel digit classifier of ``stacked_modes`` (in eval mode)."""
    return StackedDigitsClassifier(weights).eval()


def mode_kl(counts: Union[np.ndarray, torch.Tensor]) -> float:
    """KL(p || uniform) in nats of a histogram of counts over K modes: sum_m p_m log(K p_m), empty modes add 0."""
    c = torch.as_tensor(counts, dtype=torch.float64)
    p = c / c.sum()
    return float(torch.special.xlogy(p, p * len(c)).sum())


class ModeHistogram:
    """Streams class logits [N, groups * classes] into a histogram over the classes ** groups modes (mode id: the
    groups' argmax classes as digits base ``classes``, first group most significant, so 100 r + 10 g + b for
    stacked digits) and a count of images whose every group has top softmax probability >= ``threshold``. Sums, so
    it merges over ranks and ignores batch order (the item indices are not needed)."""

    def __init__(self, classes: int = 10, groups: int = 3, threshold: float = CONFIDENCE) -> None:
        self.classes, self.groups, self.threshold = classes, groups, threshold
        self.counts = torch.zeros(classes ** groups, dtype=torch.float64)
        self.confident = torch.zeros(1, dtype=torch.float64)

    def update(self, logits: torch.Tensor, indices: Optional[torch.Tensor] = None) -> ModeHistogram:
        """Add the images whose per-group class logits are ``logits`` [N, groups * classes]."""
        if logits.ndim != 2 or logits.shape[1] != self.groups * self.classes:
            raise ValueError(f'expected class logits [N, {self.groups} x {self.classes}], got {list(logits.shape)}')
        probs = logits.detach().cpu().double().reshape(len(logits), self.groups, self.classes).softmax(dim=2)
        conf, digit = probs.max(dim=2)  # [N, groups] each
        place = self.classes ** torch.arange(self.groups - 1, -1, -1)
        modes = (digit * place).sum(dim=1)
        self.counts.index_add_(0, modes, torch.ones(len(modes), dtype=torch.float64))
        self.confident += float((conf.min(dim=1).values >= self.threshold).sum())
        return self

    def all_reduce(self) -> ModeHistogram:
        for t in (self.counts, self.confident):
            dist.all_reduce_sum(t)
        return self

    def scores(self) -> dict[str, float]:
        """Modes covered, KL to uniform, confident share and the number of images."""
        n = float(self.counts.sum())
        if n == 0:
            raise ValueError('stacked_modes saw no images')
        return dict(modes=int((self.counts > 0).sum()), kl=mode_kl(self.counts), confident=float(self.confident) / n,
                    num=int(n))

    def state_dict(self) -> dict[str, np.ndarray]:
        return {'counts': self.counts.numpy(), 'confident': self.confident.numpy()}


def make_histogram(spec: Any, ext: Any, n: int, is_ref: bool, opts: Any) -> ModeHistogram:
    """The metric pipeline's accumulator factory for kind ``'modes'`` (generated side only: no reference set). The
    extractor's ``mode_groups`` (3 for ``stacked_digits``) splits its ``dim`` outputs into groups of class logits; an
    extractor without it (``--extractor`` of another) counts its ``dim`` classes as the modes, as IS reads logits."""
    groups = int(getattr(ext, 'mode_groups', 1))
    if ext.dim % groups:
        raise ValueError(f'extractor {ext.name!r}: dim {ext.dim} does not split into {groups} groups of classes')
    return ModeHistogram(ext.dim // groups, groups)


def score_modes(spec: Any, gen: ModeHistogram, ref: None, opts: Any) -> dict[str, float]:
    """The pipeline's scores of kind ``'modes'``: ``NAME`` (modes covered), ``NAME_kl``, ``NAME_confident``."""
    s = gen.scores()
    return {spec.name: float(s['modes']), f'{spec.name}_kl': s['kl'], f'{spec.name}_confident': s['confident']}

