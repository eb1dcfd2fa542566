"""The networks benchmark runs end to end on the tiny preset and reports every stage."""

import json

import click
import pytest
from click.testing import CliRunner

from san_ext.bench.networks import _upstream_rows, main, stages


def test_networks_bench_tiny_preset_runs(tmp_path):
    out = tmp_path / 'net.json'
    result = CliRunner().invoke(main, ['--preset', 'tiny', '--ops', 'ref', '--warmup', '0', '--repeats', '1',
                                       '--out', str(out)])
    assert result.exit_code == 0, result.output
    rows = json.loads(out.read_text())['rows']
    assert [r['stage'] for r in rows] == ['stem16', 'sr32'] and [r['resolution'] for r in rows] == [16, 32]
    assert all(r['G_img_s'] > 0 and r['D_img_s'] > 0 for r in rows)


def test_imagenet_preset_is_the_recipe():
    stem, sr = stages('imagenet')
    assert (stem.batch, sr.batch, stem.gen.c_dim, stem.gen.num_layers) == (64, 32, 1000, 11)
    assert stem.gen.img_resolution * 2 ** len(sr.superres) == 256


def test_upstream_comparison_names_the_fix_when_the_checkout_does_not_import(tmp_path):
    (tmp_path / 'train.py').write_text('')  # a folder without upstream's packages
    with pytest.raises(click.ClickException, match='san-patch apply') as err:
        _upstream_rows(str(tmp_path), 'tiny', 'cpu', warmup=0, repeats=1)
    assert 'No module named' in err.value.message  # the child's own error comes along
