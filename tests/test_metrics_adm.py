"""The ADM protocol: npz batches (both reference layouts, clear errors for broken ones), the suite's FID/sFID/IS/P/R
against a numpy transcription of ADM's evaluator on the same features, its Inception features, sharding over two
gloo ranks, ``gen_images.py --npz`` on the quick-start network and ``calc_metrics.py --ref-npz/--sample-npz`` end to
end, and what metric records say about how they were made. CPU, offline, random weights.
"""

from __future__ import annotations

import io
import json
import re
import zipfile
from pathlib import Path

import numpy as np
import pytest
import scipy.linalg
import scipy.spatial.distance
import torch
from click.testing import CliRunner
from scripts import load_script  # tests/scripts.py
from torch import nn

from san_ext.metrics import (
    CallableExtractor,
    InceptionScoreStats,
    MetricOptions,
    compute_adm,
    read_npz,
    write_npz,
    write_sample_batch,
)
from san_ext.metrics import adm as adm_module
from san_ext.metrics import cache as metric_cache
from san_ext.metrics.adm import ADM_DIMS, adm_inception, spatial_features
from san_ext.metrics.sampling import generated_images, latents

DIMS = (6, 5, 7)  # pool, spatial, logits of the stand-in extractor
QUICK_START = dict(cond=True, batch=8, cbase=512, cmax=32, syn_layers=4, backbones=('tf_efficientnet_lite0',),
                   pretrained=False, metrics=('none',), workers=0, device='cpu')  # README's CPU quick start

pytestmark = pytest.mark.usefixtures('one_thread')


# ---------------------------------------------------------------------------------------------------------------
# Helpers: a stand-in extractor and generator, npz files, ADM's evaluator in numpy.

def tiny_adm_extractor(dims: tuple[int, int, int] = DIMS) -> CallableExtractor:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
                        nn.Linear(32, sum(dims)))
    with torch.no_grad():  # confident logits: an Inception Score well above 1
        net[-1].weight[sum(dims[:2]):].normal_(0, 10, generator=torch.Generator().manual_seed(1))
    return CallableExtractor(net, 'test-adm-conv', sum(dims)).eval()


class RGBTinyG(nn.Module):
    """Stand-in conditional generator: z [N, 8], one-hot c [N, 3] -> RGB 8x8 images in [-1, 1]."""

    def __init__(self) -> None:
        super().__init__()
        self.z_dim, self.c_dim = 8, 3
        self.fc = nn.Linear(11, 3 * 8 * 8)
        torch.nn.init.normal_(self.fc.weight, std=0.5, generator=torch.Generator().manual_seed(1))

    def forward(self, z: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.fc(torch.cat([z, c], dim=1))).view(-1, 3, 8, 8)


def random_images(n: int, res: int = 8, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, res, res, 3), dtype=np.uint8)  # NHWC


def patch_images(n: int, seed: int = 0) -> np.ndarray:
    """Flat colour patches with noise, uint8 [n, 8, 8, 3]: a reference set whose features differ from the stand-in
    generator's, so FID, precision and recall are all far from their trivial values and from each other."""
    rng = np.random.default_rng(seed)
    colours = rng.integers(60, 200, (n, 1, 1, 3)) + rng.integers(-20, 21, (n, 8, 8, 3))
    return np.clip(colours, 0, 255).astype(np.uint8)


def random_stats(dims: tuple[int, int, int], seed: int = 0) -> dict[str, np.ndarray]:
    """mu, sigma, mu_s, sigma_s of the sizes in ``dims``: full SPD covariances when small, diagonal ones at ADM's
    sizes (where only the file layout is under test)."""
    rng = np.random.default_rng(seed)
    out = {}
    for mu, sigma, d in (('mu', 'sigma', dims[0]), ('mu_s', 'sigma_s', dims[1])):
        a = rng.standard_normal((d, 3 * d)) if d <= 64 else None
        out[mu] = rng.standard_normal(d)
        out[sigma] = a @ a.T / (3 * d) if a is not None else np.diag(rng.uniform(0.5, 2.0, d))
    return out


def features(ext, images: np.ndarray) -> np.ndarray:
    return ext(torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))).double().numpy()


def adm_evaluator_numpy(ref: np.ndarray, gen: np.ndarray, dims: tuple[int, int, int], split: int,
                        ref_stats: dict | None = None) -> dict[str, float]:
    """ADM's evaluator.py on ready features [N, sum(dims)], written out in numpy/scipy."""
    p, s = dims[0], dims[0] + dims[1]

    def fd(mu1, s1, mu2, s2):
        covmean = scipy.linalg.sqrtm(s1 @ s2).real
        return float((mu1 - mu2) @ (mu1 - mu2) + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))

    def moments(x):
        return x.mean(0), np.cov(x, rowvar=False)

    r_pool = (ref_stats['mu'], ref_stats['sigma']) if ref_stats else moments(ref[:, :p])
    r_spat = (ref_stats['mu_s'], ref_stats['sigma_s']) if ref_stats else moments(ref[:, p:s])
    logits = gen[:, s:]
    preds = np.exp(logits - logits.max(1, keepdims=True))
    preds /= preds.sum(1, keepdims=True)
    scores = []
    for i in range(0, len(preds), split):  # compute_inception_score(split_size)
        part = preds[i:i + split]
        scores.append(np.exp(np.mean(np.sum(part * (np.log(part) - np.log(part.mean(0, keepdims=True))), 1))))
    d_rr = scipy.spatial.distance.cdist(ref[:, :p], ref[:, :p], 'sqeuclidean')
    d_gg = scipy.spatial.distance.cdist(gen[:, :p], gen[:, :p], 'sqeuclidean')
    d_rg = scipy.spatial.distance.cdist(ref[:, :p], gen[:, :p], 'sqeuclidean')
    radii_r, radii_g = np.sort(d_rr, 1)[:, 3], np.sort(d_gg, 1)[:, 3]  # k = 3 with the point itself at 0
    return {'adm_fid': fd(*moments(gen[:, :p]), *r_pool), 'adm_sfid': fd(*moments(gen[:, p:s]), *r_spat),
            'adm_is': float(np.mean(scores)), 'adm_precision': float((d_rg <= radii_r[:, None]).any(0).mean()),
            'adm_recall': float((d_rg <= radii_g[None, :]).any(1).mean())}


def opts(**kw) -> MetricOptions:
    return MetricOptions(**{'batch_size': 8, 'num_workers': 0, 'progress': False, 'cache': False, **kw})


# ---------------------------------------------------------------------------------------------------------------
# Reading and writing batches.

@pytest.mark.parametrize('layout', ['images', 'images+stats', 'compressed+labels'])
def test_npz_reader_handles_both_reference_layouts(layout, tmp_path):
    images, stats, labels = random_images(12), random_stats(ADM_DIMS[:2] + (0,)), np.arange(12) % 4
    path = tmp_path / 'ref.npz'
    if layout == 'images':
        np.savez(path, arr_0=images)
    elif layout == 'images+stats':
        np.savez(path, arr_0=images, **stats)
    else:
        np.savez_compressed(path, arr_0=images, arr_1=labels)
    batch = read_npz(path, stat_dims=ADM_DIMS[:2])
    assert batch.num_images == 12 and batch.resolution == (8, 8)
    assert all(np.array_equal(batch.images[i][0], images[i].transpose(2, 0, 1)) for i in (0, 5, 11))
    assert (batch.stats is None) == (layout != 'images+stats')
    if batch.stats is not None:
        assert all(np.array_equal(batch.stats[k], stats[k]) for k in stats)
    assert (batch.labels is None) == (layout != 'compressed+labels')
    assert batch.content_sha256 == metric_cache.dataset_fingerprint(path)


def _truncated_member(path: Path) -> None:
    """A zip whose arr_0.npy header promises 12 images but holds 7 (an interrupted writer's leftovers)."""
    buf = io.BytesIO()
    np.save(buf, random_images(12))
    with zipfile.ZipFile(path, 'w') as zf:
        zf.writestr('arr_0.npy', buf.getvalue()[:-5 * 8 * 8 * 3])


BROKEN = {
    'cut download': (lambda p: p.write_bytes(_savez_bytes(arr_0=random_images(12))[:-100]), 'truncated download'),
    'short member': (_truncated_member, 'header promises'),
    'no images': (lambda p: np.savez(p, arr_1=np.arange(3)), 'no arr_0'),
    'NCHW': (lambda p: np.savez(p, arr_0=random_images(4).transpose(0, 3, 1, 2).copy()), 'looks like NCHW'),
    'float': (lambda p: np.savez(p, arr_0=random_images(4).astype(np.float32)), r'uint8 images \[N, H, W, 3\]'),
    'labels': (lambda p: np.savez(p, arr_0=random_images(4), arr_1=np.arange(5)), '5 labels for 4 images'),
    'half stats': (lambda p: np.savez(p, arr_0=random_images(4), **{k: v for k, v in random_stats(
        ADM_DIMS).items() if k in ('mu', 'sigma')}), 'not mu_s, sigma_s'),
    'sigma shape': (lambda p: np.savez(p, arr_0=random_images(4), **{**random_stats(ADM_DIMS),
                                                                     'sigma': np.eye(7)}), 'do not match'),
    'other network': (lambda p: np.savez(p, arr_0=random_images(4), **random_stats((768, 2023, 0))),
                      'mu has 768 features, the extractor gives 2048'),
    'nan': (lambda p: np.savez(p, arr_0=random_images(4), **{**random_stats(ADM_DIMS), 'mu_s': np.full(2023, np.nan)}),
            'NaN'),
}


def _savez_bytes(**arrays) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


@pytest.mark.parametrize('case', list(BROKEN))
def test_broken_or_mismatched_npz_fails_with_a_clear_error(case, tmp_path):
    make, message = BROKEN[case]
    path = tmp_path / 'bad.npz'
    make(path)
    with pytest.raises(ValueError, match=message) as err:
        read_npz(path, stat_dims=ADM_DIMS[:2])
    assert str(path) in str(err.value)


def test_written_sample_batch_is_what_the_generator_draws_for_the_seed(tmp_path):
    G = RGBTinyG()
    path = write_sample_batch(tmp_path / 's.npz', G, 21, seed=4, batch_size=8, progress=False)
    with np.load(path) as f:
        arr_0, arr_1 = f['arr_0'], f['arr_1']
    want = torch.cat([im for _, im in generated_images(G, 21, 8, seed=4, device='cpu')]).permute(0, 2, 3, 1)
    assert arr_0.dtype == np.uint8 and arr_0.shape == (21, 8, 8, 3) and np.array_equal(arr_0, want.numpy())
    assert arr_1.dtype == np.int64 and np.array_equal(arr_1, latents(4, 0, 21, 8, 3)[1].argmax(1).numpy())
    with pytest.raises(ValueError, match='got 3 images, expected 4'):
        write_npz(tmp_path / 'x.npz', [(random_images(3), None)], 4, (8, 8, 3))
    assert not (tmp_path / 'x.npz').exists()


# ---------------------------------------------------------------------------------------------------------------
# The suite against ADM's evaluator in numpy.

@pytest.mark.parametrize('with_stats', [False, True])
def test_adm_suite_matches_adm_evaluator_in_numpy_on_the_same_features(with_stats, tmp_path, monkeypatch):
    monkeypatch.setattr(adm_module, 'ADM_IS_SPLIT', 16)  # 40 samples: splits of 16, 16 and 8, as ADM splits
    ext, G = tiny_adm_extractor(), RGBTinyG()
    ref_images = patch_images(30, seed=2)
    stats = random_stats(DIMS, seed=3) if with_stats else {}
    np.savez(tmp_path / 'ref.npz', arr_0=ref_images, **stats)
    result = compute_adm(tmp_path / 'ref.npz', G=G, opts=opts(num_gen=40, seed=5), extractor=ext, dims=DIMS)
    gen_images = torch.cat([im for _, im in generated_images(G, 40, 8, seed=5, device='cpu')])
    gen = ext(gen_images).double().numpy()
    want = adm_evaluator_numpy(features(ext, ref_images), gen, DIMS, split=16, ref_stats=stats or None)
    assert result.results.keys() == want.keys()
    assert result.results == pytest.approx(want, rel=1e-6, abs=1e-9)
    assert want['adm_precision'] > want['adm_recall'] + 0.3 and want['adm_is'] > 1.5  # nothing trivial or symmetric
    assert (result.protocol, result.num_gen, result.num_ref) == ('adm', 40, 30)


def test_adm_scores_a_sample_batch_as_it_scores_the_generator(tmp_path):
    ext, G = tiny_adm_extractor(), RGBTinyG()
    np.savez(tmp_path / 'ref.npz', arr_0=random_images(30, seed=2))
    write_sample_batch(tmp_path / 's.npz', G, 40, seed=5, batch_size=8, progress=False)
    from_g = compute_adm(tmp_path / 'ref.npz', G=G, opts=opts(num_gen=40, seed=5), extractor=ext, dims=DIMS)
    from_npz = compute_adm(tmp_path / 'ref.npz', samples_npz=tmp_path / 's.npz', opts=opts(), extractor=ext, dims=DIMS)
    assert from_npz.results == pytest.approx(from_g.results, rel=1e-9)
    assert from_npz.samples['source'] == 'npz' and from_g.samples['source'] == 'generator'


def test_inception_score_splits_of_5000_like_adm():
    logits = np.random.default_rng(6).standard_normal((12_000, 20)) * 3  # splits 5000, 5000, 2000
    acc = InceptionScoreStats(20, 12_000, split_size=5000)
    for start in range(0, 12_000, 700):  # batches that straddle the split boundaries
        acc.update(torch.from_numpy(logits[start:start + 700]), torch.arange(start, min(start + 700, 12_000)))
    preds = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    scores = [np.exp(np.mean(np.sum(p * (np.log(p) - np.log(p.mean(0, keepdims=True))), 1)))
              for p in (preds[:5000], preds[5000:10_000], preds[10_000:])]
    assert acc.splits == 3 and acc.result()[0] == pytest.approx(np.mean(scores), rel=1e-10)


def test_spatial_features_are_flattened_in_tfs_nhwc_order():
    x = np.random.default_rng(7).standard_normal((2, 768, 17, 17)).astype(np.float32)  # mixed_6/conv, NCHW
    tf_nhwc = x.transpose(0, 2, 3, 1)  # what TF holds: [N, 17, 17, 768]
    want = tf_nhwc[..., :7].reshape(2, -1)  # evaluator.py: spatial[..., :7], then reshape([N, -1])
    assert want.shape == (2, ADM_DIMS[1])
    np.testing.assert_array_equal(spatial_features(torch.from_numpy(x)).numpy(), want)


def test_adm_inception_gives_pool3_spatial_and_unbiased_logits_of_one_pass(tmp_path, monkeypatch):
    tf = pytest.importorskip('torch_fidelity.feature_extractor_inceptionv3')
    with monkeypatch.context() as m:  # random weights with the real layout, built without a download
        m.setattr(tf, 'load_state_dict_from_url', lambda *a, **k: None)
        m.setattr(tf.FeatureExtractorInceptionV3, 'load_state_dict', lambda self, *a, **k: None)
        net = tf.FeatureExtractorInceptionV3('x', ['2048', 'logits_unbiased'])
    for conv in (mod for mod in net.modules() if isinstance(mod, nn.Conv2d)):
        nn.init.kaiming_normal_(conv.weight)
    torch.save(net.state_dict(), tmp_path / 'weights-inception-2015-12-05-6726825d.pth')
    monkeypatch.setenv('SAN_EXT_WEIGHTS', str(tmp_path))
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'torch'))
    ext = adm_inception()
    images = torch.randint(0, 256, (2, 3, 16, 16), dtype=torch.uint8, generator=torch.Generator().manual_seed(8))
    kept = []
    net.Mixed_6d.branch1x1.register_forward_hook(lambda mod, args, out: kept.append(out.clone()))
    pool, logits = net(images)
    out = ext(images)
    assert ext.dim == sum(ADM_DIMS) == 2048 + 2023 + 1008 and out.shape == (2, 5079)
    assert kept[0].shape == (2, 192, 17, 17)  # the 1x1 branch of the third 17x17 block: TF's mixed_6/conv
    torch.testing.assert_close(out[:, :2048], pool)
    torch.testing.assert_close(out[:, 2048:4071], spatial_features(kept[0]))
    torch.testing.assert_close(out[:, 4071:], logits)


# ---------------------------------------------------------------------------------------------------------------
# Two gloo ranks give the one-rank results.

def _adm_results(ref: str, samples: str) -> dict:
    """The suite on an npz sample batch (the generator's sharding is test_metrics.py's) with splits of 8, so the
    IS splits, the reference and sample shards and the feature banks all cross rank boundaries."""
    adm_module.ADM_IS_SPLIT = 8  # a fresh process (spawn) or restored by the caller
    ext = tiny_adm_extractor()
    return compute_adm(ref, samples_npz=samples, opts=opts(), extractor=ext, dims=DIMS).results


def _rank_worker(rank: int, world: int, init_file: str, ref: str, samples: str, out: str) -> None:
    torch.distributed.init_process_group('gloo', init_method=f'file://{init_file}', rank=rank, world_size=world)
    try:
        torch.set_num_threads(1)
        (Path(out) / f'rank{rank}.json').write_text(json.dumps(_adm_results(ref, samples)))
    finally:
        torch.distributed.destroy_process_group()


def test_adm_two_gloo_ranks_match_one_rank(tmp_path, monkeypatch):
    monkeypatch.setattr(adm_module, 'ADM_IS_SPLIT', adm_module.ADM_IS_SPLIT)  # restored after _adm_results here
    np.savez(tmp_path / 'ref.npz', arr_0=random_images(29, seed=3))
    np.savez(tmp_path / 's.npz', arr_0=random_images(35, seed=4))
    args = (str(tmp_path / 'ref.npz'), str(tmp_path / 's.npz'), str(tmp_path))
    mp = torch.multiprocessing.get_context('spawn')
    procs = [mp.Process(target=_rank_worker, args=(r, 2, str(tmp_path / 'pg'), *args)) for r in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert all(p.exitcode == 0 for p in procs), [p.exitcode for p in procs]
    one = _adm_results(*args[:2])
    for rank in range(2):
        got = json.loads((tmp_path / f'rank{rank}.json').read_text())
        assert got == pytest.approx(one, rel=1e-6, abs=1e-9), rank


# ---------------------------------------------------------------------------------------------------------------
# The CLIs end to end, and what the records say.

@pytest.fixture(scope='module')
def quick_start(tmp_path_factory, digits16) -> dict:
    """The README quick start's conditional 16x16 generator (random weights), saved as a snapshot. (Imported here:
    the gloo ranks import this module and need none of it.)"""
    from san_ext.checkpoint import save_snapshot
    from san_ext.training.build import build_networks
    from san_ext.training.options import TrainOptions, build_config

    tmp = tmp_path_factory.mktemp('adm')
    cfg = build_config(TrainOptions(outdir=str(tmp / 'runs'), data=str(digits16), **QUICK_START))
    _, _, G_ema = build_networks(cfg, torch.device('cpu'))
    return {'snapshot': save_snapshot(tmp / 'run', G_ema, cfg.to_dict(), 0), 'G': G_ema.eval(), 'tmp': tmp}


def test_gen_images_npz_round_trips_on_the_quick_start_network(quick_start, tmp_path):
    out = tmp_path / 'samples.npz'
    res = CliRunner().invoke(load_script('gen_images').main, ['--network', str(quick_start['snapshot']), '--npz',
                                                              str(out), '--n', '37', '--seed', '3', '--batch', '16',
                                                              '--device', 'cpu'])
    assert res.exit_code == 0, res.output
    G = quick_start['G']
    with np.load(out) as f:
        assert sorted(f.files) == ['arr_0', 'arr_1']
        arr_0, arr_1 = f['arr_0'], f['arr_1']
    assert arr_0.shape == (37, 16, 16, 3) and arr_0.dtype == np.uint8
    assert arr_1.shape == (37,) and arr_1.dtype == np.int64 and G.c_dim == 10
    assert np.array_equal(arr_1, latents(3, 0, 37, G.z_dim, G.c_dim)[1].argmax(1).numpy())  # calc_metrics' classes
    want = torch.cat([im for _, im in generated_images(G, 37, 16, seed=3, device='cpu')])
    assert np.array_equal(arr_0, want.permute(0, 2, 3, 1).numpy())
    assert read_npz(out).labels.tolist() == arr_1.tolist()


def test_calc_metrics_ref_npz_scores_network_and_its_sample_batch_alike(quick_start, tmp_path, monkeypatch):
    monkeypatch.setattr(adm_module, 'adm_inception', lambda weights=None: tiny_adm_extractor())
    monkeypatch.setattr(adm_module, 'ADM_DIMS', DIMS)
    monkeypatch.setenv('SAN_EXT_CACHE', str(tmp_path / 'cache'))
    np.savez(tmp_path / 'VIRTUAL_ref.npz', arr_0=random_images(24, res=16, seed=9))
    ref, run = str(tmp_path / 'VIRTUAL_ref.npz'), tmp_path / 'run'
    common = ['--ref-npz', ref, '--device', 'cpu', '--batch', '16', '--workers', '0', '--no-progress', '--run-dir',
              str(run)]
    cli, runner = load_script('calc_metrics').main, CliRunner()
    for _ in range(2):  # the second run reads the cached reference features
        res = runner.invoke(cli, ['--network', str(quick_start['snapshot']), '--num-gen', '32', '--seed', '1', *common])
        assert res.exit_code == 0, res.output
    assert len(list((tmp_path / 'cache' / 'metrics').glob('VIRTUAL_ref-test-adm-conv-adm-*.npz'))) == 1
    gen_images = load_script('gen_images').main
    res = runner.invoke(gen_images, ['--network', str(quick_start['snapshot']), '--npz', str(tmp_path / 's.npz'),
                                     '--n', '32', '--seed', '1', '--device', 'cpu'])
    assert res.exit_code == 0, res.output
    res = runner.invoke(cli, ['--sample-npz', str(tmp_path / 's.npz'), *common])
    assert res.exit_code == 0, res.output
    first, second, batch = (json.loads(line) for line in (run / 'metric-adm.jsonl').read_text().splitlines())
    assert first['results'] == second['results']
    assert batch['results'] == pytest.approx(first['results'], rel=1e-9)
    for record in (first, batch):
        assert record['protocol'] == 'adm' and record['extractor'] == 'test-adm-conv'
        assert record['num_gen'] == 32 and record['num_ref'] == 24 and record['data'] == ref
        assert record['reference'] == {'type': 'adm-npz', 'path': ref, 'images': 24, 'resolution': [16, 16],
                                       'statistics': 'computed from arr_0 (24)',
                                       'content_sha256': metric_cache.dataset_fingerprint(ref)}
    assert first['samples'] == {'source': 'generator', 'classes': 'uniform over 10', 'truncation_psi': 1.0}
    assert first['network'] == str(quick_start['snapshot'])
    assert batch['samples']['source'] == 'npz' and batch['samples']['path'] == str(tmp_path / 's.npz')
    assert batch['network'] is None


def test_stylegan_protocol_records_say_protocol_extractor_reference_and_count(quick_start, digits16, tmp_path,
                                                                             monkeypatch):
    from san_ext.metrics import register_extractor, unregister_extractor

    register_extractor('test-adm-rec', lambda: tiny_adm_extractor(), overwrite=True)
    monkeypatch.setenv('SAN_EXT_CACHE', str(tmp_path / 'cache'))
    try:
        res = CliRunner().invoke(load_script('calc_metrics').main, [
            '--network', str(quick_start['snapshot']), '--data', str(digits16), '--metrics', 'fd_dinov2_10k',
            '--extractor', 'test-adm-rec', '--num-gen', '24', '--max-ref', '40', '--device', 'cpu', '--workers', '0',
            '--no-progress', '--run-dir', str(tmp_path)])
    finally:
        unregister_extractor('test-adm-rec')
    assert res.exit_code == 0, res.output
    record = json.loads((tmp_path / 'metric-fd_dinov2_10k.jsonl').read_text())
    assert record['protocol'] == 'stylegan' and record['extractor'] == 'test-adm-conv' and record['num_gen'] == 24
    assert record['reference'] == {'type': 'dataset', 'path': str(digits16), 'images': 40, 'max_ref': 40,
                                   'subset_seed': 0, 'content_sha256': metric_cache.dataset_fingerprint(digits16)}
    assert record['samples'] == {'source': 'generator', 'classes': 'uniform over 10', 'truncation_psi': 1.0}


@pytest.mark.parametrize('args, message', [
    (['--sample-npz', 'S'], '--sample-npz is scored by the ADM suite only'),
    (['--network', 'N', '--sample-npz', 'S', '--ref-npz', 'S'], 'give --network .* or --sample-npz'),
    (['--sample-npz', 'S', '--ref-npz', 'S', '--metrics', 'fid50k_full'], 'no --metrics'),
    (['--metrics', 'fid50k_full'], 'give --network'),
])
def test_calc_metrics_refuses_inconsistent_sources(args, message, tmp_path):
    np.savez(tmp_path / 's.npz', arr_0=random_images(2))
    (tmp_path / 'n.safetensors').write_bytes(b'')
    names = {'S': str(tmp_path / 's.npz'), 'N': str(tmp_path / 'n.safetensors')}
    res = CliRunner().invoke(load_script('calc_metrics').main, [names.get(a, a) for a in args])
    assert res.exit_code != 0 and re.search(message, res.output), res.output


def test_gen_images_npz_refuses_png_options(quick_start, tmp_path):
    res = CliRunner().invoke(load_script('gen_images').main, ['--network', str(quick_start['snapshot']), '--npz',
                                                              str(tmp_path / 'x.npz'), '--n', '3', '--classes', 'all',
                                                              '--grid', '--device', 'cpu'])
    assert res.exit_code != 0 and '--classes, --grid: not with --npz' in res.output
    assert not (tmp_path / 'x.npz').exists()
