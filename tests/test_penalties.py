"""R1/R2, their schedule, lazy application and the finite-difference variant against closed forms."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import san_ext
from san_ext.penalties import finite_difference_penalty, gamma_at, lazy_scale, r1_penalty, r2_penalty

pytestmark = pytest.mark.usefixtures('float64')  # tests/conftest.py


def test_r1_of_a_linear_critic_is_the_squared_weight_norm_per_sample():
    w = torch.randn(3, 4, 4)
    x = torch.randn(5, 3, 4, 4, requires_grad=True)
    logits = (x * w).sum(dim=(1, 2, 3))  # D(x) = <w, x>
    np.testing.assert_allclose(r1_penalty(logits, x).detach().numpy(), [float(w.square().sum())] * 5, rtol=1e-12)


def test_r1_of_a_quadratic_critic_matches_the_closed_form_and_sums_several_logits():
    A, B = torch.randn(6, 6), torch.randn(6, 6)
    x = torch.randn(4, 6, requires_grad=True)
    logits = torch.stack([torch.einsum('ni,ij,nj->n', x, A, x), torch.einsum('ni,ij,nj->n', x, B, x)], dim=1)
    grad = x.detach() @ (A + A.T + B + B.T).T  # grad of x^T (A + B) x, per sample
    np.testing.assert_allclose(r2_penalty(logits, x).detach().numpy(), grad.square().sum(1).numpy(), rtol=1e-10)


def test_r1_back_propagates_into_d_parameters():
    w = torch.randn(7, requires_grad=True)
    x = torch.randn(3, 7, requires_grad=True)
    r1_penalty(x @ w, x).mean().backward()  # d/dw |w|^2 = 2w
    torch.testing.assert_close(w.grad, 2 * w.detach())


def test_penalty_refuses_a_san_pair_and_an_input_without_grad():
    x = torch.randn(2, 3, requires_grad=True)
    with pytest.raises(TypeError, match='fun logit'):
        r1_penalty((x.sum(1), x.sum(1)), x)
    with pytest.raises(ValueError, match='requires_grad'):
        r1_penalty(torch.randn(2), torch.randn(2, 3))


def test_san_penalty_on_fun_never_reaches_the_direction():
    torch.manual_seed(0)
    D = san_ext.sanify(torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1)))
    x = torch.randn(10, 3, requires_grad=True)
    fun, _ = D(x, flg_train=True)
    r1_penalty(fun, x).mean().backward()
    assert D.san_layer.weight.grad is None or not D.san_layer.weight.grad.any()
    assert D.san_layer.scale.grad.abs().sum() > 0 and D.module[0].weight.grad.abs().sum() > 0


def test_gamma_follows_a_cosine_from_gamma_to_gamma_end():
    assert gamma_at(1.0, 0.1, 0, 100) == pytest.approx(1.0)
    assert gamma_at(1.0, 0.1, 50, 100) == pytest.approx(0.55)
    assert gamma_at(1.0, 0.1, 100, 100) == pytest.approx(0.1)
    assert gamma_at(1.0, 0.1, 300, 100) == pytest.approx(0.1)  # clipped after the end
    assert gamma_at(1.0, 0.1, 25, 100) == pytest.approx(0.1 + 0.9 * (1 + math.cos(math.pi / 4)) / 2)
    assert gamma_at(2.0, None, 50, 100) == 2.0


def test_lazy_regularisation_every_4_steps_equals_4x_the_penalty_every_4th_step():
    w = torch.randn(5)
    total_lazy = total_every = 0.0
    for step in range(16):
        x = torch.randn(4, 5, generator=torch.Generator().manual_seed(step), requires_grad=True)
        r1 = r1_penalty(x @ w, x).mean()
        total_every += float(r1)
        if lazy_scale(step, 4):
            total_lazy += lazy_scale(step, 4) * float(r1)
    assert [lazy_scale(s, 4) for s in range(8)] == [4, 0, 0, 0, 4, 0, 0, 0]
    assert total_lazy == pytest.approx(total_every)  # R1 of a linear D is the same at every x: |w|^2
    with pytest.raises(ValueError):
        lazy_scale(0, 0)


def test_finite_difference_penalty_estimates_r1():
    w = torch.randn(6)
    x = torch.randn(20000, 6)
    est = finite_difference_penalty(lambda v: v @ w, x, sigma=1e-3, generator=torch.Generator().manual_seed(1))
    assert float(est.mean()) == pytest.approx(float(w.square().sum()), rel=0.03)  # E[(u.w)^2] = |w|^2
    quad = finite_difference_penalty(lambda v: (v ** 2).sum(1), x[:4], sigma=1e-6,
                                     generator=torch.Generator().manual_seed(2))
    assert quad.shape == (4,) and torch.isfinite(quad).all()
    with pytest.raises(ValueError, match='sigma'):
        finite_difference_penalty(lambda v: v.sum(1), x, sigma=0)
