"""Read-only access to the files of a dataset stored as a zip archive or a folder.

The zip handle is opened lazily and belongs to one process: it is dropped when pickled and reopened after a fork,
so ``DataLoader(num_workers=k)`` workers each read the archive through their own handle.
"""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path
from typing import IO, Optional, Union

__all__ = ['IMAGE_EXTENSIONS', 'DatasetError', 'Storage', 'is_image_name', 'read_label_table']

IMAGE_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.bmp', '.webp')
CONVERT_HINT = 'build one with: python dataset_tool.py --source SRC --dest DEST.zip (see --help)'


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
            raise DatasetError(f'{self.path} is neither a folder nor a zip archive; {CONVERT_HINT}')
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


def read_label_table(storage: Storage) -> Optional[dict[str, int]]:
    """``{name: class_id}`` from the storage's ``dataset.json``; None when the file is absent or has null labels."""
    if not storage.exists('dataset.json'):
        return None
    meta_file = storage.describe('dataset.json')
    try:
        meta = json.loads(storage.read('dataset.json'))
    except ValueError as err:  # JSONDecodeError and UnicodeDecodeError both derive from it
        raise DatasetError(f'{meta_file} is not valid JSON ({err}); fix it or delete it') from err
    if not isinstance(meta, dict) or meta.get('labels') is None:
        return None
    table: dict[str, int] = {}
    for entry in meta['labels']:
        ok = isinstance(entry, (list, tuple)) and len(entry) == 2 and isinstance(entry[0], str)
        if not ok or not isinstance(entry[1], int) or isinstance(entry[1], bool) or entry[1] < 0:
            raise DatasetError(f'{meta_file}: bad label entry {entry!r}; expected ["path/in/dataset.png", class_id] '
                               f'with an integer class id >= 0')
        table[entry[0].replace('\\', '/')] = entry[1]
    return table
