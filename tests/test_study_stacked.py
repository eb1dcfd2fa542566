"""Tests of the stacked digits study (``python -m san_ext.studies.stacked``): the --quick run through the CLI, the
G step's fresh real batch and its logits passed as ``g_loss(fake, real=...)``, the averaging of the last
evaluations, determinism per seed, and the SAN-minus-GAN pairing by seed."""

from __future__ import annotations

import copy
import dataclasses
import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from san_ext import losses
from san_ext.studies import stacked
from san_ext.studies.stacked_report import aggregate, san_deltas

pytestmark = pytest.mark.usefixtures('one_thread')

TINY = dict(steps=20, n_gen=300, eval_every=10, eval_last=2)


def test_quick_run_through_the_cli_writes_tables_json_and_a_png_per_model(tmp_path):
    res = CliRunner().invoke(stacked.main, ['--quick', '--workers', '1', '--outdir', str(tmp_path)])
    assert res.exit_code == 0, res.output
    out = json.loads((tmp_path / 'results.json').read_text())
    variants = [f'{loss}{suffix}' for loss in ('hinge', 'nonsaturating', 'rpgan') for suffix in ('', '-san')]
    assert {(c['optimizer'], c['variant']) for c in out['cells']} == {(o, v) for o in ('dcgan', 'san-official')
                                                                      for v in variants}
    for cell in out['cells']:
        assert cell['finite'] and cell['steps_done'] == stacked.QUICK['steps']
        assert [e['iteration'] for e in cell['evals']] == [100, 150] and all(e['num'] == 2000 for e in cell['evals'])
        assert 1 <= cell['modes'] <= 1000 and 0 <= cell['kl'] <= np.log(1000) + 1e-9 and 0 <= cell['confident'] <= 1
    assert out['floor']['n'] == 2000 and out['floor']['modes'] > 800 and out['timing']['wall_s'] > 0
    assert len(out['rows']) == 12 and len(out['san_deltas']) == 6
    table = (tmp_path / 'table.md').read_text()
    assert 'rpgan-san' in table and 'real stacked digits' in table and 'SAN − GAN modes' in table
    pngs = sorted(p.name for p in tmp_path.glob('*.png'))
    assert pngs == sorted(['real.png'] + [f'samples_{o}_{v}.png' for o in ('dcgan', 'san-official') for v in variants])


class _Spy:
    """Wraps a loss and records what the D and G steps hand it."""

    def __init__(self, loss) -> None:
        self.loss, self.calls = loss, []
        self.san, self.paired = loss.san, loss.paired

    def d_loss(self, real, fake):
        self.calls.append(('d', real, fake))
        return self.loss.d_loss(real, fake)

    def g_loss(self, fake, real=None):
        self.calls.append(('g', fake, real))
        return self.loss.g_loss(fake, real=real)


@pytest.mark.parametrize('variant', ['rpgan', 'rpgan-san', 'hinge'])
def test_g_step_scores_fakes_against_d_logits_on_a_fresh_real_batch(variant, monkeypatch):
    cfg = stacked.CellConfig(variant=variant, seed=0, **TINY)
    spy = _Spy(losses.get(*stacked.parse_variant(variant)))
    monkeypatch.setattr(stacked.san_losses, 'get', lambda *a, **k: spy)
    batches = {}
    d_step, g_step = stacked._d_step, stacked._g_step

    def record_d(G, D, opt_D, loss, x_real, z):
        batches['d'] = x_real
        return d_step(G, D, opt_D, loss, x_real, z)

    def record_g(G, D, opt_G, loss, z, x_real):
        batches['g'] = x_real
        with torch.no_grad():  # a copy in train mode: the same spectral-norm power iteration as the step's forward
            batches['expected'] = copy.deepcopy(D)(x_real)
        return g_step(G, D, opt_G, loss, z, x_real)

    monkeypatch.setattr(stacked, '_d_step', record_d)
    monkeypatch.setattr(stacked, '_g_step', record_g)
    stacked.train_cell(dataclasses.replace(cfg, steps=1, eval_last=1))
    kinds = [c[0] for c in spy.calls]
    assert kinds == ['d', 'g']
    _, fake, real = spy.calls[1]
    assert real is not None and real.shape == fake.shape == (64,)
    assert not torch.equal(batches['d'], batches['g'])  # a fresh batch, not the D step's
    torch.testing.assert_close(real, batches['expected'], rtol=0, atol=0)  # D's plain logits (no flg_train)


def test_cell_averages_its_last_evaluations_and_is_deterministic_per_seed():
    cfg = stacked.CellConfig(variant='nonsaturating-san', optimizer='san-official', seed=0, **TINY)
    assert cfg.eval_steps == (10, 20)
    a, b = stacked.run_cell(cfg), stacked.run_cell(cfg)
    assert [e['iteration'] for e in a['evals']] == [10, 20]
    for key in ('modes', 'kl', 'confident'):
        assert a[key] == pytest.approx(np.mean([e[key] for e in a['evals']]))
    assert a['evals'] == b['evals'] and a['d_loss'] == b['d_loss'] and torch.equal(a['samples'], b['samples'])
    other = stacked.run_cell(dataclasses.replace(cfg, seed=1))
    assert other['evals'] != a['evals']


def test_cells_refuse_multi_d_step_settings_and_evaluations_that_do_not_fit():
    with pytest.raises(ValueError, match='one D step per G step'):
        stacked.CellConfig(optimizer='wgan-gp')
    with pytest.raises(ValueError, match='do not fit'):
        stacked.CellConfig(steps=100, eval_every=50, eval_last=3)
    cells = stacked.study_cells(stacked.StudyConfig(seeds=5))
    assert len(cells) == 60 and {c.variant for c in cells} == set(stacked.DEFAULT_VARIANTS)
    assert 'rpgan-san' in stacked.DEFAULT_VARIANTS and cells[0].eval_steps == (4000, 4500, 5000)


def _cell(variant: str, seed: int, modes: float, kl: float) -> dict:
    loss, san = stacked.parse_variant(variant)
    return dict(optimizer='dcgan', variant=variant, loss=loss, san=san, seed=seed, modes=modes, kl=kl, confident=0.5,
                finite=True, train_s=1.0)


def test_report_pairs_san_with_gan_by_seed():
    cells = [_cell('hinge', 0, 100, 3.0), _cell('hinge', 1, 300, 2.0), _cell('hinge-san', 1, 310, 1.5),
             _cell('hinge-san', 0, 90, 3.5), _cell('rpgan', 0, 50, 4.0)]
    (delta,) = san_deltas(cells)
    assert (delta['loss'], delta['n_seeds'], delta['san_more_modes']) == ('hinge', 2, 1)
    assert delta['modes_delta_mean'] == pytest.approx(0.0) and delta['kl_delta_mean'] == pytest.approx(0.0)
    assert delta['modes_delta_std'] == pytest.approx(np.std([-10, 10], ddof=1))
    rows = {r['variant']: r for r in aggregate(cells)}
    assert rows['hinge']['modes_mean'] == 200 and rows['rpgan']['n_seeds'] == 1
