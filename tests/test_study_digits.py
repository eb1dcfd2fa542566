"""Tests of the digits study: the committed classifier and its record, the features and FID on real data vs noise,
the SAN routing of the conditional D, a tiny end-to-end run through the CLI, and determinism per seed."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import scipy.linalg
import torch
from click.testing import CliRunner

from san_ext import losses
from san_ext.files import file_sha256
from san_ext.layers import SANLinear
from san_ext.metrics import get_extractor, list_extractors
from san_ext.studies import digits
from san_ext.studies import digits_classifier as dc
from san_ext.studies import digits_eval as ev
from san_ext.studies.digits_models import DigitsD, ProjectionD, build_D, build_G
from san_ext.studies.digits_report import _grid_name, aggregate, format_table

pytestmark = pytest.mark.usefixtures('one_thread')


# -- the classifier ----------------------------------------------------------------------------------------------
def test_split_is_stratified_disjoint_and_covers_every_image():
    _, labels = dc.digits_data()
    train, test = dc.split_indices(labels)
    assert (len(train), len(test)) == (1347, 450)
    assert np.intersect1d(train, test).size == 0 and np.union1d(train, test).size == len(labels) == 1797
    for c in range(10):
        n_c = int((labels == c).sum())
        assert int((labels[test] == c).sum()) == round(n_c / 4)
    np.testing.assert_array_equal(dc.split_indices(labels)[1], test)  # fixed seed: the same split every time


def test_committed_weights_match_their_record_and_classify_the_held_out_split():
    record = dc.record_of()
    assert record['sha256'] == file_sha256(dc.DEFAULT_WEIGHTS)
    assert dc.DEFAULT_WEIGHTS.stat().st_size == record['bytes'] < 200_000
    assert record['split'] == dict(seed=0, test_fraction=0.25, stratified=True, n_train=1347, n_test=450)
    assert record['command'] == dc.REGENERATE
    images, labels = dc.digits_data()
    _, test = dc.split_indices(labels)
    acc = dc.evaluate_accuracy(dc.load_classifier(), images[test], labels[test])
    assert acc >= 0.95
    assert acc == pytest.approx(record['test_accuracy'], abs=1.5 / 450)  # one flipped image at most (other CPUs)


def test_missing_weights_error_names_the_regeneration_command(tmp_path):
    with pytest.raises(FileNotFoundError, match='python -m san_ext.studies.digits_classifier'):
        dc.load_classifier(tmp_path)


def test_random_shift_moves_whole_images_by_at_most_one_pixel():
    x = torch.full((200, 1, 8, 8), -1.0)
    x[:, :, 3:5, 3:5] = 1.0  # a 2x2 blob in the middle
    out = dc._random_shift(x, 1, torch.Generator().manual_seed(0))
    ys, xs = [], []
    for im in out[:, 0]:
        r, c = torch.nonzero(im > 0, as_tuple=True)
        assert len(r) == 4  # nothing cut off, nothing smeared
        ys.append(int(r.min()) - 3)
        xs.append(int(c.min()) - 3)
    assert set(ys) == set(xs) == {-1, 0, 1}


def test_the_study_registers_its_extractor_and_calc_metrics_offers_it():
    """The metrics registry knows no study; calc_metrics.py imports the digits study, which registers digits_cnn."""
    code = ('from san_ext.metrics import list_extractors; assert "digits_cnn" not in list_extractors(); '
            'import calc_metrics; assert "digits_cnn" in list_extractors(), list_extractors()')
    res = subprocess.run([sys.executable, '-c', code], cwd=Path(__file__).resolve().parents[1], capture_output=True,
                         text=True, timeout=300)
    assert res.returncode == 0, res.stderr


def test_extractor_is_registered_and_takes_other_resolutions():
    assert 'digits_cnn' in list_extractors()
    ext = get_extractor('digits_cnn')
    assert (ext.name, ext.dim) == ('digits_cnn', 64)
    images, _ = dc.digits_data()
    u8 = torch.from_numpy(images[:16])[:, None].expand(-1, 3, -1, -1).contiguous()
    feats = ext(u8)
    assert feats.shape == (16, 64) and torch.isfinite(feats).all()
    big = torch.nn.functional.interpolate(u8.float(), scale_factor=2, mode='nearest').to(torch.uint8)
    assert ext(big).shape == (16, 64)  # 16x16 input is resized back to 8x8


# -- features and FID --------------------------------------------------------------------------------------------
def _fid_scipy(a: torch.Tensor, b: torch.Tensor) -> float:
    """FID by the textbook route (np.cov, scipy sqrtm), independent of san_ext.metrics."""
    a, b = a.double().numpy(), b.double().numpy()
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    with warnings.catch_warnings():  # dead ReLU units make both covariances singular; sqrtm still converges
        warnings.simplefilter('ignore', scipy.linalg.LinAlgWarning)
        covmean = scipy.linalg.sqrtm(s1 @ s2).real
    return float(((a.mean(0) - b.mean(0)) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean))


def test_fid_is_small_for_held_out_real_digits_and_large_for_noise():
    ref = ev.reference()
    floor = ev.real_floor(ref)
    assert floor['fid'] < 5 and floor['precision'] > 0.8 and floor['recall'] > 0.8 and floor['class_kl'] < 0.01
    ext = get_extractor('digits_cnn')
    assert floor['fid'] == pytest.approx(_fid_scipy(ext(ref.test_uint8), ref.features), rel=1e-6)
    noise = torch.randint(0, 256, (1347, 1, 8, 8), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    scores = ev.score_images(noise.expand(-1, 3, -1, -1).contiguous(), ref)
    assert scores['fid'] > 50 * floor['fid'] and scores['recall'] < 0.1
    one_image = ref.test_uint8[:1].expand(1347, -1, -1, -1).contiguous()  # total mode collapse
    assert ev.score_images(one_image, ref)['recall'] < 0.01


# -- networks ----------------------------------------------------------------------------------------------------
def test_gan_d_is_spectrally_normalised_and_san_d_has_a_san_last_layer():
    gan, san = build_D(16, False, False), build_D(16, False, True).eval()  # eval: no power iteration
    assert isinstance(gan, DigitsD) and hasattr(gan.last, 'parametrizations')
    assert isinstance(san.san_layer, SANLinear)
    x = torch.randn(5, 1, 8, 8)
    fun, dir_ = san(x, flg_train=True)
    assert fun.shape == dir_.shape == (5,)
    torch.testing.assert_close(fun, san(x))


def test_conditional_san_d_routes_fun_to_body_and_scale_and_dir_to_class_directions_only():
    torch.manual_seed(0)
    D = ProjectionD(16, 10, san=True).eval()  # eval: spectral norm fixed between the calls
    x, c = torch.randn(6, 1, 8, 8), torch.nn.functional.one_hot(torch.arange(6) % 10, 10).float()
    fun, dir_ = D(x, c, flg_train=True)
    torch.testing.assert_close(fun, D(x, c))
    torch.testing.assert_close(dir_, fun)
    body = [p for p in D.body.parameters() if p.requires_grad]
    g_fun = torch.autograd.grad(fun.sum(), [D.embed.weight, D.embed.scale, *body], allow_unused=True)
    assert g_fun[0] is None or g_fun[0].abs().max() == 0
    assert g_fun[1].abs().sum() > 0 and any(g is not None and g.abs().sum() > 0 for g in g_fun[2:])
    g_dir = torch.autograd.grad(dir_.sum(), [D.embed.weight, D.embed.scale, *body], allow_unused=True)
    assert g_dir[0].abs().sum() > 0
    assert all(g is None or g.abs().max() == 0 for g in g_dir[1:])


def test_generator_checks_its_class_input():
    G = build_G(8, 4, conditional=True)
    with pytest.raises(ValueError, match='one-hot c'):
        G(torch.randn(3, 8))
    with pytest.raises(ValueError, match='unconditional'):
        build_G(8, 4, conditional=False)(torch.randn(3, 8), torch.zeros(3, 10))


def test_variant_names_are_loss_specs_checked_against_the_registry():
    assert digits.parse_variant('hinge-san') == ('hinge', True)
    assert digits.parse_variant('wasserstein') == ('wasserstein', False)
    for loss in losses.list_losses():  # the spelling of train.py --loss
        assert digits.parse_variant(f'{loss}-san') == (loss, True) and digits.parse_variant(loss) == (loss, False)
    assert digits.canonical_variant('san') == 'hinge-san'
    for bad in ('hinge+gp', 'nope', 'nope-san', 'nope+san', 'hinge-gp'):
        with pytest.raises(ValueError, match='unknown variant'):
            digits.parse_variant(bad)
    res = CliRunner().invoke(digits.main, ['--variants', 'hinge,bogus'])
    assert res.exit_code == 2 and 'bogus' in res.output and 'nonsaturating-san' in res.output


def test_old_spelling_hinge_plus_san_is_still_read_as_hinge_san(caplog):
    """One release of grace for ``LOSS+san``: the API warns, the CLI logs a note, both store ``LOSS-san``."""
    with pytest.warns(DeprecationWarning, match="'hinge\\+san'.*deprecated.*'hinge-san'"):
        assert digits.parse_variant('hinge+san') == ('hinge', True)
    with pytest.warns(DeprecationWarning):
        cell = digits.CellConfig(variant='lsgan+san')
    assert (cell.variant, cell.loss, cell.san) == ('lsgan-san', 'lsgan', True)
    with pytest.warns(DeprecationWarning):
        assert digits.StudyConfig(variants=('hinge', 'hinge+san')).variants == ('hinge', 'hinge-san')
    ctx = digits.main.make_context('digits', ['--variants', 'hinge,hinge+san,san'])
    assert ctx.params['variants'] == ('hinge', 'hinge-san', 'hinge-san')
    assert 'LOSS+san is deprecated' in caplog.text and 'write hinge-san' in caplog.text


def _old_cell(variant: str, seed: int, fid: float) -> dict:
    metrics = dict(fid=fid, precision=0.5, recall=0.5)
    return dict(optimizer='dcgan', conditional=False, variant=variant, seed=seed, finite=True, train_s=1.0,
                metrics=dict(bare=metrics))


def test_report_reads_results_written_with_the_old_spelling():
    """results.json cells of earlier runs say ``hinge+san``: they aggregate into the ``hinge-san`` row (with new
    cells of the same model) and name its grid as before."""
    rows = aggregate([_old_cell('hinge+san', 0, 10.0), _old_cell('hinge-san', 1, 20.0), _old_cell('hinge', 0, 30.0)])
    assert [(r['variant'], r['n_seeds'], r['bare_fid_mean']) for r in rows] == [('hinge-san', 2, 15.0),
                                                                               ('hinge', 1, 30.0)]
    assert 'hinge-san' in format_table(rows) and '+san' not in format_table(rows)
    assert _grid_name(_old_cell('hinge+san', 0, 1.0)) == 'samples_dcgan_uncond_hinge-san.png'


# -- end to end --------------------------------------------------------------------------------------------------
TINY = dict(steps=30, n_gen=300, dot_steps=3)


def _finite(d: dict) -> bool:
    return all(np.isfinite(v).all() for k, v in d.items() if k != 'class_hist')


def test_cell_is_deterministic_per_seed():
    cfg = digits.CellConfig(variant='hinge-san', conditional=True, seed=0, **TINY)
    a, b = digits.run_cell(cfg), digits.run_cell(cfg)
    for r in (a, b):
        assert r['metrics']['dot'].pop('dot_s') > 0  # wall time: the one field allowed to differ
    assert a['metrics'] == b['metrics'] and a['d_loss'] == b['d_loss']
    assert torch.equal(a['samples']['dot'], b['samples']['dot'])
    other = digits.run_cell(digits.CellConfig(variant='hinge-san', conditional=True, seed=1, **TINY))
    assert other['metrics']['bare']['fid'] != a['metrics']['bare']['fid']


def test_tiny_study_through_the_cli_writes_finite_metrics_table_and_grids(tmp_path):
    res = CliRunner().invoke(digits.main, ['--variants', 'nonsaturating,hinge-san', '--seeds', '1', '--steps', '20',
                                           '--dot-steps', '2', '--workers', '1', '--outdir', str(tmp_path),
                                           '--optimizers', 'san-official'])
    assert res.exit_code == 0, res.output
    out = json.loads((tmp_path / 'results.json').read_text())
    assert len(out['cells']) == 4 and len(out['rows']) == 4
    assert {(c['optimizer'], c['lr'], tuple(c['betas'])) for c in out['cells']} == {('san-official', 1e-3, (0, 0.99))}
    for cell in out['cells']:
        assert cell['finite'] and _finite(cell['metrics']['bare']) and _finite(cell['metrics']['dot'])
        assert 0 <= cell['metrics']['bare']['precision'] <= 1 and 0 <= cell['metrics']['dot']['recall'] <= 1
        k_eff = np.asarray(cell['metrics']['dot']['k_eff'])
        assert k_eff.shape == ((10,) if cell['conditional'] else ()) and (k_eff > 0).all()
    assert out['config']['features']['sha256'] == dc.record_of()['sha256']
    assert out['floor']['n'] == 450 and out['timing']['wall_s'] > 0
    table = (tmp_path / 'table.md').read_text()
    assert table.count('\n') == 2 + 4 + 1 and 'hinge-san' in table and 'real held-out' in table
    assert 'FID +DOT' in res.output
    pngs = sorted(p.name for p in tmp_path.glob('*.png'))
    assert pngs == ['real.png'] + [f'samples_san-official_{c}_{v}.png' for c in ('cond', 'uncond')
                                   for v in ('hinge-san', 'nonsaturating')]
    assert '±' not in table and '| san-official | no | 1 |' in table  # one seed: n says so, no ±0


def test_digits_cells_default_to_both_settings_and_refuse_multi_d_step_ones():
    cells = digits.study_cells(digits.StudyConfig(variants=('hinge',), seeds=1, conditional=(False,)))
    assert [(c.optimizer, c.lr, c.betas) for c in cells] == [('dcgan', 2e-4, (0.5, 0.999)),
                                                              ('san-official', 1e-3, (0.0, 0.99))]
    with pytest.raises(ValueError, match='one D step per G step'):
        digits.CellConfig(optimizer='wgan-gp')


@pytest.mark.slow
def test_regenerating_the_classifier_reproduces_the_committed_weights(tmp_path):
    """Bit for bit on a CPU of the recorded kind (float reductions differ between ISAs), else the same accuracy."""
    record = dc.record_of()
    net, new = dc.train_classifier(dc.ClassifierConfig(**record['config']))
    weights, _ = dc.save_classifier(net, new, tmp_path)
    if torch.backends.cpu.get_cpu_capability() == record['cpu_capability']:
        assert file_sha256(weights) == record['sha256']
    assert new['test_accuracy'] == pytest.approx(record['test_accuracy'], abs=0.01)


@pytest.mark.parametrize('conditional', [False, True])
def test_paired_loss_g_step_reads_a_fresh_real_batch_from_its_own_generator(conditional, monkeypatch):
    """RpGAN's G step scores its fakes against ``_fresh_reals`` (own generator, seed + 1), not the D step's batch."""
    cfg = digits.CellConfig(variant='rpgan-san', conditional=conditional, steps=2, batch=8, dot_steps=0)
    ref = ev.reference()
    fresh, stream = digits._fresh_reals(cfg, ref), digits._batches(cfg, ref)
    want = [next(fresh) for _ in range(2)]
    d_batches = [next(stream)[0] for _ in range(2)]
    seen = []
    g_step = digits._g_step
    monkeypatch.setattr(digits, '_g_step', lambda *a: seen.append(a[6:]) or g_step(*a))
    digits.train_cell(cfg)
    assert len(seen) == 2
    for (x, c), (x_want, c_want), x_d in zip(seen, want, d_batches):
        assert torch.equal(x, x_want) and not torch.equal(x, x_d)
        assert (c is None) == (not conditional) and (c is None or torch.equal(c, c_want))
    gen = torch.Generator().manual_seed(cfg.seed + 1)  # uniform draws with replacement, by hand
    assert torch.equal(want[0][0], ref.images[torch.randint(0, len(ref.images), (8,), generator=gen)])
