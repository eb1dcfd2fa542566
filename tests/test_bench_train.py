"""``python -m san_ext.bench.train`` on CPU: the loop's own tick timing, read back, first tick dropped."""

from __future__ import annotations

import json
import time

import pytest
from click.testing import CliRunner

from san_ext.bench import train as bench_train

pytestmark = pytest.mark.usefixtures('one_thread')


def test_cases_match_the_network_benchmark_and_quick_start():
    tiny = bench_train.CASES['tiny']
    assert (tiny.batch, tiny.stage.gen.channel_base, tiny.stage.gen.channel_max, tiny.stage.gen.num_layers) == \
        (8, 512, 32, 4)  # README quick start: --batch 8 --cbase 512 --cmax 32 --syn_layers 4
    sr = bench_train.CASES['imagenet-sr256']
    assert sr.superres and sr.stage.gen.img_resolution * 2 ** len(sr.stage.superres) == 256
    assert bench_train.CASES['imagenet-stem16'].stage.gen.c_dim == 1000


def test_measure_times_every_tick_but_reports_from_the_second(tmp_path):
    start = time.perf_counter()
    setting = bench_train.LOSS_SETTINGS['rpgan-san-r1r2']
    row = bench_train.measure(bench_train.CASES['tiny-sr32'], 'cpu', ticks=3, steps_per_tick=1, workdir=tmp_path,
                              loss=setting)
    wall = time.perf_counter() - start
    (run_dir,) = (tmp_path / 'runs').iterdir()
    records = [json.loads(line) for line in (run_dir / 'stats.jsonl').read_text().splitlines()]
    ticks = [r['Timing/sec_per_kimg'] for r in records]
    # the loss setting reached the run: RpGAN-SAN with R1 and R2 on every step
    loss = json.loads((run_dir / 'config.json').read_text())['loss']
    assert (loss['name'], loss['san'], loss['r1_gamma'], loss['r2_gamma']) == ('rpgan', True, 1.0, 1.0)
    assert all(r['Loss/D/r1'] > 0 and r['Loss/D/r2'] > 0 for r in records) and row['loss'] == 'rpgan-san-r1r2'
    assert row['ticks'] == len(ticks) == 3 and row['resolution'] == 32
    assert row['sec_per_kimg'] == pytest.approx((ticks[1] + ticks[2]) / 2)  # median of the ticks after the first
    assert row['first_tick_sec_per_kimg'] == ticks[0]
    # each tick is one batch of 8 images: the timed part cannot exceed the wall time of the whole call
    assert sum(ticks) * 8 / 1000 < wall
    assert row['img_per_s'] == pytest.approx(1000 / row['sec_per_kimg'])


def test_cli_writes_table_and_json(tmp_path):
    out = tmp_path / 'bench.json'
    res = CliRunner().invoke(bench_train.main, ['--case', 'tiny', '--device', 'cpu', '--ticks', '2',
                                                '--steps-per-tick', '1', '--out', str(out)], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert '| tiny | san | 16² | 8 (8) |' in res.output
    result = json.loads(out.read_text())
    assert result['device'].startswith('cpu') and result['rows'][0]['sec_per_kimg'] > 0


def test_too_few_ticks_is_refused():
    with pytest.raises(ValueError, match='ticks must be >= 2'):
        bench_train.measure(bench_train.CASES['tiny'], 'cpu', ticks=1)
