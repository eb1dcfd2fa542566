"""Built-in datasets that need no download: scikit-learn's 8x8 handwritten digits, for quick starts and tests."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import PIL.Image

from .items import Source, SourceItem
from .storage import DatasetError

__all__ = ['SPLIT_SEED', 'TEST_FRACTION', 'digits_source', 'load_digits_images', 'split_indices']

SPLIT_SEED = 0  # the digits classifier's train/test split (san_ext.studies.digits_classifier); fixed forever
TEST_FRACTION = 0.25


def load_digits_images(resolution: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """sklearn's 1,797 digits as uint8 RGB ``[N, R, R, 3]`` (white strokes on black) and int64 labels ``[N]``.

    The 8x8 images (values 0..16) are scaled to 0..255, upsampled with PIL's bilinear filter to ``resolution``
    and repeated over three channels, so RGB backbones take them as they are.
    """
    if resolution < 8 or resolution & (resolution - 1):
        raise DatasetError(f'digits resolution must be a power of two >= 8 (got {resolution})')
    from sklearn.datasets import load_digits  # ships its data inside the package: works offline
    digits = load_digits()
    small = np.rint(digits.images * (255 / 16)).clip(0, 255).astype(np.uint8)  # [N, 8, 8]
    grey = np.stack([np.asarray(PIL.Image.fromarray(im).resize((resolution, resolution), PIL.Image.BILINEAR))
                     for im in small])  # [N, R, R]
    return np.repeat(grey[..., None], 3, axis=3), digits.target.astype(np.int64)


def split_indices(labels: np.ndarray, seed: int = SPLIT_SEED) -> tuple[np.ndarray, np.ndarray]:
    """Stratified split (train, test) of indices: per class 0..9 a ``default_rng(seed)`` permutation, the first
    ``round(n_c * TEST_FRACTION)`` to test. Sorted index arrays (1,347 train and 450 test images of the digits)."""
    rng = np.random.default_rng(seed)
    train, test = [], []
    for c in range(int(labels.max()) + 1):
        idx = rng.permutation(np.flatnonzero(labels == c))
        n_test = int(round(len(idx) * TEST_FRACTION))
        test.append(idx[:n_test])
        train.append(idx[n_test:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def digits_source(resolution: int = 16) -> Source:
    """The digits as a conversion source (already at ``resolution``, so no further resizing happens)."""
    images, labels = load_digits_images(resolution)

    def items() -> Iterator[SourceItem]:
        for i in range(len(images)):
            yield SourceItem(f'builtin:digits[{i}]', images[i], int(labels[i]))

    return Source('builtin', 'builtin:digits', len(images), items, True, tuple(str(d) for d in range(10)))
