"""Image streams for the metrics: generated samples and reference-set images as uint8 [N, 3, H, W] batches with
their global indices, sharded over ranks, and the loop that feeds them through a feature extractor.

Generated sample ``i`` depends only on ``(seed, i)``: latents are drawn in fixed blocks of ``LATENT_BLOCK`` samples
from a generator seeded by ``(seed, block)``, so neither the batch size nor the number of ranks changes which
images are scored. StyleGAN conventions: z ~ N(0, I), classes uniform over ``c_dim`` (one-hot), psi = 1, and
images in [-1, 1] become uint8 through :func:`san_ext.images.to_uint8_rgb` (grey repeated to 3 channels).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Callable, Optional, Union

import numpy as np
import torch
from tqdm import tqdm

from san_ext import dist
from san_ext.images import to_uint8_rgb

from .features import FeatureExtractor

__all__ = ['LATENT_BLOCK', 'accumulate', 'dataset_images', 'generated_images', 'latents']

LATENT_BLOCK = 1024
Batch = tuple[torch.Tensor, torch.Tensor]  # (indices int64 [N], images uint8 [N, 3, H, W])


def latents(seed: int, start: int, stop: int, z_dim: int, c_dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """z [stop - start, z_dim] and one-hot c [stop - start, c_dim] of samples ``start .. stop - 1`` (CPU)."""
    zs, cs = [], []
    for block in range(start // LATENT_BLOCK, (stop - 1) // LATENT_BLOCK + 1):
        gen = torch.Generator().manual_seed(dist.seed_for(seed, block))
        z = torch.randn(LATENT_BLOCK, z_dim, generator=gen)
        c = torch.zeros(LATENT_BLOCK, c_dim)
        if c_dim > 0:
            c[torch.arange(LATENT_BLOCK), torch.randint(c_dim, (LATENT_BLOCK,), generator=gen)] = 1
        base = block * LATENT_BLOCK
        lo, hi = max(start, base) - base, min(stop, base + LATENT_BLOCK) - base
        zs.append(z[lo:hi])
        cs.append(c[lo:hi])
    return torch.cat(zs), torch.cat(cs)


def generated_images(G: Callable, num: int, batch_size: int, seed: int, device: Union[str, torch.device],
                     z_dim: Optional[int] = None, c_dim: Optional[int] = None) -> Iterator[Batch]:
    """This rank's share of ``num`` samples of ``G(z, c)``: global batches ``b`` with ``b % world == rank``."""
    z_dim = int(G.z_dim) if z_dim is None else z_dim
    c_dim = int(getattr(G, 'c_dim', 0)) if c_dim is None else c_dim
    rank, world = dist.rank(), dist.world_size()
    for start in range(rank * batch_size, num, world * batch_size):
        stop = min(start + batch_size, num)
        z, c = latents(seed, start, stop, z_dim, c_dim)
        with torch.no_grad():
            images = G(z.to(device), c.to(device))
        yield torch.arange(start, stop), to_uint8_rgb(images)


def _collate(items: Sequence[tuple[np.ndarray, object]]) -> torch.Tensor:
    return torch.from_numpy(np.stack([np.asarray(image) for image, *_ in items]))


def dataset_images(dataset: Sequence, batch_size: int, num_workers: int = 0) -> Iterator[Batch]:
    """This rank's share of a map-style dataset of ``(uint8 [C, H, W], label)`` items: global batches of
    consecutive items, batch ``b`` on rank ``b % world`` (so every batch holds the same images for any world size)."""
    n, rank, world = len(dataset), dist.rank(), dist.world_size()
    chunks = [list(range(s, min(s + batch_size, n))) for s in range(rank * batch_size, n, world * batch_size)]
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=chunks, num_workers=num_workers, collate_fn=_collate,
                                         persistent_workers=False)
    for idx, images in zip(chunks, loader):
        if images.ndim != 4 or images.dtype != torch.uint8 or images.shape[1] not in (1, 3):
            raise ValueError(f'reference images must be uint8 [C, H, W] with C = 1 or 3, got {list(images.shape[1:])}'
                             f' {images.dtype}')
        yield torch.tensor(idx, dtype=torch.int64), images.expand(-1, 3, -1, -1) if images.shape[1] == 1 else images


def accumulate(batches: Iterable[Batch], extractor: FeatureExtractor, accumulator, total: int, desc: str,
               device: Union[str, torch.device], progress: bool = True) -> None:
    """Run ``extractor`` on every batch and feed ``accumulator.update(features, indices)``; a tqdm bar in images/s
    on rank 0 (its count is this rank's images times the number of ranks)."""
    world = dist.world_size()
    with tqdm(total=total, desc=desc, unit='img', dynamic_ncols=True, leave=False,
              disable=not progress or dist.rank() != 0) as bar:
        for indices, images in batches:
            with torch.no_grad():
                features = extractor(images.to(device))
            accumulator.update(features, indices)
            bar.update(min(len(indices) * world, total - bar.n))
