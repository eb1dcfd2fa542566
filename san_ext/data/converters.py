"""The conversion behind ``dataset_tool.py``: read a source, crop and resize every image to one square power-of-two
size, and write StyleGAN's format (``NNNNN/imgNNNNNNNN.png`` plus ``dataset.json``) to a zip or folder, atomically.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import json
import logging
import multiprocessing
import os
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Union

import numpy as np
import PIL.Image
from tqdm import tqdm

from .dataset import DECODE_ERRORS
from .sources import Source, SourceItem, open_source
from .storage import DatasetError, class_count
from .writer import DatasetWriter, check_dest

__all__ = ['TRANSFORMS', 'ConvertConfig', 'ConvertResult', 'convert_dataset', 'make_digits_dataset', 'transform_image']

log = logging.getLogger(__name__)

TRANSFORMS = ('center-crop', 'center-crop-wide', 'none')


@dataclass(frozen=True)
class ConvertConfig:
    """Options of one conversion; field names follow ``dataset_tool.py``'s flags."""

    source: str                          # folder, .zip, ImageNet train/, CIFAR-10 tarball, MNIST folder, builtin:X
    dest: str                            # .zip file or folder
    resolution: Optional[int] = None     # output side in pixels (power of two); None keeps the cropped size
    transform: str = 'center-crop'       # one of TRANSFORMS
    max_images: Optional[int] = None     # the first N images of the source, in its sorted order
    labels_from_folders: bool = False    # class id = index of the top-level sub-folder in sorted order
    imagenet: bool = False               # read the source as an ImageNet train/ tree (else auto-detected)
    channels: Optional[int] = None       # 1 or 3; None: the source's own (3; MNIST 1)
    workers: int = 1                     # processes decoding and encoding images
    compress_level: int = 0              # PNG zlib level 0-9 (0 as StyleGAN: fastest to read, largest)
    force: bool = False                  # overwrite an existing dest


@dataclass(frozen=True)
class ConvertResult:
    """What a conversion wrote."""

    dest: Path
    kind: str           # source kind that was read
    num_images: int
    resolution: int
    channels: int
    num_classes: int    # 0 when unlabelled


@dataclass(frozen=True)
class _Encoder:
    """Per-image work (picklable for worker processes): decode, set channels, transform, encode as PNG."""

    transform: str
    resolution: Optional[int]
    channels: int
    compress_level: int

    def __call__(self, item: SourceItem) -> tuple[str, Optional[int], bytes, tuple[int, int], tuple[int, int]]:
        """(name, label, PNG bytes, output size, source size)."""
        try:
            img = _to_channels(_decode(item), self.channels)
            source_size = img.size
            img = transform_image(img, self.transform, self.resolution)
        except DatasetError as err:
            raise DatasetError(f'{item.name}: {err}') from None
        buf = io.BytesIO()
        img.save(buf, format='PNG', compress_level=self.compress_level)
        return item.name, item.label, buf.getvalue(), img.size, source_size


def _crop_side(size: tuple[int, int], transform: str) -> int:
    """The source pixels across the box that ``transform`` scales to the output width (less: it is upscaled)."""
    w, h = size
    return min(w, h) if transform == 'center-crop' else min(w, 2 * h) // 2 * 2 if transform == 'center-crop-wide' \
        else w


@dataclass
class _Upscaled:
    """Images that --resolution enlarged: how many, and the smallest source (name, size)."""

    count: int = 0
    smallest: Optional[tuple[str, tuple[int, int]]] = None

    def add(self, name: str, size: tuple[int, int], transform: str, resolution: Optional[int]) -> None:
        if resolution is not None and _crop_side(size, transform) < resolution:
            self.count += 1
            if self.smallest is None or min(size) < min(self.smallest[1]):
                self.smallest = (name, size)

    def warn(self, total: int, resolution: Optional[int]) -> None:
        if self.count:
            name, (w, h) = self.smallest
            log.warning('%d of %d images were smaller than %dx%d and were upscaled (the smallest, %s, is %dx%d): '
                        'upscaled images are blurry; pass a smaller --resolution, or leave such images out',
                        self.count, total, resolution, resolution, name, w, h)


def transform_image(img: PIL.Image.Image, transform: str, resolution: Optional[int]) -> PIL.Image.Image:
    """Crop ``img`` to a square as ``transform`` says, then resize it (LANCZOS) to ``resolution`` if given.

    ``center-crop`` keeps the largest centred square; ``center-crop-wide`` keeps the largest centred 2:1 box and
    letterboxes it with black bars into a square (for wide scenes such as cars); ``none`` keeps the image, which
    must then be square.
    """
    w, h = img.size
    if transform == 'center-crop':
        s = min(w, h)
        img = img.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s))
        return _resize(img, resolution or s, resolution or s)
    if transform == 'center-crop-wide':
        cw = min(w, 2 * h) // 2 * 2
        ch = cw // 2
        band = img.crop(((w - cw) // 2, (h - ch) // 2, (w - cw) // 2 + cw, (h - ch) // 2 + ch))
        side = resolution or cw
        band = _resize(band, side, side // 2)
        canvas = PIL.Image.new(img.mode, (side, side))
        canvas.paste(band, (0, (side - side // 2) // 2))
        return canvas
    if transform == 'none':
        if w != h:
            raise DatasetError(f'is {w}x{h}, not square; --transform none does not crop: use --transform center-crop')
        return _resize(img, resolution or w, resolution or h)
    raise DatasetError(f'unknown --transform {transform!r}; known: {", ".join(TRANSFORMS)}')


def convert_dataset(cfg: ConvertConfig, progress: bool = True) -> ConvertResult:
    """Convert ``cfg.source`` to a StyleGAN-format dataset at ``cfg.dest``; raises DatasetError on bad input."""
    _validate(cfg)
    check_dest(cfg.dest, cfg.force)  # fail before the (possibly long) read of the source
    source = open_source(cfg.source, kind='imagenet' if cfg.imagenet else None,
                         labels_from_folders=cfg.labels_from_folders, resolution=cfg.resolution)
    num = source.num_items if cfg.max_images is None else min(cfg.max_images, source.num_items)
    encoder = _Encoder(cfg.transform, cfg.resolution, cfg.channels or source.channels, cfg.compress_level)
    labels: list[list] = []
    first: Optional[tuple[str, tuple[int, int]]] = None
    upscaled = _Upscaled()
    with DatasetWriter(cfg.dest, force=cfg.force) as writer, _mapper(cfg.workers) as imap:
        results = imap(encoder, itertools.islice(source.items(), num))
        for idx, (name, label, png, size, source_size) in enumerate(tqdm(
                results, total=num, unit='img', disable=not progress, desc=f'{source.kind} -> {writer.dest.name}')):
            first = first or _check_first(name, size, cfg)
            upscaled.add(name, source_size, cfg.transform, cfg.resolution)
            if size != first[1]:
                raise DatasetError(f'{name} is {size[0]}x{size[1]} after --transform {cfg.transform} but '
                                   f'{first[0]} is {first[1][0]}x{first[1][1]}; pass --resolution R so all match')
            arcname = f'{idx // 1000:05d}/img{idx:08d}.png'
            writer.add(arcname, png)
            labels.append([arcname, label])
        writer.add('dataset.json', _metadata(source, labels).encode('utf-8'))
    upscaled.warn(len(labels), cfg.resolution)
    num_classes = class_count([lab for _, lab in labels], f'labels of {source.path}') if source.has_labels else 0
    return ConvertResult(writer.dest, source.kind, len(labels), first[1][0], encoder.channels, num_classes)


def make_digits_dataset(dest: Union[str, os.PathLike], resolution: int = 16, *, force: bool = False,
                        progress: bool = False) -> Path:
    """Write the digits (1,797 RGB images, 10 classes) as a labelled StyleGAN-format zip or folder at ``dest``."""
    result = convert_dataset(ConvertConfig(source='builtin:digits', dest=str(dest), resolution=resolution,
                                           force=force), progress=progress)
    return result.dest


def _validate(cfg: ConvertConfig) -> None:
    r = cfg.resolution
    if r is not None and (r < 2 or r & (r - 1)):
        raise DatasetError(f'--resolution must be a power of two such as 64 or 256 (got {r})')
    if cfg.transform not in TRANSFORMS:
        raise DatasetError(f'unknown --transform {cfg.transform!r}; known: {", ".join(TRANSFORMS)}')
    if cfg.channels not in (None, 1, 3):
        raise DatasetError(f'--channels must be 1 or 3 (got {cfg.channels})')
    if cfg.max_images is not None and cfg.max_images < 1:
        raise DatasetError(f'--max-images must be at least 1 (got {cfg.max_images})')
    if not 0 <= cfg.compress_level <= 9 or cfg.workers < 1:
        raise DatasetError(f'--compress-level must be 0-9 and --workers >= 1 (got {cfg.compress_level}, '
                           f'{cfg.workers})')


def _check_first(name: str, size: tuple[int, int], cfg: ConvertConfig) -> tuple[str, tuple[int, int]]:
    """The first output image sets the size of all: it must be square with a power-of-two side."""
    w, h = size
    if w != h or w < 2 or w & (w - 1):
        side = 1 << (min(w, h).bit_length() - 1)
        raise DatasetError(f'{name} is {w}x{h} after --transform {cfg.transform}; the output must be square with a '
                           f'power-of-two side: pass --resolution {side}')
    return name, size


def _metadata(source: Source, labels: list[list]) -> str:
    """dataset.json: ``{"labels": [[name, class], ...] or null}``, plus ``class_names`` when the source has them."""
    meta: dict = {'labels': labels if source.has_labels else None}
    if source.has_labels and source.class_names:
        meta['class_names'] = list(source.class_names)
    return json.dumps(meta)


def _decode(item: SourceItem) -> PIL.Image.Image:
    if isinstance(item.data, np.ndarray):
        return PIL.Image.fromarray(item.data)
    try:
        img = PIL.Image.open(io.BytesIO(item.data) if isinstance(item.data, bytes) else item.data)
        img.load()
    except DECODE_ERRORS as err:
        raise DatasetError(f'cannot decode ({type(err).__name__}: {err}); delete or replace the file') from err
    return img


def _to_channels(img: PIL.Image.Image, channels: int) -> PIL.Image.Image:
    """Grey ('L') or RGB; transparent images are composited on white first."""
    if img.mode in ('RGBA', 'LA', 'PA', 'RGBa', 'La') or (img.mode == 'P' and 'transparency' in img.info):
        rgba = img.convert('RGBA')
        img = PIL.Image.alpha_composite(PIL.Image.new('RGBA', img.size, (255, 255, 255, 255)), rgba)
    mode = 'L' if channels == 1 else 'RGB'
    return img if img.mode == mode else img.convert(mode)


def _resize(img: PIL.Image.Image, width: int, height: int) -> PIL.Image.Image:
    return img if img.size == (width, height) else img.resize((width, height), PIL.Image.LANCZOS)


@contextlib.contextmanager
def _mapper(workers: int) -> Iterator[Callable]:
    """An ordered ``map`` over ``workers`` processes (this process alone when 1)."""
    if workers <= 1:
        yield map
        return
    with multiprocessing.Pool(workers, initializer=_default_signals) as pool:
        yield lambda fn, items: pool.imap(fn, items, chunksize=16)


def _default_signals() -> None:
    """Pool workers take SIGTERM's default action: a handler inherited from the parent (forked) could make a worker
    exit with the queue's lock held when the pool terminates it, and the pool then waits for its siblings forever."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
