"""Perturbation measures against closed forms on quadratic losses 0.5 (w - w*)^T A (w - w*)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from flatness.measures.algorithms.entropy import local_entropy_chain
from flatness.measures.algorithms.pacbayes import alpha_search, bisect_largest, sigma_search
from flatness.measures.algorithms.sharpness import (
    average_sharpness,
    keskar_sharpness,
    projected_ascent,
)
from flatness.measures.core.objective import gaussian, generator

D = torch.tensor([4.0, 2.0, 1.0, 0.5, 0.25, 0.1], dtype=torch.float64)


def quadratic(A: torch.Tensor, w_star: torch.Tensor):
    def loss(w):
        d = w - w_star
        return float(0.5 * d @ A @ d)

    def loss_grad(w):
        d = w - w_star
        return float(0.5 * d @ A @ d), A @ d

    return loss, loss_grad


def test_keskar_full_space_and_subspace_match_the_box_corner():
    A = torch.diag(D).numpy()
    w_star = np.zeros(6)
    # every coordinate off the minimum: from y = 0 a coordinate with zero gradient never moves
    # (a property of Keskar's L-BFGS-B start, not a bug of ours)
    x = np.array([0.3, -0.2, 1.0, -2.0, 0.5, 0.1])

    def loss_grad(w):
        d = w - w_star
        return float(0.5 * d @ A @ d), A @ d

    eps = 0.1
    f0 = loss_grad(x)[0]
    r = eps * (np.abs(x) + 1)
    f_max = float(0.5 * np.sum(D.numpy() * (np.abs(x - w_star) + r) ** 2))
    res = keskar_sharpness(loss_grad, x, eps=eps, maxiter=10)
    assert res.f0 == pytest.approx(f0)
    assert res.value == pytest.approx(100 * (f_max - f0) / (1 + f0), rel=1e-8)
    # a coordinate subspace: only coordinates 1 and 3 move, inside their own boxes
    P = np.eye(6)[:, [1, 3]]
    sub = keskar_sharpness(loss_grad, x, eps=eps, A=P, maxiter=10)
    gain = sum(0.5 * D[i].item() * ((abs(x[i]) + r[i]) ** 2 - x[i] ** 2) for i in (1, 3))
    assert sub.value == pytest.approx(100 * gain / (1 + f0), rel=1e-8)
    assert res.converged and res.status == 0  # the corner is a KKT point: L-BFGS-B says converged


def test_keskar_flag_comes_from_the_optimizer_status():
    """An interior maximum (a concave bump centred inside the box) takes L-BFGS-B several
    iterations: cut at one iteration the value is finite but the flag must say not converged."""
    A = np.diag(D.numpy()) @ np.diag(D.numpy())  # condition number 1600
    x = np.zeros(6)
    centre = 0.05 * np.array([1.0, -1.0, 0.5, -0.5, 0.8, 0.3])  # inside the box eps (|x| + 1)

    def loss_grad(w):
        d = w - centre
        return float(1.0 - 0.5 * d @ A @ d), -(A @ d)

    capped = keskar_sharpness(loss_grad, x, eps=0.1, maxiter=1)
    assert math.isfinite(capped.value) and not capped.converged and capped.status == 1
    full = keskar_sharpness(loss_grad, x, eps=0.1, maxiter=200)
    assert full.converged and full.status == 0
    assert full.f_max == pytest.approx(1.0, abs=1e-10)


def test_keskar_rejects_bad_settings():
    with pytest.raises(ValueError, match="eps"):
        keskar_sharpness(lambda w: (0.0, w), np.zeros(2), eps=0.0)


def test_worst_case_l2_standard_and_adaptive_match_top_eigenvalue():
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.standard_normal((6, 6)))
    A = torch.tensor(q @ np.diag(D.numpy()) @ q.T)
    w = torch.tensor([1.0, -2.0, 0.5, 3.0, -1.0, 2.0], dtype=torch.float64)
    _, loss_grad = quadratic(A, w)
    rho = 0.1
    res = projected_ascent(loss_grad, w, rho=rho, norm="l2", n_steps=60, gen=generator(0))
    assert res.gain == pytest.approx(0.5 * rho**2 * 4.0, rel=1e-4)
    assert float(torch.linalg.vector_norm(res.delta)) <= rho * (1 + 1e-12)
    c = w.abs()
    lam = float(torch.linalg.eigvalsh(torch.diag(c) @ A @ torch.diag(c)).max())
    ada = projected_ascent(loss_grad, w, rho=rho, scale=c, norm="l2", n_steps=80, gen=generator(1))
    assert ada.gain == pytest.approx(0.5 * rho**2 * lam, rel=1e-4)


def test_worst_case_linf_reaches_the_corner():
    w = torch.linspace(-1, 1, 6, dtype=torch.float64)
    _, loss_grad = quadratic(torch.diag(D), w)
    rho = 0.05
    res = projected_ascent(loss_grad, w, rho=rho, norm="linf", n_steps=5, gen=generator(2))
    assert res.gain == pytest.approx(0.5 * rho**2 * float(D.sum()), rel=1e-12)


@pytest.mark.parametrize("noise,factor", [("gaussian", 1.0), ("uniform", 1.0 / 3.0)])
def test_average_sharpness_matches_expectation(noise, factor):
    rng = np.random.default_rng(1)
    q, _ = np.linalg.qr(rng.standard_normal((6, 6)))
    A = torch.tensor(q @ np.diag(D.numpy()) @ q.T)
    w = torch.tensor([1.0, -2.0, 0.5, 3.0, -1.0, 2.0], dtype=torch.float64)
    loss, _ = quadratic(A, w)
    rho = 0.1
    for scale, c2 in ((1.0, torch.ones(6, dtype=torch.float64)), (w.abs(), w**2)):
        truth = 0.5 * rho**2 * factor * float((torch.diagonal(A) * c2).sum())
        mean, se, samples = average_sharpness(
            loss, w, rho=rho, scale=scale, noise=noise, n_samples=3000, gen=generator(3)
        )
        assert len(samples) == 3000 and abs(mean - truth) < 4 * se


def test_bisection_finds_the_largest_scale_within_tolerance():
    res = bisect_largest(lambda s: s**2, target=0.1, tol=1e-4, lo=0.0, hi=2.0, depth=30)
    assert res.converged and abs(res.scale**2 - 0.1) < 1e-4
    capped = bisect_largest(lambda s: s**2, target=0.1, tol=1e-12, lo=0.0, hi=2.0, depth=3)
    assert not capped.converged and capped.n_iter == 3
    with pytest.raises(ValueError, match="lo="):
        bisect_largest(lambda s: s, target=0.1, tol=0.01, lo=1.0, hi=0.5, depth=3)


@pytest.mark.parametrize("magnitude", [False, True])
def test_sigma_search_on_a_quadratic(magnitude):
    w = torch.tensor([1.0, -2.0, 0.5, 3.0, -1.0, 0.0], dtype=torch.float64)
    A = torch.diag(D)
    loss, _ = quadratic(A, w)
    seed, n_draws, eps = 11, 10, 1e-3
    res = sigma_search(
        loss,
        w,
        magnitude=magnitude,
        eps=eps,
        target=0.1,
        tol=1e-3,
        depth=40,
        n_draws=n_draws,
        seed=seed,
    )
    assert res.converged
    # with common random numbers the deviation is an explicit function of sigma
    gen = generator(seed)
    xis = [gaussian(6, gen, w) for _ in range(n_draws)]
    std = torch.sqrt(res.scale**2 * w**2 + eps**2) if magnitude else res.scale
    dev = np.mean([loss(w + std * xi) for xi in xis])
    assert abs(dev - 0.1) < 1e-3 and dev == pytest.approx(res.deviation)


@pytest.mark.parametrize("magnitude", [False, True])
def test_alpha_search_on_a_quadratic(magnitude):
    w = torch.tensor([1.0, -2.0, 0.5, 3.0, -1.0, 0.2], dtype=torch.float64)
    loss, loss_grad = quadratic(torch.diag(D), w)
    eps = 1e-3
    res = alpha_search(
        loss,
        loss_grad,
        w,
        magnitude=magnitude,
        eps=eps,
        target=0.1,
        tol=1e-4,
        depth=40,
        n_restarts=2,
        n_steps=3,
        seed=5,
    )
    radius = res.scale * w.abs() + eps if magnitude else res.scale * torch.ones(6)
    corner = 0.5 * float((D * radius**2).sum())  # max of the quadratic over the box
    assert res.converged and abs(corner - 0.1) < 1e-4 and res.n_grad > 0


def test_local_entropy_chain_matches_the_discrete_gaussian_law():
    lam = torch.tensor([0.5, 1.0, 2.0, 4.0], dtype=torch.float64)
    w_star = torch.zeros(4, dtype=torch.float64)
    theta = torch.tensor([0.2, -0.1, 0.05, 0.0], dtype=torch.float64)
    loss, loss_grad = quadratic(torch.diag(lam), w_star)
    gamma, T, lr = 1.0, 0.01, 0.05
    res = local_entropy_chain(
        loss_grad,
        theta,
        gamma=gamma,
        temperature=T,
        lr=lr,
        burn_in=300,
        n_samples=12000,
        n_batches=20,
        gen=generator(9),
    )
    k = lam + gamma
    mean = gamma * theta / k  # (A + gamma)^-1 (A w* + gamma theta)
    var = T / (k * (1 - lr * k / 2))
    expected_energy = loss(mean) + 0.5 * float((lam * var).sum())
    assert abs(res.energy_gap - (expected_energy - loss(theta))) < 4 * res.energy_gap_stderr
    disp = float(torch.linalg.vector_norm(theta - mean))
    assert abs(res.displacement - disp) < 4 * res.displacement_stderr + 1e-3
    assert res.finite and res.n_grad == 1 + 300 + 12000


def test_local_entropy_flags_divergence():
    _, loss_grad = quadratic(torch.diag(D * 100), torch.zeros(6, dtype=torch.float64))
    res = local_entropy_chain(
        loss_grad,
        torch.ones(6, dtype=torch.float64),
        gamma=0.0,
        temperature=1e-4,
        lr=1.0,
        burn_in=0,
        n_samples=600,
        n_batches=2,
        gen=generator(0),
    )
    assert not res.finite and math.isnan(res.energy_gap)
