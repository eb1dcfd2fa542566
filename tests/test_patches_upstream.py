"""The StyleGAN-XL patch series (patches/stylegan_xl-4241ff9/) is well formed, from its own files alone.

No upstream code is needed: these tests read the series and the patch files and check the agreed format (header
fields, git-style diffs, hunk counts, 3 lines of context), the dependencies between patches, and a few promises
the headers make (patch c removes every private aten call and adds none; patch a uses only public san_ext names).
That the series applies to the real upstream checkout is checked by hand against a fetched copy (patches/README.md).
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field
from pathlib import Path

import pytest

import san_ext

SERIES_DIR = Path(__file__).resolve().parents[1] / 'patches' / 'stylegan_xl-4241ff9'
UPSTREAM = 'autonomousvision/stylegan_xl@4241ff9'
HUNK_RE = re.compile(r'^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@')
CONTEXT = 3


@dataclass
class Hunk:
    old_start: int
    old_len: int
    new_start: int
    new_len: int
    lines: list[str] = field(default_factory=list)  # with their ' ', '-', '+' tag


@dataclass
class FileDiff:
    path: str
    old: str
    new: str
    extended: list[str] = field(default_factory=list)
    hunks: list[Hunk] = field(default_factory=list)


@dataclass
class PatchFile:
    id: str
    name: str
    fields: dict[str, str]
    description: str
    files: list[FileDiff]


def _series() -> list[tuple[str, str]]:
    entries = []
    for line in (SERIES_DIR / 'series').read_text().splitlines():
        line = line.split('#', 1)[0].strip()
        if line:
            patch_id, name = line.split()
            entries.append((patch_id, name))
    return entries


def _parse(patch_id: str, name: str) -> PatchFile:
    """A small independent parser: header fields, blank line, text, then git-style file diffs and hunks."""
    lines = (SERIES_DIR / name).read_text().split('\n')
    assert lines[-1] == '', f'{name} must end with a newline'
    lines = lines[:-1]
    fields, i = {}, 0
    while lines[i]:
        key, sep, value = lines[i].partition(':')
        assert sep and re.fullmatch(r'[A-Za-z][A-Za-z-]*', key), f'{name}:{i + 1}: not a header field: {lines[i]!r}'
        fields[key] = value.strip()
        i += 1
    start = next(j for j in range(i, len(lines)) if lines[j].startswith('diff --git '))
    description = '\n'.join(lines[i:start]).strip()
    files: list[FileDiff] = []
    j = start
    while j < len(lines):
        m = re.fullmatch(r'diff --git a/(\S+) b/(\S+)', lines[j])
        assert m and m.group(1) == m.group(2), f'{name}:{j + 1}: expected "diff --git a/P b/P", got {lines[j]!r}'
        fd = FileDiff(path=m.group(1), old='', new='')
        j += 1
        while not lines[j].startswith('--- '):
            fd.extended.append(lines[j])
            j += 1
        fd.old, fd.new = lines[j][4:], lines[j + 1][4:]
        assert lines[j + 1].startswith('+++ '), f'{name}:{j + 2}: expected "+++ "'
        j += 2
        while j < len(lines) and lines[j].startswith('@@'):
            m = HUNK_RE.match(lines[j])
            assert m, f'{name}:{j + 1}: bad hunk header {lines[j]!r}'
            old_len = int(m.group(2)) if m.group(2) is not None else 1
            new_len = int(m.group(4)) if m.group(4) is not None else 1
            hunk = Hunk(int(m.group(1)), old_len, int(m.group(3)), new_len)
            j += 1
            while j < len(lines) and lines[j][:1] in (' ', '-', '+', '\\') and not lines[j].startswith(('--- a/',
                                                                                                          '+++ b/')):
                if not lines[j].startswith('\\'):
                    hunk.lines.append(lines[j])
                j += 1
            fd.hunks.append(hunk)
        files.append(fd)
    return PatchFile(patch_id, name, fields, description, files)


PATCHES = [_parse(i, n) for i, n in _series()]
IDS = [p.id for p in PATCHES]


def _added(patch: PatchFile) -> list[str]:
    return [line[1:] for f in patch.files for h in f.hunks for line in h.lines if line.startswith('+')]


def _removed(patch: PatchFile) -> list[str]:
    return [line[1:] for f in patch.files for h in f.hunks for line in h.lines if line.startswith('-')]


def test_series_lists_a_to_d_in_order_with_agreed_file_names():
    assert IDS == ['a', 'b', 'c', 'd']
    for patch_id, name in _series():
        assert re.fullmatch(rf'{patch_id}-[a-z0-9-]+\.patch', name), name
        assert (SERIES_DIR / name).is_file()
    assert sorted(p.name for p in SERIES_DIR.glob('*.patch')) == sorted(n for _, n in _series())


@pytest.mark.parametrize('patch', PATCHES, ids=IDS)
def test_header_has_subject_requires_upstream_and_a_description(patch):
    assert set(patch.fields) == {'Subject', 'Requires', 'Upstream'}
    assert patch.fields['Upstream'] == UPSTREAM
    assert 10 < len(patch.fields['Subject']) <= 110
    assert len(patch.description.split()) >= 30, 'the free text must say what the patch changes and why'
    for line in patch.description.splitlines():  # text that patch(1) or git could mistake for a diff
        assert not line.startswith(('--- ', '+++ ', '*** ', '@@', 'diff ', 'Index:', '-', '+')), line


def test_requires_names_only_earlier_patches_and_b_needs_a():
    seen = set()
    for patch in PATCHES:
        requires = [r for r in re.split(r'[\s,]+', patch.fields['Requires']) if r]
        assert set(requires) <= seen, f'{patch.name} requires {requires}, not all listed before it'
        seen.add(patch.id)
    assert PATCHES[IDS.index('b')].fields['Requires'] == 'a'
    assert all(PATCHES[IDS.index(i)].fields['Requires'] == '' for i in 'acd')  # they apply on their own


@pytest.mark.parametrize('patch', PATCHES, ids=IDS)
def test_file_headers_are_git_style_text_diffs(patch):
    assert patch.files
    for f in patch.files:
        assert not f.path.startswith('/') and '..' not in f.path.split('/')
        assert not any(x.startswith(('rename ', 'copy ', 'old mode', 'new mode', 'GIT binary', 'Binary'))
                       for x in f.extended)
        assert all(x.startswith(('index ', 'new file mode 100644')) for x in f.extended), f.extended
        if f.old == '/dev/null':
            assert 'new file mode 100644' in f.extended and f.new == f'b/{f.path}'
            assert len(f.hunks) == 1 and f.hunks[0].old_start == 0 and f.hunks[0].old_len == 0
        else:
            assert f.old == f'a/{f.path}' and f.new == f'b/{f.path}'
    paths = [f.path for f in patch.files]
    assert len(paths) == len(set(paths)), 'one diff per file'


@pytest.mark.parametrize('patch', PATCHES, ids=IDS)
def test_hunk_counts_match_their_lines(patch):
    for f in patch.files:
        for h in f.hunks:
            old = sum(1 for line in h.lines if line[0] in ' -')
            new = sum(1 for line in h.lines if line[0] in ' +')
            assert (old, new) == (h.old_len, h.new_len), f'{patch.name} {f.path} @@ -{h.old_start} +{h.new_start}'


@pytest.mark.parametrize('patch', PATCHES, ids=IDS)
def test_hunks_have_three_lines_of_context_are_ordered_and_consistent(patch):
    for f in patch.files:
        shift, end = 0, 0
        for h in f.hunks:
            tags = [line[0] for line in h.lines]
            lead = next(k for k, t in enumerate(tags) if t != ' ')
            trail = next(k for k, t in enumerate(reversed(tags)) if t != ' ')
            assert lead <= CONTEXT and trail <= CONTEXT, f'{f.path}: more context than -U3 gives'
            if f.old == '/dev/null':
                continue
            assert lead == CONTEXT or h.old_start == 1, f'{f.path}: short leading context away from line 1'
            assert h.old_start > end, f'{f.path}: hunks overlap or are out of order'
            assert h.new_start == h.old_start + shift, f'{f.path}: new start does not follow from earlier hunks'
            shift += h.new_len - h.old_len
            end = h.old_start + h.old_len - 1


@pytest.mark.parametrize('patch', PATCHES, ids=IDS)
def test_added_lines_are_clean(patch):
    for line in _added(patch):
        assert line == line.rstrip(), f'{patch.name}: trailing whitespace in {line!r}'
        assert '\t' not in line and '\r' not in line
        assert len(line) <= 160, f'{patch.name}: very long line {line[:60]!r}...'


def test_patch_c_removes_private_aten_calls_and_distutils_and_adds_none():
    c = PATCHES[IDS.index('c')]
    removed, added = '\n'.join(_removed(c)), '\n'.join(_added(c))
    assert removed.count('_jit_get_operation') == 2  # conv2d_gradfix and grid_sample_gradfix
    assert 'from distutils.util import strtobool' in removed
    for private in ('_jit_get_operation', 'torch._C', 'torch.ops.aten', 'import distutils', 'from distutils',
                    'pkg_resources'):
        assert private not in added, private
    assert "'in_embeddings/tf_efficientnet_lite0.pkl'" in removed  # relative to the working directory before
    assert 'model.act1' in removed  # the attribute timm >= 0.9 dropped


def test_no_patch_adds_private_aten_calls():
    for patch in PATCHES:
        added = '\n'.join(_added(patch))
        assert '_jit_get_operation' not in added and 'torch.ops.aten' not in added


def test_new_files_are_valid_python():
    new_files = [(p, f) for p in PATCHES for f in p.files if f.old == '/dev/null']
    assert [f.path for _, f in new_files] == ['feature_networks/pretrained_weights.py']
    for _, f in new_files:
        source = '\n'.join(line[1:] for line in f.hunks[0].lines) + '\n'
        tree = ast.parse(source, filename=f.path)
        names = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
        assert {'use_pretrained', 'create_timm_model', 'create_torchvision_model'} <= names
        assert 'SGXL_PRETRAINED' in source


def test_patches_use_only_public_san_ext_names():
    imported = []
    for patch in PATCHES:
        for line in _added(patch):
            m = re.match(r'\s*from san_ext import (.+)$', line)
            if m:
                imported += [name.split(' as ')[0].strip() for name in m.group(1).split(',')]
    assert {'SANConv2d', 'SANEmbedding', 'is_san_layer', 'normalize_san_weights', 'losses'} <= set(imported)
    for name in imported:
        assert name in san_ext.__all__, f'san_ext does not export {name}'


def test_loss_call_in_patch_a_builds_the_san_hinge_loss():
    a = '\n'.join(_added(PATCHES[IDS.index('a')]))
    assert "san_losses.get('hinge', san=san, dir_weight=san_lambda)" in a
    loss = san_ext.losses.get('hinge', san=True, dir_weight=1.0)  # the call patch a makes, with its defaults
    assert loss.san and loss.dir_weight == 1.0 and loss.name == 'hinge'
    assert not san_ext.losses.get('hinge', san=False, dir_weight=1.0).san


def test_tool_loads_the_series():
    patching = pytest.importorskip('san_ext.patching')
    series = patching.load_series(SERIES_DIR)
    assert series.ids == tuple(IDS)
    assert [p.requires for p in series.patches] == [(), ('a',), (), ()]
