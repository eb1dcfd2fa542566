"""A patch series: the ``series`` file (apply order), each patch's header fields and description, its diff.

Format (agreed with the patch authors): ``series`` holds one ``<id> <filename>`` per line, ``#`` starts a
comment. A patch file starts with RFC-822-style fields (``Subject:``, ``Requires:``, ``Upstream:``), a blank
line, free text saying what it changes and why, then a git-style diff. Patches apply in series order, each on
top of the ones before it; ``Requires:`` names patches that must be applied with (or before) it.
The bundled series is located from this file, never from the working directory.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

from .diff import FilePatch, PatchSyntaxError, decode, parse_diff, split_lines

__all__ = ['DEFAULT_SERIES', 'Patch', 'Series', 'SeriesError', 'bundled_series_dir', 'load_patch', 'load_series']

DEFAULT_SERIES = 'stylegan_xl-4241ff9'
_REQUIRED_FIELDS = ('Subject', 'Requires', 'Upstream')
_ID_RE = re.compile(r'^[A-Za-z0-9][A-Za-z0-9_.-]*$')


class SeriesError(ValueError):
    """A series directory that cannot be used: missing files, bad ``series`` lines, unknown ``Requires:``."""


@dataclass(frozen=True)
class Patch:
    """One patch of a series: ``id`` from the series file, header ``fields``, the free-text ``description``,
    the parsed ``files`` and the SHA-256 of the patch file (recorded when applied, to notice a changed series)."""

    id: str
    path: Path
    fields: dict[str, str]
    description: str
    files: tuple[FilePatch, ...]
    sha256: str

    @property
    def subject(self) -> str:
        return self.fields.get('Subject', '')

    @property
    def requires(self) -> tuple[str, ...]:
        return tuple(r for r in re.split(r'[\s,]+', self.fields.get('Requires', '')) if r)

    @property
    def paths(self) -> tuple[str, ...]:
        return tuple(f.path for f in self.files)


@dataclass(frozen=True)
class Series:
    """The patches of a directory in apply order; ``name`` is the directory name (recorded in the tree state)."""

    name: str
    directory: Path
    patches: tuple[Patch, ...]

    @property
    def ids(self) -> tuple[str, ...]:
        return tuple(p.id for p in self.patches)

    def get(self, patch_id: str) -> Patch:
        for p in self.patches:
            if p.id == patch_id:
                return p
        raise SeriesError(f'no patch {patch_id!r} in series {self.name}; known: {", ".join(self.ids)}')

    def paths(self) -> tuple[str, ...]:
        """Every file the series touches, in first-touched order."""
        return tuple(dict.fromkeys(path for p in self.patches for path in p.paths))


def bundled_series_dir(name: str = DEFAULT_SERIES) -> Path:
    """The series shipped with san-ext: inside the installed package (``san_ext/patching/bundled/``, put there by
    setup.py) or, in a source checkout, ``patches/`` next to the ``san_ext`` package."""
    here = Path(__file__).resolve().parent
    candidates = (here / 'bundled' / name, here.parents[1] / 'patches' / name)
    for c in candidates:
        if (c / 'series').is_file():
            return c
    raise SeriesError(f'the bundled series {name} was not found (looked in {", ".join(map(str, candidates))}); '
                      f'reinstall san-ext or pass --series DIR')


def _parse_header(lines: list[str], source: str) -> tuple[dict[str, str], str, int]:
    """Fields, description and the index of the first ``diff --git`` line."""
    fields: dict[str, str] = {}
    i, last = 0, None
    while i < len(lines) and lines[i].strip():
        line = lines[i].rstrip('\r\n')
        if line.startswith('diff --git '):
            break
        if line[:1] in ' \t' and last is not None:  # RFC 822 continuation line
            fields[last] += ' ' + line.strip()
        elif (m := re.match(r'^([A-Za-z][A-Za-z0-9-]*):\s*(.*)$', line)):
            last = m.group(1)
            if last in fields:
                raise PatchSyntaxError(source, i + 1, f'header field {last}: appears twice')
            fields[last] = m.group(2).strip()
        else:
            raise PatchSyntaxError(source, i + 1, f'expected a header field "Name: value" (Subject:, Requires:, '
                                                  f'Upstream:), found {line[:60]!r}')
        i += 1
    missing = [f for f in _REQUIRED_FIELDS if f not in fields]
    if missing:
        raise PatchSyntaxError(source, 1, f'missing header field(s) {", ".join(missing)}: a patch starts with '
                                          f'Subject:, Requires: (may be empty) and Upstream:, then a blank line')
    start = next((j for j in range(i, len(lines)) if lines[j].startswith('diff --git ')), None)
    if start is None:
        raise PatchSyntaxError(source, len(lines), 'no "diff --git" line: the patch has a header but no diff')
    return fields, ''.join(lines[i:start]).strip(), start


def load_patch(path: Union[str, Path], patch_id: str) -> Patch:
    """Read and parse one patch file; errors name the file and line."""
    path = Path(path)
    data = path.read_bytes()
    lines = split_lines(decode(data))
    fields, description, start = _parse_header(lines, path.name)
    files = parse_diff(lines[start:], path.name, start + 1)
    return Patch(patch_id, path, fields, description, files, hashlib.sha256(data).hexdigest())


def _read_series_file(directory: Path) -> list[tuple[str, str, int]]:
    listing = directory / 'series'
    if not listing.is_file():
        raise SeriesError(f'{directory} is not a patch series: it has no "series" file listing "<id> <file>" lines')
    entries = []
    for n, line in enumerate(listing.read_text(encoding='utf-8').splitlines(), 1):
        line = line.split('#', 1)[0].strip()
        if not line:
            continue
        parts = line.split()
        if len(parts) != 2 or not _ID_RE.match(parts[0]):
            raise SeriesError(f'{listing}:{n}: expected "<id> <filename>", found {line!r}')
        entries.append((parts[0], parts[1], n))
    if not entries:
        raise SeriesError(f'{listing} lists no patches')
    return entries


def load_series(directory: Optional[Union[str, Path]] = None) -> Series:
    """Load and validate a series (default: the bundled one): unique ids, existing files, parseable patches,
    ``Requires:`` naming only earlier patches."""
    directory = Path(directory) if directory is not None else bundled_series_dir()
    entries = _read_series_file(directory)
    patches: list[Patch] = []
    for patch_id, filename, n in entries:
        if any(p.id == patch_id for p in patches):
            raise SeriesError(f'{directory / "series"}:{n}: patch id {patch_id!r} is listed twice')
        file = directory / filename
        if Path(filename).name != filename or not file.is_file():
            raise SeriesError(f'{directory / "series"}:{n}: patch file {filename!r} not found in {directory}')
        patch = load_patch(file, patch_id)
        for req in patch.requires:
            if req not in {p.id for p in patches}:
                where = 'comes later in the series' if req in {e[0] for e in entries} else 'is not in the series'
                raise SeriesError(f'{filename}: Requires: {req}, which {where}; a patch may require only patches '
                                  f'listed before it')
        patches.append(patch)
    return Series(directory.resolve().name, directory.resolve(), tuple(patches))
