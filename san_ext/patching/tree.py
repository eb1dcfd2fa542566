"""The checkout on disk: reading files safely and writing a set of changes all or nothing.

:func:`commit` stages every new file as a temp file beside its target (fsynced, with the original's mode), then
swaps them in with ``os.replace`` while keeping a hard-linked backup of each original. If any step fails, the
files already swapped are put back from their backups and the temp files removed, so the tree is either fully
changed or untouched; backups are deleted only once every file is in place. Works the same on a git checkout
and a plain copy: only the files named are touched.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import shutil
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Optional, Union

__all__ = ['LEFTOVER_TAG', 'TreeError', 'TreeWriteError', 'commit', 'find_leftovers', 'missing_markers', 'read_text',
           'sha256_bytes']

LEFTOVER_TAG = '.san-patch-'  # in the names of temp files and backups, so an interrupted run can be found


class TreeError(ValueError):
    """The tree cannot be read as a checkout (a path is a symlink, a directory, unreadable...)."""


class TreeWriteError(OSError):
    """Writing failed; ``rolled_back`` says whether the tree is back as it was (if not, ``backups`` lists
    ``original path -> backup file`` pairs to restore by hand)."""

    def __init__(self, message: str, rolled_back: bool, backups: Optional[dict[str, str]] = None):
        super().__init__(message)
        self.rolled_back, self.backups = rolled_back, backups or {}


def sha256_bytes(data: Optional[bytes]) -> Optional[str]:
    return None if data is None else hashlib.sha256(data).hexdigest()


def _target(root: Path, rel: str) -> Path:
    target = root / rel
    if any(p == '..' for p in Path(rel).parts) or Path(rel).is_absolute():
        raise TreeError(f'{rel}: path leaves the tree')
    parent = root
    for part in Path(rel).parts[:-1]:  # no symlinked directory may redirect a write outside the tree
        parent = parent / part
        if parent.is_symlink():
            raise TreeError(f'{rel}: {parent.relative_to(root)} is a symlink; san-patch does not follow symlinks')
    return target


def read_bytes(root: Path, rel: str) -> Optional[bytes]:
    """Content of ``root/rel``, ``None`` if absent; refuses symlinks and directories."""
    target = _target(root, rel)
    if target.is_symlink():
        raise TreeError(f'{rel} is a symlink; san-patch patches regular files only (replace the link by a copy)')
    if not target.exists():
        return None
    if not target.is_file():
        raise TreeError(f'{rel} exists but is not a regular file')
    return target.read_bytes()


def read_text(root: Path, rel: str) -> Optional[str]:
    from .diff import decode
    data = read_bytes(root, rel)
    return None if data is None else decode(data)


def missing_markers(root: Path, markers: tuple[str, ...]) -> list[str]:
    """Markers (``dir/`` for a directory, else a file) absent from ``root``."""
    missing = []
    for m in markers:
        p = root / m.rstrip('/')
        if not (p.is_dir() if m.endswith('/') else p.is_file()):
            missing.append(m)
    return missing


def find_leftovers(root: Path, paths: tuple[str, ...]) -> list[str]:
    """Temp files and backups an interrupted run may have left beside the given files."""
    found = set()
    for d in {(root / p).parent for p in paths} | {root}:
        if d.is_dir():
            found.update(str(f.relative_to(root)) for f in d.iterdir() if LEFTOVER_TAG in f.name)
    return sorted(found)


def _write_temp(target: Path, data: bytes, mode: Optional[int], token: str) -> Path:
    temp = target.with_name(f'.{target.name}{LEFTOVER_TAG}{token}.tmp')
    exists = target.exists()
    # New files get the patch's mode (or 0o666) less the umask, as git creates them.
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600 if exists else 0o666 if mode is None else mode)
    try:
        with os.fdopen(fd, 'wb') as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if exists:  # keep the original's permissions exactly
            os.chmod(temp, stat.S_IMODE(target.stat().st_mode))
    except BaseException:
        with contextlib.suppress(OSError):
            temp.unlink()
        raise
    return temp


def _backup(target: Path, token: str) -> Path:
    backup = target.with_name(f'.{target.name}{LEFTOVER_TAG}{token}.orig')
    try:
        os.link(target, backup)
    except OSError:  # no hard links on this file system: a copy does the same job
        shutil.copy2(target, backup)
    return backup


def _stage(root: Path, changes: Mapping[str, Optional[bytes]], modes: Mapping[str, int], token: str,
           made_dirs: list[Path]) -> dict[str, Optional[Path]]:
    temps: dict[str, Optional[Path]] = {}
    for rel, data in changes.items():
        target = _target(root, rel)
        if data is None:
            temps[rel] = None
            continue
        missing = [p for p in [target.parent, *target.parent.parents] if not p.exists()]
        for d in reversed(missing):
            d.mkdir()
            made_dirs.append(d)
        temps[rel] = _write_temp(target, data, modes.get(rel), token)
    return temps


def _rollback(root: Path, done: list[tuple[Path, Optional[Path]]]) -> dict[str, str]:
    """Undo swapped files (newest first); returns what could not be restored."""
    stuck = {}
    for target, backup in reversed(done):
        try:
            if backup is not None and target.exists() and os.path.samefile(backup, target):
                backup.unlink()  # the swap never happened (and rename() between two links of one file is a no-op)
            elif backup is not None:
                os.replace(backup, target)
            elif target.exists():
                target.unlink()
        except OSError:
            stuck[str(target.relative_to(root))] = str(backup)
    return stuck


def _remove_empty_dirs(root: Path, dirs: set[Path]) -> None:
    for d in sorted(dirs, key=lambda p: -len(p.parts)):
        while d != root and root in d.parents:
            try:
                d.rmdir()
            except OSError:
                break
            d = d.parent


def commit(root: Union[str, Path], changes: Mapping[str, Optional[bytes]],
           modes: Optional[Mapping[str, int]] = None) -> None:
    """Write ``changes`` (relative path -> new bytes, ``None`` = delete) under ``root``, all or nothing.

    ``modes`` gives the permission bits of new files (umask applied); existing files keep theirs. Directories
    emptied by deletions are removed, as ``git apply`` does. Raises :class:`TreeWriteError` on failure, after
    rolling back.
    """
    root = Path(root)
    token = secrets.token_hex(4)
    made_dirs: list[Path] = []
    temps: dict[str, Optional[Path]] = {}
    done: list[tuple[Path, Optional[Path]]] = []
    try:
        temps = _stage(root, changes, modes or {}, token, made_dirs)
        for rel, temp in temps.items():
            target = root / rel
            backup = _backup(target, token) if target.exists() else None
            done.append((target, backup))
            if temp is None:
                target.unlink()
            else:
                os.replace(temp, target)
    except (OSError, TreeError) as err:
        stuck = _rollback(root, done)
        for temp in temps.values():
            if temp is not None:
                with contextlib.suppress(OSError):
                    temp.unlink()
        _remove_empty_dirs(root, set(made_dirs))
        if stuck:
            raise TreeWriteError(f'writing failed ({err}) and these files could not be restored; copy each backup '
                                 f'over its file: ' + ', '.join(f'{k} <- {v}' for k, v in stuck.items()),
                                 rolled_back=False, backups=stuck) from err
        raise TreeWriteError(f'writing failed ({err}); every file was restored, the tree is unchanged',
                             rolled_back=True) from err
    for _, backup in done:
        if backup is not None:
            with contextlib.suppress(OSError):
                backup.unlink()
    _remove_empty_dirs(root, {(root / rel).parent for rel, data in changes.items() if data is None})
    _fsync_dirs({(root / rel).parent for rel in changes})


def _fsync_dirs(dirs: set[Path]) -> None:
    """Make the renames durable (best effort: not every platform can open a directory)."""
    for d in dirs:
        if d.is_dir():
            with contextlib.suppress(OSError):
                fd = os.open(d, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
