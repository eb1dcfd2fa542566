"""ADM sample and reference batches (``.npz``): read lazily with a clear error for every broken layout, written as a
stream, and generated from a network with the same latents and classes as :mod:`~san_ext.metrics.sampling`.

Layouts (openai/guided-diffusion: the ``evaluations`` README, ``evaluations/evaluator.py``,
``scripts/image_sample.py``):

- sample batch: ``arr_0`` uint8 [N, H, W, 3]; ``arr_1`` integer class labels [N] for class-conditional models.
- reference batch: ``arr_0`` uint8 [N, H, W, 3] (ImageNet: 10,000 training images, used for precision/recall) and,
  optionally, ``mu`` [2048], ``sigma`` [2048, 2048], ``mu_s`` [2023], ``sigma_s`` [2023, 2023]: Inception pool3 and
  spatial statistics of the whole training set. Without them, statistics come from ``arr_0``'s images.

``np.savez`` stores members uncompressed, so ``arr_0`` is memory-mapped (a 10k x 256² batch is 2 GB; every rank
and DataLoader worker maps it instead of loading it). Compressed members (``np.savez_compressed``) are read whole.
"""

from __future__ import annotations

import logging
import os
import struct
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Union

import numpy as np
import torch
from tqdm import tqdm

from san_ext.files import write_atomic
from san_ext.images import to_uint8_rgb

from .sampling import latents

__all__ = ['STAT_KEYS', 'NpzBatch', 'NpzImages', 'read_npz', 'write_npz', 'write_sample_batch']

log = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]
STAT_KEYS = ('mu', 'sigma', 'mu_s', 'sigma_s')
_LOCAL_HEADER = struct.Struct('<4s2B4HL2L2H')  # a zip member's local file header (PKWARE APPNOTE 4.3.7)


@dataclass(frozen=True)
class _Member:
    """Where ``arr_0``'s bytes are: data offset in the file (None when compressed), shape and dtype."""

    offset: Optional[int]
    shape: tuple[int, ...]
    dtype: np.dtype


class NpzImages(Sequence):
    """``arr_0`` of an ADM batch as a map-style dataset of ``(uint8 [3, H, W], label)`` items (what
    :func:`~san_ext.metrics.sampling.dataset_images` reads). Opens its memory map lazily, so it pickles cheaply to
    DataLoader workers."""

    def __init__(self, path: Path, member: _Member, labels: Optional[np.ndarray]) -> None:
        self.path, self.member, self.labels = path, member, labels
        self._array: Optional[np.ndarray] = None

    def __len__(self) -> int:
        return self.member.shape[0]

    def __getstate__(self) -> dict:
        return {**self.__dict__, '_array': None}

    def array(self) -> np.ndarray:
        """All images, uint8 [N, H, W, 3] (a read-only memory map where the member is stored uncompressed)."""
        if self._array is None:
            m = self.member
            if m.offset is None:
                log.warning('%s: arr_0 is compressed; reading all of it into memory', self.path)
                with np.load(self.path, allow_pickle=False) as f:
                    self._array = f['arr_0']
            else:
                self._array = np.memmap(self.path, dtype=m.dtype, mode='r', offset=m.offset, shape=m.shape)
        return self._array

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        if not -len(self) <= i < len(self):
            raise IndexError(f'image {i} out of range for {len(self)}')
        image = np.ascontiguousarray(self.array()[i].transpose(2, 0, 1))  # [3, H, W]
        label = np.zeros(0, np.int64) if self.labels is None else self.labels[i]
        return image, label


@dataclass(frozen=True)
class NpzBatch:
    """A validated ADM batch: its images (lazy), labels, precomputed statistics and a content hash."""

    path: Path
    images: NpzImages
    labels: Optional[np.ndarray]  # int64 [N]
    stats: Optional[dict[str, np.ndarray]]  # float64 mu, sigma, mu_s, sigma_s; None: compute from the images
    content_sha256: str  # hash of the members' names, CRCs and sizes (san_ext.metrics.cache.dataset_fingerprint)

    @property
    def num_images(self) -> int:
        return len(self.images)

    @property
    def resolution(self) -> tuple[int, int]:
        return tuple(self.images.member.shape[1:3])


def _fail(path: Path, what: str) -> ValueError:
    return ValueError(f'{path}: {what}')


def _member(path: Path, zf: zipfile.ZipFile, name: str) -> _Member:
    """Header of ``name`` (an .npy member) and the file offset of its data; checks the member holds all of it."""
    info = zf.getinfo(name)
    with zf.open(info) as f:
        version = np.lib.format.read_magic(f)
        if version not in ((1, 0), (2, 0)):
            raise _fail(path, f'{name} has .npy format version {version}; expected 1.0 or 2.0 (np.save)')
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else \
            np.lib.format.read_array_header_2_0
        shape, fortran, dtype = read_header(f)
        header_len = f.tell()
    need = header_len + int(np.prod(shape)) * dtype.itemsize
    if info.file_size != need:
        raise _fail(path, f'{name} holds {info.file_size} bytes but its header promises {need} ({list(shape)} '
                    f'{dtype}): the file is truncated or was written incompletely; download or generate it again')
    if fortran:
        raise _fail(path, f'{name} is stored in Fortran order; ADM batches are C-ordered')
    offset = None
    if info.compress_type == zipfile.ZIP_STORED:
        with open(path, 'rb') as raw:
            raw.seek(info.header_offset)
            fields = _LOCAL_HEADER.unpack(raw.read(_LOCAL_HEADER.size))
        offset = info.header_offset + _LOCAL_HEADER.size + fields[-2] + fields[-1] + header_len
    return _Member(offset, tuple(int(s) for s in shape), dtype)


def _check_images(path: Path, m: _Member) -> None:
    if m.dtype != np.uint8 or len(m.shape) != 4 or m.shape[-1] != 3:
        hint = ' (looks like NCHW; ADM batches are NHWC)' if len(m.shape) == 4 and m.shape[1] == 3 else ''
        raise _fail(path, f'arr_0 must be uint8 images [N, H, W, 3], got {list(m.shape)} {m.dtype}{hint}')
    if m.shape[0] < 1:
        raise _fail(path, 'arr_0 holds no images')


def _read_labels(path: Path, f, n: int) -> Optional[np.ndarray]:
    if 'arr_1' not in f.files:
        return None
    labels = f['arr_1']
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise _fail(path, f'arr_1 must be integer class labels [N], got {list(labels.shape)} {labels.dtype}')
    if len(labels) != n:
        raise _fail(path, f'arr_1 has {len(labels)} labels for {n} images in arr_0: the arrays do not belong together')
    return labels.astype(np.int64)


def _read_stats(path: Path, f, dims: Optional[tuple[int, int]]) -> Optional[dict[str, np.ndarray]]:
    present = [k for k in STAT_KEYS if k in f.files]
    if not present:
        return None
    if len(present) < len(STAT_KEYS):
        missing = ', '.join(k for k in STAT_KEYS if k not in present)
        raise _fail(path, f'has {", ".join(present)} but not {missing}: a reference batch holds all four statistics '
                    'or none')
    stats = {k: np.asarray(f[k], dtype=np.float64) for k in STAT_KEYS}
    for mu, sigma, want in (('mu', 'sigma', dims[0] if dims else None), ('mu_s', 'sigma_s', dims[1] if dims else None)):
        d = stats[mu].shape[0] if stats[mu].ndim == 1 else -1
        if d < 1 or stats[sigma].shape != (d, d):
            raise _fail(path, f'{mu} {list(stats[mu].shape)} and {sigma} {list(stats[sigma].shape)} do not match: '
                        f'expected [d] and [d, d]')
        if want is not None and d != want:
            raise _fail(path, f'{mu} has {d} features, the extractor gives {want}: these statistics come from another '
                        f'network or layer')
        if not (np.isfinite(stats[mu]).all() and np.isfinite(stats[sigma]).all()):
            raise _fail(path, f'{mu} or {sigma} holds NaN or inf')
    return stats


def read_npz(path: PathLike, stat_dims: Optional[tuple[int, int]] = None) -> NpzBatch:
    """Open and validate an ADM batch. ``stat_dims`` (pool, spatial) checks the sizes of ``mu`` and ``mu_s``.

    Raises FileNotFoundError for a missing file and ValueError, naming the file and what is wrong, for a file that
    is not a zip (a truncated download), lacks ``arr_0``, holds other than uint8 NHWC RGB images, whose ``arr_0``
    is shorter than its header says, whose ``arr_1`` does not match ``arr_0``, or whose statistics are incomplete,
    of mismatched shapes or non-finite.
    """
    from .cache import dataset_fingerprint  # the zip listing hash the reference cache uses

    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f'npz batch not found: {path}')
    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
            if 'arr_0.npy' not in names:
                found = ', '.join(n.removesuffix('.npy') for n in names) or 'nothing'
                raise _fail(path, f'no arr_0 (images) in this npz; it holds {found}')
            member = _member(path, zf, 'arr_0.npy')
        _check_images(path, member)
        with np.load(path, allow_pickle=False) as f:
            labels = _read_labels(path, f, member.shape[0])
            stats = _read_stats(path, f, stat_dims)
        fingerprint = dataset_fingerprint(path)
    except (zipfile.BadZipFile, EOFError, OSError) as err:
        raise _fail(path, f'not a readable .npz (zip) file ({type(err).__name__}: {err}); a truncated download '
                    'looks like this: download or generate it again') from err
    return NpzBatch(path, NpzImages(path, member, labels), labels, stats, fingerprint)


def write_npz(path: PathLike, batches: Iterable[tuple[np.ndarray, Optional[np.ndarray]]], num: int,
              image_shape: tuple[int, int, int]) -> Path:
    """Write an ADM sample batch from ``(uint8 images [n, H, W, 3], labels [n] or None)`` chunks, streaming (memory
    holds one chunk): ``arr_0`` [num, H, W, 3] and, when labels come, ``arr_1`` int64 [num]. Uncompressed zip64
    members as ``np.savez`` writes them; atomic (temp file, fsync, rename)."""
    shape = (int(num), *(int(s) for s in image_shape))
    labels: list[np.ndarray] = []

    def write(tmp: Path) -> None:
        count = 0
        with zipfile.ZipFile(tmp, 'w', compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
            with zf.open('arr_0.npy', 'w', force_zip64=True) as f:
                header = {'descr': np.lib.format.dtype_to_descr(np.dtype(np.uint8)), 'fortran_order': False,
                          'shape': shape}
                np.lib.format.write_array_header_1_0(f, header)
                for images, lab in batches:
                    if images.dtype != np.uint8 or images.shape[1:] != shape[1:]:
                        raise ValueError(f'chunk of {list(images.shape)} {images.dtype}, expected uint8 '
                                         f'[n, {", ".join(map(str, shape[1:]))}]')
                    f.write(np.ascontiguousarray(images).tobytes())
                    count += len(images)
                    if lab is not None:
                        labels.append(np.asarray(lab, dtype=np.int64))
            if count != num:
                raise ValueError(f'got {count} images, expected {num}')
            if labels:
                with zf.open('arr_1.npy', 'w', force_zip64=True) as f:
                    np.lib.format.write_array(f, np.concatenate(labels), allow_pickle=False)

    return write_atomic(Path(path), write)


def write_sample_batch(path: PathLike, G: Callable, num: int, seed: int = 0, batch_size: int = 64,
                       device: Union[str, torch.device] = 'cpu', truncation_psi: float = 1.0,
                       progress: bool = True) -> Path:
    """``num`` samples of ``G(z, c)`` (``z_dim``, ``c_dim`` attributes) as an ADM sample batch: sample ``i`` has the
    latent and class that :func:`~san_ext.metrics.sampling.generated_images` gives it for ``seed`` (z ~ N(0, I),
    classes uniform i.i.d. as ADM's ``image_sample.py`` draws them), so this file scores like ``calc_metrics.py
    --seed`` on the network. ``arr_1`` holds the class ids of a conditional G. One process."""
    z_dim, c_dim = int(G.z_dim), int(getattr(G, 'c_dim', 0))
    kw = {} if truncation_psi == 1 else {'truncation_psi': truncation_psi}

    def chunk(start: int) -> tuple[np.ndarray, Optional[np.ndarray]]:
        z, c = latents(seed, start, min(start + batch_size, num), z_dim, c_dim)
        with torch.no_grad():
            images = to_uint8_rgb(G(z.to(device), c.to(device), **kw))  # [n, 3, H, W]
        return images.permute(0, 2, 3, 1).cpu().numpy(), (c.argmax(dim=1).numpy() if c_dim else None)

    first = chunk(0)
    starts = range(batch_size, num, batch_size)

    def chunks():
        yield first
        for start in tqdm(starts, desc='samples', unit='batch', disable=not progress, leave=False):
            yield chunk(start)

    return write_npz(path, chunks(), num, first[0].shape[1:])
