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
