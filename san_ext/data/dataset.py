"""``ImageDataset``: StyleGAN's dataset format (a zip or folder of same-size square PNG/JPEG images plus an optional
``dataset.json`` of integer class labels) as a PyTorch dataset of uint8 ``[C, H, W]`` arrays and one-hot labels.
"""

from __future__ import annotations

import io
import os
import zipfile
import zlib
from typing import Optional, Union

import numpy as np
import PIL.Image
import torch

from .storage import CONVERT_HINT, DatasetError, Storage, class_count, is_image_name, read_label_table

__all__ = ['ImageDataset', 'open_dataset']

SCAN_LIMIT = 10_000  # image headers checked when a dataset opens; bigger ones check an even sample, all on load
DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, zipfile.BadZipFile, zlib.error)
_MODE_CHANNELS = {'1': 1, 'L': 1, 'P': 3, 'RGB': 3}  # PIL mode -> channels as loaded ('1' -> L, 'P' -> RGB)


class ImageDataset(torch.utils.data.Dataset):
    """StyleGAN-format images from a zip or folder: item ``i`` is (uint8 ``[C, H, W]``, float32 one-hot label).

    ``xflip`` appends a mirrored copy of every image (StyleGAN's ``--mirror``), ``max_size`` keeps a fixed random
    subset drawn with ``random_seed``, ``resolution`` (when given) must equal the images' side. Image headers are
    checked at open (up to ``SCAN_LIMIT`` of them, evenly spread) and every image again when it is loaded.
    """

    def __init__(self, path: Union[str, os.PathLike], use_labels: bool = False, xflip: bool = False,
                 max_size: Optional[int] = None, resolution: Optional[int] = None, random_seed: int = 0) -> None:
        self._storage = Storage(path)
        self.path = self._storage.path
        self.name = self.path.name[:-len('.zip')] if self._storage.is_zip else self.path.name
        self._names = [n for n in self._storage.names() if is_image_name(n)]
        if not self._names:
            raise DatasetError(f'no images (.png, .jpg, ...) in {self.path}; {CONVERT_HINT}')
        raw_idx = _select_subset(len(self._names), max_size, random_seed, self.path)
        self._first = self._names[raw_idx[0]]
        self.image_shape = self._check_headers(raw_idx)  # (C, H, W)
        if resolution is not None and resolution != self.resolution:
            raise DatasetError(f'{self.path} holds {self.resolution}x{self.resolution} images but resolution '
                               f'{resolution} was requested; rebuild it with: python dataset_tool.py --source '
                               f'{self.path} --dest NEW.zip --resolution {resolution}')
        self._class_ids: Optional[np.ndarray] = None  # int64 [num raw images]
        self.label_dim = 0
        if use_labels:
            self._class_ids = _load_class_ids(self._storage, self._names)
            self.label_dim = class_count(self._class_ids.tolist(), self._storage.describe('dataset.json'))
        self._raw_idx = np.concatenate([raw_idx, raw_idx]) if xflip else raw_idx
        self._xflip = np.repeat([False, True], len(raw_idx)) if xflip else np.zeros(len(raw_idx), dtype=bool)
        self._storage.close()  # workers (and this process) reopen the zip on first read

    # -- StyleGAN's dataset attributes ---------------------------------------------------------------------------
    @property
    def resolution(self) -> int:
        """Side of the square images in pixels."""
        return self.image_shape[1]

    @property
    def num_channels(self) -> int:
        """1 (grey) or 3 (RGB)."""
        return self.image_shape[0]

    @property
    def label_shape(self) -> tuple[int]:
        """Shape of one label: ``(label_dim,)``, which is ``(0,)`` without labels."""
        return (self.label_dim,)

    @property
    def has_labels(self) -> bool:
        """Whether items carry class labels (``use_labels=True`` on a labelled dataset)."""
        return self.label_dim > 0

    def __len__(self) -> int:
        return len(self._raw_idx)

    def __getitem__(self, idx: int) -> tuple[np.ndarray, np.ndarray]:
        image = self._load_image(int(self._raw_idx[idx]))  # [C, H, W] uint8
        if self._xflip[idx]:
            image = image[:, :, ::-1]
        return np.ascontiguousarray(image), self.get_label(idx)

    def get_label(self, idx: int) -> np.ndarray:
        """One-hot float32 label ``[label_dim]`` of item ``idx`` (shape ``[0]`` without labels)."""
        label = np.zeros(self.label_shape, dtype=np.float32)
        if self._class_ids is not None:
            label[self._class_ids[self._raw_idx[idx]]] = 1
        return label

    def get_name(self, idx: int) -> str:
        """Name of item ``idx``'s file inside the zip or folder."""
        return self._names[self._raw_idx[idx]]

    def close(self) -> None:
        """Close this process's zip handle (reopened on the next read)."""
        self._storage.close()

    def __repr__(self) -> str:
        c, h, w = self.image_shape
        return f'ImageDataset({str(self.path)!r}, len={len(self)}, image_shape={c}x{h}x{w}, label_dim={self.label_dim})'

    # -- helpers --------------------------------------------------------------------------------------------------
    def _check_headers(self, raw_idx: np.ndarray) -> tuple[int, int, int]:
        """Shape (C, H, W) of the first image, validated, and the same for a spread of the others."""
        shape = self._probe(self._first)
        c, h, w = shape
        if h != w or w < 2 or w & (w - 1):
            side = 1 << (min(h, w).bit_length() - 1)
            raise DatasetError(f'{self._storage.describe(self._first)} is {w}x{h}; images must be square with a '
                               f'power-of-two side: rebuild with python dataset_tool.py --source {self.path} '
                               f'--dest NEW.zip --resolution {side} (center-crops and resizes)')
        sample = raw_idx if len(raw_idx) <= SCAN_LIMIT else raw_idx[np.linspace(0, len(raw_idx) - 1, SCAN_LIMIT)
                                                                    .round().astype(np.int64)]
        for i in sample:
            if (other := self._probe(self._names[i])) != shape:
                raise self._size_error(self._names[i], other, shape)
        return shape

    def _probe(self, name: str) -> tuple[int, int, int]:
        """(C, H, W) of one image from its header."""
        try:
            with self._storage.open(name) as f, PIL.Image.open(f) as img:
                mode, (w, h) = img.mode, img.size
        except DECODE_ERRORS as err:
            raise self._decode_error(name, err) from err
        return self._channels(name, mode), h, w

    def _load_image(self, raw: int) -> np.ndarray:
        """Decode image ``raw`` to uint8 [C, H, W], checking its shape against the first image."""
        name = self._names[raw]
        try:
            data = self._storage.read(name)
            with PIL.Image.open(io.BytesIO(data)) as img:
                self._channels(name, img.mode)
                img = img.convert('L') if img.mode == '1' else img.convert('RGB') if img.mode == 'P' else img
                array = np.asarray(img)
        except DECODE_ERRORS as err:
            raise self._decode_error(name, err) from err
        array = array[:, :, None] if array.ndim == 2 else array
        shape = (array.shape[2], array.shape[0], array.shape[1])
        if shape != self.image_shape:
            raise self._size_error(name, shape, self.image_shape)
        return array.transpose(2, 0, 1)

    def _channels(self, name: str, mode: str) -> int:
        if mode not in _MODE_CHANNELS:
            raise DatasetError(f'{self._storage.describe(name)} has PIL mode {mode}; images must be grey or RGB '
                               f'(1 or 3 channels): convert the data with python dataset_tool.py, which composites '
                               f'alpha on white')
        return _MODE_CHANNELS[mode]

    def _size_error(self, name: str, shape: tuple[int, ...], expected: tuple[int, ...]) -> DatasetError:
        fmt = 'x'.join
        return DatasetError(f'mixed image sizes in {self.path}: {self._first} is {fmt(map(str, expected))} '
                            f'(CxHxW) but {name} is {fmt(map(str, shape))}; all images must share one size: rebuild '
                            f'with python dataset_tool.py --source {self.path} --dest NEW.zip --resolution R')

    def _decode_error(self, name: str, err: Exception) -> DatasetError:
        return DatasetError(f'cannot decode {self._storage.describe(name)} ({type(err).__name__}: {err}); the file '
                            f'is corrupt: replace or delete it, or rebuild the dataset with python dataset_tool.py')


def open_dataset(path: Union[str, os.PathLike], **kwargs) -> ImageDataset:
    """Open a StyleGAN-format zip or folder; keyword arguments as for :class:`ImageDataset`."""
    return ImageDataset(path, **kwargs)


def _select_subset(n: int, max_size: Optional[int], seed: int, path: os.PathLike) -> np.ndarray:
    """Indices of the images in use: all of them, or a sorted random subset of ``max_size`` (fixed by ``seed``)."""
    if max_size is not None and max_size < 1:
        raise DatasetError(f'max_size must be at least 1 (got {max_size}) for {path}')
    if max_size is None or max_size >= n:
        return np.arange(n, dtype=np.int64)
    return np.sort(np.random.default_rng(seed).choice(n, size=max_size, replace=False)).astype(np.int64)


def _load_class_ids(storage: Storage, names: list[str]) -> np.ndarray:
    """Integer class id of every image from ``dataset.json`` (``{"labels": [[name, class], ...]}``)."""
    fix = ('build the dataset with labels (python dataset_tool.py --labels-from-folders, a dataset.json in the '
           'source, or a CIFAR-10/MNIST/ImageNet source) or train without --cond')
    if not storage.exists('dataset.json'):
        raise DatasetError(f'--cond needs labels; {storage.path} has no dataset.json: {fix}')
    meta_file = storage.describe('dataset.json')
    table = read_label_table(storage)
    if table is None:
        raise DatasetError(f'--cond needs labels; {meta_file} has "labels": null: {fix}')
    stray = sorted(set(table) - set(names))
    if stray:
        raise DatasetError(f'{meta_file} labels {stray[0]!r} ({len(stray)} such entries), which is not an image in '
                           f'{storage.path}; fix or regenerate dataset.json')
    unlabelled = [n for n in names if n not in table]
    if unlabelled:
        raise DatasetError(f'{meta_file} has no label for {unlabelled[0]!r} ({len(unlabelled)} images unlabelled); '
                           f'every image needs one: fix or regenerate dataset.json')
    return np.array([table[n] for n in names], dtype=np.int64)
