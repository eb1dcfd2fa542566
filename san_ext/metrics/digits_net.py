"""The project's 8x8 digit classifier as a network: its definition, its input scaling and the loading of its committed
weights. Trained, recorded and registered as the ``digits_cnn`` feature extractor by
:mod:`san_ext.studies.digits_classifier` (which re-exports these names); it lives on the metrics floor so that metrics
(``stacked_modes``, :mod:`san_ext.metrics.stacked`) can read digits without importing a study.

Network (:class:`DigitsCNN`, 40,394 parameters): conv3x3 16, conv3x3 32, maxpool, conv3x3 64, maxpool, linear
256 -> 64 (ReLU: the 64-d features), dropout 0.25, linear 64 -> 10. Input: grey [N, 1, 8, 8] as ``uint8 / 127.5 - 1``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = ['DEFAULT_WEIGHTS', 'FEATURE_DIM', 'REGENERATE', 'RESOLUTION', 'WEIGHTS_DIR', 'DigitsCNN', 'load_classifier',
           'to_float']

PathLike = Union[str, os.PathLike]
RESOLUTION = 8
FEATURE_DIM = 64
# The weights ship as package data of san_ext.studies beside the command that makes them (a file path, no import).
WEIGHTS_DIR = Path(__file__).resolve().parents[1] / 'studies' / 'weights'
DEFAULT_WEIGHTS = WEIGHTS_DIR / 'digits_cnn.safetensors'
REGENERATE = 'python -m san_ext.studies.digits_classifier --out san_ext/studies/weights'


def to_float(images: Union[np.ndarray, torch.Tensor]) -> torch.Tensor:
    """uint8 grey images [N, H, W] or [N, 1, H, W] -> float32 [N, 1, H, W] in [-1, 1] (the network's input)."""
    x = torch.as_tensor(images)
    if x.dtype != torch.uint8:
        raise ValueError(f'expected uint8 images, got {x.dtype}')
    if x.ndim == 3:
        x = x[:, None]
    if x.ndim != 4 or x.shape[1] != 1:
        raise ValueError(f'expected grey images [N, H, W] or [N, 1, H, W], got {list(x.shape)}')
    return x.float() / 127.5 - 1.0


class DigitsCNN(nn.Module):
    """8x8 grey digit [N, 1, 8, 8] in [-1, 1] -> 10 logits; :meth:`features` is the 64-d penultimate layer."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 3, padding=1)
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1)
        self.conv3 = nn.Conv2d(32, 64, 3, padding=1)
        self.fc = nn.Linear(64 * 2 * 2, FEATURE_DIM)
        self.dropout = nn.Dropout(0.25)
        self.head = nn.Linear(FEATURE_DIM, 10)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate-layer activations (after ReLU) [N, 64]."""
        if x.ndim != 4 or x.shape[1:] != (1, RESOLUTION, RESOLUTION):
            raise ValueError(f'DigitsCNN expects [N, 1, 8, 8], got {list(x.shape)}')
        x = F.relu(self.conv2(F.relu(self.conv1(x))))
        x = F.max_pool2d(x, 2)  # [N, 32, 4, 4]
        x = F.max_pool2d(F.relu(self.conv3(x)), 2)  # [N, 64, 2, 2]
        return F.relu(self.fc(x.flatten(1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.features(x)))


def load_classifier(weights: Optional[PathLike] = None) -> DigitsCNN:
    """The classifier in eval mode from ``weights`` (a .safetensors file or a folder holding
    ``digits_cnn.safetensors``; default: the committed file). Loading runs no code from the file."""
    from safetensors.torch import load_file

    path = Path(weights) if weights is not None else DEFAULT_WEIGHTS
    if path.is_dir():
        path = path / DEFAULT_WEIGHTS.name
    if not path.is_file():
        raise FileNotFoundError(f'digits classifier weights not found at {path}; regenerate them with: {REGENERATE}')
    net = DigitsCNN()
    net.load_state_dict(load_file(str(path)))
    return net.eval()
