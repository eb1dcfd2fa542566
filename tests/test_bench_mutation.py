"""``san_ext.bench.mutation`` tallies mutmut's per-file results into the per-module table of the README."""

import json

import pytest

from san_ext.bench import mutation


def _write_meta(root, rel, codes):
    path = root / 'mutants' / (rel + '.meta')
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({'exit_code_by_key': codes}))


def test_mutants_are_grouped_by_module_and_package():
    assert mutation.module_of('san_ext.losses.xǁGANLossǁd_real__mutmut_3') == 'san_ext/losses.py'
    assert mutation.module_of('san_ext.legacy.x_read_pickle__mutmut_1') == 'san_ext/legacy/'
    assert mutation.module_of('san_ext.legacy.unpickler.xǁ_Unpicklerǁload__mutmut_2') == 'san_ext/legacy/'
    assert mutation.module_of('san_ext.metrics.stats.x_frechet_distance__mutmut_9') == 'san_ext/metrics/stats.py'
    assert mutation.module_of('san_ext.metrics.kid.x_kid__mutmut_1') == 'san_ext.metrics.kid'


def test_statuses_follow_mutmuts_exit_codes():
    assert [mutation.status_of(c) for c in (1, 3, 0, 33, 36, -24, None, 37, 99)] == [
        'killed', 'killed', 'survived', 'no tests', 'timeout', 'timeout', 'not checked', 'killed', 'other']


def test_tally_counts_statuses_and_reclassifies_only_listed_survivors(tmp_path, monkeypatch):
    eq, gpu = 'san_ext.losses.x_a__mutmut_1', 'san_ext.losses.x_a__mutmut_2'
    monkeypatch.setattr(mutation, 'EQUIVALENT', {eq: 'why', 'san_ext.losses.x_gone__mutmut_1': 'stale'})
    monkeypatch.setattr(mutation, 'NEEDS_GPU', {gpu: 'test_x'})
    _write_meta(tmp_path, 'san_ext/losses.py', {eq: 0, gpu: 0, 'san_ext.losses.x_a__mutmut_3': 0,
                                                 'san_ext.losses.x_a__mutmut_4': 1, 'san_ext.losses.x_a__mutmut_5': 1})
    _write_meta(tmp_path, 'san_ext/legacy/records.py', {'san_ext.legacy.records.x_b__mutmut_1': 33})
    counts, survivors, stale = mutation.tally(tmp_path)
    losses = counts['san_ext/losses.py']
    assert (losses['killed'], losses['survived'], losses['equivalent'], losses['needs GPU']) == (2, 1, 1, 1)
    assert mutation.score(losses) == pytest.approx(2 / 4)  # the equivalent leaves the denominator, nothing else
    assert counts['san_ext/legacy/']['no tests'] == 1
    assert survivors == ['san_ext.losses.x_a__mutmut_3'] and stale == ['san_ext.losses.x_gone__mutmut_1']
    table = mutation.format_table(counts, markdown=True)
    assert '| san_ext/losses.py | 5 | 2 | 1 | 1 | 0 | 1 | 50.0% |' in table
    assert '| total | 6 | 2 | 1 | 1 | 1 | 1 | 40.0% |' in table
    by_file, _, _ = mutation.tally(tmp_path, by_file=True)
    assert sorted(by_file) == ['san_ext/legacy/records.py', 'san_ext/losses.py']
    assert by_file['san_ext/losses.py'] == losses


def test_tally_without_a_run_says_what_to_do(tmp_path):
    with pytest.raises(Exception, match='no mutmut results under .*run without --no-run first'):
        mutation.tally(tmp_path)


def test_scores_round_down_so_that_100_percent_means_all_killed():
    from collections import Counter
    almost = Counter(killed=2383, equivalent=38, **{'needs GPU': 1})
    assert '| 99.9% |' in mutation.format_table({'m': almost}, markdown=True)
    assert '| 100.0% |' in mutation.format_table({'m': Counter(killed=5, equivalent=1)}, markdown=True)
    assert '| n/a |' in mutation.format_table({'m': Counter(equivalent=2)}, markdown=True)
