"""check, apply, revert and status of a series on a checkout: plans computed in memory, then one commit.

Which patches are applied is read from the tree itself: going backwards through the series, a patch whose
reverse fits is applied (the state file breaks the rare tie where both directions fit), and reversing it gives
the tree as it was before. Applying or reverting a subset replays the wanted patches in series order on that
base, so patches applied out of order or by hand (``git apply``) are handled the same way as san-patch's own.
Nothing is written unless every hunk of every selected patch fits.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from .apply import Conflict, Placement, VirtualTree, apply_patch
from .diff import encode
from .fingerprints import DEFAULT_MARKERS, VersionMatch, load_fingerprints, match_versions
from .series import Series
from .state import STATE_FILE, FileRecord, StateError, TreeState, read_state
from .tree import commit, find_leftovers, missing_markers, read_bytes, read_text, sha256_bytes

__all__ = ['CheckReport', 'Checkout', 'NotAStyleGANXLTree', 'Plan', 'RevertRefused', 'SelectionError',
           'StatusReport', 'check', 'execute', 'open_checkout', 'plan_apply', 'plan_revert', 'status']


class NotAStyleGANXLTree(ValueError):
    """The path is not a checkout the series is meant for."""


class SelectionError(ValueError):
    """``--only`` names an unknown patch, or leaves out one that ``Requires:`` needs."""


class RevertRefused(ValueError):
    """Files were edited after applying; ``files`` names them."""

    def __init__(self, message: str, files: tuple[str, ...]):
        super().__init__(message)
        self.files = files


def _sha(text: Optional[str]) -> Optional[str]:
    return None if text is None else sha256_bytes(encode(text))


@dataclass
class Checkout:
    """A tree opened for a series: its files, san-patch's record and the patches found applied."""

    root: Path
    series: Series
    tree: VirtualTree
    state: Optional[TreeState]
    applied: tuple[str, ...]  # series order
    base: VirtualTree  # the tree with the applied patches reversed
    notes: list[str] = field(default_factory=list)

    def paths_of(self, ids: Iterable[str]) -> list[str]:
        ids = set(ids)
        return list(dict.fromkeys(p for patch in self.series.patches if patch.id in ids for p in patch.paths))


def _markers(series: Series) -> tuple[str, ...]:
    doc, _ = load_fingerprints(series)
    return tuple(doc.get('markers', DEFAULT_MARKERS)) if doc else DEFAULT_MARKERS


def open_checkout(root: Path, series: Series) -> Checkout:
    """Read ``root`` and find which patches of ``series`` it has; refuses a tree that is not StyleGAN-XL."""
    root = Path(root)
    if not root.is_dir():
        raise NotAStyleGANXLTree(f'{root} is not a directory')
    missing = missing_markers(root, _markers(series))
    if missing:
        raise NotAStyleGANXLTree(f'{root} does not look like a StyleGAN-XL checkout: {", ".join(missing)} '
                                 f'missing. Pass the top folder of your stylegan_xl clone (the one with train.py)')
    state = read_state(root)
    if state is not None and state.series != series.name:
        raise StateError(f'{root / STATE_FILE} records series {state.series}, not {series.name}: revert it with '
                         f'that series first (--series), or delete the file if it is stale')
    tree = VirtualTree(lambda p: read_text(root, p))
    applied, base, notes = _detect(tree, series, state)
    return Checkout(root, series, tree, state, applied, base, notes)


def _shift(placements: list[Placement]) -> int:
    return sum(abs(p.offset) for p in placements)


def _detect(tree: VirtualTree, series: Series, state: Optional[TreeState]) -> tuple[tuple[str, ...], VirtualTree,
                                                                                    list[str]]:
    base, found, notes = tree.copy(), [], []
    recorded = set(state.applied) if state else set()
    for patch in reversed(series.patches):
        rev = apply_patch(base, patch, reverse=True)
        if not rev.ok:
            continue
        fwd = apply_patch(base, patch)
        if fwd.ok and patch.id not in recorded:  # both directions fit: the nearer placement wins
            if _shift(rev.placements) > _shift(fwd.placements):
                continue
            notes.append(f'patch {patch.id} fits both forwards and backwards; taken as applied (its changes sit '
                         f'where the patch says)')
        found.append(patch.id)
        base.update(rev.contents, rev.modes)
    applied = tuple(i for i in series.ids if i in found)
    for i in sorted(recorded - set(applied)):
        notes.append(f'{STATE_FILE} records patch {i} as applied, but its changes are not in the tree '
                     f'(undone outside san-patch?)')
    return applied, base, notes


def _replay(co: Checkout, ids: Iterable[str]) -> tuple[VirtualTree, list[Conflict], list[Placement]]:
    """The base with ``ids`` applied in series order; hunks that do not fit are reported and skipped."""
    ids, tree, conflicts, placements = set(ids), co.base.copy(), [], []
    for patch in co.series.patches:
        if patch.id in ids:
            result = apply_patch(tree, patch)
            tree.update(result.contents, result.modes)
            conflicts += result.conflicts
            placements += result.placements
    return tree, conflicts, placements


def _select(series: Series, only: Optional[Iterable[str]]) -> tuple[str, ...]:
    if only is None:
        return series.ids
    only = tuple(only)
    unknown = [i for i in only if i not in series.ids]
    if unknown or not only:
        raise SelectionError(f'--only {",".join(only)}: unknown patch {", ".join(unknown) or "(none given)"}; the '
                             f'series {series.name} has {", ".join(series.ids)}')
    return tuple(i for i in series.ids if i in only)


@dataclass
class Plan:
    """What an apply or revert will write: new file texts, modes of new files, the next state, or conflicts."""

    checkout: Checkout
    action: str  # 'apply' | 'revert'
    selected: tuple[str, ...]  # patches this command changes (newly applied or reverted)
    after: tuple[str, ...]  # patches applied once written
    changes: dict[str, Optional[str]] = field(default_factory=dict)
    modes: dict[str, int] = field(default_factory=dict)
    state: Optional[TreeState] = None
    conflicts: list[Conflict] = field(default_factory=list)
    placements: list[Placement] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def noop(self) -> bool:
        return not self.selected


def _finish(plan: Plan, final: VirtualTree, before: dict[str, Optional[str]]) -> Plan:
    """Fill in the changed files and the next state from the final tree."""
    co = plan.checkout
    for path in co.paths_of(co.applied + plan.selected):
        if final.get(path) != co.tree.get(path):
            plan.changes[path] = final.get(path)
            if path in final.modes and co.tree.get(path) is None:
                plan.modes[path] = final.modes[path]
    if plan.after:
        files = {p: FileRecord(before[p], _sha(final.get(p))) for p in co.paths_of(plan.after)}
        patches = {p.id: p.sha256 for p in co.series.patches if p.id in plan.after}
        plan.state = TreeState(co.series.name, plan.after, patches, files)
    return plan


def _before(co: Checkout, paths: Iterable[str]) -> dict[str, Optional[str]]:
    """Hash of each file before the series: as recorded while the file is as san-patch left it, else (edited
    since, or never recorded) the base the detection found, which keeps the user's edits."""
    rec = co.state.files if co.state else {}
    edited = set(_edited(co, paths))
    return {p: rec[p].before if p in rec and p not in edited else _sha(co.base.get(p)) for p in paths}


def plan_apply(co: Checkout, only: Optional[Iterable[str]] = None) -> Plan:
    """Apply the selected patches (default all) that are not applied yet, on top of those that are."""
    selected = _select(co.series, only)
    todo = tuple(i for i in selected if i not in co.applied)
    after = tuple(i for i in co.series.ids if i in co.applied or i in selected)
    plan = Plan(co, 'apply', todo, after, notes=list(co.notes))
    if not todo:
        return plan
    for i in todo:
        needed = [r for r in co.series.get(i).requires if r not in after]
        if needed:
            raise SelectionError(f'patch {i} requires {", ".join(needed)}, which is neither applied nor selected: '
                                 f'use --only {",".join(sorted(set(selected) | set(needed)))}')
    edited = _edited(co, co.paths_of(co.applied))
    if edited:
        plan.notes.append(f'edited since san-patch last wrote them: {", ".join(edited)}; the edits are kept and '
                          f'become part of what revert gives back')
    final, plan.conflicts, plan.placements = _replay(co, after)
    return _finish(plan, final, _before(co, co.paths_of(after)))


def plan_revert(co: Checkout, only: Optional[Iterable[str]] = None, force: bool = False) -> Plan:
    """Reverse the selected applied patches (default all); refuses if their files were edited after applying."""
    selected = _select(co.series, only) if only is not None else co.applied
    todo = tuple(i for i in selected if i in co.applied)
    after = tuple(i for i in co.applied if i not in todo)
    plan = Plan(co, 'revert', todo, after, notes=list(co.notes))
    plan.notes += [f'patch {i} is not applied; nothing to revert for it' for i in selected if i not in co.applied]
    if not todo:
        return plan
    for i in after:
        needs = [r for r in co.series.get(i).requires if r in todo]
        if needs:
            raise SelectionError(f'patch {i} stays applied and requires {", ".join(needs)}: revert it too '
                                 f'(--only {",".join(sorted(set(todo) | {i}))})')
    edited = _edited(co, co.paths_of(todo))
    if edited and not force:
        raise RevertRefused(f'edited after san-patch applied the series: {", ".join(edited)}. Reverting would '
                            f'keep your edits only where they do not overlap the patches; save them, then run '
                            f'revert --force (or undo the edits)', tuple(edited))
    if co.state is None:
        plan.notes.append(f'no {STATE_FILE} in the tree: the applied patches were found from the file contents, '
                          f'so edits made after applying cannot be told apart')
    final, plan.conflicts, plan.placements = _replay(co, after)
    before = _before(co, co.paths_of(co.applied))
    for path in co.paths_of(todo):
        untouched = path not in co.paths_of(after) and path not in edited
        if co.state and path in co.state.files and untouched and _sha(final.get(path)) != before[path]:
            plan.conflicts.append(Conflict('', path, '', 0, f'reverting would not give back the file recorded in '
                                                            f'{STATE_FILE} before applying (SHA-256 differs)'))
    return _finish(plan, final, before)


def _edited(co: Checkout, paths: Iterable[str]) -> list[str]:
    if co.state is None:
        return []
    return [p for p in paths if p in co.state.files and _sha(co.tree.get(p)) != co.state.files[p].after]


def execute(plan: Plan) -> None:
    """Write a conflict-free plan, state file included, all or nothing (see :func:`tree.commit`)."""
    if plan.conflicts:
        raise ValueError('a plan with conflicts cannot be written')
    if plan.noop:
        return
    root = plan.checkout.root
    changes: dict[str, Optional[bytes]] = {p: None if t is None else encode(t) for p, t in plan.changes.items()}
    if plan.state is not None:
        changes[STATE_FILE] = plan.state.to_bytes()
    elif (root / STATE_FILE).exists():
        changes[STATE_FILE] = None
    commit(root, changes, plan.modes)


@dataclass
class CheckReport:
    """What ``check`` found: version matches, applied patches, conflicts of the rest, leftovers."""

    matches: list[VersionMatch]
    applied: tuple[str, ...]
    missing: tuple[str, ...]
    conflicts: list[Conflict]
    placements: list[Placement]
    leftovers: list[str]
    notes: list[str]


def check(co: Checkout, only: Optional[Iterable[str]] = None) -> CheckReport:
    """Does the series (or ``only``) apply, which known version the tree looks like, what is applied."""
    selected = _select(co.series, only)
    missing = tuple(i for i in selected if i not in co.applied)
    notes = list(co.notes)
    doc, fp_notes = load_fingerprints(co.series)
    notes += fp_notes
    matches = match_versions(doc, lambda p: read_bytes(co.root, p)) if doc else []
    conflicts, placements = [], []
    if missing:
        plan = plan_apply(co, only)
        conflicts, placements = plan.conflicts, plan.placements
    leftovers = find_leftovers(co.root, co.series.paths())
    return CheckReport(matches, co.applied, missing, conflicts, placements, leftovers, notes)


@dataclass
class StatusReport:
    """Applied patches, and whether files changed since san-patch wrote them."""

    applied: tuple[str, ...]
    recorded: Optional[tuple[str, ...]]  # per the state file; None without one
    changed: list[str]  # files edited after san-patch wrote them
    stale_patches: list[str]  # applied patches whose patch file changed since
    leftovers: list[str]
    notes: list[str]


def status(co: Checkout) -> StatusReport:
    stale = [i for i in co.applied if co.state and i in co.state.patches
             and co.state.patches[i] != co.series.get(i).sha256]
    changed = _edited(co, co.state.files) if co.state else []
    return StatusReport(co.applied, co.state.applied if co.state else None, changed, stale,
                        find_leftovers(co.root, co.series.paths()), list(co.notes))
