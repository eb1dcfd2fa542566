"""Parser for git-style unified diffs: modified, new and deleted text files, ``\\ No newline at end of file``.

Text is handled as ``str`` decoded with ``surrogateescape``, so any byte sequence round-trips exactly, and lines
keep their terminator: a hunk line ``' foo\\r\\n'`` matches the file line ``'foo\\r\\n'`` and nothing else.
Renames, copies, mode-only changes and binary patches are refused with an error naming the patch line, as are
paths that are absolute or leave the tree (``..``): a patch must not write outside the checkout.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional

__all__ = ['FilePatch', 'Hunk', 'PatchSyntaxError', 'decode', 'encode', 'parse_diff', 'split_lines']

_HUNK_RE = re.compile(r'^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@(.*)$')
_DIFF_GIT_RE = re.compile(r'^diff --git (\S+) (\S+)$')
_UNSUPPORTED = ('rename from', 'rename to', 'copy from', 'copy to', 'similarity index', 'dissimilarity index',
                'old mode', 'new mode', 'GIT binary patch', 'Binary files')
_NO_NEWLINE = '\\ No newline at end of file'


class PatchSyntaxError(ValueError):
    """A malformed patch; the message names the patch file and line, what was wrong and what was expected."""

    def __init__(self, source: str, lineno: int, message: str):
        super().__init__(f'{source}:{lineno}: {message}')
        self.source, self.lineno = source, lineno


def decode(data: bytes) -> str:
    """Bytes to text that encodes back to the same bytes (UTF-8, undecodable bytes kept as surrogates)."""
    return data.decode('utf-8', 'surrogateescape')


def encode(text: str) -> bytes:
    """Inverse of :func:`decode`."""
    return text.encode('utf-8', 'surrogateescape')


def split_lines(text: str) -> list[str]:
    """Lines with their ``'\\n'`` kept; only ``'\\n'`` ends a line (not ``str.splitlines``' form feeds etc.)."""
    lines = text.split('\n')
    out = [line + '\n' for line in lines[:-1]]
    if lines[-1]:
        out.append(lines[-1])
    return out


@dataclass(frozen=True)
class Hunk:
    """One ``@@ -old_start,old_len +new_start,new_len @@`` block; ``lines`` are ``(tag, text)`` with tag in
    ``' -+'`` and text keeping its terminator (absent after a ``\\ No newline at end of file`` marker)."""

    old_start: int
    old_len: int
    new_start: int
    new_len: int
    lines: tuple[tuple[str, str], ...]
    section: str = ''
    lineno: int = 0  # line of the @@ header in the patch file

    @property
    def header(self) -> str:
        return f'@@ -{self.old_start},{self.old_len} +{self.new_start},{self.new_len} @@'

    @property
    def old_lines(self) -> list[str]:
        return [text for tag, text in self.lines if tag != '+']

    @property
    def new_lines(self) -> list[str]:
        return [text for tag, text in self.lines if tag != '-']

    @property
    def leading(self) -> int:
        """Context lines before the first change."""
        n = 0
        for tag, _ in self.lines:
            if tag != ' ':
                break
            n += 1
        return n

    @property
    def trailing(self) -> int:
        """Context lines after the last change."""
        n = 0
        for tag, _ in reversed(self.lines):
            if tag != ' ':
                break
            n += 1
        return n

    def reversed(self) -> Hunk:
        swap = {' ': ' ', '-': '+', '+': '-'}
        return Hunk(self.new_start, self.new_len, self.old_start, self.old_len,
                    tuple((swap[tag], text) for tag, text in self.lines), self.section, self.lineno)


@dataclass(frozen=True)
class FilePatch:
    """The changes to one file: ``kind`` is ``'modify'``, ``'create'`` or ``'delete'``; ``mode`` is the
    permission bits from ``new file mode`` or ``deleted file mode`` (``None`` for a modified file)."""

    path: str
    kind: str
    hunks: tuple[Hunk, ...]
    mode: Optional[int] = None
    lineno: int = 0  # line of the ``diff --git`` header in the patch file

    def reversed(self) -> FilePatch:
        kind = {'modify': 'modify', 'create': 'delete', 'delete': 'create'}[self.kind]
        return FilePatch(self.path, kind, tuple(h.reversed() for h in self.hunks), self.mode, self.lineno)


def _clean_path(raw: str, prefix: str, source: str, lineno: int) -> str:
    """``a/x/y.py`` -> ``x/y.py``, refusing absolute paths and ``..`` (a patch must stay inside the tree)."""
    if not raw.startswith(prefix):
        raise PatchSyntaxError(source, lineno, f'path {raw!r} should start with {prefix!r} (git-style diff)')
    path = raw[len(prefix):]
    parts = path.split('/')
    if not path or path.startswith('/') or any(p in ('', '.', '..') for p in parts) or '\\' in path:
        raise PatchSyntaxError(source, lineno, f'unsafe or empty path {raw!r}: paths must be relative, without '
                                               f'"..", "." or empty components')
    return path


class _Reader:
    """Lines of a diff with 1-based numbering in the patch file, for error messages."""

    def __init__(self, lines: list[str], source: str, first_lineno: int):
        self.lines, self.source, self.first = lines, source, first_lineno
        self.i = 0

    def peek(self) -> Optional[str]:
        return self.lines[self.i].rstrip('\n') if self.i < len(self.lines) else None

    def raw(self) -> str:
        return self.lines[self.i]

    @property
    def lineno(self) -> int:
        return self.first + self.i

    def error(self, message: str) -> PatchSyntaxError:
        return PatchSyntaxError(self.source, self.lineno, message)


def parse_diff(lines: list[str], source: str, first_lineno: int = 1) -> tuple[FilePatch, ...]:
    """Parse the diff part of a patch (``lines`` from the first ``diff --git``) into one FilePatch per file.

    ``source`` (the patch file's name) and ``first_lineno`` make errors point at the right line.
    """
    rd = _Reader(lines, source, first_lineno)
    files: list[FilePatch] = []
    while rd.peek() is not None:
        line = rd.peek()
        if not line.strip():
            rd.i += 1
            continue
        if line == '-- ':  # `git format-patch` signature: the rest is not diff
            break
        if not line.startswith('diff --git '):
            raise rd.error(f'expected "diff --git a/PATH b/PATH", found {line[:60]!r}')
        files.append(_parse_file(rd))
    if not files:
        raise PatchSyntaxError(source, first_lineno, 'no "diff --git" section found: the patch changes nothing')
    seen: set[str] = set()
    for fp in files:
        if fp.path in seen:
            raise PatchSyntaxError(source, fp.lineno, f'{fp.path} appears twice in one patch; merge its hunks')
        seen.add(fp.path)
    return tuple(files)


def _parse_file(rd: _Reader) -> FilePatch:
    start = rd.lineno
    m = _DIFF_GIT_RE.match(rd.peek())
    if not m:
        raise rd.error('malformed "diff --git" line: expected "diff --git a/PATH b/PATH" (no spaces in paths)')
    a_path = _clean_path(m.group(1), 'a/', rd.source, rd.lineno)
    b_path = _clean_path(m.group(2), 'b/', rd.source, rd.lineno)
    if a_path != b_path:
        raise rd.error(f'renames are not supported ({a_path} -> {b_path}): use a delete and a new file')
    rd.i += 1
    kind, mode = 'modify', None
    while (line := rd.peek()) is not None and not line.startswith(('--- ', 'diff --git ', '@@')):
        if line.startswith('new file mode '):
            kind, mode = 'create', _parse_mode(line[len('new file mode '):], rd)
        elif line.startswith('deleted file mode '):
            kind, mode = 'delete', _parse_mode(line[len('deleted file mode '):], rd)
        elif line.startswith(_UNSUPPORTED):
            raise rd.error(f'unsupported extended header {line!r}: san-patch handles text changes to existing, new '
                           f'and deleted files only (no renames, copies, mode changes or binary patches)')
        elif not line.startswith('index '):
            raise rd.error(f'unexpected line in the header of {a_path}: {line[:60]!r}')
        rd.i += 1
    if rd.peek() is None or not rd.peek().startswith('--- '):
        raise rd.error(f'{a_path}: expected "--- a/{a_path}" (a diff without hunks changes nothing)')
    old = _side_path(rd, '--- ', 'a/', a_path, kind == 'create')
    new = _side_path(rd, '+++ ', 'b/', a_path, kind == 'delete')
    if old is None and new is None:
        raise rd.error(f'{a_path}: both sides are /dev/null')
    kind = 'create' if old is None else 'delete' if new is None else kind
    hunks = []
    while (line := rd.peek()) is not None and line.startswith('@@'):
        hunks.append(_parse_hunk(rd, a_path, kind))
    if not hunks:
        raise rd.error(f'{a_path}: expected a hunk header "@@ -l,n +l,n @@"')
    _check_order(hunks, a_path, rd.source)
    return FilePatch(a_path, kind, tuple(hunks), mode if kind != 'modify' else None, start)


def _parse_mode(text: str, rd: _Reader) -> int:
    if not re.fullmatch(r'100[67][0-7][0-7]', text.strip()):
        raise rd.error(f'file mode {text!r}: only regular files (100644, 100755) are supported')
    return int(text.strip()[-3:], 8)


def _side_path(rd: _Reader, marker: str, prefix: str, expected: str, null_ok: bool) -> Optional[str]:
    line = rd.peek()
    if line is None or not line.startswith(marker):
        raise rd.error(f'{expected}: expected "{marker}{prefix}{expected}"')
    raw = line[len(marker):].split('\t')[0].rstrip()
    rd.i += 1
    if raw == '/dev/null':
        if not null_ok:
            raise PatchSyntaxError(rd.source, rd.lineno - 1, f'{expected}: /dev/null here needs a '
                                   f'"{"new" if marker == "--- " else "deleted"} file mode" line')
        return None
    path = _clean_path(raw, prefix, rd.source, rd.lineno - 1)
    if path != expected:
        raise PatchSyntaxError(rd.source, rd.lineno - 1, f'{marker.strip()} names {path}, but the diff --git line '
                                                         f'names {expected}')
    return path


def _parse_hunk(rd: _Reader, path: str, kind: str) -> Hunk:
    header_lineno = rd.lineno
    m = _HUNK_RE.match(rd.peek())
    if not m:
        raise rd.error(f'{path}: malformed hunk header {rd.peek()[:60]!r}; expected "@@ -l,n +l,n @@"')
    old_start, new_start = int(m.group(1)), int(m.group(3))
    old_len = 1 if m.group(2) is None else int(m.group(2))
    new_len = 1 if m.group(4) is None else int(m.group(4))
    if kind == 'create' and (old_start, old_len) != (0, 0) or kind == 'delete' and (new_start, new_len) != (0, 0):
        raise rd.error(f'{path}: a {"new" if kind == "create" else "deleted"} file needs '
                       f'{"-0,0" if kind == "create" else "+0,0"} in its hunk header')
    rd.i += 1
    body: list[tuple[str, str]] = []
    n_old = n_new = 0
    while n_old < old_len or n_new < new_len:
        if rd.peek() is None:
            raise rd.error(f'{path}: hunk {m.group(0).split(" @@")[0]} @@ ends early: {old_len - n_old} old and '
                           f'{new_len - n_new} new lines still expected (truncated patch or wrong counts)')
        raw = rd.raw()
        tag, text = (raw[0], raw[1:]) if raw not in ('\n', '\r\n') else (' ', raw)  # empty line = empty context
        if tag not in ' -+':
            raise rd.error(f'{path}: hunk line must start with " ", "-" or "+", found {raw.rstrip()[:60]!r} '
                           f'(the hunk header counts {old_len} old and {new_len} new lines)')
        if tag != '+':
            n_old += 1
        if tag != '-':
            n_new += 1
        if n_old > old_len or n_new > new_len:
            raise rd.error(f'{path}: more lines than the hunk header at line {header_lineno} counts ({old_len} old, '
                           f'{new_len} new)')
        body.append((tag, text))
        rd.i += 1
        _no_newline_marker(rd, body)
    return Hunk(old_start, old_len, new_start, new_len, tuple(body), m.group(5).strip(), header_lineno)


def _no_newline_marker(rd: _Reader, body: list[tuple[str, str]]) -> None:
    """``\\ No newline at end of file`` after a line: that line has no terminator in the file."""
    if rd.peek() is not None and rd.peek().startswith('\\'):
        if not rd.peek().startswith(_NO_NEWLINE[:2]):
            raise rd.error(f'unexpected line {rd.peek()[:60]!r}')
        tag, text = body[-1]
        if not text.endswith('\n'):
            raise rd.error('two "\\ No newline at end of file" markers in a row')
        body[-1] = (tag, text[:-1])
        rd.i += 1


def _check_order(hunks: list[Hunk], path: str, source: str) -> None:
    """Hunks must be in file order and must not overlap, as git and patch produce them."""
    for prev, cur in zip(hunks, hunks[1:]):
        if cur.old_start < prev.old_start + prev.old_len:
            raise PatchSyntaxError(source, cur.lineno, f'{path}: hunk {cur.header} overlaps or precedes the hunk '
                                                       f'before it ({prev.header}); hunks must be in file order')
    for h in hunks[:-1]:
        if any(side and not side[-1].endswith('\n') for side in (h.old_lines, h.new_lines)):
            raise PatchSyntaxError(source, h.lineno, f'{path}: "\\ No newline at end of file" in a hunk that is '
                                                     f'not the last one of the file')
    for h in hunks:
        for side in (h.old_lines, h.new_lines):
            if any(not text.endswith('\n') for text in side[:-1]):
                raise PatchSyntaxError(source, h.lineno, f'{path}: "\\ No newline at end of file" is only valid on '
                                                         f'the last line of a side of the last hunk')
