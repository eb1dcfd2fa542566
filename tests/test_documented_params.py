"""Documented parameters that no test varied before, each checked against an independent computation: DOT's
``k_eff`` in naive transport and the pair count of the latent k_eff estimate (closed forms on linear critics, numpy
over the recorded pairs); precision/recall with points exactly on a k-NN radius (exact integer arithmetic; the
documented d <= r, and d < r for density/coverage); FID when S1 S2 has negative or complex eigenvalues (the
documented clipping, by hand and through scipy); the KL-WGAN discriminator loss's gradient through its importance
weights (a closed form and numpy finite differences).
"""

from __future__ import annotations

import logging

import numpy as np
import pytest
import scipy.linalg
import torch

from san_ext import losses
from san_ext.dot import keff
from san_ext.dot.keff import estimate_latent_k_eff
from san_ext.dot.transport import latent_space_dot, naive_latent_transport, naive_transport
from san_ext.metrics import manifold
from san_ext.metrics.manifold import density_coverage, precision_recall
from san_ext.metrics.stats import frechet_distance

pytestmark = pytest.mark.usefixtures('one_thread')
A = torch.tensor([0.6, -0.8], dtype=torch.float64)  # a unit direction: the linear critic D(x) = A . x


def linear_critic(x: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
    return x @ A.to(x.dtype)


# -- DOT: k_eff in naive transport -------------------------------------------------------------------------------------
@pytest.mark.parametrize('k_eff', [0.25, 1.0, 3.0])
def test_naive_transport_steps_are_lr_over_k_eff_along_the_critics_gradient(float64, k_eff):
    """Ascending D / k_eff with SGD on a linear critic: each step moves every sample by lr * A / k_eff."""
    y = torch.randn(5, 2, generator=torch.Generator().manual_seed(0))
    moved = naive_transport(linear_critic, y, steps=7, lr=0.1, k_eff=k_eff)
    torch.testing.assert_close(moved, y + 7 * 0.1 * A / k_eff, rtol=0, atol=1e-12)


def test_naive_transport_takes_each_samples_own_class_k_eff(float64):
    y = torch.zeros(4, 2)
    ids = torch.tensor([0, 1, 1, 0])
    moved = naive_transport(linear_critic, y, c=ids, num_classes=2, steps=3, lr=0.1, k_eff=torch.tensor([0.5, 2.0]))
    expected = 3 * 0.1 * A[None, :] / torch.tensor([0.5, 2.0, 2.0, 0.5])[:, None]
    torch.testing.assert_close(moved, expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize('k_eff', [0.5, 4.0])
def test_naive_latent_transport_steps_are_lr_over_k_eff_through_the_generator(float64, k_eff):
    """D(G(z)) = A . (W z) has the gradient W^T A in z; the uniform prior only clips, and the steps stay inside."""
    W = torch.tensor([[0.5, 0.0, 0.2], [0.1, -0.3, 0.0]])
    z = torch.full((3, 3), 0.1)
    moved = naive_latent_transport(lambda v: v @ W.T, linear_critic, z, steps=4, lr=0.05, prior='uniform',
                                   k_eff=k_eff)
    torch.testing.assert_close(moved, z + 4 * 0.05 * (W.T @ A) / k_eff, rtol=0, atol=1e-12)


# -- DOT: the pair count of the latent k_eff estimate -----------------------------------------------------------------
class Recorder:
    """G that records the latents it is given, and a spy on the pairs the estimate draws."""

    def __init__(self, monkeypatch):
        self.latents, self.pairs = [], []
        draw = keff._random_pairs

        def spy(idx, pairs, generator):
            i, j = draw(idx, pairs, generator)
            self.pairs.append((idx.numel(), pairs, i.clone(), j.clone()))
            return i, j
        monkeypatch.setattr(keff, '_random_pairs', spy)

    def G(self, z, c=None):
        self.latents.append(z.detach().clone())
        return torch.tanh(z) * 2  # nonlinear, so that pairs have different slopes


def d_of_g(z: np.ndarray) -> np.ndarray:
    return (np.tanh(z) * 2) @ A.numpy()


@pytest.mark.parametrize('pairs', [1, 3, 17])
def test_latent_k_eff_draws_2_pairs_latents_and_takes_the_max_over_pairs_pairs(float64, monkeypatch, pairs):
    rec = Recorder(monkeypatch)
    k = estimate_latent_k_eff(rec.G, linear_critic, [2], pairs=pairs, generator=torch.Generator().manual_seed(3))
    z = torch.cat(rec.latents).numpy()
    assert z.shape == (2 * pairs, 2)
    ((n, drawn, i, j),) = rec.pairs
    i, j = i.numpy(), j.numpy()
    assert (n, drawn, len(i)) == (2 * pairs, pairs, pairs) and bool((i != j).all())
    s = d_of_g(z)
    ratios = np.abs(s[i] - s[j]) / np.linalg.norm(z[i] - z[j], axis=1)
    assert float(k) == pytest.approx(ratios.max(), rel=1e-6)
    if pairs == 1:  # one pair of the two latents: the estimate is their slope, whatever the draw
        assert float(k) == pytest.approx(abs(s[0] - s[1]) / np.linalg.norm(z[0] - z[1]), rel=1e-6)


def test_latent_k_eff_per_class_draws_2_pairs_latents_per_listed_class(float64, monkeypatch):
    rec = Recorder(monkeypatch)
    k = estimate_latent_k_eff(rec.G, linear_critic, [2], classes=[2, 0], num_classes=3, pairs=5,
                              generator=torch.Generator().manual_seed(0))
    assert torch.cat(rec.latents).shape == (2 * 2 * 5, 2)
    assert [(n, p) for n, p, _, _ in rec.pairs] == [(10, 5), (10, 5)]
    assert torch.isnan(k[1]) and torch.isfinite(k[[0, 2]]).all()


def test_latent_dot_passes_its_pairs_to_the_estimate(float64, monkeypatch):
    rec = Recorder(monkeypatch)
    latent_space_dot(rec.G, linear_critic, torch.zeros(3, 2), steps=1, pairs=6, prior='uniform',
                     generator=torch.Generator().manual_seed(0))
    assert rec.latents[0].shape == (12, 2) and rec.pairs[0][:2] == (12, 6)


# -- precision / recall on the radius ----------------------------------------------------------------------------------
def exact_manifold_metrics(real: np.ndarray, fake: np.ndarray, k: int) -> tuple[float, float, float, float]:
    """Precision, recall (d <= r), density, coverage (d < r) in exact integer arithmetic on integer points."""
    def sq(a, b):
        return ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)

    def radii(x):
        return np.sort(sq(x, x), axis=1)[:, k]  # column 0: the point itself

    r_real, r_fake = radii(real), radii(fake)
    d_fr, d_rf = sq(fake, real), sq(real, fake)
    precision = (d_fr <= r_real[None, :]).any(1).mean()
    recall = (d_rf <= r_fake[None, :]).any(1).mean()
    density = (d_fr < r_real[None, :]).sum() / (k * len(fake))
    coverage = (d_fr.min(0) < r_real).mean()
    return precision, recall, density, coverage


def test_a_point_exactly_on_the_radius_counts_for_precision_not_for_density():
    """sqrt(3) ** 2 rounds below 3: the fake at squared distance 3 (the radius of the real at the origin) is inside."""
    real = np.array([[0, 0, 0], [1, 1, 1], [10, 10, 10], [11, 11, 11]])
    fake = np.array([[1, 1, -1], [100, 0, 0]])
    for dtype in (np.float64, np.float32):
        assert precision_recall(real.astype(dtype), fake.astype(dtype), k=1)[0] == 0.5
        assert density_coverage(real.astype(dtype), fake.astype(dtype), k=1)[0] == 0.0


@pytest.mark.parametrize('dtype', [np.float64, np.float32])
@pytest.mark.parametrize('k', [1, 2, 3])
@pytest.mark.parametrize('blocks', [None, (3, 5)], ids=['one-block', 'small-blocks'])
def test_manifold_metrics_on_a_lattice_with_ties_match_exact_integer_arithmetic(monkeypatch, dtype, k, blocks):
    """Integer points in a small box: many distances tie with a radius exactly; the counts must be the exact ones."""
    if blocks:
        monkeypatch.setattr(manifold, 'ROW_BATCH', blocks[0])
        monkeypatch.setattr(manifold, 'COL_BATCH', blocks[1])
    rng = np.random.default_rng(k)
    real, fake = rng.integers(-3, 4, (40, 3)), rng.integers(-3, 4, (30, 3))
    p, r, d, c = exact_manifold_metrics(real, fake, k)
    assert precision_recall(real.astype(dtype), fake.astype(dtype), k=k) == (p, r)
    assert density_coverage(real.astype(dtype), fake.astype(dtype), k=k) == pytest.approx((d, c), abs=1e-12)


# -- FID with negative or complex eigenvalues of S1 S2 -----------------------------------------------------------------
def test_fid_clips_a_negative_eigenvalue_of_the_covariance_product(caplog):
    """S1 = I, S2 = diag(4, -1/4): S1 S2 has eigenvalues 4 and -1/4; clipped, tr sqrt = 2 + 0, so
    FID = |mu1 - mu2|^2 + 2 + 3.75 - 2 * 2 = 5 + 1.75 (unclipped: nan; |eig|: 5 + 0.75)."""
    with caplog.at_level(logging.WARNING, logger='san_ext.metrics.stats'):
        fid = frechet_distance(np.zeros(2), np.eye(2), np.array([1.0, 2.0]), np.diag([4.0, -0.25]))
    assert fid == pytest.approx(6.75, abs=1e-12)
    assert any('negative parts' in r.getMessage() for r in caplog.records)


def test_fid_takes_the_real_part_of_complex_eigenvalues():
    """S1 = diag(1, -1), S2 = [[0, 1], [1, 0]]: S1 S2 is a rotation with eigenvalues +-i, real parts 0: tr sqrt = 0."""
    fid = frechet_distance(np.zeros(2), np.diag([1.0, -1.0]), np.array([0.0, 3.0]), np.array([[0.0, 1.0], [1.0, 0.0]]))
    assert fid == pytest.approx(9.0, abs=1e-12)


def test_fid_of_rank_deficient_covariances_matches_the_symmetric_route(caplog):
    """Fewer samples than dimensions: S1 S2 has eigenvalues that are 0 in exact arithmetic and rounding-noise
    negative in floats. Clipped, FID equals tr sqrt(S1^(1/2) S2 S1^(1/2)) from scipy's symmetric eigensolver (S1^(1/2)
    from eigh too: scipy's sqrtm is off by 1e-4 on a singular matrix; 50-digit mpmath agrees with eigh to 1e-8)."""
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(6, 16)), rng.normal(size=(5, 16)) + 0.3
    s1, s2 = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    lam, vec = scipy.linalg.eigh(s1)
    root = (vec * np.sqrt(np.clip(lam, 0, None))) @ vec.T
    middle = np.clip(scipy.linalg.eigh(root @ s2 @ root, eigvals_only=True), 0, None)
    mu = x.mean(0) - y.mean(0)
    expected = mu @ mu + np.trace(s1) + np.trace(s2) - 2 * np.sqrt(middle).sum()
    assert np.linalg.eigvals(s1 @ s2).real.min() < 0  # the case this test is about
    with caplog.at_level(logging.WARNING, logger='san_ext.metrics.stats'):
        assert frechet_distance(x.mean(0), s1, y.mean(0), s2) == pytest.approx(expected, rel=1e-6)
    assert not caplog.records  # rounding-sized negatives are clipped quietly


# -- KL-WGAN: the discriminator's gradient through its weights ---------------------------------------------------------
FAKE = [-3.0, -0.5, 0.2, 1.5, -2.5, 0.9]  # 1 + w f < 0 for the first and fifth: the hinge is off there


def klwgan_d_fake_grad(f: np.ndarray, T: float, live: bool = True) -> np.ndarray:
    """d/df_k of mean_j relu(1 + w_j f_j), w = n softmax(f / T), per column:
    a_k p_k + p_k (a_k f_k - sum_j a_j p_j f_j) / T, with p = softmax(f / T) and a_j = [1 + w_j f_j > 0]
    (``live=False``: the weights held constant, a_k p_k alone)."""
    p = np.exp(f / T - (f / T).max(0))
    p /= p.sum(0)
    a = (1 + len(f) * p * f > 0).astype(float)
    return a * p + (p * (a * f - (a * p * f).sum(0)) / T if live else 0)


def numeric_grad(f: np.ndarray, T: float, h: float = 1e-6) -> np.ndarray:
    def loss(v):
        w = np.exp(v / T - (v / T).max(0))
        w = len(v) * w / w.sum(0)
        return np.maximum(1 + w * v, 0).mean()
    out = np.zeros_like(f)
    for idx in np.ndindex(f.shape):
        e = np.zeros_like(f)
        e[idx] = h
        out[idx] = (loss(f + e) - loss(f - e)) / (2 * h)
    return out


@pytest.mark.parametrize('T', [0.5, 2.0, 5.0])
def test_klwgan_d_fake_gradient_flows_through_the_weights(T):
    f = torch.tensor(FAKE, dtype=torch.float64, requires_grad=True)
    losses.get('klwgan', T=T).d_fake(f).mean().backward()
    expected = klwgan_d_fake_grad(np.array(FAKE), T)
    np.testing.assert_allclose(f.grad.numpy(), expected, rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(f.grad.numpy(), numeric_grad(np.array(FAKE), T), rtol=1e-6, atol=1e-9)
    assert np.abs(expected - klwgan_d_fake_grad(np.array(FAKE), T, live=False)).max() > 0.005  # detached differs


def test_klwgan_d_loss_and_san_fun_path_keep_live_weights_per_logit_column():
    """Through d_loss (real mean + fake mean), for [N, P] logits (weights normalised over the batch per column), and
    on the SAN loss's ``fun`` logits (its direction term detaches only the weights of ``dir``)."""
    T = 2.0
    fake = np.array([FAKE, FAKE[::-1]]).T  # [6, 2]
    for loss, wrap in ((losses.get('klwgan', T=T), lambda t: t), (losses.get('klwgan', san=True, T=T),
                                                                  lambda t: (t, t.detach().clone()))):
        f = torch.tensor(fake, requires_grad=True)
        real = torch.ones(6, 2, dtype=torch.float64)
        loss.d_loss(wrap(real), wrap(f)).backward()
        np.testing.assert_allclose(f.grad.numpy(), klwgan_d_fake_grad(fake, T) / 2, rtol=1e-10, atol=1e-14)
