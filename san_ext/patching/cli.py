"""``san-patch`` / ``python -m san_ext.patching``: apply san-ext's patch series to a StyleGAN-XL checkout."""

from __future__ import annotations

import functools
import os
import shlex
import sys
from pathlib import Path
from typing import Callable, Optional

import click

from .apply import Conflict, Placement
from .diff import PatchSyntaxError
from .fingerprints import FINGERPRINT_FILE, VersionMatch, build_fingerprints
from .ops import (
    NotAStyleGANXLTree,
    Plan,
    RevertRefused,
    SelectionError,
    check,
    execute,
    open_checkout,
    plan_apply,
    plan_revert,
    status,
)
from .series import Series, SeriesError, load_series
from .state import STATE_FILE, StateError
from .tree import TreeError, TreeWriteError

__all__ = ['EXIT_BAD_SERIES', 'EXIT_CONFLICT', 'EXIT_NOT_STYLEGAN_XL', 'EXIT_OK', 'EXIT_WRITE_FAILED', 'main']

EXIT_OK, EXIT_CONFLICT, EXIT_NOT_STYLEGAN_XL, EXIT_BAD_SERIES, EXIT_WRITE_FAILED = 0, 1, 2, 3, 4
_ERRORS = ((RevertRefused, EXIT_CONFLICT), (NotAStyleGANXLTree, EXIT_NOT_STYLEGAN_XL),
           (SelectionError, EXIT_NOT_STYLEGAN_XL), (TreeError, EXIT_NOT_STYLEGAN_XL),
           (TreeWriteError, EXIT_WRITE_FAILED), (PatchSyntaxError, EXIT_BAD_SERIES), (SeriesError, EXIT_BAD_SERIES),
           (StateError, EXIT_BAD_SERIES), (OSError, EXIT_NOT_STYLEGAN_XL))


def _fail(message: str, code: int) -> None:
    click.echo(f'san-patch: error: {message}', err=True)
    sys.exit(code)


def _handled(fn: Callable) -> Callable:
    """Known errors become one clear line on stderr and the documented exit code, not a traceback."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except BrokenPipeError:  # output piped into `head`: stop quietly, as a killed writer would
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            sys.exit(141)
        except tuple(e for e, _ in _ERRORS) as err:
            _fail(str(err), next(code for e, code in _ERRORS if isinstance(err, e)))
    return wrapper


def _ids(ctx, param, value: Optional[str]) -> Optional[tuple[str, ...]]:
    if value is None:
        return None
    ids = tuple(v.strip() for v in value.split(',') if v.strip())
    if not ids:
        raise click.BadParameter('give patch ids separated by commas, e.g. --only a,b', ctx, param)
    return ids


def _series(path: Optional[str]) -> Series:
    return load_series(path)


_PATH = click.argument('path', type=click.Path(file_okay=False, path_type=Path))
_ONLY = click.option('--only', metavar='IDS', callback=_ids, help='Comma-separated patch ids, e.g. a,b (default: all)')
_SERIES = click.option('--series', 'series_dir', metavar='DIR', type=click.Path(exists=True, file_okay=False),
                       help='Patch series folder (default: the bundled stylegan_xl-4241ff9)')
_DRY = click.option('--dry-run', is_flag=True, help='Show what would change and write nothing')


@click.group(context_settings={'max_content_width': 120, 'help_option_names': ['-h', '--help']})
def main() -> None:
    """Apply san-ext's patch series to an existing StyleGAN-XL checkout (git clone or plain copy).

    The bundled series (autonomousvision/stylegan_xl@4241ff9) adds SAN discriminator heads and loss
    (--loss san|hinge, default hinge), the SAN weight re-projection after each D step, support for current
    PyTorch, timm 1.x and Python 3.12, and an optional torchrun launch. Patches apply all or nothing: if any hunk
    does not fit, nothing is written and the conflicting hunks are listed. State is kept in PATH/.san-patch.json.

    \b
    Examples:
      san-patch check ~/stylegan_xl                 # does it apply? which upstream version is it?
      san-patch apply ~/stylegan_xl                 # all patches (again: a no-op)
      san-patch apply ~/stylegan_xl --only a,b      # SAN heads, loss and re-projection only
      san-patch status ~/stylegan_xl
      san-patch revert ~/stylegan_xl                # back to the tree as it was

    \b
    Exit codes:
      0  success, or nothing to do
      1  conflicts: the patches do not fit (nothing was written), or revert refused (files edited since)
      2  PATH is not a StyleGAN-XL checkout or cannot be read, or a bad --only (unknown id, missing Requires:)
      3  the series, fingerprints.json or .san-patch.json is malformed
      4  writing failed; the tree was restored (the message says so, or which backups to copy back)
    """


def _hunks(n: int) -> str:
    return f'{n} hunk conflicts' if n == 1 else f'{n} hunks conflict'


def _echo_conflicts(conflicts: list[Conflict], series: Series) -> None:
    for c in conflicts:
        patch = f'patch {c.patch_id} ({series.get(c.patch_id).path.name})' if c.patch_id else 'state'
        where = f' {c.hunk} (patch line {c.patch_line})' if c.hunk else ''
        click.echo(f'  CONFLICT {patch}: {c.path}{where}')
        click.echo(f'    {c.reason}')
        for line in c.detail:
            click.echo(f'      {line}')


def _echo_offsets(placements: list[Placement]) -> None:
    moved = [p for p in placements if p.offset]
    for p in moved:
        click.echo(f'  note: patch {p.patch_id} {p.path} {p.hunk} fits {abs(p.offset)} line(s) '
                   f'{"below" if p.offset > 0 else "above"} where the patch says')


def _echo_match(matches: list[VersionMatch]) -> None:
    if not matches:
        click.echo(f'looks like: unknown (the series has no {FINGERPRINT_FILE})')
        return
    best = matches[0]
    click.echo(f'looks like: {best.label}: {best.identical}/{best.total} files identical')
    for what, files in (('modified locally', best.modified), ('missing', best.missing),
                        ('not in that version', best.unexpected)):
        if files:
            click.echo(f'  {what}: {", ".join(files)}')
    for m in matches[1:]:
        click.echo(f'  (vs {m.label}: {m.identical}/{m.total} identical)')
    if best.kind == 'other':
        base = next((m.label for m in matches if m.kind == 'base'), 'another version')
        click.echo(f'note: the series is made for {base}; this tree is closer to {best.label}')


def _echo_notes(notes: list[str]) -> None:
    for n in notes:
        click.echo(f'note: {n}')


@main.command('check')
@_PATH
@_ONLY
@_SERIES
@_handled
def check_cmd(path: Path, only: Optional[tuple[str, ...]], series_dir: Optional[str]) -> None:
    """Say whether the series applies to PATH, which upstream version PATH looks like, what is applied already and
    which hunks conflict with local changes. Writes nothing. Exit 0 if it applies (or is applied), 1 if not."""
    series = _series(series_dir)
    co = open_checkout(path, series)
    rep = check(co, only)
    click.echo(f'tree: {co.root}')
    click.echo(f'series: {series.name} ({" ".join(series.ids)})')
    _echo_match(rep.matches)
    click.echo(f'applied: {", ".join(rep.applied) or "none"}')
    if rep.leftovers:
        click.echo(f'warning: files left by an interrupted san-patch run: {", ".join(rep.leftovers)}')
    _echo_notes(rep.notes)
    if not rep.missing:
        click.echo('result: already applied, nothing to do')
    elif rep.conflicts:
        n = len(rep.conflicts)
        click.echo(f'result: does NOT apply: {_hunks(n)} with the tree; apply would write nothing')
        _echo_conflicts(rep.conflicts, series)
        sys.exit(EXIT_CONFLICT)
    else:
        click.echo(f'result: {", ".join(rep.missing)} apply cleanly')
        _echo_offsets(rep.placements)


def _echo_plan(plan: Plan, dry_run: bool) -> None:
    series = plan.checkout.series
    verb = {'apply': 'applied', 'revert': 'reverted'}[plan.action]
    for i in plan.selected:
        click.echo(f'  {i}  {series.get(i).subject}')
    files = sorted(plan.changes)
    if dry_run:
        click.echo(f'dry run: would change {len(files)} file(s): {", ".join(files)}')
    else:
        click.echo(f'{verb} {", ".join(plan.selected)}: {len(files)} file(s) changed: {", ".join(files)}')
        click.echo(f'applied now: {", ".join(plan.after) or "none"}'
                   + (f' (recorded in {STATE_FILE})' if plan.after else ''))


def _run_plan(plan: Plan, dry_run: bool) -> None:
    series = plan.checkout.series
    _echo_notes(plan.notes)
    if plan.noop:
        what = 'already applied' if plan.action == 'apply' else 'not applied'
        ids = plan.after if plan.action == 'apply' else ()
        click.echo(f'nothing to do: the selected patches are {what}' + (f' ({", ".join(ids)})' if ids else ''))
        return
    if plan.conflicts:
        click.echo(f'nothing written: {_hunks(len(plan.conflicts))} with the tree {plan.checkout.root}')
        _echo_conflicts(plan.conflicts, series)
        sys.exit(EXIT_CONFLICT)
    _echo_offsets(plan.placements)
    if not dry_run:
        execute(plan)
    _echo_plan(plan, dry_run)


@main.command('apply')
@_PATH
@_ONLY
@_SERIES
@_DRY
@_handled
def apply_cmd(path: Path, only: Optional[tuple[str, ...]], series_dir: Optional[str], dry_run: bool) -> None:
    """Apply the series (or --only some patches, with what they require) to PATH, all or nothing. Patches already
    applied are skipped, so running it twice is a no-op."""
    co = open_checkout(path, _series(series_dir))
    _run_plan(plan_apply(co, only), dry_run)


@main.command('revert')
@_PATH
@_ONLY
@_SERIES
@_DRY
@click.option('--force', is_flag=True, help='Revert even if patched files were edited after applying (edits '
                                            'outside the patched hunks are kept)')
@_handled
def revert_cmd(path: Path, only: Optional[tuple[str, ...]], series_dir: Optional[str], dry_run: bool,
               force: bool) -> None:
    """Reverse the applied patches (or --only some), newest first, all or nothing. Refuses when a patched file
    was edited after applying, naming it, unless --force."""
    co = open_checkout(path, _series(series_dir))
    _run_plan(plan_revert(co, only, force), dry_run)


@main.command('status')
@_PATH
@_SERIES
@_handled
def status_cmd(path: Path, series_dir: Optional[str]) -> None:
    """Which patches are applied to PATH, and whether patched files changed since san-patch wrote them."""
    series = _series(series_dir)
    co = open_checkout(path, series)
    rep = status(co)
    click.echo(f'tree: {co.root}')
    click.echo(f'series: {series.name}')
    for p in series.patches:
        click.echo(f'  {p.id}  {"applied    " if p.id in rep.applied else "not applied"}  {p.subject}')
    if rep.recorded is None:
        click.echo(f'no {STATE_FILE}: san-patch has not written to this tree (applied patches found by content)')
    else:
        click.echo(f'{STATE_FILE} records: {", ".join(rep.recorded) or "none"}')
        click.echo(f'changed since applied: {", ".join(rep.changed) or "nothing"}')
    if rep.stale_patches:
        click.echo(f'warning: the series has a newer version of {", ".join(rep.stale_patches)} than was applied')
    if rep.leftovers:
        click.echo(f'warning: files left by an interrupted san-patch run: {", ".join(rep.leftovers)}')
    _echo_notes(rep.notes)


@main.command('list')
@_SERIES
@_handled
def list_cmd(series_dir: Optional[str]) -> None:
    """List the patches of the series: id, subject, what each requires."""
    series = _series(series_dir)
    click.echo(f'series {series.name} ({series.directory})')
    for p in series.patches:
        req = f'  [requires {", ".join(p.requires)}]' if p.requires else ''
        click.echo(f'  {p.id}  {p.subject}{req}')
        click.echo(f'     files: {", ".join(p.paths)}')


def _labelled(ctx, param, values: tuple[str, ...]) -> list[tuple[str, Path]]:
    out = []
    for v in values:
        label, sep, directory = v.rpartition('=')
        if not sep or not label.strip() or not Path(directory).is_dir():
            raise click.BadParameter(f'{v!r}: expected LABEL=DIR with an existing DIR, e.g. '
                                     f'"stylegan_xl 4241ff9=/tmp/sgxl"', ctx, param)
        out.append((label.strip(), Path(directory)))
    return out


@main.command('fingerprint')
@click.argument('trees', nargs=-1, required=True, metavar='LABEL=DIR...', callback=_labelled)
@_SERIES
@click.option('--output', metavar='FILE', type=click.Path(dir_okay=False, path_type=Path),
              help=f'Where to write (default: {FINGERPRINT_FILE} in the series folder)')
@_handled
def fingerprint_cmd(trees: list[tuple[str, Path]], series_dir: Optional[str], output: Optional[Path]) -> None:
    """Record the SHA-256 of known upstream trees for `check` (maintainers). Each DIR is an exported checkout;
    where the whole series applies, the patched result is recorded too.

    \b
    git --git-dir MIRROR/stylegan_xl archive 4241ff9 | tar -x -C /tmp/sgxl
    git --git-dir MIRROR/san archive 0e52b14 stylesan-xl | tar -x -C /tmp/san
    san-patch fingerprint "stylegan_xl 4241ff9=/tmp/sgxl" "stylesan-xl 0e52b14=/tmp/san/stylesan-xl"

    The first LABEL=DIR is the upstream version the series is made for.
    """
    import json
    series = _series(series_dir)
    command = 'san-patch fingerprint ' + ' '.join(shlex.quote(f'{label}=DIR') for label, _ in trees)
    doc = build_fingerprints(series, trees, command)
    out = output or series.directory / FINGERPRINT_FILE
    out.write_text(json.dumps(doc, indent=1) + '\n', encoding='utf-8')
    for v in doc['versions']:
        present = sum(h is not None for h in v['files'].values())
        click.echo(f'  {v["label"]}: {present} of the {len(v["files"])} recorded files present')
    click.echo(f'wrote {out}')
