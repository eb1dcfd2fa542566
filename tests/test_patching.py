"""san-patch: parser, hunk placement, all-or-nothing apply/revert, state, CLI, and the bundled series.

Fixture trees are built in the test: synthetic ones from made-up files, and for the bundled series a pre-image
of every touched file rebuilt from the patches' own context and removed lines (lines no hunk shows are
filler), so no upstream code is committed. Where git is installed, results are compared with ``git apply``.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path
from typing import Optional

import pytest
from patching_trees import edit, expected_files, make_tree, run, series_stages, snapshot, write_patch

from san_ext.patching import (
    STATE_FILE,
    PatchSyntaxError,
    Series,
    TreeWriteError,
    execute,
    load_series,
    open_checkout,
    plan_apply,
    read_state,
)
from san_ext.patching.apply import VirtualTree, apply_patch
from san_ext.patching.diff import split_lines
from san_ext.patching.series import bundled_series_dir

GIT = shutil.which('git')
needs_git = pytest.mark.skipif(GIT is None, reason='git is not installed (only used to cross-check git apply)')


# ---------------------------------------------------------------- synthetic series

@pytest.fixture
def synth(tmp_path) -> tuple[Path, list[dict]]:
    """A three-patch series (a; b requires a; c deletes a file and edits a last line without newline)."""
    stages = series_stages()
    d = tmp_path / 'series'
    d.mkdir()
    names = [write_patch(d, pid, stages[k], stages[k + 1], 'a' if pid == 'b' else '')
             for k, pid in enumerate('abc')]
    (d / 'series').write_text('# test series\n' + ''.join(f'{pid} {n}\n' for pid, n in zip('abc', names)))
    return d, stages


# ---------------------------------------------------------------- parser

def test_parser_reads_kinds_counts_and_missing_newline(synth):
    d, stages = synth
    series = load_series(d)
    assert series.ids == ('a', 'b', 'c') and series.get('b').requires == ('a',)
    a = {f.path: f for f in series.get('a').files}
    assert a['training/san_heads.py'].kind == 'create' and a['training/san_heads.py'].mode == 0o644
    assert [(h.old_start, h.old_len) for h in a['training/loss.py'].hunks] == [(2, 7), (28, 6)]
    c = {f.path: f for f in series.get('c').files}
    assert c['training/old_module.py'].kind == 'delete'
    last = c['dnnlib/util.py'].hunks[-1]
    assert last.old_lines[-1] == 'last = 1' and last.new_lines[-1] == 'last = 2  # c'  # no '\n' on either side


@pytest.mark.parametrize('mangle, line, words', [
    (lambda s: s.replace('@@ -2,7 +2,7 @@', '@@ -2,7 +2 @@'), 'loss line 3', 'more lines than the hunk header'),
    (lambda s: s.replace('@@ -2,7 +2,7 @@', '@@ -2,x +2,7 @@'), '@@', 'malformed hunk header'),
    (lambda s: s.replace(' # loss line 4\n', '?# loss line 4\n', 1), '?#', 'must start with'),
    (lambda s: s.replace('Requires: \n', ''), None, 'missing header field(s) Requires'),
    (lambda s: s.replace('b/training/loss.py', 'b/../loss.py', 1), 'diff --git', 'unsafe or empty path'),
    (lambda s: s[:s.index('+loss = san')], None, 'ends early'),
    (lambda s: s.replace('new file mode 100644\n', 'rename from x\n'), 'rename', 'unsupported extended header'),
])
def test_malformed_patch_error_names_file_and_line(synth, mangle, line, words):
    d, _ = synth
    path = d / 'a-change-a.patch'
    text = mangle(path.read_text())
    path.write_text(text)
    with pytest.raises(PatchSyntaxError) as err:
        load_series(d)
    msg = str(err.value)
    assert msg.startswith(f'a-change-a.patch:{err.value.lineno}:') and words in msg
    if line is not None:  # the reported line is the offending one
        assert line in text.splitlines()[err.value.lineno - 1]
    code, out = run('check', d.parent, '--series', d)
    assert code == 3 and 'a-change-a.patch:' in out


@pytest.mark.parametrize('listing, words', [
    ('b b-change-b.patch\na a-change-a.patch\n', 'Requires: a, which comes later in the series'),
    ('a a-change-a.patch\na b-change-b.patch\n', "patch id 'a' is listed twice"),
    ('a a-missing.patch\n', "patch file 'a-missing.patch' not found"),
    ('a a-change-a.patch extra\n', 'expected "<id> <filename>"'),
])
def test_bad_series_file_is_a_clear_error(tmp_path, synth, listing, words):
    d, stages = synth
    (d / 'series').write_text(listing)
    code, out = run('check', make_tree(tmp_path / 'sgxl', stages[0]), '--series', d)
    assert code == 3 and words in out


def test_unreadable_state_file_is_a_clear_error(tmp_path, synth):
    d, stages = synth
    root = make_tree(tmp_path / 'sgxl', stages[0])
    (root / STATE_FILE).write_text('{not json')
    code, out = run('status', root, '--series', d)
    assert code == 3 and 'delete it' in out


# ---------------------------------------------------------------- apply / status / revert

def test_apply_status_revert_round_trip(tmp_path, synth):
    d, stages = synth
    root = make_tree(tmp_path / 'sgxl', stages[0])
    before = snapshot(root)
    code, out = run('check', root, '--series', d)
    assert code == 0 and 'a, b, c apply cleanly' in out and 'applied: none' in out
    code, out = run('apply', root, '--series', d)
    assert code == 0 and 'applied a, b, c' in out
    expected_files(root, stages[3])
    state = read_state(root)
    assert state.applied == ('a', 'b', 'c') and state.files['training/old_module.py'].after is None
    assert state.files['training/san_heads.py'].before is None
    code, out = run('status', root, '--series', d)
    assert code == 0 and out.count('  applied') == 3 and 'changed since applied: nothing' in out
    code, out = run('revert', root, '--series', d)
    assert code == 0 and 'reverted a, b, c' in out
    assert snapshot(root) == before  # byte-identical, state file and new directories gone


def test_apply_twice_is_a_noop(tmp_path, synth):
    d, stages = synth
    root = make_tree(tmp_path / 'sgxl', stages[0])
    assert run('apply', root, '--series', d)[0] == 0
    after = snapshot(root)
    code, out = run('apply', root, '--series', d)
    assert code == 0 and 'nothing to do' in out and 'already applied (a, b, c)' in out
    assert snapshot(root) == after
    code, out = run('check', root, '--series', d)
    assert code == 0 and 'already applied' in out


def test_only_honours_requires_and_applies_what_is_missing(tmp_path, synth):
    d, stages = synth
    root = make_tree(tmp_path / 'sgxl', stages[0])
    before = snapshot(root)
    code, out = run('apply', root, '--only', 'b', '--series', d)
    assert code == 2 and 'requires a' in out and '--only a,b' in out
    assert snapshot(root) == before
    assert run('apply', root, '--only', 'c', '--series', d)[0] == 0
    assert run('apply', root, '--only', 'a', '--series', d)[0] == 0  # a goes in below the applied c
    assert read_state(root).applied == ('a', 'c')
    code, out = run('revert', root, '--only', 'a', '--series', d)
    assert code == 0 and read_state(root).applied == ('c',)
    code, out = run('apply', root, '--series', d)
    assert code == 0 and 'applied a, b:' in out  # only the missing ones
    expected_files(root, stages[3])
    code, out = run('revert', root, '--only', 'a', '--series', d)
    assert code == 2 and 'patch b stays applied and requires a' in out
    code, out = run('apply', root, '--only', 'x', '--series', d)
    assert code == 2 and 'unknown patch x' in out


def test_patches_applied_by_hand_are_detected(tmp_path, synth):
    """a and c applied without san-patch (no state file): found by content; apply adds b between them."""
    d, stages = synth
    files = dict(stages[0])
    series = load_series(d)
    tree = VirtualTree(lambda p: files.get(p))
    for pid in 'ac':
        tree.update(apply_patch(tree, series.get(pid)).contents)
    root = make_tree(tmp_path / 'sgxl', {p: tree.get(p) for p in files})
    assert open_checkout(root, series).applied == ('a', 'c')
    code, out = run('status', root, '--series', d)
    assert 'no .san-patch.json' in out and out.count('not applied') == 1
    code, out = run('apply', root, '--series', d)
    assert code == 0 and 'applied b:' in out
    expected_files(root, stages[3])


def test_conflicting_local_edit_writes_nothing_and_names_the_hunk(tmp_path, synth):
    d, stages = synth
    files = dict(stages[0])
    files['training/loss.py'] = edit(files['training/loss.py'], {29: 'my local change\n'})
    root = make_tree(tmp_path / 'sgxl', files)
    before = snapshot(root)
    for cmd in ('check', 'apply'):
        code, out = run(cmd, root, '--series', d)
        assert code == 1, out
        assert 'CONFLICT patch a (a-change-a.patch): training/loss.py @@ -28,6 +28,7 @@' in out
        assert "context line 2 of the hunk" in out and 'line 29 of the file' in out
        assert "patch expects: '# loss line 29'" in out and "tree has:      'my local change'" in out
        assert out.count('CONFLICT') == 2  # b's hunk next to it does not fit either; the rest of a does
        assert snapshot(root) == before


def test_hunks_found_at_an_offset(tmp_path, synth):
    d, stages = synth
    files = dict(stages[0])
    files['training/loss.py'] = 'import os\nimport sys\n' + files['training/loss.py']
    root = make_tree(tmp_path / 'sgxl', files)
    code, out = run('apply', root, '--series', d)
    assert code == 0 and 'fits 2 line(s) below' in out
    assert (root / 'training/loss.py').read_text() == 'import os\nimport sys\n' + stages[3]['training/loss.py']


def test_not_a_stylegan_xl_tree(tmp_path, synth):
    d, _ = synth
    (tmp_path / 'other').mkdir()
    (tmp_path / 'other' / 'train.py').write_text('print(1)\n')
    for cmd in ('check', 'apply', 'revert', 'status'):
        code, out = run(cmd, tmp_path / 'other', '--series', d)
        assert code == 2 and 'does not look like a StyleGAN-XL checkout' in out
        assert 'training/' in out and 'pg_modules/discriminator.py' in out
    assert not (tmp_path / 'other' / STATE_FILE).exists()


def test_revert_refuses_a_file_edited_after_applying(tmp_path, synth):
    d, stages = synth
    root = make_tree(tmp_path / 'sgxl', stages[0])
    run('apply', root, '--series', d)
    with open(root / 'training/training_loop.py', 'a') as f:
        f.write('# my edit after applying\n')
    code, out = run('status', root, '--series', d)
    assert 'changed since applied: training/training_loop.py' in out
    edited = snapshot(root)
    code, out = run('revert', root, '--series', d)
    assert code == 1 and 'training/training_loop.py' in out and '--force' in out
    assert snapshot(root) == edited
    code, out = run('revert', root, '--series', d, '--force')
    assert code == 0
    expected = dict(stages[0])
    expected['training/training_loop.py'] += '# my edit after applying\n'
    expected_files(root, expected)


def test_write_failure_mid_apply_leaves_tree_unchanged(tmp_path, synth, monkeypatch):
    d, stages = synth
    root = make_tree(tmp_path / 'sgxl', stages[0])
    before = snapshot(root)
    plan = plan_apply(open_checkout(root, load_series(d)))
    assert len(plan.changes) == 6
    real_replace, swapped = os.replace, []

    def failing_replace(src, dst):
        if '.san-patch-' in str(src) and str(src).endswith('.tmp'):  # a new file going in, not a rollback
            swapped.append(dst)
            if len(swapped) == 2:
                raise OSError(28, 'No space left on device')
        return real_replace(src, dst)

    monkeypatch.setattr(os, 'replace', failing_replace)
    with pytest.raises(TreeWriteError) as err:
        execute(plan)
    assert err.value.rolled_back and 'the tree is unchanged' in str(err.value)
    assert len(swapped) == 2
    assert snapshot(root) == before  # first file restored, no temp files, backups or new directories left


def test_modes_are_kept(tmp_path, synth):
    d, stages = synth
    root = make_tree(tmp_path / 'sgxl', stages[0])
    os.chmod(root / 'training/loss.py', 0o751)
    run('apply', root, '--series', d)
    assert stat.S_IMODE((root / 'training/loss.py').stat().st_mode) == 0o751
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE((root / 'training/san_heads.py').stat().st_mode) == 0o644 & ~mask


@needs_git
def test_git_checkout_and_git_apply_agree(tmp_path, synth):
    d, stages = synth
    files = dict(stages[0])
    files['training/loss.py'] = '# shifted\n' + files['training/loss.py']
    ours, theirs = make_tree(tmp_path / 'ours', files), make_tree(tmp_path / 'theirs', files)
    git = [GIT, '-c', 'user.email=t@t', '-c', 'user.name=t']
    subprocess.run([*git, 'init', '-q'], cwd=ours, check=True)
    subprocess.run([*git, 'add', '-A'], cwd=ours, check=True)
    subprocess.run([*git, 'commit', '-qm', 'base'], cwd=ours, check=True)
    for name in sorted(p.name for p in d.glob('*.patch')):
        subprocess.run([GIT, 'apply', str(d / name)], cwd=theirs, check=True)
    assert run('apply', ours, '--series', d)[0] == 0
    (ours / STATE_FILE).rename(tmp_path / 'state.json')
    assert snapshot(ours) == snapshot(theirs)
    (tmp_path / 'state.json').rename(ours / STATE_FILE)
    assert run('revert', ours, '--series', d)[0] == 0
    porcelain = subprocess.run([GIT, 'status', '--porcelain'], cwd=ours, capture_output=True, text=True, check=True)
    assert porcelain.stdout == ''


def test_fingerprints_name_the_version_and_local_edits(tmp_path, synth):
    d, stages = synth
    base = make_tree(tmp_path / 'base', stages[0])
    fork_files = dict(stages[0], **{'pg_modules/discriminator.py': '# a fork\n', 'train.py': '# a fork\n'})
    fork = make_tree(tmp_path / 'fork', fork_files)
    code, out = run('fingerprint', f'up 1.0={base}', f'fork 2.0={fork}', '--series', d)
    assert code == 0 and 'up 1.0 with patches a,b,c' in out and (d / 'fingerprints.json').exists()
    work = make_tree(tmp_path / 'work', stages[0])
    n = len(json.loads((d / 'fingerprints.json').read_text())['versions'][0]['files'])
    assert f'looks like: up 1.0: {n}/{n} files identical' in run('check', work, '--series', d)[1]
    (work / 'training/loss.py').write_text('# rewritten\n')
    out = run('check', work, '--series', d)[1]
    assert f'looks like: up 1.0: {n - 1}/{n} files identical' in out and 'modified locally: training/loss.py' in out
    assert 'this tree is closer to fork 2.0' in run('check', fork, '--series', d)[1]
    run('apply', base, '--series', d)
    assert f'looks like: up 1.0 with patches a,b,c: {n}/{n} files identical' in run('check', base, '--series', d)[1]
    with open(d / 'c-change-c.patch', 'a') as f:
        f.write('\n')  # any change to a patch makes the "patched" fingerprints stale
    out = run('check', base, '--series', d)[1]
    assert 'made for other versions of the patches' in out and 'with patches' not in out


def test_dry_run_writes_nothing_and_leftovers_are_reported(tmp_path, synth):
    d, stages = synth
    root = make_tree(tmp_path / 'sgxl', stages[0])
    before = snapshot(root)
    code, out = run('apply', root, '--series', d, '--dry-run')
    assert code == 0 and 'would change 6 file(s)' in out and snapshot(root) == before
    (root / 'training' / '.loss.py.san-patch-0badc0de.orig').write_text('x')
    assert 'interrupted san-patch run: training/.loss.py.san-patch-0badc0de.orig' in run('status', root,
                                                                                         '--series', d)[1]


def test_changes_undone_outside_san_patch(tmp_path, synth):
    """State file left behind after `git checkout .`-style undo: status says so, apply works again."""
    d, stages = synth
    root = make_tree(tmp_path / 'sgxl', stages[0])
    run('apply', root, '--series', d)
    (root / 'training/san_heads.py').unlink()
    make_tree(root, stages[0])
    out = run('status', root, '--series', d)[1]
    assert out.count('not applied') == 3 and 'records patch a as applied, but its changes are not in the tree' in out
    assert run('apply', root, '--series', d)[0] == 0
    expected_files(root, stages[3])


def test_edits_between_applies_are_kept_by_revert(tmp_path, synth):
    d, stages = synth
    root = make_tree(tmp_path / 'sgxl', stages[0])
    run('apply', root, '--only', 'a', '--series', d)
    with open(root / 'training/loss.py', 'a') as f:
        f.write('# mine\n')
    code, out = run('apply', root, '--only', 'b', '--series', d)
    assert code == 0 and 'edited since san-patch last wrote them: training/loss.py' in out
    assert run('revert', root, '--series', d)[0] == 0
    expected_files(root, dict(stages[0], **{'training/loss.py': stages[0]['training/loss.py'] + '# mine\n'}))


def test_a_hunk_applied_by_hand_is_pointed_out(tmp_path, synth):
    d, stages = synth
    files = dict(stages[0], **{'pg_modules/discriminator.py': stages[1]['pg_modules/discriminator.py']})
    root = make_tree(tmp_path / 'sgxl', files)
    code, out = run('apply', root, '--series', d)
    assert code == 1 and 'pg_modules/discriminator.py' in out and 'this hunk looks applied (by hand?)' in out


def test_python_m_runs_the_cli():
    out = subprocess.run([sys.executable, '-m', 'san_ext.patching', '--help'], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0 and 'Exit codes:' in out.stdout and 'revert' in out.stdout


# ---------------------------------------------------------------- the bundled series

def reconstruct_base(series: Series) -> dict[str, Optional[str]]:
    """Pre-image of every file the series touches, from hunk context and '-' lines; unseen lines are filler.

    Lines are followed through the patches in order (each patch's line numbers refer to the tree after the ones
    before it), so a later patch's context fills in lines of the original file too; a hunk without trailing
    context, or ending without a newline, fixes where the file ends.
    """
    slots: dict[str, list[list]] = {}  # path -> the current image: [[base line index or None, text or None]]
    known: dict[str, dict[int, str]] = {}
    ends: dict[str, int] = {}
    hunks = [(fp.path, h) for p in series.patches for fp in p.files for h in fp.hunks]
    for patch in series.patches:
        for fp in patch.files:
            if fp.path not in slots:  # enough unknown base lines for every hunk, whatever later patches insert
                size = sum(h.old_start + len(h.lines) for path, h in hunks if path == fp.path)
                slots[fp.path] = [] if fp.kind == 'create' else [[k, None] for k in range(size)]
                known[fp.path] = {}
            img, delta = slots[fp.path], 0
            for h in fp.hunks:
                pos = (h.old_start - 1 if h.old_len else h.old_start) + delta
                old = img[pos:pos + len(h.old_lines)]
                for slot, text in zip(old, h.old_lines):
                    assert slot[1] in (None, text), f'{patch.id} {fp.path} {h.header}: inconsistent series'
                    slot[1] = text
                    if slot[0] is not None:
                        known[fp.path][slot[0]] = text
                end = pos + len(old)
                if old and (h.trailing == 0 or not h.old_lines[-1].endswith('\n')):
                    kept = [s[0] for s in img[:end] if s[0] is not None]
                    ends.setdefault(fp.path, max(kept) + 1 if kept else 0)
                    del img[end:]
                rest, new = iter(old), []
                for tag, text in h.lines:
                    slot = next(rest) if tag != '+' else [None, text]
                    if tag != '-':
                        new.append(slot)
                img[pos:end] = new
                delta += len(h.new_lines) - len(h.old_lines)
    base = {}
    for path in slots:
        first = next(f for p in series.patches for f in p.files if f.path == path)
        if first.kind == 'create':
            base[path] = None
            continue
        n = ends.get(path, max(known[path], default=0) + 3)
        base[path] = ''.join(known[path].get(k, f'# filler line {k + 1} of {path}\n') for k in range(n))
    return base


def test_reconstruction_rebuilds_the_synthetic_base(synth):
    """The fixture builder itself: on a series whose base is known, the shown lines come back exactly."""
    d, stages = synth
    base = reconstruct_base(load_series(d))
    assert base['training/san_heads.py'] is None
    assert base['training/old_module.py'] == stages[0]['training/old_module.py']  # a deleted file is shown whole
    assert base['dnnlib/util.py'].endswith('# util line 6\nlast = 1')  # ends where the no-newline hunk says
    loss = split_lines(base['training/loss.py'])
    assert loss[1:8] == split_lines(stages[0]['training/loss.py'])[1:8] and loss[0].startswith('# filler line 1')


def _bundled() -> Series:
    try:
        directory = bundled_series_dir()
    except ValueError as err:
        pytest.skip(f'the bundled series is not in this checkout yet ({err})')
    return load_series(directory)


def test_bundled_series_format():
    series = _bundled()
    assert series.patches, 'empty series'
    for p in series.patches:
        assert p.path.name.startswith(f'{p.id}-') and p.path.name.endswith('.patch'), p.path.name
        assert p.subject and p.fields['Upstream'] == 'autonomousvision/stylegan_xl@4241ff9', p.id
        assert p.description, f'patch {p.id} has no text saying what it changes and why'


def test_bundled_series_round_trip_on_rebuilt_tree(tmp_path):
    series = _bundled()
    root = make_tree(tmp_path / 'sgxl', reconstruct_base(series))
    before = snapshot(root)
    code, out = run('check', root)
    assert code == 0, out
    code, out = run('apply', root)
    assert code == 0, out
    assert read_state(root).applied == series.ids
    assert run('apply', root)[1].startswith('nothing to do')
    assert run('revert', root)[0] == 0
    assert snapshot(root) == before


def test_bundled_series_requires_and_conflicts(tmp_path):
    series = _bundled()
    base = reconstruct_base(series)
    needy = next((p for p in series.patches if p.requires), None)
    root = make_tree(tmp_path / 'sgxl', base)
    if needy is not None:
        code, out = run('apply', root, '--only', needy.id)
        assert code == 2 and f'patch {needy.id} requires' in out
    first = series.patches[0].files[0]
    hunk = first.hunks[0]
    k = next(i for i, (tag, _) in enumerate(hunk.lines) if tag == ' ')  # a context line of the first hunk
    lines = split_lines(base[first.path])
    lines[hunk.old_start - 1 + sum(t != '+' for t, _ in hunk.lines[:k])] = 'a local edit\n'
    (root / first.path).write_text(''.join(lines))
    before = snapshot(root)
    code, out = run('apply', root)
    header = f'CONFLICT patch {series.ids[0]} ({series.patches[0].path.name}): {first.path} {hunk.header}'
    assert code == 1 and header in out and "tree has:      'a local edit'" in out
    assert snapshot(root) == before


@needs_git
def test_bundled_series_matches_git_apply(tmp_path):
    series = _bundled()
    base = reconstruct_base(series)
    ours, theirs = make_tree(tmp_path / 'ours', base), make_tree(tmp_path / 'theirs', base)
    for p in series.patches:
        subprocess.run([GIT, 'apply', str(p.path)], cwd=theirs, check=True)
    assert run('apply', ours)[0] == 0
    (ours / STATE_FILE).unlink()
    assert snapshot(ours) == snapshot(theirs)


def test_bundled_fingerprints_are_current():
    """fingerprints.json must be regenerated (san-patch fingerprint, see README) whenever a patch changes."""
    series = _bundled()
    path = series.directory / 'fingerprints.json'
    if not path.exists():
        pytest.skip('fingerprints.json not generated yet')
    doc = json.loads(path.read_text())
    assert doc['patches'] == {p.id: p.sha256 for p in series.patches}, (
        'stale fingerprints.json: regenerate it with san-patch fingerprint "stylegan_xl 4241ff9=DIR" '
        '"stylesan-xl 0e52b14=DIR" (see san-patch fingerprint --help)')
    labels = [v['label'] for v in doc['versions']]
    assert any(v.startswith('stylegan_xl 4241ff9') for v in labels) and any('stylesan-xl' in v for v in labels)
    for v in doc['versions']:
        assert set(series.paths()) <= set(v['files']), v['label']


def test_san_patch_starts_without_importing_torch():
    """san_ext's top-level names load lazily, so the patch tool (stdlib + click) starts in a fraction of a second."""
    code = ('import sys, san_ext.patching.cli, san_ext; assert "torch" not in sys.modules, "torch imported"; '
            'from san_ext import SANLinear, losses; assert "torch" in sys.modules and losses.get("hinge")')
    subprocess.run([sys.executable, '-c', code], check=True)
