"""``python -m san_ext.bench.mutation``: how many planted bugs the suite catches, per module (mutmut 3).

Mutation testing plants one small bug at a time (a flipped operator, a changed constant, a dropped argument, a
string altered) in a copy of the code and runs the tests that reach it; a mutant the tests pass is a bug the suite
would let through. We use mutmut 3 rather than cosmic-ray: it is configured in ``pyproject.toml`` alone
(``[tool.mutmut]``: the modules and their targeted tests), needs no session database or worker setup, runs each
mutant only against the tests that cover the mutated function (a trampoline picks the mutant at run time, so the
copy is written once), and is maintained and on PyPI for current Python.

This command runs ``mutmut run`` in the checkout (``--no-run`` only tallies an earlier run), then reads mutmut's
per-file results (``mutants/**/*.py.meta``) and prints, per module, the mutants killed, surviving, with no test
reaching them, timed out, and those triaged as *equivalent* (:data:`EQUIVALENT`, each with the reason it cannot
change behaviour); the score is killed / (all - equivalent). ``mutmut results`` lists the survivors and
``mutmut show NAME`` shows one. It is a benchmark, not part of CI (a full run takes minutes).

\b
Examples:
  pip install mutmut
  python -m san_ext.bench.mutation
  python -m san_ext.bench.mutation --no-run --out runs/mutation.json
  python -m san_ext.bench.mutation --no-run --by-file --markdown
  python -m san_ext.bench.mutation 'san_ext.layers.*'   # re-test one module's mutants after adding tests
"""

from __future__ import annotations

import json
import math
import os
import platform
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Optional

import click

from .common import render_table, write_json

__all__ = ['EQUIVALENT', 'MODULES', 'NEEDS_GPU', 'format_table', 'module_of', 'status_of', 'tally']

# The modules the suite is held to (issue 23); pyproject.toml's [tool.mutmut] source_paths lists the same.
MODULES = ('san_ext/layers.py', 'san_ext/losses.py', 'san_ext/convert.py', 'san_ext/legacy/',
           'san_ext/data/storage.py', 'san_ext/metrics/stats.py')

# mutmut's exit codes (mutmut.stats.status_by_exit_code), folded into the columns of our table.
_STATUS = {1: 'killed', 3: 'killed', 0: 'survived', 5: 'no tests', 33: 'no tests', 34: 'skipped', 36: 'timeout',
           24: 'timeout', -24: 'timeout', 152: 'timeout', 255: 'timeout', 37: 'killed', None: 'not checked'}
COLUMNS = ('killed', 'survived', 'needs GPU', 'no tests', 'timeout', 'skipped', 'not checked', 'other')

# mutmut forks each mutant's run from a parent that has run the tests once: with torch's OpenMP pool started there,
# a forked child spins in it until the CPU limit kills it (measured: 53 timeouts in the first 448 mutants with
# torch's default threads, none with one).
_ONE_THREAD = dict(OMP_NUM_THREADS='1', MKL_NUM_THREADS='1')
# The fused op's tests run its C++ autograd on CPU when the extension builds: without a GPU, torch needs the list.
_ARCH = dict(TORCH_CUDA_ARCH_LIST=os.environ.get('TORCH_CUDA_ARCH_LIST') or '8.0')

# Survivors read and shown not to change behaviour, by mutmut name, with the reason.  A name goes stale when its
# function is edited (mutmut numbers mutants within a function); stale names are reported, never counted.
_FALSE_OR_NONE = '`real` is only read for its truth value (KLWGANLoss._dir_weight), so None acts as False'
_CAST = 'copy_ into the float64 buffer casts anyway, to the same float64 values'
_BYTEARRAY_AT_SIZE = ('read_pickle passes the file size; a BYTEARRAY8 of n >= that size cannot be read in full '
                      'whichever branch is taken (its opcode and length take 9 bytes), so the same error follows')
EQUIVALENT: dict[str, str] = {
    'san_ext.losses.xǁGANLossǁd_fake__mutmut_18': _FALSE_OR_NONE,
    'san_ext.losses.xǁGANLossǁpair_direction_weights__mutmut_8': _FALSE_OR_NONE,
    'san_ext.losses.xǁKLWGANLossǁweights__mutmut_11': 'logsumexp over dim 0 without keepdim broadcasts against v '
                                                       'exactly as the kept [1, ...] shape does',
    'san_ext.losses.xǁKLWGANLossǁweights__mutmut_13': 'keepdim=False: same broadcast as above',
    'san_ext.losses.x_register__mutmut_8': 'the separator of a join over SAN_ALIASES, which has one entry',
    'san_ext.metrics.stats.xǁStreamingStatsǁstate_dict__mutmut_5': "np.array(int)'s default dtype is int64 on 64-bit "
                                                                   'Linux and macOS and under numpy 2',
    'san_ext.metrics.stats.xǁStreamingStatsǁstate_dict__mutmut_7': 'dtype dropped: the same default int64',
    'san_ext.metrics.stats.xǁStreamingStatsǁfrom_state_dict__mutmut_5': _CAST,
    'san_ext.metrics.stats.xǁStreamingStatsǁfrom_state_dict__mutmut_7': _CAST,
    'san_ext.metrics.stats.xǁStreamingStatsǁfrom_state_dict__mutmut_25': _CAST,
    'san_ext.metrics.stats.xǁStreamingStatsǁfrom_state_dict__mutmut_27': _CAST,
    'san_ext.metrics.stats.x__as_float64__mutmut_1': "astype(None) is numpy's default float64",
    'san_ext.metrics.stats.x_frechet_distance__mutmut_23': "np.finfo(None) is float64's today (numpy 2 deprecates it "
                                                           'with a warning)',
    'san_ext.convert.x__input_bias_for__mutmut_44': 'beta.to(None) returns beta; san.bias.copy_ casts it anyway',
    **{f'san_ext.convert.x__build_san_layer__mutmut_{i}': 'norm is clamp_min(1e-12)-ed, so norm.abs() == norm'
       for i in (70, 71)},
    **{f'san_ext.convert.x__as_pair__mutmut_{i}': "only 'same' reaches _as_pair, and only any(p != 0) reads it: "
                                                  'every variant is all non-zero' for i in (1, 3, 4)},
    'san_ext.convert.x__set_submodule__mutmut_7': "root.get_submodule('') is root",
    'san_ext.convert.xǁSANDiscriminatorǁ_dir_by_second_pass__mutmut_14': 'requires_grad_() defaults to True',
    **{f'san_ext.convert.xǁSANDiscriminatorǁ_dir_by_second_pass__mutmut_{i}': "the route is only compared with None "
                                                                              "and 'fun': any other string is dir"
       for i in (17, 18)},
    **{f'san_ext.data.storage.xǁStorageǁ__init____mutmut_{i}': '"" instead of None: _zipfile() opens anyway (the pid '
                                                               "never matches) and close() resets both to None"
       for i in (13, 14)},
    'san_ext.data.storage.xǁStorageǁ_zipfile__mutmut_8': "ZipFile's default mode is 'r'",
    'san_ext.data.storage.xǁStorageǁopen__mutmut_4': "ZipFile.open's default mode is 'r'",
    'san_ext.data.storage.xǁStorageǁ__getstate____mutmut_4': '_zip_pid is only read when _zip is set, and the '
                                                            'copy has _zip=None, so it reopens either way',
    'san_ext.layers.x__normalize_rows__mutmut_10': 'Tensor.norm(p=None) is the 2-norm: bit-identical on 2-D and 4-D',
    'san_ext.layers.x__split_into_direction_and_scale__mutmut_10': 'Tensor.norm(p=None) is the 2-norm: '
                                                                    'bit-identical on 2-D and 4-D',
    'san_ext.layers.x__autocast_on__mutmut_1': "is_autocast_enabled(None) raises TypeError, and the fallback "
                                               "is_autocast_enabled() answers for CUDA too (checked on the installed "
                                               'torch)',
    'san_ext.losses.x__mean__mutmut_1': 'x.mean(None) is the mean of all elements: aten::mean.dim takes '
                                        '`int[1]? dim` (checked on the installed torch)',
    **{f'san_ext.metrics.stats.xǁStreamingStatsǁall_reduce__mutmut_{i}': "dist.all_reduce_sum moves the count to the "
                                                                        "backend's device and copies it back, so "
                                                                        "where it is built never matters"
       for i in (4, 7)},
    'san_ext.layers.xǁSANLinearǁ__init____mutmut_6': 'nn.Linear only tests `if bias:`, so None acts as False',
    'san_ext.layers.xǁSANConv2dǁ__init____mutmut_16': 'nn.Conv2d only tests `if bias:`, so None acts as False',
    'san_ext.layers.xǁSANConv2dǁ__init____mutmut_27': "groups=1 dropped: nn.Conv2d's default is groups=1",
    'san_ext.layers.xǁSANEmbeddingǁforward__mutmut_9': "eps dropped: F.normalize's default 1e-12 equals _EPS",
    'san_ext.legacy.unpickler.x__latin1__mutmut_16': "Python's codec names are case-insensitive: 'LATIN1' is latin-1",
    'san_ext.legacy.unpickler.xǁ_Unpicklerǁ_load_bytearray8__mutmut_14': _BYTEARRAY_AT_SIZE,
    'san_ext.legacy.unpickler.xǁ_Unpicklerǁ_load_bytearray8__mutmut_15': _BYTEARRAY_AT_SIZE,
    'san_ext.legacy.unpickler.xǁ_Unpicklerǁ_dill_helper__mutmut_5': "_import_module's `safe` argument is never read",
    **{f'san_ext.legacy.unpickler.x_allowed_globals__mutmut_{i}': "the throwaway reader's path is only used in error "
                                                                  'messages; the table does not depend on it'
       for i in (3, 6, 7)},
    'san_ext.legacy.unpickler.x__np_scalar__mutmut_13': 'count=1 dropped: the data was checked to be exactly one '
                                                        'item long, so frombuffer reads one item either way',
    'san_ext.legacy.unpickler.x__np_dtype__mutmut_2': 'the `copy` argument is never read (always copy=True)',
    **{f'san_ext.legacy.unpickler.x__np_reconstruct__mutmut_{i}': 'the `dtype` argument is never read'
       for i in (1, 2)},
    **{f'san_ext.legacy.unpickler.x__np_reconstruct__mutmut_{i}': "the placeholder's dtype and length: numpy's "
                                                                  'pickles always follow with a BUILD whose state '
                                                                  'replaces shape, dtype and data'
       for i in (7, 9, 10)},
    'san_ext.legacy.unpickler.x__rebuild_tensor__mutmut_1': 'the `requires_grad` argument is never read (parameters '
                                                            'set it)',
    **{f'san_ext.legacy.unpickler.x__rebuild_tensor__mutmut_{i}': 'warning filters match messages case-insensitively'
       for i in (33, 34)},
    'san_ext.legacy.unpickler.x__rebuild_tensor__mutmut_29': 'the block emits no warning but the TypedStorage one, so '
                                                             'ignoring all of them ignores the same',
    'san_ext.legacy.unpickler.x__rebuild_tensor__mutmut_63': "set_ replaces the placeholder's storage, size and "
                                                             'stride, whatever its length',
    **{f'san_ext.legacy.unpickler.x__load_from_bytes__mutmut_{i}': 'weights_only None or left out is True on torch '
                                                                   '>= 2.6 (the installed one); on torch 2.1-2.5 it '
                                                                   'is False, and the canary test kills it there'
       for i in (10, 13)},
    **{f'san_ext.legacy.unpickler.x_read_pickle__mutmut_{i}': 'reading more than 4 bytes for the zip check changes '
                                                              'nothing: startswith, then seek(0)' for i in (14, 15)},
    'san_ext.legacy.unpickler.xǁ_Unpicklerǁ__init____mutmut_1': 'read_pickle always passes the file size',
    **{name: "type() takes __module__ from the calling module's globals, which is the same module"
       for name in ('san_ext.legacy.unpickler.xǁ_Unpicklerǁ__init____mutmut_18',
                    'san_ext.legacy.unpickler.xǁ_Unpicklerǁ__init____mutmut_19',
                    'san_ext.legacy.records.x_record_class__mutmut_11',
                    'san_ext.legacy.records.x_record_class__mutmut_12')},
    'san_ext.legacy.records.xǁPersistentRecordǁ__init____mutmut_11': "codec names are case-insensitive: 'UTF-8' is "
                                                                     'utf-8',
    'san_ext.legacy.allowlist.x_is_torch_nn_class__mutmut_7': 'no public torch.nn attribute starting with an '
                                                              'underscore is an nn.Module class (checked on the '
                                                              'installed torch)',
    **{f'san_ext.legacy.x__meta__mutmut_{i}': "the D view's path only appears in a ConversionError that _meta catches"
       for i in (11, 13, 16, 17)},
    'san_ext.legacy.generator.x__segments__mutmut_51': 'only the lengths of the segments are read',
    'san_ext.legacy.discriminator.x_convert_discriminator__mutmut_51': 'the values of keys that no rule maps are never '
                                                                       'read (they are only listed as unexpected)',
    'san_ext.legacy.discriminator.x__feature_tensors__mutmut_43': "an unknown tensor's value is read only if its key "
                                                                  "is one of ours (proj.*), which upstream's "
                                                                  'F_RandomProj (pretrained, scratch) never records; '
                                                                  'otherwise it is only listed as unexpected',
    'san_ext.legacy.convert.x_load_converted__mutmut_38': 'load_state_dict only tests `if strict:`, so None acts as '
                                                          'False',
}

# Survivors that only a CUDA device can tell apart (a dropped device= is the CPU default): each has a `-m cuda`
# test, skipped without a GPU; they stay survivors in the score until a GPU run kills them.
NEEDS_GPU: dict[str, str] = {
    **{f'san_ext.losses.xǁGANLossǁdirection_weights__mutmut_{i}': 'test_direction_weights_stay_on_the_logits_device'
       for i in (19, 22)},
    **{f'san_ext.metrics.stats.xǁStreamingStatsǁ{fn}__mutmut_{i}': 'test_shards_and_loads_land_on_the_requested_device'
       for fn, i in (('merge', 7), ('merge', 10), ('from_state_dict', 12), ('from_state_dict', 14), ('load', 5),
                     ('load', 7), ('__init__', 12), ('__init__', 15), ('__init__', 20), ('__init__', 24),
                     ('update', 11), ('update', 13))},
    'san_ext.legacy.x_load__mutmut_122': 'test_load_moves_the_networks_to_the_device',
}


def repo_root() -> Path:
    """The checkout this package was installed from (``pip install -e .``); mutmut needs its pyproject.toml."""
    root = Path(__file__).resolve().parents[2]
    if not (root / 'pyproject.toml').is_file() or not (root / 'tests').is_dir():
        raise click.ClickException(f'{root} is not a san-ext checkout with pyproject.toml and tests/: mutation '
                                   'testing runs on a clone installed with `pip install -e ".[test]"`.')
    return root


def status_of(exit_code: Optional[int]) -> str:
    """mutmut's exit code for one mutant as a column of the table (a kill by type check counts as killed)."""
    return _STATUS.get(exit_code, 'other')


def module_of(mutant: str) -> str:
    """The MODULES entry a mutant name (``san_ext.losses.x_fn__mutmut_3``) belongs to, or its dotted module."""
    dotted = mutant.split('.x')[0]
    path = dotted.replace('.', '/')
    for module in MODULES:
        if module.endswith('/') and (path + '/').startswith(module) or path + '.py' == module:
            return module
    return dotted


def tally(root: Path, by_file: bool = False) -> tuple[dict[str, Counter], list[str], list[str]]:
    """Counts per module (per source file with ``by_file``) and status from ``root/mutants``; also the survivors and
    the stale triage names."""
    metas = sorted((root / 'mutants').rglob('*.py.meta'))
    if not metas:
        raise click.ClickException(f'no mutmut results under {root / "mutants"}: run without --no-run first.')
    counts: dict[str, Counter] = {}
    survivors, seen = [], set()
    for meta in metas:
        source = meta.relative_to(root / 'mutants').as_posix().removesuffix('.meta')
        for name, code in json.loads(meta.read_text())['exit_code_by_key'].items():
            status = status_of(code)
            seen.add(name)
            if status == 'survived' and name in EQUIVALENT:
                status = 'equivalent'
            elif status == 'survived' and name in NEEDS_GPU:
                status = 'needs GPU'
            elif status == 'survived':
                survivors.append(name)
            counts.setdefault(source if by_file else module_of(name), Counter())[status] += 1
    return counts, sorted(survivors), sorted((set(EQUIVALENT) | set(NEEDS_GPU)) - seen)


def score(counter: Counter) -> float:
    """Killed share of the mutants that can change behaviour (all but the triaged equivalents)."""
    live = sum(counter.values()) - counter['equivalent']
    return counter['killed'] / live if live else float('nan')


def _percent(share: float) -> str:
    """A score rounded down to 0.1%, so that 100.0% means every mutant that can change behaviour was killed."""
    return 'n/a' if math.isnan(share) else f'{math.floor(1000 * share) / 10:.1f}%'


def format_table(counts: dict[str, Counter], markdown: bool = False) -> str:
    """One row per module and a total: mutants, each status, equivalents and the score."""
    total = sum(counts.values(), Counter())
    shown = [k for k in COLUMNS if total[k]]
    rows = [[name, str(sum(c.values())), *(str(c[k]) for k in shown), str(c['equivalent']), _percent(score(c))]
            for name, c in [*sorted(counts.items()), ('total', total)]]
    return render_table(['module', 'mutants', *shown, 'equivalent', 'score'], rows, 1, markdown)


@click.command(context_settings=dict(help_option_names=['-h', '--help']))
@click.option('--run/--no-run', 'run_mutmut', default=True, show_default=True,
              help='Run `mutmut run` first; --no-run only tallies the results already in ./mutants.')
@click.option('--max-children', type=click.IntRange(min=1), default=None,
              help='Mutants tested in parallel.  [default: CPU count]')
@click.option('--out', type=click.Path(dir_okay=False, path_type=Path), default=None,
              help='Also write the counts, survivors and machine as JSON here.')
@click.option('--markdown', is_flag=True, help='Print the table as Markdown (for the README).')
@click.option('--by-file', is_flag=True, help='One row per source file (legacy/ is a package of seven).')
@click.argument('patterns', nargs=-1)
def main(run_mutmut: bool, max_children: Optional[int], out: Optional[Path], markdown: bool, by_file: bool,
         patterns: tuple[str, ...]) -> None:
    """Mutation score per module of san_ext's core (mutmut 3, configured in pyproject.toml).

    PATTERNS (optional) restrict the run to mutants whose names match (fnmatch, e.g. 'san_ext.layers.*'); the
    table still counts every result in ./mutants.
    """
    root = repo_root()
    wall = None
    if run_mutmut:
        cmd = [sys.executable, '-m', 'mutmut', 'run', *(['--max-children', str(max_children)] if max_children else []),
               *patterns]
        start = time.perf_counter()
        try:
            subprocess.run(cmd, cwd=root, check=True, env={**os.environ, **_ONE_THREAD, **_ARCH})
        except subprocess.CalledProcessError as err:
            raise click.ClickException(f'`{" ".join(cmd)}` failed with exit status {err.returncode}: is mutmut '
                                       'installed (pip install mutmut) and does the suite pass?') from err
        wall = time.perf_counter() - start
    counts, survivors, stale = tally(root, by_file)
    click.echo(format_table(counts, markdown))
    if stale:
        click.echo(f'stale EQUIVALENT / NEEDS_GPU names (their functions changed; triage again): {", ".join(stale)}',
                   err=True)
    click.echo(f'{len(survivors)} survivors: `mutmut results` lists them, `mutmut show NAME` shows one.')
    if out:
        write_json(out, dict(counts={k: dict(v) for k, v in counts.items()}, survivors=survivors, stale=stale,
                             wall_s=wall, machine=platform.processor() or platform.machine(), cpus=os.cpu_count()))


if __name__ == '__main__':
    main()
