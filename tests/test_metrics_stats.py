"""StreamingStats persistence and merging: what mutmut's survivors in ``san_ext/metrics/stats.py`` showed untested.

Each test names the planted bug that made it fail.
"""

import numpy as np
import pytest
import torch

from san_ext.metrics.stats import StreamingStats


def _stats(x: np.ndarray, device: str = 'cpu') -> StreamingStats:
    return StreamingStats(x.shape[1], device=device).update(x)


def test_two_samples_already_carry_mu_and_sigma_for_pytorch_fid_readers():
    """n = 2 is the least that has an unbiased covariance (planted: `n > 2`, `n >= 3`, mu dropped)."""
    x = np.array([[1.0, 2.0, 0.0], [3.0, -1.0, 4.0]])
    state = _stats(x).state_dict()
    np.testing.assert_allclose(state['mu'], x.mean(0), rtol=1e-12)
    np.testing.assert_allclose(state['sigma'], np.cov(x, rowvar=False), rtol=1e-12)
    assert set(_stats(x[:1]).state_dict()) == {'n', 'sum', 'sum_outer'}


def test_state_round_trips_with_the_default_device(tmp_path):
    """from_state_dict and load default to the CPU (planted: a misspelled default device fails to build)."""
    x = np.random.default_rng(0).normal(size=(7, 4))
    state = _stats(x).state_dict()
    back = StreamingStats.from_state_dict(state)
    assert back.n == 7 and back.sum.dtype == torch.float64 and back.sum.device.type == 'cpu'
    np.testing.assert_allclose(back.cov(), np.cov(x, rowvar=False), rtol=1e-12)
    path = tmp_path / 'stats.npz'
    _stats(x).save(path)
    np.testing.assert_allclose(StreamingStats.load(path).mean(), x.mean(0), rtol=1e-12)


def test_merging_different_dimensions_says_both():
    with pytest.raises(ValueError) as info:
        StreamingStats(3).merge(StreamingStats(5))
    assert str(info.value) == 'cannot merge statistics of dimension 5 into 3'


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA GPU')
def test_shards_and_loads_land_on_the_requested_device(tmp_path):
    """Planted: `.to(None)` in merge, device dropped in from_state_dict/load (both survive on CPU-only machines)."""
    x = np.random.default_rng(1).normal(size=(6, 3))
    merged = _stats(x[:3], 'cuda').merge(_stats(x[3:]))
    np.testing.assert_allclose(merged.cov(), np.cov(x, rowvar=False), rtol=1e-12)
    _stats(x).save(tmp_path / 's.npz')
    assert StreamingStats.load(tmp_path / 's.npz', device='cuda').sum.device.type == 'cuda'
    assert StreamingStats.from_state_dict(_stats(x).state_dict(), device='cuda').sum_outer.device.type == 'cuda'


def test_one_dimensional_features_and_single_samples_are_valid():
    """dim = 1 is a feature size; one sample has a mean and a biased covariance (planted: `dim <= 1`, mean needing 2,
    the biased covariance needing 2)."""
    stats = StreamingStats(1).update(np.array([[2.5]]))
    np.testing.assert_allclose(stats.mean(), [2.5])
    np.testing.assert_allclose(stats.cov(unbiased=False), [[0.0]], atol=1e-15)
    with pytest.raises(ValueError) as info:
        stats.cov()
    assert str(info.value) == 'statistics need at least 2 samples, have 1'


@pytest.mark.parametrize('call,message', [
    (lambda: StreamingStats(0), 'dim must be at least 1, got 0'),
    (lambda: StreamingStats(3).update(np.zeros((2, 4))), 'expected features of shape [N, 3], got [2, 4]'),
    (lambda: StreamingStats(3).update(np.zeros(3)), 'expected features of shape [N, 3], got [3]'),
    (lambda: StreamingStats(3).update(np.zeros((1, 3, 1))), 'expected features of shape [N, 3], got [1, 3, 1]'),
    (lambda: StreamingStats(2).mean(), 'statistics need at least 1 samples, have 0'),
])
def test_bad_use_of_the_accumulator_says_what_was_wrong(call, message):
    """Planted: the messages set to None, `or` -> `and` in the shape check (a [3] vector or [1, 3, 1] slips by)."""
    with pytest.raises(ValueError) as info:
        call()
    assert str(info.value) == message


@pytest.mark.parametrize('args,message', [
    ((np.zeros(2), np.eye(2), np.zeros(3), np.eye(3)), 'means must be vectors of one shape, got (2,) and (3,)'),
    ((np.zeros((1, 2)), np.eye(2), np.zeros((1, 2)), np.eye(2)), 'means must be vectors of one shape, got (1, 2) and '
                                                                  '(1, 2)'),
    ((np.zeros(2), np.eye(3), np.zeros(2), np.eye(2)), 'covariances must be [2, 2], got (3, 3) and (2, 2)'),
    ((np.zeros(2), np.eye(2), np.zeros(2), np.eye(3)), 'covariances must be [2, 2], got (2, 2) and (3, 3)'),
])
def test_frechet_distance_refuses_mismatched_statistics(args, message):
    """Planted: `or` -> `and` in either shape check, the messages set to None."""
    from san_ext.metrics.stats import frechet_distance
    with pytest.raises(ValueError) as info:
        frechet_distance(*args)
    assert str(info.value) == message


def test_frechet_distance_warns_only_past_the_documented_tolerance(caplog):
    """S1 S2 with a negative eigenvalue at exactly 1e-3 of the largest is not warned about, one just past is (planted:
    `<=`, `/ scale`); the warning text names the cause."""
    from san_ext.metrics.stats import frechet_distance
    mu = np.zeros(2)
    for eps, warned in ((1e-3, False), (1.01e-3, True)):
        caplog.clear()
        frechet_distance(mu, np.diag([1.0, -eps]), mu, np.eye(2) * 4.0)  # scale 4: a `/ scale` moves the bar
        assert any(r.getMessage().startswith('eigenvalues of S1 S2 have large imaginary or negative parts (max |imag| ')
                   and r.getMessage().endswith('); the covariances are probably rank-deficient: use more samples than '
                                               'feature dimensions') for r in caplog.records) == warned


def _rotation_like(t: float, size: float) -> np.ndarray:
    """size * [[1, -t], [t, 1]]: eigenvalues size * (1 +- i t), so |imag| / spectral radius = t / sqrt(1 + t^2)."""
    return size * np.array([[1.0, -t], [t, 1.0]])


def _warned(caplog, sigma1) -> bool:
    from san_ext.metrics.stats import frechet_distance
    caplog.clear()
    frechet_distance(np.zeros(2), sigma1, np.zeros(2), np.eye(2))
    return any(r.getMessage().startswith('eigenvalues of S1 S2 have large imaginary') for r in caplog.records)


@pytest.mark.parametrize('size', [1e-3, 4.0])
def test_frechet_distance_bar_on_imaginary_parts_is_relative_to_the_spectral_radius(caplog, size):
    """An imaginary part 0.99e-3 of the spectral radius is not warned about, 1.01e-3 is, at any feature scale
    (planted: `/ scale` in the imaginary test, which moves the bar by size^2)."""
    for rel, warned in ((0.99e-3, False), (1.01e-3, True)):
        t = rel / np.sqrt(1 - rel ** 2)
        assert _warned(caplog, _rotation_like(t, size)) == warned, (rel, size)


def test_frechet_distance_does_not_warn_at_exactly_the_imaginary_bar(caplog):
    """The bar is exclusive for imaginary parts as for negative ones (planted: `>=`). The tie is searched for among
    the floats next to 1e-3 / sqrt(1 - 1e-6), since the eigenvalues go through LAPACK's rounding."""
    t0 = 1e-3 / np.sqrt(1 - 1e-6)
    for k in range(-3000, 3000):
        t = t0 + k * np.spacing(t0)
        eig = np.linalg.eigvals(_rotation_like(t, 1.0))
        if np.abs(eig.imag).max() == 1e-3 * np.abs(eig).max():
            break
    else:
        pytest.skip('no float tie at the bar with this LAPACK')
    assert not _warned(caplog, _rotation_like(t, 1.0))
    assert _warned(caplog, _rotation_like(t + 64 * np.spacing(t), 1.0))


def test_frechet_distance_takes_tensors_that_require_grad():
    """Statistics may come straight from torch (planted: tensors sent through np.asarray, which refuses grad)."""
    from san_ext.metrics.stats import frechet_distance
    mu = torch.tensor([1.0, 2.0], requires_grad=True)
    sigma = torch.eye(2, dtype=torch.float64, requires_grad=True)
    assert frechet_distance(mu, sigma, torch.zeros(2), torch.eye(2)) == pytest.approx(5.0, abs=1e-12)
