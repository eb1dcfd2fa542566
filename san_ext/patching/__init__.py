"""san-patch: apply san-ext's patch series to an existing StyleGAN-XL checkout, all or nothing.

Pure Python (no ``patch`` binary, no git): :mod:`.diff` parses git-style unified diffs, :mod:`.series` reads a
series folder, :mod:`.apply` places hunks in memory as ``git apply`` does, :mod:`.ops` plans check / apply /
revert / status, :mod:`.tree` writes the result atomically with rollback, :mod:`.state` keeps
``.san-patch.json``, :mod:`.fingerprints` recognises known upstream versions. The CLI is :mod:`.cli`.
Imports only the standard library (and click for the CLI), so it works in any StyleGAN-XL environment.
"""

from .apply import Conflict, Placement, VirtualTree, apply_patch
from .diff import FilePatch, Hunk, PatchSyntaxError, parse_diff
from .ops import (
    Checkout,
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
from .series import DEFAULT_SERIES, Patch, Series, SeriesError, bundled_series_dir, load_patch, load_series
from .state import STATE_FILE, TreeState, read_state
from .tree import TreeError, TreeWriteError, commit

__all__ = ['DEFAULT_SERIES', 'STATE_FILE', 'Checkout', 'Conflict', 'FilePatch', 'Hunk', 'NotAStyleGANXLTree', 'Patch',
           'PatchSyntaxError', 'Placement', 'Plan', 'RevertRefused', 'SelectionError', 'Series', 'SeriesError',
           'TreeError', 'TreeState', 'TreeWriteError', 'VirtualTree', 'apply_patch', 'bundled_series_dir', 'check',
           'commit', 'execute', 'load_patch', 'load_series', 'open_checkout', 'parse_diff', 'plan_apply',
           'plan_revert', 'read_state', 'status']
