"""Inception Score (Salimans et al. 2016): IS = exp(E_x KL(p(y|x) || p(y))), per split, streamed.

For a split S, mean_x KL(p(y|x) || p_S) = mean_x sum_y p log p - sum_y p_S log p_S with p_S = mean_x p(y|x), so a
split needs only the count, ``sum_x p(y|x)`` and ``sum_x sum_y p log p``: bounded memory, sums that merge over
ranks. Splits are contiguous ranges of the sample index (StyleGAN's ``is50k``: 10 splits, no shuffling; the
reported std is numpy's population std over splits). ``split_size`` gives ADM's splitting instead (consecutive
chunks of 5000 samples, the last one shorter: guided-diffusion ``evaluations/evaluator.py``). Logits should be the
1008 unbiased Inception logits (StyleGAN ``no_output_bias``, torch-fidelity ``logits_unbiased``; ADM's softmax of
pool3 times the fc weight without bias is the same).
"""

from __future__ import annotations

from typing import Optional, Union

import numpy as np
import torch

from san_ext import dist

__all__ = ['InceptionScoreStats', 'inception_score']


class InceptionScoreStats:
    """Per-split sums for the Inception Score of ``num_items`` samples with ``num_classes`` logits each: ``splits``
    near-equal contiguous splits, or, with ``split_size``, chunks of that many consecutive samples (ADM)."""

    def __init__(self, num_classes: int, num_items: int, splits: int = 10, split_size: Optional[int] = None) -> None:
        if split_size is not None:
            if split_size < 1:
                raise ValueError(f'split_size must be at least 1, got {split_size}')
            splits = -(-num_items // split_size)
        if splits < 1 or num_items < splits:
            raise ValueError(f'need at least one sample per split, got {num_items} samples for {splits} splits')
        self.num_classes, self.num_items, self.splits, self.split_size = num_classes, num_items, splits, split_size
        self.count = torch.zeros(splits, dtype=torch.float64)
        self.sum_p = torch.zeros(splits, num_classes, dtype=torch.float64)  # [splits, classes]
        self.sum_plogp = torch.zeros(splits, dtype=torch.float64)

    def update(self, logits: torch.Tensor, indices: torch.Tensor) -> InceptionScoreStats:
        """Add logits [N, num_classes] of the samples with global indices [N] (which fix their split)."""
        if logits.ndim != 2 or logits.shape[1] != self.num_classes or len(indices) != len(logits):
            raise ValueError(f'expected logits [N, {self.num_classes}] and N indices, got {list(logits.shape)}')
        logits = logits.detach().to('cpu', torch.float64)
        log_p = torch.log_softmax(logits, dim=1)
        p = log_p.exp()
        idx = torch.as_tensor(indices, dtype=torch.int64).cpu()
        split = idx // self.split_size if self.split_size else idx * self.splits // self.num_items
        if idx.min() < 0 or idx.max() >= self.num_items:
            raise ValueError(f'sample indices must lie in [0, {self.num_items})')
        self.count.index_add_(0, split, torch.ones_like(split, dtype=torch.float64))
        self.sum_p.index_add_(0, split, p)
        self.sum_plogp.index_add_(0, split, torch.special.xlogy(p, p).sum(dim=1))
        return self

    def all_reduce(self) -> InceptionScoreStats:
        for t in (self.count, self.sum_p, self.sum_plogp):
            dist.all_reduce_sum(t)
        return self

    def scores(self) -> np.ndarray:
        """Inception Score of every split, float64 [splits]."""
        if (self.count == 0).any():
            raise ValueError('every split needs at least one sample')
        p_split = self.sum_p / self.count[:, None]
        kl = self.sum_plogp / self.count - torch.special.xlogy(p_split, p_split).sum(dim=1)
        return kl.exp().numpy()

    def result(self) -> tuple[float, float]:
        """(mean, population std) of the split scores."""
        s = self.scores()
        return float(s.mean()), float(s.std())

    def state_dict(self) -> dict[str, np.ndarray]:
        return {'count': self.count.numpy(), 'sum_p': self.sum_p.numpy(), 'sum_plogp': self.sum_plogp.numpy()}


def inception_score(logits: Union[np.ndarray, torch.Tensor], splits: int = 10) -> tuple[float, float]:
    """(mean, std) Inception Score of logits [N, K] over ``splits`` contiguous splits."""
    logits = torch.as_tensor(logits)
    acc = InceptionScoreStats(logits.shape[1], logits.shape[0], splits)
    return acc.update(logits, torch.arange(len(logits))).result()
