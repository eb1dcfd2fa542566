"""Hunk placement and in-memory application of patches, the way ``git apply`` does it, with no fuzz.

A hunk is tried at its stated line, then at growing offsets (+1, -1, +2, -2, ...) over the whole file; its
context and removed lines must match exactly. As in git, a hunk starting at line 0 or 1 must match at the start
of the file and a hunk without trailing context at its end. Nothing here touches the disk: results are new file
texts plus, for every hunk that does not fit, a :class:`Conflict` saying which line differs and where.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Callable, Optional

from .diff import FilePatch, Hunk, split_lines
from .series import Patch

__all__ = ['Conflict', 'PatchResult', 'Placement', 'VirtualTree', 'apply_file', 'apply_patch', 'locate_hunk']


@dataclass(frozen=True)
class Conflict:
    """A hunk (or a whole file) that does not fit the tree: ``reason`` is one line, ``detail`` the lines that
    show the first difference (what the patch expects, what the tree has, and where)."""

    patch_id: str
    path: str
    hunk: str  # '@@ -l,n +l,n @@', or '' when the file as a whole does not fit
    patch_line: int  # line in the patch file (of the hunk header or the diff --git line)
    reason: str
    detail: tuple[str, ...] = ()


@dataclass(frozen=True)
class Placement:
    """Where a hunk landed: ``offset`` lines from its stated position (0 = exactly there)."""

    patch_id: str
    path: str
    hunk: str
    offset: int


@dataclass
class PatchResult:
    """New texts (``None`` = file deleted) of the files a patch touches, its placements and conflicts."""

    contents: dict[str, Optional[str]] = field(default_factory=dict)
    modes: dict[str, int] = field(default_factory=dict)
    placements: list[Placement] = field(default_factory=list)
    conflicts: list[Conflict] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.conflicts


class VirtualTree:
    """File texts of a checkout, read lazily through ``read(path) -> text or None`` and overlaid by changes."""

    def __init__(self, read: Callable[[str], Optional[str]]):
        self._read = read
        self._cache: dict[str, Optional[str]] = {}
        self.modes: dict[str, int] = {}

    def get(self, path: str) -> Optional[str]:
        if path not in self._cache:
            self._cache[path] = self._read(path)
        return self._cache[path]

    def update(self, contents: Mapping[str, Optional[str]], modes: Optional[Mapping[str, int]] = None) -> None:
        self._cache.update(contents)
        self.modes.update(modes or {})

    def copy(self) -> VirtualTree:
        other = VirtualTree(self._read)
        other._cache, other.modes = dict(self._cache), dict(self.modes)
        return other


def _search_order(start: int, last: int) -> Iterator[int]:
    """start, start+1, start-1, start+2, ... within [0, last] (git apply's ``find_pos`` order)."""
    start = min(max(start, 0), last)
    yield start
    fwd = back = start
    while fwd < last or back > 0:
        if fwd < last:
            fwd += 1
            yield fwd
        if back > 0:
            back -= 1
            yield back


def _matches(image: list[str], pos: int, old: list[str]) -> bool:
    if pos + len(old) > len(image):
        return False
    return all(image[pos + i] == line for i, line in enumerate(old))


def locate_hunk(image: list[str], hunk: Hunk) -> Optional[int]:
    """0-based line where the hunk's old side matches ``image`` (the file with earlier hunks applied), or None."""
    old = hunk.old_lines
    at_start = hunk.old_start <= 1
    at_end = hunk.trailing == 0
    start = hunk.new_start - 1 if hunk.new_start else 0
    if at_start:
        start = 0
    elif at_end:
        start = len(image) - len(old)
    for pos in _search_order(start, len(image)):
        if at_start and pos != 0 or at_end and pos + len(old) != len(image):
            continue
        if _matches(image, pos, old):
            return pos
    return None


def _shown(text: Optional[str]) -> str:
    if text is None:
        return '<end of file>'
    return repr(text.rstrip('\n')) + ('' if text.endswith('\n') else ' (no newline at end of file)')


def _diagnose(image: list[str], hunk: Hunk) -> tuple[str, tuple[str, ...]]:
    """Reason and detail for a hunk that does not fit: the position where most of its old lines match (nearest
    to the stated line on ties) and the first of its lines that differs there."""
    old = hunk.old_lines
    expected = max(hunk.new_start - 1, 0)
    where: dict[str, list[int]] = {}
    for i, line in enumerate(image):
        where.setdefault(line, []).append(i)
    votes: dict[int, int] = {}
    for j, line in enumerate(old):
        for i in where.get(line, ()):
            if 0 <= i - j <= max(len(image) - 1, 0):
                votes[i - j] = votes.get(i - j, 0) + 1
    best = min(votes, key=lambda p: (-votes[p], abs(p - expected)), default=min(expected, len(image)))
    body = [(k, tag) for k, (tag, _) in enumerate(hunk.lines) if tag != '+']
    for j, line in enumerate(old):
        have = image[best + j] if best + j < len(image) else None
        if have != line:
            k, tag = body[j]
            kind = 'context' if tag == ' ' else 'removed'
            score = f'{votes.get(best, 0)}/{len(old)} of its lines match there'
            reason = (f'{kind} line {j + 1} of the hunk (patch line {hunk.lineno + 1 + k}) differs at line '
                      f'{best + j + 1} of the file ({score})')
            if have is not None and have.endswith('\r\n') and have[:-2] + '\n' == line:
                reason += '; the file has Windows (CRLF) line endings: convert it to LF (dos2unix) first'
            elif hunk.new_lines and locate_hunk(image, hunk.reversed()) is not None:
                reason += '; its new lines are already in the file: this hunk looks applied (by hand?)'
            return reason, (f'patch expects: {_shown(line)}', f'tree has:      {_shown(have)}')
    reason = 'the hunk matches only where git would not place it (it must sit at the start or end of the file)'
    return reason, ()


def apply_file(text: Optional[str], fp: FilePatch, patch_id: str) -> tuple[Optional[str], list[Placement],
                                                                           list[Conflict]]:
    """Apply one file's hunks to its text (``None`` = absent); failed hunks are skipped and reported."""
    def conflict(reason: str, hunk: str = '', line: int = fp.lineno, detail: tuple[str, ...] = ()) -> Conflict:
        return Conflict(patch_id, fp.path, hunk, line, reason, detail)

    if fp.kind == 'create':
        new = ''.join(line for h in fp.hunks for line in h.new_lines)
        if text is not None:
            same = ' with exactly the content this patch creates' if text == new else ''
            return text, [], [conflict(f'the patch creates this file, but it already exists{same}')]
        return new, [], []
    if text is None:
        return None, [], [conflict('the file does not exist in the tree')]
    if fp.kind == 'delete':
        old = [line for h in fp.hunks for line in h.old_lines]
        if text == ''.join(old):
            return None, [], []
        fake = Hunk(1, len(old), 0, 0, tuple(('-', line) for line in old), '', fp.hunks[0].lineno)
        reason, detail = _diagnose(split_lines(text), fake)
        return text, [], [conflict(f'the patch deletes this file, but its content differs: {reason}', '',
                                   fp.lineno, detail)]
    image = split_lines(text)
    placements, conflicts = [], []
    for h in fp.hunks:
        pos = locate_hunk(image, h)
        if pos is None:
            reason, detail = _diagnose(image, h)
            conflicts.append(conflict(reason, h.header, h.lineno, detail))
            continue
        placements.append(Placement(patch_id, fp.path, h.header, pos - max(h.new_start - 1, 0)))
        image[pos:pos + len(h.old_lines)] = h.new_lines
    return ''.join(image), placements, conflicts


def apply_patch(tree: VirtualTree, patch: Patch, reverse: bool = False) -> PatchResult:
    """Apply (or reverse) a whole patch against ``tree`` without changing it; see :meth:`VirtualTree.update`."""
    result = PatchResult()
    files = [fp.reversed() for fp in reversed(patch.files)] if reverse else list(patch.files)
    for fp in files:
        new, placements, conflicts = apply_file(tree.get(fp.path), fp, patch.id)
        result.contents[fp.path] = new
        if fp.kind == 'create' and fp.mode is not None:
            result.modes[fp.path] = fp.mode
        result.placements += placements
        result.conflicts += conflicts
    return result
