"""Data and scoring of the stacked digits study (``python -m san_ext.studies.stacked``): the training images, the
fixed evaluation latents, ``stacked_modes`` on a study G, the real-data row, and the PNG sample grids.

Conventions: generated images in [-1, 1] are quantised to uint8 as StyleGAN's metrics do
(:func:`san_ext.images.to_uint8_rgb`), then read by the metric's own classifier and histogram
(:class:`san_ext.metrics.stacked.ModeHistogram`), so the study's numbers are the numbers ``calc_metrics.py --metrics
stacked_modes`` would give for the same samples. The real-data row scores the first ``n`` stacked training images the
same way: it is what a model that reproduces the training set would get at that sample count.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from san_ext.data.stacked import load_stacked_digits
from san_ext.images import save_grid, to_uint8_rgb
from san_ext.metrics.stacked import ModeHistogram, StackedDigitsClassifier

__all__ = ['eval_latents', 'evaluate_modes', 'grid_panels', 'real_floor', 'save_samples', 'score_images',
           'training_images']

BATCH = 1000
SHOWN = 100  # samples in each PNG


@lru_cache(maxsize=1)
def training_images() -> torch.Tensor:
    """All 128,000 stacked digits at 8x8 as uint8 [N, 3, 8, 8] (cached per process; 25 MB)."""
    images, _ = load_stacked_digits(8)
    return torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()


@lru_cache(maxsize=1)
def _classifier() -> StackedDigitsClassifier:
    return StackedDigitsClassifier().eval()


def eval_latents(seed: int, n: int, z_dim: int) -> torch.Tensor:
    """The fixed evaluation latents z [n, z_dim] of seed ``seed`` (a stream apart from training's)."""
    return torch.randn(n, z_dim, generator=torch.Generator().manual_seed(10_000 + seed))


def score_images(images_u8: torch.Tensor) -> dict:
    """``stacked_modes`` of uint8 images [N, 3, H, W]: modes covered, KL to uniform, confident share, N."""
    hist = ModeHistogram()
    for i in range(0, len(images_u8), BATCH):
        hist.update(_classifier()(images_u8[i:i + BATCH]))
    return hist.scores()


@torch.no_grad()
def evaluate_modes(G: torch.nn.Module, z: torch.Tensor) -> tuple[dict, torch.Tensor]:
    """Scores of G's samples at latents ``z`` and the first 100 of them as uint8 [100, 3, 8, 8] (for the grid)."""
    images = torch.cat([to_uint8_rgb(G(z[i:i + BATCH])) for i in range(0, len(z), BATCH)])
    return score_images(images), images[:SHOWN].clone()


def real_floor(n: int) -> dict:
    """The first ``n`` real stacked images scored like a model (what the training set itself gets at ``n``)."""
    return dict(score_images(training_images()[:n]), n=n)


def save_samples(images_u8: torch.Tensor, path: Path, zoom: int = 4) -> None:
    """A 10x10 PNG of uint8 images [<=100, 3, 8, 8], magnified ``zoom`` times (nearest) with a 1-pixel black gap."""
    x = torch.nn.functional.pad(images_u8, (0, 1, 0, 1))  # gap right and below each image
    x = x.repeat_interleave(zoom, dim=2).repeat_interleave(zoom, dim=3)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_grid(np.ascontiguousarray(x.numpy()), path, (10, -(-len(x) // 10)))


def grid_panels(cells: Sequence[dict]) -> list[tuple[str, torch.Tensor]]:
    """(file name, samples) of each seed-0 cell: ``samples_<optimizer>_<variant>.png``."""
    return [(f'samples_{c["optimizer"]}_{c["variant"]}.png', c['samples']) for c in cells if c['seed'] == 0]
