"""Read-only access to the files of a dataset stored as a zip archive or a folder.

The zip handle is opened lazily and belongs to one process: it is dropped when pickled and reopened after a fork,
so ``DataLoader(num_workers=k)`` workers each read the archive through their own handle.
"""

from __future__ import annotations

import json
import logging
import os
import zipfile
from collections.abc import Iterable
from pathlib import Path
from typing import IO, Optional, Union

__all__ = ['IMAGE_EXTENSIONS', 'MAX_CLASS_ID', 'DatasetError', 'Storage', 'class_count', 'damaged_zip_message',
           'is_image_name', 'read_label_table']

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.bmp', '.webp')
CONVERT_HINT = 'build one with: python dataset_tool.py --source SRC --dest DEST.zip (see --help)'
MAX_CLASS_ID = 2 ** 31 - 1  # class ids index one-hot labels and embedding rows; larger ones are mistakes
_ZIP_MAGIC = (b'PK\x03\x04', b'PK\x05\x06')  # a local file header; the end record of an empty archive


class DatasetError(ValueError):
    """A dataset or a conversion source cannot be used; the message names the file and the fix."""


def is_image_name(name: str) -> bool:
    """Whether a file name has one of the image extensions we read (case-insensitive)."""
    return name.lower().endswith(IMAGE_EXTENSIONS)


class Storage:
    """The files under a folder or inside a zip, addressed by '/'-separated relative names."""

    def __init__(self, path: Union[str, os.PathLike]) -> None:
        self.path = Path(path).expanduser()
        if not self.path.exists():
            raise DatasetError(f'dataset not found: {self.path}; {CONVERT_HINT}')
        self.is_zip = self.path.is_file()
        if self.is_zip and not zipfile.is_zipfile(self.path):
            damaged = damaged_zip_message(self.path)
            raise DatasetError(damaged or f'{self.path} is neither a folder nor a zip archive; {CONVERT_HINT}')
        self._zip: Optional[zipfile.ZipFile] = None
        self._zip_pid: Optional[int] = None

    def names(self) -> list[str]:
        """All file names, sorted, with '/' separators (zip directory entries and macOS metadata left out)."""
        if self.is_zip:
            names = [n for n in self._zipfile().namelist() if not n.endswith('/') and not n.startswith('__MACOSX/')]
        else:
            names = []
            for root, dirs, files in os.walk(self.path, followlinks=True):
                dirs.sort()
                rel = Path(root).relative_to(self.path)
                names += [(rel / f).as_posix() for f in files]
        return sorted(names)

    def exists(self, name: str) -> bool:
        """Whether ``name`` is a file in the storage."""
        if self.is_zip:
            try:
                self._zipfile().getinfo(name)
            except KeyError:
                return False
            return True
        return (self.path / name).is_file()

    def open(self, name: str) -> IO[bytes]:
        """A binary file object for ``name`` (seekable; use it in a ``with`` block)."""
        if self.is_zip:
            return self._zipfile().open(name, 'r')
        return open(self.path / name, 'rb')

    def read(self, name: str) -> bytes:
        """The bytes of ``name``."""
        with self.open(name) as f:
            return f.read()

    def describe(self, name: str) -> str:
        """How to name a member in an error message: ``archive.zip:member`` or the file's path."""
        return f'{self.path}:{name}' if self.is_zip else str(self.path / name)

    def close(self) -> None:
        """Close the zip handle of this process, if open."""
        if self._zip is not None and self._zip_pid == os.getpid():
            self._zip.close()
        self._zip, self._zip_pid = None, None

    def _zipfile(self) -> zipfile.ZipFile:
        # A handle inherited through fork shares its file offset with the parent: open a fresh one per process.
        if self._zip is None or self._zip_pid != os.getpid():
            try:
                self._zip = zipfile.ZipFile(self.path, 'r')
            except (zipfile.BadZipFile, OSError) as err:
                raise DatasetError(f'cannot open zip archive {self.path}: {err}; {CONVERT_HINT}') from err
            self._zip_pid = os.getpid()
        return self._zip

    def __getstate__(self) -> dict:
        return dict(self.__dict__, _zip=None, _zip_pid=None)

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # interpreter shutdown may have torn down zipfile already
            pass


def damaged_zip_message(path: Path) -> Optional[str]:
    """Why ``path`` (a file that ``zipfile`` cannot open) is a damaged zip, when it looks like one: it starts with a
    zip header or is named ``.zip``. Zip readers find members through the central directory at the end of the file,
    so a download cut short or a copy interrupted loses all of them. None for files that are no zip at all."""
    try:
        with open(path, 'rb') as f:
            head = f.read(4)
        size = path.stat().st_size
    except OSError:
        return None
    if not head.startswith(_ZIP_MAGIC) and path.suffix.lower() != '.zip':
        return None
    start = 'starts like a zip archive' if head.startswith(_ZIP_MAGIC) else 'is named .zip'
    return (f'{path} {start} but has no readable central directory (the table of contents at its end): the file is '
            f'truncated or corrupt ({size} bytes); download or copy it again, or rebuild it with dataset_tool.py')


def class_count(ids: Iterable[int], where: str) -> int:
    """The number of classes that integer ``ids`` imply, ``max + 1`` (StyleGAN's rule, which the reader's one-hot
    labels and a conditional network's embedding follow); 0 for none. Warns when most ids below the maximum are
    unused (a class id of 10**7 among ten classes makes 10**7-dimensional labels)."""
    distinct = set(ids)
    if not distinct:
        return 0
    count = max(distinct) + 1
    if count - len(distinct) > len(distinct):
        log.warning('%s: class ids go up to %d but only %d distinct classes are used, so labels are %d-dimensional '
                    'one-hot vectors (and a conditional G and D get %d class embeddings); renumber the classes '
                    '0..%d unless the gaps are intended', where, count - 1, len(distinct), count, count,
                    len(distinct) - 1)
    return count


def read_label_table(storage: Storage) -> Optional[dict[str, int]]:
    """``{name: class_id}`` from the storage's ``dataset.json``; None when the file is absent or has null labels.

    Names are zip paths: Windows separators (backslashes) become '/'. Class ids must be integers in
    0..``MAX_CLASS_ID`` (not bools, floats or strings); a name labelled twice with different ids is an error.
    """
    if not storage.exists('dataset.json'):
        return None
    meta_file = storage.describe('dataset.json')
    try:
        meta = json.loads(storage.read('dataset.json'))
    except ValueError as err:  # JSONDecodeError and UnicodeDecodeError both derive from it
        raise DatasetError(f'{meta_file} is not valid JSON ({err}); fix it or delete it') from err
    if not isinstance(meta, dict) or meta.get('labels') is None:
        return None
    if not isinstance(meta['labels'], list):
        raise DatasetError(f'{meta_file}: "labels" is a {type(meta["labels"]).__name__}; expected a list of '
                           '["path/in/dataset.png", class_id] pairs or null')
    table: dict[str, int] = {}
    for entry in meta['labels']:
        ok = isinstance(entry, list) and len(entry) == 2 and isinstance(entry[0], str)
        if not ok or not isinstance(entry[1], int) or isinstance(entry[1], bool) or not 0 <= entry[1] <= MAX_CLASS_ID:
            raise DatasetError(f'{meta_file}: bad label entry {json.dumps(entry)[:200]}; expected '
                               f'["path/in/dataset.png", class_id] with an integer class id in 0..{MAX_CLASS_ID}')
        name = entry[0].replace('\\', '/')
        if table.setdefault(name, entry[1]) != entry[1]:
            raise DatasetError(f'{meta_file} labels {name!r} twice, as class {table[name]} and as class {entry[1]} '
                               '(Windows separators count as "/"); keep one entry per image')
    return table
