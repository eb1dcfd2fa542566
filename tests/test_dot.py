"""san_ext.dot: discriminator optimal transport (Tanaka 2019) on cases with known critics and closed-form answers.

EMDs are computed independently with POT (``ot.emd2``, 2-D) and scipy (``wasserstein_distance``, 1-D); k_eff is
checked against the Lipschitz constant from numpy's SVD. All CPU, small, seeded.
"""

from __future__ import annotations

import math

import numpy as np
import ot
import pytest
import torch
from scipy.stats import wasserstein_distance
from torch import nn

from san_ext.dot import (
    DOTGenerator,
    ProjectedCritic,
    critic_scores,
    estimate_k_eff,
    estimate_latent_k_eff,
    latent_space_dot,
    naive_latent_transport,
    naive_transport,
    target_space_dot,
)

pytestmark = pytest.mark.usefixtures('one_thread')

M = torch.tensor([1.5, -0.5])  # centre of the narrow target N(M, TARGET_STD^2 I)
TARGET_STD = 0.05


def emd(a: torch.Tensor, b: torch.Tensor) -> float:
    """Exact EMD (W1, Euclidean cost) between two equal-weight point clouds, by POT."""
    cost = ot.dist(a.double().numpy(), b.double().numpy(), metric='euclidean')
    return float(ot.emd2(ot.unif(len(a)), ot.unif(len(b)), cost))


def cone(m: torch.Tensor):
    """D(x) = -||x - m||: the optimal Kantorovich potential (1-Lipschitz) for transport onto the point mass at m.
    For any k_eff < 1 the DOT objective ||x - y|| + ||x - m|| / k_eff has the unique minimiser x = m."""
    return lambda x: -(x - m).norm(dim=1)


def gaussians(n: int = 300, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Source N(0, 0.5^2 I) and narrow target N(M, 0.05^2 I) in 2-D."""
    g = torch.Generator().manual_seed(seed)
    return 0.5 * torch.randn(n, 2, generator=g), M + TARGET_STD * torch.randn(n, 2, generator=g)


def overshoot(x: torch.Tensor, y: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """How far each sample went past m along its own direction y -> m (negative: it stopped short)."""
    e = (m - y) / (m - y).norm(dim=1, keepdim=True)
    return ((x - y) * e).sum(1) - (m - y).norm(dim=1)


# -- target-space DOT on known critics --------------------------------------------------------------------------------
@pytest.mark.parametrize('opt,lr,steps', [('sgd', 0.01, 400), ('adam', 0.01, 400)])
def test_target_dot_reaches_closed_form_map_and_cuts_emd(opt, lr, steps):
    y, target = gaussians()
    x = target_space_dot(cone(M), y, 0.5, steps=steps, lr=lr, opt=opt)
    # closed form T(y) = M; SGD on a cone settles within lr * (1 + 1/k) of it, Adam within ~lr per coordinate
    assert (x - M).norm(dim=1).max() < 4 * lr
    before, after = emd(y, target), emd(x, target)
    assert before > 1.4 and after < 0.1 * before
    assert overshoot(x, y, M).max() < 3 * TARGET_STD  # stops at the target instead of running through it


def test_target_dot_1d_reduces_wasserstein_distance():
    g = torch.Generator().manual_seed(1)
    y, target = 0.1 * torch.randn(400, 1, generator=g), 1 + 0.02 * torch.randn(400, 1, generator=g)
    x = target_space_dot(lambda v: -(v[:, 0] - 1).abs(), y, 0.5, steps=150, lr=0.01)
    before = wasserstein_distance(y[:, 0].numpy(), target[:, 0].numpy())
    after = wasserstein_distance(x[:, 0].numpy(), target[:, 0].numpy())
    assert before > 0.9 and after < 0.05


def test_estimated_k_eff_small_lr_no_overshoot_and_emd_drops():
    """With k_eff estimated on the samples (a sample estimate, <= the true Lipschitz 1) and a small Adam lr, DOT moves
    the Gaussian source towards the target without passing the target's support."""
    g = torch.Generator().manual_seed(0)
    y, target = torch.randn(300, 2, generator=g), TARGET_STD * torch.randn(300, 2, generator=g)
    m = torch.zeros(2)
    k = estimate_k_eff(cone(m), y, generator=g)
    assert 0.5 < float(k) <= 1.0
    x = target_space_dot(cone(m), y, k, steps=300, lr=0.01, opt='adam')
    assert overshoot(x, y, m).max() < 3 * TARGET_STD
    assert emd(x, target) < 0.8 * emd(y, target)


def test_linear_critic_distance_term_stops_transport():
    """Two 1-D Gaussians and the linear critic D(x) = a x (optimal for a translation): with k_eff estimated
    (= |a| exactly) the distance term balances D's slope, so samples stay put and cannot pass the target's support;
    ascending D alone (naive) or an underestimated k_eff runs straight through it."""
    a = 2.0
    g = torch.Generator().manual_seed(2)
    y = 0.1 * torch.randn(200, 1, generator=g)  # target: N(1, 0.1^2), support <= 1.3
    D = lambda v: a * v[:, 0]  # noqa: E731
    k = estimate_k_eff(D, y, generator=g)
    assert float(k) == pytest.approx(a, rel=1e-5)
    kw = dict(steps=300, lr=0.01)
    assert (target_space_dot(D, y, k, **kw) - y).abs().max() < 1e-4
    assert target_space_dot(D, y, k / 4, **kw).min() > 1.3  # slope/k = 4 > 1: unbounded, overshoots
    assert naive_transport(D, y, k_eff=k, **kw).min() > 1.3


# -- k_eff -------------------------------------------------------------------------------------------------------------
def test_k_eff_of_linear_critic_on_linear_generator_is_lipschitz_product():
    rng = np.random.default_rng(0)
    W = rng.normal(size=(3, 2))  # G(z) = W z: Lipschitz = largest singular value
    u, s, _ = np.linalg.svd(W)
    a = 1.7 * u[:, 0]  # D(x) = a . x along G's steepest output direction: Lip(D o G) = |a| s_max
    G = lambda z: z @ torch.tensor(W.T, dtype=torch.float32)  # noqa: E731
    D = lambda x: x @ torch.tensor(a, dtype=torch.float32)  # noqa: E731
    z = torch.randn(400, 2, generator=torch.Generator().manual_seed(0))
    k = estimate_k_eff(D, z, G=G, pairs=100, generator=torch.Generator().manual_seed(1))
    expected = np.linalg.norm(a) * s[0]
    assert float(k) <= expected * (1 + 1e-5)
    assert float(k) == pytest.approx(expected, rel=0.02)
    fresh = estimate_latent_k_eff(G, D, [2], pairs=100, generator=torch.Generator().manual_seed(2))
    assert float(fresh) == pytest.approx(expected, rel=0.02)


def test_k_eff_per_class_and_nan_for_missing_classes():
    scale = torch.tensor([1.0, 3.0, 0.5, 2.0])

    def D(x, c):  # class-wise linear critic s_c * x, c one-hot
        return scale[c.argmax(1)] * x[:, 0]

    g = torch.Generator().manual_seed(0)
    ids = torch.tensor([0] * 30 + [1] * 30 + [2] * 30 + [3])  # class 3: one sample only
    x = torch.randn(len(ids), 1, generator=g)
    k = estimate_k_eff(D, x, ids, per_class=True, num_classes=4, generator=g)
    assert k.shape == (4,) and torch.isnan(k[3])
    assert torch.allclose(k[:3], scale[:3], rtol=1e-5)
    onehot = torch.nn.functional.one_hot(ids, 4).float()  # one-hot labels give the same table
    assert torch.allclose(estimate_k_eff(D, x, onehot, per_class=True, generator=torch.Generator().manual_seed(0)),
                          k, equal_nan=True)


# -- latent-space DOT --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize('opt', ['sgd', 'adam'])
def test_latent_dot_uniform_prior_moves_samples_to_target(opt):
    """G(z) = 2z on z ~ U[-1, 1]^2 and the cone critic at M: D o G is a cone of slope 2 in z, so the estimated
    k_eff is at most 2 and, for any k_eff < 2, the DOT minimiser is z = M / 2 (G's samples land on the target)."""
    G = lambda z: 2 * z  # noqa: E731
    g = torch.Generator().manual_seed(3)
    z = torch.rand(300, 2, generator=g) * 2 - 1
    target = M + TARGET_STD * torch.randn(300, 2, generator=g)
    k = estimate_latent_k_eff(G, cone(M), [2], prior='uniform', generator=g)
    assert 1.5 < float(k) <= 2 * (1 + 1e-5)
    moved = latent_space_dot(G, cone(M), z, k_eff=1.0, steps=300, lr=0.01, prior='uniform', opt=opt)
    assert moved.abs().max() <= 1
    assert (moved - M / 2).norm(dim=1).max() < 0.05
    assert emd(G(moved), target) < 0.1 * emd(G(z), target)


def test_latent_dot_normal_prior_keeps_norm_to_first_order():
    dim = 64
    g = torch.Generator().manual_seed(4)
    W = torch.randn(dim, 2, generator=g) / math.sqrt(dim)
    G = lambda z: z @ W  # noqa: E731
    D = cone(torch.tensor([3.0, 0.0]))
    z = torch.randn(200, dim, generator=g)
    norms = z.norm(dim=1)
    assert (norms / math.sqrt(dim)).mean() == pytest.approx(1, abs=0.05)
    moved = {}
    for lr in (0.02, 0.01):
        moved[lr] = latent_space_dot(G, D, z, k_eff=0.5, steps=1, lr=lr, prior='normal')
    step = {lr: (m - z).norm(dim=1) for lr, m in moved.items()}
    drift = {lr: (m.norm(dim=1) - norms).abs() for lr, m in moved.items()}
    assert step[0.01].min() > 1e-3  # it does move ...
    # ... but along the sphere: ||z|| grows by step^2 / (2 ||z||) (second order), not by a multiple of the step
    assert (drift[0.01] < 0.6 * step[0.01] ** 2 / norms + 1e-5).all()
    assert drift[0.02].mean() / drift[0.01].mean() == pytest.approx(4, rel=0.1)  # quadratic in lr
    long = latent_space_dot(G, D, z, k_eff=0.5, steps=30, lr=0.01, prior='normal')
    assert ((long.norm(dim=1) - norms).abs() / norms).max() < 0.01
    assert (long - z).norm(dim=1).mean() > 0.1


def test_uniform_prior_clips_to_the_cube():
    G = lambda z: z  # noqa: E731
    D = lambda x: x.sum(1)  # noqa: E731  (pushes every coordinate up)
    z = torch.rand(50, 3, generator=torch.Generator().manual_seed(5)) * 2 - 1
    for moved in (naive_latent_transport(G, D, z, steps=50, lr=0.1, prior='uniform'),
                  latent_space_dot(G, D, z, k_eff=0.5, steps=50, lr=0.1, prior='uniform')):
        assert moved.max() == 1 and moved.min() >= -1
        assert (moved == 1).float().mean() > 0.9


class LinearG(nn.Module):
    """A tiny conditional generator with parameters (to check that DOT leaves them alone)."""

    c_dim = 3

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4 + 3, 2)

    def forward(self, z, c):
        return self.lin(torch.cat([z, c], 1))


class LinearD(nn.Module):
    c_dim = 3

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(2 + 3, 1)

    def forward(self, x, c):
        return torch.tanh(self.lin(torch.cat([x, c], 1)))  # [N, 1]


@pytest.mark.parametrize('opt', ['sgd', 'adam'])
def test_latent_dot_chunks_per_class_k_and_leaves_params_alone(opt):
    torch.manual_seed(0)
    G, D = LinearG(), LinearD()
    z = torch.randn(23, 4)
    ids = torch.arange(23) % 3
    kw = dict(steps=5, lr=0.05, opt=opt, generator=torch.Generator().manual_seed(0))
    whole = latent_space_dot(G, D, z, ids, **kw)
    kw['generator'] = torch.Generator().manual_seed(0)
    chunked = latent_space_dot(G, D, z, ids, batch_size=7, **kw)
    assert torch.allclose(whole, chunked, atol=1e-6)
    assert not torch.allclose(whole, z)
    for p in [*G.parameters(), *D.parameters()]:
        assert p.grad is None and p.requires_grad
    # a [num_classes] k_eff is looked up per sample: the same as transporting each class with its own scalar k_eff
    k = torch.tensor([0.3, 1.0, 3.0])
    moved = latent_space_dot(G, D, z, torch.nn.functional.one_hot(ids, 3).float(), k_eff=k, steps=5, lr=0.05,
                             opt=opt)
    for j in range(3):
        alone = latent_space_dot(G, D, z[ids == j], ids[ids == j], k_eff=float(k[j]), steps=5, lr=0.05, opt=opt)
        assert torch.allclose(moved[ids == j], alone, atol=1e-6)
    assert not torch.allclose(moved[ids == 0], latent_space_dot(G, D, z[ids == 0], ids[ids == 0], k_eff=3.0,
                                                                steps=5, lr=0.05, opt=opt))


def test_target_dot_chunked_equals_whole():
    y, _ = gaussians(50)
    for opt in ('sgd', 'adam'):
        a = target_space_dot(cone(M), y, 0.7, steps=20, lr=0.02, opt=opt)
        b = target_space_dot(cone(M), y, 0.7, steps=20, lr=0.02, opt=opt, batch_size=8)
        assert torch.allclose(a, b, atol=1e-6)


def test_dot_generator_is_batch_independent_and_zero_steps_is_g():
    torch.manual_seed(0)
    G, D = LinearG(), LinearD()
    G.z_dim = 4
    dot = DOTGenerator(G, D, steps=4, lr=0.05, pairs=20, generator=torch.Generator().manual_seed(0))
    assert dot.k_eff.shape == (3,) and torch.isfinite(dot.k_eff).all()
    z, c = torch.randn(10, 4), torch.eye(3)[torch.arange(10) % 3]
    full = dot(z, c)
    assert torch.allclose(torch.cat([dot(z[:4], c[:4]), dot(z[4:], c[4:])]), full, atol=1e-6)
    assert not torch.allclose(full, G(z, c))
    assert torch.equal(DOTGenerator(G, D, steps=0)(z, c), G(z, c))


# -- the projected-D adapter -------------------------------------------------------------------------------------------
class TwoHeads(nn.Module):
    """Stands in for ProjectedDiscriminator: forward_per_backbone gives logits [N, L_b] per backbone."""

    c_dim = 0

    def forward_per_backbone(self, img, c=None):
        return {'a': img.flatten(1)[:, :6], 'b': 2 * img.flatten(1)[:, :4]}


def test_projected_critic_is_the_shared_critic_score():
    """The adapter adds nothing to san_ext.critic_score (whose equality with the training loss is checked in
    tests/test_critic_score.py and tests/test_cli_dot.py); a plain D counts as one backbone."""
    from san_ext import critic_score

    img = torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    for reduction, sigma in (('sum', 0.0), ('mean', 0.0), ('sum', 1.3)):
        critic = ProjectedCritic(TwoHeads(), reduction=reduction, blur_sigma=sigma)
        want = critic_score.score(TwoHeads(), img, sigma=sigma, reduction=reduction)
        assert torch.equal(critic_scores(critic, img), want)
    assert not torch.allclose(critic_scores(ProjectedCritic(TwoHeads(), blur_sigma=1.3), img),
                              critic_scores(ProjectedCritic(TwoHeads()), img))
    assert torch.equal(ProjectedCritic(TwoHeads(), blur_sigma=0.1).blur(img), img)  # one tap: identity, as training
    plain = ProjectedCritic(lambda x: x.flatten(1)[:, :5], reduction='mean')
    assert torch.allclose(plain(img), img.flatten(1)[:, :5].mean(1))
    with pytest.raises(ValueError, match='unconditional'):
        critic_scores(ProjectedCritic(TwoHeads()), img, torch.zeros(3, dtype=torch.long))


# -- bad input ---------------------------------------------------------------------------------------------------------
def test_bad_input_is_rejected_with_a_clear_message():
    y, _ = gaussians(10)
    D = cone(M)
    G = lambda z: z  # noqa: E731
    with pytest.raises(ValueError, match='steps must be an int >= 0'):
        target_space_dot(D, y, 0.5, steps=-1)
    for lr in (0, -0.1, float('nan')):
        with pytest.raises(ValueError, match='lr must be'):
            latent_space_dot(G, D, y, k_eff=0.5, lr=lr)
    with pytest.raises(ValueError, match='one score per sample.*got shape \\[10, 2\\]'):
        target_space_dot(lambda x: x, y, 0.5)
    with pytest.raises(ValueError, match='one score per sample'):
        estimate_k_eff(lambda x: x.sum(), y)
    with pytest.raises(ValueError, match='unconditional'):
        target_space_dot(D, y, 0.5, c=torch.zeros(10, dtype=torch.long))
    with pytest.raises(ValueError, match='unconditional'):
        latent_space_dot(G, D, y, torch.zeros(10, 2), k_eff=0.5)
    with pytest.raises(ValueError, match='unknown opt'):
        naive_transport(D, y, opt='rmsprop')
    with pytest.raises(ValueError, match='unknown prior'):
        latent_space_dot(G, D, y, prior='laplace')
    with pytest.raises(ValueError, match='k_eff must be finite and > 0'):
        target_space_dot(D, y, 0.0)
    with pytest.raises(ValueError, match='k_eff for class 1'):
        latent_space_dot(LinearG(), LinearD(), torch.randn(4, 4), torch.tensor([0, 1, 0, 1]),
                         k_eff=torch.tensor([1.0, float('nan'), 1.0]))
    with pytest.raises(ValueError, match='num_classes'):
        latent_space_dot(lambda z, c: z, lambda x, c: x.sum(1), y, torch.zeros(10, dtype=torch.long), k_eff=1.0)
    assert torch.equal(target_space_dot(D, y, 0.5, steps=0), y)  # 0 steps: unchanged
