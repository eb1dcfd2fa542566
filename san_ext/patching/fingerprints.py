"""``fingerprints.json``: SHA-256 of known upstream versions of the files a series touches, plus a few markers.

``san-patch check`` compares a tree with each recorded version and says which one it looks like
("stylegan_xl 4241ff9: 14/14 files identical") and which files differ. The file is generated from fetched
checkouts by ``san-patch fingerprint LABEL=DIR ...``; for every tree the whole series applies to, the patched
result is recorded too, so an already patched checkout is recognised. The patch files' hashes are stored so a
stale file (patches edited since) is noticed and its patched entries ignored.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from .apply import VirtualTree, apply_patch
from .diff import encode
from .series import Series, SeriesError
from .tree import read_bytes, read_text, sha256_bytes

__all__ = ['DEFAULT_MARKERS', 'FINGERPRINT_FILE', 'VersionMatch', 'build_fingerprints', 'load_fingerprints',
           'match_versions']

FINGERPRINT_FILE = 'fingerprints.json'
# A StyleGAN-XL tree has these; san-patch refuses a tree that lacks one (exit code 2).
DEFAULT_MARKERS = ('train.py', 'training/', 'pg_modules/discriminator.py')
# Recorded besides the files the series touches: the core of the D, loss and loop, and StyleSAN-XL's addition.
_EXTRA_FILES = ('train.py', 'legacy.py', 'training/training_loop.py', 'training/loss.py',
                'pg_modules/discriminator.py', 'pg_modules/blocks.py', 'pg_modules/projector.py',
                'pg_modules/san_modules.py', 'feature_networks/pretrained_builder.py', 'dnnlib/util.py',
                'torch_utils/custom_ops.py', 'torch_utils/ops/conv2d_gradfix.py')
_FORMAT = 1


@dataclass(frozen=True)
class VersionMatch:
    """How a tree compares with one recorded version."""

    label: str
    kind: str  # 'base' (the upstream the series is made for), 'patched' (base with the whole series) or 'other'
    identical: int
    total: int
    modified: tuple[str, ...]  # present in both, different content
    missing: tuple[str, ...]  # in the version, absent from the tree
    unexpected: tuple[str, ...]  # absent from the version, present in the tree


def _hashes(root: Path, paths: Sequence[str]) -> dict[str, Optional[str]]:
    return {p: sha256_bytes(read_bytes(root, p)) for p in paths}


def build_fingerprints(series: Series, trees: Sequence[tuple[str, Path]], command: str = '') -> dict:
    """Fingerprints of ``trees`` (``(label, directory)`` pairs; the first is the upstream the series is made for)
    for the files of ``series``, a few more core files and the markers."""
    paths = sorted(set(series.paths()) | set(_EXTRA_FILES) | {m for m in DEFAULT_MARKERS if not m.endswith('/')})
    versions = []
    for n, (label, root) in enumerate(trees):
        versions.append({'label': label, 'patched': False, 'base': n == 0, 'files': _hashes(root, paths)})
        tree = VirtualTree(lambda p, root=root: read_text(root, p))
        for patch in series.patches:
            result = apply_patch(tree, patch)
            if not result.ok:
                break
            tree.update(result.contents)
        else:
            files = {p: sha256_bytes(None if tree.get(p) is None else encode(tree.get(p))) for p in paths}
            versions.append({'label': f'{label} with patches {",".join(series.ids)}', 'patched': True,
                             'base': False, 'files': files})
    return {'format': _FORMAT, 'series': series.name, 'generated_by': command, 'markers': list(DEFAULT_MARKERS),
            'patches': {p.id: p.sha256 for p in series.patches}, 'versions': versions}


def load_fingerprints(series: Series) -> tuple[Optional[dict], list[str]]:
    """The series' fingerprints (``None`` if it has none) and notes (a stale file's patched entries dropped)."""
    path = series.directory / FINGERPRINT_FILE
    if not path.is_file():
        return None, []
    try:
        doc = json.loads(path.read_text(encoding='utf-8'))
        doc['versions'] = list(doc['versions'])
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise SeriesError(f'{path} is unreadable ({err}); regenerate it with san-patch fingerprint') from err
    current = {p.id: p.sha256 for p in series.patches}
    notes = []
    if doc.get('patches') != current:
        doc['versions'] = [v for v in doc['versions'] if not v.get('patched')]
        notes.append(f'{path.name} was made for other versions of the patches: the "already patched" fingerprints '
                     f'are ignored (regenerate it with san-patch fingerprint)')
    return doc, notes


def match_versions(doc: dict, read: Callable[[str], Optional[bytes]]) -> list[VersionMatch]:
    """Each recorded version against the tree (``read(path) -> bytes or None``), best match first."""
    cache: dict[str, Optional[str]] = {}

    def digest(p: str) -> Optional[str]:
        if p not in cache:
            cache[p] = sha256_bytes(read(p))
        return cache[p]

    out = []
    for v in doc['versions']:
        files = v['files']
        same = [p for p, h in files.items() if digest(p) == h]
        modified = tuple(p for p, h in files.items() if h is not None and digest(p) not in (h, None))
        missing = tuple(p for p, h in files.items() if h is not None and digest(p) is None)
        unexpected = tuple(p for p, h in files.items() if h is None and digest(p) is not None)
        kind = 'patched' if v.get('patched') else 'base' if v.get('base') else 'other'
        out.append(VersionMatch(v['label'], kind, len(same), len(files), modified, missing, unexpected))
    return sorted(out, key=lambda m: (-m.identical / max(m.total, 1), -m.identical))
