"""Inputs of ``dataset_tool.py``: image folders and zips, ImageNet ``train/`` trees, CIFAR-10's python tarball,
MNIST idx files and the built-in digits. Each opens as a :class:`Source` that lists its images lazily.
"""

from __future__ import annotations

import gzip
import importlib
import json
import logging
import pickle
import re
import struct
import tarfile
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Optional

import numpy as np

from .builtin import digits_source
from .items import Source, SourceItem
from .stacked import stacked_digits_source
from .storage import DatasetError, Storage, damaged_zip_message, is_image_name, read_label_table

__all__ = ['SOURCE_KINDS', 'Source', 'SourceItem', 'detect_source_kind', 'open_source']

log = logging.getLogger(__name__)

SOURCE_KINDS = ('folder', 'zip', 'imagenet', 'cifar10', 'mnist', 'builtin')
_BUILTIN_SOURCES = {'digits': digits_source, 'stacked-digits': stacked_digits_source}  # name -> f(resolution)
BUILTINS = tuple(_BUILTIN_SOURCES)
_SYNSET = re.compile(r'n\d{8}')
_MNIST = {'train-images-idx3-ubyte': (0x0803, 3), 'train-labels-idx1-ubyte': (0x0801, 1)}  # magic, dims
_KINDS_HELP = ('an image folder or .zip, an ImageNet train/ folder, cifar-10-python.tar.gz, a folder with MNIST '
               'train-images-idx3-ubyte[.gz] and train-labels-idx1-ubyte[.gz], or builtin:' + '|'.join(BUILTINS))


def detect_source_kind(source: str) -> str:
    """Which reader fits ``source`` (one of ``SOURCE_KINDS``), from its name and a look at its contents."""
    if source.startswith('builtin:'):
        return 'builtin'
    path = Path(source).expanduser()
    if not path.exists():
        raise DatasetError(f'--source {source} does not exist; expected {_KINDS_HELP}')
    if path.is_dir():
        if _mnist_files(path):
            return 'mnist'
        return 'imagenet' if _synset_dirs(path) else 'folder'
    if zipfile.is_zipfile(path):
        return 'zip'
    if path.name.lower().endswith(('.tar.gz', '.tgz', '.tar')) or tarfile.is_tarfile(path):
        return 'cifar10'
    raise DatasetError(damaged_zip_message(path) or f'unknown source kind: {path}; expected {_KINDS_HELP}')


def open_source(source: str, kind: Optional[str] = None, labels_from_folders: bool = False,
                resolution: Optional[int] = None) -> Source:
    """Open ``source`` with the reader for ``kind`` (detected when None). ``resolution`` sizes the built-ins."""
    kind = kind or detect_source_kind(source)
    if kind not in SOURCE_KINDS:
        raise DatasetError(f'unknown source kind {kind!r}; known: {", ".join(SOURCE_KINDS)}')
    if kind == 'builtin':
        name = source.split(':', 1)[1] if source.startswith('builtin:') else source
        if name not in BUILTINS:
            raise DatasetError(f'unknown built-in dataset {source!r}; known: ' +
                               ', '.join(f'builtin:{b}' for b in BUILTINS))
        return _BUILTIN_SOURCES[name](resolution or 16)
    path = Path(source).expanduser()
    if not path.exists():
        raise DatasetError(f'--source {source} does not exist; expected {_KINDS_HELP}')
    if kind == 'cifar10':
        return _cifar10_source(path)
    if kind == 'mnist':
        return _mnist_source(path)
    return _folder_source(path, kind, labels_from_folders or kind == 'imagenet')


# -- image folders, zips, ImageNet --------------------------------------------------------------------------------
def _synset_dirs(path: Path) -> list[str]:
    """Sorted sub-folder names when all of them look like ImageNet synsets (n01440764), else []."""
    dirs = sorted(p.name for p in path.iterdir() if p.is_dir())
    return dirs if dirs and all(_SYNSET.fullmatch(d) for d in dirs) else []


def _folder_source(path: Path, kind: str, labels_from_folders: bool) -> Source:
    """Images found recursively in a folder or zip, sorted by relative path, labelled from folders or dataset.json."""
    storage = Storage(path)
    names = [n for n in storage.names() if is_image_name(n)]
    if kind == 'imagenet':
        names = [n for n in names if '/' in n and _SYNSET.fullmatch(n.split('/', 1)[0])]
        if not names:
            raise DatasetError(f'no images in synset folders (n01440764/...) under {path}; point --source at '
                               f"ImageNet's train/ folder")
    if not names:
        raise DatasetError(f'no images (.png, .jpg, .jpeg, .bmp, .webp) found in {path} (searched recursively)')
    class_names = None
    if labels_from_folders:
        if kind != 'imagenet' and storage.exists('dataset.json'):
            raise DatasetError(f'--labels-from-folders conflicts with {storage.describe("dataset.json")}; '
                               f'drop the flag to use that file, or move the file away')
        labels, class_names = _labels_from_folders(storage, names)
    else:
        labels = _labels_from_json(storage, names)
        class_names = _class_names_from_json(storage) if labels is not None else None

    def items() -> Iterator[SourceItem]:
        for i, name in enumerate(names):
            data = storage.read(name) if storage.is_zip else storage.path / name
            yield SourceItem(storage.describe(name), data, None if labels is None else labels[i])

    return Source(kind, str(path), len(names), items, labels is not None, class_names)


def _labels_from_folders(storage: Storage, names: list[str]) -> tuple[list[int], tuple[str, ...]]:
    """Class id of each image from its top-level sub-folder; sorted folder names map to 0..K-1."""
    loose = [n for n in names if '/' not in n]
    if loose:
        raise DatasetError(f'{storage.describe(loose[0])} is not inside a class sub-folder ({len(loose)} such '
                           f'images); --labels-from-folders needs every image under SRC/<class>/')
    tops = [n.split('/', 1)[0] for n in names]
    class_names = tuple(sorted(set(tops)))
    ids = {c: i for i, c in enumerate(class_names)}
    return [ids[t] for t in tops], class_names


def _labels_from_json(storage: Storage, names: list[str]) -> Optional[list[int]]:
    """Class ids from the source's own dataset.json (keys are paths relative to the source root), if any."""
    table = read_label_table(storage)
    if table is None:
        return None
    missing = [n for n in names if n not in table]
    if missing:
        raise DatasetError(f'{storage.describe("dataset.json")} has no label for {missing[0]!r} ({len(missing)} '
                           f'images unlabelled); label every image, or delete dataset.json for an unlabelled dataset')
    if len(table) > len(names):
        log.warning('%s: %d labels name no image in the source; ignored', storage.describe('dataset.json'),
                    len(table) - len(names))
    return [table[n] for n in names]


def _class_names_from_json(storage: Storage) -> Optional[tuple[str, ...]]:
    """The ``class_names`` list that dataset_tool.py stores in dataset.json, so re-conversions keep it."""
    names = json.loads(storage.read('dataset.json')).get('class_names')  # valid JSON: read_label_table parsed it
    return tuple(names) if isinstance(names, list) and all(isinstance(n, str) for n in names) else None


# -- CIFAR-10 -----------------------------------------------------------------------------------------------------
class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles plain containers and numpy arrays only, so reading a tarball never runs code from it."""

    _ALLOWED = {('numpy', 'ndarray'), ('numpy', 'dtype'), ('numpy.core.multiarray', '_reconstruct'),
                ('numpy._core.multiarray', '_reconstruct'), ('numpy.core.multiarray', 'scalar'),
                ('numpy._core.multiarray', 'scalar'), ('numpy.core.numeric', '_frombuffer'),
                ('numpy._core.numeric', '_frombuffer'), ('_codecs', 'encode')}  # bytes in protocol-2 pickles

    def find_class(self, module: str, name: str):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f'refusing to load {module}.{name}: not a numpy array')
        for candidate in (module.replace('numpy.core', 'numpy._core'), module):  # numpy 2 renamed numpy.core
            try:
                return getattr(importlib.import_module(candidate), name)
            except (ImportError, AttributeError):
                continue
        raise pickle.UnpicklingError(f'cannot import {module}.{name}')


def _unpickle(tar: tarfile.TarFile, member: tarfile.TarInfo, path: Path) -> dict:
    try:
        with tar.extractfile(member) as f:
            obj = _ArrayUnpickler(f, encoding='bytes').load()
    except (pickle.UnpicklingError, EOFError, OSError, ValueError, TypeError) as err:
        raise DatasetError(f'cannot read {path}:{member.name} ({err}); re-download cifar-10-python.tar.gz') from err
    if not isinstance(obj, dict):
        raise DatasetError(f'{path}:{member.name} holds a {type(obj).__name__}, not a CIFAR-10 batch dict')
    return obj


def _cifar10_source(path: Path) -> Source:
    """The 50,000 training images of CIFAR-10's python tarball (data_batch_1..5), 32x32 RGB, labels 0..9."""
    try:
        with tarfile.open(path, 'r:*') as tar:
            members = {Path(m.name).name: m for m in tar.getmembers() if m.isfile()}
            wanted = [f'data_batch_{i}' for i in range(1, 6)]
            if missing := [w for w in wanted if w not in members]:
                raise DatasetError(f'{path} has no {missing[0]}; expected CIFAR-10\'s python tarball '
                                   f'(cifar-10-python.tar.gz with cifar-10-batches-py/data_batch_1..5)')
            batches = [_unpickle(tar, members[w], path) for w in wanted]
            meta = _unpickle(tar, members['batches.meta'], path) if 'batches.meta' in members else {}
    except (tarfile.TarError, EOFError, OSError) as err:
        raise DatasetError(f'cannot read tar archive {path} ({err}); expected cifar-10-python.tar.gz') from err
    try:
        data = np.concatenate([np.asarray(b[b'data'], dtype=np.uint8) for b in batches])
        labels = np.concatenate([np.asarray(b[b'labels'], dtype=np.int64) for b in batches])
        images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)  # [N, H, W, C]
    except (KeyError, ValueError) as err:
        raise DatasetError(f'{path}: data_batch_* lack b"data" [N, 3072] uint8 or b"labels" ({err})') from err
    if len(labels) != len(images) or labels.min() < 0:
        raise DatasetError(f'{path}: {len(images)} images but {len(labels)} labels (or negative labels)')
    class_names = tuple(n.decode() for n in meta.get(b'label_names', [])) or None

    def items() -> Iterator[SourceItem]:
        for i in range(len(images)):
            yield SourceItem(f'{path}[{i}]', images[i], int(labels[i]))

    return Source('cifar10', str(path), len(images), items, True, class_names)


# -- MNIST --------------------------------------------------------------------------------------------------------
def _mnist_files(path: Path) -> Optional[dict[str, Path]]:
    """The training idx files of an MNIST folder, plain or gzipped, or None if either is missing."""
    found = {}
    for base in _MNIST:
        hits = [path / name for name in (base, base + '.gz') if (path / name).is_file()]
        if not hits:
            return None
        found[base] = hits[0]
    return found


def _read_idx(file: Path, magic: int, ndim: int) -> np.ndarray:
    """An idx file (big-endian magic 0x08 0x0D for uint8 with D dimensions, then D int32 sizes, then the data)."""
    try:
        with (gzip.open(file, 'rb') if file.suffix == '.gz' else open(file, 'rb')) as f:
            raw = f.read()
    except (OSError, EOFError) as err:
        raise DatasetError(f'cannot read {file} ({err}); re-download it') from err
    head = 4 + 4 * ndim
    if len(raw) < head or struct.unpack('>I', raw[:4])[0] != magic:
        found = raw[:4].hex() if len(raw) >= 4 else 'nothing'
        raise DatasetError(f'{file} is not an MNIST idx file: magic {found}, expected {magic:08x}; re-download it')
    dims = struct.unpack(f'>{ndim}I', raw[4:head])
    if len(raw) - head != int(np.prod(dims)):
        raise DatasetError(f'{file}: header says {dims} but holds {len(raw) - head} bytes; the file is truncated')
    return np.frombuffer(raw, dtype=np.uint8, offset=head).reshape(dims)


def _mnist_source(path: Path) -> Source:
    """MNIST's 60,000 training digits, grey, zero-padded from 28x28 to the next power of two (32x32)."""
    files = _mnist_files(path)
    if files is None:
        raise DatasetError(f'{path} lacks MNIST train-images-idx3-ubyte[.gz] or train-labels-idx1-ubyte[.gz]')
    images = _read_idx(files['train-images-idx3-ubyte'], *_MNIST['train-images-idx3-ubyte'])
    labels = _read_idx(files['train-labels-idx1-ubyte'], *_MNIST['train-labels-idx1-ubyte'])
    if len(images) != len(labels):
        raise DatasetError(f'{path}: {len(images)} MNIST images but {len(labels)} labels')
    h, w = images.shape[1:]
    side = 1 << (max(h, w) - 1).bit_length()
    pad = ((0, 0), ((side - h) // 2, side - h - (side - h) // 2), ((side - w) // 2, side - w - (side - w) // 2))
    images = np.pad(images, pad)  # [N, side, side]; zero (black) border like the digits' background

    def items() -> Iterator[SourceItem]:
        for i in range(len(images)):
            yield SourceItem(f'{files["train-images-idx3-ubyte"]}[{i}]', images[i], int(labels[i]))

    names = tuple(str(d) for d in range(int(labels.max()) + 1)) if len(labels) else None
    return Source('mnist', str(path), len(images), items, True, names, channels=1)
