"""The order in which training reads the data: the heart of exact resume.

The stream is stateless: the global order is a fresh permutation per epoch drawn from (seed, epoch), and the batch
that starts at image ``cur_nimg`` is positions ``cur_nimg .. cur_nimg + batch - 1`` of that stream, rank r taking
its contiguous share. A resumed run therefore reads exactly the images it would have read, and N ranks read the same
images as one process with the same global batch.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

__all__ = ['InfiniteBatchSampler']


class InfiniteBatchSampler(torch.utils.data.Sampler):
    """This rank's index lists of consecutive global batches, from image ``start_nimg`` on, forever."""

    def __init__(self, size: int, batch: int, rank: int, world_size: int, seed: int, start_nimg: int = 0) -> None:
        if size < 1 or batch % world_size:
            raise ValueError(f'need a non-empty dataset and batch divisible by world size, got {size}, {batch}, '
                             f'{world_size}')
        self.size, self.batch, self.rank, self.world_size = size, batch, rank, world_size
        self.seed, self.start_nimg = seed, start_nimg
        self._perms: dict[int, np.ndarray] = {}

    def index(self, pos: int) -> int:
        """Dataset index at global stream position ``pos``."""
        epoch, offset = divmod(pos, self.size)
        if epoch not in self._perms:
            if len(self._perms) > 1:
                self._perms.pop(min(self._perms))
            self._perms[epoch] = np.random.default_rng([self.seed, epoch]).permutation(self.size)
        return int(self._perms[epoch][offset])

    def __iter__(self) -> Iterator[list[int]]:
        per_rank = self.batch // self.world_size
        pos = self.start_nimg + self.rank * per_rank
        while True:
            yield [self.index(pos + j) for j in range(per_rank)]
            pos += self.batch
