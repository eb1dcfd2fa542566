"""Synthetic StyleGAN-XL-like trees and patch series for tests/test_patching.py (no upstream code)."""

from __future__ import annotations

import difflib
import stat
from pathlib import Path
from typing import Optional

from click.testing import CliRunner

from san_ext.patching.cli import main
from san_ext.patching.diff import split_lines

UPSTREAM = 'Upstream: autonomousvision/stylegan_xl@4241ff9'



def filler_lines(name: str, n: int) -> str:
    return ''.join(f'# {name} line {i}\n' for i in range(1, n + 1))


def base_files() -> dict[str, Optional[str]]:
    return {'train.py': filler_lines('train', 20), 'training/loss.py': filler_lines('loss', 40),
            'training/training_loop.py': filler_lines('loop', 12),
            'pg_modules/discriminator.py': filler_lines('disc', 25),
            'training/old_module.py': filler_lines('old', 4), 'dnnlib/util.py': filler_lines('util', 6) + 'last = 1',
            'training/san_heads.py': None}


def edit(text: str, replace: dict[int, str] = None, insert: dict[int, str] = None) -> str:
    """Replace 1-based lines and insert text after 1-based lines."""
    lines = split_lines(text)
    for k, new in (replace or {}).items():
        lines[k - 1] = new
    for k in sorted(insert or {}, reverse=True):
        lines[k:k] = [insert[k]]
    return ''.join(lines)


def series_stages() -> list[dict[str, Optional[str]]]:
    """Base and the tree after each of the synthetic patches a, b (requires a), c."""
    base = base_files()
    a = dict(base)
    a['training/loss.py'] = edit(base['training/loss.py'], {5: 'import san_ext  # a\n'}, {30: 'loss = san  # a\n'})
    a['pg_modules/discriminator.py'] = edit(base['pg_modules/discriminator.py'], {10: 'head = SANConv2d()  # a\n'})
    a['training/san_heads.py'] = '"""SAN heads (patch a)."""\n'
    b = dict(a)
    b['training/loss.py'] = edit(a['training/loss.py'], insert={31: 'reproject()  # b\n'})
    b['training/training_loop.py'] = edit(a['training/training_loop.py'], {3: 'normalize_weight()  # b\n'})
    c = dict(b)
    c['training/old_module.py'] = None
    c['dnnlib/util.py'] = edit(b['dnnlib/util.py'], {7: 'last = 2  # c'})
    return [base, a, b, c]


def git_diff(path: str, before: Optional[str], after: Optional[str]) -> str:
    """A git-style diff of one file, as ``git diff`` writes it (3 lines of context)."""
    head = [f'diff --git a/{path} b/{path}\n']
    head += ['new file mode 100644\n'] if before is None else []
    head += ['deleted file mode 100644\n'] if after is None else []
    body = difflib.unified_diff(split_lines(before or ''), split_lines(after or ''),
                                '/dev/null' if before is None else f'a/{path}',
                                '/dev/null' if after is None else f'b/{path}')
    return ''.join(head) + ''.join(x if x.endswith('\n') else x + '\n\\ No newline at end of file\n' for x in body)


def write_patch(directory: Path, pid: str, before: dict, after: dict, requires: str = '') -> str:
    diff = ''.join(git_diff(p, before[p], after[p]) for p in sorted(after) if before[p] != after[p])
    name = f'{pid}-change-{pid}.patch'
    (directory / name).write_text(f'Subject: patch {pid}\nRequires: {requires}\n{UPSTREAM}\n\nWhy {pid}.\n\n{diff}')
    return name


def make_tree(root: Path, files: dict[str, Optional[str]]) -> Path:
    for rel, text in files.items():
        if text is not None:
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / rel).write_bytes(text.encode('utf-8', 'surrogateescape'))
    for marker in ('train.py', 'pg_modules/discriminator.py'):
        if not (root / marker).exists():
            (root / marker).parent.mkdir(parents=True, exist_ok=True)
            (root / marker).write_text('# marker\n')
    (root / 'training').mkdir(exist_ok=True)
    return root


def snapshot(root: Path) -> dict[str, tuple[bytes, int]]:
    """Every file and directory under root with its bytes and mode: what "unchanged" means here."""
    out = {}
    for p in sorted(root.rglob('*')):
        if '.git' in p.relative_to(root).parts:
            continue
        out[str(p.relative_to(root))] = (p.read_bytes() if p.is_file() else b'<dir>', stat.S_IMODE(p.stat().st_mode))
    return out


def expected_files(root: Path, files: dict[str, Optional[str]]) -> None:
    for rel, text in files.items():
        assert (root / rel).exists() == (text is not None), rel
        if text is not None:
            assert (root / rel).read_text() == text, rel


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, [str(a) for a in args])
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.output
