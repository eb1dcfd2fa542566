"""``.san-patch.json``: what san-patch applied to a checkout, so ``status`` and ``revert`` are exact.

It records the series name, the applied patch ids (series order) with the SHA-256 of each patch file, and for
every file the applied patches touch the SHA-256 before the series (``null`` = absent) and after the last write.
A file whose current hash differs from ``after`` was edited after applying; a full revert must give back
``before``. The file is written in the same all-or-nothing commit as the patched files.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

__all__ = ['STATE_FILE', 'FileRecord', 'StateError', 'TreeState', 'read_state']

STATE_FILE = '.san-patch.json'
_FORMAT = 1


class StateError(ValueError):
    """An unreadable or foreign state file."""


@dataclass(frozen=True)
class FileRecord:
    before: Optional[str]
    after: Optional[str]


@dataclass(frozen=True)
class TreeState:
    series: str
    applied: tuple[str, ...]
    patches: dict[str, str] = field(default_factory=dict)  # id -> sha256 of the patch file when applied
    files: dict[str, FileRecord] = field(default_factory=dict)

    def to_bytes(self) -> bytes:
        doc = {'format': _FORMAT, 'tool': 'san-patch (san-ext)', 'series': self.series,
               'applied': list(self.applied), 'patches': self.patches,
               'files': {p: {'before': r.before, 'after': r.after} for p, r in sorted(self.files.items())}}
        return (json.dumps(doc, indent=2) + '\n').encode('utf-8')


def read_state(root: Path) -> Optional[TreeState]:
    """The state of ``root``, ``None`` when san-patch has not written one."""
    path = root / STATE_FILE
    if not path.is_file():
        return None
    try:
        doc = json.loads(path.read_text(encoding='utf-8'))
        if doc.get('format') != _FORMAT:
            raise StateError(f'{path}: format {doc.get("format")!r}, this san-patch reads format {_FORMAT}; '
                             f'upgrade san-ext')
        files = {p: FileRecord(r['before'], r['after']) for p, r in doc['files'].items()}
        return TreeState(str(doc['series']), tuple(doc['applied']), dict(doc['patches']), files)
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        if isinstance(err, StateError):
            raise
        raise StateError(f'{path} is unreadable ({err}); delete it and san-patch will detect the applied patches '
                         f'from the file contents') from err
