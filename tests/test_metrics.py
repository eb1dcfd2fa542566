"""san_ext.metrics: FID/KID/IS/PR/DC formulas against closed forms and independent implementations, streaming and
sharded accumulation, offline weight errors, and calc_metrics.py end to end (CPU, no downloads)."""

import importlib.util
import io
import json
import zipfile
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import scipy.linalg
import scipy.spatial.distance
import torch
from click.testing import CliRunner
from torch import nn

from san_ext.metrics import (
    CallableExtractor,
    FeatureBank,
    InceptionScoreStats,
    MetricOptions,
    Reservoir,
    StreamingStats,
    WeightsNotFoundError,
    compute_metric,
    compute_metrics,
    density_coverage,
    frechet_distance,
    get_extractor,
    get_metric,
    inception_score,
    kernel_inception_distance,
    knn_radii,
    list_metrics,
    manifold,
    precision_recall,
    register_extractor,
)
from san_ext.metrics.sampling import generated_images

ROOT = Path(__file__).resolve().parents[1]
TINY = 'test-tiny-conv'


# ---------------------------------------------------------------------------------------------------------------
# Helpers: a stand-in generator, a small random conv extractor, a tiny StyleGAN-format zip.

class TinyG(nn.Module):
    """Stand-in generator: z [N, 8], one-hot c [N, 3] -> grey 8x8 images in [-1, 1]."""

    def __init__(self, z_dim: int = 8, c_dim: int = 3, res: int = 8) -> None:
        super().__init__()
        self.z_dim, self.c_dim, self.res = z_dim, c_dim, res
        self.fc = nn.Linear(z_dim + c_dim, res * res)
        gen = torch.Generator().manual_seed(1)  # the same weights in every process
        torch.nn.init.normal_(self.fc.weight, std=0.5, generator=gen)
        torch.nn.init.normal_(self.fc.bias, std=0.5, generator=gen)

    def forward(self, z: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.fc(torch.cat([z, c], dim=1))).view(-1, 1, self.res, self.res)


def tiny_extractor() -> CallableExtractor:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, stride=2), nn.ReLU(),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten())
    return CallableExtractor(net, TINY, 8).eval()


def register_tiny() -> None:
    register_extractor(TINY, tiny_extractor, overwrite=True)


def tiny_images(n: int, seed: int = 0) -> list:
    """A list dataset of (uint8 [1, 8, 8], label) items."""
    rng = np.random.default_rng(seed)
    return [(rng.integers(0, 256, (1, 8, 8), dtype=np.uint8), np.zeros(0, np.float32)) for _ in range(n)]


def write_zip(path: Path, n: int = 40) -> Path:
    """A StyleGAN-format zip: grey 8x8 PNGs in 00000/ plus dataset.json with 3 classes."""
    labels = []
    with zipfile.ZipFile(path, 'w') as zf:
        for i, (image, _) in enumerate(tiny_images(n, seed=1)):
            name = f'00000/img{i:08d}.png'
            buf = io.BytesIO()
            PIL.Image.fromarray(image[0]).save(buf, format='png')
            zf.writestr(name, buf.getvalue())
            labels.append([name, i % 3])
        zf.writestr('dataset.json', json.dumps({'labels': labels}))
    return path


@pytest.fixture
def tiny():
    register_tiny()
    return TINY


def random_spd(rng: np.random.Generator, d: int) -> np.ndarray:
    a = rng.standard_normal((d, 2 * d))
    return a @ a.T / (2 * d) + 1e-3 * np.eye(d)


# ---------------------------------------------------------------------------------------------------------------
# FID and streaming statistics.

def test_fid_of_identical_stats_is_zero():
    rng = np.random.default_rng(0)
    mu, sigma = rng.standard_normal(64), random_spd(rng, 64)
    assert abs(frechet_distance(mu, sigma, mu, sigma)) < 1e-8


def test_fid_unit_mean_shift_identity_cov_is_2048():
    d = 2048
    assert frechet_distance(np.zeros(d), np.eye(d), np.ones(d), np.eye(d)) == pytest.approx(2048.0, abs=1e-9)


def test_fid_matches_reference_implementation():
    rng = np.random.default_rng(1)
    d = 64
    mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
    s1, s2 = random_spd(rng, d), random_spd(rng, d)
    ours = frechet_distance(mu1, s1, mu2, s2)
    try:
        from torch_fidelity.metric_fid import fid_statistics_to_metric
    except ImportError:  # scipy's sqrtm route (pytorch-fid's formula)
        covmean = scipy.linalg.sqrtm(s1 @ s2).real
        ref = float((mu1 - mu2) @ (mu1 - mu2) + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))
    else:
        ref = fid_statistics_to_metric({'mu': mu1, 'sigma': s1}, {'mu': mu2, 'sigma': s2}, False)
        ref = ref['frechet_inception_distance']
    assert ours == pytest.approx(ref, rel=1e-9, abs=1e-9)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real  # and an independent route regardless
    assert ours == pytest.approx((mu1 - mu2) @ (mu1 - mu2) + np.trace(s1 + s2 - 2 * covmean), rel=1e-6)


@pytest.mark.parametrize('chunks', [[1000], [1, 7, 13, 250, 729], [3] * 333 + [1]])
def test_streaming_stats_match_numpy(chunks):
    rng = np.random.default_rng(2)
    x = (rng.standard_normal((1000, 16)) * rng.uniform(0.5, 3, 16) + 5.0).astype(np.float32)  # extractor output
    stats, start = StreamingStats(16), 0
    for n in chunks:
        stats.update(torch.from_numpy(x[start:start + n]))
        start += n
    assert stats.n == 1000
    x = x.astype(np.float64)
    np.testing.assert_allclose(stats.mean(), x.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(stats.cov(), np.cov(x, rowvar=False), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(stats.cov(unbiased=False), np.cov(x, rowvar=False, bias=True), rtol=1e-9, atol=1e-12)


def test_streaming_stats_merge_and_npz_roundtrip(tmp_path):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((301, 8))
    whole = StreamingStats(8).update(x)
    merged = StreamingStats(8).update(x[:100]).merge(StreamingStats(8).update(x[100:]))
    np.testing.assert_allclose(merged.cov(), whole.cov(), rtol=1e-12)
    whole.save(tmp_path / 's.npz')
    loaded = StreamingStats.load(tmp_path / 's.npz')
    assert loaded.n == 301
    np.testing.assert_array_equal(loaded.cov(), whole.cov())
    np.testing.assert_allclose(np.load(tmp_path / 's.npz')['sigma'], np.cov(x, rowvar=False), rtol=1e-10)


# ---------------------------------------------------------------------------------------------------------------
# KID, IS, the reservoir.

def direct_mmd2(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD^2 with k(a, b) = (a.b / d + 1)^3, written out pair by pair."""
    d, m, n = x.shape[1], len(x), len(y)
    k = lambda a, b: (a @ b / d + 1) ** 3  # noqa: E731
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(n)) / (m * n)
    return xx + yy - 2 * xy


def test_kid_of_shifted_samples_matches_direct_mmd():
    rng = np.random.default_rng(4)
    x, y = rng.standard_normal((60, 5)), rng.standard_normal((60, 5)) + 0.7
    mean, std = kernel_inception_distance(x, y, num_subsets=1, max_subset_size=60)  # one subset = all, permuted
    assert mean == pytest.approx(direct_mmd2(x, y), rel=1e-10)
    assert std == 0.0
    assert mean > 0.1


def test_kid_of_same_distribution_is_near_zero():
    rng = np.random.default_rng(5)
    x, y = rng.standard_normal((3000, 16)), rng.standard_normal((3000, 16))
    same, _ = kernel_inception_distance(x, y, num_subsets=8, max_subset_size=1000)
    shifted, _ = kernel_inception_distance(x, y + 0.5, num_subsets=8, max_subset_size=1000)
    identical, _ = kernel_inception_distance(x, x, num_subsets=8, max_subset_size=1000)
    assert abs(same) < 0.01 and abs(identical) < 0.01 and shifted > 0.1


def test_inception_score_uniform_logits_is_one():
    mean, std = inception_score(torch.zeros(100, 1008))
    assert mean == pytest.approx(1.0, abs=1e-12) and std == pytest.approx(0.0, abs=1e-12)


def test_inception_score_confident_balanced_logits_is_num_classes():
    k = 50
    logits = 30.0 * torch.eye(k).repeat(20, 1)  # 1000 samples, every split holds each class twice
    mean, std = inception_score(logits, splits=10)
    assert mean == pytest.approx(k, rel=1e-6) and std < 1e-6


def test_inception_score_matches_torch_fidelity():
    metric_isc = pytest.importorskip('torch_fidelity.metric_isc')
    logits = torch.randn(500, 1008, generator=torch.Generator().manual_seed(6)) * 3
    ref = metric_isc.isc_features_to_metric(logits, splits=10, shuffle=False)
    mean, std = inception_score(logits, splits=10)
    assert mean == pytest.approx(ref['inception_score_mean'], rel=1e-10)
    assert std == pytest.approx(ref['inception_score_std'], rel=1e-8)


def test_reservoir_is_a_batching_independent_uniform_subset():
    x = torch.arange(5000, dtype=torch.float32)[:, None].repeat(1, 3)
    kept = []
    for batch in (7, 64, 5000):
        res = Reservoir(3, capacity=500, seed=1)
        for s in range(0, 5000, batch):
            res.update(x[s:s + batch], torch.arange(s, min(s + batch, 5000)))
        kept.append(res.all_reduce().features[:, 0].long())
    assert all(torch.equal(kept[0], k) for k in kept[1:])
    assert len(kept[0]) == 500 and len(set(kept[0].tolist())) == 500
    assert 1800 < kept[0].float().mean() < 3200  # uniform over 0..4999: mean ~2500 (sd ~64)
    small = Reservoir(3, capacity=500).update(x[:100], torch.arange(100)).all_reduce()
    assert sorted(small.features[:, 0].tolist()) == list(range(100))


# ---------------------------------------------------------------------------------------------------------------
# Precision/recall and density/coverage.

def brute_force_prdc(real: np.ndarray, fake: np.ndarray, k_pr: int, k_dc: int) -> tuple[float, ...]:
    cd = scipy.spatial.distance.cdist
    r_real = np.sort(cd(real, real), axis=1)
    r_fake = np.sort(cd(fake, fake), axis=1)
    d_rf = cd(real, fake)  # [N, M]
    precision = (d_rf <= r_real[:, k_pr:k_pr + 1]).any(axis=0).mean()
    recall = (d_rf <= r_fake[:, k_pr][None, :]).any(axis=1).mean()
    density = (d_rf < r_real[:, k_dc:k_dc + 1]).sum() / (k_dc * len(fake))
    coverage = (d_rf.min(axis=1) < r_real[:, k_dc]).mean()
    return precision, recall, density, coverage


def test_manifold_metrics_match_brute_force_in_small_chunks(monkeypatch):
    monkeypatch.setattr(manifold, 'ROW_BATCH', 7)
    monkeypatch.setattr(manifold, 'COL_BATCH', 11)
    rng = np.random.default_rng(7)
    real, fake = rng.standard_normal((90, 6)), rng.standard_normal((80, 6)) * 1.3 + 0.3
    np.testing.assert_allclose(knn_radii(real, 3).numpy(), np.sort(scipy.spatial.distance.cdist(real, real), 1)[:, 3],
                               rtol=1e-10)
    got = (*precision_recall(real, fake, k=3), *density_coverage(real, fake, k=5))
    assert got == pytest.approx(brute_force_prdc(real, fake, 3, 5), abs=1e-12)


def test_manifold_metrics_identical_and_disjoint_distributions():
    rng = np.random.default_rng(8)
    real, fake = rng.standard_normal((1000, 2)), rng.standard_normal((1000, 2))
    assert precision_recall(real, real, k=3) == (1.0, 1.0)  # every point lies in its own ball
    p, r = precision_recall(real, fake, k=3)  # same distribution, 2-d: ~0.98 each (~0.8 at 16-d, ~0.6 at 64-d)
    assert p > 0.95 and r > 0.95
    for k in (3, 5):  # E[density] = 1, E[coverage] = 1 - 2^-k for M = N (Naeem et al.)
        density, coverage = density_coverage(real, fake, k=k)
        assert density == pytest.approx(1.0, abs=0.06)
        assert coverage == pytest.approx(1 - 2.0 ** -k, abs=0.04)  # seeds give 0.865-0.898 (k=3), 0.947-0.979 (k=5)
    far = fake + 100.0
    assert precision_recall(real, far, k=3) == (0.0, 0.0)
    assert density_coverage(real, far, k=5) == (0.0, 0.0)


# ---------------------------------------------------------------------------------------------------------------
# Two gloo ranks give the one-rank results.

def _rank_worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    torch.distributed.init_process_group('gloo', init_method=f'file://{init_file}', rank=rank, world_size=world)
    try:
        torch.set_num_threads(1)
        torch.save(_sharded_results(), Path(out_dir) / f'rank{rank}.pt')
    finally:
        torch.distributed.destroy_process_group()


def _sharded_results() -> dict:
    """Everything the sharding test compares; run in one process and in each of two ranks."""
    from san_ext import dist

    register_tiny()
    rng = np.random.default_rng(9)
    x = torch.from_numpy(rng.standard_normal((230, 6)))
    lo, hi = dist.shard_range(len(x))
    idx = torch.arange(lo, hi)
    stats = StreamingStats(6).update(x[lo:hi]).all_reduce()
    big = StreamingStats(6).update(x[lo:hi])
    big.n += 2 ** 24 if dist.rank() == 0 else 0  # past float32's exact integers: the count must travel in float64
    big.all_reduce()
    res = Reservoir(6, capacity=50).update(x[lo:hi].float(), idx).all_reduce()
    bank = FeatureBank(6, dtype=torch.float64).update(x[lo:hi], idx).all_reduce()
    isc = InceptionScoreStats(6, len(x), splits=5).update(x[lo:hi], idx).all_reduce()
    opts = MetricOptions(num_gen=40, extractor=TINY, batch_size=8, num_workers=0, progress=False)
    metrics = compute_metrics(list_metrics(), TinyG(), tiny_images(36), opts)
    return {'n': stats.n, 'big_n': big.n, 'cov': stats.cov(), 'reservoir': res.features, 'bank': bank.features,
            'is': isc.result(),
            'pr': precision_recall(x[:120], x[120:], k=3), 'dc': density_coverage(x[:120], x[120:], k=5),
            'metrics': {r.metric: r.results for r in metrics}}


def test_two_gloo_ranks_match_one_rank(tmp_path):
    mp = torch.multiprocessing.get_context('spawn')
    procs = [mp.Process(target=_rank_worker, args=(r, 2, str(tmp_path / 'pg'), str(tmp_path))) for r in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert all(p.exitcode == 0 for p in procs), [p.exitcode for p in procs]
    one = _sharded_results()
    for rank in range(2):
        got = torch.load(tmp_path / f'rank{rank}.pt', weights_only=False)
        assert got['n'] == one['n'] == 230
        assert got['big_n'] == one['big_n'] == 230 + 2 ** 24
        np.testing.assert_allclose(got['cov'], one['cov'], rtol=1e-12)
        for key in ('reservoir', 'bank'):
            assert torch.equal(got[key], one[key]), key
        for key in ('is', 'pr', 'dc'):
            assert got[key] == pytest.approx(one[key], rel=1e-12), key
        for name, results in one['metrics'].items():
            assert got['metrics'][name] == pytest.approx(results, rel=1e-6, abs=1e-9), name


# ---------------------------------------------------------------------------------------------------------------
# Pipeline, extractors, CLI.

def test_generated_images_do_not_depend_on_batch_size():
    G = TinyG()
    a = torch.cat([im for _, im in generated_images(G, 50, 7, seed=3, device='cpu')])
    b = torch.cat([im for _, im in generated_images(G, 50, 50, seed=3, device='cpu')])
    assert a.shape == (50, 3, 8, 8) and a.dtype == torch.uint8 and torch.equal(a, b)


@pytest.mark.parametrize('name', list_metrics())
def test_every_metric_runs_on_a_custom_extractor(name, tiny):
    opts = MetricOptions(num_gen=40, extractor=tiny, batch_size=16, num_workers=0, progress=False)
    result = compute_metric(name, TinyG(), tiny_images(30), opts)
    assert result.results and all(np.isfinite(v) for v in result.results.values())
    assert result.num_gen == 40 and result.num_ref == (0 if get_metric(name).max_ref == 0 else 30)
    assert result.extractor == tiny and result.resize == 'none'


def test_unknown_names_list_the_known_ones():
    with pytest.raises(ValueError, match='fid50k_full'):
        get_metric('fid51k')
    with pytest.raises(ValueError, match='inception'):
        get_extractor('nope')


def test_registries_unregister_and_refuse_unknown_names():
    from san_ext.metrics import MetricSpec, list_extractors, register_metric, unregister_extractor, unregister_metric

    register_extractor('test-unregister', tiny_extractor)
    register_metric(MetricSpec('test_unregister_fid', 'fid', 'test-unregister', num_gen=2, max_ref=2))
    assert 'test-unregister' in list_extractors() and 'test_unregister_fid' in list_metrics()
    unregister_metric('test_unregister_fid')
    unregister_extractor('test-unregister')
    assert 'test-unregister' not in list_extractors() and 'test_unregister_fid' not in list_metrics()
    with pytest.raises(ValueError, match='unknown metric .*fid50k_full'):
        unregister_metric('test_unregister_fid')
    with pytest.raises(ValueError, match='unknown feature extractor .*inception'):
        unregister_extractor('test-unregister')
    register_extractor('test-unregister', tiny_extractor)  # the name is free again, no overwrite needed
    unregister_extractor('test-unregister')


@pytest.mark.parametrize('name, file', [('inception', 'weights-inception-2015-12-05-6726825d.pth'),
                                        ('inception_logits', 'weights-inception-2015-12-05-6726825d.pth'),
                                        ('vgg16', 'vgg16-397923af.pth')])
def test_missing_weights_error_names_file_and_url(name, file, tmp_path, monkeypatch):
    monkeypatch.setenv('SAN_EXT_WEIGHTS', str(tmp_path))
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'torch'))
    with pytest.raises(WeightsNotFoundError) as err:
        get_extractor(name)
    message = str(err.value)
    assert file in message and 'https://' in message and str(tmp_path) in message
    with pytest.raises(WeightsNotFoundError, match='nothere.pth'):
        get_extractor(name, weights=tmp_path / 'nothere.pth')


def _random_inception_weights(tmp_path: Path, monkeypatch) -> nn.Module:
    """torch-fidelity's InceptionV3 with random weights, saved under the published name in $SAN_EXT_WEIGHTS."""
    tf = pytest.importorskip('torch_fidelity.feature_extractor_inceptionv3')
    with monkeypatch.context() as m:  # random weights with the real layout, built without a download
        m.setattr(tf, 'load_state_dict_from_url', lambda *a, **k: None)
        m.setattr(tf.FeatureExtractorInceptionV3, 'load_state_dict', lambda self, *a, **k: None)
        net = tf.FeatureExtractorInceptionV3('x', ['2048'])
    for conv in (m for m in net.modules() if isinstance(m, nn.Conv2d)):
        nn.init.kaiming_normal_(conv.weight)  # keeps activations O(1): no denormals, no slow CPU kernels
    torch.save(net.state_dict(), tmp_path / 'weights-inception-2015-12-05-6726825d.pth')
    monkeypatch.setenv('SAN_EXT_WEIGHTS', str(tmp_path))
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'torch'))
    return net


def test_inception_extractor_loads_a_local_weight_file(tmp_path, monkeypatch):
    net = _random_inception_weights(tmp_path, monkeypatch)
    pool3, logits = get_extractor('inception'), get_extractor('inception_logits')
    loaded = pool3.net.inception.state_dict()
    assert all(torch.equal(v, loaded[k]) for k, v in net.state_dict().items())
    assert (pool3.dim, logits.dim, pool3.resize) == (2048, 1008, 'tf1-bilinear-299')
    assert pool3.version != logits.version


@pytest.mark.slow
def test_inception_extractor_output_shapes(tmp_path, monkeypatch):
    _random_inception_weights(tmp_path, monkeypatch)
    images = torch.randint(0, 256, (2, 3, 16, 16), dtype=torch.uint8)  # one 299x299 forward: seconds on a CPU
    assert get_extractor('inception')(images).shape == (2, 2048)
    assert get_extractor('inception_logits')(images).shape == (2, 1008)


def _load_cli():
    spec = importlib.util.spec_from_file_location('calc_metrics', ROOT / 'calc_metrics.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_calc_metrics_cli_writes_jsonl_and_reuses_cache(tmp_path, monkeypatch, tiny):
    cli = _load_cli()
    monkeypatch.setattr(cli, 'load_network', lambda path, device: TinyG())
    monkeypatch.setenv('SAN_EXT_CACHE', str(tmp_path / 'cache'))
    data, network = write_zip(tmp_path / 'tiny.zip'), tmp_path / 'network-snapshot-000000.safetensors'
    network.write_bytes(b'')
    names = 'fid50k_full,kid50k_full,is50k,pr50k3_full,dc50k'
    args = ['--network', str(network), '--data', str(data), '--metrics', names, '--num-gen', '48', '--extractor',
            tiny, '--device', 'cpu', '--batch', '16', '--workers', '0', '--run-dir', str(tmp_path / 'run'),
            '--no-progress']
    for _ in range(2):
        out = CliRunner().invoke(cli.main, args)
        assert out.exit_code == 0, out.output
    cached = sorted(p.name for p in (tmp_path / 'cache' / 'metrics').glob('*.npz'))
    assert len(cached) == 4 and all(n.startswith('tiny-test-tiny-conv-') for n in cached), cached  # pr, dc: 2 banks
    for name in names.split(','):
        lines = (tmp_path / 'run' / f'metric-{name}.jsonl').read_text().splitlines()
        first, second = (json.loads(line) for line in lines)
        assert first['results'] == second['results'], name  # the second run read the cache and the same seed
        assert first['metric'] == name and first['extractor'] == tiny and first['resize'] == 'none'
        assert first['num_gen'] == 48 and first['num_ref'] == (0 if name == 'is50k' else 40)
        assert first['data'] == str(data) and first['network'] == str(network) and first['total_time'] >= 0
        assert {'extractor_version', 'seed', 'num_gpus', 'timestamp'} <= first.keys()


def test_cache_key_follows_content_not_path(tmp_path):
    from san_ext.metrics import cache

    a = write_zip(tmp_path / 'a.zip')
    b = tmp_path / 'elsewhere' / 'b.zip'
    b.parent.mkdir()
    b.write_bytes(a.read_bytes())
    changed = write_zip(tmp_path / 'c.zip', n=41)
    assert cache.dataset_fingerprint(a) == cache.dataset_fingerprint(b) != cache.dataset_fingerprint(changed)
    key = {'dataset': cache.dataset_fingerprint(a), 'extractor_version': 'v1'}
    file = cache.cache_path(key, 'a', 'x', tmp_path / 'cache')
    cache.save_entry(file, key, {'x': np.arange(3)})
    assert cache.load_entry(file, key)['x'].tolist() == [0, 1, 2]
    assert cache.load_entry(file, {**key, 'extractor_version': 'v2'}) is None  # same file, other key: not reused


def test_calc_metrics_cli_rejects_unknown_metric(tmp_path):
    network = tmp_path / 'net.safetensors'
    network.write_bytes(b'')
    out = CliRunner().invoke(_load_cli().main, ['--network', str(network), '--metrics', 'fid50k_full,fid1k'])
    assert out.exit_code != 0 and 'fid1k' in out.output and 'kid50k_full' in out.output
