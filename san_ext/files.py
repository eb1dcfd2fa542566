"""Files for every room: a file's SHA-256, and atomic writes (temp file beside the target, fsync, ``os.replace``,
directory fsync) so a crash leaves the old file or the new one, never half of one.

Used by the checkpoints, the metrics' reference cache and the released-pickle reader. Imports only the standard
library.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Callable, Union

__all__ = ['file_sha256', 'fsync_dir', 'write_atomic', 'write_text_atomic']

PathLike = Union[str, os.PathLike]


def file_sha256(path: PathLike, chunk: int = 1 << 22) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, 'rb') as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def fsync_dir(directory: PathLike) -> None:
    """fsync a directory so renames in it survive a power cut (skipped where directories cannot be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # e.g. Windows cannot open directories
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: PathLike, write: Callable[[Path], None]) -> Path:
    """``write(tmp)`` into a hidden temp file beside ``path`` (``.NAME.tmp-PID``), fsync it, then rename it over
    ``path``; on any failure the temp file is removed and ``path`` is untouched. Returns ``path``."""
    path = Path(path)
    tmp = path.with_name(f'.{path.name}.tmp-{os.getpid()}')
    try:
        write(tmp)
        with open(tmp, 'rb+') as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def write_text_atomic(path: PathLike, text: str, encoding: str = 'utf-8') -> Path:
    """:func:`write_atomic` of a text file."""
    return write_atomic(path, lambda tmp: tmp.write_text(text, encoding=encoding))
