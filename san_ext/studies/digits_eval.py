"""Scoring for the digits study: features of the project's digits classifier, FID, improved precision/recall,
classifier-based class statistics, latent DOT on a trained (G, D), and PNG sample grids.

Conventions (every score of the study uses them):

- Features: ``digits_cnn`` (64-d penultimate layer of :mod:`san_ext.studies.digits_classifier`), fed uint8 images,
  generated images quantised as ``rint((x + 1) * 127.5)`` like StyleGAN's metrics.
- Reference: the classifier's train split (1,347 images), the images the GANs train on; generated samples: as many
  (``n_gen`` = 1,347 by default), so FID's small-sample bias is the same for every model.
- FID: Fréchet distance of the two feature Gaussians (``san_ext.metrics.frechet_distance``, unbiased covariances).
- Precision/recall: Kynkäänniemi et al. 2019 with k = 3 (their default), ``san_ext.metrics.precision_recall``.
- Floor: the held-out test split (450 real images, seen by neither the classifier nor the GANs) scored the same way
  against the train split; at n = 450 its FID carries more small-sample bias than the models' n = 1,347.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch
import torch.nn.functional as F

from san_ext.images import to_uint8_rgb
from san_ext.metrics import StreamingStats, frechet_distance, precision_recall

from .digits_classifier import DigitsCNN, digits_cnn, digits_data, load_classifier, split_indices

__all__ = ['Reference', 'apply_dot', 'class_stats', 'eval_inputs', 'real_floor', 'reference', 'save_grid',
           'score_images', 'to_uint8']

PR_K = 3


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """Generated images in [-1, 1] [N, 1, H, W] -> uint8 RGB [N, 3, H, W] (grey repeated), StyleGAN's rounding
    (:func:`san_ext.images.to_uint8_rgb`)."""
    return to_uint8_rgb(x).contiguous()


@dataclass(frozen=True)
class Reference:
    """The real train split as the study sees it: float images, labels, features and their Gaussian."""

    images: torch.Tensor  # [N, 1, 8, 8] float in [-1, 1], the GANs' training data
    labels: torch.Tensor  # [N] int64
    features: torch.Tensor  # [N, 64] float32
    mu: np.ndarray
    sigma: np.ndarray
    test_uint8: torch.Tensor  # [M, 3, 8, 8] the held-out split, for the floor
    test_labels: torch.Tensor  # [M]


@lru_cache(maxsize=2)
def _classifier(weights: Optional[str]) -> tuple[Callable[[torch.Tensor], torch.Tensor], DigitsCNN]:
    return digits_cnn(weights), load_classifier(weights)


def _gaussian(features: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    stats = StreamingStats(features.shape[1]).update(features)
    return stats.mean(), stats.cov()


@lru_cache(maxsize=2)
def reference(weights: Optional[str] = None) -> Reference:
    """The train split's images, labels, features and feature Gaussian (cached per process)."""
    images, labels = digits_data()
    train_idx, test_idx = split_indices(labels)
    u8 = torch.from_numpy(images)[:, None].expand(-1, 3, -1, -1)  # [N, 3, 8, 8]
    extractor, _ = _classifier(weights)
    feats = extractor(u8[train_idx].contiguous())
    mu, sigma = _gaussian(feats)
    x = u8[train_idx, :1].float() / 127.5 - 1.0
    return Reference(x, torch.from_numpy(labels[train_idx]), feats, mu, sigma, u8[test_idx].contiguous(),
                     torch.from_numpy(labels[test_idx]))


def score_images(images_u8: torch.Tensor, ref: Reference, labels: Optional[torch.Tensor] = None,
                 weights: Optional[str] = None) -> dict:
    """FID, precision and recall (k = 3) of uint8 images [N, 3, 8, 8] against ``ref``, plus the class statistics
    of :func:`class_stats` (``labels``: the conditioning classes of conditional samples)."""
    extractor, net = _classifier(weights)
    feats = extractor(images_u8)
    mu, sigma = _gaussian(feats)
    precision, recall = precision_recall(ref.features, feats, k=PR_K)
    with torch.no_grad():
        pred = net.head(feats).argmax(dim=1)
    return dict(fid=frechet_distance(mu, sigma, ref.mu, ref.sigma), precision=precision, recall=recall,
                **class_stats(pred, ref.labels, labels))


def class_stats(pred: torch.Tensor, ref_labels: torch.Tensor, labels: Optional[torch.Tensor] = None) -> dict:
    """Classifier-read class statistics of samples: ``class_kl`` = KL(predicted class histogram || real one) in nats
    (0 when the classes come in the real proportions; large when a class is missing: mode dropping), and with the
    conditioning ``labels`` ``class_match`` = share of samples classified as their own class."""
    p = torch.bincount(pred, minlength=10).double() / len(pred)
    q = torch.bincount(ref_labels, minlength=10).double() / len(ref_labels)
    kl = float(torch.where(p > 0, p * (p / q).log(), torch.zeros_like(p)).sum())
    out = dict(class_kl=kl, class_hist=p.tolist())
    if labels is not None:
        out['class_match'] = float((pred == labels).double().mean())
    return out


def real_floor(ref: Reference, weights: Optional[str] = None) -> dict:
    """The held-out real split scored like a model (the best a model can expect at n = 450)."""
    return dict(score_images(ref.test_uint8, ref, ref.test_labels, weights), n=len(ref.test_uint8))


def eval_inputs(seed: int, n: int, z_dim: int, ref: Reference,
                conditional: bool) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    """Fixed evaluation latents z [n, z_dim] and, when conditional, one-hot classes [n, 10] in the train split's
    class proportions (a seeded permutation of its labels, repeated if ``n`` exceeds them)."""
    gen = torch.Generator().manual_seed(10_000 + seed)
    z = torch.randn(n, z_dim, generator=gen)
    if not conditional:
        return z, None
    reps = -(-n // len(ref.labels))
    ids = ref.labels.repeat(reps)[torch.randperm(reps * len(ref.labels), generator=gen)[:n]]
    return z, F.one_hot(ids, 10).float()


def apply_dot(G: torch.nn.Module, D: torch.nn.Module, z: torch.Tensor, c: Optional[torch.Tensor], *, steps: int,
              lr: float, seed: int, pairs: int = 100) -> tuple[torch.Tensor, torch.Tensor]:
    """Latent DOT (``san_ext.dot.latent_space_dot``, SGD, normal prior) of ``z`` with k_eff estimated on the same
    latents (``pairs`` random pairs, per class when conditional); returns (moved z, k_eff)."""
    from san_ext.dot import estimate_k_eff, latent_space_dot  # engineer A's module; only this function needs it

    gen = torch.Generator().manual_seed(20_000 + seed)
    k_eff = estimate_k_eff(D, z, c, G=G, pairs=pairs, per_class=c is not None, generator=gen)
    z_dot = latent_space_dot(G, D, z, c, k_eff=k_eff, steps=steps, lr=lr, prior='normal', opt='sgd')
    return z_dot, k_eff


def save_grid(panels: Sequence[tuple[str, torch.Tensor]], path: Path, cols: int = 10, zoom: int = 4) -> None:
    """PNG of labelled panels side by side, each a ``cols``-wide grid of uint8 images [N, 3, 8, 8] (first channel),
    magnified ``zoom`` times with nearest-neighbour so single pixels stay visible."""
    import PIL.Image
    import PIL.ImageDraw

    tiles = []
    for title, images in panels:
        x = images[:, 0].numpy()  # [N, 8, 8]
        rows = -(-len(x) // cols)
        h, w = x.shape[1:]
        grid = np.zeros((rows * (h + 1) + 1, cols * (w + 1) + 1), np.uint8) + 64  # grey lines between digits
        for i, im in enumerate(x):
            r, c = divmod(i, cols)
            grid[1 + r * (h + 1):1 + r * (h + 1) + h, 1 + c * (w + 1):1 + c * (w + 1) + w] = im
        tile = PIL.Image.fromarray(grid).resize((grid.shape[1] * zoom, grid.shape[0] * zoom), PIL.Image.NEAREST)
        canvas = PIL.Image.new('L', (tile.width, tile.height + 14), 255)
        canvas.paste(tile, (0, 14))
        PIL.ImageDraw.Draw(canvas).text((2, 1), title, fill=0)
        tiles.append(canvas)
    out = PIL.Image.new('L', (sum(t.width for t in tiles) + 8 * (len(tiles) - 1), max(t.height for t in tiles)), 255)
    x0 = 0
    for t in tiles:
        out.paste(t, (x0, 0))
        x0 += t.width + 8
    path.parent.mkdir(parents=True, exist_ok=True)
    out.save(path)
