"""Tests of the 2-D GAN-vs-SAN benchmark: data, metrics against closed forms, the batched trainer against single
cells, the CLI."""

from __future__ import annotations

import dataclasses
import itertools
import json
import math

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from san_ext import losses
from san_ext.studies import toy
from san_ext.studies.toy_batched import BatchedD
from san_ext.studies.toy_data import get_dataset, list_datasets
from san_ext.studies.toy_metrics import emd, high_quality_mask, modes_covered, sample_metrics


@pytest.fixture(autouse=True)
def _one_thread():
    """The models are tiny: intra-op threads gain nothing and stall in OpenMP waits when the cores are busy."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


MIXTURE_SPECS = {
    'ring8': ([(2 * math.cos(2 * math.pi * k / 8), 2 * math.sin(2 * math.pi * k / 8)) for k in range(8)], 0.02),
    'grid25': ([(a / 2.828, b / 2.828) for a, b in itertools.product((-4, -2, 0, 2, 4), repeat=2)], 0.05 / 2.828),
}


@pytest.mark.parametrize('name', sorted(MIXTURE_SPECS))
def test_mixture_modes_have_stated_centers_and_std(name):
    centers, sigma = np.array(MIXTURE_SPECS[name][0]), MIXTURE_SPECS[name][1]
    x = get_dataset(name).sample(np.random.default_rng(0), 20_000).astype(np.float64)
    nearest = np.linalg.norm(x[:, None] - centers[None], axis=-1).argmin(axis=1)  # modes are > 30 sigma apart
    for k, c in enumerate(centers):
        pts = x[nearest == k]
        assert len(pts) > 0.5 * len(x) / len(centers)
        np.testing.assert_allclose(pts.mean(axis=0), c, atol=5 * sigma / math.sqrt(len(pts)))
        np.testing.assert_allclose(pts.std(axis=0), sigma, rtol=0.1)


def test_swissroll_noise_std_and_parameter_range():
    data = get_dataset('swissroll')
    x = data.sample(np.random.default_rng(0), 20_000).astype(np.float64)
    sigma = 0.25 / 7.5
    assert data.sigma == pytest.approx(sigma)
    dist, mode = data.assign(x)
    # Only the noise component normal to the curve moves a point off it: its rms is sigma.
    assert math.sqrt(np.mean(dist ** 2)) == pytest.approx(sigma, rel=0.05)
    radius = np.linalg.norm(x, axis=1) * 7.5  # = t up to noise
    assert radius.min() > 1.5 * math.pi - 1.5 and radius.max() < 4.5 * math.pi + 1.5
    # t is uniform, so each of the 20 equal t-intervals holds about 1/20 of the points.
    np.testing.assert_allclose(np.bincount(mode, minlength=20) / len(x), 1 / 20, atol=0.006)


@pytest.mark.parametrize('name', list_datasets())
def test_real_samples_are_high_quality_and_cover_all_modes(name):
    data = get_dataset(name)
    x = data.sample(np.random.default_rng(1), 2500)
    hq, _ = high_quality_mask(data, x)
    assert hq.mean() > 0.97
    assert modes_covered(data, x) == data.n_modes


def _single_mode_samples(name: str, rng: np.random.Generator, n: int) -> np.ndarray:
    data = get_dataset(name)
    if data.centers is not None:
        return data.centers[3] + data.sigma * rng.standard_normal((n, 2))
    # t in the middle 60% of t-interval 7 of 20: tangential noise near an edge would spill >1% to a neighbour.
    t = 1.5 * math.pi + 3 * math.pi * 0.05 * (7.2 + 0.6 * rng.random(n))
    return np.stack([t * np.cos(t), t * np.sin(t)], axis=1) / 7.5 + data.sigma * rng.standard_normal((n, 2))


@pytest.mark.parametrize('name', list_datasets())
def test_samples_from_one_mode_cover_exactly_one(name):
    x = _single_mode_samples(name, np.random.default_rng(2), 2500)
    assert modes_covered(get_dataset(name), x) == 1


def test_emd_of_equal_sets_is_zero_and_of_a_shift_is_its_length():
    x = np.random.default_rng(3).standard_normal((300, 2))
    assert emd(x, x) == pytest.approx(0.0, abs=1e-12)
    assert emd(x, np.random.default_rng(4).permutation(x)) == pytest.approx(0.0, abs=1e-6)  # simplex tolerance
    d = 0.7
    # W1 >= |mean(x) - mean(y)| = d by Kantorovich-Rubinstein, and moving every point by d achieves it.
    assert emd(x, x + np.array([d, 0.0])) == pytest.approx(d, rel=1e-9)


def test_diverged_samples_give_nan_emd_and_no_quality():
    data = get_dataset('ring8')
    x = np.full((2500, 2), np.nan)
    m = sample_metrics(data, x, data.sample(np.random.default_rng(0), 1500))
    assert m['high_quality'] == 0 and m['modes_covered'] == 0 and math.isnan(m['emd'])


CELL_KEYS = {'dataset', 'loss', 'variant', 'optimizer', 'seed', 'steps', 'high_quality', 'modes_covered', 'n_modes',
             'emd', 'evals', 'curve', 'alignment_final', 'wall_s', 'eval_s', 'd_loss', 'g_loss', 'members', 'samples'}
SMALL = dict(hidden=32, batch=64, n_eval=400, n_emd=300, n_align=200, n_curve=4)  # shapes of the fast tests
TOL = dict(rtol=1e-7, atol=1e-9)  # float64: batched and single runs differ only in summation order


def test_tiny_san_cell_runs_and_is_reproducible():
    cfg = toy.CellConfig(dataset='ring8', loss='hinge', san=True, seed=5, steps=30, n_eval=2500, n_emd=300)
    a, b = toy.run_cell(cfg), toy.run_cell(cfg)
    assert set(a) == CELL_KEYS
    # 5 evaluations in the last 20% (steps 25..30), averaged; 21 alignment points from step 0
    assert [e['step'] for e in a['evals']] == [26, 27, 28, 29, 30]
    assert a['emd'] == pytest.approx(np.mean([e['emd'] for e in a['evals']]))
    assert [s for s, _ in a['curve']] == sorted({round(k * 30 / 20) for k in range(21)})
    assert all(-1 <= v <= 1 for _, v in a['curve']) and a['alignment_final'] == a['curve'][-1][1]
    assert a['variant'] == 'SAN' and a['n_modes'] == 8 and a['samples'].shape == (2500, 2)
    for key in ('high_quality', 'emd', 'wall_s', 'd_loss', 'g_loss'):
        assert math.isfinite(a[key]), key
    assert 0 <= a['high_quality'] <= 1 and 0 <= a['modes_covered'] <= 8 and a['emd'] > 0
    np.testing.assert_array_equal(a['samples'], b['samples'])


def test_gan_and_san_cells_of_a_seed_start_from_the_same_function():
    gan, san = (toy.CellConfig(san=s, seed=7) for s in (False, True))
    torch.manual_seed(7)
    G_gan, D_gan = toy.build_G(gan), toy.build_D(gan)
    torch.manual_seed(7)
    G_san, D_san = toy.build_G(san), toy.build_D(san)
    x = torch.randn(64, 2)
    with torch.no_grad():
        torch.testing.assert_close(D_san(x), D_gan(x))
        z = torch.randn(8, 16)
        torch.testing.assert_close(G_san(z), G_gan(z))


# -- the batched trainer against the single-cell reference ---------------------------------------------------
def _sanified_Ds(n: int, hidden: int = 16) -> list[torch.nn.Module]:
    Ds = []
    for seed in range(n):
        torch.manual_seed(seed)
        D = toy.build_D(toy.CellConfig(hidden=hidden, san=True))
        with torch.no_grad():  # a non-zero input bias, so its gradient routing is tested too
            D.san_layer.bias.normal_()
        Ds.append(D)
    return Ds


def _grads(bD: BatchedD, i: int, D: torch.nn.Module) -> dict[str, tuple]:
    """(batched member i, reference) gradients of the SAN head's omega, scale, input bias and D's first layer."""
    pick = lambda g, f=lambda t: t: None if g is None else f(g)  # noqa: E731
    layer = D.san_layer
    return dict(omega=(pick(bD.head_weight.grad, lambda g: g[i]), layer.weight.grad),
                scale=(pick(bD.head_scale.grad, lambda g: g[i]), layer.scale.grad),
                bias=(pick(bD.head_bias.grad, lambda g: g[i, 0]), layer.bias.grad),
                body=(pick(bD.body.weight[0].grad, lambda g: g[i].T), D.module[0].weight.grad))


def test_batched_san_head_matches_SANLinear_values_and_gradient_routing():
    Ds = _sanified_Ds(3)
    bD = BatchedD(Ds, torch.nn.LeakyReLU(0.2))
    x, w = torch.randn(3, 10, 2), torch.arange(1.0, 11.0)  # w: arbitrary per-sample loss weights
    fun_b, dir_b = bD(x, flg_train=True)
    trained_by = dict(fun={'scale', 'bias', 'body'}, dir={'omega'})  # SAN Eq. 8 stop-gradients
    for path, out_b in (('fun', fun_b), ('dir', dir_b)):
        bD.zero_grad(set_to_none=True)
        (out_b * w).sum().backward(retain_graph=True)
        for i, D in enumerate(Ds):
            D.zero_grad(set_to_none=True)
            ref = D(x[i], flg_train=True)[0 if path == 'fun' else 1][:, 0]  # [10]
            torch.testing.assert_close(out_b[i], ref)
            (ref * w).sum().backward()
            for name, (grad_b, grad_ref) in _grads(bD, i, D).items():
                if name in trained_by[path]:
                    assert grad_ref is not None and grad_ref.abs().sum() > 0, (path, name)
                    torch.testing.assert_close(grad_b, grad_ref)
                else:
                    for g in (grad_b, grad_ref):
                        assert g is None or not g.any(), (path, name)
    with torch.no_grad():
        torch.testing.assert_close(bD(x), torch.stack([D(x[i])[:, 0] for i, D in enumerate(Ds)]))


def test_batched_normalize_weight_puts_every_direction_on_the_sphere():
    bD = BatchedD(_sanified_Ds(2), torch.nn.LeakyReLU(0.2))
    with torch.no_grad():
        bD.head_weight.mul_(torch.tensor([3.0, 0.5]).view(2, 1, 1))
    bD.normalize_weight()
    torch.testing.assert_close(bD.head_weight.norm(dim=-1), torch.ones(2, 1))




def _group(san: bool, steps: int = 20, optimizer: str = 'san-official',
           loss_names: tuple = tuple(losses.list_losses())) -> list[toy.CellConfig]:
    """Cells of one group: every registered loss (two seeds each unless asked otherwise)."""
    return [toy.CellConfig(dataset='ring8', loss=name, san=san, seed=seed, steps=steps, optimizer=optimizer, **SMALL)
            for name in loss_names for seed in (3, 4)]


def _assert_same_parameters(G_b, D_b, i, G, D, san):
    for k, lin in enumerate(m for m in G.modules() if type(m) is torch.nn.Linear):
        torch.testing.assert_close(G_b.weight[k][i], lin.weight.T, **TOL)
        torch.testing.assert_close(G_b.bias[k][i, 0], lin.bias, **TOL)
    body = [m for m in D.modules() if type(m) is torch.nn.Linear]
    for k, lin in enumerate(body[:3]):
        torch.testing.assert_close(D_b.body.weight[k][i], lin.weight.T, **TOL)
    if san:
        head = D.san_layer
        torch.testing.assert_close(D_b.head_weight[i], head.weight, **TOL)
        torch.testing.assert_close(D_b.head_scale[i], head.scale, **TOL)
        torch.testing.assert_close(D_b.head_bias[i, 0], head.bias, **TOL)
    else:
        torch.testing.assert_close(D_b.head.weight[0][i], body[3].weight.T, **TOL)


@pytest.mark.parametrize('san', [False, True], ids=['GAN', 'SAN'])
def test_batched_group_trains_the_same_parameters_as_single_cells_for_every_loss(san, float64):
    cells = _group(san)
    assert {c.loss for c in cells} == set(losses.list_losses())
    G_b, D_b, results = toy.train_group(cells)
    for i, cfg in enumerate(cells):
        G, D, ref = toy.train_cell(cfg)
        _assert_same_parameters(G_b, D_b, i, G, D, san)
        assert results[i]['d_loss'] == pytest.approx(ref['d_loss'], rel=1e-7, abs=1e-9)
        assert results[i]['g_loss'] == pytest.approx(ref['g_loss'], rel=1e-7, abs=1e-9)


@pytest.mark.parametrize('optimizer', ['wgan-gp', 'sngan'])
def test_batched_group_takes_the_settings_d_steps_like_single_cells(optimizer, float64):
    cells = _group(True, steps=6, optimizer=optimizer, loss_names=('hinge', 'wasserstein'))
    assert cells[0].setting.d_steps == 5
    G_b, D_b, _ = toy.train_group(cells)
    for i, cfg in enumerate(cells):
        G, D, _ = toy.train_cell(cfg)
        _assert_same_parameters(G_b, D_b, i, G, D, True)
    G1, D1, _ = toy.train_cell(dataclasses.replace(cells[0], optimizer='san-official'))
    assert not torch.allclose(D1.san_layer.weight, D_b.head_weight[0])  # one D step per G step is another run


def test_batched_group_gives_the_same_metrics_and_alignment_curves_as_single_cells(float64):
    cells = _group(True, loss_names=('hinge', 'nonsaturating', 'klwgan')) + _group(
        True, loss_names=('saturating',))
    cells = [c for c in cells if c.seed == 3]
    for cfg, got in zip(cells, toy.run_group(cells)):
        ref = toy.run_cell(cfg)
        assert got['members'] == len(cells) and ref['members'] == 1
        np.testing.assert_allclose(got['samples'], ref['samples'], **TOL)
        assert got['emd'] == pytest.approx(ref['emd'], rel=1e-7)
        for key in ('high_quality', 'modes_covered', 'dataset', 'loss', 'variant', 'seed', 'steps'):
            assert got[key] == ref[key], key
        # batched alignment (from the stacked weights) against san_ext.diagnostics on the nn.Module D
        np.testing.assert_allclose([v for _, v in got['curve']], [v for _, v in ref['curve']], rtol=1e-6, atol=1e-9)
        assert [s for s, _ in got['curve']] == [s for s, _ in ref['curve']]


def test_gan_alignment_curve_reads_the_normalised_last_row(float64):
    cells = [c for c in _group(False, loss_names=('nonsaturating',)) if c.seed == 3]
    got, ref = toy.run_group(cells)[0], toy.run_cell(cells[0])
    np.testing.assert_allclose([v for _, v in got['curve']], [v for _, v in ref['curve']], rtol=1e-6, atol=1e-9)


def test_group_cells_splits_by_dataset_variant_and_optimizer_with_losses_adjacent():
    sweep = toy.SweepConfig(datasets=('ring8', 'grid25'), optimizers=('san-official', 'dcgan'),
                            losses=('hinge', 'lsgan'), seeds=2, steps=5)
    cells = toy.sweep_cells(sweep)
    groups = toy.group_cells(cells)
    assert sorted(i for g in groups for i in g) == list(range(len(cells)))
    assert len(groups) == 8 and all(len(g) == 4 for g in groups)
    for g in groups:
        assert len({(cells[i].dataset, cells[i].san, cells[i].optimizer) for i in g}) == 1
        assert [cells[i].loss for i in g] == ['hinge', 'hinge', 'lsgan', 'lsgan']


def test_sweep_in_a_worker_pool_returns_cells_in_input_order():
    sweep = toy.SweepConfig(datasets=('ring8', 'swissroll'), losses=('hinge', 'lsgan'), seeds=1, steps=5)
    cells = [dataclasses.replace(c, **SMALL) for c in toy.sweep_cells(sweep)]
    results = toy.run_sweep(cells, workers=2, progress=False)
    assert [(r['dataset'], r['loss'], r['variant']) for r in results] == [(c.dataset, c.loss, c.variant)
                                                                         for c in cells]


def test_cli_tiny_run_writes_results_table_and_plot(tmp_path):
    outdir = tmp_path / 'toy'
    args = ['--steps', '20', '--seeds', '1', '--datasets', 'ring8', '--losses', 'hinge', '--workers', '1',
            '--optimizers', 'san-official', '--outdir', str(outdir)]
    result = CliRunner().invoke(toy.main, args)
    assert result.exit_code == 0, result.output
    assert 'ring8' in result.output and '/8' in result.output
    results = json.loads((outdir / 'results.json').read_text())
    assert {(c['variant'], c['steps']) for c in results['cells']} == {('GAN', 20), ('SAN', 20)}
    assert results['config']['sweep']['losses'] == ['hinge'] and len(results['rows']) == 2
    table = (outdir / 'table.md').read_text()
    assert table.count('| ring8 | san-official | hinge |') == 3  # GAN and SAN rows, and the paired verdict
    assert '±' not in table  # one seed: values alone, n = 1 says so
    for png in ('samples.png', 'curves.png'):
        assert (outdir / png).read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'


def test_cli_rejects_unknown_loss_naming_the_valid_ones(tmp_path):
    result = CliRunner().invoke(toy.main, ['--losses', 'hinge,bogus', '--outdir', str(tmp_path)])
    assert result.exit_code == 2
    assert "'bogus'" in result.output and 'wasserstein' in result.output


# -- our SAN layer against a from-scratch simple-san-style layer, inside the study's trainer ---------------------
class ScratchSANLinear(torch.nn.Linear):
    """Written here from SAN Eq. 7-8 as sony/san's simple-san writes it: unit rows, separate scale, input bias."""

    def __init__(self, weight: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor) -> None:
        super().__init__(weight.shape[1], weight.shape[0])
        self.weight = torch.nn.Parameter(weight.detach().clone())
        self.scale = torch.nn.Parameter(scale.detach().clone())
        self.bias = torch.nn.Parameter(bias.detach().clone())  # added to the input

    def forward(self, x, flg_train=False):
        x = x + self.bias
        w = self.weight / self.weight.norm(dim=1, keepdim=True)
        if flg_train:
            return x @ w.detach().T * self.scale, x.detach() @ w.T * self.scale.detach()
        return x @ w.T * self.scale

    def normalize_weight(self):
        with torch.no_grad():
            self.weight.div_(self.weight.norm(dim=1, keepdim=True))


class ScratchD(torch.nn.Module):
    def __init__(self, body: torch.nn.Module, head: ScratchSANLinear) -> None:
        super().__init__()
        self.module = torch.nn.Sequential(*body, head)

    def forward(self, x, flg_train=False):
        return self.module[-1](self.module[:-1](x), flg_train=flg_train)


def _scratch_copy(D: torch.nn.Module) -> ScratchD:
    import copy
    body = copy.deepcopy(D.module[:-1])
    head = D.san_layer
    return ScratchD(body, ScratchSANLinear(head.weight, head.scale, head.bias))


def _scratch_d_loss(name, D, x_r, x_f):
    """simple-san's hinge D loss, and the non-saturating one with SAN's reweighted direction term, by hand."""
    (fun_r, dir_r), (fun_f, dir_f) = D(x_r, flg_train=True), D(x_f, flg_train=True)
    if name == 'hinge':
        return (torch.relu(1 - fun_r).mean() + torch.relu(1 + fun_f).mean() - dir_r.mean() + dir_f.mean())
    w_r, w_f = torch.sigmoid(-dir_r).detach(), torch.sigmoid(-dir_f).detach()
    sp = torch.nn.functional.softplus
    return sp(-fun_r).mean() + sp(fun_f).mean() - (w_r * dir_r).mean() + (w_f * dir_f).mean()


@pytest.mark.parametrize('name', ['hinge', 'nonsaturating'])
def test_our_san_layer_equals_a_from_scratch_layer_in_the_study_trainer(name, float64, monkeypatch):
    from san_ext.studies import toy_train
    from san_ext.studies.toy_data import TrainBatch, training_batches

    cfg = toy.CellConfig(dataset='ring8', loss=name, san=True, seed=2, steps=15, **SMALL)
    G, D = toy.init_models(cfg)
    with torch.no_grad():
        D.san_layer.bias.normal_()  # a non-zero input bias, so its routing counts
    scratch = _scratch_copy(D)
    b = toy_train._tensors(next(training_batches('ring8', 2, cfg.batch, cfg.z_dim)))
    assert isinstance(b, TrainBatch)
    with torch.no_grad():
        x_fake = G(b.z_d)
    loss = losses.get(name, san=True)
    ours = loss.d_real(D(b.x_real, flg_train=True)).mean() + loss.d_fake(D(x_fake, flg_train=True)).mean()
    theirs = _scratch_d_loss(name, scratch, b.x_real, x_fake)
    assert float(ours.detach()) == pytest.approx(float(theirs.detach()), rel=1e-13)
    ours.backward()
    theirs.backward()
    for (n1, p1), (n2, p2) in zip(D.named_parameters(), scratch.named_parameters()):
        torch.testing.assert_close(p1.grad, p2.grad, rtol=1e-12, atol=1e-14, msg=f'{n1} vs {n2}')
    # whole training runs through the study's trainer, one with each D, end on the same parameters and curve
    init = toy.init_models
    runs = []
    for make in (lambda D: D, _scratch_copy):
        monkeypatch.setattr(toy_train, 'init_models', lambda c, make=make: (lambda g, d: (g, make(d)))(*init(c)))
        runs.append(toy_train.train_cell(cfg))
    (_, D_ours, r_ours), (_, D_theirs, r_theirs) = runs
    for p1, p2 in zip(D_ours.parameters(), D_theirs.parameters()):
        torch.testing.assert_close(p1, p2, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose([v for _, v in r_ours['curve']], [v for _, v in r_theirs['curve']], rtol=1e-9)


# -- protocol pieces -------------------------------------------------------------------------------------------
def test_every_optimizer_setting_names_its_source_and_the_default_is_the_official_one():
    from san_ext.studies.toy_setup import DEFAULT_OPTIMIZER, OPTIMIZERS, get_optimizer
    assert DEFAULT_OPTIMIZER == 'san-official' and list(OPTIMIZERS)[0] == DEFAULT_OPTIMIZER
    official = get_optimizer('san-official')
    assert (official.lr, official.betas, official.d_steps) == (1e-3, (0.0, 0.99), 1)
    assert 'params.json' in official.source
    assert (get_optimizer('wgan-gp').lr, get_optimizer('wgan-gp').d_steps) == (1e-4, 5)
    assert all(o.source for o in OPTIMIZERS.values())
    with pytest.raises(ValueError, match='san-official'):
        get_optimizer('adam')


@pytest.mark.parametrize('steps, expected', [(10_000, [8400, 8800, 9200, 9600, 10_000]),
                                             (5000, [4200, 4400, 4600, 4800, 5000]), (5, [5])])
def test_evaluations_fall_in_the_last_fifth_of_training(steps, expected):
    from san_ext.studies.toy_setup import eval_steps
    assert eval_steps(toy.CellConfig(steps=steps)) == expected


def _cell(variant, seed, modes, loss='hinge'):
    return dict(dataset='ring8', optimizer='dcgan', loss=loss, variant=variant, seed=seed, modes_covered=modes,
                n_modes=8, high_quality=0.5, emd=0.1, alignment_final=0.5, wall_s=1.0)


@pytest.mark.parametrize('gan, san, verdict', [
    ([2, 3, 2, 3, 2], [6, 7, 6, 8, 7], 'SAN better'),
    ([6, 7, 6, 8, 7], [2, 3, 2, 3, 2], 'GAN better'),
    ([1, 0, 2, 1, 0], [0, 2, 1, 1, 1], 'both fail'),
    ([6, 7, 6, 8, 7], [7, 6, 7, 7, 7], 'no clear difference'),
    ([2, 3, 2, 3, 2], [9, 0, 8, 0, 7], 'no clear difference'),  # +2.4 on average, but not 2 standard errors
])
def test_paired_verdict_follows_the_stated_rule(gan, san, verdict):
    from san_ext.studies.toy_metrics import verdicts
    cells = [_cell('GAN', s, m) for s, m in enumerate(gan)] + [_cell('SAN', s, m) for s, m in enumerate(san)]
    (row,) = verdicts(cells)
    assert row['verdict'] == verdict and row['n'] == 5
    assert row['diff'] == pytest.approx(np.mean(np.array(san) - np.array(gan)))


def test_table_lists_every_seed_and_n():
    from san_ext.studies.toy_metrics import aggregate, format_table
    rows = aggregate([_cell('GAN', s, m) for s, m in enumerate([2, 3, 4])])
    text = format_table(rows)
    assert '3.0±1.0/8' in text and '2 3 4' in text and ' 3 ' in text


def test_batched_directions_match_san_alignment_with_a_negative_scale(float64):
    from san_ext.diagnostics import san_alignment
    from san_ext.studies.toy_train import _batched_directions

    Ds = _sanified_Ds(2)
    with torch.no_grad():
        Ds[1].san_layer.scale.neg_()  # s < 0: D's direction is -omega
    bD = BatchedD(Ds, torch.nn.LeakyReLU(0.2))
    x_r, x_f = torch.randn(2, 50, 2) + 1, torch.randn(2, 50, 2)
    with torch.no_grad():
        h_r, rows, _ = _batched_directions(bD, x_r)
        h_f, _, _ = _batched_directions(bD, x_f)
    from san_ext.diagnostics import direction_alignment
    for i, D in enumerate(Ds):
        got = float(direction_alignment(rows[i], h_r[i], h_f[i])[0])
        assert got == pytest.approx(san_alignment(D, x_r[i], x_f[i])['module.6'], abs=1e-12)


def test_quick_preset_shows_learning_with_n_in_the_table(tmp_path):
    """The newcomer's first command: at the default setting the baselines cover modes, and the table shows n."""
    outdir = tmp_path / 'quick'
    result = CliRunner().invoke(toy.main, ['--quick', '--outdir', str(outdir)])
    assert result.exit_code == 0, result.output
    rows = json.loads((outdir / 'results.json').read_text())['rows']
    assert {r['optimizer'] for r in rows} == {'san-official'} and all(r['n_seeds'] == 3 for r in rows)
    gan = [r for r in rows if r['variant'] == 'GAN']
    assert max(r['modes_covered_mean'] for r in gan) >= 1 and max(r['high_quality_mean'] for r in gan) > 0.1
    assert '±' in result.output and ' 3 ' in result.output


def test_paired_g_step_scores_against_the_fresh_real_batch_from_its_own_stream():
    """RpGAN's G step reads ``x_real_g``, drawn from ``default_rng([seed, 2])``; ``x_real`` and the rest keep the
    ``[seed, 0]`` stream, so the unpaired losses' runs are unchanged by it."""
    from san_ext.studies.toy_batched import LossSlice, MemberStream, g_step
    from san_ext.studies.toy_data import training_batches

    data = get_dataset('ring8')
    b = next(training_batches('ring8', 3, 16, 4))
    np.testing.assert_array_equal(b.x_real, data.sample(np.random.default_rng([3, 0]), 64 * 16)[:16])
    np.testing.assert_array_equal(b.x_real_g, data.sample(np.random.default_rng([3, 2]), 64 * 16)[:16])
    cells = [toy.CellConfig(dataset='ring8', loss='rpgan', san=False, seed=s, batch=16) for s in (0, 1)]
    G, D, _ = toy.train_group([dataclasses.replace(c, steps=1) for c in cells])
    seen = []
    D.register_forward_pre_hook(lambda m, args: seen.append(args[0].detach().clone()))
    batch = MemberStream({s: training_batches('ring8', s, 16, cells[0].z_dim) for s in (0, 1)}, [0, 1]).next()
    g_step(G, D, torch.optim.SGD(G.parameters(), lr=0.0), [LossSlice(losses.get('rpgan'), slice(0, 2))], batch)
    assert any(torch.equal(x, batch.x_real_g) for x in seen)
    assert not any(torch.equal(x, batch.x_real) for x in seen)
