"""On-disk cache of reference-set accumulators (FID statistics, KID reservoirs, feature banks).

A cache entry is reused only when its key matches exactly: a hash of the dataset's content (zip: every member's
name, CRC-32 and size; folder: every file's relative name and size plus the bytes of ``dataset.json``), the
extractor's name and version (which includes the weights' hash), the image resolution, ``max_size`` and what was
accumulated. The dataset's path is not part of the key, so a moved or copied zip keeps its cache. A folder whose
image was edited in place without changing its size is not detected: delete the cache (or pass ``--no-cache``).

Folder: ``$SAN_EXT_CACHE/metrics`` or ``~/.cache/san_ext/metrics``. Files are ``<dataset>-<what>-<hash>.npz``
with a ``.json`` beside them showing the key; they are written atomically by one process (rank 0).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import zipfile
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np

from san_ext.files import write_atomic

__all__ = ['CACHE_VERSION', 'cache_dir', 'cache_path', 'dataset_fingerprint', 'load_entry', 'save_entry']

log = logging.getLogger(__name__)

CACHE_VERSION = 1
PathLike = Union[str, os.PathLike]


def cache_dir(override: Optional[PathLike] = None) -> Path:
    """``override``, else ``$SAN_EXT_CACHE/metrics``, else ``~/.cache/san_ext/metrics``."""
    if override is not None:
        return Path(override).expanduser()
    root = os.environ.get('SAN_EXT_CACHE')
    return (Path(root).expanduser() if root else Path.home() / '.cache' / 'san_ext') / 'metrics'


def dataset_fingerprint(path: PathLike) -> str:
    """SHA-256 of a dataset's content listing (zip: names, CRCs, sizes; folder: names, sizes, dataset.json)."""
    path = Path(path).expanduser()
    h = hashlib.sha256()
    if path.is_file():
        with zipfile.ZipFile(path) as zf:
            for info in sorted(zf.infolist(), key=lambda i: i.filename):
                if not info.is_dir():
                    h.update(f'{info.filename}\0{info.CRC:08x}\0{info.file_size}\n'.encode())
        return h.hexdigest()
    for root, dirs, files in os.walk(path, followlinks=True):
        dirs.sort()
        for name in sorted(files):
            file = Path(root) / name
            rel = file.relative_to(path).as_posix()
            h.update(f'{rel}\0{file.stat().st_size}\n'.encode())
            if rel == 'dataset.json':
                h.update(file.read_bytes())
    return h.hexdigest()


def _key_hash(key: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()


def cache_path(key: dict[str, Any], stem: str, what: str, folder: Optional[PathLike] = None) -> Path:
    """File of the entry for ``key``: ``<folder>/<stem>-<what>-<16 hex digits of the key's hash>.npz``."""
    return cache_dir(folder) / f'{stem}-{what}-{_key_hash(key)[:16]}.npz'


def load_entry(path: Path, key: dict[str, Any]) -> Optional[dict[str, np.ndarray]]:
    """The arrays stored at ``path`` if it exists and was written for exactly ``key``; else None."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = dict(f)
    except (OSError, ValueError, zipfile.BadZipFile) as err:
        log.warning('ignoring unreadable cache file %s (%s)', path, err)
        return None
    stored = str(arrays.pop('__key__', ''))
    if stored != json.dumps(key, sort_keys=True):
        log.warning('ignoring cache file %s: written for another key', path)
        return None
    return arrays


def save_entry(path: Path, key: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
    """Write ``arrays`` and the key atomically (temp file, fsync, rename), plus a readable ``.json`` of the key."""
    path.parent.mkdir(parents=True, exist_ok=True)

    def write(tmp: Path) -> None:
        with open(tmp, 'wb') as f:  # a file object: np.savez would append .npz to a path
            np.savez(f, __key__=np.array(json.dumps(key, sort_keys=True)), **arrays)

    write_atomic(path, write)
    path.with_suffix('.json').write_text(json.dumps(key, indent=2, sort_keys=True) + '\n', encoding='utf-8')
    log.info('cached reference %s', path)
