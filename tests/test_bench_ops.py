"""The ops benchmark runs end to end (reference column on CPU) and writes its JSON."""

import json

from click.testing import CliRunner

from san_ext.bench.ops import build_cases, main


def test_ops_bench_cli_writes_table_and_json(tmp_path):
    out = tmp_path / 'ops.json'
    result = CliRunner().invoke(main, ['--device', 'cpu', '--ops', 'normalized_linear,bias_act', '--batch', '1',
                                       '--warmup', '0', '--repeats', '1', '--out', str(out)])
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert [r['op'] for r in data['rows']] == ['bias_act', 'normalized_linear', 'normalized_linear']
    assert all(r['ref']['fwd_s'] > 0 and r['ref']['bytes_fwd'] > 0 for r in data['rows'])
    assert '| normalized_linear | cond 200x64, 1000 cls |' in result.output


def test_ops_bench_rejects_unknown_ops():
    result = CliRunner().invoke(main, ['--device', 'cpu', '--ops', 'conv9d'])
    assert result.exit_code != 0 and 'unknown ops' in result.output
    assert {c.op for c in build_cases(1)} == {'upfirdn2d', 'bias_act', 'filtered_lrelu', 'normalized_linear'}
