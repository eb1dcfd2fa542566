"""Files for every room: a file's SHA-256, and atomic writes (temp file beside the target, fsync, ``os.replace``,
directory fsync) so a crash leaves the old file or the new one, never half of one.

Used by the checkpoints, the metrics' reference cache and the released-pickle reader; :func:`remove_stale_temps`
clears the temp files of writers that were killed. Imports only the standard library.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import Callable, Union

__all__ = ['file_sha256', 'fsync_dir', 'remove_stale_temps', 'write_atomic', 'write_text_atomic']

PathLike = Union[str, os.PathLike]
_TEMP = re.compile(r'^\..+\.tmp-(\d+)$')  # write_atomic's temp names: .NAME.tmp-PID


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
    tmp = path.with_name(f'.{path.name}.tmp-{os.getpid()}')  # the PID lets remove_stale_temps tell dead writers
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


def _alive(pid: int) -> bool:
    """Whether a process ``pid`` exists on this machine (one of another user counts as alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


def remove_stale_temps(directory: PathLike) -> list[Path]:
    """Delete the :func:`write_atomic` temp files in ``directory`` whose writer is gone (killed mid-write, e.g. a
    173 MB ``.training-state-*.tmp-PID``); returns them. Files of live PIDs are kept, so a concurrent writer on this
    machine is never disturbed (a reused PID only keeps a stale file a little longer)."""
    removed = []
    for f in Path(directory).iterdir():
        m = _TEMP.match(f.name)
        if m and int(m.group(1)) != os.getpid() and not _alive(int(m.group(1))) and f.is_file():
            f.unlink(missing_ok=True)
            removed.append(f)
    return removed
