"""Writing a snapshot's files so that a full disk stops the run cleanly and loses nothing.

Each file of a snapshot (sample grid, network snapshot, training state) is written in turn; when one fails for lack
of space (ENOSPC, EDQUOT, or safetensors' wrapped "os error 28") the run stops with a :class:`DiskFullError` naming
that file, the free space left and the last complete checkpoint, which is untouched. Whatever the failed write left
under its own new name (a half-written PNG, a tensor file whose sidecar could not follow) is removed, and the atomic
writer has already removed its temp file, so a later ``--resume latest`` can only pick up complete checkpoints.
"""

from __future__ import annotations

import errno
import logging
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Callable, Optional

from .errors import DiskFullError

__all__ = ['is_disk_full', 'write_files']

log = logging.getLogger(__name__)

_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
_FULL_TEXT = ('No space left on device', 'os error 28', 'Disk quota exceeded', 'os error 122')


def is_disk_full(e: BaseException) -> bool:
    """Whether ``e`` (an OSError, or a library error wrapping one in its message) says the disk or quota is full."""
    if isinstance(e, OSError) and e.errno in _FULL_ERRNOS:
        return True
    return any(text in str(e) for text in _FULL_TEXT)


def _free_space(directory: Path) -> str:
    try:
        free = shutil.disk_usage(directory).free
    except OSError as e:
        return f'unknown free space ({e})'
    for unit, size in (('GB', 1 << 30), ('MB', 1 << 20), ('kB', 1 << 10)):
        if free >= size:
            return f'{free / size:.1f} {unit} free'
    return f'{free} bytes free'


def _discard(target: Path) -> None:
    """Remove what a failed write left under its new name: ``target`` and, for a tensor file, its sidecar."""
    for f in (target, target.with_suffix('.json')) if target.suffix == '.safetensors' else (target,):
        f.unlink(missing_ok=True)


def write_files(writes: Sequence[tuple[Path, Callable[[], object]]], last: Optional[Path]) -> None:
    """Run each ``write()`` of ``(target, write)`` in order; a full disk raises :class:`DiskFullError` naming
    ``target``, the free space on its file system and ``last`` (the newest complete checkpoint), after removing what
    that write left of a ``target`` that did not exist before."""
    for target, write in writes:
        existed = target.exists()
        try:
            write()
        except Exception as e:
            if not is_disk_full(e):
                raise
            if not existed:
                _discard(target)
            kept = f'the last complete checkpoint, {last}, is intact' if last else 'no checkpoint was written yet'
            raise DiskFullError(f'no space left on device while writing {target} ({_free_space(target.parent)} '
                                f'there); {kept} and no partial file was kept. Free some space (or keep fewer '
                                'states with --keep-states) and continue with --resume latest') from e
