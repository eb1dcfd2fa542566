"""Feature accumulators fed batch by batch: the interface, a bounded uniform reservoir (KID) and a full feature bank
(precision/recall, density/coverage). ``StreamingStats`` (FID) and ``InceptionScoreStats`` (IS) live beside their
formulas in ``stats.py`` and ``inception_score.py``.

Every accumulator sees each feature with its global item index (sample ``i`` of the generator, image ``i`` of the
reference set), reduces over ranks with ``all_reduce()`` and round-trips through numpy ``state_dict()`` for the
on-disk reference cache. Results depend on the indices, never on batch size or number of ranks.
"""

from __future__ import annotations

from typing import Protocol, Union

import numpy as np
import torch

from san_ext import dist

__all__ = ['Accumulator', 'FeatureBank', 'Reservoir', 'uniform_keys']


class Accumulator(Protocol):
    """What the metric pipeline feeds: features [N, dim] of the items with global indices [N]."""

    def update(self, x: torch.Tensor, indices: torch.Tensor) -> object: ...

    def all_reduce(self) -> object: ...

    def state_dict(self) -> dict[str, np.ndarray]: ...


_MASK64 = np.uint64(0xFFFFFFFFFFFFFFFF)


def uniform_keys(indices: Union[np.ndarray, torch.Tensor], seed: int) -> np.ndarray:
    """A float64 in [0, 1) per index, a fixed hash of ``(seed, index)`` (splitmix64): the same item gets the same
    key on every rank and in every batching, which makes the reservoir below independent of both."""
    idx = np.asarray(indices.cpu() if isinstance(indices, torch.Tensor) else indices, dtype=np.uint64)
    with np.errstate(over='ignore'):
        z = idx + np.uint64(seed & 0xFFFFFFFF) * np.uint64(0x9E3779B97F4A7C15) + np.uint64(0x632BE59BD9B4E019)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9) & _MASK64
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB) & _MASK64
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) / float(1 << 53)


class Reservoir:
    """A uniform random subset of at most ``capacity`` features of a stream, in bounded memory (for KID).

    Each item gets a random key (:func:`uniform_keys`) and the reservoir keeps the ``capacity`` smallest keys seen:
    a uniform sample without replacement of the whole stream (bottom-k sampling). Ranks merge by keeping the
    smallest keys of the union, so the result equals a single-process pass. A random subset of a uniform random
    subset is itself a uniform random subset, so KID subsets drawn from the reservoir have the same distribution as
    subsets drawn from all features.
    """

    def __init__(self, dim: int, capacity: int = 50_000, seed: int = 0) -> None:
        if capacity < 1:
            raise ValueError(f'capacity must be at least 1, got {capacity}')
        self.dim, self.capacity, self.seed = dim, capacity, seed
        self.seen = 0
        self._keys = np.empty(0, dtype=np.float64)  # [size]
        self._feats = torch.empty(0, dim, dtype=torch.float32)  # [size, dim] (grows to capacity)

    def __len__(self) -> int:
        return len(self._keys)

    @property
    def features(self) -> torch.Tensor:
        """The kept features [size, dim], float32 (sorted by key after :meth:`all_reduce`)."""
        return self._feats[:len(self._keys)]

    def update(self, x: torch.Tensor, indices: torch.Tensor) -> Reservoir:
        """Offer a batch of features [N, dim] with their global indices [N]."""
        if x.ndim != 2 or x.shape[1] != self.dim or len(indices) != len(x):
            raise ValueError(f'expected features [N, {self.dim}] and N indices, got {list(x.shape)}, {len(indices)}')
        keys, x = uniform_keys(indices, self.seed), x.detach().to('cpu', torch.float32)
        self.seen += len(keys)
        size = len(self._keys)
        if size + len(keys) <= self.capacity:
            self._append(keys, x)
            return self
        if size == self.capacity:  # full: only keys below the largest kept one can enter (few, late in a stream)
            cand = np.flatnonzero(keys < self._keys.max())
            if not len(cand):
                return self
            keys, x = keys[cand], x[torch.from_numpy(cand)]
        combined = np.concatenate([self._keys, keys])
        keep = np.argpartition(combined, self.capacity - 1)[:self.capacity]
        new_kept = keep[keep >= size] - size  # batch items that enter
        stays = np.zeros(size, dtype=bool)
        stays[keep[keep < size]] = True
        evicted = np.flatnonzero(~stays)
        n_free = self.capacity - size
        self._append(keys[new_kept[:n_free]], x[new_kept[:n_free]])
        slots = torch.from_numpy(evicted)
        rest = new_kept[n_free:]
        self._keys[evicted] = keys[rest]
        self._feats[slots] = x[torch.from_numpy(rest)]
        return self

    def _append(self, keys: np.ndarray, x: torch.Tensor) -> None:
        size = len(self._keys)
        if len(self._feats) < size + len(keys):  # grow geometrically up to capacity, not per batch
            grown = torch.empty(min(self.capacity, max(2 * len(self._feats), size + len(keys))), self.dim)
            grown[:size] = self._feats[:size]
            self._feats = grown
        self._feats[size:size + len(keys)] = x
        self._keys = np.concatenate([self._keys, keys])

    def all_reduce(self) -> Reservoir:
        """Keep the ``capacity`` smallest keys over all ranks, sorted by key, on every rank (collective)."""
        keys, feats = torch.from_numpy(self._keys), self.features
        if dist.active():
            seen = torch.tensor([self.seen], dtype=torch.int64)
            self.seen = int(dist.all_reduce_sum(seen).item())
            all_keys = dist.all_gather_rows(keys)
            threshold = all_keys.kthvalue(min(self.capacity, len(all_keys))).values if len(all_keys) else 0.0
            mine = keys <= threshold
            keys, feats = dist.all_gather_rows(keys[mine]), dist.all_gather_rows(feats[mine])
        order = torch.argsort(keys)
        self._keys, self._feats = keys[order].numpy(), feats[order].contiguous()
        return self

    def state_dict(self) -> dict[str, np.ndarray]:
        return {'keys': self._keys, 'features': self.features.numpy(), 'seen': np.array(self.seen),
                'capacity': np.array(self.capacity), 'seed': np.array(self.seed)}

    @classmethod
    def from_state_dict(cls, state: dict) -> Reservoir:
        feats = np.asarray(state['features'], dtype=np.float32)
        res = cls(feats.shape[1], capacity=int(state['capacity']), seed=int(state['seed']))
        res._keys, res._feats = np.asarray(state['keys'], dtype=np.float64), torch.from_numpy(feats)
        res.seen = int(state['seen'])
        return res


class FeatureBank:
    """All features of a stream, kept in ``dtype`` (float16 by default, as StyleGAN's precision/recall does, which
    halves the memory of 200k x 4096 VGG features to 1.6 GB). After :meth:`all_reduce` every rank holds all
    features sorted by global index."""

    def __init__(self, dim: int, dtype: torch.dtype = torch.float16) -> None:
        self.dim, self.dtype = dim, dtype
        self._chunks: list[torch.Tensor] = []
        self._indices: list[torch.Tensor] = []

    def __len__(self) -> int:
        return sum(len(c) for c in self._chunks)

    def update(self, x: torch.Tensor, indices: torch.Tensor) -> FeatureBank:
        if x.ndim != 2 or x.shape[1] != self.dim or len(indices) != len(x):
            raise ValueError(f'expected features [N, {self.dim}] and N indices, got {list(x.shape)}, {len(indices)}')
        self._chunks.append(x.detach().to('cpu', self.dtype))
        self._indices.append(torch.as_tensor(indices, dtype=torch.int64).cpu())
        return self

    @property
    def features(self) -> torch.Tensor:
        """All features [N, dim] in ``dtype``."""
        self._consolidate()
        return self._chunks[0] if self._chunks else torch.empty(0, self.dim, dtype=self.dtype)

    def _consolidate(self) -> None:
        if len(self._chunks) > 1:
            self._chunks, self._indices = [torch.cat(self._chunks)], [torch.cat(self._indices)]

    def all_reduce(self) -> FeatureBank:
        """Gather every rank's features, ordered by global index, onto every rank (collective)."""
        feats = self.features
        idx = self._indices[0] if self._indices else torch.empty(0, dtype=torch.int64)
        feats, idx = dist.all_gather_rows(feats), dist.all_gather_rows(idx)
        order = torch.argsort(idx)
        self._chunks, self._indices = [feats[order].contiguous()], [idx[order]]
        return self

    def state_dict(self) -> dict[str, np.ndarray]:
        self._consolidate()
        idx = self._indices[0] if self._indices else torch.empty(0, dtype=torch.int64)
        return {'features': self.features.numpy(), 'indices': idx.numpy()}

    @classmethod
    def from_state_dict(cls, state: dict) -> FeatureBank:
        feats = torch.from_numpy(np.asarray(state['features']))
        bank = cls(feats.shape[1], dtype=feats.dtype)
        bank._chunks, bank._indices = [feats], [torch.from_numpy(np.asarray(state['indices'], dtype=np.int64))]
        return bank
