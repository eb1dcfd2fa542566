"""Images for every room: the latent of a seed, the fixed inputs of a sample grid, generation, the ``[-1, 1] ->
uint8`` conversion, PNG writing.

One conversion for everyone: StyleGAN's ``(x * 127.5 + 128).clamp(0, 255)`` truncated to uint8, used by the training
loop's sample grids, ``gen_images.py``, the metrics (:func:`to_uint8_rgb`) and the studies. Imports only torch,
numpy and PIL.
"""

from __future__ import annotations

import os
from typing import Optional, Union

import numpy as np
import PIL.Image
import torch
from torch import nn

__all__ = ['MAX_CLASS_ROWS', 'class_ids_for_rows', 'generate', 'grid_latents', 'save_grid', 'save_image', 'to_uint8',
           'to_uint8_rgb', 'z_from_seed']

MAX_CLASS_ROWS = 16


def z_from_seed(seed: int, z_dim: int) -> torch.Tensor:
    """The latent of one seed: N(0, I) [z_dim] from ``torch.Generator().manual_seed(seed)``."""
    return torch.randn([z_dim], generator=torch.Generator().manual_seed(int(seed)))


def class_ids_for_rows(c_dim: int, rows: int) -> list[int]:
    """One class per row: all classes when they fit, else ``rows`` classes spread evenly over 0..c_dim-1."""
    if c_dim <= rows:
        return list(range(c_dim))
    return np.linspace(0, c_dim - 1, rows).round().astype(int).tolist()


def grid_latents(z_dim: int, c_dim: int, seed: int, cols: int = 8, rows: int = 8
                 ) -> tuple[torch.Tensor, Optional[torch.Tensor], tuple[int, int]]:
    """Fixed inputs of the training sample grid: z [N, z_dim], one-hot c [N, c_dim] (one class per row) or None,
    and the grid shape (cols, rows); conditional grids have one row per class (at most ``MAX_CLASS_ROWS``,
    ``rows`` is then ignored). The same ``seed`` gives the same grid in every snapshot and after resume."""
    if c_dim > 0:
        classes = class_ids_for_rows(c_dim, MAX_CLASS_ROWS)
        rows = len(classes)
    z = torch.randn([cols * rows, z_dim], generator=torch.Generator().manual_seed(int(seed)))
    if c_dim == 0:
        return z, None, (cols, rows)
    ids = torch.tensor(classes).repeat_interleave(cols)
    return z, torch.nn.functional.one_hot(ids, c_dim).float(), (cols, rows)


def to_uint8(img: torch.Tensor) -> torch.Tensor:
    """Images in [-1, 1] (any shape, usually [N, C, H, W]) -> uint8 of the same shape and device: StyleGAN's
    ``(x * 127.5 + 128).clamp(0, 255)``, truncated (so 0 maps to 128)."""
    return (img.detach().float() * 127.5 + 128).clamp(0, 255).to(torch.uint8)


def to_uint8_rgb(img: torch.Tensor) -> torch.Tensor:
    """Generator output in [-1, 1] [N, C, H, W] (C = 1 or 3) -> uint8 [N, 3, H, W], grey repeated to 3 channels
    (what feature extractors take)."""
    if img.ndim != 4 or img.shape[1] not in (1, 3):
        raise ValueError(f'generator must return images [N, 1 or 3, H, W], got {list(img.shape)}')
    x = to_uint8(img)
    return x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x


@torch.no_grad()
def generate(G: nn.Module, z: torch.Tensor, c: Optional[torch.Tensor], batch: int = 32,
             truncation_psi: float = 1.0) -> np.ndarray:
    """G(z, c) in batches (no EMA updates) as uint8 numpy [N, C, H, W]; the device is G's."""
    device = next(G.parameters()).device
    out = []
    for i in range(0, len(z), batch):
        zi = z[i:i + batch].to(device)
        ci = None if c is None else c[i:i + batch].to(device)
        out.append(to_uint8(G(zi, ci, truncation_psi=truncation_psi)).cpu().numpy())
    return np.concatenate(out) if out else np.zeros([0, G.img_channels, G.img_resolution, G.img_resolution],
                                                     np.uint8)


def save_grid(images: np.ndarray, path: Union[str, os.PathLike], grid: tuple[int, int]) -> None:
    """Tile uint8 images [N, C, H, W] row by row into a ``cols x rows`` PNG (grey for C=1, RGB for C=3)."""
    cols, rows = grid
    n, c, h, w = images.shape
    if n > cols * rows:
        raise ValueError(f'{n} images do not fit a {cols}x{rows} grid')
    canvas = np.zeros([rows * h, cols * w, c], dtype=np.uint8)
    for i in range(n):
        y, x = divmod(i, cols)
        canvas[y * h:(y + 1) * h, x * w:(x + 1) * w] = images[i].transpose(1, 2, 0)
    save_image(canvas, path)


def save_image(hwc: np.ndarray, path: Union[str, os.PathLike]) -> None:
    """Write a uint8 [H, W, C] array as PNG."""
    PIL.Image.fromarray(np.ascontiguousarray(hwc[:, :, 0] if hwc.shape[2] == 1 else hwc)).save(path)
