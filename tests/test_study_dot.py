"""Tests of the 2-D DOT study (``python -m san_ext.studies.dot``): the training schedule of each critic, the transports
on a critic whose optimal form is known, determinism, and the CLI's outputs."""

from __future__ import annotations

import dataclasses
import json
import math

import matplotlib.image
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from san_ext.layers import SANLinear
from san_ext.studies import dot, dot_train, toy_batched
from san_ext.studies.dot_eval import TransportConfig, evaluate_samples, method_names, transport_samples
from san_ext.studies.dot_report import aggregate, format_table
from san_ext.studies.toy_metrics import emd

pytestmark = pytest.mark.usefixtures('one_thread')

TINY = dot.StudyConfig(seeds=1, train=dot_train.TrainConfig(steps=20), transport=TransportConfig(steps=5, n_emd=64),
                       workers=1)


def _comparable(cells: list[dict]) -> list[dict]:
    """Cells without wall-clock fields, samples as lists, so two runs compare with ==."""
    drop = ('train_s', 'eval_s')
    return [dict({k: v for k, v in c.items() if k not in drop},
                 samples={m: x.tolist() for m, x in c['samples'].items()}) for c in cells]


# -- critics and training ----------------------------------------------------------------------------------------
def test_critic_registry_names_the_recipes_and_rejects_unknown():
    assert dot_train.list_critics() == ['wgan-gp', 'hinge-gan', 'hinge-san', 'rpgan-gan', 'rpgan-san']
    wgan, gan, san, rp_gan, rp_san = (dot_train.get_critic(n) for n in dot_train.list_critics())
    assert (wgan.loss, wgan.gp_weight, wgan.n_critic, wgan.san) == ('wasserstein', 10.0, 5, False)
    assert (gan.loss, gan.gp_weight, gan.n_critic, gan.san) == ('hinge', 0.0, 1, False)
    assert dataclasses.replace(san, san=False) == dataclasses.replace(gan, name='hinge-san')  # only SAN differs
    # RpGAN: hinge's recipe with the loss swapped, and again only SAN between its two
    assert dataclasses.replace(rp_gan, loss='hinge') == dataclasses.replace(gan, name='rpgan-gan')
    assert dataclasses.replace(rp_san, san=False) == dataclasses.replace(rp_gan, name='rpgan-san')
    with pytest.raises(ValueError, match='hinge-gan'):
        dot_train.get_critic('hinge')


@pytest.mark.parametrize('name, d_per_g', [('wgan-gp', 5), ('hinge-gan', 1), ('hinge-san', 1)])
def test_each_g_step_follows_n_critic_d_steps(monkeypatch, name, d_per_g):
    calls = []
    d_step, g_step = toy_batched.d_step, toy_batched.g_step  # train_members (shared with the 2-D study) calls these
    monkeypatch.setattr(toy_batched, 'd_step', lambda *a: calls.append('D') or d_step(*a))
    monkeypatch.setattr(toy_batched, 'g_step', lambda *a: calls.append('G') or g_step(*a))
    dot_train.train_group(dot_train.get_critic(name), [dot_train.Member('grid25', 0)], dot_train.TrainConfig(steps=3))
    assert ''.join(calls) == ('D' * d_per_g + 'G') * 3


def test_hinge_san_critic_has_a_san_last_layer_kept_on_the_sphere():
    critic, cfg = dot_train.get_critic('hinge-san'), dot_train.TrainConfig(steps=10)
    members = [dot_train.Member('grid25', 0), dot_train.Member('swissroll', 1)]
    _, D_init = dot_train.init_member(critic, members[0], cfg)
    assert isinstance(D_init.san_layer, SANLinear)
    _, D, _ = dot_train.train_group(critic, members, cfg)
    assert D.san
    torch.testing.assert_close(D.head_weight.norm(dim=-1), torch.ones(2, 1))  # re-projected after every D step
    _, D_gan, _ = dot_train.train_group(dot_train.get_critic('hinge-gan'), members[:1], cfg)
    assert not D_gan.san


# -- transports and evaluation -----------------------------------------------------------------------------------
def test_dot_moves_samples_towards_the_data_with_the_optimal_critic():
    """Target: a tight blob at the origin; G: a blob at distance 0.6. D(x) = -||x|| is an optimal (1-Lipschitz)
    Kantorovich potential for transport onto the point at the origin. With the exact potential, DOT's objective
    ||x - y|| - D(x)/k_eff is flat along the segment from y to the target (Tanaka's 2023 errata: the minimiser is
    not unique), so DOT may move little, but what it moves goes towards the data: every DOT variant lowers the EMD,
    and no sample moves further than its distance to the target. Naive ascent of D reaches the target."""
    mu = torch.tensor([0.6, 0.0])

    def G(z):
        return mu + 0.1 * z[:, :2]

    def D(x):
        return -x.norm(dim=1)

    z = torch.randn(400, 4, generator=torch.Generator().manual_seed(0))
    x_real = np.random.default_rng(0).normal(0.0, 0.02, (400, 2))
    samples, k_eff = transport_samples(G, D, z, TransportConfig(n_emd=400), torch.Generator().manual_seed(1))
    assert 0.9 < k_eff['k_eff_target'] <= 1.0 + 1e-6  # a pair estimate of the Lipschitz constant, 1
    assert k_eff['k_eff_latent'] == pytest.approx(0.1, rel=0.2)  # G scales the first 2 of 4 latent dims by 0.1
    bare = emd(samples['bare'].numpy(), x_real)
    assert bare == pytest.approx(0.6, abs=0.05)
    y, radius = samples['bare'], samples['bare'].norm(dim=1)
    for method in ('target-sgd', 'target-adam', 'latent-sgd', 'latent-adam'):
        assert emd(samples[method].numpy(), x_real) < bare, method
        assert ((samples[method] - y).norm(dim=1) <= radius + 0.02).all(), method  # no overshoot past the target
    for method in ('naive-sgd', 'naive-adam'):
        assert emd(samples[method].numpy(), x_real) < 0.15, method


def test_a_diverged_generator_gives_nan_metrics_instead_of_an_error():
    samples, k_eff = transport_samples(lambda z: torch.full((len(z), 2), math.nan), lambda x: x.sum(dim=1),
                                       torch.zeros(8, 3), TransportConfig(steps=2, n_emd=8), torch.Generator())
    assert set(samples) == set(method_names(TransportConfig()))
    assert math.isnan(k_eff['k_eff_target']) and math.isnan(k_eff['k_eff_latent'])
    metrics = evaluate_samples('grid25', samples, np.zeros((8, 2)))
    assert all(math.isnan(m['emd']) for m in metrics.values())


def test_aggregate_gives_mean_std_over_seeds_and_counts_improvements():
    methods = ['bare', 'target-sgd']
    cells = [dict(dataset='grid25', critic='hinge-gan', seed=s, data_emd=0.1, k_eff_target=1.0 + s,
                  k_eff_latent=0.5, train_s=1.0,
                  metrics={'bare': dict(emd=e, high_quality=0.5, modes_covered=3, n_modes=25),
                           'target-sgd': dict(emd=e - d, high_quality=0.6, modes_covered=4, n_modes=25)})
             for s, (e, d) in enumerate([(0.3, 0.1), (0.5, -0.1), (0.4, 0.05)])]
    (row,) = aggregate(cells, methods)
    assert row['n_seeds'] == 3 and row['improved'] == {'bare': 0, 'target-sgd': 2}
    assert row['emd']['target-sgd']['mean'] == pytest.approx(np.mean([0.2, 0.6, 0.35]))
    assert row['emd']['bare']['std'] == pytest.approx(np.std([0.3, 0.5, 0.4], ddof=1))
    assert row['k_eff_target']['mean'] == pytest.approx(2.0)
    assert row['delta_emd']['target-sgd']['mean'] == pytest.approx(np.mean([-0.1, 0.1, -0.05]))  # paired by seed
    assert row['delta_emd']['target-sgd']['std'] == pytest.approx(np.std([-0.1, 0.1, -0.05], ddof=1))
    lines = format_table([row], methods).splitlines()
    assert lines[0].split() == ['dataset', 'critic', 'data', 'bare', 'target-sgd']
    assert lines[2].split()[3] == '0.400±0.100'
    lines = format_table([row], methods, delta=True).splitlines()
    assert lines[0].split() == ['dataset', 'critic', 'target-sgd']
    assert lines[2].split()[2:] == ['-0.017±0.104', '2/3']


# -- the study ----------------------------------------------------------------------------------------------------
def test_same_options_give_the_same_numbers_in_process_and_in_a_pool():
    study = dataclasses.replace(TINY, datasets=('swissroll',), critics=('hinge-gan', 'hinge-san'), seeds=2)
    first = _comparable(dot.run_study(study, progress=False))
    assert len(first) == 4 and [(c['critic'], c['seed']) for c in first] == [
        ('hinge-gan', 0), ('hinge-gan', 1), ('hinge-san', 0), ('hinge-san', 1)]
    assert first == _comparable(dot.run_study(study, progress=False))
    assert first == _comparable(dot.run_study(dataclasses.replace(study, workers=2), progress=False))
    assert first[0]['metrics'] != first[1]['metrics']  # the seed matters


def test_cli_quick_writes_a_table_json_and_figure_with_finite_numbers(tmp_path):
    result = CliRunner().invoke(dot.main, ['--quick', '--steps', '20', '--n-emd', '64', '--dot-steps', '5',
                                           '--workers', '1', '--outdir', str(tmp_path)])
    assert result.exit_code == 0, result.output
    results = json.loads((tmp_path / 'results.json').read_text())
    methods = results['methods']
    assert methods == ['bare', 'target-sgd', 'target-adam', 'latent-sgd', 'latent-adam', 'naive-sgd', 'naive-adam']
    assert results['config']['study']['seeds'] == dot.QUICK.seeds
    assert results['config']['study']['train']['steps'] == 20
    n = 2 * len(dot_train.list_critics())  # 2 data sets x every critic x 1 seed
    assert len(results['cells']) == n and len(results['rows']) == n
    for row in results['rows']:
        for m in methods:
            assert math.isfinite(row['emd'][m]['mean']) and math.isfinite(row['emd'][m]['std']), (row['critic'], m)
        assert math.isfinite(row['data_emd']['mean']) and row['k_eff_target']['mean'] > 0
    table = (tmp_path / 'table.md').read_text()
    emd_table, delta_table = (part.strip().splitlines()[2:] for part in table.split('###')[1:])
    assert emd_table[0] == '| dataset | critic | data | ' + ' | '.join(methods) + ' |' and len(emd_table) == 2 + n
    assert delta_table[0] == '| dataset | critic | ' + ' | '.join(methods[1:]) + ' |' and len(delta_table) == 2 + n
    assert 'nan' not in result.output and 'hinge-san' in result.output
    image = matplotlib.image.imread(tmp_path / 'samples.png')
    assert image.ndim == 3 and image.shape[0] > 300 and image.shape[1] > 600


def test_cli_rejects_unknown_names_listing_the_valid_ones(tmp_path):
    result = CliRunner().invoke(dot.main, ['--critics', 'hinge-gan,vanilla', '--outdir', str(tmp_path)])
    assert result.exit_code == 2
    assert "'vanilla'" in result.output and 'wgan-gp,hinge-gan,hinge-san' in result.output
