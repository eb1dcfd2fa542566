"""Stacked digits: Stacked MNIST's 1000-mode benchmark built from scikit-learn's 8x8 digits, offline.

Stacked MNIST (Metz et al. 2017, unrolled GANs, Sec. 3.3.1; Srivastava et al. 2017, VEEGAN, Sec. 5; Lin et al.
2018, PacGAN, Sec. 5) puts three MNIST digits into the R, G and B channels of one image: 10^3 = 1000 modes, each the
triple of digit classes, which a pretrained digit classifier reads back channel by channel. MNIST cannot be had
offline, so this module builds the same protocol from the digits that ship with scikit-learn.

How the images are drawn (fixed; ``STACKED_IMAGES`` images, PacGAN's VEEGAN-setup size, 128,000):

- The pool is the digits classifier's **train split only** (:func:`san_ext.data.builtin.split_indices`: 1,347 of
  the 1,797 digits). Its 450 held-out digits never enter a stacked image: the GANs never see the digits on which
  the classifier's 98.9 % accuracy was measured, so that figure stays an honest estimate of how it reads new ones.
- Image ``i`` takes row ``i`` of ``default_rng(STACKED_SEED).integers(0, 1347, (STACKED_IMAGES, 3))``: three
  independent uniform draws, with replacement, from the pool, one per channel (R, G, B). Mode frequencies therefore
  follow the product of the pool's class shares (9.7 % to 10.2 %), not exactly 1/1000: every mode occurs, 91 to
  168 times, and the labels' histogram is 0.0043 nats from uniform.
- Each channel is the digit as :func:`san_ext.data.load_digits_images` gives it (0..16 scaled to 0..255, PIL
  bilinear up to the resolution), so a stacked image's channel equals the grey digit exactly.
- The label is the mode id ``100 * r + 10 * g + b`` (0..999) of the true classes, so conditional training works too;
  class names are ``'000'`` .. ``'999'``.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import lru_cache

import numpy as np

from .builtin import load_digits_images, split_indices
from .items import Source, SourceItem

__all__ = ['NUM_MODES', 'STACKED_IMAGES', 'STACKED_SEED', 'decode_modes', 'encode_modes', 'load_stacked_digits',
           'stacked_digit_triples', 'stacked_digits_source']

NUM_MODES = 1000
STACKED_IMAGES = 128_000  # as PacGAN's Stacked MNIST runs in VEEGAN's setup (num_training_sample 128000)
STACKED_SEED = 0


def encode_modes(digits: np.ndarray) -> np.ndarray:
    """Digit triples [..., 3] (R, G, B classes 0..9) -> mode ids 100 r + 10 g + b [...]."""
    digits = np.asarray(digits)
    return digits[..., 0] * 100 + digits[..., 1] * 10 + digits[..., 2]


def decode_modes(modes: np.ndarray) -> np.ndarray:
    """Mode ids [...] (0..999) -> digit triples [..., 3] (R, G, B); the inverse of :func:`encode_modes`."""
    modes = np.asarray(modes)
    return np.stack([modes // 100, modes // 10 % 10, modes % 10], axis=-1)


@lru_cache(maxsize=2)
def _pool(resolution: int) -> tuple[np.ndarray, np.ndarray]:
    """The train split's grey digits uint8 [1347, R, R] and their classes [1347] (cached: the digits load once)."""
    images, labels = load_digits_images(resolution)
    train, _ = split_indices(labels)
    grey = np.ascontiguousarray(images[train, ..., 0])
    grey.setflags(write=False)
    return grey, labels[train]


def stacked_digit_triples(num: int = STACKED_IMAGES) -> np.ndarray:
    """Indices into the train split [num, 3] (R, G, B) of the first ``num`` stacked images (a prefix of the one
    fixed draw, so image ``i`` is the same whatever ``num``)."""
    if not 0 < num <= STACKED_IMAGES:
        raise ValueError(f'the stacked-digits set has {STACKED_IMAGES} images; asked for {num}')
    pool = len(_pool(8)[1])
    return np.random.default_rng(STACKED_SEED).integers(0, pool, size=(STACKED_IMAGES, 3))[:num]


def load_stacked_digits(resolution: int = 8, num: int = STACKED_IMAGES) -> tuple[np.ndarray, np.ndarray]:
    """The first ``num`` stacked images as uint8 RGB [num, R, R, 3] (channel k = digit k of the triple) and their
    mode ids int64 [num] (0..999)."""
    grey, classes = _pool(resolution)
    triples = stacked_digit_triples(num)
    images = np.stack([grey[triples[:, k]] for k in range(3)], axis=-1)  # [num, R, R, 3]
    return images, encode_modes(classes[triples]).astype(np.int64)


def stacked_digits_source(resolution: int = 16) -> Source:
    """The stacked digits as a conversion source for ``dataset_tool.py --source builtin:stacked-digits`` (already at
    ``resolution``; images composed one at a time, so the 128,000 never sit in memory at once)."""
    grey, classes = _pool(resolution)
    triples = stacked_digit_triples()
    modes = encode_modes(classes[triples])

    def items() -> Iterator[SourceItem]:
        for i, (r, g, b) in enumerate(triples):
            yield SourceItem(f'builtin:stacked-digits[{i}]', np.stack([grey[r], grey[g], grey[b]], axis=-1),
                             int(modes[i]))

    return Source('builtin', 'builtin:stacked-digits', len(triples), items, True,
                  tuple(f'{m:03d}' for m in range(NUM_MODES)))
