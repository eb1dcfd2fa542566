"""Atomic output of ``dataset_tool.py``: files go to a temp zip or folder beside the destination, which replaces the
destination only once everything is written, so a failed or interrupted conversion leaves no half-written dataset.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import Optional, Union

from .storage import DatasetError

__all__ = ['DatasetWriter', 'check_dest']

_OWN_ENTRY = re.compile(r'\d{5}|dataset\.json')  # what a folder written by us holds at its top level


def check_dest(dest: Union[str, os.PathLike], force: bool = False) -> Path:
    """Validate ``dest`` (a ``.zip`` file or a folder) before any work: refuse to overwrite it without ``force``."""
    dest = Path(dest).expanduser()
    is_zip = dest.suffix.lower() == '.zip'
    if is_zip and dest.is_dir():
        raise DatasetError(f'--dest {dest} is a folder but ends in .zip; choose another --dest')
    if not is_zip and dest.exists() and not dest.is_dir():
        raise DatasetError(f'--dest {dest} is a file; name a .zip file or a folder as --dest')
    exists = dest.is_file() or (dest.is_dir() and any(dest.iterdir()))
    if exists and not force:
        raise DatasetError(f'--dest {dest} already exists; pass --force to overwrite it, or choose another --dest')
    if exists and not is_zip:
        stray = sorted(p.name for p in dest.iterdir() if not _OWN_ENTRY.fullmatch(p.name))
        if stray:
            raise DatasetError(f'--dest {dest} holds {stray[0]!r}, which dataset_tool.py does not write; refusing to '
                               f'delete that folder even with --force: choose a new or empty folder')
    return dest


class DatasetWriter:
    """Context manager collecting named files; on a clean exit they replace ``dest``, on an error they vanish."""

    def __init__(self, dest: Union[str, os.PathLike], force: bool = False) -> None:
        self.dest = check_dest(dest, force)
        self.is_zip = self.dest.suffix.lower() == '.zip'
        self._tmp: Optional[Path] = None
        self._zip: Optional[zipfile.ZipFile] = None

    def __enter__(self) -> DatasetWriter:
        parent = self.dest.parent
        parent.mkdir(parents=True, exist_ok=True)
        prefix = f'.{self.dest.name}.'
        if self.is_zip:
            fd, tmp = tempfile.mkstemp(prefix=prefix, suffix='.tmp', dir=parent)
            os.close(fd)
            self._tmp = Path(tmp)
            self._zip = zipfile.ZipFile(self._tmp, 'w', compression=zipfile.ZIP_STORED)  # PNGs are compressed already
        else:
            self._tmp = Path(tempfile.mkdtemp(prefix=prefix, suffix='.tmp', dir=parent))
        return self

    def add(self, name: str, data: bytes) -> None:
        """Write ``data`` as ``name`` ('/'-separated, relative)."""
        if self._zip is not None:
            self._zip.writestr(name, data)
        else:
            path = self._tmp / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self._discard()
            return
        try:
            self._commit()
        except BaseException:
            self._discard()
            raise

    def _commit(self) -> None:
        if self._zip is not None:
            self._zip.close()
            self._zip = None
            with open(self._tmp, 'rb+') as f:
                os.fsync(f.fileno())
            os.replace(self._tmp, self.dest)
            return
        trash = None
        if self.dest.is_dir():  # empty, or ours and --force was given (check_dest)
            trash = Path(tempfile.mkdtemp(prefix=f'.{self.dest.name}.', suffix='.old', dir=self.dest.parent))
            os.replace(self.dest, trash / 'old')
        try:
            os.replace(self._tmp, self.dest)
        except OSError:
            if trash is not None:
                os.replace(trash / 'old', self.dest)  # put the old dataset back
            raise
        if trash is not None:
            shutil.rmtree(trash, ignore_errors=True)

    def _discard(self) -> None:
        if self._zip is not None:
            self._zip.close()
            self._zip = None
        if self._tmp is not None and self._tmp.is_dir():
            shutil.rmtree(self._tmp, ignore_errors=True)
        elif self._tmp is not None:
            self._tmp.unlink(missing_ok=True)
