"""``san_ext.bench.gpu_check`` and ``gpu_tables`` on CPU: the plan, a step stopped at its cap, the JSON always
written, the budget shared out, the tables rendered from the record and written into a README block."""

from __future__ import annotations

import json
import signal
import sys

import pytest
from click.testing import CliRunner

from san_ext.bench import gpu_check, gpu_tables
from san_ext.bench.gpu_check import Step, run_check


def _py(code: str) -> tuple[str, ...]:
    return (sys.executable, '-c', code)


def _writes(path, data) -> str:
    return f'import json, pathlib; pathlib.Path({str(path)!r}).write_text(json.dumps({data!r}))'


def test_dry_run_prints_every_step_with_its_cap():
    before = signal.getsignal(signal.SIGTERM)
    res = CliRunner().invoke(gpu_check.main, ['--out', 'unused', '--dry-run', '--budget-s', '100', '--device', 'cpu'])
    assert res.exit_code == 0, res.output
    # its SIGTERM handler is restored: left installed, it made forked pool workers of later tests (the dataset
    # converter) exit holding a queue lock, and the suite hung
    assert signal.getsignal(signal.SIGTERM) is before
    lines = res.output.splitlines()
    assert 'budget 100 s' in lines[0] and 'TORCH_CUDA_ARCH_LIST=' in lines[0]
    caps = {line.split()[0]: float(line.split()[2]) for line in lines[1:]}
    assert list(caps) == ['build', 'tests', 'ops', 'networks', 'train']
    assert sum(caps.values()) == pytest.approx(100, abs=3)
    assert 'in parallel' in lines[1] and '-m cuda' in lines[2] and 'bench.train' in lines[5]


def test_plan_runs_the_gpu_cases_on_cuda_and_the_cpu_fallbacks_on_cpu(tmp_path):
    gpu = {s.name: ' '.join(' '.join(c) for c in s.commands) for s in gpu_check.plan('cuda', tmp_path)}
    cpu = {s.name: ' '.join(' '.join(c) for c in s.commands) for s in gpu_check.plan('cpu', tmp_path, '/up')}
    assert 'imagenet-stem16' in gpu['train'] and 'imagenet-sr256' in gpu['train'] and 'tiny' in cpu['train']
    assert '--preset imagenet' in gpu['networks'] and '--upstream /up' in cpu['networks']
    assert '--device cpu' in cpu['ops'] and '--device' not in gpu['ops']
    from torch_utils.ops.loader import OP_SOURCES
    assert [c[c.index('--ops') + 1] for c in gpu_check.plan('cuda', tmp_path)[0].commands] == list(OP_SOURCES)


def test_a_step_over_its_cap_is_stopped_and_recorded_and_the_json_is_always_written(tmp_path):
    out, work = tmp_path / 'out', tmp_path / 'work'
    work.mkdir()
    steps = [
        Step('ops', (_py(_writes(work / 'a.json', dict(rows=[], device='cpu', peak_gbs=None))),), ('a.json',),
             share=0.2),
        Step('networks', (_py('import time; time.sleep(600)'), _py('print("other child")')), ('n.json',), share=0.3),
        Step('train', (_py('import sys; sys.exit(3)'),), share=0.2),
        Step('tests', (_py('pass'),), share=0.9),  # asks for more than is left: gets the rest
    ]
    record = run_check(steps, out, budget_s=20.0, work=work, header=dict(device='cpu', machine={}))
    status = {s['name']: s for s in record['steps']}
    assert status['ops']['status'] == 'ok' and status['ops']['results']['a.json']['device'] == 'cpu'
    assert status['networks']['status'] == 'timeout' and status['networks']['seconds'] < 300  # killed, not awaited
    assert status['networks']['results'] == {'n.json': None}
    assert status['train']['status'] == 'failed' and status['train']['returncodes'] == [3]
    assert status['tests']['status'] == 'ok' and status['tests']['cap_s'] < 0.9 * 20  # only what was left
    on_disk = json.loads((out / 'gpu_check.json').read_text())
    assert [s['status'] for s in on_disk['steps']] == ['ok', 'timeout', 'failed', 'ok']
    assert 'other child' in (out / 'gpu_check.log').read_text()
    text = (out / 'gpu_check.md').read_text()
    assert '| networks | timeout |' in text and '| train | failed |' in text


def test_a_spent_budget_skips_the_remaining_steps(tmp_path):
    steps = [Step('ops', (_py('import time; time.sleep(600)'),), share=1.0),
             Step('train', (_py('pass'),), share=0.5)]
    record = run_check(steps, tmp_path, budget_s=2.0, work=tmp_path, header=dict(machine={}))
    assert [s['status'] for s in record['steps']] == ['timeout', 'skipped']
    assert json.loads((tmp_path / 'gpu_check.json').read_text())['steps'][1]['reason'] == 'budget spent'


def _record() -> dict:
    ops_result = dict(device='cuda', gpu='NVIDIA H100 80GB HBM3', dtype='float32', torch='2.11', peak_gbs=3350,
                      copy_gbs=3000, batch=8, rows=[dict(op='upfirdn2d', shape='[8,3,64,64]',
                                                         ref=dict(fwd_s=2e-3, fwdbwd_s=5e-3, bytes_fwd=1e8),
                                                         cuda=dict(fwd_s=5e-4, fwdbwd_s=1e-3, bytes_fwd=1e8),
                                                         speedup_fwd=4.0, speedup_fwdbwd=5.0)])
    train_rows = [dict(case='imagenet-stem16', resolution=16, batch=64, batch_gpu=16, sec_per_kimg=12.5,
                       sec_per_kimg_min=12.0, sec_per_kimg_max=13.0, img_per_s=80.0, peak_gpu_gib=9.5)]
    return dict(machine=dict(gpu='NVIDIA H100 80GB HBM3', driver='580.159.04', torch='2.11.0', cuda='13.0',
                             python='3.12.3'), started='2026-12-06', budget_s=480, total_s=300, steps=[
        dict(name='build', status='ok', seconds=80, cap_s=144, results={'build_upfirdn2d.json': dict(
            architectures='9.0', ops=[dict(op='upfirdn2d', built=True, seconds=40.1)])}),
        dict(name='tests', status='ok', seconds=30, cap_s=58,
             results={'pytest_cuda.xml': dict(tests=10, failures=1, errors=0, skipped=2)}),
        dict(name='ops', status='ok', seconds=20, cap_s=62, results={'bench_ops.json': ops_result}),
        dict(name='networks', status='timeout', seconds=96, cap_s=96, results={'bench_networks.json': None}),
        dict(name='train', status='ok', seconds=70, cap_s=120,
             results={'bench_train.json': dict(device='NVIDIA H100 80GB HBM3', rows=train_rows)})])


def test_tables_render_every_step_from_the_record():
    text = gpu_tables.render(_record())
    assert text.startswith('GPU check on NVIDIA H100 80GB HBM3, driver 580.159.04, torch 2.11.0, CUDA 13.0')
    assert 'upfirdn2d built (40.1 s)' in text and '7 passed, 1 failed, 0 errors, 2 skipped' in text
    assert '4.0x' in text and '| imagenet-stem16 | san | 16² | 64 (16) | 12.5 |' in text  # loss: default san
    assert '**networks** (timeout): no figures' in text


def test_tables_go_into_the_readme_block_and_nowhere_else(tmp_path):
    path = tmp_path / 'gpu_check.json'
    path.write_text(json.dumps(_record()))
    readme = tmp_path / 'README.md'
    readme.write_text(f'intro\n{gpu_tables.BEGIN}\nold\n{gpu_tables.END}\noutro\n')
    for _ in range(2):  # idempotent
        res = CliRunner().invoke(gpu_tables.main, [str(path), '--readme', str(readme)])
        assert res.exit_code == 0, res.output
    text = readme.read_text()
    assert text.startswith('intro\n') and text.endswith('outro\n') and 'old' not in text
    assert text.count('GPU check on NVIDIA H100') == 1
    readme.write_text('no markers\n')
    res = CliRunner().invoke(gpu_tables.main, [str(path), '--readme', str(readme)])
    assert res.exit_code == 1 and 'marker' in res.output


def test_gpu_check_refuses_cuda_without_a_gpu_and_unknown_steps(tmp_path):
    import torch
    if not torch.cuda.is_available():
        res = CliRunner().invoke(gpu_check.main, ['--out', str(tmp_path), '--device', 'cuda'])
        assert res.exit_code == 1 and 'no CUDA GPU' in res.output
    res = CliRunner().invoke(gpu_check.main, ['--out', str(tmp_path), '--steps', 'ops,bogus', '--dry-run'])
    assert res.exit_code == 2 and "'bogus'" in res.output
